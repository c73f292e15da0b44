"""Deploy gates for infra/template.yaml: what keeps the template one a cloud team would accept.

    python -m jobtracker_local.gates all infra/template.yaml        # every gate (make validate)
    python -m jobtracker_local.gates cfn-lint infra/template.yaml   # or policy, checkov, sam-build

- cfn-lint: on the SAM file AND on the CloudFormation that samtranslator makes of it (no AWS call:
  the translator gets a region-only boto3 session and its bundled managed-policy map), zero
  errors and zero warnings.
- policy: our own rules, for what neither linter catches: stream consumers that can lose or
  endlessly retry records, async functions without an on-failure destination, wildcard IAM on
  data, SES identity management, unencrypted queues, tables without PITR/SSE, tables and user
  pools not kept by `sam delete` and replacement (RetainExceptOnCreate or Retain), functions
  without a retained log group or an errors alarm, queues without a depth alarm.
- checkov: no failed check; skips live in .checkov.yaml, each with its reason.
- sam-build: `sam build` (arm64, no container) into a temporary directory; then no native library
  for another CPU, every module with unchecked-hash bytecode of its own source for the runtime's
  Python, and the layer's distributions exactly as layers/common/constraints.txt pins them.

cfn-lint, samtranslator and the policy rules run in this process; sam and checkov come from the
tools venv (.venv-tools, made by `make tools`) because aws-sam-cli pins its own boto3.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cfn_flip import load_yaml

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE = ROOT / "infra" / "template.yaml"
CHECKOV_CONFIG = ROOT / ".checkov.yaml"
REGION = "us-east-1"

#: Stream settings we accept: retries and record age must be bounded (-1 means forever, which
#: blocks the shard behind one poison record for up to the stream's 24 h retention).
MAX_STREAM_RETRIES = 10
MAX_RECORD_AGE_S = 86_400
STREAM_EVENT_TYPES = {"DynamoDB", "Kinesis"}
#: Event types through which Lambda invokes a function asynchronously.
ASYNC_EVENT_TYPES = {"Schedule", "ScheduleV2", "CloudWatchEvent", "EventBridgeRule", "S3", "SNS", "IoTRule"}
#: Services whose actions touch data: no wildcard action, no Resource "*".
DATA_SERVICES = {"dynamodb", "sqs", "s3", "ses", "sns", "kms", "secretsmanager", "ssm", "scheduler", "lambda"}
#: What a sender needs from SES; identity management (verify, delete, policies) is an operator's job.
SES_SEND_ACTIONS = {
    "ses:sendemail",
    "ses:sendrawemail",
    "ses:sendtemplatedemail",
    "ses:sendbulkemail",
    "ses:sendbulktemplatedemail",
}
#: DeletionPolicy values that keep a resource when its stack is deleted. RetainExceptOnCreate
#: also deletes it when the deploy that created it rolls back (it holds nothing yet), so a
#: failed first deploy leaves no orphans that block the retry.
RETAINING_DELETION_POLICIES = {"RetainExceptOnCreate", "Retain"}
#: AWS managed policies SAM attaches itself (basic logging, X-Ray writes, stream polling).
ALLOWED_MANAGED_POLICIES = {
    "AWSLambdaBasicExecutionRole",
    "AWSXrayWriteOnlyAccess",
    "AWSLambdaDynamoDBExecutionRole",
    "AWSLambdaKinesisExecutionRole",
    "AWSLambdaSQSQueueExecutionRole",
}


@dataclass(frozen=True)
class Finding:
    gate: str
    rule: str
    where: str
    message: str

    def __str__(self) -> str:
        return f"[{self.gate}] {self.rule} {self.where}: {self.message}"


# ---- loading and translating ---------------------------------------------------------------
def load(path: Path) -> dict[str, Any]:
    """The template as a dict with long-form intrinsics (YAML or JSON)."""
    text = path.read_text()
    doc: dict[str, Any] = json.loads(text) if path.suffix == ".json" else load_yaml(text)
    return doc


def translate(doc: dict[str, Any], region: str = REGION) -> dict[str, Any]:
    """CloudFormation that the SAM transform makes of `doc`, computed locally.

    Like cfn-lint's own SAM transform: local code paths become a placeholder S3 URI (the
    translator only accepts S3), the managed-policy map is the translator's bundled one, and the
    boto3 session only names a region, so nothing is looked up in an account.
    """
    import boto3
    from samtranslator.parser.parser import Parser
    from samtranslator.translator.translator import Translator

    sam = json.loads(json.dumps(doc))
    for resource in sam.get("Resources", {}).values():
        props = resource.get("Properties") or {}
        kind = resource.get("Type")
        if kind == "AWS::Serverless::Function" and isinstance(props.get("CodeUri"), str):
            props["CodeUri"] = "s3://placeholder/code.zip"
        if kind == "AWS::Serverless::LayerVersion" and isinstance(props.get("ContentUri"), str):
            props["ContentUri"] = "s3://placeholder/layer.zip"
    translator = Translator(None, Parser(), boto_session=boto3.session.Session(region_name=region))
    out: dict[str, Any] = translator.translate(sam, parameter_values={}, passthrough_metadata=True)
    translator.metrics.publish()  # to its dummy publisher; unpublished metrics warn at exit
    return out


# ---- cfn-lint --------------------------------------------------------------------------------
def cfn_lint(path: Path = TEMPLATE, region: str = REGION) -> list[Finding]:
    """cfn-lint on the SAM template and on its translation: errors and warnings both fail."""
    from cfnlint.api import lint
    from cfnlint.config import ManualArgs

    config = ManualArgs(regions=[region])
    findings = [_lint_finding("sam", m) for m in lint(path.read_text(), config=config)]
    try:
        translated = translate(load(path), region)
    except Exception as exc:  # the translator's own validation errors are findings, not crashes
        return [*findings, Finding("cfn-lint", "transform", str(path), _transform_message(exc))]
    findings += [_lint_finding("translated", m) for m in lint(json.dumps(translated), config=config)]
    return [f for f in findings if f.rule[:1] in {"E", "W"}]


def _lint_finding(which: str, match: Any) -> Finding:
    where = f"{which}:{match.linenumber}:" + "/".join(str(p) for p in getattr(match, "path", []) or [])
    return Finding("cfn-lint", str(match.rule.id), where, str(match.message))


def _transform_message(exc: Exception) -> str:
    causes = getattr(exc, "causes", None)
    if causes:
        return "; ".join(str(getattr(c, "message", c)) for c in causes)
    return str(exc)


# ---- our own policy rules --------------------------------------------------------------------
def policy(path: Path = TEMPLATE, region: str = REGION) -> list[Finding]:
    return policy_findings(load(path), region)


def policy_findings(doc: dict[str, Any], region: str = REGION) -> list[Finding]:
    try:
        translated = translate(doc, region)
    except Exception as exc:  # IAM is checked on the translation: without one, the gate cannot pass
        return [_find("transform", "template", _transform_message(exc))]
    checks: list[Callable[[dict[str, Any], dict[str, Any]], Iterator[Finding]]] = [
        _stream_consumers,
        _sqs_consumers,
        _async_invokes,
        _schedules,
        _iam,
        _queues,
        _tables,
        _logs,
        _table_access,
        _alarms,
        _http_api,
    ]
    return [finding for check in checks for finding in check(doc, translated)]


def _find(rule: str, where: str, message: str) -> Finding:
    return Finding("policy", rule, where, message)


def _functions(doc: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        k: v.get("Properties") or {}
        for k, v in doc.get("Resources", {}).items()
        if v.get("Type") == "AWS::Serverless::Function"
    }


def _of_type(doc: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in doc.get("Resources", {}).items() if v.get("Type") == kind}


def _events(doc: dict[str, Any], types: set[str]) -> Iterator[tuple[str, str, dict[str, Any]]]:
    for fn, props in _functions(doc).items():
        for event_id, event in (props.get("Events") or {}).items():
            if event.get("Type") in types:
                yield fn, event_id, event.get("Properties") or {}


def _int(value: Any) -> int | None:
    """A literal integer setting; None when absent or an intrinsic we cannot bound statically."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and re.fullmatch(r"-?\d+", value):
        return int(value)
    return None


