"""Jobs table: one item per job definition, keyed by job_id; GSI `by-owner` for listings."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from jobtracker_common.dynamo import from_item, is_conditional_failure, serialize, to_item
from jobtracker_common.errors import ConflictError, NotFoundError
from jobtracker_common.models import Job, RunStatus
from jobtracker_common.repositories.pagination import decode_cursor, encode_cursor

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

OWNER_INDEX = "by-owner"
#: Written only by `record_last_run` (the tracker), never by a definition change.
_TRACKER_FIELDS = ("last_run_id", "last_run_status")


class JobsRepository:
    def __init__(self, client: DynamoDBClient, table_name: str) -> None:
        self._client = client
        self._table = table_name

    def get(self, job_id: str) -> Job:
        response = self._client.get_item(
            TableName=self._table, Key={"job_id": {"S": job_id}}, ConsistentRead=True
        )
        if "Item" not in response:
            raise NotFoundError(f"job {job_id} not found")
        return Job.model_validate(from_item(response["Item"]))

    def create(self, job: Job) -> Job:
        try:
            self._client.put_item(
                TableName=self._table,
                Item=to_item(job.model_dump(mode="json")),
                ConditionExpression="attribute_not_exists(job_id)",
            )
        except ClientError as exc:
            if is_conditional_failure(exc):
                raise ConflictError(f"job {job.job_id} already exists") from exc
            raise
        return job

    def replace(self, job: Job, *, expected_updated_at: str) -> Job:
        """Overwrite a job's definition, but only if nobody changed it since it was read
        (optimistic lock). The tracker's `last_run_*` are left as stored: they change without
        `updated_at`, so writing the values read earlier could roll a newer last run back."""
        item = to_item(job.model_dump(mode="json"))
        fields = [f for f in Job.model_fields if f not in ("job_id", *_TRACKER_FIELDS)]
        names = {f"#f{i}": field for i, field in enumerate(fields)}
        values: dict[str, Any] = {":seen": {"S": expected_updated_at}}
        sets, removes = [], []
        for i, field in enumerate(fields):
            if field in item:
                sets.append(f"#f{i} = :v{i}")
                values[f":v{i}"] = item[field]
            else:
                removes.append(f"#f{i}")
        update = "SET " + ", ".join(sets) + (" REMOVE " + ", ".join(removes) if removes else "")
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"job_id": {"S": job.job_id}},
                UpdateExpression=update,
                ConditionExpression="attribute_exists(job_id) AND updated_at = :seen",
                ExpressionAttributeNames=names,
                ExpressionAttributeValues=values,
            )
        except ClientError as exc:
            if is_conditional_failure(exc):
                raise ConflictError(f"job {job.job_id} was changed or deleted concurrently; retry") from exc
            raise
        return job

    def delete(self, job_id: str) -> None:
        try:
            self._client.delete_item(
                TableName=self._table,
                Key={"job_id": {"S": job_id}},
                ConditionExpression="attribute_exists(job_id)",
            )
        except ClientError as exc:
            if is_conditional_failure(exc):
                raise NotFoundError(f"job {job_id} not found") from exc
            raise

    def list_by_owner(
        self, owner_id: str, *, limit: int = 50, cursor: str | None = None
    ) -> tuple[list[Job], str | None]:
        kwargs: dict[str, Any] = {
            "TableName": self._table,
            "IndexName": OWNER_INDEX,
            "KeyConditionExpression": "owner_id = :o",
            "ExpressionAttributeValues": {":o": {"S": owner_id}},
            "ScanIndexForward": False,
            "Limit": limit,
        }
        if start := decode_cursor(cursor):
            kwargs["ExclusiveStartKey"] = start
        response = self._client.query(**kwargs)
        jobs = [Job.model_validate(from_item(i)) for i in response.get("Items", [])]
        return jobs, encode_cursor(response.get("LastEvaluatedKey"))

    def list_all(self, *, limit: int = 50, cursor: str | None = None) -> tuple[list[Job], str | None]:
        """Admin listing. Job definitions are few (not runs), so a paginated Scan is bounded."""
        kwargs: dict[str, Any] = {"TableName": self._table, "Limit": limit}
        if start := decode_cursor(cursor):
            kwargs["ExclusiveStartKey"] = start
        response = self._client.scan(**kwargs)
        jobs = [Job.model_validate(from_item(i)) for i in response.get("Items", [])]
        return jobs, encode_cursor(response.get("LastEvaluatedKey"))

    def record_last_run(self, job_id: str, run_id: str, status: RunStatus) -> bool:
        """Remember the job's latest terminal run; an older run never overwrites a newer one."""
        try:
            self._client.update_item(
                TableName=self._table,
                Key={"job_id": {"S": job_id}},
                UpdateExpression="SET last_run_id = :r, last_run_status = :s",
                ConditionExpression=(
                    "attribute_exists(job_id) AND (attribute_not_exists(last_run_id) OR last_run_id <= :r)"
                ),
                ExpressionAttributeValues={":r": serialize(run_id), ":s": serialize(status.value)},
            )
        except ClientError as exc:
            if is_conditional_failure(exc):
                return False
            raise
        return True
