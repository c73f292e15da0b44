"""Stats table: pre-aggregated run statistics buckets and per-transition "applied" markers.

Item layout (pk / sk):
- bucket:  <scope>#<H|D> / <bucket label>#<dimension>
           scope = ALL | OWNER#<owner_id> | JOB#<job_id>; dimension = * | TYPE#<job_type>
           e.g. ALL#H / 2026-11-29T05#*   or   OWNER#u1#D / 2026-11-29#TYPE#demo
- marker:  APPLIED#<run_id> / <attempt:03>#<status>   (one per counted transition)

One transition is counted by ONE TransactWriteItems: a Put of its marker (condition: absent) plus
an Update per bucket (11 items). A redelivered record fails on the marker and changes nothing,
so the counters stay exact under at-least-once delivery. Min/max cannot be expressed as an ADD:
a bucket's `SET d_min = :d` is added to the same transaction only when the duration may be a
new extreme, with the condition `d_min > :d`, so it stays atomic with the counts.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from jobtracker_common.dynamo import from_item, serialize, to_item
from jobtracker_common.errors import TransientError
from jobtracker_common.statistics import (
    BucketAggregate,
    BucketKey,
    Granularity,
    StatsDelta,
    bucket_keys,
    describe,
    histogram_attribute,
    histogram_index,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

#: Markers only have to outlive stream redelivery (records live 24 h).
MARKER_TTL_SECONDS = 7 * 86_400
_TRANSACT_ATTEMPTS = 8
_RETRYABLE_REASONS = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
#: Bounds on (min, max) remembered per bucket; min only falls and max only rises, so a remembered
#: min is an upper bound of the real one: a duration at or above it can never be a new minimum.
_BOUNDS_CACHE_SIZE = 4_096


def marker_key(delta: StatsDelta) -> dict[str, Any]:
    return {
        "pk": {"S": f"APPLIED#{delta.run_id}"},
        "sk": {"S": f"{delta.attempt:03d}#{delta.status.value}"},
    }


class StatsRepository:
    def __init__(self, client: DynamoDBClient, table_name: str, *, clock: Any = time.time) -> None:
        self._client = client
        self._table = table_name
        self._clock = clock
        self._bounds: OrderedDict[tuple[str, str], tuple[int | None, int | None]] = OrderedDict()

    # ---- write: one transition, exactly once ---------------------------------------------
    def apply(self, delta: StatsDelta) -> bool:
        """Count `delta` once; False when it had been counted before (a redelivery)."""
        keys = bucket_keys(delta)
        for attempt in range(_TRANSACT_ATTEMPTS):
            if delta.counts_duration:
                self._load_bounds([k for k in keys if (k.pk, k.sk) not in self._bounds])
            items, extremes = self._transaction(delta, keys)
            try:
                self._client.transact_write_items(TransactItems=items)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "TransactionCanceledException":
                    raise
                reasons = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
                if reasons and reasons[0] == "ConditionalCheckFailed":
                    return False
                stale = [
                    keys[i - 1]
                    for i, code in enumerate(reasons)
                    if i > 0 and code == "ConditionalCheckFailed"
                ]
                for key in stale:
                    self._bounds.pop((key.pk, key.sk), None)
                if stale or any(code in _RETRYABLE_REASONS for code in reasons):
                    time.sleep(min(1.0, 0.02 * 2**attempt))
                    continue
                raise
            for bucket, (low, high) in extremes.items():
                self._remember(bucket, low, high)
            return True
        raise TransientError(f"statistics for run {delta.run_id} not written: transaction kept conflicting")

    def _transaction(
        self, delta: StatsDelta, keys: list[BucketKey]
    ) -> tuple[list[TransactWriteItemTypeDef], dict[tuple[str, str], tuple[int | None, int | None]]]:
        marker = {
            **marker_key(delta),
            "entity": {"S": "applied"},
            "expires_at": serialize(int(self._clock()) + MARKER_TTL_SECONDS),
        }
        items: list[TransactWriteItemTypeDef] = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": marker,
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
        ]
        extremes: dict[tuple[str, str], tuple[int | None, int | None]] = {}
        for key in keys:
            names = {"#c": delta.counter, "#exp": "expires_at"}
            values: dict[str, Any] = {":one": serialize(1), ":exp": serialize(key.expires_at())}
            adds = ["#c :one"]
            sets = ["#exp = :exp"]
            for i, (attr, value) in enumerate(describe(key, delta).items()):
                names[f"#s{i}"] = attr
                values[f":s{i}"] = serialize(value)
                sets.append(f"#s{i} = :s{i}")
            conditions: list[str] = []
            if delta.counts_duration:
                assert delta.duration_ms is not None
                duration = delta.duration_ms
                names.update(
                    {"#dc": "d_count", "#ds": "d_sum", "#h": histogram_attribute(histogram_index(duration))}
                )
                values[":d"] = serialize(duration)
                adds += ["#dc :one", "#ds :d", "#h :one"]
                low, high = self._bounds.get((key.pk, key.sk), (None, None))
                if low is None or duration < low:
                    names["#min"] = "d_min"
                    sets.append("#min = :d")
                    conditions.append("(attribute_not_exists(#min) OR #min > :d)")
                    low = duration
                if high is None or duration > high:
                    names["#max"] = "d_max"
                    sets.append("#max = :d")
                    conditions.append("(attribute_not_exists(#max) OR #max < :d)")
                    high = duration
                extremes[(key.pk, key.sk)] = (low, high)
            update: dict[str, Any] = {
                "TableName": self._table,
                "Key": {"pk": {"S": key.pk}, "sk": {"S": key.sk}},
                "UpdateExpression": "SET " + ", ".join(sets) + " ADD " + ", ".join(adds),
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
            if conditions:
                update["ConditionExpression"] = " AND ".join(conditions)
            items.append({"Update": update})  # type: ignore[typeddict-item]
        return items, extremes

    def _load_bounds(self, keys: list[BucketKey]) -> None:
        """Read the current min/max of buckets we know nothing about (consistent reads)."""
        for start in range(0, len(keys), 100):
            chunk = keys[start : start + 100]
            request: dict[str, Any] = {
                self._table: {
                    "Keys": [{"pk": {"S": k.pk}, "sk": {"S": k.sk}} for k in chunk],
                    "ProjectionExpression": "pk, sk, d_min, d_max",
                    "ConsistentRead": True,
                }
            }
            found: dict[tuple[str, str], dict[str, Any]] = {}
            for _ in range(_TRANSACT_ATTEMPTS):
                response = self._client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self._table, []):
                    data = from_item(item)
                    found[(data["pk"], data["sk"])] = data
                request = dict(response.get("UnprocessedKeys") or {})
                if not request:
                    break
                time.sleep(0.05)
            for key in chunk:
                data = found.get((key.pk, key.sk), {})
                self._remember((key.pk, key.sk), data.get("d_min"), data.get("d_max"), replace=True)

    def _remember(
        self, key: tuple[str, str], low: int | None, high: int | None, *, replace: bool = False
    ) -> None:
        if not replace and key in self._bounds:
            old_low, old_high = self._bounds[key]
            low = old_low if low is None else low if old_low is None else min(low, old_low)
            high = old_high if high is None else high if old_high is None else max(high, old_high)
        self._bounds[key] = (low, high)
        self._bounds.move_to_end(key)
        while len(self._bounds) > _BOUNDS_CACHE_SIZE:
            self._bounds.popitem(last=False)

    # ---- write: whole aggregates (backfill / rebuild) --------------------------------------
    def put_aggregates(self, aggregates: list[BucketAggregate]) -> None:
        """Overwrite bucket items with precomputed aggregates (no markers: not for the stream)."""
        requests: list[Any] = []
        for bucket in aggregates:
            data: dict[str, Any] = {
                "pk": bucket.key.pk,
                "sk": bucket.key.sk,
                "expires_at": bucket.key.expires_at(),
                "job_type": bucket.job_type,
                "owner_id": bucket.owner_id,
                **bucket.counters.to_attributes(),
            }
            requests.append({"PutRequest": {"Item": to_item(data)}})
        for start in range(0, len(requests), 25):
            pending = requests[start : start + 25]
            for attempt in range(_TRANSACT_ATTEMPTS):
                response = self._client.batch_write_item(RequestItems={self._table: pending})
                pending = list(response.get("UnprocessedItems", {}).get(self._table, []))
                if not pending:
                    break
                time.sleep(min(1.0, 0.05 * 2**attempt))
            if pending:
                raise TransientError(f"{len(pending)} statistics item(s) stayed unprocessed")

    # ---- read ----------------------------------------------------------------------------
    def read_buckets(
        self, scope: str, granularity: Granularity, first: str, last: str
    ) -> list[dict[str, Any]]:
        """Every bucket item of `scope` from label `first` to `last` inclusive (all dimensions)."""
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND sk BETWEEN :from AND :to",
            "ExpressionAttributeValues": {
                ":pk": {"S": f"{scope}#{granularity.code}"},
                ":from": {"S": first},
                # '~' sorts after every dimension suffix ('#*', '#TYPE#...').
                ":to": {"S": f"{last}#~"},
            },
        }
        items: list[dict[str, Any]] = []
        while True:
            response = self._client.query(**kwargs)
            items.extend(from_item(item) for item in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return items
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
