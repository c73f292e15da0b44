"""The stream emulator against moto server: filters, partial failures, bisect, on-failure queue."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest
from jobtracker_local.endpoint import fresh_moto, prune_stream_iterators
from jobtracker_local.resources import LocalResources, aws_client, provision
from jobtracker_local.streams import EmulatorSettings, StreamEmulator, StreamSource, sequence
from jobtracker_local.template import load_template

FAST = EmulatorSettings(poll_interval=0.02, retry_delay=0.01, max_batching_window=0)


@pytest.fixture
def stack() -> Iterator[LocalResources]:
    with fresh_moto() as server:
        yield provision(LocalResources(load_template(), server.url))


def tracker_source(resources: LocalResources, **changes: Any) -> StreamSource:
    (source,) = [s for s in StreamSource.from_template(resources) if s.function_id == "TrackerFunction"]
    return replace(source, **changes)


def put_run(resources: LocalResources, run_id: str, status: str = "completed", entity: str = "run") -> None:
    ddb = aws_client("dynamodb", resources.endpoint)
    ddb.put_item(
        TableName=resources.refs["RunsTable"],
        Item={
            "pk": {"S": f"RUN#{run_id}"},
            "sk": {"S": "META" if entity == "run" else "LOG#001#000000"},
            "entity": {"S": entity},
            "run_id": {"S": run_id},
            "status": {"S": status},
        },
    )


def run_id_of(record: dict[str, Any]) -> str:
    return str(record["dynamodb"]["NewImage"]["run_id"]["S"])


def wait_for(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.02)


def dlq_messages(resources: LocalResources, logical_id: str) -> list[dict[str, Any]]:
    sqs = aws_client("sqs", resources.endpoint)
    url = resources.refs[logical_id]
    out = []
    while True:
        response = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
        messages = response.get("Messages", [])
        if not messages:
            return out
        for message in messages:
            out.append(json.loads(message["Body"]))
            sqs.delete_message(QueueUrl=url, ReceiptHandle=message["ReceiptHandle"])


class FakeConsumer:
    """Records each batch; reports `poison` runs as failed (or raises, with `raise_on_poison`)."""

    def __init__(self, poison: set[str], *, raise_on_poison: bool = False) -> None:
        self.poison = poison
        self.raise_on_poison = raise_on_poison
        self.batches: list[list[dict[str, Any]]] = []

    def __call__(self, event: dict[str, Any]) -> dict[str, Any]:
        records = event["Records"]
        self.batches.append(records)
        bad = [r for r in records if run_id_of(r) in self.poison]
        if bad and self.raise_on_poison:
            raise RuntimeError("poison record")
        return {"batchItemFailures": [{"itemIdentifier": r["dynamodb"]["SequenceNumber"]} for r in bad]}

    def deliveries(self, run_id: str) -> int:
        return sum(1 for batch in self.batches for r in batch if run_id_of(r) == run_id)


def start(resources: LocalResources, *consumers: tuple[StreamSource, Callable[[dict[str, Any]], Any]]):
    emulator = StreamEmulator(
        [source for source, _ in consumers],
        {source.function_id: consumer for source, consumer in consumers},
        endpoint=resources.endpoint,
        region=resources.region,
        resources=resources,
        settings=FAST,
    )
    emulator.start()
    return emulator


def deliver_all(resources: LocalResources, *consumers: tuple[StreamSource, Callable[[dict[str, Any]], Any]]):
    """Run the emulator until every consumer has caught up with the stream."""
    emulator = start(resources, *consumers)
    try:
        wait_for(emulator.idle)
    finally:
        emulator.stop()


def test_failed_record_is_redelivered_from_its_sequence_number_then_lands_in_the_dlq(stack):
    # Given a consumer that reports run r2 as failed, with 2 retries
    source = tracker_source(stack, max_retries=2)
    consumer = FakeConsumer({"r2"})
    for run_id in ("r1", "r2", "r3"):
        put_run(stack, run_id)

    # When the emulator delivers the stream
    deliver_all(stack, (source, consumer))

    # Then every retry starts at r2's sequence number and r1 is never delivered again
    first, *retries = consumer.batches
    assert [run_id_of(r) for r in first] == ["r1", "r2", "r3"]
    r2_seq = sequence(first[1])
    assert len(retries) == 2
    assert all(sequence(batch[0]) == r2_seq for batch in retries)
    assert consumer.deliveries("r1") == 1
    assert consumer.deliveries("r2") == 3
    # And after the retry limit the failed records go to the on-failure queue
    (message,) = dlq_messages(stack, "TrackerDLQ")
    info = message["DDBStreamBatchInfo"]
    assert info["startSequenceNumber"] == str(r2_seq)
    assert info["streamArn"] == stack.attrs["RunsTable.StreamArn"]
    assert message["requestContext"]["condition"] == "RetryAttemptsExhausted"
    assert [run_id_of(r) for r in message["Records"]] == ["r2", "r3"]
    assert all(r["eventSourceARN"] == info["streamArn"] for r in message["Records"])


def test_records_the_template_filter_rejects_are_never_delivered(stack):
    # Given the notifier's filter (terminal and retrying runs only)
    (source,) = [s for s in StreamSource.from_template(stack) if s.function_id == "NotifierFunction"]
    consumer = FakeConsumer(set())
    put_run(stack, "running-run", status="running")
    put_run(stack, "log-chunk", entity="log")
    put_run(stack, "done-run", status="failed")

    deliver_all(stack, (replace(source, batching_window_seconds=0), consumer))

    assert [run_id_of(r) for batch in consumer.batches for r in batch] == ["done-run"]


def test_function_error_bisects_the_batch_until_the_poison_record_is_alone(stack):
    # Given a consumer that raises whenever its batch holds p
    source = tracker_source(stack, max_retries=1)
    consumer = FakeConsumer({"p"}, raise_on_poison=True)
    for run_id in ("a", "b", "p", "c"):
        put_run(stack, run_id)

    deliver_all(stack, (source, consumer))

    # Then every good record is processed and only p is discarded
    delivered_ok = {
        run_id_of(r) for batch in consumer.batches if "p" not in map(run_id_of, batch) for r in batch
    }
    assert delivered_ok == {"a", "b", "c"}
    assert [1 for batch in consumer.batches if [run_id_of(r) for r in batch] == ["p"]] == [1, 1]
    (message,) = dlq_messages(stack, "TrackerDLQ")
    assert [run_id_of(r) for r in message["Records"]] == ["p"]
    assert message["responseContext"]["functionError"] == "Unhandled"


def test_each_consumer_keeps_its_own_checkpoint(stack):
    # Given two consumers of the same stream, one of which always fails r1
    tracker = tracker_source(stack, max_retries=3)
    (notifier,) = [s for s in StreamSource.from_template(stack) if s.function_id == "NotifierFunction"]
    failing, healthy = FakeConsumer({"r1"}), FakeConsumer(set())
    put_run(stack, "r1")
    deliver_all(stack, (tracker, failing), (replace(notifier, batching_window_seconds=0), healthy))

    assert failing.deliveries("r1") == 4
    assert healthy.deliveries("r1") == 1
    assert len(dlq_messages(stack, "NotifierDLQ")) == 0


def test_delivery_resumes_after_the_endpoint_forgets_the_shard_iterator(stack):
    # Given a consumer that has read r1
    source = tracker_source(stack)
    consumer = FakeConsumer(set())
    put_run(stack, "r1")
    emulator = start(stack, (source, consumer))
    try:
        wait_for(lambda: consumer.deliveries("r1") == 1)
        # When moto forgets every iterator (as pruning or a 15-minute expiry would do)
        assert prune_stream_iterators(stack.account, stack.region, keep_last=0) > 0
        put_run(stack, "r2")
        # Then the reader renews its iterator after r1 and r2 arrives exactly once
        wait_for(lambda: consumer.deliveries("r2") == 1)
        wait_for(emulator.idle)
    finally:
        emulator.stop()
    assert consumer.deliveries("r1") == 1
