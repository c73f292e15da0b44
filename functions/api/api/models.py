"""Request and response shapes of the HTTP API. Requests reject unknown fields (422)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

from jobtracker_common.dynamo import check_storable
from jobtracker_common.models import (
    ErrorInfo,
    Job,
    LogEntry,
    LogLevel,
    RetryPolicy,
    Run,
    RunStatus,
    StrictModel,
    Trigger,
    validate_iana_timezone,
)
from jobtracker_common.users import NotificationPreferences, User
from pydantic import BaseModel, Field, StringConstraints, field_validator

MAX_PARAMS_BYTES = 16_384

UserId = Annotated[str, StringConstraints(min_length=1, max_length=256, pattern=r"^[^\x00-\x1f\x7f]+$")]


class ErrorResponse(BaseModel):
    """Every error the API returns."""

    message: str
    details: list[dict[str, Any]] = Field(default=[])


# ---- jobs --------------------------------------------------------------------------------
class JobIn(StrictModel):
    """Body of `POST /jobs` and `PUT /jobs/{job_id}` (PUT replaces the whole definition)."""

    name: str = Field(min_length=1, max_length=200)
    job_type: str = Field(min_length=1, max_length=64, description="A registered job type.")
    params: dict[str, Any] = Field(default={}, description="Validated against the job type.")
    schedule: str | None = Field(
        default=None,
        max_length=256,
        description=(
            "AWS schedule expression: `rate(5 minutes)`, `cron(0 2 * * ? *)` or `at(2030-01-01T00:00:00)`."
        ),
    )
    timezone: str = Field(default="UTC", max_length=64, description="IANA timezone of the schedule.")
    enabled: bool = True
    timeout_seconds: int = Field(default=300, ge=1, le=900)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    subscribers: list[UserId] = Field(default=[], max_length=50, description="User ids to notify.")
    target: str | None = Field(default=None, max_length=256, description="Free text, e.g. a device name.")
    retention_days: int = Field(default=90, ge=1, le=3_650)

    @field_validator("params")
    @classmethod
    def _check_params(cls, value: dict[str, Any]) -> dict[str, Any]:
        # Params are stored as given (the job type's model only checks them): what DynamoDB
        # cannot store (a number out of its range, nesting beyond 32) is the caller's 422, not
        # a 500 from the write. Before json.dumps: the check is iterative, dumps recursive.
        check_storable(value, "params")
        # A job is one DynamoDB item (400 KB); params are configuration, not payload.
        try:
            size = len(json.dumps(value, allow_nan=False))
        except ValueError as exc:
            raise ValueError("params must be plain JSON (no NaN or Infinity)") from exc
        if size > MAX_PARAMS_BYTES:
            raise ValueError(f"params may be at most {MAX_PARAMS_BYTES} bytes of JSON")
        return value

    @field_validator("schedule")
    @classmethod
    def _strip_schedule(cls, value: str | None) -> str | None:
        # Validation reads the expression stripped; store and send Scheduler exactly that.
        return value.strip() if value is not None else None

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        return validate_iana_timezone(value)


class JobOut(BaseModel):
    job_id: str
    owner_id: str
    name: str
    job_type: str
    params: dict[str, Any]
    schedule: str | None
    timezone: str
    enabled: bool
    timeout_seconds: int
    retry: RetryPolicy
    subscribers: list[str]
    target: str | None
    retention_days: int
    created_at: datetime
    updated_at: datetime
    last_run_id: str | None = None
    last_run_status: RunStatus | None = None
    next_fire_times: list[datetime] = Field(description="The next (up to) three fire times, UTC.")

    @classmethod
    def of(cls, job: Job, next_fire_times: list[datetime]) -> JobOut:
        return cls.model_validate({**job.model_dump(), "next_fire_times": next_fire_times})


class JobList(BaseModel):
    items: list[JobOut]
    next_cursor: str | None = None


class RunAccepted(BaseModel):
    run_id: str
    status: RunStatus = Field(description="`queued`; a repeated Idempotency-Key shows that run's status now.")


# ---- runs --------------------------------------------------------------------------------
class RunOut(BaseModel):
    run_id: str
    job_id: str
    job_name: str
    job_type: str
    target: str | None = None
    owner_id: str
    status: RunStatus
    attempt: int
    trigger: Trigger
    scheduled_time: datetime | None = None
    queued_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    next_attempt_at: datetime | None = None
    duration_ms: int | None = None
    error: ErrorInfo | None = None
    result: dict[str, Any] | None = None
    progress: str | None = None
    cancel_requested: bool = False

    @classmethod
    def of(cls, run: Run) -> RunOut:
        return cls.model_validate(run.model_dump(include=set(cls.model_fields)))


class RunList(BaseModel):
    items: list[RunOut]
    next_cursor: str | None = None


class ActiveRun(BaseModel):
    run_id: str
    job_id: str
    job_name: str
    job_type: str
    target: str | None = None
    owner_id: str
    status: RunStatus
    attempt: int
    queued_at: datetime
    started_at: datetime | None = None
    elapsed_ms: int = Field(description="Since the run started (or was queued, if not started yet).")
    progress: str | None = None
    next_attempt_at: datetime | None = None

    @classmethod
    def of(cls, run: Run, now: datetime) -> ActiveRun:
        since = run.started_at or run.queued_at
        elapsed = max(0, int((now.astimezone(UTC) - since).total_seconds() * 1000))
        return cls.model_validate(
            {**run.model_dump(include=set(cls.model_fields) - {"elapsed_ms"}), "elapsed_ms": elapsed}
        )


class ActiveRunList(BaseModel):
    items: list[ActiveRun]
    next_cursor: str | None = None


class LogEntryOut(BaseModel):
    timestamp: datetime
    level: LogLevel
    category: str
    message: str
    details: dict[str, Any] | None = None
    attempt: int

    @classmethod
    def of(cls, entry: LogEntry) -> LogEntryOut:
        return cls.model_validate(entry.model_dump())


class LogEntryList(BaseModel):
    items: list[LogEntryOut]
    next_cursor: str | None = None


# ---- meta --------------------------------------------------------------------------------
class Health(BaseModel):
    status: str = "ok"


# ---- users -------------------------------------------------------------------------------
class UserOut(BaseModel):
    user_id: str
    email: str | None = None
    display_name: str | None = None
    preferences: NotificationPreferences
    created_at: datetime

    @classmethod
    def of(cls, user: User) -> UserOut:
        return cls.model_validate(user.model_dump(include=set(cls.model_fields)))
