"""moto-backed AWS for the integration tier: tables built from infra/template.yaml."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import boto3

# The product's fix for moto's non-atomic conditional writes, shared with the local stack.
from jobtracker_local.endpoint import serialize_dynamodb_writes
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
