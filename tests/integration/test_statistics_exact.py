"""Statistics stay exact when the tracker gets every stream batch twice, in shuffled order."""

from __future__ import annotations

import math
import random
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from jobtracker_common.models import ErrorInfo, Run, RunStatus, Trigger, can_transition
from jobtracker_common.repositories import RunsRepository
from jobtracker_common.repositories.stats import StatsRepository
from jobtracker_common.statistics import histogram_index
from jobtracker_common.statistics_query import StatisticsQuery, query_statistics

from tests.support.moto_transactions import fast_transactions
from tests.support.streams import matching, stream_record
from tests.support.tracker import deliver, make_tracker, tracker_patterns

#: Fixed, so the window is stable: runs of two hours, well inside the last day before NOW.
NOW = datetime(2026, 3, 10, 20, 30, tzinfo=UTC)
START = datetime(2026, 3, 10, 0, 0, tzinfo=UTC)
OWNERS = ["alice", "bob", "carol"]
JOBS = [(f"job-{n}", OWNERS[n % 3], "demo" if n % 2 else "http_check") for n in range(4)]
OUTCOMES = [RunStatus.COMPLETED] * 6 + [RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELED]


@dataclass
class Truth:
    status: RunStatus
    retries: int
    duration_ms: int
    job_id: str
    owner_id: str
    job_type: str


class RunHistory:
    """Stream records of runs moving through the state machine, built in memory: the same
    items RunsRepository writes, without 3,000 moto writes (the real stream path is covered
    by the retry tests)."""

    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self._mapper = RunsRepository(None, "RunsTable")  # type: ignore[arg-type]

    def _emit(self, new: Run, old: Run | None) -> None:
        self.records.append(
            stream_record(
                self._mapper._to_item(new),
                None if old is None else self._mapper._to_item(old),
                sequence=len(self.records) + 1,
            )
        )

    def start(self, run: Run) -> Run:
        self._emit(run, None)
        return run

    def move(self, run: Run, status: RunStatus, **changes: Any) -> Run:
        assert status is run.status or can_transition(run.status, status)
        new = Run.model_validate(
            {**run.model_dump(), **changes, "status": status, "version": run.version + 1}
        )
        self._emit(new, run)
        return new


def simulate(history: RunHistory, count: int, rng: random.Random) -> list[Truth]:
    truths = []
    for n in range(count):
        job_id, owner, job_type = rng.choice(JOBS)
        started = START + timedelta(seconds=rng.uniform(0, 1.5 * 3600))
        run = history.start(
            Run(
                run_id=f"R{n:05d}",
                job_id=job_id,
                job_name=job_id,
                job_type=job_type,
                owner_id=owner,
                trigger=Trigger.SCHEDULE,
                status=RunStatus.RUNNING,
                queued_at=started,
                started_at=started,
                lease_until=started + timedelta(minutes=10),
            )
        )
        retries = rng.choice([0, 0, 0, 1, 2])
        for _ in range(retries):
            failed_at = run.started_at + timedelta(seconds=1)  # type: ignore[operator]
            run = history.move(
                run,
                RunStatus.RETRYING,
                finished_at=failed_at,
                duration_ms=1000,
                error=ErrorInfo(type="Boom", message="boom"),
                next_attempt_at=failed_at + timedelta(seconds=30),
                lease_until=failed_at + timedelta(minutes=15),
            )
            restarted = failed_at + timedelta(seconds=30)
            run = history.move(
                run,
                RunStatus.RUNNING,
                attempt=run.attempt + 1,
                started_at=restarted,
                finished_at=None,
                duration_ms=None,
                next_attempt_at=None,
                lease_until=restarted + timedelta(minutes=10),
            )
        status = rng.choice(OUTCOMES)
        duration = int(math.exp(rng.uniform(math.log(20), math.log(600_000))))
        run = history.move(
            run,
            status,
            finished_at=run.started_at + timedelta(milliseconds=duration),  # type: ignore[operator]
            duration_ms=duration,
            lease_until=None,
        )
        # A later progress-only change (no new status) must not count.
        if rng.random() < 0.05:
            history.move(run, status, progress="archived")
        truths.append(Truth(status, retries, duration, job_id, owner, job_type))
    return truths


def nearest_rank(values: list[int], q: float) -> int:
    ordered = sorted(values)
    return ordered[max(1, math.ceil(q * len(ordered))) - 1]


def assert_matches(result: Any, truths: list[Truth]) -> None:
    counts = Counter(t.status.value for t in truths)
    assert result.totals.total == len(truths)
    assert result.totals.by_status == {s: counts.get(s, 0) for s in result.totals.by_status}
    assert result.totals.retries == sum(t.retries for t in truths)
    durations = [t.duration_ms for t in truths]
    duration = result.totals.duration
    assert duration.count == len(durations)
    assert duration.min_ms == min(durations)
    assert duration.max_ms == max(durations)
    assert duration.avg_ms == pytest.approx(sum(durations) / len(durations))
    judged = len(truths) - counts.get("canceled", 0)
    assert result.totals.success_rate == pytest.approx(counts["completed"] / judged)
    for q, reported in ((0.5, duration.p50_ms), (0.95, duration.p95_ms)):
        assert abs(histogram_index(round(reported)) - histogram_index(nearest_rank(durations, q))) <= 1
    assert sum(point.total for point in result.series) == len(truths)


def test_counters_are_exact_when_every_shuffled_batch_is_delivered_twice(
    aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given 1,000 runs with mixed outcomes, retries and durations, and their stream records
    fast_transactions(monkeypatch)
    rng = random.Random(7)
    history = RunHistory()
    truths = simulate(history, 1000, rng)
    records = matching(history.records, tracker_patterns())
    rng.shuffle(records)
    tracker = make_tracker(aws)

    # When every batch of 100 is delivered twice (a retried or replayed batch)
    for start in range(0, len(records), 100):
        batch = records[start : start + 100]
        for _ in range(2):
            assert deliver(tracker, batch) == {"batchItemFailures": []}

    # Then global, per-owner, per-job-type and per-job statistics equal the ground truth
    stats = StatsRepository(aws, "StatsTable")
    day = query_statistics(stats, StatisticsQuery(time_period="day"), now=NOW)
    assert_matches(day, truths)
    assert {b.job_type: b.total for b in day.by_job_type} == Counter(t.job_type for t in truths)
    week = query_statistics(stats, StatisticsQuery(time_period="week"), now=NOW)
    assert_matches(week, truths)
    assert_matches(
        query_statistics(stats, StatisticsQuery(time_period="day", owner_id="bob"), now=NOW),
        [t for t in truths if t.owner_id == "bob"],
    )
    assert_matches(
        query_statistics(
            stats, StatisticsQuery(time_period="day", job_type="demo", owner_id="alice"), now=NOW
        ),
        [t for t in truths if t.job_type == "demo" and t.owner_id == "alice"],
    )
    assert_matches(
        query_statistics(stats, StatisticsQuery(time_period="week", job_id="job-3"), now=NOW),
        [t for t in truths if t.job_id == "job-3"],
    )
