"""Shared pieces of the benchmarks and the reliability suite.

Everything here talks to moto (in-process `mock_aws`, or a moto server on a loopback port):
the environment is forced to fake credentials first, so nothing can reach a real account.
"""

from __future__ import annotations

import io
import json
import math
import os
import random
import statistics
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
REGION = "us-east-1"

#: DynamoDB operations that write (and so consume write units).
WRITE_OPS = frozenset(
    {"PutItem", "UpdateItem", "DeleteItem", "BatchWriteItem", "TransactWriteItems", "ExecuteStatement"}
)
READ_OPS = frozenset({"GetItem", "BatchGetItem", "Query", "Scan", "TransactGetItems"})


def fake_aws_env() -> None:
    """Fake credentials and the template's table names; never a real account or profile."""
    from tests.support.aws import TABLE_ENV

    for key in ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_ENDPOINT_URL"):
        os.environ.pop(key, None)
    os.environ.update(
        {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_DEFAULT_REGION": REGION,
            "AWS_REGION": REGION,
            # Account-based endpoints (<account>.streams-ddb...) are not routed by moto in-process.
            "AWS_ACCOUNT_ID_ENDPOINT_MODE": "disabled",
            "POWERTOOLS_METRICS_NAMESPACE": "JobTrackerBench",
            "POWERTOOLS_DEV": "false",
            # EMF metric blobs on stdout would drown the tables; metrics are not what is measured.
            "POWERTOOLS_METRICS_DISABLED": "true",
            # The handlers' structured logs would drown the tables.
            "POWERTOOLS_LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "CRITICAL"),
            "LOG_LEVEL": os.environ.get("BENCH_LOG_LEVEL", "CRITICAL"),
            **TABLE_ENV,
        }
    )


@contextmanager
def isolated_aws() -> Iterator[Any]:
    """moto in-process with every template table; yields a plain DynamoDB client."""
    from tests.support.aws import create_tables, moto_aws

    fake_aws_env()
    with moto_aws():
        client = new_client("dynamodb")
        create_tables(client)
        yield client


def new_client(service: str, **kwargs: Any) -> Any:
    """A fresh client with the product's client config (standard retries), not the cached one,
    so hooks attached by a benchmark never leak into another."""
    import boto3
    from jobtracker_common.aws import CLIENT_CONFIG

    return boto3.session.Session().client(  # type: ignore[call-overload]
        service, region_name=REGION, config=kwargs.pop("config", CLIENT_CONFIG), **kwargs
    )


class FakeContext:
    """Enough of a LambdaContext for the handlers."""

    def __init__(self, remaining_ms: int = 900_000, name: str = "bench") -> None:
        self._deadline = time.monotonic() + remaining_ms / 1000
        self.function_name = name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{REGION}:123456789012:function:{name}"
        self.memory_limit_in_mb = 512
        self.aws_request_id = "bench-request"
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = "bench"

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


# ---- counting calls ------------------------------------------------------------------------
@dataclass
class CallLog:
    """API calls (after-call, once per call) and HTTP attempts (before-send, once per try)."""

    calls: Counter[str] = field(default_factory=Counter)
    attempts: Counter[str] = field(default_factory=Counter)
    items_read: int = 0
    items_written: int = 0
    moto_capacity: float = 0.0
    #: Seconds spent inside API calls (before-call to after-call): the service's share of a
    #: measured time, which on moto says nothing about DynamoDB.
    call_seconds: float = 0.0
    errors: Counter[str] = field(default_factory=Counter)
    params: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def total(self, ops: frozenset[str] | None = None) -> int:
        return sum(n for op, n in self.calls.items() if ops is None or op in ops)

    def reset(self) -> None:
        with self._lock:
            self.calls.clear()
            self.attempts.clear()
            self.errors.clear()
            self.params.clear()
            self.items_read = self.items_written = 0
            self.moto_capacity = 0.0
            self.call_seconds = 0.0


