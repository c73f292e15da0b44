"""The sweeper ends runs whose lease expired, and never overrides a run that finished meanwhile."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from job_runner.service import RunnerService
from jobtracker_common.lifecycle import DELIVERY_WINDOW, LEASE_MARGIN, failure_changes, success_changes
from jobtracker_common.models import ErrorInfo, Job, Run, RunStatus, Trigger
from jobtracker_common.repositories import JobsRepository, RunsRepository
from jobtracker_common.repositories.runs import active_shard, run_key
from jobtracker_common.schedules import ScheduleService
from tracker import sweeper
from tracker.sweep import Sweeper

from tests.conftest import FakeLambdaContext
from tests.support.runner import invoke

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def add_run(runs: RunsRepository, run_id: str, status: RunStatus, lease_until: datetime, **extra: Any) -> Run:
    started = lease_until - timedelta(minutes=6)
    fields: dict[str, Any] = {
        "run_id": run_id,
        "job_id": "job-1",
        "job_name": "backup",
        "job_type": "demo",
        "owner_id": "alice",
        "trigger": Trigger.SCHEDULE,
        "status": status,
        "queued_at": started,
        "started_at": None if status is RunStatus.QUEUED else started,
        "lease_until": lease_until,
        **extra,
    }
    return runs.create(Run.model_validate(fields))


def test_expired_running_lease_becomes_timed_out_with_a_clear_error(aws: Any) -> None:
    # Given a running run (no attempts left) whose lease expired, and one whose lease is still valid
    runs = RunsRepository(aws, "RunsTable")
    expired_at = NOW - timedelta(minutes=1)
    add_run(runs, "R-LOST", RunStatus.RUNNING, expired_at, retry={"max_attempts": 1})
    add_run(runs, "R-ALIVE", RunStatus.RUNNING, NOW + timedelta(minutes=5))

    # When the sweeper runs
    report = Sweeper(runs, clock=lambda: NOW).sweep()

    # Then only the expired one is timed_out, off the active index, with the reason spelled out
    assert report.timed_out == ["R-LOST"]
    lost = runs.get("R-LOST")
    assert lost.status is RunStatus.TIMED_OUT
    assert lost.error is not None and lost.error.type == "LeaseExpired"
    assert lost.error.message.startswith(
        "lease expired at 2026-03-10T11:59:00.000Z; the runner stopped reporting"
    )
    assert "crash, OOM or hard kill" in lost.error.message
    assert lost.lease_until is None and lost.finished_at == NOW
    assert runs.get("R-ALIVE").status is RunStatus.RUNNING
    assert [r.run_id for r in runs.list_active()] == ["R-ALIVE"]


def test_expired_running_lease_with_attempts_left_goes_to_retrying(aws: Any) -> None:
    # Given a lost first attempt of a job that allows three
    runs = RunsRepository(aws, "RunsTable")
    add_run(runs, "R-RETRY", RunStatus.RUNNING, NOW - timedelta(seconds=1), retry={"max_attempts": 3})

    # When the sweeper runs
    report = Sweeper(runs, clock=lambda: NOW).sweep()

    # Then the attempt failed like any timeout: retrying, with its next attempt time (the tracker
    # schedules it from the stream record)
    assert report.retrying == ["R-RETRY"]
    run = runs.get("R-RETRY")
    assert run.status is RunStatus.RETRYING
    assert run.next_attempt_at is not None and run.next_attempt_at > NOW


def test_queued_and_retrying_runs_past_their_lease_time_out(aws: Any) -> None:
    # Given a queued run never picked up and a retry whose schedule never fired
    runs = RunsRepository(aws, "RunsTable")
    add_run(runs, "R-QUEUED", RunStatus.QUEUED, NOW - timedelta(minutes=1))
    add_run(
        runs,
        "R-STUCK",
        RunStatus.RETRYING,
        NOW - timedelta(minutes=1),
        next_attempt_at=NOW - timedelta(minutes=16),
        error={"type": "Boom", "message": "device unreachable"},
    )

    # When the sweeper runs
    report = Sweeper(runs, clock=lambda: NOW).sweep()

    # Then both end timed_out, saying why
    assert sorted(report.timed_out) == ["R-QUEUED", "R-STUCK"]
    queued, stuck = runs.get("R-QUEUED"), runs.get("R-STUCK")
    assert queued.status is stuck.status is RunStatus.TIMED_OUT
    assert queued.error is not None
    assert "queued but did not start within its delivery window" in queued.error.message
    assert stuck.error is not None
    assert "retry attempt 2 did not start within its delivery window" in stuck.error.message
    assert "due at 2026-03-10T11:44:00.000Z" in stuck.error.message
    assert "last error: device unreachable" in stuck.error.message
    # ... and no longer claims to know that the schedule did not fire
    assert "did not fire" not in stuck.error.message


@pytest.mark.parametrize("status", [RunStatus.RUNNING, RunStatus.RETRYING])
def test_expired_run_whose_cancel_was_requested_is_canceled_not_retried(aws: Any, status: RunStatus) -> None:
    # Given a run with attempts left whose owner asked it to stop, and then its runner died (or,
    # once retrying, its retry never came)
    runs = RunsRepository(aws, "RunsTable")
    running = add_run(
        runs, "R-CANCEL", RunStatus.RUNNING, NOW - timedelta(seconds=1), retry={"max_attempts": 3}
    )
    runs.request_cancel("R-CANCEL")
    if status is RunStatus.RETRYING:
        runs.transition(
            running,
            status,
            next_attempt_at=NOW - timedelta(minutes=5),
            lease_until=NOW - timedelta(seconds=1),
        )

    # When the sweeper runs
    report = Sweeper(runs, clock=lambda: NOW).sweep()

    # Then the run is canceled: no retry (which would run the job again), nothing left active
    run = runs.get("R-CANCEL")
    assert report.canceled == ["R-CANCEL"] and report.retrying == report.timed_out == []
    assert run.status is RunStatus.CANCELED and run.finished_at == NOW
    assert run.next_attempt_at is None and run.lease_until is None
    assert runs.list_active() == []


def test_pending_retry_is_left_alone_while_aws_may_still_deliver_it(aws: Any) -> None:
    # Given attempt 1 failed with attempts left, its retry due 30 s later, and the target config
    # the retry schedule is created with
    jobs, runs = JobsRepository(aws, "JobsTable"), RunsRepository(aws, "RunsTable")
    jobs.create(
        Job(
            job_id="job-1",
            owner_id="alice",
            name="backup",
            job_type="demo",
            params={"duration_seconds": 0, "log_lines": 1},
            created_at=NOW,
            updated_at=NOW,
        )
    )
    running = add_run(runs, "R1", RunStatus.RUNNING, NOW + timedelta(minutes=6), retry={"jitter": False})
    error = ErrorInfo(type="Unreachable", message="device unreachable")
    retrying = _retrying(runs, running, NOW, error)
    assert retrying.next_attempt_at is not None
    target = ScheduleService(
        None,  # type: ignore[arg-type]  # only the target config is built, nothing is called
        group_name="g",
        role_arn="arn:role",
        target_arn="arn:runner",
    )._target_config("{}")
    scheduler_window = timedelta(seconds=target["RetryPolicy"]["MaximumEventAgeInSeconds"])
    # Scheduler retries its Invoke for its window; Lambda's queue may then hold the event for as long
    latest = retrying.next_attempt_at + scheduler_window + DELIVERY_WINDOW

    # When the sweeper runs (every 7 minutes here, and a second before the delivery) up to the
    # latest delivery AWS may still make, and the retry is delivered only then (Scheduler's
    # Invoke throttled, then the event queued behind a saturated runner)
    sweeps = [NOW + timedelta(minutes=m) for m in range(0, int((latest - NOW).total_seconds() // 60), 7)]
    for at in [*sweeps, latest - timedelta(seconds=1)]:
        Sweeper(runs, clock=lambda at=at: at).sweep()  # type: ignore[misc]
    runner = RunnerService(jobs, runs, clock=lambda: latest, safety_margin_ms=500)
    result = invoke(runner, {"kind": "retry", "run_id": "R1", "attempt": 2})

    # Then the late retry still runs attempt 2
    final = runs.get("R1")
    assert not result.get("duplicate"), result.get("message")
    assert (final.status, final.attempt) == (RunStatus.COMPLETED, 2)


def test_pending_retry_is_timed_out_once_its_delivery_window_has_passed(aws: Any) -> None:
    # Given a retry due at NOW whose delivery never came
    runs = RunsRepository(aws, "RunsTable")
    running = add_run(runs, "R1", RunStatus.RUNNING, NOW, retry={"jitter": False})
    failed_at = NOW - running.retry.delay_after(1, seed="")
    retrying = _retrying(runs, running, failed_at, ErrorInfo(type="x", message="y"))
    lease = retrying.lease_until
    assert retrying.next_attempt_at == NOW and lease is not None

    # When the sweeper runs just before and just after the lease (both delivery stages + margin)
    before = Sweeper(runs, clock=lambda: lease - timedelta(seconds=1)).sweep()
    after = Sweeper(runs, clock=lambda: lease + timedelta(seconds=1)).sweep()

    # Then the run is given up on only after the lease, about two hours after it was due
    assert (before.timed_out, after.timed_out) == ([], ["R1"])
    assert lease - NOW == 2 * DELIVERY_WINDOW + LEASE_MARGIN
    assert runs.get("R1").status is RunStatus.TIMED_OUT


def _retrying(runs: RunsRepository, run: Run, now: datetime, error: ErrorInfo) -> Run:
    """`run`'s attempt failed at `now` with attempts left, recorded as the runner does."""
    status, changes = failure_changes(run, now, error, timed_out=False)
    assert status is RunStatus.RETRYING
    return runs.transition(run, status, **changes)


