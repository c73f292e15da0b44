"""Domain errors. They become HTTP codes or batch failures only at the edge, in one place each."""

from __future__ import annotations

from typing import Any


def clip(text: str, limit: int) -> str:
    """`text` cut to `limit` characters ("..." marks the cut): messages quote request values,
    which may be arbitrarily long."""
    return text if len(text) <= limit else text[: limit - 3] + "..."


class JobTrackerError(Exception):
    """Base of every domain error."""

    def __init__(self, message: str, *, details: list[dict[str, Any]] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


class ConfigurationError(JobTrackerError):
    """The function's environment is missing or invalid (a deploy bug, never retried away)."""


class ValidationError(JobTrackerError):
    """Input that can never succeed (bad event, bad params, bad schedule)."""


class NotFoundError(JobTrackerError):
    """The thing asked for does not exist (or is not visible to the caller)."""


class ConflictError(JobTrackerError):
    """A conditional write lost: the item changed state or version under us."""


class InvalidTransitionError(ConflictError):
    """A run state change the state machine does not allow (e.g. leaving a terminal state)."""


class DuplicateError(ConflictError):
    """The same delivery was already accepted (idempotency key seen before)."""

    def __init__(self, message: str, *, existing_id: str) -> None:
        super().__init__(message)
        self.existing_id = existing_id


class ForbiddenError(JobTrackerError):
    """The caller is authenticated but may not do this."""


class TransientError(JobTrackerError):
    """A dependency failed in a way worth retrying (throttling, timeouts)."""


class PermanentDeliveryError(JobTrackerError):
    """A delivery (e.g. an email) that will never succeed; record it, do not retry."""