def _references(value: Any) -> set[str]:
    """Logical ids and parameters a value refers to (Ref, GetAtt, ${...} in Sub)."""
    out: set[str] = set()
    if isinstance(value, list):
        for item in value:
            out |= _references(item)
    elif isinstance(value, dict):
        for key, arg in value.items():
            if key == "Ref" and isinstance(arg, str):
                out.add(arg)
            elif key == "Fn::GetAtt":
                out.add(arg[0] if isinstance(arg, list) else str(arg).split(".")[0])
            elif key == "Fn::Sub":
                text = arg if isinstance(arg, str) else arg[0]
                out |= {m.split(".")[0] for m in re.findall(r"\$\{([^}!]+)\}", text)}
                if isinstance(arg, list):
                    out |= _references(arg[1])
            else:
                out |= _references(arg)
    return out


def _stream_consumers(doc: dict[str, Any], _: dict[str, Any]) -> Iterator[Finding]:
    for fn, event_id, props in _events(doc, STREAM_EVENT_TYPES):
        where = f"{fn}.Events.{event_id}"
        on_failure = (props.get("DestinationConfig") or {}).get("OnFailure") or {}
        if not on_failure.get("Destination"):
            yield _find("stream-on-failure", where, "needs DestinationConfig.OnFailure.Destination (a DLQ)")
        if "ReportBatchItemFailures" not in (props.get("FunctionResponseTypes") or []):
            yield _find(
                "stream-partial-failures", where, "needs FunctionResponseTypes: [ReportBatchItemFailures]"
            )
        retries = _int(props.get("MaximumRetryAttempts"))
        if retries is None or not 0 <= retries <= MAX_STREAM_RETRIES:
            yield _find(
                "stream-retries",
                where,
                f"MaximumRetryAttempts must be a literal 0..{MAX_STREAM_RETRIES}, got "
                f"{props.get('MaximumRetryAttempts')!r}",
            )
        age = _int(props.get("MaximumRecordAgeInSeconds"))
        if age is None or not 60 <= age <= MAX_RECORD_AGE_S:
            yield _find(
                "stream-record-age",
                where,
                f"MaximumRecordAgeInSeconds must be a literal 60..{MAX_RECORD_AGE_S}, got "
                f"{props.get('MaximumRecordAgeInSeconds')!r}",
            )
        if props.get("StartingPosition") != "TRIM_HORIZON":
            yield _find(
                "stream-starting-position",
                where,
                "StartingPosition must be TRIM_HORIZON (LATEST skips records written before the mapping)",
            )
        batch = _int(props.get("BatchSize", 100))
        if batch is None or not 1 <= batch <= 10_000:
            yield _find("stream-batch-size", where, f"BatchSize must be 1..10000, got {batch!r}")
        window = _int(props.get("MaximumBatchingWindowInSeconds", 0))
        if window is None or not 0 <= window <= 300:
            yield _find("stream-batching-window", where, "MaximumBatchingWindowInSeconds must be 0..300")
        for i, flt in enumerate((props.get("FilterCriteria") or {}).get("Filters") or []):
            try:
                json.loads(flt.get("Pattern", ""))
            except (TypeError, ValueError) as exc:
                yield _find("stream-filter", f"{where}.FilterCriteria.Filters[{i}]", f"not JSON: {exc}")


