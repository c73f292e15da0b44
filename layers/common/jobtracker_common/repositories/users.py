"""Users table: one item per user, keyed by `user_id` (the JWT `sub`)."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError
from pydantic import ValidationError as PydanticValidationError

from jobtracker_common.dynamo import from_item, is_conditional_failure, serialize, to_item
from jobtracker_common.errors import ConflictError, NotFoundError, TransientError
from jobtracker_common.observability import logger as make_logger
from jobtracker_common.timeutil import Clock, to_iso, utcnow
from jobtracker_common.users import NotificationPreferences, PreferencesPatch, User

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

_BATCH_GET_LIMIT = 100


class UsersRepository:
    def __init__(
        self,
        client: DynamoDBClient,
        table_name: str,
        *,
        clock: Clock = utcnow,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._client = client
        self._table = table_name
        self._clock = clock
        self._sleep = sleep

    @staticmethod
    def from_item(item: dict[str, Any]) -> User:
        data = from_item(item)
        data.pop("version", None)  # optimistic-lock counter, not part of the model
        try:
            return User.model_validate(data)
        except PydanticValidationError as exc:
            preferences = data.get("preferences")
            errors = exc.errors()
            if not isinstance(preferences, dict) or not all(
                len(e["loc"]) > 1 and e["loc"][0] == "preferences" for e in errors
            ):
                raise
            broken = {e["loc"][1] for e in errors}
            # Preferences stored under looser, older rules (e.g. quiet hours "22:00\n") must not
            # make the user unreadable: the notifier reads a run's recipients in one batch, so
            # one such user would fail everyone's email. Those fields read as their defaults
            # until the user saves them again; logged, so an operator can repair them.
            make_logger("users").warning(
                "stored preferences no longer valid; read as defaults",
                extra={"user_id": data.get("user_id"), "fields": sorted(map(str, broken))},
            )
            repaired = {k: v for k, v in preferences.items() if k not in broken}
            return User.model_validate({**data, "preferences": repaired})

    def find(self, user_id: str) -> User | None:
        response = self._client.get_item(
            TableName=self._table, Key={"user_id": {"S": user_id}}, ConsistentRead=True
        )
        item = response.get("Item")
        return self.from_item(item) if item else None

    def get(self, user_id: str) -> User:
        user = self.find(user_id)
        if user is None:
            raise NotFoundError(f"user {user_id} not found")
        return user

    def get_many(self, user_ids: Iterable[str]) -> dict[str, User]:
        """Users by id (missing ones are simply absent), in BatchGetItem pages of 100.

        Keys DynamoDB leaves unprocessed (throttling) are retried with backoff; if some are still
        unread, TransientError: an absent user means "not provisioned", and the notifier would
        record a skipped email for a user who exists.
        """
        wanted = list(dict.fromkeys(user_ids))
        found: dict[str, User] = {}
        for start in range(0, len(wanted), _BATCH_GET_LIMIT):
            keys: list[Any] = [{"user_id": {"S": u}} for u in wanted[start : start + _BATCH_GET_LIMIT]]
            request: dict[str, Any] = {self._table: {"Keys": keys, "ConsistentRead": True}}
            for attempt in range(8):
                if attempt:
                    self._sleep(min(1.0, 0.05 * 2 ** (attempt - 1)))
                response = self._client.batch_get_item(RequestItems=request)
                for item in response.get("Responses", {}).get(self._table, []):
                    user = self.from_item(item)
                    found[user.user_id] = user
                request = dict(response.get("UnprocessedKeys") or {})
                if not request:
                    break
            if request:
                unread = len(request[self._table]["Keys"])
                raise TransientError(f"{unread} user record(s) stayed unprocessed after retries")
        return found

    @staticmethod
    def _to_item(user: User) -> dict[str, Any]:
        data = user.model_dump(mode="json", exclude_none=True)
        # Fixed-width timestamps: `updated_at` doubles as the optimistic-lock token.
        data["created_at"] = to_iso(user.created_at)
        if user.updated_at is not None:
            data["updated_at"] = to_iso(user.updated_at)
        return to_item(data)

    def put(self, user: User) -> User:
        self._client.put_item(TableName=self._table, Item=self._to_item(user))
        return user

    def get_or_create(
        self, user_id: str, *, email: str | None = None, display_name: str | None = None
    ) -> User:
        """Provision a user from token claims on first sight; later calls return the stored user.

        A token whose email differs from the stored one (changed at the identity provider)
        updates it, so notifications follow the address the user signs in with.
        """
        existing = self.find(user_id)
        if existing is not None:
            if email and email != existing.email:
                return self._set_profile(existing, email=email)
            return existing
        now = self._clock()
        user = User(user_id=user_id, email=email, display_name=display_name, created_at=now, updated_at=now)
        try:
            self._client.put_item(
                TableName=self._table,
                Item=self._to_item(user),
                ConditionExpression="attribute_not_exists(user_id)",
            )
        except ClientError as exc:
            if not is_conditional_failure(exc):
                raise
            return self.get(user_id)  # provisioned concurrently by another request
        return user

    provision = get_or_create

    def _set_profile(self, user: User, *, email: str) -> User:
        updated = user.model_copy(update={"email": email, "updated_at": self._clock()})
        User.model_validate(updated.model_dump())  # re-validate the email
        self._client.update_item(
            TableName=self._table,
            Key={"user_id": {"S": user.user_id}},
            UpdateExpression="SET email = :e, updated_at = :u",
            ConditionExpression="attribute_exists(user_id)",
            ExpressionAttributeValues={
                ":e": serialize(email),
                ":u": serialize(to_iso(updated.updated_at or self._clock())),
            },
        )
        return updated

    def update_preferences(self, user_id: str, patch: PreferencesPatch, *, attempts: int = 5) -> User:
        """Merge `patch` into the stored preferences (optimistic lock on a `version` counter).

        Two concurrent PATCHes of different keys both survive: the loser re-reads and re-merges.
        """
        for _ in range(attempts):
            response = self._client.get_item(
                TableName=self._table, Key={"user_id": {"S": user_id}}, ConsistentRead=True
            )
            if "Item" not in response:
                raise NotFoundError(f"user {user_id} not found")
            seen = response["Item"].get("version", {}).get("N")
            user = self.from_item(response["Item"])
            merged: NotificationPreferences = user.preferences.merge(patch)
            now = self._clock()
            updated = user.model_copy(update={"preferences": merged, "updated_at": now})
            values: dict[str, Any] = {
                ":p": serialize(merged.model_dump(mode="json", exclude_none=True)),
                ":u": serialize(to_iso(now)),
                ":one": serialize(1),
            }
            # A counter, not the timestamp: two writes in the same millisecond must still conflict.
            if seen is None:
                condition = "attribute_exists(user_id) AND attribute_not_exists(version)"
            else:
                condition = "version = :seen"
                values[":seen"] = serialize(int(seen))
            try:
                self._client.update_item(
                    TableName=self._table,
                    Key={"user_id": {"S": user_id}},
                    UpdateExpression="SET preferences = :p, updated_at = :u ADD version :one",
                    ConditionExpression=condition,
                    ExpressionAttributeValues=values,
                )
            except ClientError as exc:
                if is_conditional_failure(exc):
                    continue
                raise
            return updated
        raise ConflictError(f"preferences of user {user_id} kept changing concurrently; retry")
