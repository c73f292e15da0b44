"""Notifications table: one record per (run, event, attempt, recipient) and one per digest.

Item layout (pk / sk):
- notification: RUN#<run_id> / N#<event>#<attempt:03>#<user_id>   (entity=notification)
- digest:       DIGEST#<user_id> / <period key>                    (entity=digest)

A record is the exactly-once guard for one email. States:

    (new, claimed) sending --SES ok--------------> sent
                      |   --permanent SES error---> failed_permanent
                      |   --SES read timeout------> unconfirmed (may have gone out: never re-sent)
                      |   --transient error-------> pending --claim--> sending ...
                      +--lease expired (worker died mid-send) --sweep--> unconfirmed
    (new) held    quiet hours; claimed by the digest function once due
    (new) queued  hourly/daily; folded into one digest email -> digested
    (new) skipped recipient not provisioned / no email / switched the event off while waiting

Claiming is a conditional write that sets `claim_token` and `lease_until`; every later write
is conditional on that token, so a stale worker can never overwrite a newer outcome. A
`sending` record is never claimed again. Records waiting for a time (held, queued, pending
retries, and claims until their lease expires) carry `due_pk`/`due_at`, so the `due` index
is sparse: the digest function reads only work whose time has come. `due_pk` is sharded.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator, Sequence
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pydantic import Field

from jobtracker_common.dynamo import batch_write, from_item, is_conditional_failure, serialize, to_item
from jobtracker_common.models import StrictModel
from jobtracker_common.timeutil import to_iso

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

DUE_INDEX = "due"
DUE_SHARDS = 4


class NotificationState(StrEnum):
    PENDING = "pending"
    SENDING = "sending"
    SENT = "sent"
    FAILED_PERMANENT = "failed_permanent"
    UNCONFIRMED = "unconfirmed"
    HELD = "held"
    QUEUED = "queued"
    DIGESTED = "digested"
    SKIPPED = "skipped"

    @property
    def is_final(self) -> bool:
        return self in _FINAL


_FINAL = frozenset(
    {
        NotificationState.SENT,
        NotificationState.FAILED_PERMANENT,
        NotificationState.UNCONFIRMED,
        NotificationState.DIGESTED,
        NotificationState.SKIPPED,
    }
)


class Delivery(StrEnum):
    IMMEDIATE = "immediate"
    HELD = "held"
    DIGEST = "digest"


def due_shard(user_id: str) -> str:
    return f"DUE#{zlib.crc32(user_id.encode()) % DUE_SHARDS}"


class NotificationRecord(StrictModel):
    pk: str
    sk: str
    entity: str = "notification"
    user_id: str
    state: NotificationState
    #: Run-level event (the key) and the email this recipient gets for it (may differ: recovery).
    event: str = ""
    kind: str = ""
    run_id: str = ""
    delivery: Delivery = Delivery.IMMEDIATE
    email: str | None = None
    #: Snapshot of what the email shows, so held/digest sends never re-read the run.
    payload: dict[str, Any] = Field(default={})
    created_at: str
    updated_at: str | None = None
    send_attempts: int = 0
    claim_token: str | None = None
    lease_until: str | None = None
    message_id: str | None = None
    error: str | None = None
    reason: str | None = None
    due_pk: str | None = None
    due_at: str | None = None
    digest_period: str | None = None
    #: Digest records: the notification keys ("pk|sk") the digest email lists.
    items: list[str] | None = None
    expires_at: int | None = None

    @property
    def key(self) -> str:
        return f"{self.pk}|{self.sk}"


def notification_key(run_id: str, event: str, attempt: int, user_id: str) -> tuple[str, str]:
    return f"RUN#{run_id}", f"N#{event}#{attempt:03d}#{user_id}"


def digest_key(user_id: str, period: str) -> tuple[str, str]:
    return f"DIGEST#{user_id}", period


def split_key(key: str) -> tuple[str, str]:
    pk, sk = key.split("|", 1)
    return pk, sk


class NotificationsRepository:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    @staticmethod
    def _key(pk: str, sk: str) -> dict[str, Any]:
        return {"pk": {"S": pk}, "sk": {"S": sk}}

    @staticmethod
    def from_item(item: dict[str, Any]) -> NotificationRecord:
        return NotificationRecord.model_validate(from_item(item))

    @staticmethod
    def _to_item(record: NotificationRecord) -> dict[str, Any]:
        return to_item(record.model_dump(mode="json", exclude_none=True))

    # ---- create --------------------------------------------------------------------------
    def create(self, record: NotificationRecord) -> bool:
        """Insert a record unless one exists for the key; False means "already there"."""
        try:
            self._client.put_item(
                TableName=self._table,
                Item=self._to_item(record),
                ConditionExpression="attribute_not_exists(pk)",
            )
        except ClientError as exc:
            if is_conditional_failure(exc):
                return False
            raise
        return True

    def get(self, pk: str, sk: str) -> NotificationRecord | None:
        response = self._client.get_item(TableName=self._table, Key=self._key(pk, sk), ConsistentRead=True)
        item = response.get("Item")
        return self.from_item(item) if item else None

    # ---- claim / outcome -----------------------------------------------------------------
    def claim(
        self,
        pk: str,
        sk: str,
        *,
        token: str,
        now: datetime,
        lease_until: datetime,
        from_states: tuple[NotificationState, ...],
        due_pk: str,
        due_by: datetime | None = None,
        items: list[str] | None = None,
    ) -> NotificationRecord | None:
        """Take the record for one send attempt; only one worker can hold it at a time.

        Returns the record as claimed (the update's new image: no read needed to record the
        outcome as a whole item), or None when the record was not in a claimable state.
        """
        states = {f":s{i}": serialize(s.value) for i, s in enumerate(from_states)}
        condition = f"#state IN ({', '.join(states)})"
        values: dict[str, Any] = {
            **states,
            ":sending": serialize(NotificationState.SENDING.value),
            ":token": serialize(token),
            ":lease": serialize(to_iso(lease_until)),
            ":now": serialize(to_iso(now)),
            ":one": serialize(1),
        }
        # The claim also enters the due index at its lease expiry: if this worker dies, the
        # digest function's sweep finds the orphaned claim and records it as unconfirmed.
        update = (
            "SET #state = :sending, claim_token = :token, lease_until = :lease, updated_at = :now, "
            "due_pk = :dpk, due_at = :lease ADD send_attempts :one"
        )
        values[":dpk"] = serialize(due_pk)
        if items is not None:
            update = update.replace("updated_at = :now", "updated_at = :now, #items = :items")
            values[":items"] = serialize(items)
        if due_by is not None:
            condition += " AND due_at <= :due"
            values[":due"] = serialize(to_iso(due_by) + "~")
        claimed = self._update(
            pk,
            sk,
            update,
            condition,
            values,
            names={"#state": "state"} | self._items_name(items),
            returning=True,
        )
        return self.from_item(claimed) if claimed is not None else None

    @staticmethod
    def _items_name(items: list[str] | None) -> dict[str, str]:
        return {"#items": "items"} if items is not None else {}

    def mark_sent(self, pk: str, sk: str, *, token: str, message_id: str, now: datetime) -> bool:
        return self._finish(pk, sk, token, NotificationState.SENT, now, message_id=message_id)

    def mark_failed_permanent(self, pk: str, sk: str, *, token: str, error: str, now: datetime) -> bool:
        return self._finish(pk, sk, token, NotificationState.FAILED_PERMANENT, now, error=error)

    def mark_unknown(self, pk: str, sk: str, *, token: str, error: str, now: datetime) -> bool:
        return self._finish(pk, sk, token, NotificationState.UNCONFIRMED, now, error=error)

    def _finish(
        self,
        pk: str,
        sk: str,
        token: str,
        state: NotificationState,
        now: datetime,
        *,
        message_id: str | None = None,
        error: str | None = None,
    ) -> bool:
        values: dict[str, Any] = {
            ":state": serialize(state.value),
            ":token": serialize(token),
            ":now": serialize(to_iso(now)),
        }
        sets = ["#state = :state", "updated_at = :now"]
        if message_id is not None:
            sets.append("message_id = :mid")
            values[":mid"] = serialize(message_id)
        if error is not None:
            sets.append("#error = :err")
            values[":err"] = serialize(error[:1000])
        return self._conditional_update(
            pk,
            sk,
            f"SET {', '.join(sets)} REMOVE lease_until, due_pk, due_at",
            "claim_token = :token",
            values,
            names={"#state": "state"} | ({"#error": "error"} if error is not None else {}),
        )

    def put_outcomes(self, records: Sequence[NotificationRecord]) -> list[NotificationRecord]:
        """Write finished records whole, 25 per BatchWriteItem; returns the ones left unwritten.

        Unconditional, so only for records this worker claimed (with the same put it wrote the
        claim) and finished: a `sending` record is never claimed again, so no other worker can
        hold it; the only other writer is the sweep, whose `unconfirmed` (lease expired) the
        outcome may overwrite with what really happened.
        """
        by_key = {(r.pk, r.sk): r for r in records}
        left = batch_write(
            self._client,
            self._table,
            [{"PutRequest": {"Item": self._to_item(r)}} for r in by_key.values()],
        )
        unwritten = [i["PutRequest"]["Item"] for i in left]
        return [by_key[(item["pk"]["S"], item["sk"]["S"])] for item in unwritten]

    def release(
        self,
        pk: str,
        sk: str,
        *,
        token: str,
        error: str,
        now: datetime,
        retry_at: datetime,
        payload: dict[str, Any] | None = None,
    ) -> bool:
        """A send that failed in a retryable way: back to `pending`.

        The stream retry claims it again; failing that (record dead-lettered), the digest
        function's sweep does once `retry_at` has passed, because it stays in the due index.
        `payload`: what the email shows, for a claim written without it (the next sender renders
        from the record).
        """
        update = "SET #state = :pending, #error = :err, updated_at = :now, due_at = :retry_at"
        values: dict[str, Any] = {
            ":pending": serialize(NotificationState.PENDING.value),
            ":sending": serialize(NotificationState.SENDING.value),
            ":err": serialize(error[:1000]),
            ":token": serialize(token),
            ":now": serialize(to_iso(now)),
            ":retry_at": serialize(to_iso(retry_at)),
        }
        if payload is not None:
            update += ", payload = :payload"
            values[":payload"] = serialize(payload)
        return self._conditional_update(
            pk,
            sk,
            f"{update} REMOVE lease_until",
            "claim_token = :token AND #state = :sending",
            values,
            names={"#state": "state", "#error": "error"},
        )

    def mark_unconfirmed(self, pk: str, sk: str, *, now: datetime) -> bool:
        """A claim whose lease ran out: the worker died mid-send; SES may or may not have sent."""
        return self._conditional_update(
            pk,
            sk,
            "SET #state = :unconfirmed, #error = :err, updated_at = :now REMOVE due_pk, due_at",
            "#state = :sending AND lease_until < :now",
            {
                ":unconfirmed": serialize(NotificationState.UNCONFIRMED.value),
                ":sending": serialize(NotificationState.SENDING.value),
                ":err": serialize("worker stopped between claim and recording the SES result"),
                ":now": serialize(to_iso(now)),
            },
            names={"#state": "state", "#error": "error"},
        )

    def mark_digested(self, pk: str, sk: str, *, digest: str, now: datetime) -> bool:
        return self._conditional_update(
            pk,
            sk,
            "SET #state = :digested, message_id = :digest, updated_at = :now REMOVE due_pk, due_at",
            "#state = :queued",
            {
                ":digested": serialize(NotificationState.DIGESTED.value),
                ":queued": serialize(NotificationState.QUEUED.value),
                ":digest": serialize(digest),
                ":now": serialize(to_iso(now)),
            },
            names={"#state": "state"},
        )

    def skip_waiting(self, pk: str, sk: str, *, reason: str, now: datetime) -> bool:
        """A held/queued record that should no longer go out (e.g. the user switched it off)."""
        return self._conditional_update(
            pk,
            sk,
            "SET #state = :skipped, reason = :reason, updated_at = :now REMOVE due_pk, due_at",
            "#state IN (:held, :queued)",
            {
                ":skipped": serialize(NotificationState.SKIPPED.value),
                ":held": serialize(NotificationState.HELD.value),
                ":queued": serialize(NotificationState.QUEUED.value),
                ":reason": serialize(reason),
                ":now": serialize(to_iso(now)),
            },
            names={"#state": "state"},
        )

    def postpone(self, pk: str, sk: str, *, until: datetime, now: datetime) -> bool:
        """A held/queued record whose time came inside the user's current quiet hours waits for
        their end (they may have been set or widened after it was queued)."""
        return self._conditional_update(
            pk,
            sk,
            "SET due_at = :until, updated_at = :now",
            "#state IN (:held, :queued)",
            {
                ":until": serialize(to_iso(until)),
                ":held": serialize(NotificationState.HELD.value),
                ":queued": serialize(NotificationState.QUEUED.value),
                ":now": serialize(to_iso(now)),
            },
            names={"#state": "state"},
        )

    def move_to_period(self, pk: str, sk: str, *, period: str, now: datetime) -> bool:
        """A queued item that missed its period's digest (stream lag) goes into a follow-up one."""
        return self._conditional_update(
            pk,
            sk,
            "SET digest_period = :p, updated_at = :now",
            "#state = :queued",
            {
                ":p": serialize(period),
                ":queued": serialize(NotificationState.QUEUED.value),
                ":now": serialize(to_iso(now)),
            },
            names={"#state": "state"},
        )

    def _conditional_update(
        self,
        pk: str,
        sk: str,
        update: str,
        condition: str,
        values: dict[str, Any],
        *,
        names: dict[str, str],
    ) -> bool:
        return self._update(pk, sk, update, condition, values, names=names) is not None

    def _update(
        self,
        pk: str,
        sk: str,
        update: str,
        condition: str,
        values: dict[str, Any],
        *,
        names: dict[str, str],
        returning: bool = False,
    ) -> dict[str, Any] | None:
        """The conditional update; None if the condition failed, else the new item (if `returning`)."""
        try:
            response = self._client.update_item(
                TableName=self._table,
                Key=self._key(pk, sk),
                UpdateExpression=update,
                ConditionExpression=f"attribute_exists(pk) AND ({condition})",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
                ReturnValues="ALL_NEW" if returning else "NONE",
            )
        except ClientError as exc:
            if is_conditional_failure(exc):
                return None
            raise
        return dict(response.get("Attributes", {}))

    # ---- queries -------------------------------------------------------------------------
    def list_due(self, now: datetime) -> Iterator[NotificationRecord]:
        """Held and queued records whose time has come, across every shard of the sparse index."""
        for shard in range(DUE_SHARDS):
            kwargs: dict[str, Any] = {
                "TableName": self._table,
                "IndexName": DUE_INDEX,
                "KeyConditionExpression": "due_pk = :s AND due_at <= :now",
                "ExpressionAttributeValues": {
                    ":s": {"S": f"DUE#{shard}"},
                    ":now": {"S": to_iso(now) + "~"},
                },
            }
            while True:
                response = self._client.query(**kwargs)
                for item in response.get("Items", []):
                    yield self.from_item(item)
                if "LastEvaluatedKey" not in response:
                    break
                kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]

    def list_for_run(self, run_id: str) -> list[NotificationRecord]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "KeyConditionExpression": "pk = :pk AND begins_with(sk, :n)",
            "ExpressionAttributeValues": {":pk": {"S": f"RUN#{run_id}"}, ":n": {"S": "N#"}},
            "ConsistentRead": True,
        }
        records: list[NotificationRecord] = []
        while True:
            response = self._client.query(**kwargs)
            records.extend(self.from_item(i) for i in response.get("Items", []))
            if "LastEvaluatedKey" not in response:
                return records
            kwargs["ExclusiveStartKey"] = response["LastEvaluatedKey"]
