"""Users and their notification preferences (keyed by the JWT `sub`).

Preferences keep the seed's keys and defaults (`email_notifications`, `email_on_job_completion`,
`email_on_job_failure`, `notification_frequency`) and add per-event switches, quiet hours and
job filters. Unknown keys are rejected; a `PreferencesPatch` merges into stored preferences.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from typing import Annotated, Any, Self
from zoneinfo import ZoneInfo

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, field_validator, model_validator

from jobtracker_common.models import (
    ID_PATTERN,
    MAX_TIMEZONE_LENGTH,
    StrictModel,
    validate_iana_timezone,
    validate_timezone,
)

# Matched with fullmatch: `$` would also match before a trailing newline ("22:00\n").
_HHMM = re.compile(r"([01]\d|2[0-3]):([0-5]\d)")
# Deliberately simple: SES is the real judge of an address; this only catches obvious garbage
# (and any CR/LF, which could otherwise end up in a header).
_EMAIL = re.compile(r"^[^@\s\x00-\x1f\x7f]+@[^@\s\x00-\x1f\x7f]+\.[^@\s\x00-\x1f\x7f]+$")


class NotificationFrequency(StrEnum):
    IMMEDIATE = "immediate"
    HOURLY = "hourly"
    DAILY = "daily"


class NotificationEvent(StrEnum):
    """What a run transition means to a reader. `recovered` = first success after a failure."""

    COMPLETED = "completed"
    FAILED = "failed"
    TIMED_OUT = "timed_out"
    RETRYING = "retrying"
    RECOVERED = "recovered"


def _parse_hhmm(value: str, field: str) -> time:
    match = _HHMM.fullmatch(value)
    if not match:
        raise ValueError(f"{field} must be a 24-hour time 'HH:MM' (e.g. '22:00'), got {value!r}")
    return time(int(match.group(1)), int(match.group(2)))


class QuietHours(StrictModel):
    """A daily window, in the user's timezone, during which emails are held; may cross midnight."""

    # Length bounds first: the messages below quote the value, and an error response has to
    # stay far below Lambda's 6 MB response limit whatever the request sent.
    start: str = Field(max_length=5, description="Start of the quiet window, 'HH:MM' (24h), inclusive.")
    end: str = Field(max_length=5, description="End of the quiet window, 'HH:MM' (24h), exclusive.")
    timezone: str = Field(
        default="UTC", max_length=MAX_TIMEZONE_LENGTH, description="IANA timezone, e.g. 'Europe/Berlin'."
    )

    @field_validator("start", "end")
    @classmethod
    def _check_time(cls, value: str, info: Any) -> str:
        _parse_hhmm(value, info.field_name)
        return value

    @field_validator("timezone")
    @classmethod
    def _check_timezone(cls, value: str) -> str:
        return validate_timezone(value)

    @model_validator(mode="after")
    def _check_window(self) -> Self:
        # The parsed times: equal strings are not the only way to spell an empty window.
        if _parse_hhmm(self.start, "start") == _parse_hhmm(self.end, "end"):
            raise ValueError("quiet_hours start and end must differ (an empty window is no window)")
        return self

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def contains(self, at: datetime) -> bool:
        local = at.astimezone(self.zone).time().replace(second=0, microsecond=0, tzinfo=None)
        start, end = _parse_hhmm(self.start, "start"), _parse_hhmm(self.end, "end")
        if start < end:
            return start <= local < end
        return local >= start or local < end  # crosses midnight

    def window_end(self, at: datetime) -> datetime:
        """When the window holding `at` ends: the first instant after `at` at which the clock
        reads `end` (or jumps past it) and `contains` is false; aware, in the user's timezone.

        Compared as instants, not wall times: on the night the clocks go back `end` can be read
        twice (the one after `at` counts), and on the night they go forward past `end` the window
        ends when they jump.
        """
        end = _parse_hhmm(self.end, "end")
        after = at.astimezone(UTC)
        first_day = after.astimezone(self.zone).date()
        for offset in range(3):
            for instant in self._end_instants(first_day + timedelta(days=offset), end):
                if instant > after and not self.contains(instant):
                    return instant.astimezone(self.zone)
        raise AssertionError(f"no end of {self!r} within two days of {at}")  # start != end: unreachable

    def _end_instants(self, day: date, end: time) -> Iterator[datetime]:
        """The UTC instants at which the clock reads `end` on `day`, oldest first; where `end`
        is skipped (clocks go forward), the instant of the jump."""
        zone = self.zone
        wall = datetime.combine(day, end)
        folds = sorted({wall.replace(tzinfo=zone, fold=f).astimezone(UTC) for f in (0, 1)})
        real = [u for u in folds if u.astimezone(zone).replace(tzinfo=None) == wall]
        if real:
            yield from real
            return
        # In the gap: the fold=1 reading lies before the jump, the fold=0 one after it; the
        # offsets change at a whole minute, found by bisection.
        before, after = folds
        offset_before = before.astimezone(zone).utcoffset()
        while after - before > timedelta(minutes=1):
            middle = before + (after - before) // 2
            middle = middle.replace(second=0, microsecond=0)
            if middle <= before:
                middle = before + timedelta(minutes=1)
            if middle.astimezone(zone).utcoffset() == offset_before:
                before = middle
            else:
                after = middle
        yield after


