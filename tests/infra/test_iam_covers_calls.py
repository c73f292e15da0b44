"""Every AWS call a function's code makes is allowed by that function's role in the template.

moto and the local stack enforce no IAM, so a grant narrowed too far (or a new call without a
grant) would only fail once deployed. This test runs each function on the local stack (in a
child process, tests/infra/aws_calls.py), records each botocore call made inside a handler, and
checks it against the IAM statements samtranslator generates for that function's role: the
action, the table/index, schedule group or function it targets, `iam:PassRole` for the role a
schedule is given, and SES's `ses:FromAddress` condition.
"""

from __future__ import annotations

import fnmatch
import json
import subprocess
import sys
from collections.abc import Iterator
from email.utils import parseaddr
from typing import Any

import pytest
from jobtracker_local import gates
from jobtracker_local.resources import LocalResources, local_parameters
from jobtracker_local.template import load_template

pytestmark = pytest.mark.infra

Call = dict[str, Any]
Statement = dict[str, Any]
IAM_PREFIX = {"sesv2": "ses"}
IAM_ACTION = {("lambda", "Invoke"): "lambda:InvokeFunction"}


@pytest.fixture(scope="module")
def calls(tmp_path_factory: pytest.TempPathFactory) -> list[Call]:
    work = tmp_path_factory.mktemp("aws-calls")
    out = work / "calls.json"
    result = subprocess.run(
        [sys.executable, "-m", "tests.infra.aws_calls", str(work / "state"), str(out)],
        cwd=gates.ROOT,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    recorded: list[Call] = json.loads(out.read_text())
    return recorded


@pytest.fixture(scope="module")
def translated() -> dict[str, Any]:
    return gates.translate(gates.load(gates.TEMPLATE))


def role_statements(translated: dict[str, Any], function_id: str) -> list[Statement]:
    role = translated["Resources"][function_id]["Properties"]["Role"]["Fn::GetAtt"][0]
    return [
        s
        for where, s in gates._statements(translated)
        if where.startswith(f"{role}.") and s["Effect"] == "Allow"
    ]


def actions(statement: Statement) -> list[str]:
    value = statement["Action"]
    return [a.lower() for a in (value if isinstance(value, list) else [value])]


def allows(statement: Statement, action: str, target: str | None, index: bool = False) -> bool:
    if not any(fnmatch.fnmatchcase(action.lower(), pattern) for pattern in actions(statement)):
        return False
    resource = statement.get("Resource")
    if target is not None and target not in gates._references(resource):
        return False
    return not index or "/index/" in json.dumps(resource)


def required(
    call: Call, names: dict[str, str], res: LocalResources
) -> Iterator[tuple[str, str | None, bool]]:
    """(action, logical id of the resource or None, on an index) that IAM checks for one call."""
    service, operation = call["service"], call["operation"]
    action = IAM_ACTION.get((service, operation), f"{IAM_PREFIX.get(service, service)}:{operation}")
    if "table" in call:
        yield action, names[call["table"]], "index" in call
    elif "group" in call:
        yield action, names[call["group"]], False
    elif "user_pool" in call:
        # The local stack runs with an external issuer (no pool): a call names the pool's logical id.
        yield action, names.get(call["user_pool"], call["user_pool"]), False
    elif "target_function" in call:
        yield action, res.function_for_arn(call["target_function"]), False
    else:
        yield action, None, False
    if "role" in call:
        yield "iam:PassRole", names[call["role"]], False


def problems(calls: list[Call], translated: dict[str, Any], res: LocalResources) -> list[str]:
    names = {str(v): k for k, v in res.refs.items()} | {str(v): k.split(".")[0] for k, v in res.attrs.items()}
    found = []
    for call in calls:
        statements = role_statements(translated, call["function"])
        for action, target, index in required(call, names, res):
            if not any(allows(s, action, target, index) for s in statements):
                on = f"{target}{' index' if index else ''}"
                found.append(f"{call['function']}: {action} on {on} is not granted")
        if call["operation"] == "SendEmail":
            sender = parseaddr(call.get("from", ""))[1]
            conditions = [s.get("Condition", {}) for s in statements if allows(s, "ses:SendEmail", None)]
            allowed = {str(res.resolve(c.get("StringEquals", {}).get("ses:FromAddress"))) for c in conditions}
            if sender not in allowed:
                found.append(f"{call['function']}: sends from {sender!r}, ses:FromAddress allows {allowed}")
    return sorted(set(found))


@pytest.fixture(scope="module")
def local() -> LocalResources:
    return LocalResources(load_template(), "http://127.0.0.1:9", parameters=local_parameters())


def test_every_function_was_exercised(calls: list[Call], local: LocalResources) -> None:
    made = {(c["function"], c["service"], c["operation"]) for c in calls}
    assert {fn for fn, _, _ in made} == set(local.template.functions())
    assert {
        ("TrackerFunction", "scheduler", "CreateSchedule"),
        ("NotifierFunction", "sesv2", "SendEmail"),
        ("ApiFunction", "lambda", "Invoke"),
        ("ApiFunction", "scheduler", "UpdateSchedule"),
        ("ApiFunction", "scheduler", "DeleteSchedule"),
    } <= made


def test_every_call_is_granted(calls: list[Call], translated: dict[str, Any], local: LocalResources) -> None:
    # Given every AWS call the functions made on the local stack
    # When each is checked against its function's role in the translated template
    # Then IAM would allow all of them
    assert problems(calls, translated, local) == []


def test_the_cognito_email_lookup_is_granted_on_the_pool_only(
    translated: dict[str, Any], local: LocalResources
) -> None:
    # Given the API's one Cognito call (api/emails.py), which the local stack (external issuer,
    # no pool) never makes
    lookup = {"function": "ApiFunction", "service": "cognito-idp", "operation": "AdminGetUser"}
    # When it is checked against the roles
    # Then the API may make it on the template's pool, on no other pool, and no other function may
    assert problems([{**lookup, "user_pool": "UserPool"}], translated, local) == []
    assert problems([{**lookup, "user_pool": "OtherPool"}], translated, local) == [
        "ApiFunction: cognito-idp:AdminGetUser on OtherPool is not granted"
    ]
    assert problems(
        [{**lookup, "function": "NotifierFunction", "user_pool": "UserPool"}], translated, local
    ) == ["NotifierFunction: cognito-idp:AdminGetUser on UserPool is not granted"]


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (
            {
                "function": "TrackerFunction",
                "service": "dynamodb",
                "operation": "GetItem",
                "table": "JobsTable",
            },
            "TrackerFunction: dynamodb:GetItem on JobsTable is not granted",
        ),
        (
            {
                "function": "SweeperFunction",
                "service": "dynamodb",
                "operation": "Query",
                "table": "JobsTable",
            },
            "SweeperFunction: dynamodb:Query on JobsTable is not granted",
        ),
        (
            {
                "function": "TrackerFunction",
                "service": "scheduler",
                "operation": "DeleteSchedule",
                "group": "jobtracker-local-jobs",
            },
            "TrackerFunction: scheduler:DeleteSchedule on JobScheduleGroup is not granted",
        ),
        (
            {
                "function": "NotifierFunction",
                "service": "sesv2",
                "operation": "SendEmail",
                "from": "X <someone@else.example>",
            },
            "NotifierFunction: sends from 'someone@else.example', "
            "ses:FromAddress allows {'jobs@example.com'}",
        ),
    ],
)
def test_an_ungranted_call_is_caught(
    call: Call, expected: str, translated: dict[str, Any], local: LocalResources
) -> None:
    assert expected in problems([call], translated, local)
