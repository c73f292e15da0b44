"""Stream records -> run events: classification, recovery, ignored records; digest periods."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from jobtracker_common.errors import ValidationError
from jobtracker_common.models import RunStatus
from jobtracker_common.users import NotificationEvent, NotificationPreferences, QuietHours
from notifier.events import parse_record
from notifier.periods import digest_period, period_label

from tests.conftest import load_event
from tests.support.notifier import make_run, stream_record


@pytest.mark.parametrize(
    ("status", "previous", "event"),
    [
        (RunStatus.COMPLETED, None, NotificationEvent.COMPLETED),
        (RunStatus.COMPLETED, RunStatus.COMPLETED, NotificationEvent.COMPLETED),
        (RunStatus.COMPLETED, RunStatus.FAILED, NotificationEvent.RECOVERED),
        (RunStatus.COMPLETED, RunStatus.TIMED_OUT, NotificationEvent.RECOVERED),
        (RunStatus.COMPLETED, RunStatus.CANCELED, NotificationEvent.COMPLETED),
        (RunStatus.FAILED, RunStatus.FAILED, NotificationEvent.FAILED),
        (RunStatus.TIMED_OUT, None, NotificationEvent.TIMED_OUT),
        (RunStatus.RETRYING, None, NotificationEvent.RETRYING),
    ],
)
def test_status_and_previous_status_decide_the_event(
    status: RunStatus, previous: RunStatus | None, event: NotificationEvent
) -> None:
    parsed = parse_record(stream_record(make_run(status, previous_status=previous)))
    assert parsed is not None and parsed.event is event


def test_retrying_is_keyed_per_attempt_and_terminal_events_per_run() -> None:
    retry = parse_record(stream_record(make_run(RunStatus.RETRYING, attempt=2)))
    final = parse_record(stream_record(make_run(RunStatus.FAILED, attempt=3)))
    assert retry is not None and retry.key_attempt == 2
    assert final is not None and final.key_attempt == 0


@pytest.mark.parametrize(
    "record",
    [
        stream_record(make_run(RunStatus.RUNNING)),
        stream_record(make_run(RunStatus.CANCELED)),
        # A MODIFY that did not change status or attempt (e.g. a later write to a finished run)
        stream_record(make_run(RunStatus.FAILED, progress="x"), old=make_run(RunStatus.FAILED)),
        # A TTL deletion
        {
            **stream_record(make_run(RunStatus.FAILED)),
            "eventName": "REMOVE",
            "userIdentity": {"type": "Service", "principalId": "dynamodb.amazonaws.com"},
        },
        {"eventName": "INSERT", "dynamodb": {"NewImage": {"entity": {"S": "log"}}}},
    ],
)
def test_records_without_news_are_ignored(record: dict) -> None:
    assert parse_record(record) is None


def test_a_new_attempt_retrying_again_is_news() -> None:
    record = stream_record(
        make_run(RunStatus.RETRYING, attempt=2), old=make_run(RunStatus.RETRYING, attempt=1)
    )
    assert parse_record(record) is not None


def test_a_broken_run_image_is_a_validation_error() -> None:
    record = stream_record(make_run(RunStatus.FAILED))
    record["dynamodb"]["NewImage"]["status"] = {"S": "exploded"}
    with pytest.raises(ValidationError, match="not a valid run"):
        parse_record(record)


def test_event_fixture_parses() -> None:
    event = load_event("notifier/stream_failed.json")
    parsed = [parse_record(r) for r in event["Records"]]
    assert [p.event if p else None for p in parsed] == [NotificationEvent.FAILED, NotificationEvent.RECOVERED]


def test_hourly_period_and_quiet_hours_push_the_digest() -> None:
    at = datetime(2026, 3, 2, 10, 20, tzinfo=UTC)
    hourly = digest_period(NotificationPreferences(notification_frequency="hourly"), at)
    assert (hourly.start, hourly.due) == (
        datetime(2026, 3, 2, 10, tzinfo=UTC),
        datetime(2026, 3, 2, 11, tzinfo=UTC),
    )
    assert period_label(hourly.key, "UTC") == "hourly, 2026-03-02 10:00 UTC"
    # A daily digest in Berlin is due at local midnight, unless quiet hours run until 07:00
    quiet = QuietHours(start="22:00", end="07:00", timezone="Europe/Berlin")
    daily = digest_period(NotificationPreferences(notification_frequency="daily", quiet_hours=quiet), at)
    assert daily.start == datetime(2026, 3, 1, 23, tzinfo=UTC)
    assert daily.end == datetime(2026, 3, 2, 23, tzinfo=UTC)
    assert daily.due == datetime(2026, 3, 3, 6, tzinfo=UTC)
    assert period_label(daily.key, "Europe/Berlin") == "daily, 2026-03-02 Europe/Berlin"


def test_settings_reject_header_breaking_addresses_and_blank_optionals() -> None:
    from jobtracker_common.errors import ConfigurationError
    from notifier.settings import NotifierSettings

    from tests.support.notifier import NOTIFIER_ENV

    settings = NotifierSettings.from_env(NOTIFIER_ENV)
    assert settings.reply_to_email is None and settings.dashboard_url == "https://dash.example.com"
    with pytest.raises(ConfigurationError, match="SENDER_EMAIL"):
        NotifierSettings.from_env({**NOTIFIER_ENV, "SENDER_EMAIL": "a@example.com\r\nBcc: x@example.com"})
    with pytest.raises(ConfigurationError, match="NOTIFICATIONS_TABLE_NAME"):
        NotifierSettings.from_env({k: v for k, v in NOTIFIER_ENV.items() if k != "NOTIFICATIONS_TABLE_NAME"})
