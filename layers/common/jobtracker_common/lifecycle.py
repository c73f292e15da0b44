"""Run lifecycle decisions shared by the runner, the sweeper and the API."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from jobtracker_common.models import ErrorInfo, Run, RunStatus

#: Extra time on top of a job's timeout before the sweeper may declare a run lost.
LEASE_MARGIN = timedelta(seconds=60)
#: How long a queued run may wait to be picked up before the sweeper gives up on it.
QUEUE_LEASE = timedelta(minutes=15)


def running_lease(now: datetime, timeout_seconds: int) -> datetime:
    return now + timedelta(seconds=timeout_seconds) + LEASE_MARGIN


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
            # The retry schedule should fire at next_at; if it never does, the sweeper
            # ends the run once this lease has passed.
            "lease_until": next_at + QUEUE_LEASE,
        }
    final = RunStatus.TIMED_OUT if timed_out else RunStatus.FAILED
    return final, {**finished, "error": error, "lease_until": None, "next_attempt_at": None}


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