#: Filter entries are bounded one by one, not only counted: 200 unbounded job ids would make
#: the user's item larger than DynamoDB's 400 KB (a 500 on the write). A request's job ids must
#: be job ids (ULIDs) and its job types as long as a job's `job_type` may be. Stored entries
#: (`NotificationPreferences`) are not bounded again: DynamoDB already held them, and one accepted
#: before requests were checked must still read as the filter it is (never as "no filter",
#: which would mean every job).
JobIdEntry = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
JobTypeEntry = Annotated[str, StringConstraints(max_length=64)]


def _check_filter(values: list[str] | None, name: str) -> list[str] | None:
    if values is None:
        return None
    cleaned = [v.strip() for v in values]
    if any(not v for v in cleaned):
        raise ValueError(f"{name} entries must be non-empty strings")
    return list(dict.fromkeys(cleaned))


class NotificationPreferences(StrictModel):
    email_notifications: bool = Field(default=True, description="Master switch for every email.")
    email_on_job_completion: bool = True
    email_on_job_failure: bool = True
    notification_frequency: NotificationFrequency = NotificationFrequency.IMMEDIATE
    email_on_job_timeout: bool = True
    email_on_job_retry: bool = False
    email_on_job_recovery: bool = Field(
        default=True, description="Email on the first success after a failure or timeout."
    )
    quiet_hours: QuietHours | None = None
    job_ids: list[str] | None = Field(
        default=None, max_length=200, description="Only these jobs (null = every job)."
    )
    job_types: list[str] | None = Field(
        default=None, max_length=50, description="Only these job types (null = every type)."
    )

    @field_validator("job_ids", "job_types")
    @classmethod
    def _check_filters(cls, value: list[str] | None, info: Any) -> list[str] | None:
        return _check_filter(value, info.field_name)

    def merge(self, patch: PreferencesPatch) -> NotificationPreferences:
        """These preferences with the keys present in `patch` replaced (null clears an optional)."""
        data = self.model_dump()
        data.update(patch.model_dump(exclude_unset=True))
        return NotificationPreferences.model_validate(data)

    def matches_job(self, job_id: str, job_type: str) -> bool:
        if self.job_ids is not None and job_id not in self.job_ids:
            return False
        return self.job_types is None or job_type in self.job_types

    def resolve(self, event: NotificationEvent, *, job_id: str, job_type: str) -> NotificationEvent | None:
        """The email this user gets for a run event, or None.

        A recovery is announced as `recovered` when `email_on_job_recovery` is on; with it off,
        it is an ordinary completion (governed by `email_on_job_completion`). So a user who
        turned completions off but kept recovery still hears that a broken job works again.
        """
        if not self.email_notifications or not self.matches_job(job_id, job_type):
            return None
        if event is NotificationEvent.RECOVERED:
            if self.email_on_job_recovery:
                return NotificationEvent.RECOVERED
            event = NotificationEvent.COMPLETED
        switch = {
            NotificationEvent.COMPLETED: self.email_on_job_completion,
            NotificationEvent.FAILED: self.email_on_job_failure,
            NotificationEvent.TIMED_OUT: self.email_on_job_timeout,
            NotificationEvent.RETRYING: self.email_on_job_retry,
        }[event]
        return event if switch else None

    @property
    def timezone(self) -> str:
        """The user's timezone as far as we know it (quiet hours carry one), for digest periods."""
        return self.quiet_hours.timezone if self.quiet_hours else "UTC"


