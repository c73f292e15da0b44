"""The reliability scenarios of `make reliability`, at small sizes, inside the test suite.

Each scenario builds its own moto world, injects its fault, and reports what was lost or
duplicated; the figures themselves are in docs/reliability.md.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator

import pytest

from bench import reliability


@pytest.fixture(autouse=True)
def _restore_environ() -> Iterator[None]:
    """The scenarios set their fake environment on os.environ; give the next test its own."""
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)


@pytest.mark.parametrize("name", list(reliability.SCENARIOS))
def test_scenario_loses_and_duplicates_nothing(name: str) -> None:
    # Given a fault from the scenario catalogue, at the suite's small sizes
    # When the scenario runs
    outcome = reliability.run_scenario(name, reliability.SMALL)
    # Then nothing was lost or duplicated (or the part it needs is not there yet)
    if outcome.passed is None:
        pytest.skip(outcome.observed)
    assert outcome.passed, (outcome.observed, outcome.notes)
    assert outcome.lost == 0 and outcome.duplicated == 0


def test_throttling_scenario_notices_loss_when_nothing_retries() -> None:
    # Given DynamoDB throttling and a client that never retries
    sizes = dataclasses.replace(reliability.SMALL, throttled_runs=6, max_attempts=1)
    # When the throttling scenario runs
    outcome = reliability.run_scenario("ddb-throttle", sizes)
    # Then it reports the failure instead of passing
    assert outcome.passed is False
    assert (outcome.lost or 0) > 0 or "surfaced errors" in outcome.observed


def test_injected_throttling_never_reaches_the_table() -> None:
    # Given a DynamoDB client whose every attempt is answered with throttling, and no retries
    from botocore.config import Config
    from botocore.exceptions import ClientError

    from bench.common import isolated_aws, new_client, throttle_dynamodb

    with isolated_aws() as observer:
        client = new_client("dynamodb", config=Config(retries={"total_max_attempts": 1, "mode": "standard"}))
        throttle_dynamodb(client, rate=1.0)
        # When it writes an item
        with pytest.raises(ClientError) as raised:
            client.put_item(TableName="JobsTable", Item={"job_id": {"S": "j1"}})
        # Then the caller sees DynamoDB's throttling error and the table never got the item,
        # as with a real throttled request (a retry can then never write twice)
        assert raised.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
        assert observer.scan(TableName="JobsTable")["Count"] == 0
