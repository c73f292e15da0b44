"""Item order on the local stack's moto server: moto's order, without DynamoType comparisons."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest
from jobtracker_local.endpoint import fresh_moto
from jobtracker_local.moto_ordering import MOTO_ALL_ITEMS, all_items
from jobtracker_local.resources import REGION, aws_client
from moto.core import DEFAULT_ACCOUNT_ID
from moto.dynamodb.models import dynamodb_backends
from moto.dynamodb.models.dynamo_type import DynamoType


@pytest.fixture
def ddb() -> Iterator[Any]:
    with fresh_moto() as server:
        yield aws_client("dynamodb", server.url)


def create(ddb: Any, name: str, hash_type: str, range_type: str | None = None) -> None:
    keys = [{"AttributeName": "h", "KeyType": "HASH"}]
    attrs = [{"AttributeName": "h", "AttributeType": hash_type}]
    if range_type:
        keys.append({"AttributeName": "r", "KeyType": "RANGE"})
        attrs.append({"AttributeName": "r", "AttributeType": range_type})
    ddb.create_table(
        TableName=name, KeySchema=keys, AttributeDefinitions=attrs, BillingMode="PAY_PER_REQUEST"
    )


def table(name: str) -> Any:
    return dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].get_table(name)


NUMBERS = ["0", "-1", "1", "10", "9", "2.5", "-2.50", "1e3", "999999999999999999", "0.001", "-0.0001"]
STRINGS = ["a", "B", "b", "RUN#10", "RUN#9", "é", "z", "Ä", "RUN#1#LOG", "~", " "]


@pytest.mark.parametrize(
    ("hash_type", "range_type"), [("S", None), ("N", None), ("N", "S"), ("S", "N"), ("S", "S")]
)
def test_items_come_in_the_order_moto_gives_them(ddb, hash_type, range_type):
    # Given a table whose keys mix signs, decimals, case, accents and prefixes, written shuffled
    rng = random.Random(7)
    create(ddb, "Mixed", hash_type, range_type)
    values = {"S": STRINGS, "N": NUMBERS}
    rows = [
        {"h": {hash_type: h}, **({"r": {range_type: r}} if range_type else {})}
        for h in values[hash_type]
        for r in (values[range_type][:4] if range_type else [None])
    ]
    rng.shuffle(rows)
    for row in rows:
        ddb.put_item(TableName="Mixed", Item=row)

    # Then both orderings list the same items in the same order
    mixed = table("Mixed")
    assert [id(i) for i in all_items(mixed)] == [id(i) for i in MOTO_ALL_ITEMS(mixed)]
    assert len(all_items(mixed)) == len(rows)


def test_a_query_on_a_large_table_compares_no_dynamo_values_to_order_it(ddb, monkeypatch):
    # Given a table with 600 items in 200 partitions, served by the local stack's moto server
    create(ddb, "Runs", "S", "S")
    runs = table("Runs")
    for n in range(600):
        runs.put_item({"h": {"S": f"RUN#{n // 3}"}, "r": {"S": f"LOG#{n % 3}"}})
    comparisons = {"n": 0}
    real_lt = DynamoType.__lt__

    def counting_lt(self: DynamoType, other: DynamoType) -> bool:
        comparisons["n"] += 1
        return real_lt(self, other)

    monkeypatch.setattr(DynamoType, "__lt__", counting_lt)

    # When one partition is queried
    items = ddb.query(
        TableName="Runs", KeyConditionExpression="h = :h", ExpressionAttributeValues={":h": {"S": "RUN#77"}}
    )["Items"]

    # Then its three items come back, ordered without comparing the whole table (moto's own
    # ordering makes thousands of DynamoType comparisons here)
    assert [i["r"]["S"] for i in items] == ["LOG#0", "LOG#1", "LOG#2"]
    assert comparisons["n"] < 20
