"""DynamoDB attribute-value conversion for the low-level client.

The conversion follows boto3's `boto3.dynamodb.types` TypeSerializer/TypeDeserializer rule for
rule (tests/unit/test_dynamo_types.py compares both), written out here because importing any
`boto3.*` module imports all of boto3 (its session, resources and s3transfer): ~0.13x of a bare
client's cold start for two small classes. Lambda code talks to botocore clients only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from collections.abc import Set as AbstractSet
from decimal import Clamped, Context, Decimal, DecimalException, Inexact, Overflow, Rounded, Underflow
from typing import TYPE_CHECKING, Any

from jobtracker_common.errors import clip

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

#: DynamoDB numbers: 38 digits, exponent range of the service; any loss of precision is an error.
DYNAMODB_CONTEXT = Context(
    Emin=-128, Emax=126, prec=38, traps=[Clamped, Overflow, Inexact, Rounded, Underflow]
)
_BINARY = (bytes, bytearray)


def _is_number(value: Any) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, int | Decimal):
        return True
    if isinstance(value, float):
        raise TypeError("Float types are not supported. Use Decimal types instead.")
    return False


def _number(value: Any) -> str:
    number = str(DYNAMODB_CONTEXT.create_decimal(value))
    if number in ("Infinity", "NaN"):
        raise TypeError("Infinity and NaN not supported")
    return number


def _attribute(value: Any) -> Any:
    """Python value -> attribute value (boto3's TypeSerializer.serialize)."""
    if value is None:
        return {"NULL": True}
    if isinstance(value, bool):
        return {"BOOL": value}
    if _is_number(value):
        return {"N": _number(value)}
    if isinstance(value, str):
        return {"S": value}
    if isinstance(value, _BINARY):
        return {"B": value}
    if isinstance(value, AbstractSet):
        if all(_is_number(v) for v in value):
            return {"NS": [_number(v) for v in value]}
        if all(isinstance(v, str) for v in value):
            return {"SS": list(value)}
        if all(isinstance(v, _BINARY) for v in value):
            return {"BS": list(value)}
    if isinstance(value, Mapping):
        return {"M": {k: _attribute(v) for k, v in value.items()}}
    if isinstance(value, list | tuple):
        return {"L": [_attribute(v) for v in value]}
    raise TypeError(f'Unsupported type "{type(value)}" for value "{value}"')


def _python(value: Mapping[str, Any]) -> Any:
    """Attribute value -> Python value (boto3's TypeDeserializer.deserialize; binary values
    stay bytes instead of boto3's `Binary` wrapper, and no table here stores any)."""
    if not value:
        raise TypeError("Value must be a nonempty dictionary whose key is a valid dynamodb type.")
    kind, data = next(iter(value.items()))
    if kind in {"S", "BOOL", "B"}:
        return data
    if kind == "N":
        return DYNAMODB_CONTEXT.create_decimal(data)
    if kind == "M":
        return {k: _python(v) for k, v in data.items()}
    if kind == "L":
        return [_python(v) for v in data]
    if kind == "NULL":
        return None
    if kind in {"SS", "BS"}:
        return set(data)
    if kind == "NS":
        return {DYNAMODB_CONTEXT.create_decimal(v) for v in data}
    raise TypeError(f"Dynamodb type {kind} is not supported")


def _to_dynamo(value: Any) -> Any:
    if isinstance(value, float):
        return Decimal(repr(value))
    if isinstance(value, dict):
        return {k: _to_dynamo(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_to_dynamo(v) for v in value]
    return value


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_dynamo(v) for v in value]
    if isinstance(value, set):
        return {_from_dynamo(v) for v in value}
    return value


def serialize(value: Any) -> AttributeValueTypeDef:
    result: AttributeValueTypeDef = _attribute(_to_dynamo(value))
    return result


#: DynamoDB's number range, as adjusted exponents: magnitudes 1E-130 .. 9.99..9E+125 (38 nines).
#: DYNAMODB_CONTEXT lets exact subnormals through (1E-131 serializes; PutItem then refuses it).
MIN_EXPONENT, MAX_EXPONENT = -130, 125
#: Levels of nested lists and maps DynamoDB stores in one attribute.
MAX_NESTING = 32


class UnstorableError(ValueError):
    """A value DynamoDB cannot store (as `serialize` writes it); the message names where."""


def check_storable(value: Any, path: str) -> None:
    """Raise UnstorableError when `serialize(value)` would fail or DynamoDB would refuse what it
    writes: a number out of DynamoDB's range or beyond 38 digits, or nesting deeper than 32.

    Walks iteratively, nesting checked before anything recurses: a deeply nested value must be
    an error, not a RecursionError. `path` names `value` in messages (e.g. "params").
    """
    pending: list[tuple[Any, str, int]] = [(value, path, 0)]
    while pending:
        current, where, depth = pending.pop()
        if isinstance(current, Mapping | list | tuple):
            if depth >= MAX_NESTING:
                raise UnstorableError(f"{where}: nested deeper than DynamoDB's {MAX_NESTING} levels")
            children = current.items() if isinstance(current, Mapping) else enumerate(current)
            pending.extend((v, f"{where}.{clip(str(k), 50)}", depth + 1) for k, v in children)
        elif isinstance(current, int | float | Decimal) and not isinstance(current, bool):
            _check_number(current, where)
    try:
        serialize(value)
    except (TypeError, DecimalException) as exc:  # a type DynamoDB has no attribute for
        raise UnstorableError(f"{path}: DynamoDB cannot store this value ({clip(str(exc), 200)})") from exc


def _check_number(value: float | Decimal, where: str) -> None:
    number = Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    text = clip(str(number), 50)
    if not number.is_finite():
        raise UnstorableError(f"{where}: {text} is not a finite number")
    if number and number.adjusted() < MIN_EXPONENT:
        raise UnstorableError(f"{where}: {text} is too close to zero for DynamoDB (1E-130 at least, or 0)")
    if number.adjusted() > MAX_EXPONENT:
        raise UnstorableError(f"{where}: {text} is too large for DynamoDB (below 1E+126)")
    try:
        _number(number)
    except DecimalException as exc:
        raise UnstorableError(
            f"{where}: {text} cannot be stored exactly (DynamoDB keeps 38 significant digits)"
        ) from exc


def to_item(data: dict[str, Any]) -> dict[str, AttributeValueTypeDef]:
    """Plain dict to a DynamoDB item; None values are left out (absent, not NULL)."""
    return {k: serialize(v) for k, v in data.items() if v is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _from_dynamo(_python(v)) for k, v in item.items()}


def is_conditional_failure(exc: Exception) -> bool:
    code = getattr(exc, "response", {}).get("Error", {}).get("Code", "")
    return code in {"ConditionalCheckFailedException", "TransactionCanceledException"}


#: BatchWriteItem's limit on requests per call.
BATCH_WRITE_LIMIT = 25


def batch_write(
    client: DynamoDBClient,
    table: str,
    requests: list[Any],
    *,
    attempts: int = 8,
    sleep: Callable[[float], None] | None = None,
) -> list[Any]:
    """BatchWriteItem in pages of 25; unprocessed requests retried with backoff.

    Returns the requests still unprocessed after `attempts` calls per page (the caller decides
    whether that is an error); an exception from the client propagates.
    """
    pause = sleep or time.sleep  # looked up per call, so a patched time.sleep applies
    left: list[Any] = []
    for start in range(0, len(requests), BATCH_WRITE_LIMIT):
        pending = requests[start : start + BATCH_WRITE_LIMIT]
        for attempt in range(attempts):
            response = client.batch_write_item(RequestItems={table: pending})
            pending = list(response.get("UnprocessedItems", {}).get(table, []))
            if not pending:
                break
            if attempt + 1 < attempts:
                pause(min(1.0, 0.05 * 2**attempt))
        left.extend(pending)
    return left
