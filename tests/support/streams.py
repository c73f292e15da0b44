"""Read a table's DynamoDB stream from moto as Lambda would deliver it (with eventSourceARN).

Tests drive stream consumers in-process with these records; moto's own event source mapping
is never used (it empties the stream).
"""

from __future__ import annotations

from typing import Any

import boto3
from botocore.config import Config
from jobtracker_local.functions import json_roundtrip
from jobtracker_local.patterns import matches_any, parse_pattern

from tests.support.aws import REGION


class StreamTail:
    """Every new record of `table_name`'s stream since the previous `read()` (first: all)."""

    def __init__(self, table_name: str, *, region: str = REGION) -> None:
        ddb = boto3.client("dynamodb", region_name=region)
        # Stream ARNs carry the account id; botocore would then address an account endpoint
        # (<account>.streams-ddb...) that moto does not intercept.
        self._streams = boto3.client(
            "dynamodbstreams", region_name=region, config=Config(account_id_endpoint_mode="disabled")
        )
        self.stream_arn: str = ddb.describe_table(TableName=table_name)["Table"]["LatestStreamArn"]
        self._region = region
        self._iterators: dict[str, str | None] = {}

    def read(self) -> list[dict[str, Any]]:
        shards = self._streams.describe_stream(StreamArn=self.stream_arn)["StreamDescription"]["Shards"]
        out: list[dict[str, Any]] = []
        for shard in shards:
            shard_id = shard["ShardId"]
            if shard_id not in self._iterators:
                self._iterators[shard_id] = self._streams.get_shard_iterator(
                    StreamArn=self.stream_arn, ShardId=shard_id, ShardIteratorType="TRIM_HORIZON"
                )["ShardIterator"]
            while (iterator := self._iterators[shard_id]) is not None:
                response = self._streams.get_records(ShardIterator=iterator, Limit=1000)
                records = response.get("Records", [])
                self._iterators[shard_id] = response.get("NextShardIterator")
                out.extend(self._lambda_record(dict(r)) for r in records)
                if len(records) < 1000:
                    break
        return out

    def _lambda_record(self, record: dict[str, Any]) -> dict[str, Any]:
        event: dict[str, Any] = json_roundtrip(record)
        event.setdefault("eventSource", "aws:dynamodb")
        event.setdefault("awsRegion", self._region)
        event["eventSourceARN"] = self.stream_arn
        return event


def matching(records: list[dict[str, Any]], patterns: list[str]) -> list[dict[str, Any]]:
    """The records a Lambda event source with these FilterCriteria patterns would deliver."""
    parsed = [parse_pattern(p) for p in patterns]
    return [r for r in records if matches_any(parsed, r)]


def lambda_event(records: list[dict[str, Any]]) -> dict[str, Any]:
    return {"Records": records}


def stream_record(
    new_item: dict[str, Any] | None,
    old_item: dict[str, Any] | None,
    *,
    sequence: int,
    created: int = 0,
    stream_arn: str = "arn:aws:dynamodb:us-east-1:123456789012:table/RunsTable/stream/test",
) -> dict[str, Any]:
    """A Lambda DynamoDB stream record (NEW_AND_OLD_IMAGES) built from low-level items, shaped
    like the ones StreamTail reads from moto: for tests that need many records quickly."""
    event_name = "INSERT" if old_item is None else "REMOVE" if new_item is None else "MODIFY"
    image = new_item if new_item is not None else old_item
    assert image is not None
    data: dict[str, Any] = {
        "ApproximateCreationDateTime": created,
        "Keys": {"pk": image["pk"], "sk": image["sk"]},
        "SequenceNumber": str(sequence),
        "SizeBytes": 1,
        "StreamViewType": "NEW_AND_OLD_IMAGES",
    }
    if new_item is not None:
        data["NewImage"] = new_item
    if old_item is not None:
        data["OldImage"] = old_item
    return {
        "eventID": f"event-{sequence}",
        "eventName": event_name,
        "eventVersion": "1.1",
        "eventSource": "aws:dynamodb",
        "awsRegion": REGION,
        "dynamodb": data,
        "eventSourceARN": stream_arn,
    }
