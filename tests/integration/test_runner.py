"""The runner end to end against moto: dedupe, claim, execute, logs, finish, deadline."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from job_runner import handler
from job_runner.service import RunnerService
from jobtracker_common import jobtypes
from jobtracker_common.errors import ConflictError, InvalidTransitionError
from jobtracker_common.ids import new_id
from jobtracker_common.lifecycle import failure_changes, new_run
from jobtracker_common.models import ErrorInfo, RetryPolicy, RunStatus, Trigger
from jobtracker_common.repositories import JobsRepository, RunsRepository
from jobtracker_local.template import load_template
from pydantic import BaseModel

from tests.conftest import FakeLambdaContext, load_event
from tests.support.runner import JOB_ID, add_job, counting_job_type, invoke, run_items


@pytest.fixture
def repos(aws: Any) -> tuple[JobsRepository, RunsRepository]:
    return JobsRepository(aws, "JobsTable"), RunsRepository(aws, "RunsTable")


@pytest.fixture
def runner(repos: tuple[JobsRepository, RunsRepository]) -> RunnerService:
    return RunnerService(*repos, safety_margin_ms=500, cancel_poll_seconds=0.05)


@pytest.fixture
def counting_type() -> Iterator[list[int]]:
    """A job type that counts how often its body runs."""
    with counting_job_type() as calls:
        yield calls


# ---- exactly once ------------------------------------------------------------------------
def test_same_scheduler_delivery_twice_is_one_run(
    aws: Any, repos: Any, runner: RunnerService, counting_type: list[int]
) -> None:
    add_job(repos[0], "counting", {"sleep": 0})
    event = load_event("job_runner/schedule.json")
    first = invoke(runner, event)
    second = invoke(runner, {**event, "delivery_attempt": "2"})
    assert first["status"] == "completed" and not first.get("duplicate")
    assert second["duplicate"] is True and second["run_id"] == first["run_id"]
    assert len(run_items(aws)) == 1
    assert counting_type == [1]


def test_twenty_concurrent_deliveries_make_one_run(
    aws: Any, repos: Any, runner: RunnerService, counting_type: list[int]
) -> None:
    add_job(repos[0], "counting", {"sleep": 0.2})
    event = load_event("job_runner/schedule.json")
    results: list[dict[str, Any]] = []
    barrier = threading.Barrier(20)

    def deliver() -> None:
        barrier.wait()
        results.append(invoke(runner, event))

    threads = [threading.Thread(target=deliver) for _ in range(20)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 20
    assert sum(1 for r in results if not r.get("duplicate")) == 1
    assert len({r["run_id"] for r in results}) == 1
    assert len(run_items(aws)) == 1
    assert counting_type == [1]


def test_manual_run_with_same_client_request_id_is_one_run(
    aws: Any, repos: Any, runner: RunnerService
) -> None:
    add_job(repos[0])
    event = load_event("job_runner/manual.json")
    first, second = invoke(runner, event), invoke(runner, event)
    assert first["status"] == "completed"
    assert second["duplicate"] is True and second["run_id"] == first["run_id"]
    assert len(run_items(aws)) == 1


def test_classic_rule_event_runs_the_named_job(aws: Any, repos: Any, runner: RunnerService) -> None:
    add_job(repos[0])
    result = invoke(runner, load_event("job_runner/rule.json"))
    assert result["status"] == "completed"
    assert repos[1].get(result["run_id"]).trigger.value == "rule"


def test_disabled_job_skips_scheduled_runs(aws: Any, repos: Any, runner: RunnerService) -> None:
    add_job(repos[0], enabled=False)
    result = invoke(runner, load_event("job_runner/schedule.json"))
    assert result["ok"] is True and "disabled" in result["message"]
    assert run_items(aws) == []


# ---- state machine -----------------------------------------------------------------------
def test_terminal_run_never_moves_and_stale_writer_is_rejected(repos: Any, runner: RunnerService) -> None:
    add_job(repos[0])
    run_id = invoke(runner, load_event("job_runner/schedule.json"))["run_id"]
    runs: RunsRepository = repos[1]
    done = runs.get(run_id)
    assert done.status is RunStatus.COMPLETED
    with pytest.raises(InvalidTransitionError):
        runs.transition(done, RunStatus.RUNNING)
    # a writer holding an older version of an active run loses
    now = datetime.now(UTC)
    active = runs.create(
        done.model_copy(
            update={
                "run_id": new_id(),
                "status": RunStatus.QUEUED,
                "version": 1,
                "lease_until": now + timedelta(minutes=5),
            }
        )
    )
    moved = runs.transition(active, RunStatus.RUNNING, started_at=now)
    with pytest.raises(ConflictError):
        runs.transition(active, RunStatus.CANCELED)  # stale: still thinks it is queued v1
    assert runs.get(moved.run_id).status is RunStatus.RUNNING


# ---- job types ---------------------------------------------------------------------------
def test_demo_success_records_duration_result_and_logs(repos: Any, runner: RunnerService) -> None:
    add_job(repos[0], params={"duration_seconds": 0.3, "log_lines": 20})
    result = invoke(runner, load_event("job_runner/schedule.json"))
    run = repos[1].get(result["run_id"])
    assert run.status is RunStatus.COMPLETED
    assert run.duration_ms is not None and run.duration_ms >= 300
    assert run.result and "succeeded" in run.result["message"]
    assert run.lease_until is None and run.finished_at is not None
    entries, _ = repos[1].list_logs(run.run_id, limit=1000)
    messages = [e.message for e in entries]
    assert messages[0].startswith("attempt 1/1 started")
    assert sum("working, step" in m for m in messages) == 20
    assert [e.timestamp for e in entries] == sorted(e.timestamp for e in entries)
    assert repos[1].list_active() == []


def test_run_and_its_log_entries_expire_after_the_jobs_retention(
    aws: Any, repos: Any, runner: RunnerService
) -> None:
    # Given a job that keeps its runs for 7 days
    add_job(repos[0], retention_days=7)
    # When it runs
    run = repos[1].get(invoke(runner, load_event("job_runner/schedule.json"))["run_id"])
    # Then the run and every log chunk carry the table's TTL attribute, 7 days after queueing
    ttl = load_template().ttl_attribute("RunsTable")
    assert ttl == "expires_at"
    assert run.expires_at == int((run.queued_at + timedelta(days=7)).timestamp())
    items = aws.scan(TableName="RunsTable")["Items"]
    assert {i["entity"]["S"] for i in items} == {"run", "log"}
    assert {int(i[ttl]["N"]) for i in items} == {run.expires_at}


def test_demo_failure_is_failed_with_error(repos: Any, runner: RunnerService) -> None:
    add_job(repos[0], params={"duration_seconds": 0, "outcome": "fail"})
    run = repos[1].get(invoke(runner, load_event("job_runner/schedule.json"))["run_id"])
    assert run.status is RunStatus.FAILED
    assert run.error is not None and run.error.type == "DemoFailure"


def test_failure_with_attempts_left_is_retrying_not_failed(repos: Any, runner: RunnerService) -> None:
    add_job(
        repos[0],
        params={"outcome": "fail", "duration_seconds": 0},
        retry=RetryPolicy(max_attempts=2, backoff_seconds=7, jitter=False),
    )
    run = repos[1].get(invoke(runner, load_event("job_runner/schedule.json"))["run_id"])
    assert run.status is RunStatus.RETRYING
    assert run.next_attempt_at is not None and run.finished_at is not None
    assert run.next_attempt_at - run.finished_at == timedelta(seconds=7)
    assert [r.run_id for r in repos[1].list_active()] == [run.run_id]  # still active
    # the retry invocation claims it as attempt 2 and finishes it for good
    result = invoke(runner, {"kind": "retry", "run_id": run.run_id, "attempt": 2})
    final = repos[1].get(run.run_id)
    assert result["status"] == "failed" and final.attempt == 2 and final.status is RunStatus.FAILED
    # a duplicated retry delivery is ignored
    assert invoke(runner, {"kind": "retry", "run_id": run.run_id, "attempt": 2})["duplicate"] is True


class _Handler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        if self.path == "/slow":
            time.sleep(1.5)
        status = 500 if self.path == "/broken" else 200
        body = b"all systems healthy"
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def http_server() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.mark.parametrize(
    ("path", "params", "status", "error_type"),
    [
        ("/ok", {"body_contains": "healthy"}, RunStatus.COMPLETED, None),
        ("/broken", {}, RunStatus.FAILED, "UnexpectedStatus"),
        ("/ok", {"body_contains": "on fire"}, RunStatus.FAILED, "BodyMismatch"),
        ("/slow", {"timeout_seconds": 0.3}, RunStatus.FAILED, "HttpTimeout"),
    ],
)
def test_http_check_against_a_real_local_server(
    repos: Any,
    runner: RunnerService,
    http_server: str,
    path: str,
    params: dict[str, Any],
    status: RunStatus,
    error_type: str | None,
) -> None:
    add_job(repos[0], "http_check", {"url": http_server + path, **params})
    run = repos[1].get(invoke(runner, load_event("job_runner/schedule.json"))["run_id"])
    assert run.status is status
    assert (run.error.type if run.error else None) == error_type
    assert run.duration_ms is not None
    entries, _ = repos[1].list_logs(run.run_id)
    assert any(e.category == "http" for e in entries)
    if status is RunStatus.COMPLETED or error_type in ("UnexpectedStatus", "BodyMismatch"):
        # a check that got an answer records its status code and latency, passed or not
        expected_code = 500 if path == "/broken" else 200
        assert run.result and run.result["status_code"] == expected_code and run.result["latency_ms"] >= 0
    else:
        assert run.result is None


# ---- deadline ----------------------------------------------------------------------------
def test_handler_near_its_deadline_records_timed_out(repos: Any, runner: RunnerService) -> None:
    # Given a 30 s job and a Lambda with 1.5 s left (the runner keeps a 0.5 s margin)
    add_job(repos[0], params={"duration_seconds": 30}, timeout_seconds=60)
    started = time.monotonic()
    result = invoke(runner, load_event("job_runner/schedule.json"), remaining_ms=1_500)
    # Then it stops itself before the deadline and records why
    assert time.monotonic() - started < 1.5
    run = repos[1].get(result["run_id"])
    assert run.status is RunStatus.TIMED_OUT
    assert run.error is not None and "before the Lambda deadline" in run.error.message
    entries, _ = repos[1].list_logs(run.run_id)
    assert any("Lambda deadline" in e.message for e in entries)


def test_job_timeout_is_enforced(repos: Any, runner: RunnerService) -> None:
    add_job(repos[0], params={"duration_seconds": 30}, timeout_seconds=1)
    run = repos[1].get(invoke(runner, load_event("job_runner/schedule.json"))["run_id"])
    assert run.status is RunStatus.TIMED_OUT
    assert run.error is not None and "job timeout of 1s" in run.error.message


class StubbornParams(BaseModel):
    pass


def test_a_job_thread_that_outlives_its_attempt_writes_no_more_log_entries(
    repos: Any, runner: RunnerService
) -> None:
    # Given a job type that ignores stop requests and logs a lot after its 1 s timeout
    done = threading.Event()

    def body(params: StubbornParams, ctx: jobtypes.JobContext) -> dict[str, Any]:
        time.sleep(1.3)
        for n in range(300):  # more than one flush's worth
            ctx.log(f"late line {n}")
        done.set()
        return {}

    jobtypes.register(jobtypes.JobType("stubborn", StubbornParams, body))
    try:
        add_job(repos[0], "stubborn", {}, timeout_seconds=1)
        # When the runner gives up on it, and the thread goes on logging
        run_id = invoke(runner, load_event("job_runner/schedule.json"))["run_id"]
        assert done.wait(timeout=10)
    finally:
        jobtypes._REGISTRY.pop("stubborn", None)
    # Then the finished attempt's log holds nothing written after it was recorded
    assert repos[1].get(run_id).status is RunStatus.TIMED_OUT
    entries, _ = repos[1].list_logs(run_id, limit=1000)
    assert not [e for e in entries if e.message.startswith("late line")]
    assert "exceeded the job timeout" in entries[-1].message


def test_cancel_request_stops_a_running_job(repos: Any, runner: RunnerService) -> None:
    add_job(repos[0], params={"duration_seconds": 10})
    results: list[dict[str, Any]] = []
    worker = threading.Thread(
        target=lambda: results.append(invoke(runner, load_event("job_runner/schedule.json")))
    )
    worker.start()
    deadline = time.monotonic() + 5
    while not repos[1].list_active() and time.monotonic() < deadline:
        time.sleep(0.05)
    repos[1].request_cancel(repos[1].list_active()[0].run_id)
    worker.join(timeout=10)
    assert results and results[0]["status"] == "canceled"


class CancelThenParams(BaseModel):
    #: How attempt 1 ends after its owner asked it to stop: "fail" (JobFailure) or "hang" (no
    #: checkpoint until its timeout).
    ending: str = "fail"


@pytest.fixture
def cancel_then() -> Iterator[list[int]]:
    """Attempt 1 is cancelled by its owner (as the API's cancel does) and then ends without
    reaching a checkpoint; later attempts succeed. Records the attempt of every body run."""
    attempts: list[int] = []

    def body(params: CancelThenParams, ctx: Any) -> dict[str, Any]:
        attempts.append(ctx.run.attempt)
        if ctx.run.attempt == 1:
            ctx.runs.request_cancel(ctx.run.run_id)  # POST /job-logs/{id}/cancel while running
            if params.ending == "hang":
                time.sleep(1.5)
            raise jobtypes.JobFailure("device unreachable", error_type="Unreachable")
        return {"message": "backed up"}

    jobtypes.register(jobtypes.JobType("cancel_then", CancelThenParams, body))
    yield attempts
    jobtypes._REGISTRY.pop("cancel_then", None)


@pytest.mark.parametrize(("ending", "timeout"), [("fail", 300), ("hang", 1)])
def test_cancel_requested_during_an_attempt_that_then_fails_is_not_retried(
    repos: Any, cancel_then: list[int], ending: str, timeout: int
) -> None:
    # Given a job with attempts left whose first attempt is cancelled and then fails or times out
    # before a checkpoint (cancel polled every 5 s: the runner never saw the request)
    add_job(
        repos[0],
        "cancel_then",
        {"ending": ending},
        timeout_seconds=timeout,
        retry=RetryPolicy(max_attempts=3, backoff_seconds=1, jitter=False),
    )
    runner = RunnerService(*repos, safety_margin_ms=500, cancel_poll_seconds=5.0)

    # When the attempt ends, and a retry delivery arrives anyway
    first = invoke(runner, {"kind": "manual", "job_id": JOB_ID, "client_request_id": "c-1"})
    retry = invoke(runner, {"kind": "retry", "run_id": first["run_id"], "attempt": 2})

    # Then the run ends canceled (no retry, nothing left active) and the body ran once
    run = repos[1].get(first["run_id"])
    assert (first["status"], run.status, cancel_then) == ("canceled", RunStatus.CANCELED, [1])
    assert retry["duplicate"] is True
    assert run.cancel_requested and run.attempt == 1
    assert run.next_attempt_at is None and run.lease_until is None and run.finished_at is not None
    assert repos[1].list_active() == []
    entries, _ = repos[1].list_logs(run.run_id)
    assert [e.message for e in entries][-1] == "cancel requested: no retry"


def _retrying_with_cancel_requested(repos: Any) -> str:
    """A run that went `retrying` although its cancel was requested: the request landed after
    the runner's last read of it (request_cancel does not change the version the write checks)."""
    add_job(repos[0], "cancel_then", retry=RetryPolicy(max_attempts=3, backoff_seconds=1, jitter=False))
    job = repos[0].get(JOB_ID)
    now = datetime.now(UTC)
    running = repos[1].create(
        new_run(job, run_id=new_id(now), trigger=Trigger.MANUAL, now=now, dedupe_key="d-1")
    )
    repos[1].request_cancel(running.run_id)
    error = ErrorInfo(type="Unreachable", message="device unreachable")
    status, changes = failure_changes(running, now, error, timed_out=False)
    retrying = repos[1].transition(running, status, **changes)
    assert retrying.status is RunStatus.RETRYING and repos[1].get(running.run_id).cancel_requested
    return str(running.run_id)


def test_retry_of_a_run_whose_cancel_was_requested_cancels_it_without_running_the_job(
    repos: Any, runner: RunnerService, cancel_then: list[int]
) -> None:
    # Given a retrying run whose cancel was requested during its failed first attempt
    run_id = _retrying_with_cancel_requested(repos)

    # When its retry schedule fires (twice: at-least-once delivery)
    result = invoke(runner, {"kind": "retry", "run_id": run_id, "attempt": 2})
    again = invoke(runner, {"kind": "retry", "run_id": run_id, "attempt": 2})

    # Then the run is canceled, the job body never ran, and the run left the active index
    run = repos[1].get(run_id)
    assert (result["status"], run.status, cancel_then) == ("canceled", RunStatus.CANCELED, [])
    assert "cancel requested during attempt 1" in result["message"]
    assert again["duplicate"] is True
    assert run.attempt == 1 and run.lease_until is None and run.next_attempt_at is None
    assert run.finished_at is not None and repos[1].list_active() == []


# ---- bad input ---------------------------------------------------------------------------
def test_missing_job_id_and_unknown_job_leave_nothing_behind(
    aws: Any, runner: RunnerService, caplog: pytest.LogCaptureFixture
) -> None:
    malformed = invoke(runner, load_event("job_runner/malformed.json"))
    assert malformed["ok"] is False and "job_id" in malformed["error"]["message"]
    unknown = invoke(runner, load_event("job_runner/schedule.json"))  # no job stored
    assert unknown["ok"] is False and unknown["error"]["type"] == "NotFoundError"
    assert f"job {JOB_ID} not found" in unknown["error"]["message"]
    assert aws.scan(TableName="RunsTable")["Items"] == []
    # and each rejection is logged (an ERROR line with the reason), not only answered
    rejected = [r for r in caplog.records if r.getMessage() == "runner event rejected"]
    assert [r.levelname for r in rejected] == ["ERROR", "ERROR"]
    reasons = [getattr(r, "reason", "") for r in rejected]
    assert "job_id" in reasons[0] and f"job {JOB_ID} not found" in reasons[1]


@pytest.mark.parametrize(
    ("job_type", "params", "message"),
    [
        ("demo", {"outcome": "explode"}, "params.outcome"),
        ("demo", {"unexpected": 1}, "params.unexpected"),
        ("teleport", {}, "unknown job type 'teleport'"),
    ],
)
def test_bad_params_or_unknown_type_fail_the_run_clearly(
    repos: Any, runner: RunnerService, job_type: str, params: dict[str, Any], message: str
) -> None:
    add_job(repos[0], job_type, params, retry=RetryPolicy(max_attempts=3))
    result = invoke(runner, load_event("job_runner/schedule.json"))
    run = repos[1].get(result["run_id"])
    assert run.status is RunStatus.FAILED  # not retried: a retry cannot fix configuration
    assert run.error is not None and message in run.error.message
    assert repos[1].list_active() == []


def test_lambda_handler_builds_its_service_from_the_environment(repos: Any) -> None:
    add_job(repos[0])
    handler.service.cache_clear()
    from jobtracker_common.settings import load_settings

    load_settings.cache_clear()
    try:
        result = handler.lambda_handler(load_event("job_runner/schedule.json"), FakeLambdaContext())
    finally:
        handler.service.cache_clear()
        load_settings.cache_clear()
    assert result["status"] == "completed"
