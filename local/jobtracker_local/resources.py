"""Local names for the template's resources, and creating them on an AWS-compatible endpoint.

Every name, ARN and URL a function sees comes from here, resolved through the template's own
`Ref`/`GetAtt`/`Sub`, so the environment a function gets locally is the one it gets deployed,
with local values. Physical names are the logical ids (tests and tools rely on that), except
where the template names a resource itself (the schedule group: `${AWS::StackName}-jobs`).
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError

from jobtracker_local.template import Template, load_template, resolve

log = logging.getLogger("jobtracker.local")

REGION = "us-east-1"
ACCOUNT = "123456789012"
STACK_NAME = "jobtracker-local"
#: Issuer and audience of locally minted tokens; fed to the template as JwtIssuer/JwtAudience,
#: so the authorizer configuration is read from the template like any other value.
LOCAL_ISSUER = "https://auth.jobtracker.local"
LOCAL_AUDIENCE = "jobtracker-local"
#: AWS's local default schedule group: where SAM puts ScheduleV2 events that name no group.
DEFAULT_SCHEDULE_GROUP = "default"


def local_parameters(overrides: Mapping[str, str] | None = None) -> dict[str, Any]:
    params: dict[str, Any] = {"Stage": "local", "JwtIssuer": LOCAL_ISSUER, "JwtAudience": LOCAL_AUDIENCE}
    params.update(overrides or {})
    return params


_client_lock = threading.Lock()
_session: list[boto3.session.Session] = []


@cache
def aws_client(service: str, endpoint: str, region: str = REGION) -> Any:
    """A client for the local endpoint; local credentials never reach a real account.

    Cached per (service, endpoint, region) on one session: loading a service model costs
    ~0.5 s, and clients are thread-safe once made (making them is not, hence the lock).
    """
    with _client_lock:
        if not _session:
            _session.append(boto3.session.Session())
        return _session[0].client(  # type: ignore[call-overload]
            service,
            endpoint_url=endpoint,
            region_name=region,
            aws_access_key_id="testing",
            aws_secret_access_key="testing",  # noqa: S106 (not a secret: the local endpoint's fixed key)
            config=Config(
                retries={"max_attempts": 3, "mode": "standard"}, connect_timeout=3, read_timeout=30
            ),
        )


@dataclass
class LocalResources:
    """Refs and GetAtts of every resource, for `template.resolve()`."""

    template: Template
    endpoint: str
    region: str = REGION
    account: str = ACCOUNT
    stack_name: str = STACK_NAME
    parameters: dict[str, Any] = field(default_factory=local_parameters)
    refs: dict[str, Any] = field(default_factory=dict)
    attrs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.refs.update(
            {
                "AWS::StackName": self.stack_name,
                "AWS::Region": self.region,
                "AWS::AccountId": self.account,
                "AWS::Partition": "aws",
                "AWS::URLSuffix": "amazonaws.com",
                "AWS::StackId": self._arn("cloudformation", f"stack/{self.stack_name}/local"),
            }
        )
        defaults = self.template.parameter_defaults()
        self.refs.update({k: self.parameters.get(k, v) for k, v in defaults.items()})
        for name, expr in self.template.doc.get("Conditions", {}).items():
            self.refs[f"Condition:{name}"] = self._condition(expr)
        for logical_id, resource in self.template.resources.items():
            if (cond := resource.get("Condition")) and not self.refs.get(f"Condition:{cond}", False):
                continue
            self._name(logical_id, resource)

    # ---- conditions ----------------------------------------------------------------------
    def _condition(self, expr: Any) -> bool:
        ((key, arg),) = expr.items()
        if key == "Fn::Equals":
            left, right = (resolve(a, self.refs) for a in arg)
            return bool(str(left) == str(right))
        if key == "Fn::Not":
            return not self._condition(arg[0])
        if key == "Fn::And":
            return all(self._condition(a) for a in arg)
        if key == "Fn::Or":
            return any(self._condition(a) for a in arg)
        if key == "Condition":
            return bool(self.refs[f"Condition:{arg}"])
        raise ValueError(f"unsupported condition {key}")

    # ---- names ---------------------------------------------------------------------------
    def _arn(self, service: str, resource: str, *, regional: bool = True) -> str:
        return f"arn:aws:{service}:{self.region if regional else ''}:{self.account}:{resource}"

    def _name(self, logical_id: str, resource: dict[str, Any]) -> None:
        kind = resource["Type"]
        props = resource.get("Properties", {})
        refs, attrs = self.refs, self.attrs
        if kind == "AWS::DynamoDB::Table":
            name = resolve(props.get("TableName", logical_id), refs)
            refs[logical_id] = name
            attrs[f"{logical_id}.Arn"] = self._arn("dynamodb", f"table/{name}")
            # Replaced by the endpoint's real stream ARN once the table exists.
            attrs[f"{logical_id}.StreamArn"] = self._arn("dynamodb", f"table/{name}/stream/pending")
        elif kind == "AWS::SQS::Queue":
            name = resolve(props.get("QueueName", logical_id), refs)
            refs[logical_id] = f"{self.endpoint}/{self.account}/{name}"
            attrs[f"{logical_id}.Arn"] = self._arn("sqs", name)
            attrs[f"{logical_id}.QueueName"] = name
            attrs[f"{logical_id}.QueueUrl"] = refs[logical_id]
        elif kind == "AWS::Scheduler::ScheduleGroup":
            name = resolve(props.get("Name", logical_id), refs)
            refs[logical_id] = name
            attrs[f"{logical_id}.Arn"] = self._arn("scheduler", f"schedule-group/{name}")
        elif kind == "AWS::IAM::Role":
            name = resolve(props.get("RoleName", logical_id), refs)
            refs[logical_id] = name
            attrs[f"{logical_id}.Arn"] = self._arn("iam", f"role/{name}", regional=False)
        elif kind == "AWS::Serverless::Function":
            name = resolve(props.get("FunctionName", logical_id), refs)
            refs[logical_id] = name
            attrs[f"{logical_id}.Arn"] = self.function_arn(name)
        elif kind == "AWS::Serverless::LayerVersion":
            refs[logical_id] = self._arn("lambda", f"layer:{logical_id}:1")
        else:
            # APIs, user pools, clients...: an opaque local id is all a function could see.
            refs[logical_id] = f"local-{logical_id.lower()}"
            attrs[f"{logical_id}.Arn"] = self._arn(kind.split("::")[1].lower(), logical_id)

    def function_arn(self, name: str) -> str:
        return self._arn("lambda", f"function:{name}")

    def resolve(self, value: Any) -> Any:
        return resolve(value, self.refs, self.attrs)

    def environment(self, function_id: str) -> dict[str, str]:
        """The function's environment variables, resolved to local names."""
        spec = self.template.functions()[function_id]
        return {k: str(v) for k, v in self.resolve(spec.environment).items()}

    def function_for_arn(self, arn_or_name: str) -> str | None:
        """Logical id of the function an ARN (qualified or not), partial ARN or name denotes."""
        name = arn_or_name
        if name.startswith("arn:"):
            parts = name.split(":")
            name = parts[6] if len(parts) > 6 else parts[-1]
        elif ":" in name:
            name = name.split(":")[0]
        for logical_id in self.template.functions():
            if self.refs.get(logical_id) == name:
                return logical_id
        return None

    def queue_url_for_arn(self, arn: str) -> str | None:
        for key, value in self.attrs.items():
            if key.endswith(".Arn") and value == arn:
                logical_id = key.removesuffix(".Arn")
                url = self.attrs.get(f"{logical_id}.QueueUrl")
                return str(url) if url else None
        return None