class CallCounter:
    """Counts one client's calls with botocore's event hooks; detach() removes them."""

    def __init__(self, client: Any, *, keep_params: bool = False, capacity: bool = False) -> None:
        self.client = client
        self.log = CallLog()
        self._keep = keep_params
        self._capacity = capacity
        service = client.meta.service_model.service_id.hyphenize()
        self._started = threading.local()
        self._hooks: list[tuple[str, Callable[..., Any]]] = [
            (f"before-call.{service}", self._before_call),
            (f"after-call.{service}", self._after_call),
            (f"before-send.{service}", self._before_send),
        ]
        if capacity:
            self._hooks.append((f"provide-client-params.{service}", self._ask_capacity))
        events = client.meta.events
        for name, hook in self._hooks:
            if name.startswith("before-send"):
                # First, so it sees every attempt before moto's stubber answers it.
                events.register_first(name, hook)
            else:
                events.register(name, hook)

    def detach(self) -> None:
        for name, hook in self._hooks:
            self.client.meta.events.unregister(name, hook)

    def _ask_capacity(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if "ReturnConsumedCapacity" in model.input_shape.members:
            params.setdefault("ReturnConsumedCapacity", "TOTAL")

    def _before_call(self, **_: Any) -> None:
        self._started.at = time.perf_counter()

    def _before_send(self, event_name: str, **_: Any) -> None:
        op = event_name.rsplit(".", 1)[-1]
        with self.log._lock:
            self.log.attempts[op] += 1

    def _after_call(self, parsed: dict[str, Any], model: Any, **kwargs: Any) -> None:
        op = model.name
        elapsed = time.perf_counter() - getattr(self._started, "at", time.perf_counter())
        with self.log._lock:
            self.log.call_seconds += elapsed
            self.log.calls[op] += 1
            if error := parsed.get("Error", {}).get("Code"):
                self.log.errors[error] += 1
            if op in ("Query", "Scan"):
                self.log.items_read += int(parsed.get("ScannedCount", parsed.get("Count", 0)))
            elif op == "GetItem":
                self.log.items_read += 1 if "Item" in parsed else 0
            elif op == "BatchGetItem":
                self.log.items_read += sum(len(v) for v in parsed.get("Responses", {}).values())
            capacity = parsed.get("ConsumedCapacity")
            for entry in capacity if isinstance(capacity, list) else [capacity] if capacity else []:
                self.log.moto_capacity += float(entry.get("CapacityUnits", 0))
            if self._keep:
                self.log.params.append((op, kwargs.get("context", {}).get("params", {})))


@contextmanager
def counting(client: Any, **kwargs: Any) -> Iterator[CallLog]:
    counter = CallCounter(client, **kwargs)
    try:
        yield counter.log
    finally:
        counter.detach()


class RequestRecorder:
    """Keeps every write request's parameters (for write-unit estimates)."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.requests: list[tuple[str, dict[str, Any]]] = []
        client.meta.events.register("provide-client-params.dynamodb", self._record)

    def _record(self, params: dict[str, Any], model: Any, **_: Any) -> None:
        if model.name in WRITE_OPS:
            self.requests.append((model.name, json.loads(json.dumps(params, default=str))))

    def detach(self) -> None:
        self.client.meta.events.unregister("provide-client-params.dynamodb", self._record)


# ---- DynamoDB size arithmetic (write units are size-based; moto's are constants) -----------
def attribute_size(value: dict[str, Any]) -> int:
    """Bytes of one attribute value, by DynamoDB's published sizing rules."""
    ((kind, inner),) = value.items()
    if kind == "S":
        return len(inner.encode())
    if kind == "N":
        digits = len(str(inner).lstrip("-").replace(".", "").lstrip("0")) or 1
        return math.ceil(digits / 2) + 1
    if kind == "B":
        return len(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(len(s.encode()) for s in inner)
    if kind == "NS":
        return sum(attribute_size({"N": n}) for n in inner)
    if kind == "L":
        return 3 + sum(1 + attribute_size(v) for v in inner)
    if kind == "M":
        return 3 + sum(1 + len(k.encode()) + attribute_size(v) for k, v in inner.items())
    return 0


def item_size(item: dict[str, Any]) -> int:
    return sum(len(name.encode()) + attribute_size(value) for name, value in item.items())


def write_units(item: dict[str, Any]) -> int:
    """Standard write units for one item write (1 per started KB)."""
    return max(1, math.ceil(item_size(item) / 1024))


# ---- figures -------------------------------------------------------------------------------
@dataclass
class Row:
    metric: str
    value: float | str | None
    unit: str
    target: str
    passed: bool | None  # None: not measured (a part that does not exist yet, or skipped)
    note: str = ""

    def as_json(self) -> dict[str, Any]:
        return {
            "metric": self.metric,
            "value": self.value,
            "unit": self.unit,
            "target": self.target,
            "pass": self.passed,
            "note": self.note,
        }


def not_measured(metric: str, target: str, why: str, unit: str = "") -> Row:
    return Row(metric, None, unit, target, None, f"not measured: {why}")


def fmt(value: float | str | None) -> str:
    if value is None:
        return "-"
    if isinstance(value, str):
        return value
    if float(value).is_integer():
        return f"{int(value):,}"
    return f"{value:,.3f}" if abs(value) < 10 else f"{value:,.1f}"


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "  ".join("-" * w for w in widths)
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)), line]
    out += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) for r in rows]
    return "\n".join(out)


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def percentile(values: list[float], pct: float) -> float:
    """Nearest-rank percentile."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, math.ceil(pct / 100 * len(ordered)))
    return ordered[rank - 1]


def utcnow() -> datetime:
    return datetime.now(UTC)


def module_exists(module: str) -> bool:
    import importlib.util

    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:
        return False


def seed_items(table_name: str, base: dict[str, Any], overrides: Iterator[dict[str, Any]]) -> int:
    """Insert many items into moto's in-process table directly: `base` with per-item overrides
    (DynamoDB JSON). Bench-only: moto's API path validates every item's size attribute by
    attribute (about 5 ms per run item), so 100,000 items through BatchWriteItem would take
    minutes; the reads that are measured still go through the real API. No stream records
    are emitted for seeded items."""
    from moto.core import DEFAULT_ACCOUNT_ID  # type: ignore[attr-defined]
    from moto.dynamodb.models import dynamodb_backends
    from moto.dynamodb.models.dynamo_type import DynamoType, Item, LimitedSizeDict

    table: Any = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].get_table(table_name)
    hash_attr, range_attr = table.hash_key_attr, table.range_key_attr
    converted = {k: DynamoType(v) for k, v in base.items()}
    count = 0
    for extra in overrides:
        attrs = LimitedSizeDict.__new__(LimitedSizeDict)
        dict.__init__(attrs, converted)
        for key, value in extra.items():
            dict.__setitem__(attrs, key, DynamoType(value))
        item: Any = Item.__new__(Item)
        item.hash_key = attrs[hash_attr]
        item.range_key = attrs[range_attr] if range_attr else None
        item.attrs = attrs
        if range_attr:
            table.items[item.hash_key][item.range_key] = item
        else:
            table.items[item.hash_key] = item
        count += 1
    return count


# ---- fault injection -----------------------------------------------------------------------
class _RawBody(io.BytesIO):
    """The raw stream botocore reads a response body from."""

    def stream(self, **_: Any) -> Iterator[bytes]:
        contents = self.read()
        while contents:
            yield contents
            contents = self.read()


class ErrorInjector:
    """Answers a share of one client's HTTP attempts with an AWS error response instead of
    sending them, from `before-send` (registered first, so its response is the one used).
    botocore then parses the error like a real one and its retry handler decides; every
    injected attempt never reached the service, so a retry cannot duplicate a write."""

    def __init__(
        self,
        client: Any,
        *,
        rate: float,
        status: int,
        body: dict[str, Any],
        json_protocol: bool = True,
        operations: frozenset[str] | None = None,
        seed: int = 7,
        after_apply: bool = False,
    ) -> None:
        self.client = client
        self.rate = rate
        self.status = status
        self.body = json.dumps(body).encode()
        self.operations = operations
        self.injected = 0
        self.passed = 0
        self._random = random.Random(seed)
        self._lock = threading.Lock()
        self._json = json_protocol
        #: True: the request still reaches the service (applied), only its answer is replaced, as
        #: when a response is lost after DynamoDB wrote (timeout, dropped connection).
        self._after_apply = after_apply
        self._event = f"before-send.{client.meta.service_model.service_id.hyphenize()}"
        client.meta.events.register_first(self._event, self._maybe_fail)

    def detach(self) -> None:
        self.client.meta.events.unregister(self._event, self._maybe_fail)

    def _maybe_fail(self, request: Any, event_name: str, **_: Any) -> Any:
        from botocore.awsrequest import AWSResponse

        op = event_name.rsplit(".", 1)[-1]
        with self._lock:
            hit = (self.operations is None or op in self.operations) and self._random.random() < self.rate
            if not hit:
                self.passed += 1
                return None
            self.injected += 1
        # botocore calls every before-send handler (`emit`, not `emit_until_response`) and keeps
        # the first response; moto's in-process stubber runs after this one and would still
        # apply the request. A URL it does not serve makes it pass, as a throttled request
        # never reaches the table.
        if not self._after_apply:
            request.url = "http://fault-injected.invalid/"
        content_type = "application/x-amz-json-1.0" if self._json else "application/json"
        headers = {"Content-Type": content_type, "x-amzn-RequestId": "injected", "x-amzn-ErrorType": ""}
        error_type = json.loads(self.body).get("__type", "")
        headers["x-amzn-ErrorType"] = error_type.rsplit("#", 1)[-1]
        raw: Any = _RawBody(self.body)
        return AWSResponse(request.url, self.status, headers, raw)  # type: ignore[arg-type]


def throttle_dynamodb(client: Any, rate: float, **kwargs: Any) -> ErrorInjector:
    return ErrorInjector(
        client,
        rate=rate,
        status=400,
        body={
            "__type": "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "message": "injected: the level of configured provisioned throughput for the table was exceeded",
        },
        **kwargs,
    )


def is_retryable_error(code: str) -> bool:
    """Whether botocore's standard retry mode retries this error code (asked of botocore)."""
    from botocore.retries import standard

    throttled = getattr(standard.ThrottledRetryableChecker(), "_throttled_error_codes", [])
    transient = getattr(standard.TransientRetryableChecker(), "_transient_error_codes", [])
    return code in throttled or code in transient
