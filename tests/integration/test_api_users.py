"""Users: provisioned from the token on first request; preferences read and partially updated."""

from __future__ import annotations

from typing import Any

import pytest

from tests.support.http import ALL_SCOPES, api_harness

ADMIN = [*ALL_SCOPES, "admin"]


@pytest.fixture
def api(aws):
    with api_harness(aws) as harness:
        yield harness


def test_first_request_provisions_the_user_from_the_token(api):
    # Given a user never seen before
    assert api.services.users.find("user-carol") is None
    # When she calls any authenticated route
    api.call("GET /jobs", user="user-carol", email="carol@example.com")
    # Then she exists, keyed by sub, with the token's email and default preferences
    me = api.call("GET /users/me", user="user-carol", email="carol@example.com").body
    assert me["user_id"] == "user-carol"
    assert me["email"] == "carol@example.com"
    assert me["preferences"]["email_notifications"] is True
    assert me["preferences"]["notification_frequency"] == "immediate"


def test_email_change_at_the_identity_provider_is_followed(api):
    api.call("GET /users/me", user="user-carol", email="old@example.com")
    me = api.call("GET /users/me", user="user-carol", email="new@example.com").body
    assert me["email"] == "new@example.com"


def test_token_with_an_unusable_email_still_provisions(api):
    me = api.call("GET /users/me", user="user-dave", email="not an address")
    assert me.status == 200
    assert me.body["email"] is None


def test_patch_merges_and_keeps_other_keys(api):
    first = api.call("PATCH /users/me/notification-preferences", body={"notification_frequency": "daily"})
    assert first.status == 200
    second = api.call(
        "PATCH /users/me/notification-preferences",
        body={"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Europe/Berlin"}},
    )
    assert second.body["notification_frequency"] == "daily"
    assert second.body["quiet_hours"] == {"start": "22:00", "end": "07:00", "timezone": "Europe/Berlin"}
    assert api.call("GET /users/me/notification-preferences").body == second.body
    cleared = api.call("PATCH /users/me/notification-preferences", body={"quiet_hours": None})
    assert cleared.body["quiet_hours"] is None


INVALID_PREFERENCES = [
    {"notification_frequency": "weekly"},
    {"email_notifications": None},
    {"quiet_hours": {"start": "25:00", "end": "07:00"}},
    {"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Nowhere/City"}},
]


def test_invalid_preferences_are_422_and_change_nothing(api):
    before = api.call("GET /users/me/notification-preferences").body
    for body in INVALID_PREFERENCES:
        response = api.call("PATCH /users/me/notification-preferences", body=body)
        assert response.status == 422, body
        assert response.body["details"], body
    assert api.call("GET /users/me/notification-preferences").body == before


@pytest.mark.parametrize(
    "body",
    [
        # tzdata directories and over-long names made ZoneInfo raise OSErrors: a 500.
        {"quiet_hours": {"start": "22:00", "end": "06:00", "timezone": "Europe"}},
        {"quiet_hours": {"start": "22:00", "end": "06:00", "timezone": "America"}},
        {"quiet_hours": {"start": "22:00", "end": "06:00", "timezone": "a" * 300}},
        {"quiet_hours": {"start": "22:00", "end": "06:00", "timezone": "posix/Europe/Berlin"}},
        # An empty window with a trailing newline passed a `$` regex, then held every email.
        {"quiet_hours": {"start": "22:00", "end": "22:00\n"}},
        {"quiet_hours": {"start": "22:00\n", "end": "06:00"}},
        # Each entry bounded: 200 long ones made the user's item over 400 KB (a 500 on the write).
        {"job_ids": [f"{i:04d}" + "x" * 4000 for i in range(200)]},
        {"job_ids": ["nightly-backup"]},
        {"job_types": ["x" * 65]},
    ],
    ids=[
        "tz-dir",
        "tz-dir2",
        "tz-long",
        "tz-posix",
        "end-newline",
        "start-newline",
        "ids-large",
        "ids-not-ulid",
        "type-long",
    ],
)
def test_preferences_that_once_were_a_500_or_stored_garbage_are_422(api, body):
    before = api.call("GET /users/me/notification-preferences").body
    response = api.call("PATCH /users/me/notification-preferences", body=body)
    assert response.status == 422, (response.status, str(response.body)[:500])
    assert response.body["details"]
    assert api.call("GET /users/me/notification-preferences").body == before


def test_job_filters_take_job_ids(api):
    job = api.call("POST /jobs", body={"name": "x", "job_type": "demo"}).body
    response = api.call("PATCH /users/me/notification-preferences", body={"job_ids": [job["job_id"]]})
    assert response.status == 200, response.body
    assert response.body["job_ids"] == [job["job_id"]]