# ---- creating ---------------------------------------------------------------------------
def provision(res: LocalResources) -> LocalResources:
    """Create every table, queue, schedule group, scheduled event and the SES identity.

    Idempotent: against a long-running endpoint (`--aws-endpoint`) existing resources are kept.
    """
    template = res.template
    ddb = aws_client("dynamodb", res.endpoint, res.region)
    for logical_id, kwargs in template.table_definitions().items():
        name = res.refs[logical_id]
        try:
            ddb.create_table(TableName=name, **kwargs)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceInUseException":
                raise
        if ttl := template.ttl_attribute(logical_id):
            try:
                ddb.update_time_to_live(
                    TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl}
                )
            except ClientError as exc:  # already enabled on a reused endpoint
                log.debug("TTL on %s: %s", name, exc)
        if "StreamSpecification" in kwargs:
            table = ddb.describe_table(TableName=name)["Table"]
            res.attrs[f"{logical_id}.StreamArn"] = table["LatestStreamArn"]

    sqs = aws_client("sqs", res.endpoint, res.region)
    for logical_id in template.of_type("AWS::SQS::Queue"):
        url = sqs.create_queue(QueueName=res.attrs[f"{logical_id}.QueueName"])["QueueUrl"]
        res.refs[logical_id] = url
        res.attrs[f"{logical_id}.QueueUrl"] = url

    scheduler = aws_client("scheduler", res.endpoint, res.region)
    for logical_id in template.of_type("AWS::Scheduler::ScheduleGroup"):
        try:
            scheduler.create_schedule_group(Name=res.refs[logical_id])
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConflictException":
                raise
    _create_template_schedules(res, scheduler)

    email = str(res.refs.get("SenderEmail") or "")
    if email:
        ses = aws_client("ses", res.endpoint, res.region)
        ses.verify_email_identity(EmailAddress=email)
        sesv2 = aws_client("sesv2", res.endpoint, res.region)
        try:
            sesv2.create_email_identity(EmailIdentity=email)
        except ClientError as exc:
            log.debug("SESv2 identity %s: %s", email, exc)
    return res


