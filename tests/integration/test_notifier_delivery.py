"""The notifier against moto (DynamoDB + SES v2): exactly-once emails under replays, partial
failures, throttling and permanent errors; header/HTML injection; digests and quiet hours."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from jobtracker_common.models import RunStatus
from jobtracker_common.repositories.notifications import (
    NotificationsRepository,
    NotificationState,
    notification_key,
)
from jobtracker_common.repositories.users import UsersRepository
from jobtracker_common.users import (
    NotificationEvent,
    NotificationPreferences,
    PreferencesPatch,
    QuietHours,
    User,
)
from notifier import digest as digest_module
from notifier import handler
from notifier.digest import DigestService
from notifier.events import RunEvent
from notifier.sender import SesSender
from notifier.service import NotifierService
from notifier.settings import NotifierSettings

from tests.conftest import FakeLambdaContext
from tests.support.aws import REGION
from tests.support.notifier import (
    NOTIFIER_ENV,
    SENDER,
    T0,
    Clock,
    RecordingSes,
    ThrottledUsersTable,
    client_error,
    make_run,
    moto_sent_messages,
    stream_event,
    stream_record,
    throttle_every_other,
)


@dataclass
class World:
    ddb: Any
    ses: RecordingSes
    clock: Clock
    service: NotifierService
    users: UsersRepository
    notifications: NotificationsRepository

    def add_user(self, user_id: str, email: str | None = None, **prefs: Any) -> User:
        user = User(
            user_id=user_id,
            email=email if email is not None else f"{user_id}@example.com",
            preferences=NotificationPreferences.model_validate(prefs),
            created_at=T0,
        )
        return self.users.put(user)

    def deliver(self, *records: dict[str, Any]) -> list[str]:
        """One Lambda invocation; returns the sequence numbers reported as batch item failures."""
        response = handler.handle(stream_event(*records), FakeLambdaContext(60_000), self.service)  # type: ignore[arg-type]
        return [f["itemIdentifier"] for f in response["batchItemFailures"]]

    def sent(self) -> Counter[tuple[str, str]]:
        return Counter(zip(self.ses.recipients(), self.ses.subjects(), strict=True))


@pytest.fixture
def world(aws: Any, monkeypatch: pytest.MonkeyPatch) -> World:
    for key, value in NOTIFIER_ENV.items():
        monkeypatch.setenv(key, value)
    settings = NotifierSettings.from_env()
    sesv2 = boto3.client("sesv2", region_name=REGION)
    sesv2.create_email_identity(EmailIdentity=SENDER)
    ses = RecordingSes(inner=sesv2)
    clock = Clock()
    users = UsersRepository(aws, settings.users_table_name, clock=clock)
    notifications = NotificationsRepository(aws, settings.notifications_table_name)
    sender = SesSender(
        client=ses,  # type: ignore[arg-type]
        sender_email=settings.sender_email,
        product_name=settings.product_name,
        sleep=lambda _s: None,
        jitter=lambda: 0.5,
    )
    service = NotifierService(
        users=users, notifications=notifications, sender=sender, settings=settings, clock=clock
    )
    return World(aws, ses, clock, service, users, notifications)


def test_a_batch_replayed_three_times_sends_one_email_per_run_event_and_recipient(world: World) -> None:
    # Given an owner and a subscriber, and a batch of three run transitions
    world.add_user("owner")
    world.add_user("sub", email_on_job_retry=True)
    runs = [
        make_run(RunStatus.FAILED, run_id=f"01RUN00000000000000000000{i}", subscribers=["sub"])
        for i in range(3)
    ]
    retrying = make_run(RunStatus.RETRYING, run_id="01RUN0000000000000000000R1", subscribers=["sub"])
    batch = [stream_record(r) for r in [*runs, retrying]]
    # When the same batch is delivered three times
    for _ in range(3):
        assert world.deliver(*batch) == []
    # Then each (run, event, recipient) got exactly one email: 3 failures x 2 + 1 retry to the subscriber
    assert len(world.ses.delivered) == 7
    keys = Counter(
        (
            r["Destination"]["ToAddresses"][0],
            r["Content"]["Simple"]["Body"]["Text"]["Data"].split("Run id: ")[1][:26],
        )
        for r in world.ses.delivered
    )
    assert set(keys.values()) == {1}
    # And moto's SES backend received the same 7 messages
    assert len(moto_sent_messages()) == 7


def test_middle_record_fails_then_retry_sends_each_email_once(world: World) -> None:
    # Given three failed runs, and SES failing transiently for the middle one's first send
    world.add_user("owner")
    runs = [
        make_run(RunStatus.FAILED, run_id=f"01RUN00000000000000000000{i}", job_name=f"job-{i}")
        for i in range(3)
    ]
    records = [stream_record(r) for r in runs]

    failed_once: list[str] = []

    def fail_job_1_once(_n: int, request: dict[str, Any]) -> Exception | None:
        if "job-1" in request["Content"]["Simple"]["Subject"]["Data"] and not failed_once:
            failed_once.append("job-1")
            return client_error("InternalFailure", "SES had a bad moment")
        return None

    world.ses.fail = fail_job_1_once
    # When the batch is delivered
    failures = world.deliver(*records)
    # Then exactly the middle record's sequence number is reported
    assert failures == [records[1]["dynamodb"]["SequenceNumber"]]
    # And its notification is pending (retryable), the others sent
    assert [r.state for r in world.notifications.list_for_run(runs[1].run_id)] == [NotificationState.PENDING]
    assert [r.state for r in world.notifications.list_for_run(runs[2].run_id)] == [NotificationState.SENT]
    # When Lambda retries from the failed record on (records 2 and 3)
    assert world.deliver(*records[1:]) == []
    # Then every run produced exactly one email
    assert sorted(world.ses.subjects()) == sorted(
        f"NetRaven Job Failed: job-{i} on core-sw-01" for i in range(3)
    )


def test_throttling_on_half_the_calls_still_delivers_every_email_once(world: World) -> None:
    # Given ten recipients and SES throttling every other call
    subscribers = [f"user{i}" for i in range(9)]
    for user_id in ["owner", *subscribers]:
        world.add_user(user_id)
    world.ses.fail = throttle_every_other
    run = make_run(RunStatus.FAILED, subscribers=subscribers)
    # When the run's failure is delivered (twice, as at-least-once delivery may)
    assert world.deliver(stream_record(run)) == []
    assert world.deliver(stream_record(run)) == []
    # Then every recipient got exactly one email, after throttled attempts were retried
    assert Counter(world.ses.recipients()) == Counter(f"{u}@example.com" for u in ["owner", *subscribers])
    assert len(world.ses.calls) == 20
    assert all(r.state is NotificationState.SENT for r in world.notifications.list_for_run(run.run_id))


def test_throttling_beyond_the_time_budget_becomes_a_batch_item_failure(world: World) -> None:
    # Given SES that throttles every call and an invocation with little time left
    world.add_user("owner")
    world.ses.fail = lambda _n, _r: client_error("Throttling", "Maximum sending rate exceeded.")
    record = stream_record(make_run(RunStatus.FAILED))
    # When the record is processed with 14 s left (10 s per call + 5 s reserve)
    response = handler.handle(stream_event(record), FakeLambdaContext(16_000), world.service)  # type: ignore[arg-type]
    # Then it is reported for retry rather than sleeping past the deadline
    assert [f["itemIdentifier"] for f in response["batchItemFailures"]] == [
        record["dynamodb"]["SequenceNumber"]
    ]
    # And a later delivery with SES healthy again sends it once
    world.ses.fail = lambda _n, _r: None
    assert world.deliver(record) == []
    assert world.ses.recipients() == ["owner@example.com"]


def test_a_permanent_error_is_recorded_and_the_rest_of_the_batch_succeeds(world: World) -> None:
    # Given a recipient whose address SES rejects for good, and two healthy ones
    world.add_user("owner")
    world.add_user("bad", email="bad@example.com")
    world.add_user("ok")
    world.ses.fail = lambda _n, r: (
        client_error("MessageRejected", "Email address is not verified.")
        if r["Destination"]["ToAddresses"] == ["bad@example.com"]
        else None
    )
    run = make_run(RunStatus.FAILED, subscribers=["bad", "ok"])
    other = make_run(RunStatus.COMPLETED, run_id="01RUN0000000000000000000B2")
    # When the batch is delivered twice
    for _ in range(2):
        assert world.deliver(stream_record(run), stream_record(other)) == []
    # Then the rejection is recorded, never retried, and the others got their email once
    records = {r.user_id: r for r in world.notifications.list_for_run(run.run_id)}
    assert records["bad"].state is NotificationState.FAILED_PERMANENT
    assert "MessageRejected" in (records["bad"].error or "")
    assert [c["Destination"]["ToAddresses"][0] for c in world.ses.calls].count("bad@example.com") == 1
    assert Counter(world.ses.recipients()) == Counter(
        ["owner@example.com", "ok@example.com", "owner@example.com"]
    )


def test_unprovisioned_recipients_are_skipped_and_recorded(world: World) -> None:
    # Given a subscriber who never signed in and one without an email
    world.add_user("owner")
    world.users.put(User(user_id="noemail", created_at=T0))
    run = make_run(RunStatus.FAILED, subscribers=["ghost", "noemail"])
    # When the failure is delivered
    assert world.deliver(stream_record(run)) == []
    # Then only the owner is emailed and the skips are on record with a reason
    assert world.ses.recipients() == ["owner@example.com"]
    records = {r.user_id: r for r in world.notifications.list_for_run(run.run_id)}
    assert records["ghost"].state is NotificationState.SKIPPED
    assert records["ghost"].reason == "user not provisioned"
    assert records["noemail"].reason == "user has no email address"


def test_a_hostile_job_name_cannot_inject_headers_or_html(world: World) -> None:
    # Given a job whose name and error try to add a Bcc header and markup
    world.add_user("owner")
    hostile = "<b>x</b>\r\nBcc: evil@example.com"
    run = make_run(
        RunStatus.FAILED,
        job_name=hostile,
        target="sw\r\nX-Evil: 1",
        error={"type": "E", "message": "<script>alert(1)</script>"},
    )
    # When it is delivered
    assert world.deliver(stream_record(run)) == []
    # Then the one request has a single-line subject and no extra recipients
    (request,) = world.ses.delivered
    subject = request["Content"]["Simple"]["Subject"]["Data"]
    assert "\r" not in subject and "\n" not in subject
    assert subject == "NetRaven Job Failed: <b>x</b> Bcc: evil@example.com on sw X-Evil: 1"
    assert request["Destination"] == {"ToAddresses": ["owner@example.com"]}
    assert set(request) == {"FromEmailAddress", "Destination", "Content"}
    # And the HTML part is escaped
    html = request["Content"]["Simple"]["Body"]["Html"]["Data"]
    assert "<b>x</b>" not in html and "&lt;b&gt;x&lt;/b&gt;" in html
    assert "<script>" not in html and "&lt;script&gt;" in html
    # And what moto's SES stored has the same single-line subject and one destination
    (stored,) = moto_sent_messages()
    assert "\n" not in stored.subject and stored.destinations == {"ToAddresses": ["owner@example.com"]}


def test_recovery_is_announced_once_to_users_who_want_it(world: World) -> None:
    # Given an owner with recovery on and a subscriber with recovery off but completions on
    world.add_user("owner", email_on_job_completion=False)
    world.add_user("sub", email_on_job_recovery=False)
    run = make_run(RunStatus.COMPLETED, previous_status=RunStatus.FAILED, subscribers=["sub"])
    # When the first success after a failure arrives
    assert world.deliver(stream_record(run, old=make_run(RunStatus.RUNNING, finished_at=None))) == []
    # Then the owner hears "recovered", the subscriber an ordinary completion
    assert sorted(world.sent()) == [
        ("owner@example.com", "NetRaven Job Recovered: backup on core-sw-01"),
        ("sub@example.com", "NetRaven Job Completed: backup on core-sw-01"),
    ]


def test_three_failures_in_an_hour_give_one_hourly_digest(world: World) -> None:
    # Given an hourly-digest user and three failures within 10:00-11:00 UTC
    world.add_user("owner", notification_frequency="hourly")
    digest = DigestService(world.service)
    for i, minute in enumerate((5, 20, 50)):
        world.clock.now = T0.replace(minute=minute)
        run = make_run(RunStatus.FAILED, run_id=f"01RUN00000000000000000000{i}", job_name=f"job-{i}")
        assert world.deliver(stream_record(run)) == []
    # Then nothing is sent immediately, and a tick before the period ends sends nothing either
    assert world.ses.delivered == []
    world.clock.now = T0.replace(minute=59)
    assert digest.run().digests_sent == 0
    # When the digest function ticks after 11:00 (twice, as a retried schedule might)
    world.clock.now = T0.replace(hour=11, minute=2)
    assert digest.run().digests_sent == 1
    assert digest.run().digests_sent == 0
    # Then exactly one digest lists all three failures
    (request,) = world.ses.delivered
    assert (
        request["Content"]["Simple"]["Subject"]["Data"]
        == "NetRaven Job Digest (hourly, 2026-03-02 10:00 UTC): 3 updates"
    )
    text = request["Content"]["Simple"]["Body"]["Text"]["Data"]
    assert all(f"job-{i}" in text for i in range(3))
    assert "Job Failed: 3" in text
    # And the items left the due index
    assert list(world.notifications.list_due(world.clock.now)) == []


def test_quiet_hours_hold_then_release_when_the_window_ends(world: World) -> None:
    # Given a user with quiet hours 22:00-07:00 Berlin (UTC+1), and a failure at 23:30 Berlin
    world.add_user("owner", quiet_hours=QuietHours(start="22:00", end="07:00", timezone="Europe/Berlin"))
    digest = DigestService(world.service)
    world.clock.now = T0.replace(hour=22, minute=30)
    run = make_run(RunStatus.FAILED)
    assert world.deliver(stream_record(run)) == []
    # Then it is held, not sent, also on a tick inside the window
    (record,) = world.notifications.list_for_run(run.run_id)
    assert record.state is NotificationState.HELD and record.due_at == "2026-03-03T06:00:00.000Z"
    world.clock.now = T0.replace(day=3, hour=5, minute=55)
    digest.run()
    assert world.ses.delivered == []
    # When the first tick after 07:00 Berlin runs (and a replay of the record arrives)
    world.clock.now = T0.replace(day=3, hour=6, minute=1)
    digest.run()
    digest.run()
    assert world.deliver(stream_record(run)) == []
    # Then the held email went out exactly once
    assert world.ses.subjects() == ["NetRaven Job Failed: backup on core-sw-01"]
    (record,) = world.notifications.list_for_run(run.run_id)
    assert record.state is NotificationState.SENT


def test_a_crash_between_send_and_record_never_sends_again(world: World) -> None:
    # Given a send that SES accepted but whose outcome was never recorded (the worker died)
    world.add_user("owner")
    run = make_run(RunStatus.FAILED)
    original = world.notifications.mark_sent
    world.notifications.mark_sent = lambda *a, **k: (_ for _ in ()).throw(SystemExit("killed"))  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        world.service.notify(RunEvent(run=run, event=NotificationEvent.FAILED))
    world.notifications.mark_sent = original  # type: ignore[method-assign]
    assert len(world.ses.delivered) == 1
    # When the record is redelivered, before and after the lease expires, and the sweep runs
    assert world.deliver(stream_record(run)) == []
    world.clock.advance(hours=1)
    DigestService(world.service).run()
    assert world.deliver(stream_record(run)) == []
    # Then no second email went out and the record says the outcome is unconfirmed
    assert len(world.ses.delivered) == 1
    (record,) = world.notifications.list_for_run(run.run_id)
    assert record.state is NotificationState.UNCONFIRMED


def test_an_event_arriving_after_its_digest_went_out_gets_a_follow_up_digest(world: World) -> None:
    # Given an hourly user whose 10:00 digest was already sent with one failure in it
    world.add_user("owner", notification_frequency="hourly")
    digest = DigestService(world.service)
    world.clock.now = T0.replace(minute=10)
    assert world.deliver(stream_record(make_run(RunStatus.FAILED, run_id="01RUN0000000000000000000L1"))) == []
    world.clock.now = T0.replace(hour=11, minute=1)
    assert digest.run().digests_sent == 1
    # When a record for the same period is processed late (stream lag) and queued into 10:00
    world.clock.now = T0.replace(minute=59)
    late = make_run(RunStatus.FAILED, run_id="01RUN0000000000000000000L2", job_name="late-job")
    assert world.deliver(stream_record(late)) == []
    world.clock.now = T0.replace(hour=11, minute=6)
    digest.run()
    digest.run()
    # Then it goes out once, in a follow-up digest, and the first digest is not repeated
    subjects = world.ses.subjects()
    assert len(subjects) == 2 and subjects[0].endswith(": 1 update") and subjects[1].endswith(": 1 update")
    assert "late-job" in world.ses.delivered[1]["Content"]["Simple"]["Body"]["Text"]["Data"]
    assert list(world.notifications.list_due(world.clock.now)) == []


def test_a_crash_after_a_digest_was_sent_never_sends_it_again(world: World) -> None:
    # Given two queued failures, and a digest tick that dies right after SES accepted the digest
    world.add_user("owner", notification_frequency="hourly")
    for i in range(2):
        world.clock.now = T0.replace(minute=10 + i)
        assert (
            world.deliver(stream_record(make_run(RunStatus.FAILED, run_id=f"01RUN0000000000000000000C{i}")))
            == []
        )
    world.clock.now = T0.replace(hour=11, minute=1)
    original = world.notifications.mark_sent
    world.notifications.mark_sent = lambda *a, **k: (_ for _ in ()).throw(SystemExit("killed"))  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        DigestService(world.service).run()
    world.notifications.mark_sent = original  # type: ignore[method-assign]
    # When later ticks run, before and after the claim's lease expired
    world.clock.advance(minutes=5)
    DigestService(world.service).run()
    world.clock.advance(minutes=30)
    DigestService(world.service).run()
    DigestService(world.service).run()
    # Then the digest went out once, is recorded unconfirmed, and its items are settled
    assert len(world.ses.delivered) == 1
    assert list(world.notifications.list_due(world.clock.now)) == []
    record = world.notifications.get("DIGEST#owner", "hourly#2026-03-02T10:00:00.000Z")
    assert record is not None and record.state is NotificationState.UNCONFIRMED


def test_a_send_that_keeps_failing_is_given_up_and_recorded(world: World) -> None:
    # Given SES failing transiently forever for one recipient
    world.add_user("owner")
    world.ses.fail = lambda _n, _r: client_error("InternalFailure", "down")
    record = stream_record(make_run(RunStatus.FAILED))
    # When the record is retried many times (as Lambda and the sweep would)
    for _ in range(12):
        world.deliver(record)
    # Then it stopped after the attempt limit and says so
    (notification,) = world.notifications.list_for_run(make_run().run_id)
    assert notification.state is NotificationState.FAILED_PERMANENT
    assert "gave up after 8 attempts" in (notification.error or "")
    assert len(world.ses.calls) == 8


def test_switching_an_event_off_while_it_waits_cancels_it(world: World) -> None:
    # Given a failure held by quiet hours and a failure queued for an hourly digest
    world.add_user("night", quiet_hours=QuietHours(start="22:00", end="07:00", timezone="UTC"))
    world.add_user("hourly", notification_frequency="hourly")
    world.clock.now = T0.replace(hour=23)
    run = make_run(RunStatus.FAILED, owner_id="night", subscribers=["hourly"])
    assert world.deliver(stream_record(run)) == []
    # When both users switch failure emails off before their time comes
    for user_id in ("night", "hourly"):
        world.users.update_preferences(user_id, PreferencesPatch(email_on_job_failure=False))
    world.clock.now = T0.replace(day=3, hour=7, minute=1)
    report = DigestService(world.service).run()
    # Then nothing is sent and both records say why
    assert world.ses.delivered == []
    assert report.outcomes == {"skipped": 2}
    reasons = {r.user_id: (r.state, r.reason) for r in world.notifications.list_for_run(run.run_id)}
    assert reasons == {
        "night": (NotificationState.SKIPPED, "preferences changed while waiting"),
        "hourly": (NotificationState.SKIPPED, "preferences changed while waiting"),
    }


def count_calls(client: Any) -> Counter[str]:
    """Every DynamoDB operation `client` makes from now on, by name."""
    calls: Counter[str] = Counter()
    client.meta.events.register("before-call.dynamodb", lambda model, **_: calls.update([model.name]))
    return calls


def failed_runs(count: int, **overrides: Any) -> list[Any]:
    return [
        make_run(RunStatus.FAILED, run_id=f"01RUN000000000000000000{i:03d}", job_name=f"job-{i}", **overrides)
        for i in range(count)
    ]


def test_a_batch_reads_its_users_once_and_records_sent_emails_together(world: World) -> None:
    # Given 30 failed runs of three owners (more than one BatchWriteItem page of 25)
    for owner in ("a", "b", "c"):
        world.add_user(owner)
    runs = [
        make_run(RunStatus.FAILED, run_id=r.run_id, owner_id="abc"[i % 3])
        for i, r in enumerate(failed_runs(30))
    ]
    calls = count_calls(world.ddb)
    # When they arrive in one batch
    assert world.deliver(*[stream_record(r) for r in runs]) == []
    # Then the users were read once, each email claimed once, and the 30 outcomes written in 2 calls
    assert calls == Counter({"PutItem": 30, "BatchWriteItem": 2, "BatchGetItem": 1})
    assert len(world.ses.delivered) == 30
    for run in runs:
        (record,) = world.notifications.list_for_run(run.run_id)
        assert record.state is NotificationState.SENT
        assert record.message_id and record.lease_until is None and record.due_at is None


def test_a_crash_before_the_batch_of_outcomes_is_written_never_sends_again(world: World) -> None:
    # Given emails SES accepted whose batched `sent` was never written (the worker died)
    world.add_user("owner")
    runs = failed_runs(3)
    records = [stream_record(r) for r in runs]

    def killed(*_a: Any, **_k: Any) -> Any:
        raise SystemExit("killed")

    world.notifications.put_outcomes = killed  # type: ignore[method-assign]
    with pytest.raises(SystemExit):
        world.deliver(*records)
    del world.notifications.put_outcomes
    assert len(world.ses.delivered) == 3
    # When the batch is redelivered, before and after the lease expires, and the sweep runs
    assert world.deliver(*records) == []
    world.clock.advance(hours=1)
    DigestService(world.service).run()
    assert world.deliver(*records) == []
    # Then no second email went out and each record says the outcome is unconfirmed
    assert len(world.ses.delivered) == 3
    for run in runs:
        (record,) = world.notifications.list_for_run(run.run_id)
        assert record.state is NotificationState.UNCONFIRMED


def test_outcomes_the_batch_write_cannot_take_are_written_one_by_one(world: World) -> None:
    # Given a BatchWriteItem that fails outright
    world.add_user("owner")
    runs = failed_runs(2)

    def unavailable(*_a: Any, **_k: Any) -> Any:
        raise client_error("InternalServerError", "try again", "BatchWriteItem")

    world.notifications.put_outcomes = unavailable  # type: ignore[method-assign]
    calls = count_calls(world.ddb)
    # When the batch is delivered
    assert world.deliver(*[stream_record(r) for r in runs]) == []
    # Then each outcome was written by its own conditional update instead
    assert calls["UpdateItem"] == 2
    for run in runs:
        (record,) = world.notifications.list_for_run(run.run_id)
        assert record.state is NotificationState.SENT


def test_sent_emails_whose_outcome_cannot_be_written_are_neither_retried_nor_resent(world: World) -> None:
    # Given a table that takes claims but refuses every outcome write
    world.add_user("owner")
    record = stream_record(make_run(RunStatus.FAILED))

    def unavailable(*_a: Any, **_k: Any) -> Any:
        raise client_error("InternalServerError", "try again", "UpdateItem")

    world.notifications.put_outcomes = unavailable  # type: ignore[method-assign]
    world.notifications.mark_sent = unavailable  # type: ignore[method-assign]
    # When the record is delivered, then again with the table healthy
    assert world.deliver(record) == []  # a retry could not help: the claim forbids a resend
    del world.notifications.put_outcomes, world.notifications.mark_sent
    assert world.deliver(record) == []
    # Then one email went out, and its record is still the claim (the sweep will settle it)
    assert len(world.ses.delivered) == 1
    (notification,) = world.notifications.list_for_run(make_run().run_id)
    assert notification.state is NotificationState.SENDING


def test_when_the_batch_cannot_read_its_users_each_record_reads_its_own(world: World) -> None:
    # Given a users read that fails once (for the whole batch), then works
    world.add_user("owner")
    runs = failed_runs(2)
    original = world.users.get_many
    failures = iter([client_error("ProvisionedThroughputExceededException", "slow down", "BatchGetItem")])

    def flaky(user_ids: Any) -> Any:
        if (error := next(failures, None)) is not None:
            raise error
        return original(user_ids)

    world.users.get_many = flaky  # type: ignore[method-assign]
    # When the batch is delivered
    assert world.deliver(*[stream_record(r) for r in runs]) == []
    # Then every record was still served
    assert sorted(world.ses.subjects()) == [f"NetRaven Job Failed: job-{i} on core-sw-01" for i in range(2)]


def test_a_released_claim_keeps_what_the_retry_must_render(world: World) -> None:
    # Given a claim whose send failed transiently (claims are written without the email's content)
    world.add_user("owner")
    run = make_run(RunStatus.FAILED, job_name="nightly <backup>")
    world.ses.fail = lambda n, _r: client_error("InternalFailure", "down") if n == 1 else None
    record = stream_record(run)
    assert world.deliver(record) == [record["dynamodb"]["SequenceNumber"]]
    # Then the released record holds the snapshot, and the retry renders the same email from it
    (pending,) = world.notifications.list_for_run(run.run_id)
    assert pending.state is NotificationState.PENDING
    assert pending.payload["job_name"] == "nightly <backup>"
    assert world.deliver(record) == []
    assert world.ses.subjects() == ["NetRaven Job Failed: nightly <backup> on core-sw-01"]
    assert "nightly &lt;backup&gt;" in world.ses.delivered[0]["Content"]["Simple"]["Body"]["Html"]["Data"]


def test_released_held_emails_cost_a_claim_each_and_their_outcomes_one_write(world: World) -> None:
    # Given five failures held by quiet hours
    world.add_user("owner", quiet_hours=QuietHours(start="22:00", end="07:00", timezone="UTC"))
    world.clock.now = T0.replace(hour=23)
    runs = failed_runs(5)
    assert world.deliver(*[stream_record(r) for r in runs]) == []
    world.clock.now = T0.replace(day=3, hour=7, minute=1)
    calls = count_calls(world.ddb)
    # When the digest tick after the window releases them
    report = DigestService(world.service).run()
    # Then each was claimed (no second read after the due-index query) and the five outcomes
    # were written in one call
    assert report.outcomes == {"sent": 5}
    assert calls == Counter({"Query": 4, "BatchGetItem": 1, "UpdateItem": 5, "BatchWriteItem": 1})
    for run in runs:
        (record,) = world.notifications.list_for_run(run.run_id)
        assert (record.state, record.due_at, record.send_attempts) == (NotificationState.SENT, None, 1)
        assert record.payload["run_id"] == run.run_id


def test_users_that_cannot_be_read_are_retried_not_skipped(world: World) -> None:
    # Given an owner, and a users table that throttles every read for one delivery
    world.add_user("owner")
    record = stream_record(make_run(RunStatus.FAILED))
    healthy = world.service.users
    world.service.users = UsersRepository(
        ThrottledUsersTable(world.ddb, times=99), "UsersTable", sleep=lambda _s: None
    )  # type: ignore[arg-type]
    # When the record is delivered
    failures = world.deliver(record)
    # Then it is reported for retry, with no "not provisioned" record written for the owner
    assert failures == [record["dynamodb"]["SequenceNumber"]]
    assert world.notifications.list_for_run(make_run().run_id) == []
    # And the retry with the table healthy again sends the email once
    world.service.users = healthy
    assert world.deliver(record) == []
    assert world.ses.recipients() == ["owner@example.com"]


def test_a_digest_tick_that_cannot_read_users_leaves_everything_due(world: World) -> None:
    # Given a held failure whose window has ended, and a users table throttling every read
    world.add_user("owner", quiet_hours=QuietHours(start="22:00", end="07:00", timezone="UTC"))
    world.clock.now = T0.replace(hour=23)
    run = make_run(RunStatus.FAILED)
    assert world.deliver(stream_record(run)) == []
    world.clock.now = T0.replace(day=3, hour=7, minute=1)
    healthy = world.service.users
    world.service.users = UsersRepository(
        ThrottledUsersTable(world.ddb, times=99),  # type: ignore[arg-type]
        "UsersTable",
        sleep=lambda _s: None,
    )
    # When a tick runs, then the next one with the table healthy
    report = DigestService(world.service).run()
    assert report.errors and report.outcomes == {}
    world.service.users = healthy
    # Then the first left the record held (not cancelled as "user no longer exists"), the next sent it
    assert DigestService(world.service).run().outcomes == {"sent": 1}
    assert world.ses.recipients() == ["owner@example.com"]


def test_a_record_duplicated_inside_one_batch_sends_one_email(world: World) -> None:
    # Given a batch that carries the same transition twice (its `sent` not yet written between them)
    world.add_user("owner")
    record = stream_record(make_run(RunStatus.FAILED))
    # When it is delivered
    assert world.deliver(record, record) == []
    # Then one email went out and the record says sent
    assert len(world.ses.delivered) == 1
    (notification,) = world.notifications.list_for_run(make_run().run_id)
    assert notification.state is NotificationState.SENT


def test_a_failed_send_whose_record_was_dead_lettered_is_sent_by_the_next_tick(world: World) -> None:
    # Given a send that failed transiently, and a stream record that is never redelivered (DLQ)
    world.add_user("owner")
    run = make_run(RunStatus.FAILED, job_name="nightly <backup>")
    world.ses.fail = lambda n, _r: client_error("InternalFailure", "down") if n == 1 else None
    record = stream_record(run)
    assert world.deliver(record) == [record["dynamodb"]["SequenceNumber"]]
    digest = DigestService(world.service)
    # When the digest function ticks before and after the retry time
    assert digest.run().outcomes == {}
    world.clock.advance(minutes=2)
    assert digest.run().outcomes == {"sent": 1}
    assert digest.run().outcomes == {}
    # Then the email went out once, rendered from what the released claim kept
    assert world.ses.subjects() == ["NetRaven Job Failed: nightly <backup> on core-sw-01"]
    (notification,) = world.notifications.list_for_run(run.run_id)
    assert (notification.state, notification.send_attempts) == (NotificationState.SENT, 2)


# ---- quiet hours judged as instants and by the user's current settings; digest limits ----
BERLIN_NIGHT = QuietHours(start="23:00", end="02:30", timezone="Europe/Berlin")
# 2026-10-25 in Berlin: 03:00 CEST -> 02:00 CET; 02:00-02:59 is read twice (00:xxZ, then 01:xxZ).
FALL_BACK = datetime(2026, 10, 25, tzinfo=UTC)


def _tick_every_5_minutes(world: World, start: datetime, end: datetime, **failures: datetime) -> list[str]:
    """Deliver a failed run per name at its time, run the digest every 5 minutes; the times
    (HH:MM UTC) at which emails went out."""
    digest = DigestService(world.service)
    sent_at: list[str] = []
    now = start
    while now <= end:
        world.clock.now = now
        for n, (name, at) in enumerate(sorted(failures.items())):
            if at == now:
                run = make_run(RunStatus.FAILED, run_id=f"01RUN0000000000000000000Q{n}", job_name=name)
                assert world.deliver(stream_record(run)) == []
        before = len(world.ses.delivered)
        digest.run()
        sent_at += [now.strftime("%H:%M")] * (len(world.ses.delivered) - before)
        now += timedelta(minutes=5)
    return sent_at


def test_a_held_email_is_not_released_in_the_repeated_hour_of_quiet_hours(world: World) -> None:
    world.add_user("owner", quiet_hours=BERLIN_NIGHT)
    world.clock.now = FALL_BACK.replace(hour=1, minute=10)  # 02:10 CET, the second 02:10
    assert world.deliver(stream_record(make_run(RunStatus.FAILED))) == []
    sent_at = _tick_every_5_minutes(world, FALL_BACK.replace(hour=1, minute=15), FALL_BACK.replace(hour=2))
    assert sent_at == ["01:30"]  # 02:30 CET


def test_one_hourly_digest_per_period_across_the_night_clocks_go_back(world: World) -> None:
    world.add_user("owner", notification_frequency="hourly", quiet_hours=BERLIN_NIGHT)
    at = {f"job-{m}": FALL_BACK.replace(minute=m) for m in (10, 40, 50)}
    sent_at = _tick_every_5_minutes(world, FALL_BACK, FALL_BACK.replace(hour=2), **at)
    assert sent_at == ["01:30"], world.ses.subjects()


def test_a_held_email_waits_for_the_quiet_hours_the_user_has_now(world: World) -> None:
    world.add_user("owner", quiet_hours=QuietHours(start="22:00", end="06:00", timezone="UTC"))
    world.clock.now = datetime(2026, 3, 2, 23, 0, tzinfo=UTC)
    assert world.deliver(stream_record(make_run(RunStatus.FAILED))) == []
    world.users.update_preferences(
        "owner",
        PreferencesPatch.model_validate(
            {"quiet_hours": {"start": "22:00", "end": "08:00", "timezone": "UTC"}}
        ),
    )
    sent_at = _tick_every_5_minutes(
        world, datetime(2026, 3, 3, 5, 55, tzinfo=UTC), datetime(2026, 3, 3, 8, 10, tzinfo=UTC)
    )
    assert sent_at == ["08:00"]


def test_quiet_hours_set_during_a_digest_period_give_one_digest_at_their_end(world: World) -> None:
    world.add_user("owner", notification_frequency="hourly")
    digest = DigestService(world.service)
    world.clock.now = datetime(2026, 3, 2, 10, 5, tzinfo=UTC)
    assert world.deliver(stream_record(make_run(RunStatus.FAILED, run_id="01RUN0000000000000000000QA"))) == []
    digest.run()
    world.users.update_preferences(
        "owner",
        PreferencesPatch.model_validate(
            {"quiet_hours": {"start": "10:30", "end": "12:00", "timezone": "UTC"}}
        ),
    )
    sent_at = _tick_every_5_minutes(
        world,
        datetime(2026, 3, 2, 10, 40, tzinfo=UTC),
        datetime(2026, 3, 2, 13, 0, tzinfo=UTC),
        b=datetime(2026, 3, 2, 10, 40, tzinfo=UTC),
    )
    assert sent_at == ["12:00"], world.ses.subjects()
    (subject,) = world.ses.subjects()
    assert subject.endswith("2 updates"), subject


def test_a_digest_lists_no_more_keys_than_its_record_holds_the_rest_follow_up(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.add_user("owner", notification_frequency="hourly")
    t0 = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
    one_key = len("|".join(notification_key("01RUN0000000000000000000Q0", "failed", 1, "owner"))) + 4
    monkeypatch.setattr(digest_module, "DIGEST_KEY_BYTES", one_key * 4)  # 4 keys per digest
    failures = {f"job-{n}": t0 + timedelta(minutes=5 + n // 3 * 5) for n in range(10)}
    sent_at = _tick_every_5_minutes(
        world, t0 + timedelta(minutes=5), t0 + timedelta(hours=1, minutes=30), **failures
    )
    assert sent_at == ["11:00", "11:05", "11:10"], sent_at
    states = {
        r.state for n in range(10) for r in world.notifications.list_for_run(f"01RUN0000000000000000000Q{n}")
    }
    assert states == {NotificationState.DIGESTED}


def test_one_failing_digest_does_not_hold_back_the_others_and_the_tick_fails(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    world.add_user("alice", notification_frequency="hourly")
    world.add_user("bob", notification_frequency="hourly")
    world.clock.now = datetime(2026, 3, 2, 10, 5, tzinfo=UTC)
    for n, owner in enumerate(("alice", "bob")):
        run = make_run(RunStatus.FAILED, run_id=f"01RUN0000000000000000000Z{n}", owner_id=owner)
        assert world.deliver(stream_record(run)) == []
    create = world.notifications.create

    def refuse_alices_digest(record: Any) -> bool:
        if record.entity == "digest" and record.user_id == "alice":
            raise ClientError(
                {
                    "Error": {
                        "Code": "ValidationException",
                        "Message": "Item size has exceeded the maximum allowed size",
                    }
                },
                "PutItem",
            )
        return create(record)

    monkeypatch.setattr(world.notifications, "create", refuse_alices_digest)
    world.clock.now = datetime(2026, 3, 2, 11, 1, tzinfo=UTC)
    report = DigestService(world.service).run()
    assert world.ses.recipients() == ["bob@example.com"]
    assert (
        len(report.failed) == 1 and "alice" in report.failed[0] and "ValidationException" in report.failed[0]
    )


def test_a_held_email_goes_out_although_no_tick_falls_into_a_short_gap_between_windows(
    world: World,
) -> None:
    # Given quiet hours 06:03 -> 06:00 UTC (a 3-minute gap) and a failure held until 06:00
    world.add_user("owner", quiet_hours=QuietHours(start="06:03", end="06:00", timezone="UTC"))
    world.clock.now = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
    assert world.deliver(stream_record(make_run(RunStatus.FAILED))) == []
    # When the 5-minute tick runs at :03, :08, ... (never inside the gap) for two days
    sent_at = _tick_every_5_minutes(
        world, datetime(2026, 3, 2, 12, 3, tzinfo=UTC), datetime(2026, 3, 4, 12, 0, tzinfo=UTC)
    )
    # Then it goes out at the first tick after its time, not postponed day after day
    assert sent_at == ["06:03"]
