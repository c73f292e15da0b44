"""Durable retries end to end in-process: runner -> RunsTable stream -> tracker -> Scheduler -> runner."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from job_runner import handler as runner_handler
from job_runner.service import RunnerService
from jobtracker_common import jobtypes
from jobtracker_common.errors import TransientError
from jobtracker_common.models import Job, RetryPolicy, RunStatus
from jobtracker_common.repositories import JobsRepository, RunsRepository
from jobtracker_common.repositories.stats import StatsRepository
from jobtracker_common.statistics import StatsDelta
from jobtracker_common.statistics_query import StatisticsQuery, query_statistics
from notifier.events import parse_record
from pydantic import BaseModel

from tests.conftest import FakeLambdaContext
from tests.support.moto_transactions import fast_transactions
from tests.support.streams import StreamTail
from tests.support.tracker import (
    SCHEDULE_GROUP,
    TrackerFeed,
    deliver,
    make_tracker,
    retry_schedules,
    scheduler,
)

T0 = datetime(2026, 3, 10, 9, 0, tzinfo=UTC)
JOB_ID = "01JFLAKYJOB000000000000000"


class FlakyParams(BaseModel):
    failures: int = 2


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture
def flaky_type() -> Iterator[list[int]]:
    """A job type that fails its first `failures` calls, then succeeds."""
    calls: list[int] = []

    def body(params: FlakyParams, ctx: jobtypes.JobContext) -> dict[str, Any]:
        calls.append(1)
        if len(calls) <= params.failures:
            raise jobtypes.JobFailure(f"flaky failure {len(calls)}", error_type="Flaky")
        return {"message": f"succeeded on call {len(calls)}"}

    jobtypes.register(jobtypes.JobType("flaky", FlakyParams, body))
    yield calls
    jobtypes._REGISTRY.pop("flaky")


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def runner(aws: Any, clock: Clock, monkeypatch: pytest.MonkeyPatch) -> RunnerService:
    fast_transactions(monkeypatch)
    return RunnerService(
        JobsRepository(aws, "JobsTable"), RunsRepository(aws, "RunsTable"), clock=clock, safety_margin_ms=500
    )


def add_job(
    aws: Any,
    failures: int,
    policy: RetryPolicy,
    *,
    job_type: str = "flaky",
    params: dict[str, Any] | None = None,
) -> Job:
    return JobsRepository(aws, "JobsTable").create(
        Job(
            job_id=JOB_ID,
            owner_id="alice",
            name="flaky backup",
            job_type=job_type,
            params={"failures": failures} if params is None else params,
            retry=policy,
            created_at=T0,
            updated_at=T0,
        )
    )


def invoke(runner: RunnerService, event: dict[str, Any]) -> dict[str, Any]:
    return runner_handler.handle(event, FakeLambdaContext(), runner)  # type: ignore[arg-type]


def fire(schedule: dict[str, Any], clock: Clock, runner: RunnerService) -> dict[str, Any]:
    """What Scheduler would do at the schedule's time: invoke the runner with its Input."""
    expression = schedule["ScheduleExpression"]
    clock.now = datetime.fromisoformat(expression.removeprefix("at(").removesuffix(")")).replace(tzinfo=UTC)
    return invoke(runner, json.loads(schedule["Target"]["Input"]))


def at_expression(when: datetime) -> str:
    return f"at({when.strftime('%Y-%m-%dT%H:%M:%S')})"


def test_job_failing_twice_then_succeeding_completes_at_attempt_3(
    aws: Any, runner: RunnerService, clock: Clock, flaky_type: list[int]
) -> None:
    # Given a job that fails twice, with 60 s backoff doubling per attempt and no jitter
    add_job(aws, 2, RetryPolicy(max_attempts=3, backoff_seconds=60, backoff_rate=2.0, jitter=False))
    feed, tracker = TrackerFeed(), make_tracker(aws, clock=clock)

    # When it runs and the tracker follows the stream, and each retry schedule fires
    first = invoke(runner, {"kind": "manual", "job_id": JOB_ID, "client_request_id": "req-1"})
    assert first["status"] == "retrying"
    assert deliver(tracker, feed.read()) == {"batchItemFailures": []}
    (retry_2,) = retry_schedules()
    failed_1_at = clock.now
    second = fire(retry_2, clock, runner)
    assert second["status"] == "retrying"
    assert deliver(tracker, feed.read()) == {"batchItemFailures": []}
    retry_3 = next(s for s in retry_schedules() if s["input"]["attempt"] == 3)
    failed_2_at = clock.now
    third = fire(retry_3, clock, runner)
    assert deliver(tracker, feed.read()) == {"batchItemFailures": []}

    # Then the run completed at attempt 3, after retries at +60 s and +120 s
    assert third["status"] == "completed"
    run = RunsRepository(aws, "RunsTable").get(first["run_id"])
    assert run.status is RunStatus.COMPLETED and run.attempt == 3
    assert len(flaky_type) == 3
    assert retry_2["ScheduleExpression"] == at_expression(failed_1_at + timedelta(seconds=60))
    assert retry_3["ScheduleExpression"] == at_expression(failed_2_at + timedelta(seconds=120))
    assert retry_2["input"] == {"kind": "retry", "run_id": run.run_id, "attempt": 2}
    assert retry_2["ActionAfterCompletion"] == "DELETE"
    assert retry_2["Target"]["Arn"].endswith(":function:JobRunnerFunction")
    # ... the statistics saw one completed run and two retries, and the job remembers it
    stats = query_statistics(
        StatsRepository(aws, "StatsTable"), StatisticsQuery(time_period="day"), now=clock.now
    )
    assert stats.totals.by_status["completed"] == 1 and stats.totals.total == 1
    assert stats.totals.retries == 2
    job = JobsRepository(aws, "JobsTable").get(JOB_ID)
    assert (job.last_run_id, job.last_run_status) == (run.run_id, RunStatus.COMPLETED)


