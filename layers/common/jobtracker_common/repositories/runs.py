"""Runs table: run items, their log-entry chunks and idempotency markers, in one table.

Item layout (pk / sk):
- run:             RUN#<run_id> / META      (entity=run; GSIs by-owner, by-job, by-day, active)
- log chunk:       RUN#<run_id> / LOG#<attempt:03>#<seq:06>  (entity=log; up to CHUNK entries)
- dedupe marker:   DEDUPE#<key> / META      (entity=dedupe; maps a client request id to its run)

Only active runs carry `active_pk`/`active_sk`, so the `active` index is sparse; `active_pk`
is sharded because a constant key would make one hot partition. `active_sk` starts with the
lease expiry, so "leases expired before T" is a range query, not a filter. A run keeps the shard
it was created in until it ends (transitions never move it), so after the shard count is lowered
runs can sit in shards at or above the new count: the sweeper reads every shard there can be
(`MAX_ACTIVE_SHARDS`), the API's active view only the configured ones.

Every conditional write of a run (create, transition) also sets `write_id`, fresh per write.
When DynamoDB applied a write but its answer was lost (5xx, dropped connection), botocore
retries and the retry fails its own condition; the item returned with the failure
(`ReturnValuesOnConditionCheckFailure=ALL_OLD`) then carries our write id, and the write is
reported as done instead of as a duplicate or a conflict. When botocore gives up instead (an
error that may come after the write, retries exhausted), one consistent read of the run decides:
our write id (applied), an item the write's condition would refuse (refused), else the error.
"""

from __future__ import annotations

import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from typing import TYPE_CHECKING, Any

from botocore.exceptions import BotoCoreError, ClientError, ConnectionClosedError, ReadTimeoutError
from botocore.exceptions import ConnectionError as ConnectFailed  # no connection (refused, timed out)

from jobtracker_common.dynamo import batch_write, from_item, is_conditional_failure, serialize, to_item
from jobtracker_common.errors import (
    ConflictError,
    DuplicateError,
    InvalidTransitionError,
    NotFoundError,
    TransientError,
)
from jobtracker_common.models import LogEntry, Run, RunStatus, can_transition
from jobtracker_common.repositories.pagination import decode_cursor, encode_cursor
from jobtracker_common.settings import MAX_ACTIVE_SHARDS
from jobtracker_common.timeutil import to_iso

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

OWNER_INDEX = "by-owner"
JOB_INDEX = "by-job"
DAY_INDEX = "by-day"
ACTIVE_INDEX = "active"
META = "META"
#: Log entries per item: keeps items far below 400 KB while a 20-line run is one item.
LOG_CHUNK = 50

#: Names the write that last changed a run item (see the module docstring).
WRITE_ID = "write_id"
#: Attributes that are derived from the model when a run is written, not part of it.
_DERIVED = ("pk", "sk", "entity", "run_day", "active_pk", "active_sk", WRITE_ID)


#: Errors after which the write's outcome is unknown: the answer never came, or the last attempt
#: never connected after an earlier one may have been applied.
_UNANSWERED = (ReadTimeoutError, ConnectionClosedError, ConnectFailed)


def run_key(run_id: str) -> dict[str, Any]:
    return {"pk": {"S": f"RUN#{run_id}"}, "sk": {"S": META}}


def _marker_key(dedupe_key: str) -> dict[str, Any]:
    return {"pk": {"S": f"DEDUPE#{dedupe_key}"}, "sk": {"S": META}}


def active_shard(run_id: str, shards: int) -> str:
    return f"ACTIVE#{zlib.crc32(run_id.encode()) % shards}"


def _written_by(exc: ClientError, write_id: str) -> bool:
    """Whether a failed condition met the item our own earlier attempt of this write left."""
    response: dict[str, Any] = getattr(exc, "response", {})
    items = [response.get("Item")] + [r.get("Item") for r in response.get("CancellationReasons") or []]
    return any(item and item.get(WRITE_ID) == {"S": write_id} for item in items)


def _maybe_applied(exc: Exception) -> bool:
    """An error that may have come after DynamoDB applied the write (5xx, answer timed out).
    botocore raises only its last attempt's error: after retries, an earlier attempt (a timeout,
    a 5xx) may have been applied even if the last was throttled or never connected."""
    if isinstance(exc, ClientError):
        meta = exc.response.get("ResponseMetadata", {})
        return int(meta.get("HTTPStatusCode", 0)) >= 500 or int(meta.get("RetryAttempts", 0)) > 0
    return isinstance(exc, _UNANSWERED)


