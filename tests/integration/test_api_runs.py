"""Runs: listing with filters and cursors (newest first), one run, log entries, active runs,
cancel (queued/retrying now, running at its next checkpoint), delete (finished runs only)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from jobtracker_common.models import RunStatus

from tests.support.http import ALL_SCOPES, GROUP, api_harness
from tests.support.runs import make_run

ADMIN = [*ALL_SCOPES, "admin"]


@pytest.fixture
def api(aws):
    with api_harness(aws) as harness:
        yield harness


def ids(response):
    assert response.status == 200, response.body
    return [r["run_id"] for r in response.body["items"]]


def test_run_shape(api):
    run = make_run(
        api.services.runs, status=RunStatus.FAILED, error={"type": "DemoFailure", "message": "boom"}
    )
    body = api.call("GET /job-logs/{run_id}", path_params={"run_id": run.run_id}).body
    assert set(body) >= {
        "run_id",
        "job_id",
        "job_name",
        "job_type",
        "target",
        "owner_id",
        "status",
        "attempt",
        "trigger",
        "queued_at",
        "started_at",
        "finished_at",
        "duration_ms",
        "error",
        "result",
    }
    assert (body["status"], body["error"], body["duration_ms"], body["target"]) == (
        "failed",
        {"type": "DemoFailure", "message": "boom"},
        2000,
        "core-sw-1",
    )
    # Internal bookkeeping stays internal
    assert not {"lease_until", "version", "dedupe_key", "expires_at", "subscribers"} & set(body)


def test_list_is_newest_first_with_cursor_and_only_own_runs(api):
    base = datetime.now(UTC) - timedelta(hours=1)
    mine = [make_run(api.services.runs, queued_at=base + timedelta(minutes=i)).run_id for i in range(5)]
    make_run(api.services.runs, owner_id="user-bob", queued_at=base)
    first = api.call("GET /job-logs", query={"limit": "2"})
    assert ids(first) == [mine[4], mine[3]]
    second = api.call("GET /job-logs", query={"limit": "2", "cursor": first.body["next_cursor"]})
    third = api.call("GET /job-logs", query={"limit": "2", "cursor": second.body["next_cursor"]})
    assert ids(second) + ids(third) == [mine[2], mine[1], mine[0]]
    assert third.body["next_cursor"] is None


def test_filters_status_job_type_job_and_time(api):
    base = datetime(2026, 11, 1, 12, tzinfo=UTC)
    runs = api.services.runs
    failed = make_run(runs, status=RunStatus.FAILED, queued_at=base)
    timed_out = make_run(runs, status=RunStatus.TIMED_OUT, queued_at=base + timedelta(days=1))
    http = make_run(runs, job_type="http_check", queued_at=base + timedelta(days=2))
    other_job = make_run(runs, job_id=http.job_id, queued_at=base + timedelta(days=3))
    assert ids(api.call("GET /job-logs", query={"status": "failed,timed_out"})) == [
        timed_out.run_id,
        failed.run_id,
    ]
    assert ids(api.call("GET /job-logs", query={"job_type": "http_check"})) == [http.run_id]
    assert ids(api.call("GET /job-logs", query={"job_id": http.job_id})) == [other_job.run_id, http.run_id]
    window = {"from": "2026-11-02T00:00:00Z", "to": "2026-11-03T23:59:59Z"}
    assert ids(api.call("GET /job-logs", query=window)) == [http.run_id, timed_out.run_id]


def test_sparse_filter_pages_do_not_skip_runs(api):
    base = datetime.now(UTC) - timedelta(hours=2)
    failed = []
    for i in range(12):
        status = RunStatus.FAILED if i % 4 == 0 else RunStatus.COMPLETED
        run = make_run(api.services.runs, status=status, queued_at=base + timedelta(minutes=i))
        if status is RunStatus.FAILED:
            failed.append(run.run_id)
    seen, cursor = [], None
    for _ in range(10):
        query = {"status": "failed", "limit": "1"} | ({"cursor": cursor} if cursor else {})
        page = api.call("GET /job-logs", query=query)
        seen += ids(page)
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    assert seen == list(reversed(failed))


def test_admin_lists_everyone_day_by_day_with_cursor(api):
    today = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0) - timedelta(days=1)
    expected = []
    for day in range(3):
        for owner in ("user-alice", "user-bob"):
            run = make_run(
                api.services.runs,
                owner_id=owner,
                queued_at=today - timedelta(days=day, minutes=len(expected)),
            )
            expected.append(run.run_id)
    seen, cursor = [], None
    for _ in range(10):
        query = {"limit": "4"} | ({"cursor": cursor} if cursor else {})
        page = api.call("GET /job-logs", user="root", scopes=ADMIN, query=query)
        seen += ids(page)
        cursor = page.body["next_cursor"]
        if cursor is None:
            break
    assert seen == sorted(expected, reverse=True)


BAD_LISTING_QUERIES = [
    {"status": "exploded"},
    {"limit": "0"},
    {"limit": "201"},
    {"from": "yesterday"},
    {"from": "0.5"},
    {"from": "2026-11-03T00:00:00Z", "to": "2026-11-01T00:00:00Z"},
    {"cursor": "bm90LWpzb24"},
    {"job_id": "../../etc"},
]


def test_bad_listing_queries_are_422(api):
    # One setup, many queries: each must be refused with details
    for query in BAD_LISTING_QUERIES:
        response = api.call("GET /job-logs", query=query)
        assert response.status == 422, query
        assert response.body["details"] or response.message, query


def test_entries_are_paginated_in_order(api):
    run = make_run(api.services.runs, logs=120)
    path = {"run_id": run.run_id}
    first = api.call("GET /job-logs/{run_id}/entries", path_params=path, query={"limit": "70"})
    second = api.call(
        "GET /job-logs/{run_id}/entries",
        path_params=path,
        query={"limit": "70", "cursor": first.body["next_cursor"]},
    )
    messages = [e["message"] for e in first.body["items"] + second.body["items"]]
    assert messages == [f"line {i}" for i in range(120)]
    assert second.body["next_cursor"] is None
    assert set(first.body["items"][0]) == {"timestamp", "level", "category", "message", "details", "attempt"}


def test_active_runs_show_progress_and_elapsed(api):
    running = make_run(api.services.runs, status=RunStatus.RUNNING, progress="step 2/5")
    retrying = make_run(api.services.runs, status=RunStatus.RETRYING, attempt=2)
    make_run(api.services.runs, status=RunStatus.COMPLETED)
    make_run(api.services.runs, owner_id="user-bob", status=RunStatus.RUNNING)
    items = api.call("GET /job-logs/active").body["items"]
    assert [i["run_id"] for i in items] == [retrying.run_id, running.run_id]
    by_id = {i["run_id"]: i for i in items}
    assert by_id[running.run_id]["progress"] == "step 2/5"
    assert by_id[running.run_id]["elapsed_ms"] >= 4 * 60 * 1000
    assert by_id[retrying.run_id]["attempt"] == 2
    assert set(items[0]) >= {
        "job_name",
        "job_type",
        "target",
        "owner_id",
        "started_at",
        "elapsed_ms",
        "attempt",
    }
    everyone = api.call("GET /job-logs/active", user="root", scopes=ADMIN).body["items"]
    assert len(everyone) == 3


def test_cancel_queued_run(api):
    run = make_run(api.services.runs, status=RunStatus.QUEUED)
    response = api.call("POST /job-logs/{run_id}/cancel", path_params={"run_id": run.run_id})
    assert response.status == 200
    assert response.body["status"] == "canceled"
    assert api.call("GET /job-logs/active").body["items"] == []


def test_cancel_retrying_run_removes_its_retry_schedule(api):
    run = make_run(api.services.runs, status=RunStatus.RETRYING, attempt=1)
    api.services.schedules.create_retry_schedule(
        run_id=run.run_id, attempt=2, at=datetime.now(UTC) + timedelta(hours=1)
    )
    response = api.call("POST /job-logs/{run_id}/cancel", path_params={"run_id": run.run_id})
    assert response.status == 200
    assert response.body["status"] == "canceled"
    names = [s["Name"] for s in api.scheduler.list_schedules(GroupName=GROUP)["Schedules"]]
    assert f"retry-{run.run_id}-2" not in names


def test_cancel_running_run_asks_it_to_stop(api):
    run = make_run(api.services.runs, status=RunStatus.RUNNING)
    response = api.call("POST /job-logs/{run_id}/cancel", path_params={"run_id": run.run_id})
    assert response.status == 202
    assert (response.body["status"], response.body["cancel_requested"]) == ("running", True)
    assert api.services.runs.is_cancel_requested(run.run_id)


TERMINAL = [s for s in RunStatus if s.is_terminal]
ACTIVE = [s for s in RunStatus if s.is_active]


@pytest.mark.parametrize("status", TERMINAL, ids=str)
def test_cancel_finished_run_is_409(api, status):
    run = make_run(api.services.runs, status=status)
    response = api.call("POST /job-logs/{run_id}/cancel", path_params={"run_id": run.run_id})
    assert response.status == 409
    assert status.value in response.message


@pytest.mark.parametrize("status", TERMINAL, ids=str)
def test_delete_finished_run_removes_it_and_its_entries(api, status):
    run = make_run(api.services.runs, status=status, logs=60)
    path = {"run_id": run.run_id}
    assert api.call("DELETE /job-logs/{run_id}", path_params=path).status == 204
    assert api.call("GET /job-logs/{run_id}", path_params=path).status == 404
    left = api.ddb.query(
        TableName="RunsTable",
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"RUN#{run.run_id}"}},
    )
    assert left["Items"] == []


@pytest.mark.parametrize("status", ACTIVE, ids=str)
def test_delete_active_run_is_409(api, status):
    run = make_run(api.services.runs, status=status)
    response = api.call("DELETE /job-logs/{run_id}", path_params={"run_id": run.run_id})
    assert response.status == 409
    assert status.value in response.message
    after = api.call("GET /job-logs/{run_id}", path_params={"run_id": run.run_id})
    assert (after.status, after.body["status"]) == (200, status.value)


def test_unknown_run_is_404(api):
    assert api.call("GET /job-logs/{run_id}", path_params={"run_id": "01" + "A" * 24}).status == 404


def test_cancel_decides_again_when_the_run_moves_meanwhile(api):
    # Given a queued run that the runner claims right after the API read it
    run = make_run(api.services.runs, status=RunStatus.QUEUED)
    real_get = api.services.runs.get
    moved = []

    def get_then_claim(run_id):
        current = real_get(run_id)
        if not moved:
            moved.append(
                api.services.runs.transition(current, RunStatus.RUNNING, started_at=current.queued_at)
            )
        return current

    api.services.runs.get = get_then_claim
    # When the owner cancels
    response = api.call("POST /job-logs/{run_id}/cancel", path_params={"run_id": run.run_id})
    # Then the API sees it is running now and asks it to stop instead
    assert response.status == 202
    assert api.services.runs.is_cancel_requested(run.run_id)
