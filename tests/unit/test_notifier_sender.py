"""SesSender against a fake client: request shape, throttling backoff within budget, error classes."""

from __future__ import annotations

import pytest
from botocore.exceptions import EndpointConnectionError, ReadTimeoutError
from jobtracker_common.errors import PermanentDeliveryError, TransientError
from notifier.render import RenderedEmail
from notifier.sender import Budget, OutcomeUnknownError, SesSender

from tests.support.notifier import RecordingSes, client_error, throttle_every_other

EMAIL = RenderedEmail(subject="NetRaven Job Failed: a\r\nBcc: x@example.com", text="t", html="<p>h</p>")


def sender(ses: RecordingSes, sleeps: list[float] | None = None, reply_to: str | None = None) -> SesSender:
    return SesSender(
        client=ses,  # type: ignore[arg-type]
        sender_email="jobs@example.com",
        product_name="NetRaven",
        reply_to=reply_to,
        sleep=(sleeps.append if sleeps is not None else lambda _s: None),
        jitter=lambda: 1.0,
    )


def test_request_uses_simple_content_with_text_html_and_configured_addresses() -> None:
    ses = RecordingSes()
    assert sender(ses, reply_to="ops@example.com").send("a@example.com", EMAIL) == "m-1"
    (request,) = ses.calls
    assert request["FromEmailAddress"] == "NetRaven <jobs@example.com>"
    assert request["ReplyToAddresses"] == ["ops@example.com"]
    assert request["Destination"] == {"ToAddresses": ["a@example.com"]}
    simple = request["Content"]["Simple"]
    assert simple["Subject"]["Data"] == "NetRaven Job Failed: a Bcc: x@example.com"
    assert simple["Body"]["Text"]["Data"] == "t" and simple["Body"]["Html"]["Data"] == "<p>h</p>"


def test_throttling_is_retried_with_growing_backoff() -> None:
    sleeps: list[float] = []
    ses = RecordingSes(
        fail=lambda n, _r: client_error("Throttling", "Maximum sending rate exceeded.") if n < 4 else None
    )
    assert sender(ses, sleeps).send("a@example.com", EMAIL) == "m-4"
    assert sleeps == [0.2, 0.4, 0.8]


@pytest.mark.parametrize("code", ["Throttling", "TooManyRequestsException", "SomethingElse"])
def test_every_throttling_flavour_is_retried(code: str) -> None:
    message = "Maximum sending rate exceeded." if code == "SomethingElse" else "slow down"
    ses = RecordingSes(fail=lambda n, _r: client_error(code, message) if n == 1 else None)
    assert sender(ses).send("a@example.com", EMAIL) == "m-2"


def test_throttling_gives_up_when_the_budget_would_be_exceeded() -> None:
    # Given SES that always throttles, and an invocation whose clock runs down 1 s per check
    ses = RecordingSes(fail=lambda _n, _r: client_error("Throttling"))
    remaining = [17_000]

    def tick() -> int:
        remaining[0] -= 1_000
        return remaining[0]

    # When sending / Then it stops before the budget is exceeded and reports a transient error
    with pytest.raises(TransientError, match="time budget"):
        sender(ses).send("a@example.com", EMAIL, Budget(remaining_ms=tick))
    assert len(ses.calls) == 1


def test_no_call_is_started_without_time_for_it() -> None:
    ses = RecordingSes()
    with pytest.raises(TransientError, match="no time left"):
        sender(ses).send("a@example.com", EMAIL, Budget(remaining_ms=lambda: 9_000))
    assert ses.calls == []


@pytest.mark.parametrize(
    "code",
    [
        "MessageRejected",
        "MailFromDomainNotVerifiedException",
        "BadRequestException",
    ],
)
def test_permanent_errors_are_not_retried(code: str) -> None:
    ses = RecordingSes(fail=lambda _n, _r: client_error(code, "nope"))
    with pytest.raises(PermanentDeliveryError, match=code):
        sender(ses).send("a@example.com", EMAIL)
    assert len(ses.calls) == 1


@pytest.mark.parametrize("code", ["AccountSuspendedException", "SendingPausedException"])
def test_an_account_wide_pause_is_transient_not_a_permanent_failure(code: str) -> None:
    # Given SES refusing every send because the account's sending is paused
    ses = RecordingSes(fail=lambda _n, _r: client_error(code, "sending paused for this account"))
    # When an email is sent / Then the failure is transient (retried later), not recorded as final
    with pytest.raises(TransientError, match=code):
        sender(ses).send("a@example.com", EMAIL)
    assert len(ses.calls) == 1


def test_unknown_outcome_and_connection_failures_are_told_apart() -> None:
    timeout = RecordingSes(fail=lambda _n, _r: ReadTimeoutError(endpoint_url="https://email"))
    with pytest.raises(OutcomeUnknownError):
        sender(timeout).send("a@example.com", EMAIL)
    unreachable = RecordingSes(fail=lambda _n, _r: EndpointConnectionError(endpoint_url="https://email"))
    with pytest.raises(TransientError):
        sender(unreachable).send("a@example.com", EMAIL)


def test_half_the_calls_throttled_every_email_sent_once() -> None:
    ses = RecordingSes(fail=throttle_every_other)
    s = sender(ses)
    for i in range(10):
        s.send(f"u{i}@example.com", EMAIL)
    assert ses.recipients() == [f"u{i}@example.com" for i in range(10)]
    assert len(ses.calls) == 20