def _condition_failed(exc: Exception) -> bool:
    """A conditional failure proper (a cancelled transaction only if a condition cancelled it)."""
    reasons = (getattr(exc, "response", None) or {}).get("CancellationReasons")
    return reasons is None or any(r.get("Code") == "ConditionalCheckFailed" for r in reasons)


class RunsRepository:
    def __init__(self, client: DynamoDBClient, table_name: str, *, active_shards: int = 8) -> None:
        self._client = client
        self._table = table_name
        self._shards = active_shards

    # ---- mapping -------------------------------------------------------------------------
    def _to_item(self, run: Run) -> dict[str, Any]:
        data = run.model_dump(mode="json", exclude_none=True)
        data.update(pk=f"RUN#{run.run_id}", sk=META, entity="run", run_day=to_iso(run.queued_at)[:10])
        if run.status.is_active and run.lease_until is not None:
            data["active_pk"] = active_shard(run.run_id, self._shards)
            data["active_sk"] = f"{to_iso(run.lease_until)}#{run.run_id}"
        return to_item(data)

    @staticmethod
    def from_item(item: dict[str, Any]) -> Run:
        data = from_item(item)
        for key in _DERIVED:
            data.pop(key, None)
        return Run.model_validate(data)

    # ---- create --------------------------------------------------------------------------
    def create(self, run: Run, *, dedupe_key: str | None = None) -> Run:
        """Insert a new run, exactly once.

        Without `dedupe_key` the run id itself must be derived from the delivery (see
        `ids.deterministic_id`), so a duplicate delivery collides on the key. With a key, a
        marker item is written in the same transaction, so a repeated client request id maps
        to the first run.
        """
        write_id = uuid.uuid4().hex
        item = {**self._to_item(run), WRITE_ID: {"S": write_id}}

        def write() -> None:
            if dedupe_key is None:
                self._client.put_item(
                    TableName=self._table,
                    Item=item,
                    ConditionExpression="attribute_not_exists(pk)",
                    ReturnValuesOnConditionCheckFailure="ALL_OLD",
                )
            else:
                marker = to_item(
                    {
                        "pk": f"DEDUPE#{dedupe_key}",
                        "sk": META,
                        "entity": "dedupe",
                        "run_id": run.run_id,
                        "expires_at": run.expires_at,
                        WRITE_ID: write_id,
                    }
                )
                self._client.transact_write_items(
                    TransactItems=[
                        {
                            "Put": {
                                "TableName": self._table,
                                "Item": marker,
                                "ConditionExpression": "attribute_not_exists(pk)",
                                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                            }
                        },
                        {
                            "Put": {
                                "TableName": self._table,
                                "Item": item,
                                "ConditionExpression": "attribute_not_exists(pk)",
                                "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                            }
                        },
                    ]
                )

        # With a marker, the marker decides: a repeated request made a run under another id.
        key = run_key(run.run_id) if dedupe_key is None else _marker_key(dedupe_key)
        refused = self._conditional_write(write, key, write_id, refuses=lambda found: found is not None)
        if refused is None:
            return run
        if not _condition_failed(refused):
            # e.g. TransactionConflict with a concurrent transaction on the same items:
            # nothing was written and nobody is known to have won yet.
            raise TransientError(f"run {run.run_id} not created: {refused}") from refused
        existing = run.run_id if dedupe_key is None else self._dedupe_target(dedupe_key) or run.run_id
        raise DuplicateError(
            f"delivery already accepted as run {existing}", existing_id=existing
        ) from refused

    def _conditional_write(
        self,
        write: Callable[[], None],
        key: dict[str, Any],
        write_id: str,
        *,
        refuses: Callable[[dict[str, Any] | None], bool],
    ) -> Exception | None:
        """Perform a write that sets `write_id` on the item at `key`: None once it is applied
        (also when only its answer was lost), else the failure that refused it. `refuses(item)`
        is the write's condition failing on that item as read; other errors propagate."""
        try:
            write()
        except ClientError as exc:
            if is_conditional_failure(exc):
                return None if _written_by(exc, write_id) else exc
            if not _maybe_applied(exc):
                raise
            return self._settle(exc, key, write_id, refuses)
        except _UNANSWERED as exc:
            return self._settle(exc, key, write_id, refuses)
        return None

    def _settle(
        self,
        exc: Exception,
        key: dict[str, Any],
        write_id: str,
        refuses: Callable[[dict[str, Any] | None], bool],
    ) -> Exception | None:
        """botocore gave up on a write that may have been applied: read its item once."""
        try:
            item = self._client.get_item(
                TableName=self._table,
                Key=key,
                ConsistentRead=True,
                ProjectionExpression="#w, #s, #v",
                ExpressionAttributeNames={"#w": WRITE_ID, "#s": "status", "#v": "version"},
            ).get("Item")
        except (ClientError, BotoCoreError):
            raise exc from None  # still unknown: report the write's own error
        if item is not None and item.get(WRITE_ID) == {"S": write_id}:
            return None
        if refuses(item):
            return exc
        raise exc  # not applied, and nothing stands in its way: a later retry may succeed

    def _raise_unless_gone(self, run_id: str, exc: Exception) -> None:
        """botocore gave up on a delete that may have been applied: the run's absence says it was
        (its log chunks are then still due); otherwise, or if that cannot be read, `exc`."""
        try:
            found = "Item" in self._client.get_item(
                TableName=self._table, Key=run_key(run_id), ConsistentRead=True, ProjectionExpression="pk"
            )
        except (ClientError, BotoCoreError):
            raise exc from None
        if found:
            raise exc

    def _dedupe_target(self, dedupe_key: str) -> str | None:
        response = self._client.get_item(
            TableName=self._table, Key=_marker_key(dedupe_key), ConsistentRead=True
        )
        item = response.get("Item")
        return item["run_id"]["S"] if item else None

    # ---- read ----------------------------------------------------------------------------
    def get(self, run_id: str) -> Run:
        response = self._client.get_item(TableName=self._table, Key=run_key(run_id), ConsistentRead=True)
        if "Item" not in response:
            raise NotFoundError(f"run {run_id} not found")
        return self.from_item(response["Item"])

    def is_cancel_requested(self, run_id: str, *, consistent: bool = False) -> bool:
        """Polled by a running job (eventually consistent is enough there); `consistent` when
        a decision that would otherwise lose a just-made request depends on it."""
        response = self._client.get_item(
            TableName=self._table,
            Key=run_key(run_id),
            ProjectionExpression="cancel_requested",
            ConsistentRead=consistent,
        )
        return bool(response.get("Item", {}).get("cancel_requested", {}).get("BOOL", False))

    # ---- transitions ---------------------------------------------------------------------
    def transition(self, run: Run, new_status: RunStatus, **changes: Any) -> Run:
        """Move `run` to `new_status`, conditional on the status and version it was read with.

        A late or duplicated writer (an older version, or a run that already moved on) gets
        ConflictError; a move the state machine forbids gets InvalidTransitionError.
        """
        if not can_transition(run.status, new_status):
            raise InvalidTransitionError(
                f"run {run.run_id}: {run.status.value} -> {new_status.value} is not allowed"
            )
        updated = Run.model_validate(
            {**run.model_dump(), **changes, "status": new_status, "version": run.version + 1}
        )
        new_item = self._to_item(updated)
        old_item = self._to_item(run)
        sets: list[str] = []
        removes: list[str] = []
        write_id = uuid.uuid4().hex
        names: dict[str, str] = {"#status": "status", "#version": "version", "#write_id": WRITE_ID}
        values: dict[str, Any] = {
            ":prev_status": serialize(run.status.value),
            ":prev_version": serialize(run.version),
            ":write_id": serialize(write_id),
        }
        for i, (key, value) in enumerate(sorted(new_item.items())):
            if key in ("pk", "sk") or old_item.get(key) == value:
                continue
            names[f"#a{i}"] = key
            values[f":v{i}"] = value
            sets.append(f"#a{i} = :v{i}")
        for i, key in enumerate(sorted(set(old_item) - set(new_item))):
            names[f"#r{i}"] = key
            removes.append(f"#r{i}")
        sets.append("#write_id = :write_id")
        expression = "SET " + ", ".join(sets)
        if removes:
            expression += " REMOVE " + ", ".join(removes)

        def write() -> None:
            self._client.update_item(
                TableName=self._table,
                Key=run_key(run.run_id),
                UpdateExpression=expression,
                ConditionExpression="#status = :prev_status AND #version = :prev_version",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )

        def refuses(item: dict[str, Any] | None) -> bool:
            return (
                item is None
                or item.get("status") != values[":prev_status"]
                or (item.get("version") != values[":prev_version"])
            )

        refused = self._conditional_write(write, run_key(run.run_id), write_id, refuses=refuses)
        if refused is not None:
            raise ConflictError(
                f"run {run.run_id} changed since version {run.version} ({run.status.value}); "
                f"transition to {new_status.value} rejected"
            ) from refused
        return updated

    def request_cancel(self, run_id: str) -> None:
        """Ask a running run to stop at its next checkpoint (the runner then records `canceled`)."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key=run_key(run_id),
                UpdateExpression="SET cancel_requested = :t",
                ConditionExpression="#status = :running",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":t": {"BOOL": True}, ":running": {"S": RunStatus.RUNNING.value}},
            )
        except ClientError as exc:
            if is_conditional_failure(exc):
                raise ConflictError(f"run {run_id} is no longer running") from exc
            raise

    # ---- log entries ---------------------------------------------------------------------
    def append_logs(self, run: Run, entries: list[LogEntry], *, first_seq: int) -> int:
        """Write entries as chunk items with BatchWriteItem; returns the next sequence number."""
        items = []
        for offset in range(0, len(entries), LOG_CHUNK):
            chunk = entries[offset : offset + LOG_CHUNK]
            seq = first_seq + offset
            items.append(
                to_item(
                    {
                        "pk": f"RUN#{run.run_id}",
                        "sk": f"LOG#{run.attempt:03d}#{seq:06d}",
                        "entity": "log",
                        "entries": [e.model_dump(mode="json", exclude_none=True) for e in chunk],
                        "expires_at": run.expires_at,
                    }
                )
            )
        self._batch_put(items)
        return first_seq + len(entries)

    def _batch_put(self, items: list[dict[str, Any]]) -> None:
        left = batch_write(self._client, self._table, [{"PutRequest": {"Item": item}} for item in items])
        if left:
            raise ConflictError(f"{len(left)} log chunk(s) stayed unprocessed after retries")

    def list_logs(
        self, run_id: str, *, limit: int = 100, cursor: str | None = None
    ) -> tuple[list[LogEntry], str | None]:
        """Log entries in order; the cursor is (chunk key, offset within chunk)."""
        start = decode_cursor(cursor) or {}
        chunk_sk = start.get("sk", {}).get("S")
        offset = int(start.get("offset", {}).get("N", "0"))
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :log)",
            "ExpressionAttributeValues": {":pk": {"S": f"RUN#{run_id}"}, ":log": {"S": "LOG#"}},
            "ConsistentRead": True,
        }
        if chunk_sk:
            kwargs["KeyConditionExpression"] = "pk = :pk AND sk BETWEEN :from AND :to"
            kwargs["ExpressionAttributeValues"] = {
                ":pk": {"S": f"RUN#{run_id}"},
                ":from": {"S": chunk_sk},
                ":to": {"S": "LOG#~"},
            }
        out: list[LogEntry] = []
        for item in self._paginate_query(kwargs):
            entries = from_item(item)["entries"]
            sk = item["sk"]["S"]
            skip = offset if sk == chunk_sk else 0
            for index in range(skip, len(entries)):
                if len(out) == limit:
                    return out, encode_cursor({"sk": {"S": sk}, "offset": {"N": str(index)}})
                out.append(LogEntry.model_validate(entries[index]))
        return out, None

    def _paginate_query(self, kwargs: dict[str, Any]) -> Iterator[dict[str, Any]]:
        while True:
            response = self._client.query(**kwargs)
            yield from response.get("Items", [])
            if "LastEvaluatedKey" not in response:
                return
            kwargs = {**kwargs, "ExclusiveStartKey": response["LastEvaluatedKey"]}

    # ---- active runs ---------------------------------------------------------------------
    def shards(self, *, every: bool = False) -> Iterable[str]:
        """The configured shards; with `every`, all `MAX_ACTIVE_SHARDS` a run may be stored in."""
        return (f"ACTIVE#{n}" for n in range(MAX_ACTIVE_SHARDS if every else self._shards))

    def list_active(self, *, lease_before: datetime | None = None, every_shard: bool = False) -> list[Run]:
        """Active runs from the sparse index; with `lease_before`, only expired leases.

        Reads are proportional to the active runs (times the shard count), never to history.
        Only the configured shards are read unless `every_shard`: runs created while the count
        was higher stay in their shard until they end, and only `every_shard` finds them.
        """
        runs: list[Run] = []
        for shard in self.shards(every=every_shard):
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": ACTIVE_INDEX,
                "KeyConditionExpression": "active_pk = :s",
                "ExpressionAttributeValues": {":s": {"S": shard}},
            }
            if lease_before is not None:
                kwargs["KeyConditionExpression"] = "active_pk = :s AND active_sk < :t"
                kwargs["ExpressionAttributeValues"][":t"] = {"S": to_iso(lease_before)}
            runs.extend(self.from_item(item) for item in self._paginate_query(kwargs))
        return runs

    # ---- listings (API) ------------------------------------------------------------------
    #: Key attributes a cursor of each listing must carry (table key + index key).
    LISTING_KEYS = {
        OWNER_INDEX: ("pk", "sk", "owner_id", "run_id"),
        JOB_INDEX: ("pk", "sk", "job_id", "run_id"),
        DAY_INDEX: ("pk", "sk", "run_day", "run_id"),
    }

    def list_runs(
        self,
        *,
        owner_id: str | None = None,
        job_id: str | None = None,
        day: str | None = None,
        statuses: Iterable[RunStatus] = (),
        job_type: str | None = None,
        run_id_range: tuple[str, str] | None = None,
        limit: int = 50,
        cursor: str | None = None,
        max_pages: int = 10,
    ) -> tuple[list[Run], str | None]:
        """Runs newest first from the `by-job`, `by-owner` or `by-day` index (first one given).

        Filters on other attributes are applied by DynamoDB after the read; reading stops after
        `max_pages` pages, so a sparse filter returns fewer items plus a cursor rather than
        reading the whole history in one request. `run_id_range` bounds run ids (ULIDs, so
        a time range) in the key condition.
        """
        if job_id is not None:
            index, attr, value = JOB_INDEX, "job_id", job_id
        elif owner_id is not None:
            index, attr, value = OWNER_INDEX, "owner_id", owner_id
        elif day is not None:
            index, attr, value = DAY_INDEX, "run_day", day
        else:
            raise ValueError("list_runs needs job_id, owner_id or day")
        names: dict[str, str] = {"#p": attr}
        values: dict[str, Any] = {":p": serialize(value)}
        condition = "#p = :p"
        if run_id_range is not None:
            condition += " AND run_id BETWEEN :lo AND :hi"
            values[":lo"], values[":hi"] = serialize(run_id_range[0]), serialize(run_id_range[1])
        filters = []
        if owner_id is not None and attr != "owner_id":
            names["#o"] = "owner_id"
            values[":o"] = serialize(owner_id)
            filters.append("#o = :o")
        wanted = [s.value for s in statuses]
        if wanted:
            names["#s"] = "status"
            keys = []
            for i, status in enumerate(wanted):
                values[f":s{i}"] = serialize(status)
                keys.append(f":s{i}")
            filters.append(f"#s IN ({', '.join(keys)})")
        if job_type is not None:
            names["#t"] = "job_type"
            values[":t"] = serialize(job_type)
            filters.append("#t = :t")
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": index,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if filters:
            kwargs["FilterExpression"] = " AND ".join(filters)
        if start := decode_cursor(cursor):
            kwargs["ExclusiveStartKey"] = start
        key_attrs = self.LISTING_KEYS[index]
        runs: list[Run] = []
        for _ in range(max_pages):
            response = self._client.query(**kwargs)
            for item in response.get("Items", []):
                runs.append(self.from_item(item))
                if len(runs) == limit:
                    # Resume after the last item returned, not after the last item read.
                    return runs, encode_cursor({k: item[k] for k in key_attrs})
            last = response.get("LastEvaluatedKey")
            if not last:
                return runs, None
            kwargs["ExclusiveStartKey"] = last
        return runs, encode_cursor(kwargs["ExclusiveStartKey"])

    def delete(self, run: Run) -> None:
        """Delete a terminal run and its log chunks (the dedupe marker expires by TTL)."""
        if not run.status.is_terminal:
            raise ConflictError(f"run {run.run_id} is {run.status.value}; only finished runs can be deleted")
        try:
            self._client.delete_item(
                TableName=self._table,
                Key=run_key(run.run_id),
                ConditionExpression="#status = :status",
                ExpressionAttributeNames={"#status": "status"},
                ExpressionAttributeValues={":status": serialize(run.status.value)},
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if not is_conditional_failure(exc):
                if not _maybe_applied(exc):
                    raise
                self._raise_unless_gone(run.run_id, exc)
            # No item came back: it is already gone (ours, answer lost and retried by botocore,
            # or a concurrent delete), so deleting its log chunks is still due.
            elif exc.response.get("Item"):
                raise ConflictError(f"run {run.run_id} changed concurrently") from exc
        except _UNANSWERED as exc:
            self._raise_unless_gone(run.run_id, exc)
        keys = [
            {"pk": item["pk"], "sk": item["sk"]}
            for item in self._paginate_query(
                {
                    "TableName": self._table,
                    "KeyConditionExpression": "pk = :pk AND begins_with(sk, :log)",
                    "ExpressionAttributeValues": {":pk": {"S": f"RUN#{run.run_id}"}, ":log": {"S": "LOG#"}},
                    "ProjectionExpression": "pk, sk",
                }
            )
        ]
        # Chunks still unprocessed after the retries are left to their TTL (expires_at).
        batch_write(self._client, self._table, [{"DeleteRequest": {"Key": k}} for k in keys])
