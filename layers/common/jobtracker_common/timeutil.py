"""Time helpers. All timestamps are timezone-aware UTC and serialised as ISO-8601 with 'Z'."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime

Clock = Callable[[], datetime]


def utcnow() -> datetime:
    return datetime.now(UTC)


def to_iso(value: datetime) -> str:
    """Millisecond ISO-8601 in UTC: fixed width, so strings sort like the instants they name."""
    if value.tzinfo is None:
        raise ValueError("naive datetimes are not allowed; attach a timezone")
    return (
        value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{value.astimezone(UTC).microsecond // 1000:03d}Z"
    )


def parse_iso(value: str) -> datetime:
    parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def as_utc(at: datetime) -> datetime:
    """`at` in UTC; a naive datetime is taken to be UTC already."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def epoch_seconds(value: datetime) -> int:
    return int(value.timestamp())
