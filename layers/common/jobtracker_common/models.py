"""Domain models (pydantic v2): jobs, runs, log entries and the run status machine."""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from enum import StrEnum
from functools import cache
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator


class RunStatus(StrEnum):
    QUEUED = "queued"
    RUNNING = "running"
    RETRYING = "retrying"
    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    CANCELED = "canceled"

    @property
    def is_terminal(self) -> bool:
        return self in TERMINAL_STATUSES

    @property
    def is_active(self) -> bool:
        return self in ACTIVE_STATUSES


TERMINAL_STATUSES = frozenset(
    {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.CANCELED}
)
ACTIVE_STATUSES = frozenset({RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.RETRYING})

#: The run state machine. Terminal states have no way out.
ALLOWED_TRANSITIONS: dict[RunStatus, frozenset[RunStatus]] = {
    RunStatus.QUEUED: frozenset(
        {RunStatus.RUNNING, RunStatus.CANCELED, RunStatus.TIMED_OUT, RunStatus.FAILED}
    ),
    RunStatus.RUNNING: frozenset(
        {RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.RETRYING, RunStatus.CANCELED}
    ),
    RunStatus.RETRYING: frozenset(
        {RunStatus.RUNNING, RunStatus.CANCELED, RunStatus.TIMED_OUT, RunStatus.FAILED}
    ),
    RunStatus.COMPLETED: frozenset(),
    RunStatus.FAILED: frozenset(),
    RunStatus.TIMED_OUT: frozenset(),
    RunStatus.CANCELED: frozenset(),
}


def can_transition(current: RunStatus, new: RunStatus) -> bool:
    return new in ALLOWED_TRANSITIONS[current]


class Trigger(StrEnum):
    SCHEDULE = "schedule"
    RULE = "rule"
    MANUAL = "manual"
    RETRY = "retry"


class StrictModel(BaseModel):
    """Unknown fields are rejected, never ignored.

    Empty list/dict defaults are written `Field(default=[])`, not `default_factory=list`: pydantic
    copies a mutable default for each instance, and a builtin factory makes it inspect the
    builtin's text signature, ~3 ms of tokenizer set-up on every cold start (docs/decisions.md).
    """

    model_config = ConfigDict(extra="forbid")


class RetryPolicy(StrictModel):
    max_attempts: int = Field(default=3, ge=1, le=10, description="Total attempts, the first included.")
    backoff_seconds: int = Field(default=30, ge=1, le=86_400, description="Delay before the second attempt.")
    backoff_rate: float = Field(default=2.0, ge=1.0, le=10.0, description="Multiplier per further attempt.")
    max_backoff_seconds: int = Field(default=3_600, ge=1, le=86_400)
    jitter: bool = Field(default=True, description="Spread delays over [delay/2, delay].")

    def delay_after(self, failed_attempt: int, seed: str) -> timedelta:
        """Delay before attempt `failed_attempt + 1`.

        The jitter is derived from `seed` (run id and attempt), not from a random source, so
        every replay of the same failure computes the same retry time and schedule.
        """
        base = min(
            float(self.max_backoff_seconds),
            self.backoff_seconds * self.backoff_rate ** max(0, failed_attempt - 1),
        )
        if self.jitter:
            fraction = int.from_bytes(hashlib.sha256(seed.encode()).digest()[:4], "big") / 0xFFFFFFFF
            base = base / 2 + fraction * base / 2
        return timedelta(seconds=round(base, 3))


#: Job and run ids are ULIDs; anything else cannot name one.
ID_PATTERN = r"^[0-9A-Za-z]{26}$"
#: Longer than any IANA zone name (the longest is 32 characters).
MAX_TIMEZONE_LENGTH = 64


@cache
def iana_timezones() -> frozenset[str]:
    """Zone names of the IANA tz database (the `tzdata` package the layer ships): the names
    EventBridge Scheduler accepts. `Factory` is a placeholder zone, not a place.

    Imported here, not at module level: only requests that name a timezone need the list, and
    `importlib.resources` (with pathlib) would otherwise weigh on every function's cold start.
    """
    from importlib import resources

    names = resources.files("tzdata").joinpath("zones").read_text(encoding="utf-8").split()
    return frozenset(names) - {"Factory"}


def validate_timezone(value: str) -> str:
    """A timezone ZoneInfo can load; for values already stored (reads stay cheap).

    ZoneInfo treats the key as a file path: a tzdata directory ("Europe") raises
    IsADirectoryError and an over-long name "File name too long", both OSErrors.
    """
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError) as exc:
        raise ValueError(f"unknown IANA timezone {value[:MAX_TIMEZONE_LENGTH]!r}") from exc
    return value


def validate_iana_timezone(value: str) -> str:
    """A zone of the IANA list; for what a request brings in.

    Checked against the list first: ZoneInfo also opens `posix/...`, `right/...` and
    `localtime`, which Scheduler refuses (a 5xx after the fact), and directories.
    """
    if value not in iana_timezones():
        raise ValueError(f"unknown IANA timezone {value[:MAX_TIMEZONE_LENGTH]!r}")
    return validate_timezone(value)


class Job(StrictModel):
    job_id: str
    owner_id: str
    name: str = Field(min_length=1, max_length=200)
    job_type: str = Field(min_length=1, max_length=64)
    params: dict[str, Any] = Field(default={})
    schedule: str | None = None
    timezone: str = "UTC"
    enabled: bool = True
    timeout_seconds: int = Field(default=300, ge=1, le=900)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    subscribers: list[str] = Field(default=[], max_length=50)
    target: str | None = Field(default=None, max_length=256)
    retention_days: int = Field(default=90, ge=1, le=3_650)
    created_at: datetime
    updated_at: datetime
    last_run_id: str | None = None
    last_run_status: RunStatus | None = None

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        return validate_timezone(value)


class ErrorInfo(StrictModel):
    type: str
    message: str


class Run(StrictModel):
    run_id: str
    job_id: str
    job_name: str
    job_type: str
    target: str | None = None
    owner_id: str
    subscribers: list[str] = Field(default=[])
    trigger: Trigger
    scheduled_time: datetime | None = None
    attempt: int = Field(default=1, ge=1)
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    timeout_seconds: int = 300
    status: RunStatus
    queued_at: datetime
    started_at: datetime | None = None
    finished_at: datetime | None = None
    duration_ms: int | None = None
    error: ErrorInfo | None = None
    result: dict[str, Any] | None = None
    lease_until: datetime | None = None
    next_attempt_at: datetime | None = None
    #: The job's last terminal status when this run was created (recovery detection).
    previous_status: RunStatus | None = None
    cancel_requested: bool = False
    progress: str | None = None
    dedupe_key: str | None = None
    version: int = 1
    #: DynamoDB TTL (epoch seconds); statistics outlive it.
    expires_at: int | None = None


class LogLevel(StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"


class LogEntry(StrictModel):
    timestamp: datetime
    level: LogLevel = LogLevel.INFO
    category: str = "job"
    message: str = Field(max_length=4_000)
    details: dict[str, Any] | None = None
    attempt: int = 1
