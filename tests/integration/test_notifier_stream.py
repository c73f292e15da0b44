"""Runs written through the runs repository, read back from moto's DynamoDB stream, filtered
with the template's FilterCriteria and delivered to the notifier: real images, real filter."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import boto3
import pytest
from jobtracker_common.models import RunStatus
from jobtracker_common.repositories.notifications import NotificationsRepository
from jobtracker_common.repositories.runs import RunsRepository
from jobtracker_common.repositories.users import UsersRepository
from jobtracker_common.users import PreferencesPatch
from jobtracker_local.patterns import matches_any, parse_pattern
from jobtracker_local.streams import ShardReader
from jobtracker_local.template import load_template
from notifier import handler
from notifier.sender import SesSender
from notifier.service import NotifierService
from notifier.settings import NotifierSettings

from tests.conftest import FakeLambdaContext
from tests.support.aws import REGION
from tests.support.notifier import NOTIFIER_ENV, SENDER, T0, Clock, RecordingSes, make_run


def notifier_filters() -> list[dict[str, Any]]:
    for function_id, _event_id, raw in load_template().events_of_type("DynamoDB"):
        if function_id == "NotifierFunction":
            return [parse_pattern(f["Pattern"]) for f in raw["FilterCriteria"]["Filters"]]
    raise AssertionError("NotifierFunction has no DynamoDB event in the template")


def stream_records(ddb: Any) -> list[dict[str, Any]]:
    arn = ddb.describe_table(TableName="RunsTable")["Table"]["LatestStreamArn"]
    # In-process moto answers the streams API only on its classic endpoint name.
    streams = boto3.client(
        "dynamodbstreams", region_name=REGION, endpoint_url=f"https://streams.dynamodb.{REGION}.amazonaws.com"
    )
    records: list[dict[str, Any]] = []
    for shard in streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]:
        reader = ShardReader(streams, arn, shard["ShardId"], REGION)
        reader.fetch(0)
        records.extend(reader.after(None))
    return records


@pytest.fixture
def service(aws: Any, monkeypatch: pytest.MonkeyPatch) -> NotifierService:
    for key, value in NOTIFIER_ENV.items():
        monkeypatch.setenv(key, value)
    settings = NotifierSettings.from_env()
    ses = RecordingSes(inner=boto3.client("sesv2", region_name=REGION))
    ses.inner.create_email_identity(EmailIdentity=SENDER)
    sender = SesSender(client=ses, sender_email=SENDER, product_name="NetRaven", sleep=lambda _s: None)  # type: ignore[arg-type]
    return NotifierService(
        users=UsersRepository(aws, "UsersTable"),
        notifications=NotificationsRepository(aws, "NotificationsTable"),
        sender=sender,
        settings=settings,
        clock=Clock(),
    )


def test_a_retried_then_failed_run_and_a_recovery_notify_through_the_real_stream(
    aws: Any, service: NotifierService
) -> None:
    # Given an owner who wants retry emails too
    service.users.get_or_create("owner", email="owner@example.com")
    service.users.update_preferences("owner", PreferencesPatch(email_on_job_retry=True))
    runs = RunsRepository(aws, "RunsTable")
    # And a run that goes running -> retrying -> running (attempt 2) -> failed, with a log write
    run = runs.create(make_run(RunStatus.RUNNING, finished_at=None, duration_ms=None, error=None))
    run = runs.transition(run, RunStatus.RETRYING, error={"type": "E", "message": "boom"})
    run = runs.transition(run, RunStatus.RUNNING, attempt=2, error=None)
    run = runs.transition(run, RunStatus.FAILED, error={"type": "E", "message": "boom again"}, finished_at=T0)
    # And the next run of the job succeeds (the first success after a failure)
    nxt = runs.create(
        make_run(
            RunStatus.RUNNING,
            run_id="01RUN0000000000000000000N2",
            previous_status=RunStatus.FAILED,
            finished_at=None,
            duration_ms=None,
        )
    )
    runs.transition(nxt, RunStatus.COMPLETED, finished_at=T0 + timedelta(minutes=5), duration_ms=1200)
    # When moto's stream records pass the template's filter and reach the handler (twice)
    records = [r for r in stream_records(aws) if matches_any(notifier_filters(), r)]
    assert {r["dynamodb"]["NewImage"]["status"]["S"] for r in records} == {"retrying", "failed", "completed"}
    for _ in range(2):
        response = handler.handle({"Records": records}, FakeLambdaContext(60_000), service)  # type: ignore[arg-type]
        assert response == {"batchItemFailures": []}
    # Then the owner got one email per event: retrying (attempt 1), failed, recovered
    sent = service.sender.client.subjects()  # type: ignore[attr-defined]
    assert sorted(sent) == [
        "NetRaven Job Failed: backup on core-sw-01",
        "NetRaven Job Recovered: backup on core-sw-01",
        "NetRaven Job Retrying: backup on core-sw-01",
    ]