def _sqs_consumers(doc: dict[str, Any], _: dict[str, Any]) -> Iterator[Finding]:
    queues = _of_type(doc, "AWS::SQS::Queue")
    for fn, event_id, props in _events(doc, {"SQS"}):
        where = f"{fn}.Events.{event_id}"
        if "ReportBatchItemFailures" not in (props.get("FunctionResponseTypes") or []):
            yield _find(
                "sqs-partial-failures", where, "needs FunctionResponseTypes: [ReportBatchItemFailures]"
            )
        for queue in _references(props.get("Queue")) & set(queues):
            if not (queues[queue].get("Properties") or {}).get("RedrivePolicy"):
                yield _find("sqs-redrive", where, f"source queue {queue} needs a RedrivePolicy (its DLQ)")


def _async_functions(doc: dict[str, Any], translated: dict[str, Any]) -> dict[str, str]:
    """Functions something invokes asynchronously -> why we think so."""
    functions = _functions(doc)
    out = {fn: f"{event_id} event" for fn, event_id, _ in _events(doc, ASYNC_EVENT_TYPES)}
    # Anything allowed to lambda:InvokeFunction a function (Scheduler's role, another function)
    # may invoke it with InvocationType=Event: treat it as async.
    for where, statement in _statements(translated):
        if "lambda:invokefunction" in _actions(statement):
            for fn in _references(statement.get("Resource")) & set(functions):
                out.setdefault(fn, f"invoked under {where}")
    for name, rule in _of_type(doc, "AWS::Scheduler::Schedule").items():
        target = (rule.get("Properties") or {}).get("Target") or {}
        for fn in _references(target.get("Arn")) & set(functions):
            out.setdefault(fn, f"target of {name}")
    return out


