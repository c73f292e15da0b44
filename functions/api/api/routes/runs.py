"""Runs and their log entries: `/job-logs`. Scopes: read:job_logs / write:job_logs."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from typing import Annotated, Literal

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Query
from jobtracker_common.errors import ValidationError
from jobtracker_common.models import RunStatus
from jobtracker_common.statistics_query import StatisticsResult
from pydantic import BeforeValidator

from api.auth import READ_JOB_LOGS, WRITE_JOB_LOGS, secured
from api.deps import services
from api.models import ActiveRun, ActiveRunList, LogEntryList, LogEntryOut, RunList, RunOut
from api.routes.common import ID_PATTERN, Cursor, Limit, RunId, caller, responses

router = Router()  # type: ignore[no-untyped-call]

_STATUS = "|".join(s.value for s in RunStatus)
StatusFilter = Annotated[
    str | None,
    Query(
        pattern=rf"^({_STATUS})(,({_STATUS}))*$",
        max_length=200,
        description="Comma-separated statuses, e.g. `failed,timed_out`.",
    ),
]
JobFilter = Annotated[str | None, Query(pattern=ID_PATTERN, description="Only runs of this job.")]
JobTypeFilter = Annotated[str | None, Query(min_length=1, max_length=64, description="Only this job type.")]


_ISO_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}")


def _iso_only(value: object) -> object:
    """pydantic would read `0.5` as a Unix timestamp; the documented format is ISO-8601 only."""
    if isinstance(value, str) and not _ISO_DATE.match(value):
        raise ValueError("expected an ISO-8601 date-time, e.g. 2026-11-29T00:00:00Z")
    return value


IsoDatetime = Annotated[datetime, BeforeValidator(_iso_only)]
From = Annotated[IsoDatetime | None, Query(alias="from", description="At or after (ISO-8601).")]
To = Annotated[IsoDatetime | None, Query(alias="to", description="At or before (ISO-8601).")]


def as_utc(value: datetime | None, name: str) -> datetime | None:
    """Naive means UTC. Years outside 1970..9000 cannot name a run and would overflow the arithmetic."""
    if value is None:
        return None
    if not 1970 <= value.year <= 9000:
        raise ValidationError(f"'{name}' must be between 1970 and 9000")
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


@router.get(
    "/job-logs/active",
    summary="Runs that are queued, running or waiting to retry",
    security=secured(READ_JOB_LOGS),
    responses=responses(200, "Active runs, newest first."),
    tags=["runs"],
)
def active_runs() -> ActiveRunList:
    svc = services()
    now = svc.clock()
    runs = svc.runs_service.active(caller(router))
    return ActiveRunList(items=[ActiveRun.of(r, now) for r in runs])


@router.get(
    "/job-logs/statistics",
    summary="Run statistics: counts by status, success rate, durations (p50/p95), per job type and over time",
    description=(
        "`time_period=day|week|month` (default day; hourly buckets for a day, daily otherwise) or "
        "`from` + `to` (hourly up to 72 h, daily beyond). Yours only; everyone's for admins."
    ),
    security=secured(READ_JOB_LOGS),
    responses=responses(200, "Statistics for the window.", 404),
    tags=["runs"],
)
def statistics(
    *,
    time_period: Annotated[Literal["day", "week", "month"] | None, Query()] = None,
    from_: From = None,
    to: To = None,
    job_type: JobTypeFilter = None,
    job_id: JobFilter = None,
) -> StatisticsResult:
    return services().statistics_service.query(
        caller(router),
        time_period=time_period,
        start=as_utc(from_, "from"),
        end=as_utc(to, "to"),
        job_type=job_type,
        job_id=job_id,
    )


@router.get(
    "/job-logs",
    summary="Runs, newest first (yours; everyone's for admins)",
    security=secured(READ_JOB_LOGS),
    responses=responses(200, "A page of runs."),
    tags=["runs"],
)
def list_runs(
    *,
    status: StatusFilter = None,
    job_id: JobFilter = None,
    job_type: JobTypeFilter = None,
    from_: From = None,
    to: To = None,
    limit: Limit = 50,
    cursor: Cursor = None,
) -> RunList:
    from api.service import RunFilter

    flt = RunFilter(
        statuses=[RunStatus(s) for s in dict.fromkeys(status.split(","))] if status else [],
        job_id=job_id,
        job_type=job_type,
        start=as_utc(from_, "from"),
        end=as_utc(to, "to"),
    )
    runs, next_cursor = services().runs_service.list_runs(caller(router), flt, limit=limit, cursor=cursor)
    return RunList(items=[RunOut.of(r) for r in runs], next_cursor=next_cursor)


@router.get(
    "/job-logs/<run_id>",
    summary="Get a run",
    security=secured(READ_JOB_LOGS),
    responses=responses(200, "The run.", 404),
    tags=["runs"],
)
def get_run(run_id: RunId) -> RunOut:
    return RunOut.of(services().runs_service.get(caller(router), run_id))


@router.get(
    "/job-logs/<run_id>/entries",
    summary="A run's log entries, oldest first",
    security=secured(READ_JOB_LOGS),
    responses=responses(200, "A page of log entries.", 404),
    tags=["runs"],
)
def run_entries(run_id: RunId, limit: Limit = 100, cursor: Cursor = None) -> LogEntryList:
    entries, next_cursor = services().runs_service.entries(caller(router), run_id, limit=limit, cursor=cursor)
    return LogEntryList(items=[LogEntryOut.of(e) for e in entries], next_cursor=next_cursor)


@router.post(
    "/job-logs/<run_id>/cancel",
    summary="Cancel a run: queued/retrying stop now (200); running stops at its next checkpoint (202)",
    security=secured(WRITE_JOB_LOGS),
    responses=responses(200, "Canceled.", 404, 409)
    | {202: {"description": "Cancellation requested; the run stops at its next checkpoint."}},
    tags=["runs"],
)
def cancel_run(run_id: RunId) -> Response[RunOut]:
    run = services().runs_service.cancel(caller(router), run_id)
    return Response(
        status_code=202 if run.status is RunStatus.RUNNING else 200,
        content_type=content_types.APPLICATION_JSON,
        body=RunOut.of(run),
    )


@router.delete(
    "/job-logs/<run_id>",
    summary="Delete a finished run and its log entries",
    security=secured(WRITE_JOB_LOGS),
    status_code=204,
    responses=responses(204, "Deleted.", 404, 409, empty=True),
    tags=["runs"],
)
def delete_run(run_id: RunId) -> Response[None]:
    services().runs_service.delete(caller(router), run_id)
    return Response(status_code=204)
