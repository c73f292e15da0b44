"""Partial batch responses from several threads at once, as the local stack runs every stream
consumer (tracker, notifier) in one process: each batch gets its own handler and failures."""

from __future__ import annotations

import threading
from typing import Any

from jobtracker_common.batch import partial_response


def record(seq: str) -> dict[str, Any]:
    return {"eventName": "MODIFY", "dynamodb": {"Keys": {"pk": {"S": seq}}, "SequenceNumber": seq}}


def test_two_consumers_at_once_each_get_their_own_failures_and_handler() -> None:
    # Given two consumers: one that fails its only record while the other is mid-batch
    mid_batch, failed = threading.Event(), threading.Event()
    handled: dict[str, list[str]] = {"ok": [], "failing": []}
    responses: dict[str, Any] = {}

    def ok_handler(rec: dict[str, Any]) -> None:
        handled["ok"].append(rec["dynamodb"]["SequenceNumber"])
        if len(handled["ok"]) == 1:
            mid_batch.set()
            failed.wait(5)

    def failing_handler(rec: dict[str, Any]) -> None:
        handled["failing"].append(rec["dynamodb"]["SequenceNumber"])
        raise RuntimeError("cannot handle")

    def run_ok() -> None:
        responses["ok"] = partial_response({"Records": [record("1"), record("2")]}, ok_handler)

    # When both process their batches at the same time
    ok_thread = threading.Thread(target=run_ok)
    ok_thread.start()
    assert mid_batch.wait(5)
    try:
        responses["failing"] = partial_response({"Records": [record("9")]}, failing_handler)
    finally:
        failed.set()
        ok_thread.join(5)

    # Then each handler saw only its own records, and each response names only its own failures
    assert handled == {"ok": ["1", "2"], "failing": ["9"]}
    assert responses["failing"] == {"batchItemFailures": [{"itemIdentifier": "9"}]}
    assert responses["ok"] == {"batchItemFailures": []}
