"""Every route: missing token (401), wrong scope (403), another user's resource (404; 403 for
the explicit preferences route), malformed body (400) and unknown fields (422)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from jobtracker_common.models import RunStatus

from tests.support.http import ALL_SCOPES, ApiHarness, api_harness
from tests.support.runs import make_run

JOB_BODY = {"name": "nightly backup", "job_type": "demo", "schedule": "rate(1 day)"}
PREFS_BODY = {"email_on_job_retry": True}


@dataclass(frozen=True)
class Route:
    key: str
    scope: str | None
    path: str | None = None  # which resource the path names: job | run | active_run | user
    body: dict[str, Any] | None = None


ROUTES = [
    Route("GET /job-logs/active", "read:job_logs"),
    Route("GET /job-logs/statistics", "read:job_logs"),
    Route("GET /job-logs", "read:job_logs"),
    Route("GET /job-logs/{run_id}", "read:job_logs", "run"),
    Route("GET /job-logs/{run_id}/entries", "read:job_logs", "run"),
    Route("POST /job-logs/{run_id}/cancel", "write:job_logs", "active_run"),
    Route("DELETE /job-logs/{run_id}", "write:job_logs", "run"),
    Route("GET /jobs", "read:jobs"),
    Route("POST /jobs", "write:jobs", body=JOB_BODY),
    Route("GET /jobs/{job_id}", "read:jobs", "job"),
    Route("PUT /jobs/{job_id}", "write:jobs", "job", JOB_BODY),
    Route("DELETE /jobs/{job_id}", "write:jobs", "job"),
    Route("POST /jobs/{job_id}/run", "write:jobs", "job"),
    Route("GET /users/me", None),
    Route("GET /users/me/notification-preferences", None),
    Route("PATCH /users/me/notification-preferences", None, body=PREFS_BODY),
    Route("GET /users/{user_id}/notification-preferences", None, "user"),
    Route("PATCH /users/{user_id}/notification-preferences", None, "user", PREFS_BODY),
]
IDS = [r.key for r in ROUTES]


@pytest.fixture
def api(aws):
    with api_harness(aws) as harness:
        yield harness


def alices_resources(api: ApiHarness) -> dict[str, str]:
    """Given alice owns a job, a finished run and a running run."""
    created = api.call("POST /jobs", user="user-alice", body=JOB_BODY)
    assert created.status == 201
    job_id = created.body["job_id"]
    done = make_run(api.services.runs, owner_id="user-alice", job_id=job_id, logs=3)
    running = make_run(api.services.runs, owner_id="user-alice", job_id=job_id, status=RunStatus.RUNNING)
    return {"job": job_id, "run": done.run_id, "active_run": running.run_id, "user": "user-alice"}


def params_for(route: Route, resources: dict[str, str]) -> dict[str, str]:
    if route.path is None:
        return {}
    name = {"job": "job_id", "run": "run_id", "active_run": "run_id", "user": "user_id"}[route.path]
    return {name: resources[route.path]}


def call(api, route: Route, resources: dict[str, str], **kwargs: Any):
    return api.call(route.key, path_params=params_for(route, resources), body=route.body, **kwargs)


@pytest.mark.parametrize("route", ROUTES, ids=IDS)
def test_access_rules(api, route):
    """One route, every access rule (one moto setup per route keeps the tier fast)."""
    # Given alice's job, finished run and running run
    resources = alices_resources(api)

    # Missing token: 401 with the error shape
    response = call(api, route, resources, user=None)
    assert response.status == 401
    assert response.body == {"message": "missing or invalid bearer token", "details": []}

    if route.scope:
        # Every scope but the route's (admin included): 403 naming the missing scope
        others = [s for s in (*ALL_SCOPES, "admin") if s != route.scope]
        response = call(api, route, resources, scopes=others)
        assert response.status == 403
        assert route.scope in response.message
        assert response.body["details"] == [{"required_scopes": [route.scope]}]

    if route.path in ("job", "run", "active_run"):
        # Bob (all scopes, not admin) names alice's resource: it does not exist for him...
        response = call(api, route, resources, user="user-bob")
        assert response.status == 404
        # ...and nothing changed
        assert api.call("GET /jobs/{job_id}", path_params={"job_id": resources["job"]}).status == 200
        assert api.call("GET /job-logs/{run_id}", path_params={"run_id": resources["run"]}).status == 200
        active = api.call("GET /job-logs/{run_id}", path_params={"run_id": resources["active_run"]})
        assert active.body["cancel_requested"] is False
        assert api.invoker.payloads == []
    if route.path == "user":
        # The explicit preferences route: 403 (the caller named the user; nothing to hide)
        response = call(api, route, resources, user="user-bob")
        assert response.status == 403
        prefs = api.call("GET /users/me/notification-preferences", user="user-alice")
        assert prefs.body["email_on_job_retry"] is False

    # A Cognito access token (scopes carry the resource-server prefix) is accepted
    prefixed = [f"jobtracker/{route.scope}"] if route.scope else []
    response = call(api, route, resources, scopes=prefixed)
    assert response.status < 400, response.body


OWNED = [r for r in ROUTES if r.path in ("job", "run", "active_run", "user")]


@pytest.mark.parametrize("route", OWNED, ids=[r.key for r in OWNED])
def test_admin_may_use_other_users_resources(api, route):
    resources = alices_resources(api)
    response = call(api, route, resources, user="user-admin", scopes=[*ALL_SCOPES, "admin"])
    assert response.status < 400, response.body


BODIES = [r for r in ROUTES if r.body is not None]


@pytest.mark.parametrize("route", BODIES, ids=[r.key for r in BODIES])
def test_malformed_bodies(api, route):
    resources = alices_resources(api)
    path = params_for(route, resources)
    # Not JSON at all: 400
    response = api.call(route.key, path_params=path, body='{"name": ')
    assert response.status == 400
    assert response.message == "request body is not valid JSON"
    assert isinstance(response.body["details"], list)
    # An unknown field: 422, named
    response = api.call(route.key, path_params=path, body={**(route.body or {}), "surprise": 1})
    assert response.status == 422
    assert {
        "location": "body",
        "field": "surprise",
        "message": "Extra inputs are not permitted",
        "type": "extra_forbidden",
    } in response.body["details"]
    # JSON, but not an object: 422
    assert api.call(route.key, path_params=path, body="[1, 2]").status == 422
    # Not JSON by its own declaration: 415
    response = api.call(
        route.key, path_params=path, body="a=1", headers={"content-type": "application/x-www-form-urlencoded"}
    )
    assert response.status == 415


#: Routes without a body: a malformed path id, query value or header instead (each a 422).
MALFORMED: dict[str, dict[str, Any]] = {
    "GET /job-logs/active": {"query": {"limit": "5"}},  # takes no parameters at all
    "GET /job-logs/statistics": {"query": {"time_period": "year"}},
    "GET /job-logs": {"query": {"status": "exploded"}},
    "GET /job-logs/{run_id}": {"path_params": {"run_id": "../../jobs"}},
    "GET /job-logs/{run_id}/entries": {"query": {"limit": "0"}},
    "POST /job-logs/{run_id}/cancel": {"path_params": {"run_id": "not-a-run"}},
    "DELETE /job-logs/{run_id}": {"path_params": {"run_id": "X" * 27}},
    "GET /jobs": {"query": {"limit": "many"}},
    "GET /jobs/{job_id}": {"path_params": {"job_id": "short"}},
    "DELETE /jobs/{job_id}": {"path_params": {"job_id": "0" * 25 + "!"}},
    "POST /jobs/{job_id}/run": {"headers": {"Idempotency-Key": "has spaces"}},
    "GET /users/me": {"query": {"user_id": "user-bob"}},
    "GET /users/me/notification-preferences": {"query": {"user_id": "user-bob"}},
    "GET /users/{user_id}/notification-preferences": {"path_params": {"user_id": "u" * 300}},
}


def test_every_route_without_a_body_has_a_malformed_case():
    assert set(MALFORMED) == {r.key for r in ROUTES if r.body is None}


@pytest.mark.parametrize("route", [r for r in ROUTES if r.body is None], ids=lambda r: r.key)
def test_malformed_requests_without_a_body_are_422_and_change_nothing(api, route):
    # Given alice's job, finished run and running run
    resources = alices_resources(api)
    bad = MALFORMED[route.key]
    # When she sends the route a malformed id, query value or header
    response = api.call(
        route.key,
        path_params={**params_for(route, resources), **bad.get("path_params", {})},
        query=bad.get("query"),
        headers=bad.get("headers"),
    )
    # Then 422 naming the problem, and nothing happened
    assert response.status == 422, response.body
    assert response.message.startswith(("request is invalid", "unknown query parameter"))
    assert response.body["details"]
    assert api.call("GET /jobs/{job_id}", path_params={"job_id": resources["job"]}).status == 200
    assert api.call("GET /job-logs/{run_id}", path_params={"run_id": resources["run"]}).status == 200
    active = api.call("GET /job-logs/{run_id}", path_params={"run_id": resources["active_run"]})
    assert active.body["cancel_requested"] is False
    assert api.invoker.payloads == []


def test_authorization_is_decided_before_validation(api):
    # A malformed body without a token: 401, not 400 (who may ask comes before what was asked)
    assert api.call("POST /jobs", user=None, body="{").status == 401
    assert api.call("POST /jobs", scopes=["read:jobs"], body={"nope": 1}).status == 403


def test_unknown_route_is_a_json_404(api):
    for query in (None, {"x": "1"}):
        response = api.call("GET /nothing-here", query=query)
        assert response.status == 404
        assert response.body == {"message": "no such route", "details": []}


def test_token_without_subject_is_401(api):
    from tests.support.http import http_event, invoke

    event = http_event("GET /jobs", token_claims={"scope": "read:jobs"})
    assert invoke(event).status == 401


def test_stage_prefix_in_raw_path_is_routed(api):
    from tests.support.http import claims, http_event, invoke

    response = invoke(http_event("GET /jobs", token_claims=claims(), stage="dev"))
    assert response.status == 200


def test_public_routes_need_no_token(api):
    assert api.call("GET /health", user=None).body == {"status": "ok"}
    document = api.call("GET /openapi.json", user=None)
    assert document.status == 200
    assert document.body["openapi"].startswith("3.")


def test_unknown_query_parameter_is_422(api):
    response = api.call("GET /job-logs", query={"stauts": "failed"})
    assert response.status == 422
    assert response.body["details"][0]["field"] == "stauts"


def test_base64_bodies_are_decoded_and_garbage_is_400(api):
    import base64

    from tests.support.http import claims, http_event, invoke

    body = {"name": "b64", "job_type": "demo"}
    event = http_event("POST /jobs", body=body, token_claims=claims())
    event["body"] = base64.b64encode(event["body"].encode()).decode()
    event["isBase64Encoded"] = True
    assert invoke(event).status == 201
    event["body"] = base64.b64encode(b"\xff\xfe\x00garbage").decode()
    assert invoke(event).status == 400
    event["body"] = "%%% not base64 %%%"
    assert invoke(event).status == 400


def test_json_python_would_accept_but_dynamodb_could_not_store_is_400(api):
    # Lone surrogates cannot be UTF-8; NaN/Infinity are not JSON (Python's json accepts them)
    assert api.call("POST /jobs", body='{"name": "\\ud800", "job_type": "demo"}').status == 400
    assert (
        api.call("POST /jobs", body='{"name": "x", "job_type": "demo", "timeout_seconds": NaN}').status == 400
    )
    assert api.call("GET /jobs").body["items"] == []


def test_oversized_params_are_422(api):
    params = {"url": "https://example.com", "headers": {"x-pad": "a" * 20_000}}
    response = api.call("POST /jobs", body={"name": "x", "job_type": "http_check", "params": params})
    assert response.status == 422
    assert response.body["details"][0]["field"] == "params"


def test_the_body_cannot_name_the_owner_or_the_ids(api):
    # The caller comes from the token: owner_id / job_id / created_at in a body are unknown fields
    for field, value in (
        ("owner_id", "user-bob"),
        ("job_id", "0" * 26),
        ("created_at", "2020-01-01T00:00:00Z"),
    ):
        response = api.call("POST /jobs", body={**JOB_BODY, field: value})
        assert response.status == 422, field
        assert response.body["details"][0]["field"] == field
    assert api.call("GET /jobs", user="user-bob").body["items"] == []
    assert api.call("GET /jobs").body["items"] == []
