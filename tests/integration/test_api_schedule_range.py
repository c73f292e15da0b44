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


def test_a_job_stored_before_the_check_stays_readable_listable_and_deletable(api: ApiHarness) -> None:
    # Given a job the old rules let through: stored with an at() that is year 10000 in UTC
    created = api.call(
        "POST /jobs", body={"name": "x", "job_type": "demo", "schedule": "at(2030-01-01T00:00:00)"}
    )
    assert created.status == 201, created.body
    job_id = created.body["job_id"]
    api.ddb.update_item(
        TableName="JobsTable",
        Key={"job_id": {"S": job_id}},
        UpdateExpression="SET #s = :s, #tz = :tz",
        ExpressionAttributeNames={"#s": "schedule", "#tz": "timezone"},
        ExpressionAttributeValues={":s": {"S": "at(9999-12-31T23:00:00)"}, ":tz": {"S": "Etc/GMT+12"}},
    )
    # Then it reads with no upcoming fire times, in the listing too, and can be deleted
    one = api.call("GET /jobs/{job_id}", path_params={"job_id": job_id})
    assert (one.status, one.body["next_fire_times"]) == (200, [])
    listing = api.call("GET /jobs")
    assert listing.status == 200 and [j["job_id"] for j in listing.body["items"]] == [job_id]
    assert api.call("DELETE /jobs/{job_id}", path_params={"job_id": job_id}).status == 204
