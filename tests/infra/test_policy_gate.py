"""Our own template rules: they pass on infra/template.yaml and fail on each kind of regression."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jobtracker_local import gates

pytestmark = pytest.mark.infra

Doc = dict[str, Any]


def res(doc: Doc, logical_id: str) -> Doc:
    props: Doc = doc["Resources"][logical_id].setdefault("Properties", {})
    return props


def stream(doc: Doc, function_id: str = "NotifierFunction", event_id: str = "RunsStream") -> Doc:
    props: Doc = res(doc, function_id)["Events"][event_id]["Properties"]
    return props


def add_statement(doc: Doc, statement: Doc, function_id: str = "TrackerFunction") -> None:
    res(doc, function_id)["Policies"].append({"Statement": [statement]})


def rules(path: Path) -> set[str]:
    return {finding.rule for finding in gates.policy(path)}


def test_template_passes_the_policy_gate() -> None:
    # Given the template everyone deploys
    # When our rules run over it and its translation
    findings = gates.policy(gates.TEMPLATE)
    # Then nothing is found
    assert findings == [], "\n".join(map(str, findings))


# Each case: what breaks the template, and the rule that must catch it.
CASES: dict[str, tuple[Callable[[Doc], None], str]] = {
    # wildcard IAM on data
    "action dynamodb:*": (
        lambda d: add_statement(
            d, {"Effect": "Allow", "Action": "dynamodb:*", "Resource": {"Fn::GetAtt": ["StatsTable", "Arn"]}}
        ),
        "iam-wildcard-action",
    ),
    "action *": (
        lambda d: add_statement(d, {"Effect": "Allow", "Action": ["*"], "Resource": "arn:aws:s3:::x"}),
        "iam-wildcard-action",
    ),
    "action dynamodb:Put*": (
        lambda d: add_statement(
            d,
            {"Effect": "Allow", "Action": "dynamodb:Put*", "Resource": {"Fn::GetAtt": ["StatsTable", "Arn"]}},
        ),
        "iam-wildcard-action",
    ),
    "data action on Resource *": (
        lambda d: add_statement(d, {"Effect": "Allow", "Action": "dynamodb:GetItem", "Resource": "*"}),
        "iam-wildcard-resource",
    ),
    "SES identity management": (
        lambda d: add_statement(
            d,
            {
                "Effect": "Allow",
                "Action": "ses:CreateEmailIdentity",
                "Resource": "arn:aws:ses:*:*:identity/x",
            },
            "NotifierFunction",
        ),
        "iam-ses-identity",
    ),
    "broad managed policy": (
        lambda d: res(d, "ApiFunction")["Policies"].append("AmazonDynamoDBFullAccess"),
        "iam-managed-policy",
    ),
    # stream consumers
    "stream without on-failure destination": (
        lambda d: stream(d).pop("DestinationConfig"),
        "stream-on-failure",
    ),
    "stream without partial batch failures": (
        lambda d: stream(d, "TrackerFunction").pop("FunctionResponseTypes"),
        "stream-partial-failures",
    ),
    "stream retrying forever": (
        lambda d: stream(d).update(MaximumRetryAttempts=-1),
        "stream-retries",
    ),
    "stream retries unbounded (absent)": (
        lambda d: stream(d, "TrackerFunction").pop("MaximumRetryAttempts"),
        "stream-retries",
    ),
    "stream records kept forever": (
        lambda d: stream(d).update(MaximumRecordAgeInSeconds=-1),
        "stream-record-age",
    ),
    "stream starting at LATEST": (
        lambda d: stream(d).update(StartingPosition="LATEST"),
        "stream-starting-position",
    ),
    "stream batch size 0": (
        lambda d: stream(d).update(BatchSize=0),
        "stream-batch-size",
    ),
    "stream filter that is not JSON": (
        lambda d: stream(d)["FilterCriteria"]["Filters"][0].update(Pattern="{eventName: INSERT"),
        "stream-filter",
    ),
    # async invokes and schedules
    "runner (invoked by Scheduler) without on-failure": (
        lambda d: res(d, "JobRunnerFunction").pop("EventInvokeConfig"),
        "async-on-failure",
    ),
    "scheduled sweeper without on-failure": (
        lambda d: res(d, "SweeperFunction")["EventInvokeConfig"].pop("DestinationConfig"),
        "async-on-failure",
    ),
    "ScheduleV2 without DLQ": (
        lambda d: res(d, "DigestFunction")["Events"]["EveryFiveMinutes"]["Properties"].pop(
            "DeadLetterConfig"
        ),
        "schedule-dlq",
    ),
    # data at rest
    "unencrypted queue": (
        lambda d: res(d, "NotifierDLQ").pop("SqsManagedSseEnabled"),
        "sqs-encryption",
    ),
    "table without PITR": (
        lambda d: res(d, "RunsTable").pop("PointInTimeRecoverySpecification"),
        "table-pitr",
    ),
    "table deleted with the stack": (
        lambda d: d["Resources"]["JobsTable"].update(DeletionPolicy="Delete"),
        "table-retain",
    ),
    "table replaced without keeping the old one": (
        lambda d: d["Resources"]["RunsTable"].update(UpdateReplacePolicy="Delete"),
        "table-retain",
    ),
    "table without a deletion policy": (
        lambda d: d["Resources"]["StatsTable"].pop("DeletionPolicy"),
        "table-retain",
    ),
    "user pool deleted with the stack": (
        lambda d: d["Resources"]["UserPool"].pop("DeletionPolicy"),
        "user-pool-retain",
    ),
    "user pool replaced without keeping the old one": (
        lambda d: d["Resources"]["UserPool"].update(UpdateReplacePolicy="Delete"),
        "user-pool-retain",
    ),
    "wildcard hidden in a conditional statement": (
        lambda d: res(d, "TrackerFunction")["Policies"].append(
            {
                "Statement": [
                    {
                        "Fn::If": [
                            "UseCognito",
                            {"Effect": "Allow", "Action": "dynamodb:*", "Resource": "*"},
                            {"Ref": "AWS::NoValue"},
                        ]
                    }
                ]
            }
        ),
        "iam-wildcard-action",
    ),
    # observability and wiring
    "function without its log group": (
        lambda d: res(d, "ApiFunction").pop("LoggingConfig"),
        "function-log-group",
    ),
    "table in env without a policy": (
        lambda d: res(d, "SweeperFunction")["Environment"]["Variables"].update(
            STATS_TABLE_NAME={"Ref": "StatsTable"}
        ),
        "table-access",
    ),
    "table granted but not used": (
        lambda d: res(d, "SweeperFunction")["Policies"].append(
            {"DynamoDBReadPolicy": {"TableName": {"Ref": "StatsTable"}}}
        ),
        "table-grant-unused",
    ),
    "function without an errors alarm": (
        lambda d: d["Resources"].pop("DigestErrorsAlarm"),
        "alarm-errors",
    ),
    "queue without a depth alarm": (
        lambda d: d["Resources"].pop("TrackerDLQDepthAlarm"),
        "alarm-queue-depth",
    ),
    "API without access logs": (
        lambda d: res(d, "HttpApi").pop("AccessLogSettings"),
        "api-access-logs",
    ),
    "API without throttling": (
        lambda d: res(d, "HttpApi").pop("DefaultRouteSettings"),
        "api-throttling",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_policy_gate_fails_on_a_broken_template(case: str, broken_template: Callable[..., Path]) -> None:
    # Given a copy of the template broken in one way
    mutate, rule = CASES[case]
    path = broken_template(mutate)
    # When the policy gate runs on it
    found = rules(path)
    # Then the rule for that breakage fires
    assert rule in found, f"{case}: expected {rule}, got {sorted(found)}"


@pytest.mark.parametrize("policy", ["RetainExceptOnCreate", "Retain"])
def test_tables_and_the_user_pool_may_be_kept_with_either_retaining_policy(
    policy: str, broken_template: Callable[..., Path]
) -> None:
    # Given every table and the user pool with this DeletionPolicy (RetainExceptOnCreate also
    # deletes them when the deploy that created them rolls back; both keep them on `sam delete`)
    def retain(doc: Doc) -> None:
        for resource in doc["Resources"].values():
            if resource["Type"] in {"AWS::DynamoDB::Table", "AWS::Cognito::UserPool"}:
                resource["DeletionPolicy"] = policy

    # When the policy gate runs
    found = rules(broken_template(retain))
    # Then neither retain rule fires
    assert not found & {"table-retain", "user-pool-retain"}, sorted(found)


def test_gate_command_exits_non_zero_on_a_broken_template(
    broken_template: Callable[..., Path], capsys: pytest.CaptureFixture[str]
) -> None:
    # Given a stream consumer without its on-failure destination
    path = broken_template(lambda d: stream(d).pop("DestinationConfig"))
    # When `python -m jobtracker_local.gates policy <file>` runs (what `make validate` does)
    code = gates.main(["policy", str(path)])
    # Then it fails and says why
    assert code == 1
    assert "stream-on-failure" in capsys.readouterr().err


def test_gate_command_passes_on_the_template(capsys: pytest.CaptureFixture[str]) -> None:
    assert gates.main(["policy", str(gates.TEMPLATE)]) == 0
    assert "gate policy: ok" in capsys.readouterr().out


def test_translation_needs_no_account(monkeypatch: pytest.MonkeyPatch, template_doc: Doc) -> None:
    # Given no credentials at all and no default region
    for var in (
        "AWS_ACCESS_KEY_ID",
        "AWS_SECRET_ACCESS_KEY",
        "AWS_SESSION_TOKEN",
        "AWS_DEFAULT_REGION",
        "AWS_REGION",
    ):
        monkeypatch.delenv(var, raising=False)
    # When the SAM template is translated
    translated = gates.translate(template_doc, "eu-west-1")
    # Then SAM resources became CloudFormation ones (roles, event source mappings, HTTP API stage)
    kinds = {r["Type"] for r in translated["Resources"].values()}
    assert not any(k.startswith("AWS::Serverless::") for k in kinds)
    assert {"AWS::IAM::Role", "AWS::Lambda::EventSourceMapping", "AWS::ApiGatewayV2::Stage"} <= kinds


def test_policy_gate_reports_a_template_sam_cannot_translate(broken_template: Callable[..., Path]) -> None:
    # Given a stream event without its stream, When the policy gate runs, Then it fails with the reason
    path = broken_template(lambda d: stream(d, "TrackerFunction").pop("Stream"))
    findings = gates.policy(path)
    assert [f.rule for f in findings] == ["transform"]
    assert "Stream" in findings[0].message