def test_job_out_of_attempts_ends_failed(
    aws: Any, runner: RunnerService, clock: Clock, flaky_type: list[int]
) -> None:
    # Given a job that always fails and may try twice
    add_job(aws, 99, RetryPolicy(max_attempts=2, backoff_seconds=30, jitter=False))
    feed, tracker = TrackerFeed(), make_tracker(aws, clock=clock)

    # When both attempts run
    first = invoke(runner, {"kind": "manual", "job_id": JOB_ID, "client_request_id": "req-2"})
    deliver(tracker, feed.read())
    (retry_2,) = retry_schedules()
    second = fire(retry_2, clock, runner)
    assert deliver(tracker, feed.read()) == {"batchItemFailures": []}

    # Then only the final outcome is failed, and no third attempt was scheduled
    assert (first["status"], second["status"]) == ("retrying", "failed")
    run = RunsRepository(aws, "RunsTable").get(first["run_id"])
    assert run.status is RunStatus.FAILED and run.attempt == 2
    assert run.error is not None and run.error.message == "flaky failure 2"
    assert [s["Name"] for s in retry_schedules()] == [f"retry-{run.run_id}-2"]
    stats = query_statistics(
        StatsRepository(aws, "StatsTable"), StatisticsQuery(time_period="day"), now=clock.now
    )
    assert (stats.totals.by_status["failed"], stats.totals.retries) == (1, 1)


class FailingOnceStats(StatsRepository):
    """Statistics that fail the first write (e.g. throttling beyond the client's retries)."""

    failed = False

    def apply_many(self, deltas: list[StatsDelta]) -> list[bool | Exception]:
        if not self.failed and deltas:
            self.failed = True
            return [TransientError("throttled") for _ in deltas]
        return super().apply_many(deltas)


def test_replayed_failure_record_creates_no_second_schedule(
    aws: Any, runner: RunnerService, clock: Clock, flaky_type: list[int]
) -> None:
    # Given a failed first attempt whose record failed half-way (schedule created, stats not
    # written), so Lambda redelivers it; and then the whole batch once more
    add_job(aws, 1, RetryPolicy(max_attempts=3, backoff_seconds=45, jitter=False))
    feed, tracker = TrackerFeed(), make_tracker(aws, clock=clock)
    tracker._stats = FailingOnceStats(aws, "StatsTable")
    invoke(runner, {"kind": "manual", "job_id": JOB_ID, "client_request_id": "req-3"})
    records = feed.read()
    retrying = [r for r in records if r["dynamodb"]["NewImage"]["status"]["S"] == "retrying"]

    # When the record is delivered, fails, and is replayed twice
    first = deliver(tracker, records)
    second = deliver(tracker, records)
    third = deliver(tracker, records)

    # Then the first delivery reported exactly that record, and there is still one schedule
    assert first == {"batchItemFailures": [{"itemIdentifier": retrying[0]["dynamodb"]["SequenceNumber"]}]}
    assert second == third == {"batchItemFailures": []}
    assert len(retry_schedules()) == 1
    stats = query_statistics(
        StatsRepository(aws, "StatsTable"), StatisticsQuery(time_period="day"), now=clock.now
    )
    assert stats.totals.retries == 1


def test_failure_record_replayed_after_its_retry_ran_never_runs_the_attempt_twice(
    aws: Any, runner: RunnerService, clock: Clock, flaky_type: list[int]
) -> None:
    # Given a failed first attempt whose record failed half-way (schedule created, stats not
    # written), and whose retry then fired, completed the run, and was deleted by Scheduler
    add_job(aws, 1, RetryPolicy(max_attempts=3, backoff_seconds=45, jitter=False))
    feed, tracker = TrackerFeed(), make_tracker(aws, clock=clock)
    tracker._stats = FailingOnceStats(aws, "StatsTable")
    first = invoke(runner, {"kind": "manual", "job_id": JOB_ID, "client_request_id": "req-4"})
    records = feed.read()
    assert deliver(tracker, records)["batchItemFailures"]
    (retry_2,) = retry_schedules()
    assert fire(retry_2, clock, runner)["status"] == "completed"
    scheduler().delete_schedule(GroupName=SCHEDULE_GROUP, Name=retry_2["Name"])  # ActionAfterCompletion

    # When Lambda redelivers the failure record (the schedule name is free again), and whatever
    # retry schedule exists fires
    assert deliver(tracker, records) == {"batchItemFailures": []}
    late = [fire(schedule, clock, runner) for schedule in retry_schedules()]

    # Then the attempt is not run again: a late retry is refused as stale, the run stays
    # completed at attempt 2, and the retry is counted once
    assert all(result.get("duplicate") for result in late)
    assert len(flaky_type) == 2
    run = RunsRepository(aws, "RunsTable").get(first["run_id"])
    assert run.status is RunStatus.COMPLETED and run.attempt == 2
    assert deliver(tracker, feed.read()) == {"batchItemFailures": []}
    stats = query_statistics(
        StatsRepository(aws, "StatsTable"), StatisticsQuery(time_period="day"), now=clock.now
    )
    assert (stats.totals.retries, stats.totals.by_status["completed"]) == (1, 1)


