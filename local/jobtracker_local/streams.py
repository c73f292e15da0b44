"""DynamoDB stream event sources, emulated with Lambda's rules, driven by the template.

For every `Type: DynamoDB` event in the template: read the stream through the DynamoDB Streams
API (never through a moto event source mapping, which empties the stream), keep records that
match the FilterCriteria, deliver batches of up to BatchSize (waiting up to the batching window)
and handle the response as Lambda does:

- success: the checkpoint moves past the batch;
- `batchItemFailures` (ReportBatchItemFailures): records before the first failed sequence number
  are done; the batch is retried from that record (an empty or unknown identifier fails the whole
  batch, like Lambda);
- a function error: with BisectBatchOnFunctionError the batch is split in two and the first half
  retried (splitting does not use up retries); otherwise the batch is retried;
- after MaximumRetryAttempts retries (or once a record is older than MaximumRecordAgeInSeconds)
  the batch is discarded to the on-failure destination, as Lambda's `DDBStreamBatchInfo` record
  plus, for local inspection, the failed records themselves under `Records`.

Each consumer keeps its own checkpoint per shard, as separate event source mappings do.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from botocore.exceptions import ClientError

from jobtracker_local.functions import json_roundtrip, send_to_destination
from jobtracker_local.patterns import matches_any, parse_pattern
from jobtracker_local.resources import LocalResources, aws_client

log = logging.getLogger("jobtracker.local")

Invoke = Callable[[dict[str, Any]], Any]

#: Event source properties the emulator honours; others (ParallelizationFactor, tumbling
#: windows...) are reported at startup instead of being silently ignored.
_EMULATED = frozenset(
    {
        "Stream",
        "StartingPosition",
        "BatchSize",
        "MaximumBatchingWindowInSeconds",
        "FunctionResponseTypes",
        "BisectBatchOnFunctionError",
        "MaximumRetryAttempts",
        "MaximumRecordAgeInSeconds",
        "DestinationConfig",
        "FilterCriteria",
        "Enabled",
    }
)


@dataclass(frozen=True)
class StreamSource:
    """One `Type: DynamoDB` event of one function, with the template's settings."""

    function_id: str
    event_id: str
    stream_arn: str
    batch_size: int = 100
    batching_window_seconds: float = 0.0
    report_item_failures: bool = False
    bisect_on_error: bool = False
    max_retries: int = -1
    max_record_age_seconds: int = -1
    on_failure_arn: str | None = None
    filters: tuple[dict[str, Any], ...] = ()
    starting_position: str = "TRIM_HORIZON"
    enabled: bool = True

    @property
    def name(self) -> str:
        return f"{self.function_id}.{self.event_id}"

    @classmethod
    def from_template(cls, resources: LocalResources) -> list[StreamSource]:
        out = []
        for function_id, event_id, raw in resources.template.events_of_type("DynamoDB"):
            props = resources.resolve(raw)
            if ignored := sorted(set(props) - _EMULATED):
                log.warning("%s.%s: %s not emulated locally", function_id, event_id, ", ".join(ignored))
            filters = tuple(
                parse_pattern(f["Pattern"]) for f in props.get("FilterCriteria", {}).get("Filters", [])
            )
            out.append(
                cls(
                    function_id=function_id,
                    event_id=event_id,
                    stream_arn=props["Stream"],
                    batch_size=int(props.get("BatchSize", 100)),
                    batching_window_seconds=float(props.get("MaximumBatchingWindowInSeconds", 0)),
                    report_item_failures="ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
                    bisect_on_error=bool(props.get("BisectBatchOnFunctionError", False)),
                    max_retries=int(props.get("MaximumRetryAttempts", -1)),
                    max_record_age_seconds=int(props.get("MaximumRecordAgeInSeconds", -1)),
                    on_failure_arn=props.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination"),
                    filters=filters,
                    starting_position=props.get("StartingPosition", "TRIM_HORIZON"),
                    enabled=bool(props.get("Enabled", True)),
                )
            )
        return out


def sequence(record: dict[str, Any]) -> int:
    return int(record["dynamodb"]["SequenceNumber"])


