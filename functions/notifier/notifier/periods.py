"""When a notification goes out: quiet-hours release times and digest periods, per user timezone."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from jobtracker_common.timeutil import parse_iso, to_iso
from jobtracker_common.users import NotificationFrequency, NotificationPreferences


@dataclass(frozen=True)
class DigestPeriod:
    key: str
    start: datetime
    end: datetime
    due: datetime


def digest_period(prefs: NotificationPreferences, at: datetime) -> DigestPeriod:
    """The hourly/daily period containing `at` in the user's timezone, and when its digest is due.

    A digest that would fall into quiet hours is due when the window ends instead.
    """
    zone = ZoneInfo(prefs.timezone)
    local = at.astimezone(zone)
    if prefs.notification_frequency is NotificationFrequency.DAILY:
        start = datetime.combine(local.date(), time(0), tzinfo=zone)
        end = datetime.combine(local.date() + timedelta(days=1), time(0), tzinfo=zone)
    else:
        start = local.replace(minute=0, second=0, microsecond=0)
        end = (start.astimezone(UTC) + timedelta(hours=1)).astimezone(zone)
    due = end
    if prefs.quiet_hours and prefs.quiet_hours.contains(due):
        due = prefs.quiet_hours.window_end(due)
    key = f"{prefs.notification_frequency.value}#{to_iso(start)}"
    return DigestPeriod(
        key=key, start=start.astimezone(UTC), end=end.astimezone(UTC), due=due.astimezone(UTC)
    )


def follow_up_period(key: str, now: datetime) -> str:
    """A period key for items that arrived after their period's digest had already gone out."""
    return f"{key.split('+', 1)[0]}+{to_iso(now)}"


def period_label(key: str, timezone: str) -> str:
    frequency, _, rest = key.partition("#")
    start = parse_iso(rest.split("+", 1)[0]).astimezone(ZoneInfo(timezone))
    if frequency == NotificationFrequency.DAILY.value:
        return f"daily, {start:%Y-%m-%d} {timezone}"
    return f"hourly, {start:%Y-%m-%d %H:%M} {timezone}"