def _async_invokes(doc: dict[str, Any], translated: dict[str, Any]) -> Iterator[Finding]:
    functions = _functions(doc)
    for fn, why in sorted(_async_functions(doc, translated).items()):
        config = functions[fn].get("EventInvokeConfig") or {}
        on_failure = (config.get("DestinationConfig") or {}).get("OnFailure") or {}
        if not on_failure.get("Destination"):
            yield _find(
                "async-on-failure",
                f"{fn}.EventInvokeConfig",
                f"invoked asynchronously ({why}): needs DestinationConfig.OnFailure.Destination",
            )
        retries = _int(config.get("MaximumRetryAttempts"))
        if retries is None or not 0 <= retries <= 2:
            yield _find(
                "async-retries", f"{fn}.EventInvokeConfig", "MaximumRetryAttempts must be a literal 0..2"
            )
        if _int(config.get("MaximumEventAgeInSeconds")) is None:
            yield _find("async-event-age", f"{fn}.EventInvokeConfig", "MaximumEventAgeInSeconds must be set")


def _schedules(doc: dict[str, Any], _: dict[str, Any]) -> Iterator[Finding]:
    for fn, event_id, props in _events(doc, {"ScheduleV2"}):
        if not (props.get("DeadLetterConfig") or {}):
            yield _find("schedule-dlq", f"{fn}.Events.{event_id}", "ScheduleV2 needs a DeadLetterConfig")
    for name, resource in _of_type(doc, "AWS::Scheduler::Schedule").items():
        if not ((resource.get("Properties") or {}).get("Target") or {}).get("DeadLetterConfig"):
            yield _find("schedule-dlq", name, "schedule target needs a DeadLetterConfig")


