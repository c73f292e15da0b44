"""Partial batch responses for DynamoDB stream events (`ReportBatchItemFailures`), through
Powertools' `BatchProcessor`.

Each record is handled on its own; a record whose handler raises is reported by its sequence
number in `batchItemFailures`, so Lambda retries from it (and, after MaximumRetryAttempts,
sends it to the on-failure destination) while the others count as processed.

Import this module before anything that imports pydantic: Powertools' batch types load every
Parser model (~0.15x of a cold start) only when pydantic is already in `sys.modules`, and the
stream consumers never use them (tests/unit/test_cold_imports.py guards the order).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.utilities.batch import BatchProcessor, EventType, process_partial_response

if TYPE_CHECKING:
    from aws_lambda_powertools.utilities.data_classes.dynamo_db_stream_event import DynamoDBRecord
    from aws_lambda_powertools.utilities.typing import LambdaContext


def sequence_number(record: Mapping[str, Any]) -> str | None:
    data = record.get("dynamodb")
    return data.get("SequenceNumber") if isinstance(data, Mapping) else None


def partial_response(
    event: Mapping[str, Any],
    record_handler: Callable[[dict[str, Any]], object],
    context: LambdaContext | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Run `record_handler` on every raw record of a stream event; the failed ones become batch
    item failures. An event without records is not a stream batch: ValueError (a function
    error, so Lambda retries it whole)."""

    def handle(record: DynamoDBRecord) -> object:
        return record_handler(record.raw_event)

    # One processor per batch: it holds the batch's handler and failures, and the local stack
    # runs several consumers' batches at once in one process. Every record ends up either
    # processed or in batchItemFailures, even when all of them fail.
    processor = BatchProcessor(event_type=EventType.DynamoDBStreams, raise_on_entire_batch_failure=False)
    response = process_partial_response(
        event=dict(event), record_handler=handle, processor=processor, context=context
    )
    return {"batchItemFailures": [dict(failure) for failure in response["batchItemFailures"]]}
