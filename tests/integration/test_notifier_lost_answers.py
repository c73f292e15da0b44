"""The notifier when DynamoDB applies a claim but its answer is lost (botocore retries the call,
and the retry finds the claim already there): the worker must know the claim for its own and
send, not take it for a rival's and leave an email nobody sends."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from jobtracker_common.models import RunStatus
from jobtracker_common.repositories.notifications import NotificationsRepository, NotificationState
from jobtracker_common.repositories.users import UsersRepository
from jobtracker_common.users import NotificationPreferences, QuietHours, User
from notifier import handler
from notifier.digest import DigestService
from notifier.sender import SesSender
from notifier.service import NotifierService
from notifier.settings import NotifierSettings

from tests.conftest import FakeLambdaContext
from tests.support.aws import dynamodb
from tests.support.faults import LostAnswers
from tests.support.notifier import (
    NOTIFIER_ENV,
    T0,
    Clock,
    RecordingSes,
    make_run,
    stream_event,
    stream_record,
)


@pytest.fixture
def lossy(aws: Any) -> Any:
    """A second client on the same moto tables, for the notifications repository only."""
    return dynamodb()


def notifier_on(
    aws: Any, lossy: Any, monkeypatch: pytest.MonkeyPatch, ses: RecordingSes, clock: Clock, **prefs: Any
) -> Any:
    for key, value in NOTIFIER_ENV.items():
        monkeypatch.setenv(key, value)
    settings = NotifierSettings.from_env()
    users = UsersRepository(aws, settings.users_table_name, clock=clock)
    users.put(
        User(
            user_id="owner",
            email="owner@example.com",
            preferences=NotificationPreferences.model_validate(
                prefs or {"quiet_hours": QuietHours(start="22:00", end="07:00", timezone="UTC")}
            ),
            created_at=T0,
        )
    )
    return NotifierService(
        users=users,
        notifications=NotificationsRepository(lossy, settings.notifications_table_name),
        sender=SesSender(
            client=ses,  # type: ignore[arg-type]
            sender_email=settings.sender_email,
            product_name=settings.product_name,
            sleep=lambda _s: None,
        ),
        settings=settings,
        clock=clock,
    )


def test_a_lost_answer_to_the_stream_claim_still_sends_the_email_once(
    aws: Any, lossy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a failure outside quiet hours, and a table that loses the answer to the claim's put
    ses, clock = RecordingSes(), Clock()
    clock.now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    service = notifier_on(aws, lossy, monkeypatch, ses, clock)
    lost = LostAnswers(lossy, {"PutItem"}, limit=1)
    run = make_run(RunStatus.FAILED)
    # When the record is delivered (and replayed)
    response = handler.handle(stream_event(stream_record(run)), FakeLambdaContext(60_000), service)  # type: ignore[arg-type]
    handler.handle(stream_event(stream_record(run)), FakeLambdaContext(60_000), service)  # type: ignore[arg-type]
    # Then the claim was lost once, recognised as this worker's own, and the email went out once
    assert lost.count("PutItem") == 1
    assert response["batchItemFailures"] == []
    assert ses.recipients() == ["owner@example.com"]
    (record,) = service.notifications.list_for_run(run.run_id)
    assert record.state is NotificationState.SENT


def test_a_lost_answer_to_a_held_claim_still_sends_the_email_once(
    aws: Any, lossy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a failure held by quiet hours, and a table that loses the answer to the release's claim
    ses, clock = RecordingSes(), Clock()
    clock.now = T0.replace(hour=23)
    service = notifier_on(aws, lossy, monkeypatch, ses, clock)
    run = make_run(RunStatus.FAILED)
    handler.handle(stream_event(stream_record(run)), FakeLambdaContext(60_000), service)  # type: ignore[arg-type]
    (held,) = service.notifications.list_for_run(run.run_id)
    assert held.state is NotificationState.HELD
    lost = LostAnswers(lossy, {"UpdateItem"}, limit=1)
    # When the ticks after the window run
    clock.now = T0.replace(day=3, hour=7, minute=1)
    digest = DigestService(service)
    report = digest.run()
    digest.run()
    # Then the claim was lost once, recognised as this tick's own, and the email went out once
    assert lost.count("UpdateItem") == 1
    assert report.outcomes == {"sent": 1}
    assert ses.recipients() == ["owner@example.com"]
    (record,) = service.notifications.list_for_run(run.run_id)
    assert record.state is NotificationState.SENT


def test_a_lost_answer_to_the_digest_claim_still_sends_the_digest_once(
    aws: Any, lossy: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given an hourly-digest user with a queued failure, and a table that loses the answer to
    # the put that creates (claims) the digest record
    ses, clock = RecordingSes(), Clock()
    clock.now = T0.replace(minute=5)
    service = notifier_on(aws, lossy, monkeypatch, ses, clock, notification_frequency="hourly")
    run = make_run(RunStatus.FAILED)
    handler.handle(stream_event(stream_record(run)), FakeLambdaContext(60_000), service)  # type: ignore[arg-type]
    lost = LostAnswers(lossy, {"PutItem"}, limit=1)
    # When the ticks after the period run (the second after the digest's lease ran out)
    clock.now = T0.replace(hour=11, minute=2)
    digest = DigestService(service)
    first = digest.run()
    clock.now = T0.replace(hour=12, minute=2)
    digest.run()
    # Then the claim was lost once, recognised as this tick's own, and the digest went out once
    assert lost.count("PutItem") == 1
    assert first.digests_sent == 1
    assert len(ses.delivered) == 1
    (record,) = service.notifications.list_for_run(run.run_id)
    assert record.state is NotificationState.DIGESTED
