"""DynamoDB attribute-value conversion for the low-level client."""

from __future__ import annotations

import time
from collections.abc import Callable
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import AttributeValueTypeDef

_serializer = TypeSerializer()
_deserializer = TypeDeserializer()


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
    return _serializer.serialize(_to_dynamo(value))


def to_item(data: dict[str, Any]) -> dict[str, AttributeValueTypeDef]:
    """Plain dict to a DynamoDB item; None values are left out (absent, not NULL)."""
    return {k: serialize(v) for k, v in data.items() if v is not None}


def from_item(item: dict[str, Any]) -> dict[str, Any]:
    return {k: _from_dynamo(_deserializer.deserialize(v)) for k, v in item.items()}


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
    sleep: Callable[[float], None] = time.sleep,
) -> list[Any]:
    """BatchWriteItem in pages of 25; unprocessed requests retried with backoff.

    Returns the requests still unprocessed after `attempts` calls per page (the caller decides
    whether that is an error); an exception from the client propagates.
    """
    left: list[Any] = []
    for start in range(0, len(requests), BATCH_WRITE_LIMIT):
        pending = requests[start : start + BATCH_WRITE_LIMIT]
        for attempt in range(attempts):
            response = client.batch_write_item(RequestItems={table: pending})
            pending = list(response.get("UnprocessedItems", {}).get(table, []))
            if not pending:
                break
            if attempt + 1 < attempts:
                sleep(min(1.0, 0.05 * 2**attempt))
        left.extend(pending)
    return left
