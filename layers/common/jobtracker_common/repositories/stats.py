"""Stats table: pre-aggregated run statistics buckets and per-transition "applied" markers.

Item layout (pk / sk):
- bucket:  <scope>#<H|D> / <bucket label>#<dimension>
           scope = ALL | OWNER#<owner_id> | JOB#<job_id>; dimension = * | TYPE#<job_type>
           e.g. ALL#H / 2026-11-29T05#*   or   OWNER#u1#D / 2026-11-29#TYPE#demo
- marker:  APPLIED#<run_id> / <attempt:03>#<status>   (one per counted transition)

A transition is counted in the same TransactWriteItems as its marker Put (condition: absent).
A stream batch's transitions are packed into as few transactions as fit (a marker per
transition plus ONE merged update per touched bucket, <= 100 items), so a redelivered record
either finds its marker (skipped before writing) or fails on it (the transaction cancels):
counters stay exact under at-least-once delivery. Min/max cannot be expressed as an ADD: a
bucket's `SET d_min = :min` joins the same transaction only when the value may be a new
extreme (per-process bounds cache), with the condition `d_min > :min`, so it stays atomic with
the counts; a stale bound cancels the transaction, is re-read, and the transaction retried.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from jobtracker_common.dynamo import batch_write, from_item, serialize, to_item
from jobtracker_common.errors import TransientError
from jobtracker_common.statistics import (
    BucketAggregate,
    BucketKey,
    Granularity,
    StatsDelta,
    aggregate,
    bucket_keys,
)

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient
    from mypy_boto3_dynamodb.type_defs import TransactWriteItemTypeDef

#: Markers only have to outlive stream redelivery (records live 24 h).
MARKER_TTL_SECONDS = 7 * 86_400
_TRANSACT_ATTEMPTS = 8
MAX_TRANSACTION_ITEMS = 100
_RETRYABLE_REASONS = {"TransactionConflict", "ThrottlingError", "ProvisionedThroughputExceeded"}
#: Bounds on (min, max) remembered per bucket; min only falls and max only rises, so a remembered
#: min is an upper bound of the real one: a duration at or above it can never be a new minimum.
_BOUNDS_CACHE_SIZE = 4_096


def _marker_tuple(delta: StatsDelta) -> tuple[str, str]:
    return f"APPLIED#{delta.run_id}", f"{delta.attempt:03d}#{delta.status.value}"


def marker_key(delta: StatsDelta) -> dict[str, Any]:
    pk, sk = _marker_tuple(delta)
    return {"pk": {"S": pk}, "sk": {"S": sk}}


def _merge(deltas: list[StatsDelta]) -> list[BucketAggregate]:
    return list(aggregate(deltas).values())


class StatsRepository:
    def __init__(self, client: DynamoDBClient, table_name: str, *, clock: Any = time.time) -> None:
        self._client = client
        self._table = table_name
        self._clock = clock
        self._bounds: OrderedDict[tuple[str, str], tuple[int | None, int | None]] = OrderedDict()

    # ---- write: transitions, exactly once ----------------------------------------------
    def apply(self, delta: StatsDelta) -> bool:
        """Count `delta` once; False when it had been counted before (a redelivery)."""
        (result,) = self.apply_many([delta])
        if isinstance(result, Exception):
            raise result
        return result

    def apply_many(self, deltas: list[StatsDelta]) -> list[bool | Exception]:
        """Count each transition once. Per delta: True (counted now), False (counted before)
        or the error that kept it from being counted (the caller reports it as failed).

        Deltas are packed into as few transactions as fit in MAX_TRANSACTION_ITEMS (a marker
        per delta plus one merged update per bucket), so a batch of runs that ended in the same
        hour updates the hot overall bucket once, not once per run.
        """
        results: list[bool | Exception | None] = [None] * len(deltas)
        first_of: dict[tuple[str, str], int] = {}
        for index, delta in enumerate(deltas):
            marker = _marker_tuple(delta)
            if marker in first_of:
                results[index] = False  # the same transition twice in one batch
            else:
                first_of[marker] = index
        # Deltas of the same hour, owner and job share buckets: packed together, a chunk holds
        # more transitions per merged update.
        order = sorted(
            first_of.values(),
            key=lambda i: (Granularity.HOUR.label(deltas[i].at), deltas[i].owner_id, deltas[i].job_id),
        )
        for chunk in self._chunks(order, deltas):
            try:
                outcomes = self._apply_chunk([deltas[i] for i in chunk])
            except (ClientError, TransientError) as exc:
                # This chunk's records fail (and are redelivered); other chunks stand.
                outcomes = dict.fromkeys(range(len(chunk)), exc)
            for index, outcome in outcomes.items():
                results[chunk[index]] = outcome
        return [False if r is None else r for r in results]

    def _chunks(self, indexes: list[int], deltas: list[StatsDelta]) -> list[list[int]]:
        chunks: list[list[int]] = []
        current: list[int] = []
        keys: set[tuple[str, str]] = set()
        for index in indexes:
            mine = {(k.pk, k.sk) for k in bucket_keys(deltas[index])}
            if current and len(current) + 1 + len(keys | mine) > MAX_TRANSACTION_ITEMS:
                chunks.append(current)
                current, keys = [], set()
            current.append(index)
            keys |= mine
        if current:
            chunks.append(current)
        return chunks

    def _apply_chunk(self, chunk: list[StatsDelta]) -> dict[int, bool | Exception]:
        """Results by position in `chunk`."""
        results: dict[int, bool | Exception] = {}
        pending = dict(enumerate(chunk))
        for index in self._already_applied(chunk):
            results[index] = False
            pending.pop(index)
        for attempt in range(_TRANSACT_ATTEMPTS):
            if not pending:
                return results
            order = list(pending)
            buckets = _merge([pending[i] for i in order])
            unknown = [
                b.key
                for b in buckets
                if b.counters.duration_count and (b.key.pk, b.key.sk) not in self._bounds
            ]
            self._load_bounds(unknown)
            items, extremes = self._transaction([pending[i] for i in order], buckets)
            try:
                self._client.transact_write_items(TransactItems=items)
            except ClientError as exc:
                if exc.response["Error"]["Code"] != "TransactionCanceledException":
                    raise
                reasons = [r.get("Code", "None") for r in exc.response.get("CancellationReasons", [])]
                failed = {i for i, code in enumerate(reasons) if code == "ConditionalCheckFailed"}
                for position in sorted(failed):
                    if position < len(order):
                        # Counted meanwhile by a concurrent delivery.
                        results[order[position]] = False
                        pending.pop(order[position])
                    else:
                        bucket = buckets[position - len(order)].key
                        self._bounds.pop((bucket.pk, bucket.sk), None)
                if failed or any(code in _RETRYABLE_REASONS for code in reasons):
                    time.sleep(min(1.0, 0.02 * 2**attempt) if not failed else 0)
                    continue
                raise
            for bucket_key, (low, high) in extremes.items():
                self._remember(bucket_key, low, high)
            for index in pending:
                results[index] = True
            return results
        error = TransientError("statistics not written: the transaction kept conflicting")
        for index in pending:
            results[index] = error
        return results

    def already_counted(self, deltas: list[StatsDelta]) -> list[bool]:
        """Whether each transition's marker exists (consistent read; one BatchGet per 100)."""
        found = self._already_applied(deltas)
        return [i in found for i in range(len(deltas))]

    def _already_applied(self, chunk: list[StatsDelta]) -> set[int]:
        """Positions whose marker exists: a redelivered batch costs one read, no transaction."""
        wanted = {_marker_tuple(d): i for i, d in enumerate(chunk)}
        found = self._batch_get([{"pk": {"S": pk}, "sk": {"S": sk}} for pk, sk in wanted], "pk, sk")
        return {wanted[(item["pk"], item["sk"])] for item in found}

    def _transaction(
        self, deltas: list[StatsDelta], buckets: list[BucketAggregate]
    ) -> tuple[list[TransactWriteItemTypeDef], dict[tuple[str, str], tuple[int | None, int | None]]]:
        expires = serialize(int(self._clock()) + MARKER_TTL_SECONDS)
        items: list[TransactWriteItemTypeDef] = [
            {
                "Put": {
                    "TableName": self._table,
                    "Item": {**marker_key(delta), "entity": {"S": "applied"}, "expires_at": expires},
                    "ConditionExpression": "attribute_not_exists(pk)",
                }
            }
            for delta in deltas
        ]
        extremes: dict[tuple[str, str], tuple[int | None, int | None]] = {}
        for bucket in buckets:
            key, counters = bucket.key, bucket.counters
            names: dict[str, str] = {"#exp": "expires_at"}
            values: dict[str, Any] = {":exp": serialize(key.expires_at())}
            sets = ["#exp = :exp"]
            for attr, value in (("job_type", bucket.job_type), ("owner_id", bucket.owner_id)):
                if value is not None:
                    names[f"#{attr}"] = attr
                    values[f":{attr}"] = serialize(value)
                    sets.append(f"#{attr} = :{attr}")
            adds = []
            increments = {
                name: value
                for name, value in counters.to_attributes().items()
                if name not in ("d_min", "d_max")
            }
            for i, (attr, value) in enumerate(sorted(increments.items())):
                names[f"#n{i}"] = attr
                values[f":n{i}"] = serialize(value)
                adds.append(f"#n{i} :n{i}")
            conditions: list[str] = []
            if counters.duration_min is not None and counters.duration_max is not None:
                low, high = self._bounds.get((key.pk, key.sk), (None, None))
                if low is None or counters.duration_min < low:
                    names["#min"] = "d_min"
                    values[":min"] = serialize(counters.duration_min)
                    sets.append("#min = :min")
                    conditions.append("(attribute_not_exists(#min) OR #min > :min)")
                    low = counters.duration_min
                if high is None or counters.duration_max > high:
                    names["#max"] = "d_max"
                    values[":max"] = serialize(counters.duration_max)
                    sets.append("#max = :max")
                    conditions.append("(attribute_not_exists(#max) OR #max < :max)")
                    high = counters.duration_max
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

    def _batch_get(self, keys: list[dict[str, Any]], projection: str) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for start in range(0, len(keys), 100):
            request: dict[str, Any] = {
                self._table: {
                    "Keys": keys[start : start + 100],
                    "ProjectionExpression": projection,
                    "ConsistentRead": True,
                }
            }
            for attempt in range(_TRANSACT_ATTEMPTS):
                response = self._client.batch_get_item(RequestItems=request)
                found.extend(from_item(i) for i in response.get("Responses", {}).get(self._table, []))
                request = dict(response.get("UnprocessedKeys") or {})
                if not request:
                    break
                time.sleep(min(1.0, 0.05 * 2**attempt))
            if request:
                raise TransientError("statistics read stayed unprocessed after retries")
        return found

    def _load_bounds(self, keys: list[BucketKey]) -> None:
        """Read the current min/max of buckets we know nothing about (consistent reads)."""
        if not keys:
            return
        found = {
            (item["pk"], item["sk"]): item
            for item in self._batch_get(
                [{"pk": {"S": k.pk}, "sk": {"S": k.sk}} for k in keys], "pk, sk, d_min, d_max"
            )
        }
        for key in keys:
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
        left = batch_write(self._client, self._table, requests, attempts=_TRANSACT_ATTEMPTS)
        if left:
            raise TransientError(f"{len(left)} statistics item(s) stayed unprocessed")

    # ---- read ----------------------------------------------------------------------------
    def read_buckets(
        self, scope: str, granularity: Granularity, first: str, last: str
    ) -> list[dict[str, Any]]:
        """Every bucket item of `scope` from label `first` to `last` inclusive (all dimensions),
        as the low-level client returns them (attribute-value maps, for `Counters.add_item`)."""
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
            items.extend(response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return items
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
