"""Malformed or hostile requests are answered with a 4xx, never a 500: bodies and cursors nested
past the interpreter's recursion limit, hand-made cursors, and requests with so many problems
that listing them all would exceed Lambda's response limit."""

from __future__ import annotations

import base64
import json

import pytest

from tests.support.http import ALL_SCOPES, api_harness, claims, http_event, lambda_response

ADMIN = [*ALL_SCOPES, "admin"]
#: Lambda's limit on a synchronous invocation's response payload.
LAMBDA_MAX_RESPONSE_BYTES = 6 * 1024 * 1024
DEEP = "[" * 100_000 + "]" * 100_000


@pytest.fixture
def api(aws):
    with api_harness(aws) as harness:
        yield harness


def _cursor(data: object) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


@pytest.mark.parametrize(
    ("route", "body"),
    [
        ("POST /jobs", '{"name": "x", "job_type": "demo", "params": ' + DEEP + "}"),
        ("POST /jobs", DEEP),
        ("PATCH /users/me/notification-preferences", '{"job_ids": ' + DEEP + "}"),
    ],
)
def test_a_body_nested_past_the_recursion_limit_is_400(api, route, body):
    response = api.call(route, body=body)
    assert response.status == 400, (response.status, response.body)
    assert "nested too deeply" in json.dumps(response.body)


def test_a_deeply_nested_body_without_a_token_is_401(api):
    # Who may ask is decided before what was asked, also when parsing the body fails this way.
    assert api.call("POST /jobs", body=DEEP, user=None).status == 401


@pytest.mark.parametrize("depth", [33, 500, 900, 990])
def test_nesting_the_parser_accepts_is_still_a_4xx(api, depth):
    # Deep enough for later recursive steps (dumps, serialization) but not for json.loads.
    params = '{"a": ' + "[" * depth + "]" * depth + "}"
    response = api.call("POST /jobs", body='{"name": "x", "job_type": "demo", "params": ' + params + "}")
    assert response.status in (400, 422), (response.status, response.body)


@pytest.mark.parametrize("scopes", [ALL_SCOPES, ADMIN], ids=["user", "admin"])
@pytest.mark.parametrize("route", ["GET /jobs", "GET /job-logs"])
def test_a_cursor_of_nested_brackets_is_422(api, route, scopes):
    cursor = base64.urlsafe_b64encode(b"[" * 1500).decode().rstrip("=")  # 2000 chars, under max_length
    response = api.call(route, scopes=scopes, query={"cursor": cursor})
    assert response.status == 422, (response.status, response.body)


@pytest.mark.parametrize("offset", ["\u00b2", "\u0663", "-1", "1e3", "1" * 10])
def test_an_entries_cursor_offset_that_is_not_plain_digits_is_422(api, offset):
    # "²".isdigit() and "٣".isdigit() are True; int("²") raises.
    job = api.call("POST /jobs", body={"name": "x", "job_type": "demo"}).body
    run = api.call("POST /jobs/{job_id}/run", path_params={"job_id": job["job_id"]}).body
    cursor = _cursor({"sk": {"S": "LOG#001#000000"}, "offset": {"N": offset}})
    response = api.call(
        "GET /job-logs/{run_id}/entries", path_params={"run_id": run["run_id"]}, query={"cursor": cursor}
    )
    assert response.status == 422, (response.status, response.body)


def test_a_validation_error_response_fits_in_a_lambda_response():
    # 120,000 unknown fields: one `details` entry each was ~12 MB of JSON, and API Gateway
    # answered its own 500 in place of the 422.
    body = "{" + ",".join(f'"k{i}":0' for i in range(120_000)) + "}"
    raw = lambda_response(http_event("POST /jobs", body=body, token_claims=claims()))
    assert raw["statusCode"] == 422
    assert len(raw["body"].encode()) <= LAMBDA_MAX_RESPONSE_BYTES
    answer = json.loads(raw["body"])
    # name and job_type missing, 120,000 unknown: the count says what the 50 details leave out
    assert answer["message"].endswith("(120002 problems; details lists the first 50)")
    assert len(answer["details"]) == 50


def test_an_error_quoting_a_huge_field_name_stays_small():
    body = json.dumps({"name": "x", "job_type": "demo", "k" * 3_000_000: 0})
    raw = lambda_response(http_event("POST /jobs", body=body, token_claims=claims()))
    assert raw["statusCode"] == 422
    assert len(raw["body"]) < 10_000
