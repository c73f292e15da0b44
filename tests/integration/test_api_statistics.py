"""Statistics: the caller's own numbers (everyone's for admins), by window and filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from jobtracker_common.models import RunStatus
from jobtracker_common.statistics import StatsDelta, aggregate

from tests.support.http import ALL_SCOPES, FakeClock, api_harness

NOW = datetime(2026, 11, 29, 12, 30, tzinfo=UTC)
ADMIN = [*ALL_SCOPES, "admin"]


@pytest.fixture
def api(aws):
    with api_harness(aws, clock=FakeClock(NOW)) as harness:
        yield harness


def deltas(*, owner="user-alice", job_id="01JOB0000000000000000000AA", job_type="demo", runs=()):
    return [
        StatsDelta(
            run_id=f"{owner}-{job_id}-{i}",
            attempt=1,
            status=status,
            job_id=job_id,
            job_type=job_type,
            owner_id=owner,
            at=NOW - timedelta(minutes=10 + i),
            duration_ms=duration,
        )
        for i, (status, duration) in enumerate(runs)
    ]


def record(api, *groups):
    """Given these transitions were counted (bucket items are written whole, so all at once)."""
    api.services.stats.put_aggregates(list(aggregate([d for g in groups for d in g]).values()))


def test_own_statistics_for_the_last_day(api):
    record(
        api,
        deltas(runs=[(RunStatus.COMPLETED, 1000), (RunStatus.COMPLETED, 3000), (RunStatus.FAILED, 500)]),
        deltas(owner="user-bob", runs=[(RunStatus.FAILED, 10)]),
    )
    body = api.call("GET /job-logs/statistics", query={"time_period": "day"}).body
    assert body["scope"] == "owner"
    assert body["granularity"] == "hour"
    assert len(body["series"]) == 24
    totals = body["totals"]
    assert totals["by_status"] == {"completed": 2, "failed": 1, "timed_out": 0, "canceled": 0}
    assert totals["success_rate"] == pytest.approx(2 / 3)
    assert (totals["duration"]["min_ms"], totals["duration"]["max_ms"]) == (500, 3000)


def test_admin_sees_global_statistics(api):
    record(
        api,
        deltas(runs=[(RunStatus.COMPLETED, 1000)]),
        deltas(owner="user-bob", job_id="01JOB0000000000000000000BB", runs=[(RunStatus.FAILED, 10)]),
    )
    body = api.call("GET /job-logs/statistics", user="root", scopes=ADMIN).body
    assert body["scope"] == "global"
    assert body["totals"]["total"] == 2


def test_job_and_type_filters(api):
    record(
        api,
        deltas(runs=[(RunStatus.COMPLETED, 1000)]),
        deltas(job_id="01JOB0000000000000000000CC", job_type="http_check", runs=[(RunStatus.FAILED, 20)] * 2),
    )
    by_type = api.call(
        "GET /job-logs/statistics", query={"job_type": "http_check", "time_period": "week"}
    ).body
    assert by_type["totals"]["by_status"]["failed"] == 2
    assert by_type["granularity"] == "day"
    by_job = api.call("GET /job-logs/statistics", query={"job_id": "01JOB0000000000000000000AA"}).body
    assert by_job["totals"]["total"] == 1


def test_explicit_window(api):
    record(api, deltas(runs=[(RunStatus.COMPLETED, 1000)]))
    body = api.call(
        "GET /job-logs/statistics", query={"from": "2026-11-29T00:00:00Z", "to": "2026-11-29T18:00:00Z"}
    ).body
    assert body["from"] == "2026-11-29T00:00:00Z"
    assert body["totals"]["total"] == 1


def test_other_users_job_statistics_are_404(api):
    job = api.call("POST /jobs", user="user-bob", body={"name": "bob's", "job_type": "demo"}).body
    response = api.call("GET /job-logs/statistics", query={"job_id": job["job_id"]})
    assert response.status == 404


BAD_WINDOWS = [
    {"time_period": "year"},
    {"from": "2026-11-01T00:00:00Z"},
    {"from": "2026-11-02T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
    {"from": "2020-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
    {"time_period": "day", "from": "2026-11-01T00:00:00Z", "to": "2026-11-02T00:00:00Z"},
]


def test_bad_windows_are_422(api):
    for query in BAD_WINDOWS:
        response = api.call("GET /job-logs/statistics", query=query)
        assert response.status == 422, query
        assert response.message, query
