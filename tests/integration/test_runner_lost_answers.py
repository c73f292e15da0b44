"""The runner when DynamoDB applied a write but its answer was lost and botocore retried it.

The retry meets the item its own first attempt wrote, so its condition fails. The runner must
recognise its own write (the run's `write_id`), run the job exactly once and record the
right terminal state, while deliveries that really are duplicates are still turned away.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ReadTimeoutError
from job_runner.service import RunnerService
from jobtracker_common.errors import ConflictError, DuplicateError
from jobtracker_common.models import RetryPolicy, RunStatus
from jobtracker_common.repositories import JobsRepository, RunsRepository
from jobtracker_common.repositories.runs import run_key

from tests.conftest import load_event
from tests.support.aws import REGION, dynamodb
from tests.support.faults import LostAnswers
from tests.support.runner import JOB_ID, add_job, counting_job_type, invoke, run_items
from tests.support.runs import make_run

WRITES = ("PutItem", "UpdateItem", "TransactWriteItems", "BatchWriteItem")


@pytest.fixture
def counting_type() -> Iterator[list[int]]:
    with counting_job_type() as calls:
        yield calls


@pytest.fixture
def lossy(aws: Any) -> Any:
    """A second client on the same moto tables, for the code under test to lose answers on."""
    return dynamodb()


def runner_on(client: Any) -> RunnerService:
    return RunnerService(
        JobsRepository(client, "JobsTable"),
        RunsRepository(client, "RunsTable"),
        safety_margin_ms=500,
        cancel_poll_seconds=60,
    )


def logs_of(client: Any, run_id: str) -> list[str]:
    entries, _ = RunsRepository(client, "RunsTable").list_logs(run_id, limit=1000)
    return [e.message for e in entries]


@pytest.mark.parametrize(("fail", "status"), [(False, "completed"), (True, "failed")])
def test_every_write_answer_lost_still_runs_the_job_once_and_finishes_it(
    aws: Any, lossy: Any, counting_type: list[int], fail: bool, status: str
) -> None:
    # Given a job, and a runner whose every write is applied but first answered by a timeout
    add_job(JobsRepository(aws, "JobsTable"), "counting", {"sleep": 0, "fail": fail})
    lost = LostAnswers(lossy, WRITES)
    event = load_event("job_runner/schedule.json")
    # When the scheduler delivers the run
    result = invoke(runner_on(lossy), event)
    # Then the claim, the log batch and the finish were each lost once and recognised as ours
    assert lost.count("PutItem") == 1 and lost.count("UpdateItem") == 1 and lost.count("BatchWriteItem") == 1
    assert not result.get("duplicate") and result["status"] == status
    assert counting_type == [1]
    items = run_items(aws)
    assert [i["status"]["S"] for i in items] == [status]
    assert int(items[0]["version"]["N"]) == 2  # created, then finished: no other write landed
    run_id = result["run_id"]
    messages = logs_of(aws, run_id)
    assert len(messages) == 2 and messages[0].startswith("attempt 1/1 started")
    # And a real second delivery is still a duplicate that runs nothing
    again = invoke(runner_on(lossy), {**event, "delivery_attempt": "2"})
    assert again["duplicate"] is True and again["run_id"] == run_id
    assert counting_type == [1]


def test_lost_answer_on_a_manual_run_transaction_runs_it_once(
    aws: Any, lossy: Any, counting_type: list[int]
) -> None:
    # Given a manual run (run + dedupe marker in one transaction) whose writes lose their answer
    add_job(JobsRepository(aws, "JobsTable"), "counting", {"sleep": 0})
    lost = LostAnswers(lossy, WRITES)
    event = load_event("job_runner/manual.json")
    # When it is invoked, then invoked again with the same client request id
    first = invoke(runner_on(lossy), event)
    second = invoke(runner_on(lossy), event)
    # Then the first ran the job and completed the run; the second maps to the same run
    assert lost.count("TransactWriteItems") >= 1
    assert first["status"] == "completed" and not first.get("duplicate")
    assert second["duplicate"] is True and second["run_id"] == first["run_id"]
    assert counting_type == [1]
    assert [i["status"]["S"] for i in run_items(aws)] == ["completed"]


def test_lost_claim_of_a_queued_run_beats_a_rival_delivery(
    aws: Any, lossy: Any, counting_type: list[int]
) -> None:
    # Given a run the API queued, and two deliveries of its manual invocation
    add_job(JobsRepository(aws, "JobsTable"), "counting", {"sleep": 0})
    queued = make_run(
        RunsRepository(aws, "RunsTable"),
        status=RunStatus.QUEUED,
        job_id=JOB_ID,
        owner_id="u1",
        job_type="counting",
        retry=RetryPolicy(max_attempts=1),
    )
    event = {**load_event("job_runner/manual.json"), "run_id": queued.run_id}
    rival: list[dict[str, Any]] = []

    def rival_delivery(operation: str) -> None:
        # The first claim is in the table but its runner has not heard back yet.
        rival.append(invoke(runner_on(aws), event))

    LostAnswers(lossy, {"UpdateItem"}, limit=1, before_loss=rival_delivery)
    # When the first delivery's claim answer is lost while the rival tries to claim
    first = invoke(runner_on(lossy), event)
    # Then the rival was told duplicate, and the first claimant ran the job once
    assert len(rival) == 1 and rival[0]["duplicate"] is True
    assert first["status"] == "completed" and not first.get("duplicate")
    assert counting_type == [1]
    assert RunsRepository(aws, "RunsTable").get(queued.run_id).status is RunStatus.COMPLETED


def test_lost_answer_when_claiming_a_retry_attempt(aws: Any, lossy: Any, counting_type: list[int]) -> None:
    # Given a run waiting for attempt 2, and writes that lose their first answer
    add_job(JobsRepository(aws, "JobsTable"), "counting", {"sleep": 0}, retry=RetryPolicy(max_attempts=2))
    waiting = make_run(
        RunsRepository(aws, "RunsTable"),
        status=RunStatus.RETRYING,
        job_id=JOB_ID,
        owner_id="u1",
        job_type="counting",
        retry=RetryPolicy(max_attempts=2),
    )
    lost = LostAnswers(lossy, WRITES)
    event = {"kind": "retry", "run_id": waiting.run_id, "attempt": 2}
    # When the retry schedule fires, and fires again
    first = invoke(runner_on(lossy), event)
    second = invoke(runner_on(lossy), event)
    # Then attempt 2 ran once and completed the run; the repeated delivery is stale
    assert lost.count("UpdateItem") == 2  # claim and finish
    assert first["status"] == "completed"
    assert second["duplicate"] is True
    run = RunsRepository(aws, "RunsTable").get(waiting.run_id)
    assert run.status is RunStatus.COMPLETED and run.attempt == 2
    assert counting_type == [1]


def test_twenty_concurrent_deliveries_with_lost_answers_make_one_run(
    aws: Any, lossy: Any, counting_type: list[int]
) -> None:
    # Given 20 copies of one delivery at once, every write answer (won or refused) lost first
    add_job(JobsRepository(aws, "JobsTable"), "counting", {"sleep": 0.2})
    lost = LostAnswers(lossy, WRITES)
    runner = runner_on(lossy)
    event = load_event("job_runner/schedule.json")
    barrier = threading.Barrier(20)
    results: list[dict[str, Any]] = []
    lock = threading.Lock()

    def deliver(attempt: int) -> None:
        barrier.wait(timeout=30)
        result = invoke(runner, {**event, "delivery_attempt": str(attempt)})
        with lock:
            results.append(result)

    threads = [threading.Thread(target=deliver, args=(n + 1,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    # Then exactly one delivery ran the job and completed the run; 19 were told duplicate
    assert lost.count("PutItem") == 20
    assert len(results) == 20
    executed = [r for r in results if not r.get("duplicate")]
    assert len(executed) == 1 and executed[0]["status"] == "completed"
    assert {r["run_id"] for r in results} == {executed[0]["run_id"]}
    assert counting_type == [1]
    assert [i["status"]["S"] for i in run_items(aws)] == ["completed"]


# ---- the repository on its own -------------------------------------------------------------
def test_create_recognises_its_own_write_but_not_another_writers(aws: Any, lossy: Any) -> None:
    # Given a run created through a client that loses the answer to that write
    runs = RunsRepository(lossy, "RunsTable")
    LostAnswers(lossy, {"PutItem"}, limit=1)
    created = make_run(runs, status=RunStatus.RUNNING, queued_at=datetime.now(UTC))
    # Then the create reported success, and the stored run is the one written
    assert RunsRepository(aws, "RunsTable").get(created.run_id) == created
    # And the same run written again by anybody else is a duplicate
    with pytest.raises(DuplicateError):
        runs.create(created)


def test_transition_whose_answer_is_lost_after_a_rival_moved_the_run_is_a_conflict(
    aws: Any, lossy: Any
) -> None:
    # Given a queued run, and a rival that cancels it after our claim landed but before our
    # retry (so the item no longer carries our write)
    clean = RunsRepository(aws, "RunsTable")
    run = make_run(clean, status=RunStatus.QUEUED)

    def rival_cancels(operation: str) -> None:
        clean.transition(clean.get(run.run_id), RunStatus.CANCELED)

    LostAnswers(lossy, {"UpdateItem"}, limit=1, before_loss=rival_cancels)
    # When we claim it and our answer is lost
    with pytest.raises(ConflictError):
        RunsRepository(lossy, "RunsTable").transition(run, RunStatus.RUNNING, started_at=datetime.now(UTC))
    # Then we are told it moved on, and the rival's state stands
    assert clean.get(run.run_id).status is RunStatus.CANCELED


def test_transition_whose_answer_is_lost_returns_the_run_it_wrote(aws: Any, lossy: Any) -> None:
    # Given a queued run and a client that loses the answer to the claim
    run = make_run(RunsRepository(aws, "RunsTable"), status=RunStatus.QUEUED)
    lost = LostAnswers(lossy, {"UpdateItem"})
    # When it is claimed
    claimed = RunsRepository(lossy, "RunsTable").transition(
        run, RunStatus.RUNNING, started_at=datetime.now(UTC)
    )
    # Then the claim is reported done, and it is what the table holds
    assert lost.count("UpdateItem") == 1
    assert claimed.status is RunStatus.RUNNING and claimed.version == run.version + 1
    assert RunsRepository(aws, "RunsTable").get(run.run_id) == claimed


# ---- botocore gives up: the outcome of the write is unknown until the run is read ----------
@pytest.fixture
def no_retries(aws: Any) -> Any:
    """A client on the same tables that never retries (as when botocore's retries run out)."""
    config = Config(retries={"total_max_attempts": 1, "mode": "standard"})
    return boto3.session.Session().client("dynamodb", region_name=REGION, config=config)


def test_when_botocore_gives_up_after_the_write_the_runner_still_runs_the_job_once(
    aws: Any, no_retries: Any, counting_type: list[int]
) -> None:
    # Given a runner whose create, claim and finish answers are lost and never retried
    add_job(JobsRepository(aws, "JobsTable"), "counting", {"sleep": 0})
    lost = LostAnswers(no_retries, {"PutItem", "UpdateItem"})
    # When the scheduler delivers the run
    result = invoke(runner_on(no_retries), load_event("job_runner/schedule.json"))
    # Then a read of the run showed each write was applied: the job ran once and completed
    assert lost.count("PutItem") == 1 and lost.count("UpdateItem") == 1
    assert result["status"] == "completed" and not result.get("duplicate")
    assert counting_type == [1]
    assert [i["status"]["S"] for i in run_items(aws)] == ["completed"]


def test_when_botocore_gives_up_before_the_write_the_error_is_reported(aws: Any, no_retries: Any) -> None:
    # Given a client whose create times out before it reaches the table, and no retries
    LostAnswers(no_retries, {"PutItem"}, applied=False)
    # When a run is created
    # Then the caller hears the timeout (the write did not happen), and the table has no run
    with pytest.raises(ReadTimeoutError):
        make_run(RunsRepository(no_retries, "RunsTable"), status=RunStatus.RUNNING)
    assert run_items(aws) == []


def test_when_botocore_gives_up_on_a_true_duplicate_it_is_still_a_duplicate(
    aws: Any, no_retries: Any
) -> None:
    # Given a run already created by its first delivery
    first = make_run(RunsRepository(aws, "RunsTable"), status=RunStatus.RUNNING)
    # When a second delivery creates it again and that refused write's answer is lost unretried
    LostAnswers(no_retries, {"PutItem"})
    # Then the read that settles it finds someone else's run: a duplicate, not an error
    with pytest.raises(DuplicateError):
        RunsRepository(no_retries, "RunsTable").create(first)


def test_when_botocore_gives_up_on_a_transition_that_never_arrived_the_error_is_reported(
    aws: Any, no_retries: Any
) -> None:
    # Given a queued run, and a claim that times out before reaching the table, unretried
    run = make_run(RunsRepository(aws, "RunsTable"), status=RunStatus.QUEUED)
    LostAnswers(no_retries, {"UpdateItem"}, applied=False)
    # When it is claimed
    # Then the caller hears the timeout (not a conflict: nobody else moved the run)
    with pytest.raises(ReadTimeoutError):
        RunsRepository(no_retries, "RunsTable").transition(
            run, RunStatus.RUNNING, started_at=datetime.now(UTC)
        )
    assert RunsRepository(aws, "RunsTable").get(run.run_id) == run


# ---- log writes that fail: the run's outcome comes first ---------------------------------
def test_when_the_last_log_write_fails_the_outcome_is_still_recorded(
    aws: Any, no_retries: Any, counting_type: list[int], caplog: pytest.LogCaptureFixture
) -> None:
    # Given a runner whose log writes time out before reaching the table, unretried
    add_job(JobsRepository(aws, "JobsTable"), "counting", {"sleep": 0})
    lost = LostAnswers(no_retries, {"BatchWriteItem"}, applied=False)
    # When a run ends
    result = invoke(runner_on(no_retries), load_event("job_runner/schedule.json"))
    # Then it is recorded completed (not left running for the sweeper), and the loss is reported
    assert lost.count("BatchWriteItem") == 1
    assert result["status"] == "completed"
    assert [i["status"]["S"] for i in run_items(aws)] == ["completed"]
    assert any(r.getMessage() == "log entries of the attempt were not stored" for r in caplog.records)


def test_a_failed_log_write_during_the_run_is_kept_for_the_next_flush(aws: Any, no_retries: Any) -> None:
    # Given a job that logs more than one flush's worth, and a first log write that fails
    add_job(JobsRepository(aws, "JobsTable"), params={"duration_seconds": 0, "log_lines": 300})
    lost = LostAnswers(no_retries, {"BatchWriteItem"}, applied=False, limit=1)
    # When it runs
    result = invoke(runner_on(no_retries), load_event("job_runner/schedule.json"))
    # Then the job did not notice, and every entry is stored once, in order
    assert lost.count("BatchWriteItem") == 1
    assert result["status"] == "completed"
    messages = logs_of(aws, result["run_id"])
    steps = [m for m in messages if m.startswith("working, step")]
    assert steps == [f"working, step {n}/300" for n in range(1, 301)]
    assert len(messages) == 304  # + runner start/end and demo start/end


# ---- deleting a finished run --------------------------------------------------------------
def test_delete_whose_answer_is_lost_still_removes_the_log_entries(aws: Any, lossy: Any) -> None:
    # Given a finished run with log entries, and a client that loses the delete's first answer
    run = make_run(RunsRepository(aws, "RunsTable"), status=RunStatus.COMPLETED, logs=30)
    lost = LostAnswers(lossy, {"DeleteItem"}, limit=1)
    # When it is deleted (botocore's retry finds the run already gone)
    RunsRepository(lossy, "RunsTable").delete(run)
    # Then the delete is reported done, and neither the run nor its entries are left
    assert lost.count("DeleteItem") == 1
    left = aws.query(
        TableName="RunsTable",
        KeyConditionExpression="pk = :pk",
        ExpressionAttributeValues={":pk": {"S": f"RUN#{run.run_id}"}},
    )
    assert left["Items"] == []


def test_delete_of_a_run_that_changed_meanwhile_is_a_conflict(aws: Any) -> None:
    # Given a finished run as a caller read it, which then changed in the table (a new version
    # with another terminal status stands in for any concurrent writer)
    runs = RunsRepository(aws, "RunsTable")
    run = make_run(runs, status=RunStatus.FAILED)
    aws.update_item(
        TableName="RunsTable",
        Key=run_key(run.run_id),
        UpdateExpression="SET #s = :s",
        ExpressionAttributeNames={"#s": "status"},
        ExpressionAttributeValues={":s": {"S": "completed"}},
    )
    # When the stale copy is deleted
    # Then it is refused, and the run stays
    with pytest.raises(ConflictError):
        runs.delete(run)
    assert runs.get(run.run_id).status is RunStatus.COMPLETED
