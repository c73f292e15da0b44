"""The tracker Lambda handler on stream events: partial failures, replays, what never counts."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest
from jobtracker_common.models import Job, RunStatus
from jobtracker_common.repositories import JobsRepository
from jobtracker_common.repositories.stats import StatsRepository
from jobtracker_common.statistics_query import StatisticsQuery, query_statistics
from tracker import handler

from tests.conftest import FakeLambdaContext, load_event
from tests.support.moto_transactions import fast_transactions
from tests.support.tracker import ROLE_ARN, RUNNER_ARN, SCHEDULE_GROUP, retry_schedules, scheduler

NOW = datetime(2026, 3, 10, 12, 0, tzinfo=UTC)
JOB_ID = "01JDEMOJOB0000000000000000"


@pytest.fixture
def env(aws: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The handler as deployed: settings from the environment, clients built once."""
    fast_transactions(monkeypatch)
    monkeypatch.setenv("SCHEDULE_GROUP_NAME", SCHEDULE_GROUP)
    monkeypatch.setenv("SCHEDULER_ROLE_ARN", ROLE_ARN)
    monkeypatch.setenv("JOB_RUNNER_ARN", RUNNER_ARN)
    scheduler().create_schedule_group(Name=SCHEDULE_GROUP)
    handler.tracker.cache_clear()
    yield aws
    handler.tracker.cache_clear()


def invoke(event: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = handler.lambda_handler(event, FakeLambdaContext(name="TrackerFunction"))
    return response


def day_stats(aws: Any) -> Any:
    return query_statistics(StatsRepository(aws, "StatsTable"), StatisticsQuery(time_period="day"), now=NOW)


def add_job(aws: Any) -> None:
    JobsRepository(aws, "JobsTable").create(
        Job(
            job_id=JOB_ID,
            owner_id="user-alice",
            name="nightly backup",
            job_type="demo",
            created_at=NOW,
            updated_at=NOW,
        )
    )


def test_completed_run_is_counted_once_and_recorded_on_the_job(env: Any) -> None:
    # Given a job and the stream record of its run completing
    add_job(env)
    event = load_event("tracker/run_completed.json")

    # When the record is delivered three times
    responses = [invoke(copy.deepcopy(event)) for _ in range(3)]

    # Then it counted once, with its duration, and the job knows its last run
    assert responses == [{"batchItemFailures": []}] * 3
    stats = day_stats(env)
    assert stats.totals.by_status["completed"] == 1 and stats.totals.total == 1
    assert stats.totals.duration.min_ms == stats.totals.duration.max_ms == 4250
    assert [b.job_type for b in stats.by_job_type] == ["demo"]
    job = JobsRepository(env, "JobsTable").get(JOB_ID)
    assert (job.last_run_id, job.last_run_status) == ("01JQ8Z0000DEMORUN000000000", RunStatus.COMPLETED)


def test_poison_record_is_a_batch_item_failure_and_the_rest_of_the_batch_counts(env: Any) -> None:
    # Given a batch: a record whose image is not a valid run, then a good one
    poison = load_event("tracker/poison.json")["Records"][0]
    good = load_event("tracker/run_completed.json")["Records"][0]

    # When it is delivered
    response = invoke({"Records": [poison, good]})

    # Then exactly the poison record is reported (Lambda retries it, then sends it to the DLQ)
    assert response == {"batchItemFailures": [{"itemIdentifier": poison["dynamodb"]["SequenceNumber"]}]}
    assert day_stats(env).totals.total == 1


def test_records_without_event_source_arn_are_processed(env: Any) -> None:
    # Given a record as moto's stream API returns it (no eventSourceARN)
    event = load_event("tracker/run_completed.json")
    del event["Records"][0]["eventSourceARN"]

    # When it is delivered, Then it is counted
    assert invoke(event) == {"batchItemFailures": []}
    assert day_stats(env).totals.total == 1


def test_removes_and_changes_without_a_new_status_never_count(env: Any) -> None:
    # Given a TTL delete of a completed run and a progress-only update of it
    record = load_event("tracker/run_completed.json")["Records"][0]
    removed = copy.deepcopy(record)
    removed["eventName"] = "REMOVE"
    removed["dynamodb"]["OldImage"] = removed["dynamodb"].pop("NewImage")
    touched = copy.deepcopy(record)
    touched["dynamodb"]["OldImage"] = copy.deepcopy(touched["dynamodb"]["NewImage"])
    touched["dynamodb"]["NewImage"]["progress"] = {"S": "archived"}

    # When both are delivered
    response = invoke({"Records": [removed, touched]})

    # Then nothing failed and nothing counted
    assert response == {"batchItemFailures": []}
    assert day_stats(env).totals.total == 0


def test_retrying_record_creates_the_one_time_retry_schedule(env: Any) -> None:
    # Given the record of a failed first attempt that will be retried
    event = load_event("tracker/run_retrying.json")

    # When it is delivered twice
    assert invoke(copy.deepcopy(event)) == {"batchItemFailures": []}
    assert invoke(copy.deepcopy(event)) == {"batchItemFailures": []}

    # Then one schedule re-invokes the runner for attempt 2, and one retry is counted
    (schedule,) = retry_schedules()
    assert schedule["Name"] == "retry-01JQ8Z0000DEMORUN000000000-2"
    assert schedule["input"] == {"kind": "retry", "run_id": "01JQ8Z0000DEMORUN000000000", "attempt": 2}
    assert schedule["ScheduleExpression"].startswith("at(")
    assert day_stats(env).totals.retries == 1
