"""The sample events in events/api (also for `sam local invoke -e`) drive the real handler."""

from __future__ import annotations

from tests.conftest import EVENTS, load_event
from tests.support.http import api_harness, invoke

EXPECTED = {
    "health.json": 200,
    "list_jobs.json": 200,
    "create_job.json": 201,
    "create_job_bad_cron.json": 422,
    "create_job_malformed.json": 400,
    "run_job.json": 404,  # names a job that does not exist in a fresh table
    "active_runs.json": 200,
    "list_runs.json": 200,
    "statistics.json": 200,
    "patch_preferences.json": 200,
    "missing_token.json": 401,
    "wrong_scope.json": 403,
}


def test_every_sample_event_has_an_expectation():
    assert sorted(p.name for p in (EVENTS / "api").glob("*.json")) == sorted(EXPECTED)


def test_sample_events_drive_the_handler(aws):
    # One moto setup for all of them: each event stands alone (fresh tables, nothing seeded).
    with api_harness(aws):
        got = {name: invoke(load_event(f"api/{name}")) for name in EXPECTED}
    assert {name: r.status for name, r in got.items()} == EXPECTED
    for response in got.values():
        if response.status >= 400:
            assert set(response.body) == {"message", "details"}
