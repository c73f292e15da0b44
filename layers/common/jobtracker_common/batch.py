"""Partial batch responses for DynamoDB stream events (`ReportBatchItemFailures`).

Each record is handled on its own; a record whose handler raises is reported by its sequence
number in `batchItemFailures`, so Lambda retries from it (and, after MaximumRetryAttempts,
sends it to the on-failure destination) while the others count as processed. The response
is the same one Powertools' `BatchProcessor(EventType.DynamoDBStreams,
raise_on_entire_batch_failure=False)` gives; that module is not used because importing it
costs a cold start ~0.2x of a bare boto3 client (asyncio, every event data class and, with
pydantic loaded, every Parser model), for the ~10 lines below.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any


def sequence_number(record: Mapping[str, Any]) -> str | None:
    data = record.get("dynamodb")
    return data.get("SequenceNumber") if isinstance(data, Mapping) else None


def partial_response(
    event: Mapping[str, Any], record_handler: Callable[[dict[str, Any]], object]
) -> dict[str, list[dict[str, Any]]]:
    """Run `record_handler` on every record of a stream event; the failed ones become batch
    item failures. An event without records is not a stream batch: ValueError (a function
    error), as with Powertools.

    A failed record without a sequence number is reported with a null identifier, which Lambda
    treats as a failure of the whole batch: it can only be retried as a whole, never skipped.
    """
    records = event.get("Records")
    if not records or not isinstance(records, list):
        raise ValueError("not a DynamoDB stream batch: 'Records' must be a non-empty list")
    failures: list[dict[str, Any]] = []
    for record in records:
        try:
            record_handler(record)
        except Exception:  # every failure is reported, none is lost
            failures.append({"itemIdentifier": sequence_number(record)})
    return {"batchItemFailures": failures}
