"""UsersRepository against moto: provisioning from token claims, merged preference updates."""

from __future__ import annotations

from typing import Any

import pytest
from jobtracker_common.errors import NotFoundError, TransientError
from jobtracker_common.repositories.users import UsersRepository
from jobtracker_common.users import NotificationFrequency, PreferencesPatch, QuietHours

from tests.support.notifier import Clock, ThrottledUsersTable


@pytest.fixture
def users(aws: Any) -> UsersRepository:
    return UsersRepository(aws, "UsersTable", clock=Clock())


def test_get_or_create_provisions_once_and_follows_email_changes(users: UsersRepository) -> None:
    # Given a first sight of a token subject
    first = users.get_or_create("sub-1", email="a@example.com", display_name="Ann")
    # When it is seen again, then with a changed email
    again = users.get_or_create("sub-1", email="a@example.com", display_name="Other")
    changed = users.get_or_create("sub-1", email="ann@example.com")
    # Then one user exists, with default preferences and the latest email
    assert again == first and first.preferences.email_notifications is True
    assert changed.email == "ann@example.com"
    stored = users.get("sub-1")
    assert (stored.email, stored.display_name, stored.created_at) == (
        "ann@example.com",
        "Ann",
        first.created_at,
    )


def test_preference_patches_merge_and_persist(users: UsersRepository) -> None:
    # Given a provisioned user
    users.get_or_create("sub-1", email="a@example.com")
    # When two partial updates arrive one after the other
    users.update_preferences("sub-1", PreferencesPatch(notification_frequency=NotificationFrequency.DAILY))
    users.update_preferences(
        "sub-1",
        PreferencesPatch(email_on_job_retry=True, quiet_hours=QuietHours(start="22:00", end="07:00")),
    )
    # Then both survive, and clearing quiet hours with null works
    prefs = users.get("sub-1").preferences
    assert prefs.notification_frequency is NotificationFrequency.DAILY and prefs.email_on_job_retry is True
    assert prefs.quiet_hours == QuietHours(start="22:00", end="07:00", timezone="UTC")
    users.update_preferences("sub-1", PreferencesPatch.model_validate({"quiet_hours": None}))
    assert users.get("sub-1").preferences.quiet_hours is None
    assert users.get("sub-1").preferences.notification_frequency is NotificationFrequency.DAILY


def test_a_concurrent_change_is_re_read_and_merged_not_lost(users: UsersRepository, aws: Any) -> None:
    # Given a user whose item changes between our read and our write (another PATCH won)
    users.get_or_create("sub-1", email="a@example.com")
    other = UsersRepository(aws, "UsersTable", clock=Clock())
    real_get = aws.get_item
    calls = {"n": 0}

    def racing_get(**kwargs: Any) -> Any:
        response = real_get(**kwargs)
        calls["n"] += 1
        if calls["n"] == 1:
            other.update_preferences("sub-1", PreferencesPatch(email_on_job_failure=False))
        return response

    aws.get_item = racing_get
    try:
        users.update_preferences("sub-1", PreferencesPatch(email_on_job_timeout=False))
    finally:
        aws.get_item = real_get
    # Then both changes are kept
    prefs = users.get("sub-1").preferences
    assert prefs.email_on_job_failure is False and prefs.email_on_job_timeout is False


def test_unknown_users_are_not_found(users: UsersRepository) -> None:
    with pytest.raises(NotFoundError):
        users.get("nobody")
    with pytest.raises(NotFoundError):
        users.update_preferences("nobody", PreferencesPatch(email_notifications=False))
    assert users.find("nobody") is None
    assert users.get_many(["nobody"]) == {}


def test_unprocessed_user_keys_are_retried_with_backoff(users: UsersRepository, aws: Any) -> None:
    # Given two users, and a table that throttles the first two reads
    for user_id in ("a", "b"):
        users.get_or_create(user_id, email=f"{user_id}@example.com")
    client = ThrottledUsersTable(aws, times=2)
    pauses: list[float] = []
    repo = UsersRepository(client, "UsersTable", sleep=pauses.append)  # type: ignore[arg-type]
    # When both are read
    found = repo.get_many(["a", "b", "ghost"])
    # Then both came back after two pauses, and the unknown one is simply absent
    assert sorted(found) == ["a", "b"]
    assert client.calls == 3 and len(pauses) == 2


def test_users_that_stay_unread_are_an_error_not_absent_users(users: UsersRepository, aws: Any) -> None:
    # Given a user and a table that throttles every read
    users.get_or_create("a", email="a@example.com")
    repo = UsersRepository(ThrottledUsersTable(aws, times=99), "UsersTable", sleep=lambda _s: None)  # type: ignore[arg-type]
    # When it is read / Then the caller learns it could not be read (not "no such user")
    with pytest.raises(TransientError, match="1 user record"):
        repo.get_many(["a"])
