"""moto's TransactWriteItems without its whole-table deepcopy.

moto snapshots every table a transaction touches (`copy.deepcopy(table)`) to roll back on
failure, so each transaction costs O(table size): the local stack got slower as its history
grew (every run transition is a transaction), and a statistics test with a few thousand
transactions took minutes. This version keeps the same semantics, as DynamoDB defines them:
all conditions are checked against the state before the transaction (the items of one
transaction are distinct, so that is the same state moto's sequential check sees), a failed
condition cancels the whole transaction with per-item `CancellationReasons`, and nothing is
written unless everything can be; only the touched items (and the stream records their writes
appended) are rolled back.

One implementation for the local stack's moto server (`endpoint.moto_server` installs it) and
for the tests (`tests/support/moto_transactions.py` patches it in with pytest's monkeypatch).
"""

from __future__ import annotations

import copy
from typing import Any

from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    ConditionalCheckFailed,
    MockValidationException,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend

#: moto's own implementation, kept so tests can compare both.
MOTO_TRANSACT_WRITE_ITEMS = DynamoDBBackend.transact_write_items

Reason = tuple[str | None, str | None, dict[str, Any] | None]


def _key_of(backend: DynamoDBBackend, op_type: str, op: dict[str, Any]) -> dict[str, Any]:
    if op_type != "Put":
        return dict(op["Key"])
    table = backend.get_table(op["TableName"])
    key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = op["Item"][table.range_key_attr]
    return key


def _stream_lengths(backend: DynamoDBBackend, table_names: set[str]) -> dict[str, int]:
    lengths: dict[str, int] = {}
    for name in table_names:
        shard = backend.get_table(name).stream_shard
        if shard is not None:
            lengths[name] = len(shard.items)
    return lengths


def transact_write_items(self: DynamoDBBackend, transact_items: list[dict[str, Any]]) -> None:
    if len(transact_items) > 100:
        raise TooManyTransactionsException()
    ops: list[tuple[str, dict[str, Any], dict[str, Any]]] = []
    seen: set[tuple[str, str]] = set()
    for entry in transact_items:
        if len(entry) > 1:
            raise TransactWriteSingleOpException
        op_type, op = next(iter(entry.items()))
        if op_type not in {"ConditionCheck", "Put", "Delete", "Update"}:
            raise ValueError("Unsupported transaction operation")
        key = _key_of(self, op_type, op)
        marker = (str(op["TableName"]), str(dict(sorted(key.items()))))
        if marker in seen:
            raise MultipleTransactionsException()
        seen.add(marker)
        ops.append((op_type, op, key))

    errors: list[Reason] = []
    for _op_type, op, key in ops:
        current = self.get_item(op["TableName"], key)
        condition = op.get("ConditionExpression")
        if condition is not None and not get_filter_expression(
            condition, op.get("ExpressionAttributeNames"), op.get("ExpressionAttributeValues")
        ).expr(current):
            old = (
                current.to_json()["Attributes"]
                if current is not None and op.get("ReturnValuesOnConditionCheckFailure") == "ALL_OLD"
                else None
            )
            errors.append(("ConditionalCheckFailed", ConditionalCheckFailed().message, old))
        else:
            errors.append((None, None, None))
    if any(code is not None for code, _, _ in errors):
        raise TransactionCanceledException(errors)

    streams = _stream_lengths(self, {str(op["TableName"]) for _, op, _ in ops})
    applied: list[tuple[str, dict[str, Any], Any]] = []
    for index, (op_type, op, key) in enumerate(ops):
        if op_type == "ConditionCheck":
            continue
        table_name = op["TableName"]
        applied.append((table_name, key, copy.deepcopy(self.get_item(table_name, key))))
        try:
            if op_type == "Put":
                self.put_item(table_name, op["Item"])
            elif op_type == "Delete":
                self.delete_item(table_name, key)
            else:
                self.update_item(
                    table_name,
                    key,
                    update_expression=op["UpdateExpression"],
                    expression_attribute_names=op.get("ExpressionAttributeNames") or {},
                    expression_attribute_values=op.get("ExpressionAttributeValues") or {},
                )
        except Exception as exc:
            _roll_back(self, applied, streams)
            if isinstance(exc, MockValidationException):
                raise  # like moto (and DynamoDB): a malformed request is a ValidationException
            reasons: list[Reason] = [(None, None, None)] * len(ops)
            reasons[index] = (type(exc).__name__, str(exc), None)
            raise TransactionCanceledException(reasons) from exc


def _roll_back(
    backend: DynamoDBBackend, applied: list[tuple[str, dict[str, Any], Any]], streams: dict[str, int]
) -> None:
    for name, touched, original in reversed(applied):
        if original is None:
            backend.delete_item(name, touched)
        else:
            backend.put_item(name, original.to_json()["Attributes"])
    # moto's own rollback restores whole tables, stream records included: a cancelled
    # transaction leaves nothing for a stream consumer to see.
    for name, length in streams.items():
        shard = backend.get_table(name).stream_shard
        if shard is not None:
            del shard.items[length:]


def install_fast_transactions() -> None:
    """Use this implementation in every moto DynamoDB backend of this process (idempotent)."""
    DynamoDBBackend.transact_write_items = transact_write_items  # type: ignore[method-assign]
