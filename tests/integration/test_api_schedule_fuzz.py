"""Schedule expressions are free text the OpenAPI fuzzer cannot aim at: generate AWS-shaped
ones (right syntax, random fields) and check POST /jobs answers 201 or a 422 naming the
schedule, never a 5xx, and that an accepted job's Scheduler schedule matches it."""

from __future__ import annotations

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.support.http import api_harness

FIELD = st.one_of(
    st.sampled_from(["*", "?", "L", "W", "0", "1", "2", "15", "29", "30", "31", "59", "60", "99"]),
    st.sampled_from(
        ["MON", "FRI", "MON-FRI", "6L", "MON#2", "MON#9", "15W", "1/5", "0/15", "JAN", "1,3", "2199"]
    ),
    st.integers(min_value=-1, max_value=100).map(str),
)
CRON = st.lists(FIELD, min_size=5, max_size=7).map(lambda fields: f"cron({' '.join(fields)})")
RATE = st.tuples(
    st.integers(min_value=-1, max_value=10**12),
    st.sampled_from(["minute", "minutes", "hour", "hours", "day", "days", "week"]),
).map(lambda t: f"rate({t[0]} {t[1]})")
AT = st.tuples(
    st.integers(1, 9999), st.integers(0, 13), st.integers(0, 32), st.integers(0, 25), st.integers(0, 61)
).map(lambda t: f"at({t[0]:04d}-{t[1]:02d}-{t[2]:02d}T{t[3]:02d}:{t[4]:02d}:00)")
TIMEZONE = st.sampled_from(
    ["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]
)


def test_generated_schedules_are_created_or_refused_never_5xx(aws):
    with api_harness(aws) as api:

        @settings(
            max_examples=150,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(schedule=st.one_of(CRON, RATE, AT), timezone=TIMEZONE)
        def create_job(schedule: str, timezone: str) -> None:
            body = {"name": "gen", "job_type": "demo", "schedule": schedule, "timezone": timezone}
            response = api.call("POST /jobs", body=body)
            assert response.status in (201, 422), (schedule, response.status, response.body)
            if response.status == 422:
                assert response.body["details"][0]["field"] == "schedule"
                return
            stored = api.schedule(response.body["job_id"])
            assert (stored["ScheduleExpression"], stored["ScheduleExpressionTimezone"]) == (
                schedule,
                timezone,
            )
            assert len(response.body["next_fire_times"]) <= 3

        create_job()
