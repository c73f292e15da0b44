"""TransitionTracker with in-memory fakes: ordering of follow-ups, failures, what is skipped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from jobtracker_common.errors import TransientError, ValidationError
from jobtracker_common.models import ErrorInfo, Run, RunStatus, Trigger
from jobtracker_common.repositories import RunsRepository
from jobtracker_common.statistics import StatsDelta
from tracker.sweep import expiry_changes
from tracker.transitions import RETRY_MIN_LEAD, TransitionTracker, parse_images

from tests.support.streams import stream_record

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
MAPPER = RunsRepository(None, "RunsTable")  # type: ignore[arg-type]


class FakeStats:
    def __init__(self) -> None:
        self.markers: set[tuple[str, int, str]] = set()
        self.fail_next = False

    @staticmethod
    def _key(delta: StatsDelta) -> tuple[str, int, str]:
        return delta.run_id, delta.attempt, delta.status.value

    def already_counted(self, deltas: list[StatsDelta]) -> list[bool]:
        return [self._key(d) in self.markers for d in deltas]

    def apply_many(self, deltas: list[StatsDelta]) -> list[bool | Exception]:
        if self.fail_next:
            self.fail_next = False
            return [TransientError("throttled") for _ in deltas]
        out: list[bool | Exception] = []
        for delta in deltas:
            out.append(self._key(delta) not in self.markers)
            self.markers.add(self._key(delta))
        return out


class FakeJobs:
    def __init__(self) -> None:
        self.calls: list[tuple[str, str, RunStatus]] = []
        self.fail = False

    def record_last_run(self, job_id: str, run_id: str, status: RunStatus) -> bool:
        if self.fail:
            raise TransientError("jobs table throttled")
        self.calls.append((job_id, run_id, status))
        return True


class FakeSchedules:
    def __init__(self) -> None:
        self.created: dict[str, datetime] = {}

    def create_retry_schedule(self, *, run_id: str, attempt: int, at: datetime) -> bool:
        name = f"retry-{run_id}-{attempt}"
        if name in self.created:
            return False
        self.created[name] = at
        return True


def make_run(run_id: str, status: RunStatus, *, attempt: int = 1, **extra: Any) -> Run:
    return Run.model_validate(
        {
            "run_id": run_id,
            "job_id": extra.pop("job_id", "J1"),
            "job_name": "backup",
            "job_type": "demo",
            "owner_id": "alice",
            "trigger": Trigger.SCHEDULE,
            "status": status,
            "attempt": attempt,
            "queued_at": NOW - timedelta(minutes=1),
            "started_at": NOW - timedelta(minutes=1),
            **extra,
        }
    )


def record(new: Run | None, old: Run | None, seq: int = 1) -> dict[str, Any]:
    return stream_record(
        None if new is None else MAPPER._to_item(new),
        None if old is None else MAPPER._to_item(old),
        sequence=seq,
    )


def finished(run_id: str, status: RunStatus = RunStatus.COMPLETED, **extra: Any) -> dict[str, Any]:
    running = make_run(run_id, RunStatus.RUNNING, lease_until=NOW, **extra)
    done = make_run(run_id, status, finished_at=NOW, duration_ms=60_000, **extra)
    return record(done, running)


def retrying(run_id: str, next_at: datetime) -> dict[str, Any]:
    running = make_run(run_id, RunStatus.RUNNING, lease_until=NOW)
    failed = make_run(
        run_id,
        RunStatus.RETRYING,
        finished_at=NOW,
        duration_ms=5,
        error=ErrorInfo(type="x", message="y"),
        next_attempt_at=next_at,
        lease_until=next_at + timedelta(minutes=15),
    )
    return record(failed, running)


@pytest.fixture
def fakes() -> tuple[TransitionTracker, FakeStats, FakeJobs, FakeSchedules]:
    stats, jobs, schedules = FakeStats(), FakeJobs(), FakeSchedules()
    tracker = TransitionTracker(stats, jobs, schedules, clock=lambda: NOW)  # type: ignore[arg-type]
    return tracker, stats, jobs, schedules


def test_only_the_newest_terminal_run_of_a_job_is_written_as_its_last_run(fakes: Any) -> None:
    tracker, _stats, jobs, _ = fakes
    outcomes = tracker.handle_batch(
        [finished("R2"), finished("R1", RunStatus.FAILED), finished("R3", job_id="J2")]
    )
    assert all(o.counted for o in outcomes)
    assert sorted(jobs.calls) == [("J1", "R2", RunStatus.COMPLETED), ("J2", "R3", RunStatus.COMPLETED)]


def test_a_record_is_not_counted_until_its_follow_ups_succeeded(fakes: Any) -> None:
    # Given the jobs table failing
    tracker, stats, jobs, _ = fakes
    jobs.fail = True

    # When a completion is delivered, then redelivered after recovery
    first = tracker.handle_batch([finished("R1")])
    jobs.fail = False
    second = tracker.handle_batch([finished("R1")])
    third = tracker.handle_batch([finished("R1")])

    # Then the first delivery failed without counting, the second counted, the third skipped all
    assert isinstance(first[0], TransientError)
    assert second[0].counted is True and second[0].last_run_recorded is True
    assert third[0].counted is False and len(jobs.calls) == 1
    assert len(stats.markers) == 1


def test_a_statistics_failure_fails_the_record_and_the_retry_schedule_is_not_duplicated(fakes: Any) -> None:
    tracker, stats, _, schedules = fakes
    stats.fail_next = True
    event = retrying("R1", NOW + timedelta(seconds=90))
    first, second = tracker.handle_batch([event]), tracker.handle_batch([event])
    assert isinstance(first[0], TransientError)
    assert second[0].counted is True and second[0].scheduled is False
    assert schedules.created == {"retry-R1-2": NOW + timedelta(seconds=90)}


def test_a_retry_whose_time_has_passed_is_scheduled_just_ahead(fakes: Any) -> None:
    tracker, _, _, schedules = fakes
    tracker.handle_batch([retrying("R1", NOW - timedelta(minutes=3))])
    assert schedules.created == {"retry-R1-2": NOW + RETRY_MIN_LEAD}


def test_poison_and_removed_records(fakes: Any) -> None:
    tracker, stats, _, _ = fakes
    poison = finished("R1")
    poison["dynamodb"]["NewImage"]["attempt"] = {"N": "zero"}
    removed = record(None, make_run("R2", RunStatus.COMPLETED))
    outcomes = tracker.handle_batch([poison, removed, {"eventName": "MODIFY"}])
    assert isinstance(outcomes[0], ValidationError) and "not a valid run" in outcomes[0].message
    assert outcomes[1].run_id is None and outcomes[1].counted is None
    assert isinstance(outcomes[2], ValidationError)
    assert stats.markers == set()


def test_parse_images_reads_lambda_shaped_images() -> None:
    old, new = parse_images(finished("R1"))
    assert old is not None and old.status is RunStatus.RUNNING
    assert new is not None and new.status is RunStatus.COMPLETED and new.duration_ms == 60_000


def test_expired_retrying_run_keeps_its_last_attempt_duration() -> None:
    run = make_run(
        "R1",
        RunStatus.RETRYING,
        duration_ms=1234,
        lease_until=NOW - timedelta(seconds=1),
        next_attempt_at=NOW - timedelta(minutes=15),
    )
    status, changes = expiry_changes(run, NOW)
    assert status is RunStatus.TIMED_OUT
    assert "duration_ms" not in changes
    assert changes["error"].message.startswith("lease expired at 2026-03-10T11:59:59.000Z")