def discover(res: LocalResources) -> None:
    """Read the endpoint-assigned values (stream ARNs, queue URLs) of an already provisioned stack."""
    ddb = aws_client("dynamodb", res.endpoint, res.region)
    for logical_id, kwargs in res.template.table_definitions().items():
        if "StreamSpecification" in kwargs:
            table = ddb.describe_table(TableName=res.refs[logical_id])["Table"]
            res.attrs[f"{logical_id}.StreamArn"] = table["LatestStreamArn"]
    sqs = aws_client("sqs", res.endpoint, res.region)
    for logical_id in res.template.of_type("AWS::SQS::Queue"):
        url = sqs.get_queue_url(QueueName=res.attrs[f"{logical_id}.QueueName"])["QueueUrl"]
        res.refs[logical_id] = url
        res.attrs[f"{logical_id}.QueueUrl"] = url


def template_schedule_name(function_id: str, event_id: str) -> str:
    """SAM names a ScheduleV2 schedule <FunctionLogicalId><EventId>."""
    return f"{function_id}{event_id}"


def _create_template_schedules(res: LocalResources, scheduler: Any) -> None:
    """The template's ScheduleV2 events become real Scheduler schedules, as SAM would create.

    The emulator then fires them like any other schedule: one code path for every schedule.
    """
    role = next(
        (v for k, v in res.attrs.items() if k.endswith(".Arn") and ":role/" in str(v)),
        res._arn("iam", "role/local-scheduler", regional=False),
    )
    for function_id, event_id, raw in res.template.events_of_type("ScheduleV2"):
        props = res.resolve(raw)
        target: dict[str, Any] = {
            "Arn": res.attrs[f"{function_id}.Arn"],
            "RoleArn": props.get("RoleArn", role),
            "RetryPolicy": {
                "MaximumRetryAttempts": props.get("RetryPolicy", {}).get("MaximumRetryAttempts", 185),
                "MaximumEventAgeInSeconds": props.get("RetryPolicy", {}).get(
                    "MaximumEventAgeInSeconds", 86400
                ),
            },
        }
        if "DeadLetterConfig" in props:
            target["DeadLetterConfig"] = {"Arn": props["DeadLetterConfig"]["Arn"]}
        if "Input" in props:
            target["Input"] = (
                props["Input"] if isinstance(props["Input"], str) else json.dumps(props["Input"])
            )
        args: dict[str, Any] = {
            "Name": props.get("Name", template_schedule_name(function_id, event_id)),
            "GroupName": props.get("GroupName", DEFAULT_SCHEDULE_GROUP),
            "ScheduleExpression": props["ScheduleExpression"],
            "ScheduleExpressionTimezone": props.get("ScheduleExpressionTimezone", "UTC"),
            "FlexibleTimeWindow": {"Mode": "OFF"},
            "State": props.get("State", "ENABLED"),
            "Target": target,
        }
        try:
            scheduler.create_schedule(**args)
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ConflictException":
                raise
            scheduler.update_schedule(**args)


def default_resources(endpoint: str, template: Template | None = None) -> LocalResources:
    return LocalResources(template or load_template(), endpoint)
