"""Drive the API Lambda in-process with API Gateway HTTP API v2 events.

`http_event` builds the event API Gateway would send (route key, raw path, path parameters,
query string, body, JWT authorizer claims); `ApiHarness` wires the API's services to moto and
a fake runner invoker, and calls `api.handler.lambda_handler`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote, urlencode

import boto3

from tests.support.aws import ACCOUNT, REGION

ALL_SCOPES = ("read:job_logs", "write:job_logs", "read:jobs", "write:jobs")
GROUP = "jobtracker-test-jobs"
RUNNER_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:job-runner"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/scheduler"
DLQ_ARN = f"arn:aws:sqs:{REGION}:{ACCOUNT}:scheduler-dlq"
_NO_TOKEN = object()


def claims(
    sub: str = "user-alice", *, scopes: tuple[str, ...] | list[str] = ALL_SCOPES, email: str | None = None
) -> dict[str, str]:
    """JWT claims as the HTTP API authorizer passes them on (all values strings)."""
    out = {"sub": sub, "scope": " ".join(scopes), "iss": "https://issuer.example", "token_use": "access"}
    if email is not None:
        out["email"] = email
    return out


def http_event(
    route_key: str,
    *,
    path_params: dict[str, str] | None = None,
    query: dict[str, str] | None = None,
    body: Any = None,
    headers: dict[str, str] | None = None,
    token_claims: dict[str, str] | None = None,
    stage: str = "$default",
) -> dict[str, Any]:
    """An HTTP API v2 event for `route_key` (e.g. "GET /jobs/{job_id}"); body dict -> JSON."""
    method, template = route_key.split(" ", 1)
    params = path_params or {}
    path = re.sub(r"\{(\w+)\}", lambda m: quote(params[m.group(1)], safe=""), template)
    raw_path = path if stage == "$default" else f"/{stage}{path}"
    all_headers = {"host": "api.example.com", "user-agent": "pytest"}
    if body is not None:
        all_headers["content-type"] = "application/json"
    all_headers.update({k.lower(): v for k, v in (headers or {}).items()})
    if token_claims is not None:
        all_headers["authorization"] = "Bearer test-token"
    context: dict[str, Any] = {
        "accountId": ACCOUNT,
        "apiId": "testapi",
        "domainName": "api.example.com",
        "domainPrefix": "api",
        "http": {
            "method": method,
            "path": raw_path,
            "protocol": "HTTP/1.1",
            "sourceIp": "192.0.2.1",
            "userAgent": "pytest",
        },
        "requestId": "req-1",
        "routeKey": route_key,
        "stage": stage,
        "time": "29/Nov/2026:05:00:00 +0000",
        "timeEpoch": 1795842000000,
    }
    if token_claims is not None:
        context["authorizer"] = {"jwt": {"claims": token_claims, "scopes": None}}
    event: dict[str, Any] = {
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": raw_path,
        "rawQueryString": urlencode(query or {}),
        "headers": all_headers,
        "requestContext": context,
        "isBase64Encoded": False,
    }
    if query:
        event["queryStringParameters"] = dict(query)
    if params:
        event["pathParameters"] = dict(params)
    if body is not None:
        event["body"] = body if isinstance(body, str) else json.dumps(body)
    return event


@dataclass
class ApiResponse:
    status: int
    body: Any
    headers: dict[str, str]

    @property
    def message(self) -> str:
        return str(self.body.get("message", "")) if isinstance(self.body, dict) else ""


def lambda_response(event: dict[str, Any]) -> dict[str, Any]:
    """What the API Lambda returns to API Gateway for `event`."""
    from api.handler import lambda_handler

    from tests.conftest import FakeLambdaContext

    return lambda_handler(event, FakeLambdaContext(name="api"))


def invoke(event: dict[str, Any]) -> ApiResponse:
    result = lambda_response(event)
    raw = result.get("body")
    body = json.loads(raw) if raw else None
    return ApiResponse(result["statusCode"], body, result.get("headers", {}))


@dataclass
class FakeInvoker:
    """Records what the API would send to the runner (Lambda async invoke)."""

    payloads: list[dict[str, Any]] = field(default_factory=list)
    fail: bool = False

    def invoke(self, payload: dict[str, Any]) -> None:
        if self.fail:
            raise RuntimeError("simulated Lambda invoke failure")
        self.payloads.append(json.loads(json.dumps(payload)))


class FakeClock:
    def __init__(self, now: datetime | None = None) -> None:
        self.now = now or datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


@dataclass
class ApiHarness:
    ddb: Any
    scheduler: Any
    services: Any
    invoker: FakeInvoker
    clock: FakeClock | None

    def call(
        self,
        route_key: str,
        *,
        user: str | None = "user-alice",
        scopes: tuple[str, ...] | list[str] = ALL_SCOPES,
        email: str | None = None,
        **kwargs: Any,
    ) -> ApiResponse:
        token = None if user is None else claims(user, scopes=scopes, email=email)
        return invoke(http_event(route_key, token_claims=token, **kwargs))

    def schedule(self, job_id: str) -> dict[str, Any] | None:
        try:
            return dict(self.scheduler.get_schedule(Name=f"job-{job_id}", GroupName=GROUP))
        except self.scheduler.exceptions.ResourceNotFoundException:
            return None


@contextmanager
def api_harness(ddb: Any, *, clock: FakeClock | None = None) -> Iterator[ApiHarness]:
    """Inside the `aws` fixture (moto): the API's services on moto tables, schedules, fake invoker."""
    from api.deps import Services, override
    from jobtracker_common.repositories import JobsRepository, RunsRepository
    from jobtracker_common.repositories.stats import StatsRepository
    from jobtracker_common.repositories.users import UsersRepository
    from jobtracker_common.schedules import ScheduleService
    from jobtracker_common.timeutil import utcnow

    scheduler = boto3.client("scheduler", region_name=REGION)
    scheduler.create_schedule_group(Name=GROUP)
    invoker = FakeInvoker()
    services = Services(
        jobs=JobsRepository(ddb, "JobsTable"),
        runs=RunsRepository(ddb, "RunsTable"),
        users=UsersRepository(ddb, "UsersTable"),
        stats=StatsRepository(ddb, "StatsTable"),
        schedules=ScheduleService(
            scheduler, group_name=GROUP, role_arn=ROLE_ARN, target_arn=RUNNER_ARN, dlq_arn=DLQ_ARN
        ),
        invoker=invoker,
        clock=clock or utcnow,
    )
    with override(services):
        yield ApiHarness(ddb, scheduler, services, invoker, clock)