_NOT_NULLABLE = (
    "email_notifications",
    "email_on_job_completion",
    "email_on_job_failure",
    "notification_frequency",
    "email_on_job_timeout",
    "email_on_job_retry",
    "email_on_job_recovery",
)


class PreferencesPatch(BaseModel):
    """A partial update: keys left out keep their value; `null` clears quiet_hours/job filters."""

    model_config = ConfigDict(extra="forbid")

    # Strict: JSON true/false only. Lax parsing would read "no", "off", 0 as False and "yes", 1
    # as True: a client bug silently changing what someone receives instead of a clear 422.
    email_notifications: bool | None = Field(default=None, strict=True)
    email_on_job_completion: bool | None = Field(default=None, strict=True)
    email_on_job_failure: bool | None = Field(default=None, strict=True)
    notification_frequency: NotificationFrequency | None = None
    email_on_job_timeout: bool | None = Field(default=None, strict=True)
    email_on_job_retry: bool | None = Field(default=None, strict=True)
    email_on_job_recovery: bool | None = Field(default=None, strict=True)
    quiet_hours: QuietHours | None = None
    job_ids: list[JobIdEntry] | None = Field(default=None, max_length=200, description="Job ids (ULIDs).")
    job_types: list[JobTypeEntry] | None = Field(default=None, max_length=50)

    @field_validator("job_ids", "job_types")
    @classmethod
    def _check_filters(cls, value: list[str] | None, info: Any) -> list[str] | None:
        return _check_filter(value, info.field_name)

    @field_validator("quiet_hours")
    @classmethod
    def _check_iana_timezone(cls, value: QuietHours | None) -> QuietHours | None:
        # A request's timezone must be on the IANA list, as a job's (ZoneInfo also opens
        # `posix/...`, `right/...`, `localtime`). Only here: stored quiet hours are read with the
        # lighter ZoneInfo check, so the notifier never loads the list and older values still read.
        if value is not None:
            validate_iana_timezone(value.timezone)
        return value

    @model_validator(mode="after")
    def _no_null_switches(self) -> Self:
        nulls = [k for k in _NOT_NULLABLE if k in self.model_fields_set and getattr(self, k) is None]
        if nulls:
            raise ValueError(f"{', '.join(nulls)} cannot be null (only quiet_hours, job_ids, job_types can)")
        return self


def validate_email(value: str) -> str:
    value = value.strip()
    if len(value) > 254 or not _EMAIL.match(value):
        raise ValueError(f"not a valid email address: {value!r}")
    return value


class User(StrictModel):
    user_id: str = Field(min_length=1, max_length=256, description="The JWT `sub`.")
    email: str | None = None
    display_name: str | None = Field(default=None, max_length=200)
    preferences: NotificationPreferences = Field(default_factory=NotificationPreferences)
    created_at: datetime
    updated_at: datetime | None = None

    @field_validator("email")
    @classmethod
    def _check_email(cls, value: str | None) -> str | None:
        return None if value is None else validate_email(value)
