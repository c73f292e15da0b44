"""Notification preferences: seed defaults, validation messages, merge semantics, event switches."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from jobtracker_common.models import validate_timezone
from jobtracker_common.users import (
    NotificationEvent,
    NotificationFrequency,
    NotificationPreferences,
    PreferencesPatch,
    QuietHours,
    User,
)
from pydantic import ValidationError

E = NotificationEvent


def test_defaults_keep_the_seed_keys_and_values() -> None:
    # Given no stored preferences / When defaults are built
    prefs = NotificationPreferences()
    # Then the seed's keys keep their defaults and the new switches have theirs
    assert prefs.model_dump() == {
        "email_notifications": True,
        "email_on_job_completion": True,
        "email_on_job_failure": True,
        "notification_frequency": NotificationFrequency.IMMEDIATE,
        "email_on_job_timeout": True,
        "email_on_job_retry": False,
        "email_on_job_recovery": True,
        "quiet_hours": None,
        "job_ids": None,
        "job_types": None,
    }


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        ({"emial_notifications": False}, "Extra inputs are not permitted"),
        ({"notification_frequency": "weekly"}, "'immediate', 'hourly' or 'daily'"),
        ({"quiet_hours": {"start": "25:00", "end": "07:00"}}, "24-hour time 'HH:MM'"),
        ({"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Mars/Olympus"}}, "unknown IANA"),
        ({"quiet_hours": {"start": "22:00", "end": "22:00"}}, "must differ"),
        ({"quiet_hours": {"start": "22:00", "end": "07:00", "tz": "UTC"}}, "Extra inputs"),
        ({"email_on_job_failure": None}, "cannot be null"),
        ({"email_on_job_failure": "no"}, "valid boolean"),
        ({"email_on_job_retry": 1}, "valid boolean"),
        ({"job_types": ["a", " "]}, "non-empty"),
        ({"job_ids": ["a"]}, "should match pattern"),
        ({"job_types": ["x" * 65]}, "at most 64 characters"),
        # `$` would match before a final newline; fullmatch does not.
        ({"quiet_hours": {"start": "22:00", "end": "22:00\n"}}, "at most 5 characters"),
        ({"quiet_hours": {"start": "22:00", "end": "7:00"}}, "24-hour time 'HH:MM'"),
        # tzdata directories and over-long names: ZoneInfo raises OSErrors for those.
        ({"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "Europe"}}, "unknown IANA"),
        ({"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "a" * 64}}, "unknown IANA"),
        ({"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "a" * 300}}, "at most 64"),
        # Opened by ZoneInfo, refused by the IANA list (as for jobs).
        (
            {"quiet_hours": {"start": "22:00", "end": "07:00", "timezone": "posix/Europe/Berlin"}},
            "unknown IANA",
        ),
    ],
)
def test_bad_patches_are_rejected_with_a_clear_message(payload: dict, message: str) -> None:
    # When an invalid patch is parsed / Then it is rejected and the message names the problem
    with pytest.raises(ValidationError) as info:
        PreferencesPatch.model_validate(payload)
    assert message in str(info.value)


def test_partial_update_merges_and_null_clears_optionals() -> None:
    # Given stored preferences with quiet hours and a filter
    stored = NotificationPreferences(
        email_on_job_retry=True,
        quiet_hours=QuietHours(start="22:00", end="07:00", timezone="Europe/Berlin"),
        job_types=["backup"],
    )
    # When a patch changes one switch and clears quiet hours
    merged = stored.merge(
        PreferencesPatch.model_validate({"email_on_job_failure": False, "quiet_hours": None})
    )
    # Then only those keys changed
    assert merged.email_on_job_failure is False
    assert merged.quiet_hours is None
    assert merged.email_on_job_retry is True
    assert merged.job_types == ["backup"]
    # And an empty patch changes nothing
    assert stored.merge(PreferencesPatch()) == stored


SWITCHES = {
    "email_on_job_completion": {E.COMPLETED},
    "email_on_job_failure": {E.FAILED},
    "email_on_job_timeout": {E.TIMED_OUT},
    "email_on_job_recovery": set(),  # off: a recovery falls back to a completion email
}


@pytest.mark.parametrize("switch", sorted(SWITCHES))
def test_each_switch_suppresses_exactly_its_events(switch: str) -> None:
    # Given everything on (retry included) except one switch
    everything = NotificationPreferences(email_on_job_retry=True)
    prefs = everything.model_copy(update={switch: False})
    # When every event is resolved
    suppressed = {e for e in E if everything.resolve(e, job_id="j", job_type="t") is not None}
    suppressed -= {e for e in E if prefs.resolve(e, job_id="j", job_type="t") is not None}
    # Then exactly the events named by the switch are gone
    assert suppressed == SWITCHES[switch]


def test_retry_is_off_by_default_and_master_switch_silences_everything() -> None:
    assert NotificationPreferences().resolve(E.RETRYING, job_id="j", job_type="t") is None
    assert NotificationPreferences(email_on_job_retry=True).resolve(E.RETRYING, job_id="j", job_type="t")
    off = NotificationPreferences(email_notifications=False, email_on_job_retry=True)
    assert all(off.resolve(e, job_id="j", job_type="t") is None for e in E)


def test_recovery_is_announced_as_recovery_or_falls_back_to_completion() -> None:
    on = NotificationPreferences(email_on_job_completion=False)
    assert on.resolve(E.RECOVERED, job_id="j", job_type="t") is E.RECOVERED
    off = NotificationPreferences(email_on_job_recovery=False)
    assert off.resolve(E.RECOVERED, job_id="j", job_type="t") is E.COMPLETED
    neither = NotificationPreferences(email_on_job_recovery=False, email_on_job_completion=False)
    assert neither.resolve(E.RECOVERED, job_id="j", job_type="t") is None


def test_job_filters_limit_which_jobs_notify() -> None:
    prefs = NotificationPreferences(job_ids=["j1"], job_types=["backup"])
    assert prefs.resolve(E.FAILED, job_id="j1", job_type="backup") is E.FAILED
    assert prefs.resolve(E.FAILED, job_id="j2", job_type="backup") is None
    assert prefs.resolve(E.FAILED, job_id="j1", job_type="http_check") is None


def test_quiet_hours_cross_midnight_in_the_users_timezone() -> None:
    quiet = QuietHours(start="22:00", end="07:00", timezone="Europe/Berlin")  # UTC+1 in winter
    assert quiet.contains(datetime(2026, 1, 10, 21, 30, tzinfo=UTC))  # 22:30 Berlin
    assert quiet.contains(datetime(2026, 1, 10, 5, 59, tzinfo=UTC))  # 06:59 Berlin
    assert not quiet.contains(datetime(2026, 1, 10, 6, 0, tzinfo=UTC))  # 07:00 Berlin
    assert not quiet.contains(datetime(2026, 1, 10, 12, 0, tzinfo=UTC))
    # The window that started at 22:30 Berlin ends at 07:00 Berlin the next day
    assert quiet.window_end(datetime(2026, 1, 10, 21, 30, tzinfo=UTC)) == datetime(
        2026, 1, 11, 6, 0, tzinfo=UTC
    )
    assert quiet.window_end(datetime(2026, 1, 11, 1, 0, tzinfo=UTC)) == datetime(
        2026, 1, 11, 6, 0, tzinfo=UTC
    )


# Nights the clocks change (2026): Berlin and New York by an hour, Lord Howe by half an hour.
_CHANGE_DAYS = {
    "Europe/Berlin": (datetime(2026, 3, 29, tzinfo=UTC), datetime(2026, 10, 25, tzinfo=UTC)),
    "America/New_York": (datetime(2026, 3, 8, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)),
    "Australia/Lord_Howe": (datetime(2026, 4, 4, tzinfo=UTC), datetime(2026, 10, 3, tzinfo=UTC)),
}


@pytest.mark.parametrize("zone", sorted(_CHANGE_DAYS))
@pytest.mark.parametrize(
    ("start", "end"),
    [("23:00", "02:30"), ("01:00", "03:00"), ("02:15", "02:45"), ("22:00", "06:00"), ("02:45", "02:15")],
)
def test_quiet_hours_end_after_the_instant_and_outside_the_window_when_clocks_change(
    zone: str, start: str, end: str
) -> None:
    quiet = QuietHours(start=start, end=end, timezone=zone)
    for day in _CHANGE_DAYS[zone]:
        at = day - timedelta(hours=20)
        while at < day + timedelta(hours=30):
            if quiet.contains(at):
                ends = quiet.window_end(at).astimezone(UTC)
                assert ends > at and not quiet.contains(ends), (at, ends)
                # No earlier than the first minute outside the window; later only by the size of
                # a clock change (the clocks went back into the window before it read `end`).
                first_out = at + timedelta(minutes=1)
                while quiet.contains(first_out):
                    first_out += timedelta(minutes=1)
                assert first_out <= ends <= first_out + timedelta(hours=1), (at, ends, first_out)
                wall = ends.astimezone(quiet.zone)
                skipped = wall.utcoffset() != (ends - timedelta(minutes=1)).astimezone(quiet.zone).utcoffset()
                assert wall.strftime("%H:%M") == end or skipped, (at, wall)
            at += timedelta(minutes=10)


def test_quiet_hours_end_on_the_night_the_clocks_go_back_is_the_second_reading() -> None:
    quiet = QuietHours(start="23:00", end="02:30", timezone="Europe/Berlin")

    def ends(hour: int, minute: int, day: tuple[int, int]) -> datetime:
        # In UTC: an aware time in the repeated hour never equals one of another zone (PEP 495).
        return quiet.window_end(datetime(2026, *day, hour, minute, tzinfo=UTC)).astimezone(UTC)

    # 2026-10-25: 03:00 CEST -> 02:00 CET, so 02:30 is read at 00:30Z and again at 01:30Z.
    assert ends(0, 10, (10, 25)) == datetime(2026, 10, 25, 0, 30, tzinfo=UTC)
    assert ends(1, 10, (10, 25)) == datetime(2026, 10, 25, 1, 30, tzinfo=UTC)
    # 2026-03-29: 02:00 CET -> 03:00 CEST, 02:30 is never read: the window ends at the jump.
    assert ends(0, 10, (3, 29)) == datetime(2026, 3, 29, 1, 0, tzinfo=UTC)


def test_user_rejects_header_breaking_email() -> None:
    now = datetime(2026, 1, 1, tzinfo=UTC)
    with pytest.raises(ValidationError, match="not a valid email"):
        User(user_id="u", email="a@example.com\r\nBcc: evil@example.com", created_at=now)
    assert User(user_id="u", email="a@example.com", created_at=now).preferences == NotificationPreferences()


def test_filter_entries_are_bounded_each_in_a_patch_and_in_stored_preferences() -> None:
    ulid = "01KB0000000000000000000000"
    assert PreferencesPatch.model_validate({"job_ids": [ulid]}).job_ids == [ulid]
    # 200 long entries would make the user's item larger than DynamoDB's 400 KB
    with pytest.raises(ValidationError, match="should match pattern"):
        PreferencesPatch.model_validate({"job_ids": [f"{i:04d}" + "x" * 4000 for i in range(200)]})
    # Stored entries read as stored: one accepted before requests were checked is still the filter
    stored = {"job_ids": ["01KB0000000000000000000000", "x" * 300], "job_types": ["t" * 65]}
    assert NotificationPreferences.model_validate(stored).job_ids == stored["job_ids"]


def test_stored_quiet_hours_read_with_the_zoneinfo_check_and_never_raise_oserrors() -> None:
    # Stored preferences are read without the IANA list (cheap for the notifier)...
    assert QuietHours(start="22:00", end="07:00", timezone="Europe/Berlin").timezone == "Europe/Berlin"
    # ...and a name that is a tzdata directory or too long for a file name is a ValueError
    # (a 422 in a request), not the IsADirectoryError/OSError ZoneInfo raises.
    for name in ("Europe", "America", "a" * 300, "Europe/../UTC"):
        with pytest.raises(ValueError, match="unknown IANA timezone"):
            validate_timezone(name)
        with pytest.raises(ValidationError):
            QuietHours(start="22:00", end="07:00", timezone=name)


def test_an_empty_window_is_refused_however_it_is_spelled() -> None:
    # A trailing newline once slipped past `$` and stored a window that held every email.
    for end in ("22:00", "22:00\n"):
        with pytest.raises(ValidationError):
            QuietHours(start="22:00", end=end)
