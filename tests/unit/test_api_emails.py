"""The Cognito address lookup: verified addresses of the token's own user only; failures are owed."""

from __future__ import annotations

from typing import Any

import botocore.session
import pytest
from api.auth import Caller, caller_from_event
from api.emails import LOOKUP_CONFIG, CognitoEmails, EmailLookupError, cognito_client
from botocore.exceptions import ClientError

CALLER = Caller("sub-1", None, frozenset(), username="sub-1")


class FakeCognito:
    """AdminGetUser answering with fixed attributes, or raising `error`."""

    def __init__(self, attributes: dict[str, str] | None = None, error: Exception | None = None) -> None:
        self.attributes = attributes or {}
        self.error = error
        self.asked: list[dict[str, Any]] = []

    def admin_get_user(self, **kwargs: Any) -> dict[str, Any]:
        self.asked.append(kwargs)
        if self.error:
            raise self.error
        return {
            "Username": kwargs["Username"],
            "UserAttributes": [{"Name": k, "Value": v} for k, v in self.attributes.items()],
        }


def error(code: str) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}}, "AdminGetUser")


def lookup(client: FakeCognito, caller: Caller = CALLER) -> str | None:
    return CognitoEmails(lambda: client, "eu-west-1_pool").verified_email(caller)


def test_verified_address_of_the_tokens_user():
    client = FakeCognito({"sub": "sub-1", "email": "a@example.com", "email_verified": "true"})
    assert lookup(client) == "a@example.com"
    assert client.asked == [{"UserPoolId": "eu-west-1_pool", "Username": "sub-1"}]


def test_looks_up_by_username_claim_and_falls_back_to_sub():
    client = FakeCognito({"sub": "sub-1", "email": "a@example.com", "email_verified": "true"})
    lookup(client, Caller("sub-1", None, frozenset(), username="alice"))
    lookup(client, Caller("sub-1", None, frozenset()))
    assert [a["Username"] for a in client.asked] == ["alice", "sub-1"]


@pytest.mark.parametrize(
    "attributes",
    [
        {"sub": "sub-1", "email": "a@example.com", "email_verified": "false"},
        {"sub": "sub-1", "email": "a@example.com"},
        {"sub": "sub-1", "email_verified": "true"},
        # A reused username now naming someone else: never their address
        {"sub": "someone-else", "email": "b@example.com", "email_verified": "true"},
    ],
    ids=["unverified", "verification unknown", "no address", "other subject"],
)
def test_no_address_unless_verified_and_the_same_subject(attributes):
    assert lookup(FakeCognito(attributes)) is None


def test_an_unknown_user_has_no_address():
    assert lookup(FakeCognito(error=error("UserNotFoundException"))) is None


@pytest.mark.parametrize(
    "code", ["AccessDeniedException", "TooManyRequestsException", "InternalErrorException"]
)
def test_other_failures_are_owed_lookups(code):
    with pytest.raises(EmailLookupError):
        lookup(FakeCognito(error=error(code)))


def test_an_unreachable_endpoint_is_an_owed_lookup_not_a_crash():
    # Given the real client with the lookup's short timeouts, pointed where nothing listens
    client = botocore.session.Session().create_client(
        "cognito-idp", region_name="eu-west-1", endpoint_url="http://127.0.0.1:1", config=LOOKUP_CONFIG
    )
    # When the address is looked up, Then it is an EmailLookupError (the API answers without it)
    with pytest.raises(EmailLookupError):
        CognitoEmails(lambda: client, "eu-west-1_pool").verified_email(CALLER)


def test_the_client_is_built_on_first_lookup_only():
    built: list[FakeCognito] = []

    def connect() -> FakeCognito:
        built.append(FakeCognito({"sub": "sub-1"}))
        return built[-1]

    emails = CognitoEmails(connect, "eu-west-1_pool")
    assert built == []
    emails.verified_email(CALLER)
    emails.verified_email(CALLER)
    assert len(built) == 1


def test_the_lookup_client_gives_up_fast():
    # A lookup runs inside a request API Gateway abandons after 30 s.
    config = cognito_client().meta.config
    assert config.retries["total_max_attempts"] <= 2
    assert config.connect_timeout + config.read_timeout <= 5


def test_the_username_claim_of_access_and_id_tokens():
    def event(claims: dict[str, str]) -> dict[str, Any]:
        return {"requestContext": {"authorizer": {"jwt": {"claims": claims}}}}

    assert caller_from_event(event({"sub": "s", "username": "u"})).username == "u"
    assert caller_from_event(event({"sub": "s", "cognito:username": "u"})).username == "u"
    assert caller_from_event(event({"sub": "s", "username": " "})).username is None
    assert caller_from_event(event({"sub": "s"})).username is None
