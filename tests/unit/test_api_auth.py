"""The caller comes from the JWT authorizer's claims only; scopes in both plain and Cognito form."""

from __future__ import annotations

import subprocess
import sys

import pytest
from api.auth import (
    AuthenticationError,
    Caller,
    MissingScopeError,
    caller_from_event,
    check_scopes,
    normalize_scope,
    required_scopes,
    secured,
)


def event_with(claims=None, scopes=None):
    jwt = {"claims": claims}
    if scopes is not None:
        jwt["scopes"] = scopes
    return {"requestContext": {"authorizer": {"jwt": jwt}}}


def test_caller_from_claims():
    caller = caller_from_event(
        event_with({"sub": "u1", "email": "u1@example.com", "scope": "read:jobs jobtracker/write:jobs"})
    )
    assert caller == Caller("u1", "u1@example.com", frozenset({"read:jobs", "write:jobs"}))
    assert not caller.is_admin


def test_array_claims_as_http_api_renders_them():
    caller = caller_from_event(event_with({"sub": "u1", "scp": "[read:jobs admin]"}))
    assert caller.scopes == {"read:jobs", "admin"}
    assert caller.is_admin


def test_authorizer_scopes_list_counts_too():
    caller = caller_from_event(event_with({"sub": "u1"}, scopes=["jobtracker/read:job_logs"]))
    assert caller.scopes == {"read:job_logs"}


@pytest.mark.parametrize(
    "event",
    [
        {},
        {"requestContext": {}},
        {"requestContext": {"authorizer": {"lambda": {"sub": "u1"}}}},
        event_with(None),
        event_with({"scope": "read:jobs"}),
        event_with({"sub": ""}),
        event_with({"sub": 42}),
        {"requestContext": "nonsense"},
    ],
)
def test_no_usable_token_is_an_authentication_error(event):
    with pytest.raises(AuthenticationError):
        caller_from_event(event)


def test_foreign_resource_server_scopes_do_not_count():
    assert normalize_scope("jobtracker/admin") == "admin"
    assert normalize_scope("other-api/admin") == "other-api/admin"
    caller = caller_from_event(event_with({"sub": "u1", "scope": "other-api/admin"}))
    assert not caller.is_admin


def test_scope_check_any_one_suffices():
    caller = Caller("u1", None, frozenset({"read:jobs"}))
    check_scopes(caller, ["write:jobs", "read:jobs"])
    check_scopes(caller, [])
    with pytest.raises(MissingScopeError, match="write:jobs"):
        check_scopes(caller, ["write:jobs"])


def test_route_security_declares_scopes():
    assert required_scopes(None) is None
    assert required_scopes(secured()) == []
    assert required_scopes(secured("read:jobs")) == ["read:jobs"]


def test_visibility():
    alice = Caller("alice", None, frozenset())
    admin = Caller("root", None, frozenset({"admin"}))
    assert alice.can_see("alice")
    assert not alice.can_see("bob")
    assert admin.can_see("bob")


def test_handler_import_stays_light():
    """Cold start: importing the handler builds no AWS client and loads no boto3/repositories."""
    code = (
        "import sys, api.handler; "
        "heavy = [m for m in ('boto3', 'jobtracker_common.repositories', 'jobtracker_common.schedules', "
        "'pyawscron', 'api.service') if m in sys.modules]; print(heavy)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
