"""The four invocation shapes the runner accepts, parsed into typed models."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from jobtracker_common.errors import ValidationError
from pydantic import BaseModel, ConfigDict, Field, TypeAdapter
from pydantic import ValidationError as PydanticValidationError


class _Invocation(BaseModel):
    model_config = ConfigDict(extra="ignore")


class ScheduleInvocation(_Invocation):
    """EventBridge Scheduler target input (see infra/template.yaml and api job schedules)."""

    kind: Literal["schedule"]
    job_id: str = Field(min_length=1)
    scheduled_time: datetime
    schedule_arn: str = Field(min_length=1)
    #: Scheduler's delivery attempt (<aws.scheduler.attempt-number>): NOT part of the dedupe key.
    delivery_attempt: int = 1

    @property
    def dedupe_key(self) -> str:
        return f"{self.schedule_arn}|{self.scheduled_time.isoformat()}"


class RuleInvocation(_Invocation):
    """A classic EventBridge "Scheduled Event" from a rule named `...job-<job_id>`."""

    kind: Literal["rule"] = "rule"
    job_id: str = Field(min_length=1)
    rule_arn: str
    scheduled_time: datetime

    @property
    def dedupe_key(self) -> str:
        return f"{self.rule_arn}|{self.scheduled_time.isoformat()}"


class ManualInvocation(_Invocation):
    """A manual run (API `POST /jobs/{id}/run`, or a direct invoke)."""

    kind: Literal["manual"]
    job_id: str = Field(min_length=1)
    client_request_id: str = Field(min_length=1, max_length=128)
    #: Set when the API already created the queued run; the runner then claims it.
    run_id: str | None = None
    requested_by: str | None = None

    @property
    def dedupe_key(self) -> str:
        return f"manual|{self.job_id}|{self.client_request_id}"


class RetryInvocation(_Invocation):
    """A one-time retry schedule created by the tracker."""

    kind: Literal["retry"]
    run_id: str = Field(min_length=1)
    attempt: int = Field(ge=2)


Invocation = ScheduleInvocation | RuleInvocation | ManualInvocation | RetryInvocation
_adapter: TypeAdapter[Invocation] = TypeAdapter(
    Annotated[ScheduleInvocation | ManualInvocation | RetryInvocation, Field(discriminator="kind")]
)


def parse_invocation(event: Any) -> Invocation:
    if not isinstance(event, dict):
        raise ValidationError("event must be a JSON object")
    try:
        if event.get("detail-type") == "Scheduled Event" and event.get("source") == "aws.events":
            return _parse_rule_event(event)
        if "kind" not in event:
            raise ValidationError(
                "event has no 'kind' (schedule | manual | retry) and is not an EventBridge Scheduled Event"
            )
        return _adapter.validate_python(event)
    except PydanticValidationError as exc:
        details = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        raise ValidationError(f"malformed runner event: {summary}", details=details) from exc


def _parse_rule_event(event: dict[str, Any]) -> RuleInvocation:
    resources = event.get("resources") or []
    if not resources or not isinstance(resources[0], str) or ":rule/" not in resources[0]:
        raise ValidationError("Scheduled Event has no rule ARN in 'resources'")
    rule_arn = resources[0]
    rule_name = rule_arn.rsplit("/", 1)[-1]
    if "job-" not in rule_name:
        raise ValidationError(f"rule {rule_name!r} does not name a job (expected '...job-<job_id>')")
    job_id = rule_name.rsplit("job-", 1)[-1]
    return RuleInvocation(job_id=job_id, rule_arn=rule_arn, scheduled_time=event.get("time"))