class CompletingRuns(RunsRepository):
    """The race: the runner finishes each run right after the sweeper's query returned it."""

    def list_active(self, *, lease_before: datetime | None = None, every_shard: bool = False) -> list[Run]:
        found = super().list_active(lease_before=lease_before, every_shard=every_shard)
        for run in found:
            super().transition(run, RunStatus.COMPLETED, **success_changes(run, NOW, {"message": "late"}))
        return found


def test_run_completing_between_query_and_update_keeps_completed(aws: Any) -> None:
    # Given a run whose lease expired but whose runner completes it while the sweeper works
    runs = CompletingRuns(aws, "RunsTable")
    add_run(runs, "R-LATE", RunStatus.RUNNING, NOW - timedelta(minutes=1), retry={"max_attempts": 1})

    # When the sweeper runs
    report = Sweeper(runs, clock=lambda: NOW).sweep()

    # Then its conditional write loses and the run keeps its real outcome
    assert report.left_alone == ["R-LATE"]
    assert report.timed_out == []
    run = RunsRepository(aws, "RunsTable").get("R-LATE")
    assert run.status is RunStatus.COMPLETED
    assert run.result == {"message": "late"}


def test_run_stranded_in_a_shard_above_a_lowered_count_is_still_swept(aws: Any) -> None:
    # Given a run created while ActiveIndexShards was 8, in shard 6, and another one there whose
    # lease is still valid (a run keeps its shard until it ends: transitions never move it)
    created_under_8 = RunsRepository(aws, "RunsTable", active_shards=8)
    assert active_shard("R-STRANDED-0", 8) == "ACTIVE#6"
    assert active_shard("R-STRANDED-12", 8) == "ACTIVE#6"
    add_run(
        created_under_8,
        "R-STRANDED-0",
        RunStatus.RUNNING,
        NOW - timedelta(minutes=1),
        retry={"max_attempts": 1},
    )
    add_run(created_under_8, "R-STRANDED-12", RunStatus.RUNNING, NOW + timedelta(minutes=5))
    # And the count since lowered to 4: the API's active view no longer reads shard 6
    runs = RunsRepository(aws, "RunsTable", active_shards=4)
    assert runs.list_active() == []

    # When the sweeper, configured with 4 shards, runs
    report = Sweeper(runs, clock=lambda: NOW).sweep()

    # Then it still finds the run whose lease expired and ends it, off the active index
    assert report.timed_out == ["R-STRANDED-0"]
    lost = runs.get("R-STRANDED-0")
    assert lost.status is RunStatus.TIMED_OUT
    assert lost.error is not None and lost.error.type == "LeaseExpired"
    item = aws.get_item(TableName="RunsTable", Key=run_key("R-STRANDED-0"))["Item"]
    assert "active_pk" not in item and "active_sk" not in item
    # And leaves the live one alone, still in its shard
    assert [r.run_id for r in runs.list_active(every_shard=True)] == ["R-STRANDED-12"]
    assert runs.get("R-STRANDED-12").status is RunStatus.RUNNING


def test_handler_sweeps_with_settings_from_the_environment(aws: Any) -> None:
    # Given an expired run in the template's RunsTable (env set by the aws fixture)
    runs = RunsRepository(aws, "RunsTable")
    add_run(
        runs, "R-OLD", RunStatus.RUNNING, datetime.now(UTC) - timedelta(minutes=1), retry={"max_attempts": 1}
    )
    sweeper.sweeper.cache_clear()

    # When the scheduled event invokes the Lambda handler
    result = sweeper.lambda_handler({}, FakeLambdaContext(name="SweeperFunction"))

    # Then it reports what it did
    assert result["timed_out"] == ["R-OLD"]
    sweeper.sweeper.cache_clear()