class ShardReader:
    """Reads one shard from TRIM_HORIZON into a buffer that every consumer of it shares."""

    def __init__(self, client: Any, stream_arn: str, shard_id: str, region: str) -> None:
        self._client = client
        self.stream_arn = stream_arn
        self.shard_id = shard_id
        self._region = region
        self._iterator: str | None = None
        self._records: list[dict[str, Any]] = []
        self._seen_at: dict[int, float] = {}
        self._lock = threading.Lock()
        self._last_fetch = 0.0
        self._last_read: int | None = None
        self.closed = False

    def fetch(self, min_interval: float) -> None:
        with self._lock:
            if self.closed or time.monotonic() - self._last_fetch < min_interval:
                return
            self._last_fetch = time.monotonic()
            while True:
                if self._iterator is None:
                    self._iterator = self._new_iterator()
                try:
                    response = self._client.get_records(ShardIterator=self._iterator, Limit=1000)
                except ClientError as exc:
                    # Iterators expire (15 minutes on AWS); resume after the last record read.
                    log.info("shard iterator of %s renewed: %s", self.shard_id, exc)
                    self._iterator = None
                    return
                records = response.get("Records", [])
                now = time.monotonic()
                for record in records:
                    event = self._lambda_record(record)
                    self._records.append(event)
                    self._last_read = sequence(event)
                    self._seen_at[self._last_read] = now
                self._iterator = response.get("NextShardIterator")
                if self._iterator is None:
                    self.closed = True
                    return
                if len(records) < 1000:
                    return

    def _new_iterator(self) -> str:
        if self._last_read is None:
            kwargs: dict[str, Any] = {"ShardIteratorType": "TRIM_HORIZON"}
        else:
            kwargs = {"ShardIteratorType": "AFTER_SEQUENCE_NUMBER", "SequenceNumber": str(self._last_read)}
        response = self._client.get_shard_iterator(StreamArn=self.stream_arn, ShardId=self.shard_id, **kwargs)
        return str(response["ShardIterator"])

    def _lambda_record(self, record: dict[str, Any]) -> dict[str, Any]:
        """A record as Lambda delivers it: JSON types, epoch seconds, with eventSourceARN."""
        event: dict[str, Any] = json_roundtrip(record)
        event.setdefault("eventSource", "aws:dynamodb")
        event.setdefault("awsRegion", self._region)
        event["eventSourceARN"] = self.stream_arn
        created = event.get("dynamodb", {}).get("ApproximateCreationDateTime")
        if isinstance(created, float):
            event["dynamodb"]["ApproximateCreationDateTime"] = int(created)
        return event

    def after(self, checkpoint: int | None) -> list[dict[str, Any]]:
        with self._lock:
            if checkpoint is None:
                return list(self._records)
            return [r for r in self._records if sequence(r) > checkpoint]

    def last_sequence(self) -> int | None:
        with self._lock:
            return sequence(self._records[-1]) if self._records else None

    def seen_at(self, seq: int) -> float:
        return self._seen_at.get(seq, time.monotonic())

    def trim(self, upto: int) -> None:
        """Forget records every consumer has checkpointed past."""
        with self._lock:
            keep = [r for r in self._records if sequence(r) > upto]
            for record in self._records[: len(self._records) - len(keep)]:
                self._seen_at.pop(sequence(record), None)
            self._records = keep


@dataclass
class EmulatorSettings:
    poll_interval: float = 0.25
    #: Pause before retrying a failed batch (Lambda retries at once, with a backoff on errors).
    retry_delay: float = 0.5
    #: Cap on MaximumBatchingWindowInSeconds (None: honour the template).
    max_batching_window: float | None = None


@dataclass
class ConsumerStats:
    invocations: int = 0
    failures: int = 0
    discarded_batches: int = 0
    discarded_records: int = 0


