"""Identifiers: ULIDs (time-sortable), some derived deterministically from an idempotency key."""

from __future__ import annotations

import hashlib
from datetime import datetime

from ulid import ULID


def new_id(at: datetime | None = None) -> str:
    return str(ULID.from_datetime(at) if at else ULID())


def deterministic_id(at: datetime, key: str) -> str:
    """A ULID whose time part is `at` and whose random part comes from `key`.

    The same delivery (same key) always maps to the same id, so a duplicated delivery collides
    on the item key instead of creating a second run.
    """
    milliseconds = int(at.timestamp() * 1000)
    randomness = hashlib.sha256(key.encode()).digest()[:10]
    return str(ULID.from_bytes(milliseconds.to_bytes(6, "big") + randomness))
