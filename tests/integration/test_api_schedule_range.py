"""`at()` schedules whose UTC instant is outside Python's datetime range are refused (422) before
anything is written, so the owner's job listing keeps working."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.support.http import GROUP, ApiHarness, FakeClock, api_harness

NOW = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)


@pytest.fixture
def api(aws: Any) -> Iterator[ApiHarness]:
    with api_harness(aws, clock=FakeClock(NOW)) as harness:
        yield harness


@pytest.mark.parametrize(
    ("schedule", "timezone"),
    [("at(9999-12-31T23:00:00)", "Etc/GMT+12"), ("at(0001-01-01T00:00:00)", "Etc/GMT-14")],
)
def test_at_outside_the_utc_range_is_422_and_leaves_nothing_behind(
    api: ApiHarness, schedule: str, timezone: str
) -> None:
    # When a job is created with a one-time schedule that is a year 10000 / year 0 instant in UTC
    body = {"name": "x", "job_type": "demo", "schedule": schedule, "timezone": timezone}
    response = api.call("POST /jobs", body=body)

    # Then it is a validation error naming the schedule, not a 500
    assert response.status == 422, response.body
    assert "outside the years 1-9999 in UTC" in response.message
    assert response.body["details"][0]["field"] == "schedule"
    # ... no job and no schedule were written, and the owner's listing still answers
    assert api.ddb.scan(TableName="JobsTable")["Items"] == []
    assert api.scheduler.list_schedules(GroupName=GROUP)["Schedules"] == []
    listing = api.call("GET /jobs")
    assert listing.status == 200, listing.body