@dataclass
class ShardConsumer:
    """One event source mapping on one shard: its own checkpoint and retry state."""

    source: StreamSource
    reader: ShardReader
    invoke: Invoke
    resources: LocalResources | None
    settings: EmulatorSettings
    checkpoint: int | None = None
    batch: list[dict[str, Any]] | None = None
    attempts: int = 0
    not_before: float = 0.0
    stats: ConsumerStats = field(default_factory=ConsumerStats)
    started: bool = False

    def step(self) -> bool:
        """Deliver at most one batch; True when something was delivered."""
        now = time.monotonic()
        if now < self.not_before:
            return False
        self.reader.fetch(self.settings.poll_interval / 2)
        if not self.started:
            self.started = True
            if self.source.starting_position == "LATEST":
                self.checkpoint = self.reader.last_sequence()
        if self.batch is None:
            batch = self._next_batch(now)
            if not batch:
                return False
            self.batch, self.attempts = batch, 0
        batch = self._drop_expired(self.batch)
        if not batch:
            self.batch = None
            return True
        self.batch = batch
        self._deliver(batch)
        return True

    def _next_batch(self, now: float) -> list[dict[str, Any]]:
        pending = self.reader.after(self.checkpoint)
        matched: list[dict[str, Any]] = []
        for record in pending:
            if matches_any(list(self.source.filters), record):
                matched.append(record)
                if len(matched) == self.source.batch_size:
                    break
        if not matched:
            if pending:  # all filtered out: Lambda counts them as processed
                self.checkpoint = sequence(pending[-1])
            return []
        window = self.source.batching_window_seconds
        if self.settings.max_batching_window is not None:
            window = min(window, self.settings.max_batching_window)
        if len(matched) < self.source.batch_size and now - self.reader.seen_at(sequence(matched[0])) < window:
            return []
        return matched

    def _drop_expired(self, batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
        max_age = self.source.max_record_age_seconds
        if max_age < 0:
            return batch
        cutoff = time.time() - max_age
        expired = [r for r in batch if r["dynamodb"].get("ApproximateCreationDateTime", cutoff) < cutoff]
        if expired:
            self._discard(expired, "RecordAgeExceeded", None)
            self.checkpoint = max(sequence(expired[-1]), self.checkpoint or 0)
        return [r for r in batch if r not in expired]

    def _deliver(self, batch: list[dict[str, Any]]) -> None:
        self.stats.invocations += 1
        try:
            response = self.invoke({"Records": batch})
        except Exception as exc:
            self.stats.failures += 1
            log.warning("%s: batch of %d failed: %s", self.source.name, len(batch), exc)
            if self.source.bisect_on_error and len(batch) > 1:
                self.batch = batch[: len(batch) // 2]
                return
            self._retry_or_discard(batch, "RetryAttemptsExhausted", {"functionError": "Unhandled"})
            return
        failed_from = self._first_failure(batch, response)
        if failed_from is None:
            self._done(batch)
            return
        self.stats.failures += 1
        done = [r for r in batch if sequence(r) < failed_from]
        remaining = [r for r in batch if sequence(r) >= failed_from]
        if done:
            self.checkpoint = sequence(done[-1])
        self._retry_or_discard(remaining, "RetryAttemptsExhausted", None)

    def _first_failure(self, batch: list[dict[str, Any]], response: Any) -> int | None:
        if not self.source.report_item_failures or not isinstance(response, dict):
            return None
        failures = response.get("batchItemFailures") or []
        if not failures:
            return None
        in_batch = {sequence(r) for r in batch}
        firsts: list[int] = []
        for failure in failures:
            identifier = failure.get("itemIdentifier") if isinstance(failure, dict) else None
            try:
                seq = int(identifier) if identifier not in (None, "") else None
            except (TypeError, ValueError):
                seq = None
            if seq is None or seq not in in_batch:
                # Lambda treats a null, empty or unknown identifier as a failure of the whole batch.
                return sequence(batch[0])
            firsts.append(seq)
        return min(firsts)

    def _done(self, batch: list[dict[str, Any]]) -> None:
        self.checkpoint = sequence(batch[-1])
        self.batch = None
        self.attempts = 0

    def _retry_or_discard(
        self, batch: list[dict[str, Any]], condition: str, response_context: dict[str, Any] | None
    ) -> None:
        self.attempts += 1
        limit = self.source.max_retries
        if limit >= 0 and self.attempts > limit:
            self._discard(batch, condition, response_context)
            self._done(batch)
            return
        self.batch = batch
        self.not_before = time.monotonic() + self.settings.retry_delay

    def _discard(
        self, batch: list[dict[str, Any]], condition: str, response_context: dict[str, Any] | None
    ) -> None:
        self.stats.discarded_batches += 1
        self.stats.discarded_records += len(batch)
        destination = self.source.on_failure_arn
        log.error(
            "%s: %d record(s) %s..%s discarded (%s) to %s",
            self.source.name,
            len(batch),
            batch[0]["dynamodb"]["SequenceNumber"],
            batch[-1]["dynamodb"]["SequenceNumber"],
            condition,
            destination or "nowhere (no on-failure destination)",
        )
        if not destination or self.resources is None:
            return
        send_to_destination(
            self.resources, destination, self.failure_record(batch, condition, response_context)
        )

    def failure_record(
        self, batch: list[dict[str, Any]], condition: str, response_context: dict[str, Any] | None
    ) -> dict[str, Any]:
        """Lambda's on-failure record for a stream batch, plus the records (local only)."""

        def arrival(record: dict[str, Any]) -> str:
            created = record["dynamodb"].get("ApproximateCreationDateTime", time.time())
            return datetime.fromtimestamp(float(created), UTC).isoformat().replace("+00:00", "Z")

        return {
            "requestContext": {
                "requestId": str(uuid.uuid4()),
                "functionArn": self.resources.attrs.get(f"{self.source.function_id}.Arn")
                if self.resources
                else self.source.function_id,
                "condition": condition,
                "approximateInvokeCount": self.attempts,
            },
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                **(response_context or {}),
            },
            "version": "1.0",
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "DDBStreamBatchInfo": {
                "shardId": self.reader.shard_id,
                "startSequenceNumber": batch[0]["dynamodb"]["SequenceNumber"],
                "endSequenceNumber": batch[-1]["dynamodb"]["SequenceNumber"],
                "approximateArrivalOfFirstRecord": arrival(batch[0]),
                "approximateArrivalOfLastRecord": arrival(batch[-1]),
                "batchSize": len(batch),
                "streamArn": self.source.stream_arn,
            },
            "Records": batch,
        }


class StreamEmulator:
    """Polls every stream of the template and drives its consumers, one thread per consumer."""

    def __init__(
        self,
        sources: list[StreamSource],
        invokers: dict[str, Invoke],
        *,
        endpoint: str,
        region: str,
        resources: LocalResources | None = None,
        settings: EmulatorSettings | None = None,
    ) -> None:
        self.sources = [s for s in sources if s.enabled]
        self.invokers = invokers
        self.settings = settings or EmulatorSettings()
        self.resources = resources
        self._client = aws_client("dynamodbstreams", endpoint, region)
        self._region = region
        self._readers: dict[tuple[str, str], ShardReader] = {}
        self.consumers: list[ShardConsumer] = []
        self._threads: list[threading.Thread] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()

    def _discover(self) -> None:
        """Find shards (and new ones, on endpoints that split shards) and attach consumers."""
        for source in self.sources:
            description = self._client.describe_stream(StreamArn=source.stream_arn)["StreamDescription"]
            for shard in description.get("Shards", []):
                key = (source.stream_arn, shard["ShardId"])
                with self._lock:
                    reader = self._readers.get(key)
                    if reader is None:
                        reader = ShardReader(self._client, source.stream_arn, shard["ShardId"], self._region)
                        self._readers[key] = reader
                    if any(c.source == source and c.reader is reader for c in self.consumers):
                        continue
                    consumer = ShardConsumer(
                        source, reader, self.invokers[source.function_id], self.resources, self.settings
                    )
                    self.consumers.append(consumer)
                thread = threading.Thread(
                    target=self._run, args=(consumer,), name=f"stream-{source.name}", daemon=True
                )
                self._threads.append(thread)
                thread.start()

    def _run(self, consumer: ShardConsumer) -> None:
        while not self._stop.is_set():
            try:
                busy = consumer.step()
            except Exception:
                log.exception("%s: stream emulator error", consumer.source.name)
                busy = False
            self._trim(consumer.reader)
            if not busy:
                self._stop.wait(self.settings.poll_interval)

    def _trim(self, reader: ShardReader) -> None:
        with self._lock:
            checkpoints = [c.checkpoint for c in self.consumers if c.reader is reader]
        if checkpoints and None not in checkpoints:
            reader.trim(min(c for c in checkpoints if c is not None))

    def start(self) -> None:
        self._discover()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=timeout)

    def idle(self) -> bool:
        """True when every consumer is caught up (tests and benchmarks wait on this)."""
        with self._lock:
            consumers = list(self.consumers)
        for consumer in consumers:
            if consumer.batch is not None:
                return False
            last = consumer.reader.last_sequence()
            if last is not None and (consumer.checkpoint is None or consumer.checkpoint < last):
                return False
        return True
