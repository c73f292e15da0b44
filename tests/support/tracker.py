"""The tracker wired to moto, and delivery of stream records to it as Lambda would."""

from __future__ import annotations

import json
from typing import Any

import boto3
from jobtracker_common.repositories import JobsRepository
from jobtracker_common.repositories.stats import StatsRepository
from jobtracker_common.schedules import ScheduleService
from jobtracker_common.timeutil import Clock, utcnow
from jobtracker_local.template import load_template
from tracker import handler
from tracker.transitions import TransitionTracker

from tests.support.aws import ACCOUNT, REGION
from tests.support.streams import StreamTail, lambda_event, matching

SCHEDULE_GROUP = "jobtracker-jobs"
RUNNER_ARN = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:JobRunnerFunction"
ROLE_ARN = f"arn:aws:iam::{ACCOUNT}:role/SchedulerRole"


def scheduler() -> Any:
    return boto3.client("scheduler", region_name=REGION)


def make_tracker(ddb: Any, *, clock: Clock = utcnow) -> TransitionTracker:
    """A tracker on the template tables, with a schedule group to create retries in."""
    client = scheduler()
    if SCHEDULE_GROUP not in [g["Name"] for g in client.list_schedule_groups()["ScheduleGroups"]]:
        client.create_schedule_group(Name=SCHEDULE_GROUP)
    return TransitionTracker(
        StatsRepository(ddb, "StatsTable"),
        JobsRepository(ddb, "JobsTable"),
        ScheduleService(client, group_name=SCHEDULE_GROUP, role_arn=ROLE_ARN, target_arn=RUNNER_ARN),
        clock=clock,
    )


def tracker_patterns() -> list[str]:
    """The TrackerFunction's FilterCriteria patterns, from the template."""
    for function_id, _event_id, props in load_template().events_of_type("DynamoDB"):
        if function_id == "TrackerFunction":
            return [f["Pattern"] for f in props.get("FilterCriteria", {}).get("Filters", [])]
    raise AssertionError("TrackerFunction has no DynamoDB event in the template")


class TrackerFeed:
    """New RunsTable stream records, filtered like the template's event source, for the tracker."""

    def __init__(self) -> None:
        self._tail = StreamTail("RunsTable")
        self._patterns = tracker_patterns()

    def read(self) -> list[dict[str, Any]]:
        return matching(self._tail.read(), self._patterns)


def deliver(tracker: TransitionTracker, records: list[dict[str, Any]]) -> dict[str, Any]:
    return handler.handle(lambda_event(records), None, tracker)


def retry_schedules() -> list[dict[str, Any]]:
    """Every retry schedule in the group, with its parsed target input."""
    client = scheduler()
    out = []
    for summary in client.list_schedules(GroupName=SCHEDULE_GROUP)["Schedules"]:
        if summary["Name"].startswith("retry-"):
            schedule = client.get_schedule(GroupName=SCHEDULE_GROUP, Name=summary["Name"])
            schedule["input"] = json.loads(schedule["Target"]["Input"])
            out.append(schedule)
    return out
