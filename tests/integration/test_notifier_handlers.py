"""The two Lambda entry points as deployed: settings from the environment, clients built once."""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from jobtracker_common.repositories.users import UsersRepository
from jobtracker_common.settings import load_settings
from notifier import digest, handler, wiring

from tests.conftest import FakeLambdaContext, load_event
from tests.support.aws import REGION
from tests.support.notifier import NOTIFIER_ENV, SENDER, moto_sent_messages


@pytest.fixture
def deployed(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    for key, value in NOTIFIER_ENV.items():
        monkeypatch.setenv(key, value)
    boto3.client("sesv2", region_name=REGION).create_email_identity(EmailIdentity=SENDER)
    for cached in (load_settings, handler.service, wiring.ses_client, digest.service):
        cached.cache_clear()
    yield aws
    for cached in (load_settings, handler.service, wiring.ses_client, digest.service):
        cached.cache_clear()


def test_stream_fixture_sends_failure_and_recovery_emails(deployed: Any) -> None:
    # Given the demo user exists
    UsersRepository(deployed, "UsersTable").get_or_create("demo-user", email="demo@example.com")
    event = load_event("notifier/stream_failed.json")
    # When the fixture batch is handled twice
    for _ in range(2):
        response = handler.lambda_handler(event, FakeLambdaContext(60_000, name="notifier"))  # type: ignore[arg-type]
        assert response == {"batchItemFailures": []}
    # Then moto's SES holds one failure and one recovery email, escaped HTML bodies
    subjects = sorted(m.subject for m in moto_sent_messages())
    assert subjects == [
        "NetRaven Job Failed: backup on core-sw-01",
        "NetRaven Job Recovered: backup on core-sw-01",
    ]
    assert all(m.destinations == {"ToAddresses": ["demo@example.com"]} for m in moto_sent_messages())
    assert any(
        "https://dash.example.com/runs/01JRUN00000000000000000001" in m.body for m in moto_sent_messages()
    )


def test_digest_tick_with_nothing_due_reports_an_empty_run(deployed: Any) -> None:
    report = digest.lambda_handler(
        load_event("notifier/digest_tick.json"), FakeLambdaContext(300_000, name="digest")
    )  # type: ignore[arg-type]
    assert report == {"outcomes": {}, "digests_sent": 0, "errors": [], "failed": []}
    # And a tick that sends nothing never built the SES client (most ticks: a cold start's cost)
    assert wiring.ses_client.cache_info().currsize == 0


def test_the_digest_builds_its_ses_client_on_its_first_send(deployed: Any) -> None:
    # Given the digest's service, built as a cold start builds it
    service = digest.service()
    assert wiring.ses_client.cache_info().currsize == 0
    # When its sender is used, Then the client is the notifier's, retries left to SesSender
    assert service.notifier.sender.client.meta.config.retries == {"total_max_attempts": 1, "mode": "standard"}
    assert wiring.ses_client.cache_info().currsize == 1


def test_a_tick_with_a_failed_digest_ends_in_an_error_after_the_rest(
    deployed: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a tick in which one digest failed for a reason that is not transient
    def one_failed(self: digest.DigestService, budget: Any) -> digest.DigestReport:
        return digest.DigestReport(digests_sent=3, failed=["digest alice hourly#...: ClientError: too large"])

    monkeypatch.setattr(digest.DigestService, "run", one_failed)
    # Then the invocation fails (the function's error alarm), naming it
    with pytest.raises(digest.DigestFailedError, match=r"1 digest.*alice"):
        digest.lambda_handler(
            load_event("notifier/digest_tick.json"), FakeLambdaContext(300_000, name="digest")
        )  # type: ignore[arg-type]
