"""Opaque cursors for paginated queries (base64url JSON of DynamoDB's LastEvaluatedKey)."""

from __future__ import annotations

import base64
import json
from typing import Any

from jobtracker_common.errors import ValidationError


def encode_cursor(last_key: dict[str, Any] | None) -> str | None:
    if not last_key:
        return None
    return base64.urlsafe_b64encode(json.dumps(last_key, separators=(",", ":")).encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        value = json.loads(base64.urlsafe_b64decode(padded.encode()))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: "[[[[..."
        raise ValidationError("cursor is not valid; pass back next_cursor unchanged") from exc
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise ValidationError("cursor is not valid; pass back next_cursor unchanged")
    return value
