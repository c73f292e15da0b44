"""TransactWriteItems on the local stack's moto server: no whole-table copies, moto's semantics.

Every behaviour test runs against both moto's own implementation and ours, so a difference
between them fails here rather than in a test of the tracker.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import pytest
from botocore.exceptions import ClientError
from jobtracker_local.endpoint import fresh_moto
from jobtracker_local.moto_transactions import MOTO_TRANSACT_WRITE_ITEMS, transact_write_items
from jobtracker_local.resources import aws_client
from moto.dynamodb.models import DynamoDBBackend
from moto.dynamodb.models.table import Table

TABLE = "Things"


class Endpoint:
    def __init__(self, url: str) -> None:
        self.ddb = aws_client("dynamodb", url)
        self.streams = aws_client("dynamodbstreams", url)
        self.ddb.create_table(
            TableName=TABLE,
            KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        )

    def put(self, pk: str, **attrs: str) -> None:
        self.ddb.put_item(TableName=TABLE, Item=item(pk, **attrs))

    def get(self, pk: str) -> dict[str, Any] | None:
        found: dict[str, Any] | None = self.ddb.get_item(TableName=TABLE, Key={"pk": {"S": pk}}).get("Item")
        return found

    def stream_events(self) -> list[tuple[str, str]]:
        arn = self.ddb.describe_table(TableName=TABLE)["Table"]["LatestStreamArn"]
        (shard,) = self.streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"]
        iterator = self.streams.get_shard_iterator(
            StreamArn=arn, ShardId=shard["ShardId"], ShardIteratorType="TRIM_HORIZON"
        )["ShardIterator"]
        records = self.streams.get_records(ShardIterator=iterator, Limit=1000)["Records"]
        return [(r["eventName"], r["dynamodb"]["Keys"]["pk"]["S"]) for r in records]

    def transact(self, *items: dict[str, Any]) -> None:
        self.ddb.transact_write_items(TransactItems=list(items))


def item(pk: str, **attrs: str) -> dict[str, Any]:
    return {"pk": {"S": pk}, **{name: {"S": value} for name, value in attrs.items()}}


@pytest.fixture
def endpoint() -> Iterator[Endpoint]:
    with fresh_moto() as server:
        yield Endpoint(server.url)


@pytest.fixture(params=["moto", "fast"])
def implementation(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, endpoint: Endpoint
) -> Endpoint:
    chosen = MOTO_TRANSACT_WRITE_ITEMS if request.param == "moto" else transact_write_items
    monkeypatch.setattr(DynamoDBBackend, "transact_write_items", chosen)
    return endpoint


def test_the_local_moto_server_never_copies_a_table_for_a_transaction(endpoint, monkeypatch):
    # Given a table with history, served by the local stack's moto server
    for n in range(20):
        endpoint.put(f"old-{n}", status="done")
    copied: list[type] = []
    real_deepcopy = copy.deepcopy

    def spy(value: Any, memo: Any = None) -> Any:
        copied.append(type(value))
        return real_deepcopy(value, memo)

    monkeypatch.setattr(copy, "deepcopy", spy)

    # When a transaction writes one item and updates another
    endpoint.transact(
        {"Put": {"TableName": TABLE, "Item": item("new", status="queued")}},
        {
            "Update": {
                "TableName": TABLE,
                "Key": {"pk": {"S": "old-3"}},
                "UpdateExpression": "SET #s = :s",
                "ExpressionAttributeNames": {"#s": "status"},
                "ExpressionAttributeValues": {":s": {"S": "archived"}},
            }
        },
    )

    # Then it is applied, and no table (whose size is the history) was copied to do it
    assert endpoint.get("new") == item("new", status="queued")
    assert endpoint.get("old-3") == item("old-3", status="archived")
    assert Table not in copied


def test_a_transaction_applies_every_write_and_streams_each_once(implementation):
    # Given two items
    implementation.put("a", status="queued")
    implementation.put("gone")

    # When one transaction checks, inserts, updates and deletes
    implementation.transact(
        {
            "ConditionCheck": {
                "TableName": TABLE,
                "Key": {"pk": {"S": "a"}},
                "ConditionExpression": "attribute_exists(pk)",
            }
        },
        {
            "Put": {
                "TableName": TABLE,
                "Item": item("b", status="new"),
                "ConditionExpression": "attribute_not_exists(pk)",
            }
        },
        {"Delete": {"TableName": TABLE, "Key": {"pk": {"S": "gone"}}}},
    )

    # Then the writes are there, and the stream shows exactly them
    assert implementation.get("b") == item("b", status="new")
    assert implementation.get("gone") is None
    assert implementation.stream_events() == [
        ("INSERT", "a"),
        ("INSERT", "gone"),
        ("INSERT", "b"),
        ("REMOVE", "gone"),
    ]


def test_a_failed_condition_cancels_everything_with_a_reason_per_item(implementation):
    # Given an item whose status a transaction expects to be something else
    implementation.put("a", status="running")

    # When the transaction's second condition fails
    with pytest.raises(ClientError) as err:
        implementation.transact(
            {"Put": {"TableName": TABLE, "Item": item("b")}},
            {
                "Update": {
                    "TableName": TABLE,
                    "Key": {"pk": {"S": "a"}},
                    "UpdateExpression": "SET #s = :new",
                    "ConditionExpression": "#s = :old",
                    "ExpressionAttributeNames": {"#s": "status"},
                    "ExpressionAttributeValues": {":new": {"S": "done"}, ":old": {"S": "queued"}},
                    "ReturnValuesOnConditionCheckFailure": "ALL_OLD",
                }
            },
        )

    # Then it is cancelled with one reason per item (the failed one with the old item),
    # and nothing was written or streamed
    assert err.value.response["Error"]["Code"] == "TransactionCanceledException"
    reasons = err.value.response["CancellationReasons"]
    assert [r["Code"] for r in reasons] == ["None", "ConditionalCheckFailed"]
    assert reasons[1]["Item"] == item("a", status="running")
    assert implementation.get("b") is None
    assert implementation.get("a") == item("a", status="running")
    assert implementation.stream_events() == [("INSERT", "a")]


def test_a_write_that_fails_after_the_checks_rolls_back_the_earlier_writes(implementation):
    # Given an item whose attribute is a string
    implementation.put("a", count="not a number")

    # When a transaction inserts an item, then ADDs a number to that string
    with pytest.raises(ClientError) as err:
        implementation.transact(
            {"Put": {"TableName": TABLE, "Item": item("b")}},
            {
                "Update": {
                    "TableName": TABLE,
                    "Key": {"pk": {"S": "a"}},
                    "UpdateExpression": "ADD #c :one",
                    "ExpressionAttributeNames": {"#c": "count"},
                    "ExpressionAttributeValues": {":one": {"N": "1"}},
                }
            },
        )

    # Then the request is refused and the insert is undone, in the table and in its stream
    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert implementation.get("b") is None
    assert implementation.get("a") == item("a", count="not a number")
    assert implementation.stream_events() == [("INSERT", "a")]


def test_two_writes_to_one_item_are_refused(implementation):
    with pytest.raises(ClientError) as err:
        implementation.transact(
            {"Put": {"TableName": TABLE, "Item": item("a")}},
            {"Delete": {"TableName": TABLE, "Key": {"pk": {"S": "a"}}}},
        )

    assert err.value.response["Error"]["Code"] == "ValidationException"
    assert implementation.get("a") is None
