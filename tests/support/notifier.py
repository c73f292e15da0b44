"""Builders and fakes for notifier tests: runs, stream records, SES clients, a settable clock."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError
from jobtracker_common.models import ErrorInfo, Run, RunStatus, Trigger
from jobtracker_common.repositories.runs import RunsRepository

from tests.support.aws import REGION

SENDER = "jobs@example.com"
NOTIFIER_ENV = {
    "JOBS_TABLE_NAME": "JobsTable",
    "USERS_TABLE_NAME": "UsersTable",
    "NOTIFICATIONS_TABLE_NAME": "NotificationsTable",
    "SENDER_EMAIL": SENDER,
    "REPLY_TO_EMAIL": "",
    "PRODUCT_NAME": "NetRaven",
    "DASHBOARD_URL": "https://dash.example.com/",
}
T0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
_seq = itertools.count(1000)
STREAM_ARN = f"arn:aws:dynamodb:{REGION}:123456789012:table/RunsTable/stream/2026-01-01T00:00:00.000"


def make_run(status: RunStatus = RunStatus.FAILED, **overrides: Any) -> Run:
    data: dict[str, Any] = {
        "run_id": "01RUN0000000000000000000A1",
        "job_id": "job-1",
        "job_name": "backup",
        "job_type": "demo",
        "target": "core-sw-01",
        "owner_id": "owner",
        "trigger": Trigger.SCHEDULE,
        "attempt": 1,
        "status": status,
        "queued_at": T0,
        "started_at": T0 + timedelta(seconds=1),
        "finished_at": T0 + timedelta(seconds=96),
        "duration_ms": 95_000,
    }
    if status in (RunStatus.FAILED, RunStatus.RETRYING, RunStatus.TIMED_OUT):
        data["error"] = ErrorInfo(type="DeviceUnreachable", message="ssh: connection refused")
    if status is RunStatus.COMPLETED:
        data["result"] = {"bytes": 4096, "changed": True}
    data.update(overrides)
    return Run.model_validate(data)


def run_image(run: Run) -> dict[str, Any]:
    return RunsRepository(client=None, table_name="RunsTable")._to_item(run)  # type: ignore[arg-type]


def stream_record(run: Run, *, old: Run | None = None, event_name: str | None = None) -> dict[str, Any]:
    """A DynamoDB stream record as Lambda delivers it (moto's lack eventSourceARN; this has it)."""
    seq = str(next(_seq)).zfill(21)
    change: dict[str, Any] = {
        "Keys": {"pk": {"S": f"RUN#{run.run_id}"}, "sk": {"S": "META"}},
        "NewImage": run_image(run),
        "SequenceNumber": seq,
        "SizeBytes": 512,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if old is not None:
        change["OldImage"] = run_image(old)
    return {
        "eventID": f"evt-{seq}",
        "eventName": event_name or ("MODIFY" if old is not None else "INSERT"),
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": REGION,
        "dynamodb": change,
        "eventSourceARN": STREAM_ARN,
    }


def stream_event(*records: dict[str, Any]) -> dict[str, Any]:
    return {"Records": list(records)}


def client_error(code: str, message: str = "", operation: str = "SendEmail") -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": message}}, operation)


@dataclass
class RecordingSes:
    """Wraps an SES v2 client (moto's, or none): records every request, injects failures.

    `fail(call_number, request)` returns an exception to raise instead of sending, or None.
    """

    inner: Any = None
    fail: Callable[[int, dict[str, Any]], Exception | None] = lambda _n, _r: None
    calls: list[dict[str, Any]] = field(default_factory=list)
    delivered: list[dict[str, Any]] = field(default_factory=list)

    def send_email(self, **request: Any) -> dict[str, Any]:
        self.calls.append(request)
        error = self.fail(len(self.calls), request)
        if error is not None:
            raise error
        response = self.inner.send_email(**request) if self.inner else {"MessageId": f"m-{len(self.calls)}"}
        self.delivered.append(request)
        return dict(response)

    def recipients(self) -> list[str]:
        return [r["Destination"]["ToAddresses"][0] for r in self.delivered]

    def subjects(self) -> list[str]:
        return [r["Content"]["Simple"]["Subject"]["Data"] for r in self.delivered]


class ThrottledUsersTable:
    """A DynamoDB client for UsersRepository.get_many: every key comes back unprocessed
    (throttled) for the first `times` BatchGetItem calls, then `inner` answers."""

    def __init__(self, inner: Any, times: int) -> None:
        self.inner, self.times, self.calls = inner, times, 0

    def batch_get_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        self.calls += 1
        if self.calls <= self.times:
            return {"Responses": {}, "UnprocessedKeys": RequestItems}
        return dict(self.inner.batch_get_item(RequestItems=RequestItems))


def throttle_every_other(n: int, _request: dict[str, Any]) -> Exception | None:
    return client_error("TooManyRequestsException", "Maximum sending rate exceeded.") if n % 2 else None


@dataclass
class Clock:
    now: datetime = T0

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now = self.now + timedelta(**delta)


def moto_sent_messages() -> list[Any]:
    """Messages moto's SES backend accepted (SES v2 simple sends land in the v1 backend)."""
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.ses.models import ses_backends

    return list(ses_backends[DEFAULT_ACCOUNT_ID][REGION].sent_messages)
