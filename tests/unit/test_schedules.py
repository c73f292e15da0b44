"""AWS schedule expressions: AWS's rules, timezones, next fire times."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from jobtracker_common.errors import ValidationError
from jobtracker_common.lifecycle import DELIVERY_WINDOW, RETRY_LEASE
from jobtracker_common.schedules import ScheduleExpression, ScheduleService, parse_schedule


def test_cron_in_berlin_fires_at_local_two_oclock() -> None:
    # Given a daily 02:00 cron in Europe/Berlin (UTC+1 in winter, UTC+2 in summer)
    schedule = parse_schedule("cron(0 2 * * ? *)", "Europe/Berlin")
    # When asked for the next fire times from a winter instant
    fires = schedule.next_fire_times(datetime(2026, 11, 29, 12, 0, tzinfo=UTC), 3)
    # Then they are 01:00 UTC on the following days
    assert fires == [datetime(2026, 11, d, 1, 0, tzinfo=UTC) for d in (30,)] + [
        datetime(2026, 12, d, 1, 0, tzinfo=UTC) for d in (1, 2)
    ]


def test_cron_follows_daylight_saving() -> None:
    fires = parse_schedule("cron(0 2 * * ? *)", "Europe/Berlin").next_fire_times(
        datetime(2026, 7, 1, 12, 0, tzinfo=UTC), 1
    )
    assert fires == [datetime(2026, 7, 2, 0, 0, tzinfo=UTC)]


@pytest.mark.parametrize(
    ("expression", "problem"),
    [
        ("cron(0 2 * * *)", "6 required"),
        ("cron(0 2 * * * *)", "question mark"),
        ("cron(61 2 * * ? *)", "minute"),
        ("rate(0 minutes)", "positive"),
        ("rate(5 minute)", "minutes"),
        ("every day", "not an AWS schedule expression"),
    ],
)
def test_invalid_expressions_name_the_problem(expression: str, problem: str) -> None:
    with pytest.raises(ValidationError, match=problem):
        parse_schedule(expression)


def test_rate_counts_from_anchor() -> None:
    anchor = datetime(2026, 11, 29, 4, 0, 30, tzinfo=UTC)
    fires = parse_schedule("rate(5 minutes)").next_fire_times(
        datetime(2026, 11, 29, 4, 7, tzinfo=UTC), 2, anchor=anchor
    )
    assert fires == [
        datetime(2026, 11, 29, 4, 10, 30, tzinfo=UTC),
        datetime(2026, 11, 29, 4, 15, 30, tzinfo=UTC),
    ]


def test_at_fires_once_in_its_timezone() -> None:
    schedule = parse_schedule("at(2030-01-01T09:00:00)", "America/New_York")
    assert schedule.next_fire_times(datetime(2029, 1, 1, tzinfo=UTC), 3) == [
        datetime(2030, 1, 1, 14, 0, tzinfo=UTC)
    ]
    assert schedule.next_fire_times(datetime(2031, 1, 1, tzinfo=UTC), 3) == []


def test_unknown_timezone_is_rejected() -> None:
    with pytest.raises(ValidationError, match="timezone"):
        parse_schedule("rate(1 hour)", "Nowhere/Special")


@pytest.mark.parametrize(
    "expression",
    ["cron(0 0 29 2 ? *)", "cron(0 12 31 * ? *)", "cron(0 12 1 1 ? 2030)", "cron(0 12 ? 2 6#5 *)"],
)
def test_crons_pyawscron_cannot_evaluate_give_what_it_could_not_an_error(expression: str) -> None:
    # Given valid crons on which pyawscron raises (from some start dates, or always)
    cron = parse_schedule(expression, "Europe/Berlin")
    # When the next fire times are asked for / Then no exception escapes, and each time given fits
    times = cron.next_fire_times(datetime(2026, 1, 15, tzinfo=UTC), 3)
    assert len(times) <= 3
    assert times == sorted(set(times))


@pytest.mark.parametrize(
    ("expression", "timezone"),
    [
        ("at(9999-12-31T23:00:00)", "Etc/GMT+12"),  # year 10000 in UTC
        ("at(0001-01-01T00:00:00)", "Etc/GMT-14"),  # year 0 in UTC
        ("at(9999-12-31T23:59:59)", "America/New_York"),
    ],
)
def test_at_time_outside_the_utc_date_range_is_a_validation_error(expression: str, timezone: str) -> None:
    # Given a one-time schedule whose wall time is valid but whose UTC instant no datetime holds
    # When it is parsed / Then it is refused as invalid (422 at the API), before anything is
    # written, instead of an OverflowError when its fire time is computed
    with pytest.raises(ValidationError, match="outside the years 1-9999 in UTC"):
        parse_schedule(expression, timezone)


@pytest.mark.parametrize(
    ("expression", "timezone", "fire"),
    [
        ("at(9999-12-31T23:59:59)", "UTC", datetime(9999, 12, 31, 23, 59, 59, tzinfo=UTC)),
        ("at(9999-12-31T10:00:00)", "Etc/GMT+12", datetime(9999, 12, 31, 22, 0, tzinfo=UTC)),
        ("at(0001-01-01T00:00:00)", "UTC", None),
    ],
)
def test_at_times_at_the_edges_of_the_range_still_parse(
    expression: str, timezone: str, fire: datetime | None
) -> None:
    schedule = parse_schedule(expression, timezone)
    assert schedule.next_fire_times(datetime(2026, 1, 1, tzinfo=UTC)) == ([fire] if fire else [])


def test_next_fire_times_of_an_out_of_range_at_never_raises() -> None:
    # Given an expression built without parse_schedule (e.g. read back from an older job)
    schedule = ScheduleExpression(
        "at", "at(9999-12-31T23:00:00)", "Etc/GMT+12", at=datetime(9999, 12, 31, 23, 0)
    )
    # When its next fire times are asked for / Then there are none, and no exception
    assert schedule.next_fire_times(datetime(2026, 1, 1, tzinfo=UTC)) == []


def test_schedulers_delivery_window_is_the_one_the_sweeper_waits_for() -> None:
    # Given the target every job and retry schedule is created with
    target = ScheduleService(
        None,  # type: ignore[arg-type]  # building the target config calls nothing
        group_name="g",
        role_arn="arn:aws:iam::123456789012:role/r",
        target_arn="arn:aws:lambda:eu-west-1:123456789012:function:f",
    )._target_config("{}")
    # Then Scheduler stops delivering after the window the pending runs' leases are built from
    window = timedelta(seconds=target["RetryPolicy"]["MaximumEventAgeInSeconds"])
    assert window == DELIVERY_WINDOW
    assert window + DELIVERY_WINDOW <= RETRY_LEASE  # then Lambda's queue may hold it as long
