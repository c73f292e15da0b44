"""AWS schedule expressions (rate / cron / at) and EventBridge Scheduler schedules for jobs.

Validation follows AWS's own rules (six cron fields, one of day-of-month / day-of-week must be
`?`), so what the API accepts is what Scheduler accepts. Next fire times honour the schedule's
IANA timezone, like Scheduler's `ScheduleExpressionTimezone`. The local emulator fires schedules
with the same functions, so local timing matches what AWS would do.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

from aws_cron_expression_validator.validator import AWSCronExpressionValidator
from botocore.exceptions import ClientError
from pyawscron import AWSCron

from jobtracker_common.errors import ValidationError
from jobtracker_common.lifecycle import DELIVERY_WINDOW

if TYPE_CHECKING:
    from mypy_boto3_scheduler import EventBridgeSchedulerClient
    from mypy_boto3_scheduler.type_defs import TargetTypeDef

_RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")
_CRON = re.compile(r"^cron\((.*)\)$")
_AT = re.compile(r"^at\((\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2})\)$")
_UNIT_SECONDS = {"minute": 60, "hour": 3600, "day": 86400}
#: Bounds the timedelta arithmetic (a rate of 10**11 days overflows it).
_MAX_RATE_SECONDS = 10 * 366 * 86400


@dataclass(frozen=True)
class ScheduleExpression:
    kind: str  # rate | cron | at
    expression: str
    timezone: str = "UTC"
    rate: timedelta | None = None
    cron: str | None = None
    at: datetime | None = None  # local wall time in `timezone`, naive

    def next_fire_times(
        self, after: datetime, count: int = 3, *, anchor: datetime | None = None
    ) -> list[datetime]:
        """The next `count` fire times strictly after `after`, as aware UTC datetimes.

        `anchor` is when a rate schedule started (Scheduler counts rates from creation). Fewer
        than `count` (maybe none) when a one-time schedule has passed (or its instant is outside
        the datetime range), or when pyawscron cannot evaluate a valid cron (a day 29-31 in a
        month without it, explicit years, `6#5`). Never raises.
        """
        after = after.astimezone(UTC)
        if self.kind == "at":
            fire = _at_in_utc(self.at, self.timezone)
            return [fire] if fire is not None and fire > after and count > 0 else []
        if self.kind == "rate":
            assert self.rate is not None
            start = (anchor or after).astimezone(UTC)
            periods = max(0, int((after - start) / self.rate) + 1) if after >= start else 0
            first = start + self.rate * periods
            return [first + self.rate * i for i in range(count)]
        assert self.cron is not None
        zone = ZoneInfo(self.timezone)
        # pyawscron evaluates in UTC only: evaluate on the local wall clock, then map back.
        local = after.astimezone(zone).replace(tzinfo=UTC)
        out: list[datetime] = []
        while len(out) < count:
            try:
                nxt = AWSCron.get_next_n_schedule(1, local, self.cron)
            except Exception:  # pyawscron's failures come in several types (see the docstring)
                break
            if not nxt or nxt[0] is None:  # pyawscron answers [None] past an explicit year
                break
            local = nxt[0]
            fire = local.replace(tzinfo=zone).astimezone(UTC)
            # A wall time skipped by a DST change (spring forward) does not exist: Scheduler
            # skips that invocation, so do we. (A repeated hour in autumn fires once, at fold 0.)
            if fire.astimezone(zone).replace(tzinfo=None) != local.replace(tzinfo=None):
                continue
            if fire > after and (not out or fire > out[-1]):
                out.append(fire)
        return out


def parse_schedule(expression: str, timezone: str = "UTC") -> ScheduleExpression:
    """Parse and validate an AWS schedule expression; ValidationError names the problem."""
    expression = expression.strip()
    try:
        ZoneInfo(timezone)
    except Exception as exc:
        raise ValidationError(f"unknown IANA timezone {timezone!r}") from exc
    if m := _RATE.match(expression):
        value, unit = int(m.group(1)), m.group(2).rstrip("s")
        if value < 1:
            raise ValidationError(f"{expression}: rate value must be a positive whole number")
        if value * _UNIT_SECONDS[unit] > _MAX_RATE_SECONDS:
            raise ValidationError(f"{expression}: rate is longer than ten years; use at(...) or cron(...)")
        if (value == 1) != (m.group(2) == unit):
            raise ValidationError(f"{expression}: use '{unit}' for 1 and '{unit}s' for more (AWS rule)")
        return ScheduleExpression(
            "rate", expression, timezone, rate=timedelta(seconds=value * _UNIT_SECONDS[unit])
        )
    if m := _CRON.match(expression):
        body = m.group(1).strip()
        try:
            AWSCronExpressionValidator.validate(body)
        except ValueError as exc:
            raise ValidationError(f"{expression}: {exc}") from exc
        try:
            AWSCron(body)
        except Exception as exc:
            raise ValidationError(f"{expression}: {exc}") from exc
        return ScheduleExpression("cron", expression, timezone, cron=body)
    if m := _AT.match(expression):
        try:
            at = datetime.fromisoformat(m.group(1))
        except ValueError as exc:
            raise ValidationError(f"{expression}: not a real date and time ({exc})") from exc
        if _at_in_utc(at, timezone) is None:
            # e.g. at(9999-12-31T23:00:00) in Etc/GMT+12 is in year 10000 UTC: no datetime holds it.
            raise ValidationError(
                f"{expression}: in {timezone} this time falls outside the years 1-9999 in UTC"
            )
        return ScheduleExpression("at", expression, timezone, at=at)
    raise ValidationError(
        f"{expression!r} is not an AWS schedule expression: use rate(5 minutes), "
        "cron(0 2 * * ? *) (six fields) or at(2030-01-01T00:00:00)"
    )


def _at_in_utc(at: datetime | None, timezone: str) -> datetime | None:
    """A local wall time as an aware UTC instant; None when that instant has no datetime."""
    if at is None:
        return None
    try:
        return at.replace(tzinfo=ZoneInfo(timezone)).astimezone(UTC)
    except (OverflowError, ValueError):
        return None


def schedule_input(job_id: str) -> str:
    """Target input for a job's recurring schedule, with Scheduler's context attributes."""
    return json.dumps(
        {
            "kind": "schedule",
            "job_id": job_id,
            "scheduled_time": "<aws.scheduler.scheduled-time>",
            "schedule_arn": "<aws.scheduler.schedule-arn>",
            "delivery_attempt": "<aws.scheduler.attempt-number>",
        }
    )


def job_schedule_name(job_id: str) -> str:
    return f"job-{job_id}"


def retry_schedule_name(run_id: str, attempt: int) -> str:
    """Deterministic, so scheduling the same retry twice collides instead of duplicating."""
    return f"retry-{run_id}-{attempt}"


class ScheduleService:
    """Creates, updates and deletes the EventBridge Scheduler schedules that invoke the runner."""

    def __init__(
        self,
        client: EventBridgeSchedulerClient,
        *,
        group_name: str,
        role_arn: str,
        target_arn: str,
        dlq_arn: str | None = None,
    ) -> None:
        self._client = client
        self._group = group_name
        self._role = role_arn
        self._target = target_arn
        self._dlq = dlq_arn

    def _target_config(self, payload: str) -> TargetTypeDef:
        target: TargetTypeDef = {
            "Arn": self._target,
            "RoleArn": self._role,
            "Input": payload,
            # Scheduler stops retrying a delivery after DELIVERY_WINDOW; the sweeper's leases of
            # pending runs are derived from the same number (lifecycle.py).
            "RetryPolicy": {
                "MaximumRetryAttempts": 5,
                "MaximumEventAgeInSeconds": int(DELIVERY_WINDOW.total_seconds()),
            },
        }
        if self._dlq:
            target["DeadLetterConfig"] = {"Arn": self._dlq}
        return target

    def upsert_job_schedule(self, *, job_id: str, expression: str, timezone: str, enabled: bool) -> None:
        parse_schedule(expression, timezone)
        args: dict[str, Any] = {
            "Name": job_schedule_name(job_id),
            "GroupName": self._group,
            "ScheduleExpression": expression,
            "ScheduleExpressionTimezone": timezone,
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "State": "ENABLED" if enabled else "DISABLED",
            "Target": self._target_config(schedule_input(job_id)),
            "Description": f"job {job_id}",
        }
        if expression.startswith("at("):
            args["ActionAfterCompletion"] = "DELETE"
        try:
            self._client.update_schedule(**args)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
            self._client.create_schedule(**args)

    def delete_job_schedule(self, job_id: str) -> None:
        self._delete(job_schedule_name(job_id))

    def create_retry_schedule(self, *, run_id: str, attempt: int, at: datetime) -> bool:
        """One-time schedule that re-invokes the runner; False when it already existed."""
        when = at.astimezone(UTC).replace(microsecond=0)
        try:
            self._client.create_schedule(
                Name=retry_schedule_name(run_id, attempt),
                GroupName=self._group,
                ScheduleExpression=f"at({when.strftime('%Y-%m-%dT%H:%M:%S')})",
                ScheduleExpressionTimezone="UTC",
                FlexibleTimeWindow={"Mode": "OFF"},
                ActionAfterCompletion="DELETE",
                Target=self._target_config(
                    json.dumps({"kind": "retry", "run_id": run_id, "attempt": attempt})
                ),
                Description=f"retry {attempt} of run {run_id}",
            )
        except ClientError as exc:
            if exc.response["Error"]["Code"] == "ConflictException":
                return False
            raise
        return True

    def delete_retry_schedule(self, run_id: str, attempt: int) -> None:
        self._delete(retry_schedule_name(run_id, attempt))

    def _delete(self, name: str) -> None:
        try:
            self._client.delete_schedule(Name=name, GroupName=self._group)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise
