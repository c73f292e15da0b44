"""The local HTTP gateway: HTTP API v2 events, JWT authorizer rules and route scopes from the template.

No AWS endpoint is needed: the gateway is driven with werkzeug's test client and a fake api function.
"""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import jwt
import pytest
from jobtracker_local.auth import JwtAuthorizer, KeyStore, expand_scopes
from jobtracker_local.functions import FunctionError
from jobtracker_local.gateway import Gateway, authorizer_config, routes_from_template
from jobtracker_local.resources import LOCAL_AUDIENCE, LOCAL_ISSUER, LocalResources
from jobtracker_local.template import load_template
from werkzeug.test import Client


class FakeApi:
    def __init__(self, response: Any = None, error: bool = False) -> None:
        self.events: list[dict[str, Any]] = []
        self.response = response if response is not None else {"statusCode": 200, "body": '{"ok": true}'}
        self.error = error

    def __call__(self, function_id: str, event: dict[str, Any]) -> Any:
        assert function_id == "ApiFunction"
        self.events.append(event)
        if self.error:
            raise FunctionError("KeyError", "boom")
        return self.response


@pytest.fixture
def keys(tmp_path: Path) -> KeyStore:
    return KeyStore(tmp_path)


def make_gateway(keys: KeyStore, api: FakeApi) -> tuple[Gateway, Client]:
    resources = LocalResources(load_template(), "http://127.0.0.1:1")
    authorizers = {"JwtAuthorizer": JwtAuthorizer(keys, *authorizer_config(resources, "JwtAuthorizer"))}
    gateway = Gateway(resources, api, authorizers, jwks=keys.jwks(), openid_issuer=LOCAL_ISSUER)
    return gateway, Client(gateway)


def bearer(keys: KeyStore, scopes: list[str] | None = None, **changes: Any) -> dict[str, str]:
    token = keys.mint(
        sub="alice", email="alice@example.com", issuer=LOCAL_ISSUER, audience=LOCAL_AUDIENCE, scopes=scopes
    )
    if changes:
        claims = jwt.decode(token, options={"verify_signature": False}) | changes
        token = jwt.encode(claims, keys.private_key(), algorithm="RS256", headers={"kid": keys.kid})
    return {"Authorization": f"Bearer {token}"}


def test_routes_and_scopes_come_from_the_template():
    routes = {r.route_key: r for r in routes_from_template(LocalResources(load_template(), "http://x"))}
    assert routes["GET /health"].authorizer is None
    assert routes["GET /job-logs/active"].scopes == ("read:job_logs", "jobtracker/read:job_logs")
    assert routes["GET /users/me"].authorizer == "JwtAuthorizer"
    assert routes["GET /users/me"].scopes == ()


def test_an_authorized_request_becomes_an_http_api_v2_event(keys):
    api = FakeApi()
    _, client = make_gateway(keys, api)

    response = client.get(
        "/job-logs/01ABC/entries?limit=5&tag=a&tag=b", headers={**bearer(keys), "X-Trace": "t1"}
    )

    assert response.status_code == 200
    assert response.get_json() == {"ok": True}
    (event,) = api.events
    assert event["version"] == "2.0"
    assert event["routeKey"] == "GET /job-logs/{run_id}/entries"
    assert event["rawPath"] == "/job-logs/01ABC/entries"
    assert event["rawQueryString"] == "limit=5&tag=a&tag=b"
    assert event["queryStringParameters"] == {"limit": "5", "tag": "a,b"}
    assert event["pathParameters"] == {"run_id": "01ABC"}
    assert event["headers"]["x-trace"] == "t1"
    assert event["requestContext"]["http"]["method"] == "GET"
    jwt_context = event["requestContext"]["authorizer"]["jwt"]
    assert jwt_context["claims"]["sub"] == "alice"
    assert jwt_context["claims"]["email"] == "alice@example.com"
    assert isinstance(jwt_context["claims"]["exp"], str)
    assert "read:job_logs" in jwt_context["scopes"]


def test_a_json_body_is_passed_as_text_and_binary_as_base64(keys):
    api = FakeApi({"statusCode": 201, "headers": {"content-type": "application/json"}, "body": "{}"})
    _, client = make_gateway(keys, api)

    created = client.post("/jobs", json={"name": "x"}, headers=bearer(keys))
    client.post(
        "/jobs", data=b"\xff\x00", headers={**bearer(keys), "Content-Type": "application/octet-stream"}
    )

    assert created.status_code == 201
    text, binary = api.events
    assert json.loads(text["body"]) == {"name": "x"}
    assert text["isBase64Encoded"] is False
    assert base64.b64decode(binary["body"]) == b"\xff\x00"
    assert binary["isBase64Encoded"] is True


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer not-a-jwt"},
        "expired",
        "wrong-issuer",
        "wrong-audience",
        "foreign-key",
    ],
)
def test_missing_or_invalid_tokens_get_401_without_reaching_the_function(keys, tmp_path, headers):
    api = FakeApi()
    _, client = make_gateway(keys, api)
    if headers == "expired":
        headers = bearer(keys, exp=int(time.time()) - 10)
    elif headers == "wrong-issuer":
        headers = bearer(keys, iss="https://evil.example")
    elif headers == "wrong-audience":
        headers = bearer(keys, aud="someone-else", client_id="someone-else")
    elif headers == "foreign-key":
        headers = bearer(KeyStore(tmp_path / "other"))

    response = client.get("/jobs", headers=headers)

    assert response.status_code == 401
    assert response.get_json() == {"message": "Unauthorized"}
    assert api.events == []


def test_a_token_without_the_routes_scope_gets_403(keys):
    api = FakeApi()
    _, client = make_gateway(keys, api)

    response = client.post("/jobs", json={}, headers=bearer(keys, scopes=["read:jobs"]))

    assert response.status_code == 403
    assert response.get_json() == {"message": "Forbidden"}
    assert api.events == []


def test_open_routes_need_no_token_and_unknown_routes_are_404(keys):
    api = FakeApi()
    _, client = make_gateway(keys, api)

    assert client.get("/health").status_code == 200
    assert "authorizer" not in api.events[0]["requestContext"]
    assert client.get("/nope").status_code == 404
    assert client.delete("/health").status_code == 404


def test_a_function_error_is_a_500_and_the_jwks_is_served(keys):
    _, client = make_gateway(keys, FakeApi(error=True))

    assert client.get("/health").status_code == 500
    jwks = client.get("/.well-known/jwks.json").get_json()
    assert jwks["keys"][0]["kid"] == keys.kid


def test_admin_scope_expands_to_every_scope():
    assert set(expand_scopes(["admin"])) == {
        "admin",
        "read:job_logs",
        "write:job_logs",
        "read:jobs",
        "write:jobs",
    }
    assert expand_scopes(["read:jobs"]) == ["read:jobs"]
