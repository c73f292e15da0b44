"""moto's TransactWriteItems without its whole-table deepcopy.

moto snapshots every table a transaction touches (`copy.deepcopy(table)`) to roll back on
failure, so each transaction costs O(table size): a statistics test with a few thousand
transactions would take minutes. This version keeps the same semantics, as DynamoDB defines
them: all conditions are checked against the state before the transaction (the items of one
transaction are distinct, so that is the same state moto's sequential check sees), a failed
condition cancels the whole transaction with per-item `CancellationReasons`, and nothing is
written unless everything can be; only the touched items are snapshotted for rollback.
"""

from __future__ import annotations

import copy
from typing import Any

import pytest
from moto.dynamodb.comparisons import get_filter_expression
from moto.dynamodb.exceptions import (
    ConditionalCheckFailed,
    MultipleTransactionsException,
    TooManyTransactionsException,
    TransactionCanceledException,
    TransactWriteSingleOpException,
)
from moto.dynamodb.models import DynamoDBBackend


def _key_of(backend: DynamoDBBackend, op_type: str, op: dict[str, Any]) -> dict[str, Any]:
    if op_type != "Put":
        return dict(op["Key"])
    table = backend.get_table(op["TableName"])
    key = {table.hash_key_attr: op["Item"][table.hash_key_attr]}
    if table.range_key_attr is not None:
        key[table.range_key_attr] = op["Item"][table.range_key_attr]
    return key


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

    errors: list[tuple[str | None, str | None, dict[str, Any] | None]] = []
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
            for name, touched, original in reversed(applied):
                if original is None:
                    self.delete_item(name, touched)
                else:
                    self.put_item(name, original.to_json()["Attributes"])
            reasons: list[tuple[str | None, str | None, dict[str, Any] | None]] = [(None, None, None)] * len(
                ops
            )
            reasons[index] = (type(exc).__name__, str(exc), None)
            raise TransactionCanceledException(reasons) from exc


def fast_transactions(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(DynamoDBBackend, "transact_write_items", transact_write_items)