def _statements(translated: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """Every IAM policy statement of the translated template, with where it lives."""
    for name, resource in translated.get("Resources", {}).items():
        props = resource.get("Properties") or {}
        kind = resource.get("Type")
        documents: list[tuple[str, Any]] = []
        if kind == "AWS::IAM::Role":
            documents = [
                (f"{name}.{p.get('PolicyName')}", p.get("PolicyDocument"))
                for p in props.get("Policies") or []
            ]
        elif kind in {"AWS::IAM::Policy", "AWS::IAM::ManagedPolicy", "AWS::IAM::RolePolicy"}:
            documents = [(name, props.get("PolicyDocument"))]
        for where, document in documents:
            statements = (document or {}).get("Statement") or []
            for i, statement in enumerate(statements if isinstance(statements, list) else [statements]):
                # A conditional statement (`!If [Cond, {...}, !Ref AWS::NoValue]`) is checked
                # like any other: every arm that is a statement could be deployed.
                arms = (
                    statement["Fn::If"][1:]
                    if isinstance(statement, dict) and "Fn::If" in statement
                    else [statement]
                )
                for arm in arms:
                    if isinstance(arm, dict) and arm != {"Ref": "AWS::NoValue"}:
                        yield f"{where}[{i}]", arm


def _actions(statement: dict[str, Any]) -> list[str]:
    actions = statement.get("Action", [])
    return [str(a).lower() for a in (actions if isinstance(actions, list) else [actions])]


def _is_star(resource: Any) -> bool:
    resources = resource if isinstance(resource, list) else [resource]
    return any(r == "*" for r in resources)


def _iam(_: dict[str, Any], translated: dict[str, Any]) -> Iterator[Finding]:
    for where, statement in _statements(translated):
        if statement.get("Effect") != "Allow":
            continue
        if "NotAction" in statement:
            yield _find("iam-not-action", where, "Allow with NotAction grants everything else")
        for action in _actions(statement):
            service, _sep, verb = action.partition(":")
            if action == "*" or verb == "*":
                yield _find("iam-wildcard-action", where, f"wildcard action {action!r}")
            elif "*" in verb and service in DATA_SERVICES:
                yield _find("iam-wildcard-action", where, f"wildcard action {action!r} on data")
            if service == "ses" and action not in SES_SEND_ACTIONS:
                yield _find("iam-ses-identity", where, f"{action!r}: senders may only send")
            if service in DATA_SERVICES | {"iam"} and _is_star(statement.get("Resource")):
                yield _find("iam-wildcard-resource", where, f"{action!r} on Resource '*'")
    for name, resource in translated.get("Resources", {}).items():
        if resource.get("Type") != "AWS::IAM::Role":
            continue
        for arn in (resource.get("Properties") or {}).get("ManagedPolicyArns") or []:
            policy_name = json.dumps(arn).rsplit("/", 1)[-1].strip('"}] ')
            if policy_name not in ALLOWED_MANAGED_POLICIES:
                yield _find(
                    "iam-managed-policy", name, f"managed policy {policy_name!r} is not least privilege"
                )


def _queues(doc: dict[str, Any], _: dict[str, Any]) -> Iterator[Finding]:
    for name, queue in _of_type(doc, "AWS::SQS::Queue").items():
        props = queue.get("Properties") or {}
        if props.get("SqsManagedSseEnabled") is not True and not props.get("KmsMasterKeyId"):
            yield _find("sqs-encryption", name, "needs SqsManagedSseEnabled: true or KmsMasterKeyId")


def _tables(doc: dict[str, Any], _: dict[str, Any]) -> Iterator[Finding]:
    for name, table in _of_type(doc, "AWS::DynamoDB::Table").items():
        props = table.get("Properties") or {}
        if not (props.get("PointInTimeRecoverySpecification") or {}).get("PointInTimeRecoveryEnabled"):
            yield _find("table-pitr", name, "needs PointInTimeRecoverySpecification enabled")
        if not (props.get("SSESpecification") or {}).get("SSEEnabled"):
            yield _find("table-sse", name, "needs SSESpecification.SSEEnabled")
        yield from _retained("table-retain", name, table, "it holds data")
    # A user pool holds every user and password: `sam delete` or a replacement must keep it.
    for name, pool in _of_type(doc, "AWS::Cognito::UserPool").items():
        yield from _retained("user-pool-retain", name, pool, "it holds every user")


def _retained(rule: str, name: str, resource: dict[str, Any], why: str) -> Iterator[Finding]:
    """Kept by `sam delete` (DeletionPolicy) and by a replacement (UpdateReplacePolicy)."""
    if resource.get("DeletionPolicy") not in RETAINING_DELETION_POLICIES:
        yield _find(rule, name, f"needs DeletionPolicy: RetainExceptOnCreate or Retain ({why})")
    if resource.get("UpdateReplacePolicy") != "Retain":
        yield _find(rule, name, f"needs UpdateReplacePolicy: Retain ({why})")


def _logs(doc: dict[str, Any], _: dict[str, Any]) -> Iterator[Finding]:
    groups = _of_type(doc, "AWS::Logs::LogGroup")
    for name, group in groups.items():
        if not (group.get("Properties") or {}).get("RetentionInDays"):
            yield _find("log-retention", name, "needs RetentionInDays")
    for fn, props in _functions(doc).items():
        target = _references((props.get("LoggingConfig") or {}).get("LogGroup"))
        if not target & set(groups):
            yield _find(
                "function-log-group", fn, "needs LoggingConfig.LogGroup: !Ref <a LogGroup with retention>"
            )


def _table_access(doc: dict[str, Any], _: dict[str, Any]) -> Iterator[Finding]:
    """Environment and policies name the same tables.

    A table in the environment without a grant fails only once deployed (moto does not enforce
    IAM); a grant for a table the function is not told about is privilege nobody uses.
    """
    tables = set(_of_type(doc, "AWS::DynamoDB::Table"))
    for fn, props in _functions(doc).items():
        env = (props.get("Environment") or {}).get("Variables") or {}
        granted = _references(props.get("Policies"))
        for table in sorted(granted & tables - _references(env)):
            yield _find(
                "table-grant-unused", f"{fn}.Policies", f"{table} is granted but not in the environment"
            )
        for var, value in env.items():
            for table in _references(value) & tables - granted:
                yield _find(
                    "table-access", f"{fn}.{var}", f"{table} is in the environment but no policy grants it"
                )


def _alarms(doc: dict[str, Any], _: dict[str, Any]) -> Iterator[Finding]:
    watched: dict[str, set[str]] = {}
    for alarm in _of_type(doc, "AWS::CloudWatch::Alarm").values():
        props = alarm.get("Properties") or {}
        for dim in props.get("Dimensions") or []:
            watched.setdefault(str(props.get("MetricName")), set()).update(_references(dim.get("Value")))
    for fn in _functions(doc):
        if fn not in watched.get("Errors", set()):
            yield _find("alarm-errors", fn, "needs an AWS/Lambda Errors alarm")
    for queue in _of_type(doc, "AWS::SQS::Queue"):
        if queue not in watched.get("ApproximateNumberOfMessagesVisible", set()):
            yield _find("alarm-queue-depth", queue, "needs an ApproximateNumberOfMessagesVisible alarm")


def _http_api(doc: dict[str, Any], _: dict[str, Any]) -> Iterator[Finding]:
    for name, api in _of_type(doc, "AWS::Serverless::HttpApi").items():
        props = api.get("Properties") or {}
        if not (props.get("AccessLogSettings") or {}).get("DestinationArn"):
            yield _find("api-access-logs", name, "needs AccessLogSettings.DestinationArn")
        throttling = props.get("DefaultRouteSettings") or {}
        if "ThrottlingRateLimit" not in throttling or "ThrottlingBurstLimit" not in throttling:
            yield _find("api-throttling", name, "needs DefaultRouteSettings throttling limits")


# ---- tools from the tools venv -------------------------------------------------------------
def tool(name: str) -> str:
    """Path of `sam`/`checkov`: $JOBTRACKER_TOOLS_BIN, the repo's .venv-tools, or PATH."""
    for directory in (os.environ.get("JOBTRACKER_TOOLS_BIN"), str(ROOT / ".venv-tools" / "bin")):
        if directory and (candidate := Path(directory) / name).is_file():
            return str(candidate)
    found = shutil.which(name)
    if not found:
        raise FileNotFoundError(f"{name} not found: run `make tools` (creates .venv-tools)")
    return found


def _tool_env() -> dict[str, str]:
    # The tools never phone home: no telemetry, no guideline download, no update check.
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_ENDPOINT_URL")}
    env.update({"SAM_CLI_TELEMETRY": "0", "SAM_CLI_DISABLE_UPDATE_CHECK": "1", "BC_SKIP_MAPPING": "TRUE"})
    env.setdefault("AWS_DEFAULT_REGION", REGION)
    return env


def checkov(path: Path = TEMPLATE, config: Path = CHECKOV_CONFIG) -> list[Finding]:
    """checkov on the template with the repository's skips; any failed check is a finding."""
    config_findings = checkov_skip_reasons(config)
    result = subprocess.run(
        [tool("checkov"), "-f", str(path), "--config-file", str(config), "--skip-download", "-o", "json"],
        capture_output=True,
        text=True,
        env=_tool_env(),
        cwd=path.parent,
        timeout=600,
        check=False,
    )
    try:
        reports = json.loads(result.stdout)
    except ValueError:
        return [
            *config_findings,
            Finding("checkov", "run", str(path), (result.stderr or result.stdout)[-2000:]),
        ]
    findings = list(config_findings)
    for report in reports if isinstance(reports, list) else [reports]:
        if "results" not in report:  # "no resources found" summary
            findings.append(Finding("checkov", "run", str(path), f"nothing checked: {report}"))
            continue
        findings += [
            Finding("checkov", c["check_id"], c.get("resource", ""), c.get("check_name", ""))
            for c in report["results"].get("failed_checks", [])
        ]
        findings += [
            Finding("checkov", "parse", str(p), "parsing error")
            for p in report["results"].get("parsing_errors", [])
        ]
    return findings


def checkov_skip_reasons(config: Path = CHECKOV_CONFIG) -> list[Finding]:
    """Every skip in .checkov.yaml carries a reason: a comment on its own line."""
    findings = []
    in_skips = False
    for number, line in enumerate(config.read_text().splitlines(), 1):
        if re.match(r"^[A-Za-z-]+:", line):
            in_skips = line.startswith("skip-check:")
            continue
        item = re.match(r"^\s*-\s*([A-Z0-9_]+)\s*(#\s*(.*))?$", line)
        if in_skips and item and len((item.group(3) or "").strip()) < 20:
            findings.append(
                Finding(
                    "checkov",
                    "skip-reason",
                    f"{config.name}:{number}",
                    f"skip {item.group(1)} needs a reason",
                )
            )
    return findings


def missing_code(path: Path = TEMPLATE) -> list[Finding]:
    """Local CodeUri/ContentUri folders that do not exist (sam build only says FileNotFoundError)."""
    findings = []
    for name, resource in load(path).get("Resources", {}).items():
        props = resource.get("Properties") or {}
        for key in ("CodeUri", "ContentUri"):
            uri = props.get(key)
            if isinstance(uri, str) and not uri.startswith("s3://") and not (path.parent / uri).is_dir():
                findings.append(Finding("sam-build", "code-uri", f"{name}.{key}", f"{uri} is not a folder"))
    return findings


def sam_build(path: Path = TEMPLATE) -> list[Finding]:
    """`sam build` into a throwaway directory (run from there, so SAM's deps cache stays out of the repo)."""
    if findings := missing_code(path):
        return findings
    with tempfile.TemporaryDirectory(prefix="jobtracker-sam-build-") as work:
        result = subprocess.run(
            [
                tool("sam"),
                "build",
                "--template-file",
                str(path.resolve()),
                "--build-dir",
                str(Path(work) / "build"),
                "--config-file",
                str((ROOT / "samconfig.toml").resolve()),
                "--no-cached",
            ],
            capture_output=True,
            text=True,
            env=_tool_env(),
            cwd=work,
            timeout=900,
            check=False,
        )
        if result.returncode != 0 or not (Path(work) / "build" / "template.yaml").is_file():
            output = result.stderr + result.stdout
            errors = [line for line in output.splitlines() if "Error" in line]
            return [Finding("sam-build", "build", str(path), "\n".join([*errors[-5:], output[-2000:]]))]
        function_globals = load(path).get("Globals", {}).get("Function", {}) or {}
        architectures = function_globals.get("Architectures") or ["x86_64"]
        runtime = str(function_globals.get("Runtime", "python3.11"))
        built = Path(work) / "build"
        findings = wrong_architecture(built, str(architectures[0])) + missing_bytecode(built, runtime)
        for name, resource in load(path).get("Resources", {}).items():
            if resource.get("Type") == "AWS::Serverless::LayerVersion":
                pins = path.parent / resource["Properties"]["ContentUri"] / "constraints.txt"
                findings += unpinned_distributions(built / name, pins)
        return findings


#: ELF e_machine values of the two Lambda architectures.
ELF_MACHINE = {"arm64": 0xB7, "x86_64": 0x3E}


def wrong_architecture(build_dir: Path, architecture: str) -> list[Finding]:
    """Native extensions (pydantic-core, markupsafe...) built for another CPU than the functions run on.

    pip on an x86_64 machine installs x86_64 wheels unless SAM asks for the target platform's; a
    layer with the wrong pydantic-core imports fine in tests and fails in Lambda.
    """
    expected = ELF_MACHINE[architecture]
    findings = []
    for library in sorted(build_dir.rglob("*.so*")):
        if not library.is_file():
            continue
        with library.open("rb") as binary:
            header = binary.read(20)
        if header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") != expected:
            where = str(library.relative_to(build_dir))
            findings.append(Finding("sam-build", "architecture", where, f"not built for {architecture}"))
    return findings


def missing_bytecode(build_dir: Path, runtime: str) -> list[Finding]:
    """Built functions and layers with modules the runtime would compile at every cold start.

    Lambda cannot write `__pycache__` (/var/task and /opt are read-only), so a module without
    bytecode for the runtime's interpreter is compiled on every import of every cold start
    (~300 ms for pydantic and Powertools). infra/lambda/Makefile compiles with
    `--invalidation-mode unchecked-hash` (PEP 552 flags 0b01): timestamp-checked files could be
    judged stale after the zip's 2-second mtimes.
    """
    tag = "cpython-" + runtime.removeprefix("python").replace(".", "")
    findings = []
    for artifact in sorted(p for p in build_dir.iterdir() if p.is_dir()):
        sources = sorted(artifact.rglob("*.py"))
        missing = [source for source in sources if not _unchecked_bytecode(source, tag)]
        if missing:
            example = missing[0].relative_to(build_dir)
            message = f"{len(missing)} of {len(sources)} modules without unchecked-hash {tag} bytecode"
            message += f", e.g. {example}"
            findings.append(Finding("sam-build", "bytecode", artifact.name, message))
    return findings


def pinned_versions(constraints: Path) -> dict[str, str]:
    """`name==version` lines of a pip constraints file, by normalised name (PEP 503)."""
    pins = {}
    for line in constraints.read_text().splitlines():
        name, sep, version = line.split("#", 1)[0].strip().partition("==")
        if sep:
            pins[_normalise(name)] = version.strip()
    return pins


def unpinned_distributions(artifact: Path, constraints: Path) -> list[Finding]:
    """Distributions a built layer holds in another version than its constraints pin (or
    unpinned): the tests ran against the pins, so anything else ships untested code."""
    if not constraints.is_file():
        return [Finding("sam-build", "pins", str(constraints), "the layer has no constraints file")]
    pins = pinned_versions(constraints)
    findings = []
    for info in sorted(artifact.rglob("*.dist-info")):
        name, _, version = info.name.removesuffix(".dist-info").partition("-")
        pinned = pins.get(_normalise(name))
        if pinned != version:
            expected = f"pinned {pinned}" if pinned else "not pinned"
            findings.append(
                Finding("sam-build", "pins", f"{artifact.name}: {name}", f"built {version}, {expected}")
            )
    return findings


def _normalise(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _unchecked_bytecode(source: Path, tag: str) -> bool:
    """An unchecked-hash .pyc for `tag`; when `tag` is this interpreter's, also of this source
    (an unchecked .pyc is never compared with its source by the runtime, so a stale one would
    run the old code)."""
    try:
        with (source.parent / "__pycache__" / f"{source.stem}.{tag}.pyc").open("rb") as compiled:
            header = compiled.read(16)
    except OSError:
        return False
    if int.from_bytes(header[4:8], "little") != 0b01:
        return False
    if tag != sys.implementation.cache_tag:
        return True
    return header[:4] == importlib.util.MAGIC_NUMBER and header[8:16] == importlib.util.source_hash(
        source.read_bytes()
    )


# ---- command line ----------------------------------------------------------------------------
GATES: dict[str, Callable[[Path], list[Finding]]] = {
    "cfn-lint": cfn_lint,
    "policy": policy,
    "checkov": checkov,
    "sam-build": sam_build,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m jobtracker_local.gates", description=__doc__.split("\n")[0]
    )
    parser.add_argument("gate", choices=[*GATES, "all"])
    parser.add_argument("template", nargs="?", type=Path, default=TEMPLATE)
    args = parser.parse_args(argv)
    names = list(GATES) if args.gate == "all" else [args.gate]
    failed = False
    for name in names:
        started = time.monotonic()
        findings = GATES[name](args.template)
        elapsed = time.monotonic() - started
        for finding in findings:
            print(finding, file=sys.stderr)
        print(f"gate {name}: {'FAILED' if findings else 'ok'} ({len(findings)} findings, {elapsed:.1f} s)")
        failed = failed or bool(findings)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