def test_explicit_route_for_self_and_me_alias(api):
    api.call("PATCH /users/me/notification-preferences", body={"email_on_job_retry": True})
    by_id = api.call("GET /users/{user_id}/notification-preferences", path_params={"user_id": "user-alice"})
    by_me = api.call("GET /users/{user_id}/notification-preferences", path_params={"user_id": "me"})
    assert by_id.status == by_me.status == 200
    assert by_id.body["email_on_job_retry"] is True
    assert by_id.body == by_me.body


def test_admin_manages_anyones_preferences(api):
    api.call("GET /users/me", user="user-bob")
    path = {"user_id": "user-bob"}
    patched = api.call(
        "PATCH /users/{user_id}/notification-preferences",
        user="root",
        scopes=ADMIN,
        path_params=path,
        body={"email_notifications": False},
    )
    assert patched.status == 200
    bobs = api.call("GET /users/me/notification-preferences", user="user-bob").body
    assert bobs["email_notifications"] is False


def test_admin_asking_for_unknown_user_gets_404(api):
    response = api.call(
        "GET /users/{user_id}/notification-preferences",
        user="root",
        scopes=ADMIN,
        path_params={"user_id": "nobody"},
    )
    assert response.status == 404


def put_stored_user(aws: Any, user_id: str, preferences: dict[str, Any]) -> None:
    """A user item as an older version of the API may have stored it (attribute-value maps)."""
    aws.put_item(
        TableName="UsersTable",
        Item={
            "user_id": {"S": user_id},
            "email": {"S": f"{user_id}@example.com"},
            "created_at": {"S": "2026-01-01T00:00:00.000Z"},
            "version": {"N": "3"},
            "preferences": {"M": preferences},
        },
    )


def test_preferences_stored_under_older_rules_read_as_defaults_not_as_an_error(aws: Any) -> None:
    # Given a user whose stored quiet hours the old API let through ("22:00\n": always quiet)
    from jobtracker_common.repositories.users import UsersRepository

    put_stored_user(
        aws,
        "old-user",
        {
            "email_on_job_failure": {"BOOL": False},
            "quiet_hours": {
                "M": {"start": {"S": "22:00"}, "end": {"S": "22:00\n"}, "timezone": {"S": "UTC"}}
            },
        },
    )
    users = UsersRepository(aws, "UsersTable")
    # When it is read, alone or in a recipients batch, Then it reads, without the broken field
    for user in (users.get("old-user"), users.get_many(["old-user"])["old-user"]):
        assert user.email == "old-user@example.com"
        assert user.preferences.quiet_hours is None
        assert user.preferences.email_on_job_failure is False  # the valid fields are kept


def test_a_user_item_broken_outside_its_preferences_is_still_an_error(aws: Any) -> None:
    from jobtracker_common.repositories.users import UsersRepository
    from pydantic import ValidationError

    aws.put_item(TableName="UsersTable", Item={"user_id": {"S": "no-created-at"}, "preferences": {"M": {}}})
    with pytest.raises(ValidationError):
        UsersRepository(aws, "UsersTable").get("no-created-at")


@pytest.mark.parametrize(
    "preferences",
    [
        {
            "quiet_hours": {
                "M": {"start": {"S": "22:00\n"}, "end": {"S": "07:00\n"}, "timezone": {"S": "UTC"}}
            }
        },
        {
            "quiet_hours": {
                "M": {"start": {"S": "22:00"}, "end": {"S": "22:00\n"}, "timezone": {"S": "Europe"}}
            }
        },
    ],
    ids=["both-ends", "two-fields-of-one-window"],
)
def test_a_preference_with_several_stored_errors_reads_as_its_default(aws: Any, preferences: dict) -> None:
    from jobtracker_common.repositories.users import UsersRepository

    for user_id, prefs in (("old-user", preferences), ("good-user", {})):
        put_stored_user(aws, user_id, prefs)
    # The notifier's recipients batch: one old user must not fail everyone's email
    found = UsersRepository(aws, "UsersTable").get_many(["good-user", "old-user"])
    assert set(found) == {"good-user", "old-user"} and found["old-user"].preferences.quiet_hours is None


def test_a_stored_job_filter_with_an_entry_requests_no_longer_accept_stays_a_filter(aws: Any) -> None:
    from jobtracker_common.repositories.users import UsersRepository
    from jobtracker_common.users import NotificationEvent

    wanted, other = "01JWANTEDJOB00000000000000", "01JOTHERJOB000000000000000"
    put_stored_user(aws, "filtered", {"job_ids": {"L": [{"S": wanted}, {"S": "x" * 300}]}})
    user = UsersRepository(aws, "UsersTable").get("filtered")
    assert user.preferences.resolve(NotificationEvent.FAILED, job_id=other, job_type="demo") is None
    assert user.preferences.resolve(NotificationEvent.FAILED, job_id=wanted, job_type="demo") is not None
