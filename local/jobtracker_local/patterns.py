"""EventBridge-style event patterns, as Lambda's event filtering (FilterCriteria) applies them.

Supported: exact values, lists of alternatives, nested keys, arrays in the event (any element
matches), and the matchers `prefix`, `suffix`, `equals-ignore-case`, `anything-but` (value,
list or prefix), `exists` and `numeric`. An unsupported matcher raises, so a template that uses
one fails loudly at startup instead of filtering differently from AWS.
"""

from __future__ import annotations

import json
import operator
from collections.abc import Callable
from typing import Any

_MISSING = object()
_NUMERIC_OPS: dict[str, Callable[[float, float], bool]] = {
    "=": operator.eq,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}
_MATCHERS = {"prefix", "suffix", "equals-ignore-case", "anything-but", "exists", "numeric"}


def parse_pattern(pattern: str | dict[str, Any]) -> dict[str, Any]:
    parsed: dict[str, Any] = json.loads(pattern) if isinstance(pattern, str) else pattern
    _validate(parsed)
    return parsed


def _validate(pattern: dict[str, Any]) -> None:
    for value in pattern.values():
        if isinstance(value, dict):
            _validate(value)
        elif isinstance(value, list):
            for alternative in value:
                if isinstance(alternative, dict):
                    unknown = set(alternative) - _MATCHERS
                    if unknown:
                        raise ValueError(f"unsupported event pattern matcher(s): {sorted(unknown)}")
        else:
            raise ValueError(f"event pattern leaves must be lists, got {value!r}")


def matches(pattern: dict[str, Any], event: Any) -> bool:
    if not isinstance(event, dict):
        return False
    for key, expected in pattern.items():
        actual = event.get(key, _MISSING)
        if isinstance(expected, dict):
            if actual is _MISSING or not matches(expected, actual):
                return False
        elif not _leaf_matches(expected, actual):
            return False
    return True


def matches_any(patterns: list[dict[str, Any]], event: Any) -> bool:
    """Lambda keeps a record if ANY filter matches; no filters keeps everything."""
    return not patterns or any(matches(p, event) for p in patterns)


def _leaf_matches(alternatives: list[Any], actual: Any) -> bool:
    for alternative in alternatives:
        if isinstance(alternative, dict) and "exists" in alternative:
            if bool(alternative["exists"]) == (actual is not _MISSING):
                return True
            continue
        if actual is _MISSING:
            continue
        values = actual if isinstance(actual, list) else [actual]
        if any(_value_matches(alternative, v) for v in values):
            return True
    return False


def _value_matches(alternative: Any, value: Any) -> bool:
    if not isinstance(alternative, dict):
        if _same_number(alternative, value):
            return True
        return type(alternative) is type(value) and bool(alternative == value)
    ((kind, arg),) = alternative.items()
    if kind == "prefix":
        return isinstance(value, str) and value.startswith(_text(arg))
    if kind == "suffix":
        return isinstance(value, str) and value.endswith(_text(arg))
    if kind == "equals-ignore-case":
        return isinstance(value, str) and value.lower() == str(arg).lower()
    if kind == "anything-but":
        if isinstance(arg, dict):
            return not _value_matches(arg, value)
        excluded = arg if isinstance(arg, list) else [arg]
        return not any(_value_matches(e, value) for e in excluded)
    if kind == "numeric":
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        pairs = zip(arg[0::2], arg[1::2], strict=True)
        return all(_NUMERIC_OPS[op](float(value), float(bound)) for op, bound in pairs)
    raise ValueError(f"unsupported matcher {kind}")


def _text(arg: Any) -> str:
    # `{"prefix": {"equals-ignore-case": ...}}` is not used by the template; plain strings only.
    if not isinstance(arg, str):
        raise ValueError(f"unsupported prefix/suffix argument {arg!r}")
    return arg


def _same_number(a: Any, b: Any) -> bool:
    numbers = (int, float)
    return (
        isinstance(a, numbers)
        and isinstance(b, numbers)
        and not isinstance(a, bool)
        and not isinstance(b, bool)
        and float(a) == float(b)
    )
