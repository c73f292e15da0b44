"""The lease sweeper: ends runs whose runner stopped reporting (crash, OOM, hard kill).

Runs whose lease expired are found through the sparse `active` index (a range query per shard,
never a Scan), in every shard the ActiveIndexShards parameter allows, not only the configured
ones: a run stays in the shard it was created in, so after the count was lowered a run whose
runner died may sit in a shard the API no longer reads, and only the sweeper ends it. Each is
moved with a conditional transition on the status and version it was read with, so a run that
finished between the query and the update keeps its real outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jobtracker_common.errors import ConflictError
from jobtracker_common.lifecycle import cancel_changes, failure_changes
from jobtracker_common.models import ErrorInfo, Run, RunStatus
from jobtracker_common.observability import logger as make_logger
from jobtracker_common.repositories import RunsRepository
from jobtracker_common.timeutil import Clock, to_iso, utcnow

logger = make_logger("sweeper")

LEASE_EXPIRED = "LeaseExpired"


@dataclass
class SweepReport:
    expired: int = 0
    timed_out: list[str] = field(default_factory=list)
    retrying: list[str] = field(default_factory=list)
    #: Runs whose cancel was requested before their runner was lost.
    canceled: list[str] = field(default_factory=list)
    #: Runs that moved on (finished, claimed) between the query and the update: left alone.
    left_alone: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def expiry_changes(run: Run, now: datetime) -> tuple[RunStatus, dict[str, Any]]:
    """What an expired lease turns a run into, with an error message that says why."""
    assert run.lease_until is not None
    expired = f"lease expired at {to_iso(run.lease_until)}"
    if run.cancel_requested:
        # The owner asked for the run to stop: a lost attempt (or a retry that never started)
        # must not become a retry that runs the job again.
        return RunStatus.CANCELED, cancel_changes(run, now)
    if run.status is RunStatus.RUNNING:
        error = ErrorInfo(
            type=LEASE_EXPIRED,
            message=f"{expired}; the runner stopped reporting (crash, OOM or hard kill) "
            f"during attempt {run.attempt}",
        )
        # A lost attempt is a failed attempt: retried if the policy allows, else timed_out.
        return failure_changes(run, now, error, timed_out=True)
    # The lease of a pending run ends only after AWS has stopped delivering its invocation, so
    # nothing can still start it: say that, not a guess at which stage lost it.
    if run.status is RunStatus.RETRYING:
        last = f"; last error: {run.error.message}" if run.error else ""
        due = f", due at {to_iso(run.next_attempt_at)}" if run.next_attempt_at else ""
        message = (
            f"{expired}; retry attempt {run.attempt + 1} did not start within its delivery window"
            f"{due} (its schedule was not created, or the delivery was dropped){last}"
        )
    else:
        message = (
            f"{expired}; the run was queued but did not start within its delivery window "
            "(the runner was not invoked, the invocation was dropped, or the runner died first)"
        )
    return RunStatus.TIMED_OUT, {
        "finished_at": now,
        "error": ErrorInfo(type=LEASE_EXPIRED, message=message[:4000]),
        "lease_until": None,
        "next_attempt_at": None,
    }


class Sweeper:
    def __init__(self, runs: RunsRepository, *, clock: Clock = utcnow) -> None:
        self._runs = runs
        self._clock = clock

    def sweep(self) -> SweepReport:
        now = self._clock()
        report = SweepReport()
        for run in self._runs.list_active(lease_before=now, every_shard=True):
            # The index is eventually consistent; the conditional write below is the arbiter.
            if run.lease_until is None or run.lease_until >= now or not run.status.is_active:
                continue
            report.expired += 1
            status, changes = expiry_changes(run, now)
            try:
                self._runs.transition(run, status, **changes)
            except ConflictError as exc:
                report.left_alone.append(run.run_id)
                logger.info("run moved on before the sweeper; left alone", extra={"reason": str(exc)})
                continue
            {RunStatus.RETRYING: report.retrying, RunStatus.CANCELED: report.canceled}.get(
                status, report.timed_out
            ).append(run.run_id)
            logger.warning(
                "lease expired",
                extra={
                    "run_id": run.run_id,
                    "from": run.status.value,
                    "to": status.value,
                    "attempt": run.attempt,
                },
            )
        return report
