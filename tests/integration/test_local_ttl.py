"""TTL on the local stack's moto server: expired items go, as DynamoDB's TTL deletes them."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from jobtracker_local.endpoint import expire_ttl_items, fresh_moto
from jobtracker_local.resources import LocalResources, aws_client, provision
from jobtracker_local.template import load_template

YEAR = 365 * 86400


@pytest.fixture
def stack() -> Iterator[LocalResources]:
    with fresh_moto() as server:
        yield provision(LocalResources(load_template(), server.url))


def put(resources: LocalResources, logical_id: str, key: dict[str, Any], **attrs: Any) -> None:
    aws_client("dynamodb", resources.endpoint).put_item(
        TableName=resources.refs[logical_id], Item={**key, **attrs}
    )


def keys_left(resources: LocalResources, logical_id: str) -> set[str]:
    items = aws_client("dynamodb", resources.endpoint).scan(TableName=resources.refs[logical_id])["Items"]
    return {
        str(next(iter(item[name].values()))) for item in items for name in ("pk", "job_id") if name in item
    }


def run_key(name: str) -> dict[str, Any]:
    return {"pk": {"S": name}, "sk": {"S": "META"}}


def test_expired_items_are_deleted_and_streamed_like_dynamodbs_ttl(stack):
    # Given run items that expired, will expire, have no or a non-number expiry, or expired
    # more than five years ago (which DynamoDB's TTL leaves alone)
    now = time.time()
    put(stack, "RunsTable", run_key("expired"), expires_at={"N": str(int(now - 10))})
    put(stack, "RunsTable", run_key("later"), expires_at={"N": str(int(now + 3600))})
    put(stack, "RunsTable", run_key("never"))
    put(stack, "RunsTable", run_key("text"), expires_at={"S": str(int(now - 10))})
    put(stack, "RunsTable", run_key("ancient"), expires_at={"N": str(int(now - 6 * YEAR))})
    # And an expired-looking attribute on a table without TTL
    put(stack, "JobsTable", {"job_id": {"S": "job-1"}}, expires_at={"N": str(int(now - 10))})

    # When the TTL sweep runs
    removed = expire_ttl_items(stack.account, stack.region, now)

    # Then only the expired run is gone
    assert removed == 1
    assert keys_left(stack, "RunsTable") == {"later", "never", "text", "ancient"}
    assert keys_left(stack, "JobsTable") == {"job-1"}
    # And its deletion is a REMOVE record on the stream, as a TTL deletion is
    streams = aws_client("dynamodbstreams", stack.endpoint)
    arn = stack.attrs["RunsTable.StreamArn"]
    (shard,) = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
    iterator = streams.get_shard_iterator(
        StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
    )["ShardIterator"]
    records = streams.get_records(ShardIterator=iterator)["Records"]
    removals = [r["dynamodb"]["Keys"]["pk"]["S"] for r in records if r["eventName"] == "REMOVE"]
    assert removals == ["expired"]
