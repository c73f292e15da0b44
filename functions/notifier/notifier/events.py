"""Stream records -> run events worth telling someone about."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from jobtracker_common.errors import ValidationError
from jobtracker_common.models import Run, RunStatus
from jobtracker_common.repositories.runs import RunsRepository
from jobtracker_common.timeutil import to_iso
from jobtracker_common.users import NotificationEvent
from pydantic import ValidationError as PydanticValidationError

_BY_STATUS = {
    RunStatus.COMPLETED: NotificationEvent.COMPLETED,
    RunStatus.FAILED: NotificationEvent.FAILED,
    RunStatus.TIMED_OUT: NotificationEvent.TIMED_OUT,
    RunStatus.RETRYING: NotificationEvent.RETRYING,
}
_UNSUCCESSFUL = frozenset({RunStatus.FAILED, RunStatus.TIMED_OUT})


@dataclass(frozen=True)
class RunEvent:
    run: Run
    event: NotificationEvent

    @property
    def key_attempt(self) -> int:
        """`retrying` happens once per attempt; terminal events once per run (attempt 0)."""
        return self.run.attempt if self.event is NotificationEvent.RETRYING else 0


def classify(run: Run) -> NotificationEvent | None:
    event = _BY_STATUS.get(run.status)
    if event is NotificationEvent.COMPLETED and run.previous_status in _UNSUCCESSFUL:
        return NotificationEvent.RECOVERED
    return event


def parse_record(raw: dict[str, Any]) -> RunEvent | None:
    """A run event from a DynamoDB stream record, or None when there is nothing to tell.

    TTL deletions (REMOVE by the DynamoDB service principal), non-run items and MODIFYs that
    did not change status or attempt (e.g. a progress update on a finished run) are ignored.
    """
    if raw.get("eventName") not in ("INSERT", "MODIFY"):
        return None
    if raw.get("userIdentity", {}).get("principalId") == "dynamodb.amazonaws.com":
        return None
    change = raw.get("dynamodb", {})
    new = change.get("NewImage")
    if not new or new.get("entity", {}).get("S") != "run":
        return None
    try:
        run = RunsRepository.from_item(new)
    except PydanticValidationError as exc:
        raise ValidationError(f"run image is not a valid run: {exc.error_count()} problem(s)") from exc
    event = classify(run)
    if event is None:
        return None
    old = change.get("OldImage")
    if old and old.get("status", {}).get("S") == run.status.value:
        old_attempt = old.get("attempt", {}).get("N")
        if old_attempt is None or int(old_attempt) == run.attempt:
            return None
    return RunEvent(run=run, event=event)


def _iso(value: Any) -> str | None:
    return to_iso(value) if value is not None else None


def snapshot(run: Run) -> dict[str, Any]:
    """What an email shows about a run; every key present so templates can rely on them."""
    return {
        "run_id": run.run_id,
        "job_id": run.job_id,
        "job_name": run.job_name,
        "job_type": run.job_type,
        "target": run.target,
        "status": run.status.value,
        "trigger": run.trigger.value,
        "attempt": run.attempt,
        "max_attempts": run.retry.max_attempts,
        "queued_at": _iso(run.queued_at),
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "next_attempt_at": _iso(run.next_attempt_at),
        "duration_ms": run.duration_ms,
        "error": run.error.model_dump() if run.error else None,
        "result": run.result,
        "previous_status": run.previous_status.value if run.previous_status else None,
    }
