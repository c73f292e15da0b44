"""The schedule emulator against moto server, on a controllable clock (no waiting for minutes)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from job_runner.events import RuleInvocation, ScheduleInvocation, parse_invocation
from jobtracker_common.schedules import ScheduleExpression, ScheduleService, job_schedule_name
from jobtracker_local.endpoint import fresh_moto
from jobtracker_local.resources import LocalResources, aws_client, provision
from jobtracker_local.scheduler import ScheduleEmulator
from jobtracker_local.template import load_template


@pytest.fixture
def stack() -> Iterator[LocalResources]:
    with fresh_moto() as server:
        yield provision(LocalResources(load_template(), server.url))


class Clock:
    def __init__(self) -> None:
        self.now = datetime.now(UTC)

    def __call__(self) -> datetime:
        return self.now


class Invocations:
    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []

    def __call__(self, arn: str, payload: Any) -> None:
        self.calls.append((arn, payload))

    def to(self, function_id: str, resources: LocalResources) -> list[Any]:
        arn = resources.attrs[f"{function_id}.Arn"]
        return [payload for target, payload in self.calls if target == arn]


def schedules(resources: LocalResources) -> ScheduleService:
    return ScheduleService(
        aws_client("scheduler", resources.endpoint),
        group_name=resources.refs["JobScheduleGroup"],
        role_arn=resources.attrs["SchedulerRole.Arn"],
        target_arn=resources.attrs["JobRunnerFunction.Arn"],
        dlq_arn=resources.attrs["SchedulerDLQ.Arn"],
    )


def emulator(resources: LocalResources, clock: Clock, calls: Invocations) -> ScheduleEmulator:
    return ScheduleEmulator(resources, calls, clock=clock)


def test_a_rate_schedule_fires_once_per_period_with_the_payload_aws_would_send(stack):
    # Given a job schedule created now
    clock, calls = Clock(), Invocations()
    schedules(stack).upsert_job_schedule(
        job_id="J1", expression="rate(5 minutes)", timezone="UTC", enabled=True
    )
    created = aws_client("scheduler", stack.endpoint).get_schedule(
        Name=job_schedule_name("J1"), GroupName=stack.refs["JobScheduleGroup"]
    )["CreationDate"]
    sim = emulator(stack, clock, calls)

    # When time passes 4 minutes, then past the first period, then sits there
    clock.now = created + timedelta(minutes=4)
    sim.tick()
    assert calls.to("JobRunnerFunction", stack) == []
    clock.now = created + timedelta(minutes=5, seconds=1)
    sim.tick()
    sim.tick()

    # Then the runner got exactly one scheduled invocation for the period's start
    (payload,) = calls.to("JobRunnerFunction", stack)
    invocation = parse_invocation(payload)
    assert isinstance(invocation, ScheduleInvocation)
    assert invocation.job_id == "J1"
    assert invocation.scheduled_time == (created + timedelta(minutes=5)).replace(microsecond=0)
    assert invocation.schedule_arn.endswith(f":schedule/{stack.refs['JobScheduleGroup']}/job-J1")
    assert invocation.delivery_attempt == 1


def test_a_cron_schedule_fires_on_the_wall_clock_of_its_timezone(stack):
    # Given a daily 09:00 Berlin schedule (08:00 UTC in winter)
    clock, calls = Clock(), Invocations()
    clock.now = datetime(2031, 1, 14, 7, 0, tzinfo=UTC)
    schedules(stack).upsert_job_schedule(
        job_id="J2", expression="cron(0 9 * * ? *)", timezone="Europe/Berlin", enabled=True
    )
    sim = emulator(stack, clock, calls)
    sim.tick()

    clock.now = datetime(2031, 1, 14, 7, 59, 59, tzinfo=UTC)
    sim.tick()
    assert calls.to("JobRunnerFunction", stack) == []
    clock.now = datetime(2031, 1, 14, 8, 0, 1, tzinfo=UTC)
    sim.tick()

    (payload,) = calls.to("JobRunnerFunction", stack)
    assert payload["scheduled_time"] == "2031-01-14T08:00:00Z"


def test_a_one_time_schedule_fires_once_and_is_deleted_after_completion(stack):
    # Given a retry schedule whose time has already come
    clock, calls = Clock(), Invocations()
    service = schedules(stack)
    assert service.create_retry_schedule(run_id="R1", attempt=2, at=clock.now - timedelta(seconds=1))
    sim = emulator(stack, clock, calls)

    sim.tick()
    sim.tick()

    assert calls.to("JobRunnerFunction", stack) == [{"kind": "retry", "run_id": "R1", "attempt": 2}]
    with pytest.raises(ClientError) as err:
        aws_client("scheduler", stack.endpoint).get_schedule(
            Name="retry-R1-2", GroupName=stack.refs["JobScheduleGroup"]
        )
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_a_disabled_schedule_does_not_fire(stack):
    clock, calls = Clock(), Invocations()
    schedules(stack).upsert_job_schedule(
        job_id="J3", expression="rate(1 minute)", timezone="UTC", enabled=False
    )
    sim = emulator(stack, clock, calls)
    sim.tick()
    clock.now += timedelta(minutes=3)
    sim.tick()
    assert calls.to("JobRunnerFunction", stack) == []


def test_the_templates_scheduled_functions_fire_on_their_rates(stack):
    # Given the stack as provisioned (sweeper every minute, digest every five)
    clock, calls = Clock(), Invocations()
    sim = emulator(stack, clock, calls)
    sim.tick()

    # When five minutes and five seconds pass, watched every 61 seconds
    for _ in range(5):
        clock.now += timedelta(seconds=61)
        sim.tick()

    assert len(calls.to("SweeperFunction", stack)) == 5
    assert calls.to("DigestFunction", stack) == [{}]


def test_a_classic_schedule_rule_sends_a_scheduled_event(stack):
    # Given a classic rule naming a job, targeting the runner
    clock, calls = Clock(), Invocations()
    events = aws_client("events", stack.endpoint)
    rule_arn = events.put_rule(Name="nightly-job-J9", ScheduleExpression="rate(1 minute)")["RuleArn"]
    events.put_targets(
        Rule="nightly-job-J9", Targets=[{"Id": "runner", "Arn": stack.attrs["JobRunnerFunction.Arn"]}]
    )
    sim = emulator(stack, clock, calls)
    sim.tick()

    clock.now += timedelta(seconds=61)
    sim.tick()

    (payload,) = calls.to("JobRunnerFunction", stack)
    assert payload["detail-type"] == "Scheduled Event"
    assert payload["resources"] == [rule_arn]
    invocation = parse_invocation(json.loads(json.dumps(payload)))
    assert isinstance(invocation, RuleInvocation)
    assert invocation.job_id == "J9"


# pyawscron cannot evaluate some expressions Scheduler accepts (a day the next month lacks,
# 29 February, explicit years): the emulator must neither crash, nor retry in a loop, nor fire
# twice, and must say so once.
def uncomputable_logs(caplog: pytest.LogCaptureFixture, name: str) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == "jobtracker.local" and r.levelname in {"WARNING", "ERROR"} and name in r.getMessage()
    ]


def test_a_schedule_whose_next_fire_time_cannot_be_computed_is_reported_once_and_the_others_fire(
    stack, caplog
):
    # Given a 29 February schedule (listed first) and an every-minute schedule
    clock, calls = Clock(), Invocations()
    service = schedules(stack)
    service.upsert_job_schedule(job_id="JFEB", expression="cron(0 0 29 2 ? *)", timezone="UTC", enabled=True)
    service.upsert_job_schedule(job_id="JMIN", expression="rate(1 minute)", timezone="UTC", enabled=True)
    sim = emulator(stack, clock, calls)

    # When the emulator watches for a minute and a bit
    sim.tick()
    clock.now += timedelta(seconds=61)
    sim.tick()
    sim.tick()

    # Then the other schedule fired, and the uncomputable one was reported once, by name
    assert [p["job_id"] for p in calls.to("JobRunnerFunction", stack)] == ["JMIN"]
    (line,) = uncomputable_logs(caplog, "job-JFEB")
    assert "cron(0 0 29 2 ? *)" in line


def test_a_schedule_that_cannot_compute_its_next_fire_fires_once_then_resumes_when_it_can(stack, caplog):
    # Given a schedule for the 29th of every month, watched just before 29 January
    clock, calls = Clock(), Invocations()
    clock.now = datetime(2031, 1, 29, 11, 59, tzinfo=UTC)
    schedules(stack).upsert_job_schedule(
        job_id="J29", expression="cron(0 12 29 * ? *)", timezone="UTC", enabled=True
    )
    sim = emulator(stack, clock, calls)
    sim.tick()

    # When it fires, and the next time (February has no 29th) cannot be computed
    clock.now = datetime(2031, 1, 29, 12, 0, 1, tzinfo=UTC)
    for _ in range(3):
        sim.tick()
    clock.now += timedelta(minutes=30)
    sim.tick()

    # Then it fired once, and said once that it cannot tell when it fires next
    fired = [p["scheduled_time"] for p in calls.to("JobRunnerFunction", stack)]
    assert fired == ["2031-01-29T12:00:00Z"]
    assert len(uncomputable_logs(caplog, "job-J29")) == 1

    # When time reaches a month the library can evaluate again
    clock.now = datetime(2031, 3, 1, tzinfo=UTC)
    sim.tick()
    clock.now = datetime(2031, 3, 29, 12, 0, 1, tzinfo=UTC)
    sim.tick()

    # Then it fires on its next real date
    fired = [p["scheduled_time"] for p in calls.to("JobRunnerFunction", stack)]
    assert fired == ["2031-01-29T12:00:00Z", "2031-03-29T12:00:00Z"]


def test_a_classic_rule_whose_fire_time_cannot_be_computed_is_reported_once(stack, caplog):
    # Given a classic rule for 29 February
    clock, calls = Clock(), Invocations()
    events = aws_client("events", stack.endpoint)
    events.put_rule(Name="leap-day", ScheduleExpression="cron(0 0 29 2 ? *)")
    events.put_targets(
        Rule="leap-day", Targets=[{"Id": "runner", "Arn": stack.attrs["JobRunnerFunction.Arn"]}]
    )
    sim = emulator(stack, clock, calls)

    # When the emulator watches it
    for _ in range(3):
        sim.tick()
        clock.now += timedelta(seconds=30)

    # Then nothing fired, the template's own schedules still did, and it was reported once
    assert calls.to("JobRunnerFunction", stack) == []
    assert calls.to("SweeperFunction", stack) != []
    assert len(uncomputable_logs(caplog, "leap-day")) == 1


def test_a_cron_the_library_answers_with_no_fire_time_is_reported_once_and_retried_hourly(
    stack, caplog, monkeypatch
):
    # Given a daily cron, and a fire-time library that answers nothing for it for now
    clock, calls = Clock(), Invocations()
    clock.now = datetime(2031, 5, 1, 8, 0, tzinfo=UTC)
    real = ScheduleExpression.next_fire_times
    blind = {"on": True}

    def next_fire_times(
        self: ScheduleExpression, after: datetime, count: int = 3, **kw: Any
    ) -> list[datetime]:
        return [] if blind["on"] and self.kind == "cron" else real(self, after, count, **kw)

    monkeypatch.setattr(ScheduleExpression, "next_fire_times", next_fire_times)
    schedules(stack).upsert_job_schedule(
        job_id="JDAY", expression="cron(0 9 * * ? *)", timezone="UTC", enabled=True
    )
    sim = emulator(stack, clock, calls)

    # When the emulator watches past 09:00, then the library recovers and an hour has passed
    for minutes in (0, 61, 62):
        clock.now = datetime(2031, 5, 1, 8, 0, tzinfo=UTC) + timedelta(minutes=minutes)
        sim.tick()
    assert calls.to("JobRunnerFunction", stack) == []
    assert len(uncomputable_logs(caplog, "job-JDAY")) == 1
    blind["on"] = False
    clock.now = datetime(2031, 5, 2, 8, 59, tzinfo=UTC)
    sim.tick()
    clock.now = datetime(2031, 5, 2, 9, 0, 1, tzinfo=UTC)
    sim.tick()

    # Then it fires at its next time, once
    assert [p["scheduled_time"] for p in calls.to("JobRunnerFunction", stack)] == ["2031-05-02T09:00:00Z"]
