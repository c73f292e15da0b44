"""Next fire times the API returns follow EventBridge Scheduler's DST rules: a wall time that a
spring-forward skips does not fire that day; a repeated autumn hour fires once."""

from __future__ import annotations

from datetime import UTC, datetime

from jobtracker_common.schedules import parse_schedule


def iso(times):
    return [t.strftime("%Y-%m-%dT%H:%M") for t in times]


def test_spring_forward_skips_the_missing_wall_time():
    # 2026-03-29 02:00 does not exist in Berlin (clocks go 02:00 -> 03:00)
    expression = parse_schedule("cron(30 2 * * ? *)", "Europe/Berlin")
    after = datetime(2026, 3, 28, 2, 0, tzinfo=UTC)
    assert iso(expression.next_fire_times(after, 2)) == ["2026-03-30T00:30", "2026-03-31T00:30"]


def test_fall_back_fires_the_repeated_wall_time_once():
    # 2026-10-25 02:30 happens twice in Berlin (CEST, then CET)
    expression = parse_schedule("cron(30 2 * * ? *)", "Europe/Berlin")
    after = datetime(2026, 10, 24, 12, 0, tzinfo=UTC)
    assert iso(expression.next_fire_times(after, 3)) == [
        "2026-10-25T00:30",
        "2026-10-26T01:30",
        "2026-10-27T01:30",
    ]


def test_ordinary_days_are_unchanged():
    expression = parse_schedule("cron(0 2 * * ? *)", "Europe/Berlin")
    after = datetime(2026, 7, 1, 12, 0, tzinfo=UTC)
    assert iso(expression.next_fire_times(after, 2)) == ["2026-07-02T00:00", "2026-07-03T00:00"]
