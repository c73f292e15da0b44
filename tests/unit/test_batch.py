"""Partial batch responses (Powertools BatchProcessor) for stream records: failures by sequence
number, nothing dropped."""

from __future__ import annotations

from typing import Any

import pytest
from aws_lambda_powertools.utilities.batch.exceptions import UnexpectedBatchTypeError
from jobtracker_common.batch import partial_response, sequence_number


def record(seq: str | None, body: str = "ok") -> dict[str, Any]:
    data: dict[str, Any] = {"Keys": {"pk": {"S": body}}}
    if seq is not None:
        data["SequenceNumber"] = seq
    return {"eventName": "MODIFY", "dynamodb": data}


def fail_on_poison(rec: dict[str, Any]) -> None:
    if rec["dynamodb"]["Keys"]["pk"]["S"] == "poison":
        raise RuntimeError("cannot handle")


def test_every_record_is_handled_and_only_failures_are_reported() -> None:
    # Given a batch with one poison record in the middle
    records = [record("100"), record("200", "poison"), record("300")]
    seen: list[str | None] = []

    def handler(rec: dict[str, Any]) -> None:
        seen.append(sequence_number(rec))
        fail_on_poison(rec)

    # When it is processed
    response = partial_response({"Records": records}, handler)

    # Then the records after the failure were still handled, and only the failure is reported
    assert seen == ["100", "200", "300"]
    assert response == {"batchItemFailures": [{"itemIdentifier": "200"}]}


def test_a_clean_batch_reports_no_failures() -> None:
    assert partial_response({"Records": [record("1"), record("2")]}, fail_on_poison) == {
        "batchItemFailures": []
    }


@pytest.mark.parametrize("event", [{}, {"Records": []}, {"Records": "x"}])
def test_an_event_without_records_is_not_a_stream_batch(event: dict[str, Any]) -> None:
    # A function error: Lambda retries the invocation whole, then dead-letters it
    with pytest.raises(UnexpectedBatchTypeError):
        partial_response(event, fail_on_poison)


def test_a_batch_that_fails_entirely_is_answered_not_raised() -> None:
    response = partial_response({"Records": [record("1", "poison"), record("2", "poison")]}, fail_on_poison)
    assert response == {"batchItemFailures": [{"itemIdentifier": "1"}, {"itemIdentifier": "2"}]}


def test_a_failed_record_without_sequence_number_fails_the_whole_batch() -> None:
    # Lambda treats a null itemIdentifier as a failure of the whole batch: retried, never skipped.
    def handler(rec: dict[str, Any]) -> None:
        raise RuntimeError("poison")

    assert partial_response({"Records": [record(None, "poison")]}, handler) == {
        "batchItemFailures": [{"itemIdentifier": None}]
    }


def test_a_failed_record_without_its_dynamodb_section_fails_the_invocation() -> None:
    # Nothing identifies it: the invocation fails, so Lambda retries the batch whole, never skips it.
    def handler(rec: dict[str, Any]) -> None:
        raise RuntimeError("poison")

    with pytest.raises(AttributeError):
        partial_response({"Records": [{"eventName": "MODIFY"}]}, handler)
