"""Cursor checks before a cursor reaches DynamoDB.

`next_cursor` is opaque to clients but not secret; a hand-made one must fail as a 422, never
as a DynamoDB validation error (500) and never widen what the caller may read.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

from jobtracker_common.errors import ValidationError
from jobtracker_common.repositories.pagination import decode_cursor

_INVALID = "cursor is not valid; pass back next_cursor unchanged"
_OFFSET = re.compile(r"[0-9]{1,9}")


def check_cursor(cursor: str | None, keys: dict[str, str], *, fixed: dict[str, str] | None = None) -> None:
    """`keys` maps each attribute the cursor must hold to its DynamoDB type (S or N);
    `fixed` pins attributes to the value the query itself is restricted to."""
    decoded = decode_cursor(cursor)
    if decoded is None:
        return
    if set(decoded) != set(keys):
        raise ValidationError(_INVALID)
    for name, kind in keys.items():
        value = decoded[name]
        if set(value) != {kind} or not isinstance(value[kind], str) or not value[kind]:
            raise ValidationError(_INVALID)
        # Not str.isdigit(): "²" is a digit to it and int() refuses it. The API's only number in
        # a cursor is an offset within one log chunk; nine digits are far more than it needs.
        if kind == "N" and not _OFFSET.fullmatch(value[kind]):
            raise ValidationError(_INVALID)
    for name, expected in (fixed or {}).items():
        if decoded[name][keys[name]] != expected:
            raise ValidationError(_INVALID)


def wrap(data: dict[str, Any]) -> str:
    """A cursor of the API's own (e.g. which day a day-by-day listing had reached)."""
    return base64.urlsafe_b64encode(json.dumps(data, separators=(",", ":")).encode()).decode().rstrip("=")


def unwrap(cursor: str | None) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        value = json.loads(base64.urlsafe_b64decode((cursor + "=" * (-len(cursor) % 4)).encode()))
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:  # RecursionError: "[[[[..."
        raise ValidationError(_INVALID) from exc
    if not isinstance(value, dict):
        raise ValidationError(_INVALID)
    return value
