"""Users of the template's Cognito pool get their verified address, though access tokens carry none.

Cognito ACCESS tokens have `sub`, `username`, `client_id`, `scope`, but no `email`: the API looks
the user up in the pool (moto's cognito-idp here) once, and stores a verified address only.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import EndpointConnectionError

from tests.support.aws import REGION
from tests.support.http import ALL_SCOPES, FakeClock, api_harness, http_event, invoke


def cognito_claims(user: dict[str, Any]) -> dict[str, str]:
    """What API Gateway passes on from a Cognito access token: no email claim."""
    sub = next(a["Value"] for a in user["Attributes"] if a["Name"] == "sub")
    return {
        "sub": sub,
        "username": user["Username"],
        "client_id": "app-client",
        "scope": " ".join(f"jobtracker/{s}" for s in ALL_SCOPES),
        "token_use": "access",
        "iss": "https://cognito-idp.eu-west-1.amazonaws.com/pool",
    }


class CountingCognito:
    """The moto client, counting AdminGetUser calls; `down` makes it unreachable."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.lookups = 0
        self.down = False

    def admin_get_user(self, **kwargs: Any) -> Any:
        self.lookups += 1
        if self.down:
            raise EndpointConnectionError(endpoint_url="https://cognito-idp.eu-west-1.amazonaws.com/")
        return self.inner.admin_get_user(**kwargs)


class Pool:
    def __init__(self) -> None:
        self.client = boto3.client("cognito-idp", region_name=REGION)
        self.id = self.client.create_user_pool(
            PoolName="jobtracker-users", UsernameAttributes=["email"], AutoVerifiedAttributes=["email"]
        )["UserPool"]["Id"]
        self.counting = CountingCognito(self.client)

    def add(self, email: str, *, verified: bool = True) -> dict[str, Any]:
        attributes = [{"Name": "email", "Value": email}]
        attributes.append({"Name": "email_verified", "Value": "true" if verified else "false"})
        user: dict[str, Any] = self.client.admin_create_user(
            UserPoolId=self.id, Username=email, UserAttributes=attributes, MessageAction="SUPPRESS"
        )["User"]
        return user


@pytest.fixture
def api(aws):
    with api_harness(aws) as harness:
        yield harness


@pytest.fixture
def pool(api) -> Pool:
    from api.emails import CognitoEmails

    pool = Pool()
    api.services.emails = CognitoEmails(lambda: pool.counting, pool.id)
    return pool


@pytest.fixture
def warnings() -> Iterator[list[logging.LogRecord]]:
    from api.emails import logger

    records: list[logging.LogRecord] = []
    sink = logging.Handler(logging.WARNING)
    sink.emit = records.append  # type: ignore[method-assign]
    target = logging.getLogger(logger.name)
    target.addHandler(sink)
    yield records
    target.removeHandler(sink)


def me(claims: dict[str, str]) -> Any:
    response = invoke(http_event("GET /users/me", token_claims=claims))
    assert response.status == 200, response.body
    return response.body


def test_a_cognito_user_gets_the_verified_address_from_the_pool(api, pool):
    # Given a user of the pool, calling with an access token that has no email claim
    user = pool.add("carol@example.com")
    claims = cognito_claims(user)
    assert "email" not in claims
    # When she makes her first request
    profile = me(claims)
    # Then her pool address is her address, stored for the notifier
    assert profile["email"] == "carol@example.com"
    assert api.services.users.get(claims["sub"]).email == "carol@example.com"


def test_the_pool_is_asked_once_per_user(api, pool):
    # Given a user whose address was looked up on her first request
    claims = cognito_claims(pool.add("carol@example.com"))
    me(claims)
    assert pool.counting.lookups == 1
    # When she keeps calling, on this instance and on a fresh one (cold start)
    for _ in range(3):
        me(claims)
    api.services._provisioned.clear()
    api.services._emails_checked.clear()
    invoke(http_event("GET /jobs", token_claims=claims))
    # Then the stored address is used: no further lookup
    assert pool.counting.lookups == 1


def test_an_unverified_address_is_not_taken_nor_asked_for_again(api, pool):
    # Given a user whose pool address is not verified
    claims = cognito_claims(pool.add("mallory@example.com", verified=False))
    # When she calls twice
    first, second = me(claims), me(claims)
    # Then she has no address (no mail to an address nobody proved), and the pool was asked once
    assert first["email"] is None and second["email"] is None
    assert api.services.users.get(claims["sub"]).email is None
    assert pool.counting.lookups == 1


def test_an_unreachable_pool_does_not_fail_the_request_and_is_retried(api, pool, warnings):
    # Given a user of the pool while Cognito cannot be reached
    from api.emails import RETRY_AFTER

    clock = FakeClock()
    api.services.clock = clock
    claims = cognito_claims(pool.add("dave@example.com"))
    pool.counting.down = True
    # When she calls (GET /users/me reads her twice: middleware and route)
    listed = invoke(http_event("GET /jobs", token_claims=claims))
    profile = me(claims)
    # Then the requests succeed without her address; one warning, and Cognito is left alone a while
    assert listed.status == 200
    assert profile["email"] is None
    assert [r.getMessage() for r in warnings] == ["email lookup failed; retried on a later request"]
    assert pool.counting.lookups == 1
    # When Cognito is back and the pause is over, Then her next request stores the address
    pool.counting.down = False
    clock.now += RETRY_AFTER
    invoke(http_event("GET /jobs", token_claims=claims))
    assert pool.counting.lookups == 2
    assert api.services.users.get(claims["sub"]).email == "dave@example.com"
    assert me(claims)["email"] == "dave@example.com"
    assert pool.counting.lookups == 2


def test_a_token_with_an_email_needs_no_lookup(api, pool):
    # Given a token that carries the address itself (ID token, or an issuer that adds it)
    claims = {**cognito_claims(pool.add("erin@example.com")), "email": "erin@example.com"}
    # When the user calls
    profile = me(claims)
    # Then the token's address is used and the pool is never asked
    assert profile["email"] == "erin@example.com"
    assert pool.counting.lookups == 0


def test_a_user_unknown_to_the_pool_stays_without_address(api, pool):
    # Given a token whose user is no longer in the pool (deleted after the token was issued)
    claims = {**cognito_claims(pool.add("gone@example.com")), "username": "no-such-user"}
    claims["sub"] = "no-such-user"
    # When it is used, Then the request succeeds and the user simply has no address
    assert me(claims)["email"] is None
    assert pool.counting.lookups == 1


def test_without_a_pool_nothing_is_looked_up(api):
    # Given the API of a stack with an external issuer (no directory configured)
    assert api.services.emails is None
    # When a token without email is used, Then the user is provisioned without an address
    profile = me({"sub": "ext-user", "scope": " ".join(ALL_SCOPES)})
    assert profile["email"] is None
