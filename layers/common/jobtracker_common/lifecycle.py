"""Run lifecycle decisions shared by the runner, the sweeper and the API."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from jobtracker_common.models import ErrorInfo, Job, Run, RunStatus, Trigger
from jobtracker_common.timeutil import epoch_seconds

#: Extra time on top of a job's timeout before the sweeper may declare a run lost.
LEASE_MARGIN = timedelta(seconds=60)
#: How long AWS keeps trying to hand one invocation to the runner, at each of two stages:
#: EventBridge Scheduler retries its Invoke call until the event is this old (the target's
#: `MaximumEventAgeInSeconds`, schedules.py), and Lambda keeps an accepted asynchronous event
#: queued (throttled runner, reserved concurrency) until it is this old (the runner's
#: `EventInvokeConfig`, infra/template.yaml, checked against this by tests/infra). An hour, not
#: less: the runner's jobs take up to 15 min each, so a saturated runner delays deliveries by more
#: than that, and a dropped delivery is work not done. The sweeper gives a pending run no less.
DELIVERY_WINDOW = timedelta(hours=1)
#: A queued run (the API writes it, then invokes the runner asynchronously) is given up on only
#: after Lambda has stopped delivering that invocation.
QUEUE_LEASE = DELIVERY_WINDOW + LEASE_MARGIN
#: A pending retry is given up on only after its one-time schedule can no longer be delivered:
#: Scheduler's window and then Lambda's queue, counted from the time it is due.
RETRY_LEASE = 2 * DELIVERY_WINDOW + LEASE_MARGIN


def running_lease(now: datetime, timeout_seconds: int) -> datetime:
    return now + timedelta(seconds=timeout_seconds) + LEASE_MARGIN


def new_run(
    job: Job,
    *,
    run_id: str,
    trigger: Trigger,
    now: datetime,
    dedupe_key: str,
    scheduled: datetime | None = None,
    queued: bool = False,
) -> Run:
    """A job's new run at attempt 1: `queued` (the API, for the runner to claim) or already
    `running` (the runner, claiming it as it creates it). Either way it is in the active index
    with a lease, so the sweeper ends it if nobody finishes it."""
    return Run(
        run_id=run_id,
        job_id=job.job_id,
        job_name=job.name,
        job_type=job.job_type,
        target=job.target,
        owner_id=job.owner_id,
        subscribers=job.subscribers,
        trigger=trigger,
        scheduled_time=scheduled,
        attempt=1,
        retry=job.retry,
        timeout_seconds=job.timeout_seconds,
        status=RunStatus.QUEUED if queued else RunStatus.RUNNING,
        queued_at=now,
        started_at=None if queued else now,
        lease_until=now + QUEUE_LEASE if queued else running_lease(now, job.timeout_seconds),
        previous_status=job.last_run_status,
        dedupe_key=dedupe_key,
        expires_at=epoch_seconds(now + timedelta(days=job.retention_days)),
    )


def failure_changes(
    run: Run, now: datetime, error: ErrorInfo, *, timed_out: bool
) -> tuple[RunStatus, dict[str, Any]]:
    """What a failed or timed-out attempt becomes: `retrying` if the policy allows another
    attempt, else the final `failed` / `timed_out`. Only the final outcome is terminal."""
    finished = _finish_fields(run, now)
    if run.attempt < run.retry.max_attempts:
        next_at = now + run.retry.delay_after(run.attempt, seed=f"{run.run_id}#{run.attempt}")
        return RunStatus.RETRYING, {
            **finished,
            "error": error,
            "next_attempt_at": next_at,
            # The retry schedule should fire at next_at; if its delivery never arrives, the
            # sweeper ends the run once this lease has passed, not while AWS may still deliver.
            "lease_until": next_at + RETRY_LEASE,
        }
    final = RunStatus.TIMED_OUT if timed_out else RunStatus.FAILED
    return final, {**finished, "error": error, "lease_until": None, "next_attempt_at": None}


def cancel_changes(run: Run, now: datetime) -> dict[str, Any]:
    """What a requested cancel writes when the runner or the sweeper honours it (`canceled`,
    never retried). A running attempt ends now; a pending retry keeps its last attempt's duration."""
    ended = _finish_fields(run, now) if run.status is RunStatus.RUNNING else {"finished_at": now}
    return {**ended, "lease_until": None, "next_attempt_at": None}


def success_changes(run: Run, now: datetime, result: dict[str, Any]) -> dict[str, Any]:
    return {
        **_finish_fields(run, now),
        "result": result,
        "error": None,
        "lease_until": None,
        "next_attempt_at": None,
    }


def _finish_fields(run: Run, now: datetime) -> dict[str, Any]:
    started = run.started_at or run.queued_at
    return {"finished_at": now, "duration_ms": max(0, int((now - started).total_seconds() * 1000))}
