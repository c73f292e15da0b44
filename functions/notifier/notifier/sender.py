"""SES v2 sending: simple content, throttling retried within the time budget, errors classified.

The SES client is built with botocore retries off (see `wiring.ses_client`), so this module
alone decides how long to keep trying: it never sleeps past the invocation's deadline.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import formataddr
from typing import TYPE_CHECKING, Any

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ReadTimeoutError,
    ResponseStreamingError,
)
from jobtracker_common.errors import JobTrackerError, PermanentDeliveryError, TransientError

from notifier.render import RenderedEmail, header_safe

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client

THROTTLING_CODES = frozenset(
    {"Throttling", "ThrottlingException", "TooManyRequestsException", "LimitExceededException"}
)
#: Errors that no retry can fix: record them on the notification and move on. An account-wide
#: pause or suspension is not one of them: it ends when an operator acts, and failing every
#: notification for good meanwhile would lose them all (they are retried, then dead-lettered).
PERMANENT_CODES = frozenset(
    {
        "MessageRejected",
        "MailFromDomainNotVerifiedException",
        "MailFromDomainNotVerified",
        "NotFoundException",
        "BadRequestException",
        "InvalidParameterValue",
        "ValidationException",
    }
)


class OutcomeUnknownError(JobTrackerError):
    """The request reached SES but no answer came back: it may have been sent. Never resent."""


def _is_throttling(exc: ClientError) -> bool:
    error = exc.response.get("Error", {})
    code = error.get("Code", "")
    return code in THROTTLING_CODES or "maximum sending rate exceeded" in error.get("Message", "").lower()


def _is_permanent(exc: ClientError) -> bool:
    code = exc.response.get("Error", {}).get("Code", "")
    return code in PERMANENT_CODES


@dataclass
class Budget:
    """The invocation's remaining time, minus a reserve for recording the outcome."""

    remaining_ms: Callable[[], int]
    reserve_ms: int = 5_000

    def left_seconds(self) -> float:
        return max(0.0, (self.remaining_ms() - self.reserve_ms) / 1000)


UNLIMITED = Budget(remaining_ms=lambda: 3_600_000)


@dataclass
class SesSender:
    client: SESV2Client
    sender_email: str
    product_name: str
    reply_to: str | None = None
    sleep: Callable[[float], None] = time.sleep
    base_delay: float = 0.2
    max_delay: float = 5.0
    #: One SES call needs at most this long (the client's read timeout); never start one later.
    call_seconds: float = 10.0
    jitter: Callable[[], float] = field(default=random.random)

    def from_address(self) -> str:
        return formataddr((header_safe(self.product_name, 60), self.sender_email))

    def request(self, to: str, email: RenderedEmail) -> dict[str, Any]:
        request: dict[str, Any] = {
            "FromEmailAddress": self.from_address(),
            "Destination": {"ToAddresses": [to]},
            "Content": {
                "Simple": {
                    "Subject": {"Data": header_safe(email.subject), "Charset": "UTF-8"},
                    "Body": {
                        "Text": {"Data": email.text, "Charset": "UTF-8"},
                        "Html": {"Data": email.html, "Charset": "UTF-8"},
                    },
                }
            },
        }
        if self.reply_to:
            request["ReplyToAddresses"] = [self.reply_to]
        return request

    def send(self, to: str, email: RenderedEmail, budget: Budget = UNLIMITED) -> str:
        """Send one email; returns the SES message id.

        Throttling is retried with capped exponential backoff and jitter while the budget lasts,
        then raised as TransientError. Permanent errors raise PermanentDeliveryError.
        """
        request = self.request(to, email)
        attempt = 0
        while True:
            if budget.left_seconds() < self.call_seconds:
                raise TransientError("no time left in this invocation to call SES")
            try:
                response = self.client.send_email(**request)
            except ClientError as exc:
                if _is_permanent(exc):
                    code = exc.response.get("Error", {}).get("Code", "")
                    message = exc.response.get("Error", {}).get("Message", "")
                    raise PermanentDeliveryError(f"{code}: {message}") from exc
                if not _is_throttling(exc):
                    raise TransientError(f"SES error: {exc}") from exc
                delay = min(self.max_delay, self.base_delay * 2**attempt)
                delay = delay / 2 + self.jitter() * delay / 2
                if budget.left_seconds() < delay + self.call_seconds:
                    raise TransientError("SES kept throttling until the time budget ran out") from exc
                self.sleep(delay)
                attempt += 1
                continue
            except (ReadTimeoutError, ConnectionClosedError, ResponseStreamingError) as exc:
                raise OutcomeUnknownError(f"SES did not answer: {exc}") from exc
            except BotoCoreError as exc:  # could not connect: nothing was sent
                raise TransientError(f"SES call failed: {exc}") from exc
            return str(response["MessageId"])
