"""Build runs and jobs directly in the tables, for API tests that need a given state."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from jobtracker_common.ids import new_id
from jobtracker_common.lifecycle import running_lease
from jobtracker_common.models import ErrorInfo, LogEntry, Run, RunStatus, Trigger
from jobtracker_common.repositories import RunsRepository


def make_run(
    runs: RunsRepository,
    *,
    owner_id: str = "user-alice",
    job_id: str | None = None,
    status: RunStatus = RunStatus.COMPLETED,
    queued_at: datetime | None = None,
    job_type: str = "demo",
    attempt: int = 1,
    logs: int = 0,
    **extra: Any,
) -> Run:
    queued = queued_at or datetime.now(UTC) - timedelta(minutes=5)
    fields: dict[str, Any] = {
        "run_id": new_id(queued),
        "job_id": job_id or new_id(queued - timedelta(days=1)),
        "job_name": "nightly backup",
        "job_type": job_type,
        "target": "core-sw-1",
        "owner_id": owner_id,
        "trigger": Trigger.SCHEDULE,
        "attempt": attempt,
        "status": status,
        "queued_at": queued,
    }
    if status is not RunStatus.QUEUED:
        fields["started_at"] = queued + timedelta(seconds=1)
    if status.is_active:
        fields["lease_until"] = running_lease(queued, 300)
    if status is RunStatus.RETRYING:
        fields["next_attempt_at"] = queued + timedelta(minutes=1)
        fields["error"] = ErrorInfo(type="DemoFailure", message="failed")
    if status.is_terminal:
        fields["finished_at"] = queued + timedelta(seconds=3)
        fields["duration_ms"] = 2000
    fields.update(extra)
    run = runs.create(Run.model_validate(fields))
    if logs:
        entries = [LogEntry(timestamp=queued, message=f"line {i}", attempt=attempt) for i in range(logs)]
        runs.append_logs(run, entries, first_seq=0)
    return run


SAMPLE_TIME = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)


def sample_run() -> Run:
    """One running run with fixed ids and times, for tests that never store it through a table."""
    return Run(
        run_id="01JRUN0000000000000000000A",
        job_id="01JJOB0000000000000000000A",
        job_name="backup",
        job_type="demo",
        owner_id="u1",
        trigger=Trigger.MANUAL,
        status=RunStatus.RUNNING,
        queued_at=SAMPLE_TIME,
        started_at=SAMPLE_TIME,
        lease_until=SAMPLE_TIME,
    )
