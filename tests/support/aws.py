"""moto-backed AWS for the integration tier: tables built from infra/template.yaml."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3
from jobtracker_local.template import load_template

REGION = "us-east-1"
ACCOUNT = "123456789012"

#: Environment the template would give functions, with table names = logical ids locally.
TABLE_ENV = {
    "JOBS_TABLE_NAME": "JobsTable",
    "RUNS_TABLE_NAME": "RunsTable",
    "STATS_TABLE_NAME": "StatsTable",
    "USERS_TABLE_NAME": "UsersTable",
    "NOTIFICATIONS_TABLE_NAME": "NotificationsTable",
}

_serialize_lock = threading.RLock()
_patched: list[bool] = []


def serialize_dynamodb_writes() -> None:
    """Make moto's DynamoDB apply each request atomically, as DynamoDB does per item.

    moto checks a ConditionExpression and then writes without a lock, so two threads can both
    pass the check; real DynamoDB never lets that happen. Concurrency tests need the real rule.
    """
    if _patched:
        return
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action

    def call_action(self: Any) -> Any:
        with _serialize_lock:
            return original(self)

    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
    _patched.append(True)


def create_tables(client: Any, names: dict[str, str] | None = None) -> dict[str, str]:
    """Create every table of the template; returns logical id -> table name."""
    template = load_template()
    created = {}
    for logical_id, kwargs in template.table_definitions().items():
        name = (names or {}).get(logical_id, logical_id)
        client.create_table(TableName=name, **kwargs)
        if ttl := template.ttl_attribute(logical_id):
            client.update_time_to_live(
                TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl}
            )
        created[logical_id] = name
    return created


@contextmanager
def moto_aws() -> Iterator[None]:
    from moto import mock_aws

    serialize_dynamodb_writes()
    with mock_aws():
        yield


def dynamodb() -> Any:
    return boto3.client("dynamodb", region_name=REGION)