class CancelThenParams(BaseModel):
    #: True: the cancel lands only after the runner recorded `retrying` (a request the runner's
    #: last read missed); False: while the attempt still runs.
    after_retrying: bool = False


@pytest.fixture
def cancel_then_fail(aws: Any) -> Iterator[list[int]]:
    """Attempt 1 is cancelled by its owner and then fails before a checkpoint; later attempts
    would succeed. Records the attempt of every body run."""
    attempts: list[int] = []
    runs = RunsRepository(aws, "RunsTable")

    def body(params: CancelThenParams, ctx: Any) -> dict[str, Any]:
        attempts.append(ctx.run.attempt)
        if ctx.run.attempt > 1:
            return {"message": "backed up"}
        if not params.after_retrying:
            runs.request_cancel(ctx.run.run_id)
        raise jobtypes.JobFailure("device unreachable", error_type="Unreachable")

    jobtypes.register(jobtypes.JobType("cancel_then_fail", CancelThenParams, body))
    yield attempts
    jobtypes._REGISTRY.pop("cancel_then_fail", None)


class CancelAfterReading(RunsRepository):
    """The owner's cancel lands between the runner's read of the request and its `retrying` write."""

    def is_cancel_requested(self, run_id: str, *, consistent: bool = False) -> bool:
        answer = super().is_cancel_requested(run_id, consistent=consistent)
        self.request_cancel(run_id)
        return answer


def notified(tail: StreamTail) -> list[tuple[str, int]]:
    """The (event, attempt) of every run change the notifier would tell someone about."""
    return [(e.event.value, e.run.attempt) for r in tail.read() if (e := parse_record(r)) is not None]


@pytest.mark.parametrize("after_retrying", [False, True])
def test_cancel_during_a_failing_attempt_ends_the_run_canceled_counted_once(
    aws: Any, clock: Clock, cancel_then_fail: list[int], monkeypatch: pytest.MonkeyPatch, after_retrying: bool
) -> None:
    # Given a job with attempts left whose owner cancels attempt 1, which then fails before a
    # checkpoint; the cancel lands while it runs, or only after `retrying` was written
    fast_transactions(monkeypatch)
    repository = CancelAfterReading if after_retrying else RunsRepository
    runner = RunnerService(
        JobsRepository(aws, "JobsTable"), repository(aws, "RunsTable"), clock=clock, safety_margin_ms=500
    )
    add_job(
        aws,
        0,
        RetryPolicy(max_attempts=3, backoff_seconds=30, jitter=False),
        job_type="cancel_then_fail",
        params={"after_retrying": after_retrying},
    )
    feed, tracker, tail = TrackerFeed(), make_tracker(aws, clock=clock), StreamTail("RunsTable")

    # When the attempt ends, the tracker follows the stream and any retry schedule fires
    first = invoke(runner, {"kind": "manual", "job_id": JOB_ID, "client_request_id": "req-c"})
    assert deliver(tracker, feed.read()) == {"batchItemFailures": []}
    fired = [fire(schedule, clock, runner) for schedule in retry_schedules()]
    if records := feed.read():
        assert deliver(tracker, records) == {"batchItemFailures": []}

    # Then the job body ran once and the run ended canceled, not completed
    run = RunsRepository(aws, "RunsTable").get(first["run_id"])
    assert (run.status, run.attempt, cancel_then_fail) == (RunStatus.CANCELED, 1, [1])
    assert [r["status"] for r in [first, *fired]] == (
        ["retrying", "canceled"] if after_retrying else ["canceled"]
    )
    # ... statistics count one canceled run (and the retry only when one was scheduled)
    stats = query_statistics(
        StatsRepository(aws, "StatsTable"), StatisticsQuery(time_period="day"), now=clock.now
    )
    assert stats.totals.by_status == {"completed": 0, "failed": 0, "timed_out": 0, "canceled": 1}
    assert stats.totals.retries == (1 if after_retrying else 0)
    # ... and the owner is told what any cancel tells (a cancel is not an email event): the
    # retry announcement only if one was really scheduled, and never a completion
    assert notified(tail) == ([("retrying", 1)] if after_retrying else [])
    job = JobsRepository(aws, "JobsTable").get(JOB_ID)
    assert (job.last_run_id, job.last_run_status) == (run.run_id, RunStatus.CANCELED)
