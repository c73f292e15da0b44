"""Jobs: create/read/replace/delete keep the EventBridge Scheduler schedule equal to the stored
job; manual runs are queued once per Idempotency-Key and handed to the runner asynchronously."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from api.auth import Caller
from api.models import JobIn
from botocore.exceptions import ClientError
from jobtracker_common.models import RunStatus
from jobtracker_common.schedules import ScheduleService

from tests.support.http import ALL_SCOPES, GROUP, ROLE_ARN, RUNNER_ARN, FakeClock, api_harness

NOW = datetime(2026, 3, 27, 12, 0, tzinfo=UTC)  # Berlin switches to summer time on 2026-03-29


@pytest.fixture
def api(aws):
    with api_harness(aws, clock=FakeClock(NOW)) as harness:
        yield harness


def create(api, **fields):
    body = {"name": "nightly backup", "job_type": "demo", **fields}
    response = api.call("POST /jobs", body=body)
    assert response.status == 201, response.body
    return response.body


def test_cron_in_berlin_creates_a_matching_schedule_and_fire_times(api):
    # When a job is created with AWS's six-field cron in Europe/Berlin
    job = create(api, schedule="cron(0 2 * * ? *)", timezone="Europe/Berlin", target="core-sw-1")
    # Then the next three fire times are 02:00 Berlin time: CET, then CEST; 02:00 does not exist
    # on 2026-03-29 (clocks jump 02:00 -> 03:00), and Scheduler skips that day's invocation
    assert job["next_fire_times"] == [
        "2026-03-28T01:00:00Z",
        "2026-03-30T00:00:00Z",
        "2026-03-31T00:00:00Z",
    ]
    # And Scheduler holds the same expression, in that timezone, targeting the runner
    schedule = api.schedule(job["job_id"])
    assert schedule is not None
    assert schedule["ScheduleExpression"] == "cron(0 2 * * ? *)"
    assert schedule["ScheduleExpressionTimezone"] == "Europe/Berlin"
    assert schedule["State"] == "ENABLED"
    assert schedule["GroupName"] == GROUP
    assert schedule["Target"]["Arn"] == RUNNER_ARN
    assert json.loads(schedule["Target"]["Input"])["job_id"] == job["job_id"]


def test_five_field_cron_is_422_naming_the_problem(api):
    response = api.call("POST /jobs", body={"name": "x", "job_type": "demo", "schedule": "cron(0 2 * * *)"})
    assert response.status == 422
    assert "6 required, 5 provided" in response.message
    assert response.body["details"][0]["field"] == "schedule"
    assert api.call("GET /jobs").body["items"] == []


INVALID_SCHEDULES = {
    "cron(0 2 * * * *)": "?",  # day-of-month and day-of-week both given
    "rate(1 minutes)": "minute",
    "every day": "not an AWS schedule expression",
    "at(2026-13-45T00:00:00)": "not a real date",
    "rate(99999999999 days)": "ten years",
    "cron(99 2 * * ? *)": "minute",
    "cron(0 2 ? * MON#9 *)": "day-of-week",
}


def test_schedules_aws_would_refuse_are_422_naming_the_problem(api):
    for schedule, problem in INVALID_SCHEDULES.items():
        response = api.call("POST /jobs", body={"name": "x", "job_type": "demo", "schedule": schedule})
        assert response.status == 422, schedule
        assert problem in response.message, (schedule, response.message)
        assert response.body["details"][0]["field"] == "schedule"
    assert api.call("GET /jobs").body["items"] == []


def test_job_shape_carries_every_created_field(api):
    body = {
        "name": "config backup",
        "job_type": "http_check",
        "params": {"url": "https://example.com/health", "expected_status": 204},
        "schedule": "rate(15 minutes)",
        "timezone": "UTC",
        "enabled": True,
        "timeout_seconds": 120,
        "retry": {"max_attempts": 5},
        "subscribers": ["user-bob"],
        "target": "edge-rtr-7",
    }
    job = create(api, **body)
    for key, value in body.items():
        if key != "retry":
            assert job[key] == value
    assert job["retry"] == {
        "max_attempts": 5,
        "backoff_seconds": 30,
        "backoff_rate": 2.0,
        "max_backoff_seconds": 3600,
        "jitter": True,
    }
    assert job["owner_id"] == "user-alice"
    assert job["created_at"] == job["updated_at"] == "2026-03-27T12:00:00Z"
    assert job["next_fire_times"] == [
        "2026-03-27T12:15:00Z",
        "2026-03-27T12:30:00Z",
        "2026-03-27T12:45:00Z",
    ]
    fetched = api.call("GET /jobs/{job_id}", path_params={"job_id": job["job_id"]})
    assert fetched.body == job


def test_bad_params_and_unknown_type_are_422(api):
    bad = api.call("POST /jobs", body={"name": "x", "job_type": "http_check", "params": {"url": "nope"}})
    assert bad.status == 422
    assert bad.body["details"][0]["field"] == "params.url"
    unknown = api.call("POST /jobs", body={"name": "x", "job_type": "ftp_upload"})
    assert unknown.status == 422
    assert "unknown job type" in unknown.message


@pytest.mark.parametrize(
    ("job_type", "params", "problem"),
    [
        ("demo", {"duration_seconds": 1e-200}, "too close to zero"),  # decimal.Underflow: a 500
        ("demo", {"failure_rate": 5e-324}, "too close to zero"),
        ("http_check", {"max_latency_ms": 123456789012345678901234567890123456789}, "38 significant"),
        ("http_check", {"timeout_seconds": 1e-131}, "too close to zero"),  # PutItem: Number underflow
    ],
)
def test_params_dynamodb_cannot_store_are_422_on_params(api, job_type, params, problem):
    if job_type == "http_check":
        params = {"url": "https://example.com", **params}
    response = api.call("POST /jobs", body={"name": "x", "job_type": job_type, "params": params})
    assert response.status == 422, (response.status, response.body)
    assert response.body["details"][0]["field"].startswith("params")
    assert problem in response.message
    assert api.ddb.scan(TableName="JobsTable")["Items"] == []


def test_params_at_the_edge_of_dynamodbs_range_are_stored(api):
    job = create(api, params={"duration_seconds": 1e-130, "failure_rate": 0.0})
    fetched = api.call("GET /jobs/{job_id}", path_params={"job_id": job["job_id"]})
    assert fetched.body["params"] == {"duration_seconds": 1e-130, "failure_rate": 0}


def test_bad_timezone_is_422(api):
    response = api.call(
        "POST /jobs",
        body={"name": "x", "job_type": "demo", "schedule": "rate(1 hour)", "timezone": "Mars/Base"},
    )
    assert response.status == 422
    assert response.body["details"][0]["field"] == "timezone"


def test_job_without_schedule_has_no_schedule(api):
    job = create(api)
    assert job["next_fire_times"] == []
    assert api.schedule(job["job_id"]) is None


def test_replace_disable_and_unschedule_follow_the_stored_job(api):
    job = create(api, schedule="rate(1 hour)")
    path = {"job_id": job["job_id"]}
    # When the schedule changes, then Scheduler follows
    changed = api.call(
        "PUT /jobs/{job_id}",
        path_params=path,
        body={
            "name": "renamed",
            "job_type": "demo",
            "schedule": "cron(30 4 ? * MON-FRI *)",
            "timezone": "Asia/Tokyo",
        },
    )
    assert changed.status == 200, changed.body
    assert changed.body["name"] == "renamed"
    assert changed.body["created_at"] == job["created_at"]
    schedule = api.schedule(job["job_id"])
    assert (schedule["ScheduleExpression"], schedule["ScheduleExpressionTimezone"]) == (
        "cron(30 4 ? * MON-FRI *)",
        "Asia/Tokyo",
    )
    # When it is disabled, the schedule is disabled and nothing is due
    disabled = api.call(
        "PUT /jobs/{job_id}",
        path_params=path,
        body={"name": "renamed", "job_type": "demo", "schedule": "rate(1 hour)", "enabled": False},
    )
    assert disabled.body["next_fire_times"] == []
    assert api.schedule(job["job_id"])["State"] == "DISABLED"
    # When the schedule is removed, so is the Scheduler schedule
    api.call("PUT /jobs/{job_id}", path_params=path, body={"name": "renamed", "job_type": "demo"})
    assert api.schedule(job["job_id"]) is None


def test_invalid_replacement_changes_nothing(api):
    job = create(api, schedule="rate(1 hour)")
    response = api.call(
        "PUT /jobs/{job_id}",
        path_params={"job_id": job["job_id"]},
        body={"name": "x", "job_type": "demo", "schedule": "cron(bad)"},
    )
    assert response.status == 422
    assert api.call("GET /jobs/{job_id}", path_params={"job_id": job["job_id"]}).body == job
    assert api.schedule(job["job_id"])["ScheduleExpression"] == "rate(1 hour)"


def test_delete_removes_job_and_schedule(api):
    job = create(api, schedule="rate(1 hour)")
    path = {"job_id": job["job_id"]}
    assert api.call("DELETE /jobs/{job_id}", path_params=path).status == 204
    assert api.schedule(job["job_id"]) is None
    assert api.call("GET /jobs/{job_id}", path_params=path).status == 404
    assert api.call("DELETE /jobs/{job_id}", path_params=path).status == 404


def test_schedule_failure_leaves_no_job_behind(api):
    # Given Scheduler refuses (the schedule group is gone)
    api.scheduler.delete_schedule_group(Name=GROUP)
    # When a scheduled job is created
    response = api.call("POST /jobs", body={"name": "x", "job_type": "demo", "schedule": "rate(1 hour)"})
    # Then the request fails and no job exists without its schedule
    assert response.status >= 400
    assert api.call("GET /jobs").body["items"] == []


def test_list_shows_own_jobs_and_admin_sees_all_with_pagination(api):
    mine = [create(api, name=f"job {i}")["job_id"] for i in range(3)]
    bobs = api.call("POST /jobs", user="user-bob", body={"name": "bob's", "job_type": "demo"}).body["job_id"]
    # Alice pages through her own jobs, newest first
    first = api.call("GET /jobs", query={"limit": "2"})
    assert [j["job_id"] for j in first.body["items"]] == [mine[2], mine[1]]
    second = api.call("GET /jobs", query={"limit": "2", "cursor": first.body["next_cursor"]})
    assert [j["job_id"] for j in second.body["items"]] == [mine[0]]
    # Bob's cursor cannot be replayed by alice to read bob's listing
    bob_page = api.call("GET /jobs", user="user-bob", query={"limit": "1"})
    assert (
        bob_page.body["next_cursor"] is None
        or api.call("GET /jobs", query={"cursor": bob_page.body["next_cursor"]}).status == 422
    )
    # The admin sees everyone's
    everything = api.call("GET /jobs", user="root", scopes=[*ALL_SCOPES, "admin"], query={"limit": "200"})
    assert {j["job_id"] for j in everything.body["items"]} == {*mine, bobs}


@pytest.mark.parametrize("cursor", ["%%%", "eyJhIjoxfQ", "e30"])
def test_forged_cursor_is_422(api, cursor):
    assert api.call("GET /jobs", query={"cursor": cursor}).status == 422


def test_manual_run_is_queued_once_per_idempotency_key(api):
    job = create(api)
    path = {"job_id": job["job_id"]}
    # When the same request is sent twice
    first = api.call("POST /jobs/{job_id}/run", path_params=path, headers={"Idempotency-Key": "req-42"})
    again = api.call("POST /jobs/{job_id}/run", path_params=path, headers={"Idempotency-Key": "req-42"})
    # Then one queued run exists; the runner was asked (again, harmlessly) to claim that run
    assert first.status == again.status == 202
    assert first.body == again.body == {"run_id": first.body["run_id"], "status": "queued"}
    run_id = first.body["run_id"]
    assert api.invoker.payloads[0] == {
        "kind": "manual",
        "job_id": job["job_id"],
        "client_request_id": "req-42",
        "run_id": run_id,
        "requested_by": "user-alice",
    }
    runs = api.call("GET /job-logs", query={"job_id": job["job_id"]}).body["items"]
    assert [(r["run_id"], r["status"], r["trigger"]) for r in runs] == [(run_id, "queued", "manual")]
    active = api.call("GET /job-logs/active").body["items"]
    assert [r["run_id"] for r in active] == [run_id]


def test_manual_run_without_key_gets_a_generated_one(api):
    job = create(api)
    path = {"job_id": job["job_id"]}
    a = api.call("POST /jobs/{job_id}/run", path_params=path)
    b = api.call("POST /jobs/{job_id}/run", path_params=path)
    assert a.body["run_id"] != b.body["run_id"]
    keys = {p["client_request_id"] for p in api.invoker.payloads}
    assert len(keys) == 2


def test_manual_run_is_claimed_by_the_runner(api):
    """The payload the API sends is one the real runner accepts and turns into the same run."""
    from job_runner.handler import handle
    from job_runner.service import RunnerService

    from tests.conftest import FakeLambdaContext

    job = create(api, params={"duration_seconds": 0, "log_lines": 1})
    accepted = api.call("POST /jobs/{job_id}/run", path_params={"job_id": job["job_id"]})
    runner = RunnerService(api.services.jobs, api.services.runs)
    result = handle(api.invoker.payloads[0], FakeLambdaContext(), runner)
    assert result["run_id"] == accepted.body["run_id"]
    run = api.call("GET /job-logs/{run_id}", path_params={"run_id": accepted.body["run_id"]}).body
    assert run["status"] == "completed"
    entries = api.call("GET /job-logs/{run_id}/entries", path_params={"run_id": run["run_id"]}).body
    assert "demo job started" in [e["message"] for e in entries["items"]]


def test_invoke_failure_fails_the_run_and_is_503(api):
    job = create(api)
    api.invoker.fail = True
    response = api.call("POST /jobs/{job_id}/run", path_params={"job_id": job["job_id"]})
    assert response.status == 503
    assert response.headers.get("Retry-After") == "1"
    runs = api.call("GET /job-logs", query={"job_id": job["job_id"]}).body["items"]
    assert [(r["status"], r["error"]["type"]) for r in runs] == [("failed", "InvokeFailed")]
    assert api.call("GET /job-logs/active").body["items"] == []
    assert "new Idempotency-Key" in response.message


def test_repeated_key_reports_the_runs_current_status(api):
    job = create(api)
    path = {"job_id": job["job_id"]}
    first = api.call("POST /jobs/{job_id}/run", path_params=path, headers={"Idempotency-Key": "k"})
    run = api.services.runs.get(first.body["run_id"])
    api.services.runs.transition(run, RunStatus.CANCELED)
    again = api.call("POST /jobs/{job_id}/run", path_params=path, headers={"Idempotency-Key": "k"})
    assert again.status == 202
    assert again.body == {"run_id": run.run_id, "status": "canceled"}
    assert len(api.invoker.payloads) == 1  # nothing left to start


@pytest.mark.parametrize(
    "schedule",
    ["cron(0 0 29 2 ? *)", "cron(0 12 31 * ? *)", "cron(0 12 1 1 ? 2030)", "cron(0 12 ? 2 6#5 *)"],
)
def test_schedule_the_preview_cannot_evaluate_is_still_created(api, schedule):
    # Valid for Scheduler; pyawscron raises on these (ValueError, AttributeError, Exception)
    job = create(api, schedule=schedule)
    assert len(job["next_fire_times"]) <= 3
    assert api.schedule(job["job_id"])["ScheduleExpression"] == schedule
    assert api.call("GET /jobs/{job_id}", path_params={"job_id": job["job_id"]}).status == 200


@pytest.mark.parametrize(
    "timezone", ["posix/Europe/Berlin", "right/UTC", "localtime", "posixrules", "Factory"]
)
def test_timezones_zoneinfo_opens_but_scheduler_refuses_are_422(api, timezone):
    # ZoneInfo opens these files; they are not IANA zone names, and Scheduler refuses them
    response = api.call(
        "POST /jobs", body={"name": "x", "job_type": "demo", "schedule": "rate(1 hour)", "timezone": timezone}
    )
    assert response.status == 422
    assert response.body["details"][0]["field"] == "timezone"
    assert api.call("GET /jobs").body["items"] == []


@pytest.mark.parametrize("timezone", ["US/Eastern", "Etc/GMT+5", "America/Argentina/Buenos_Aires"])
def test_iana_links_and_three_part_zones_are_accepted(api, timezone):
    job = create(api, schedule="cron(0 2 * * ? *)", timezone=timezone)
    assert api.schedule(job["job_id"])["ScheduleExpressionTimezone"] == timezone


class RefusingScheduler:
    """EventBridge Scheduler (moto) that answers writes of one expression, or of every one when
    `expression` is None, with a ValidationException carrying `message`."""

    def __init__(self, real: Any, message: str, expression: str | None = None) -> None:
        self.real, self.message, self.expression = real, message, expression

    def _write(self, operation: str, **kwargs: Any) -> Any:
        if self.expression in (None, kwargs["ScheduleExpression"]):
            error: Any = {"Error": {"Code": "ValidationException", "Message": self.message}}
            raise ClientError(error, operation)
        return getattr(self.real, operation)(**kwargs)

    def create_schedule(self, **kwargs: Any) -> Any:
        return self._write("create_schedule", **kwargs)

    def update_schedule(self, **kwargs: Any) -> Any:
        return self._write("update_schedule", **kwargs)

    def delete_schedule(self, **kwargs: Any) -> Any:
        return self.real.delete_schedule(**kwargs)


def refuse(api, message: str, expression: str | None = None) -> None:
    """Given Scheduler refuses `expression` (every expression when None) with `message`."""
    fake: Any = RefusingScheduler(api.scheduler, message, expression)
    api.services.schedules = ScheduleService(
        fake,
        group_name=GROUP,
        role_arn=ROLE_ARN,
        target_arn=RUNNER_ARN,
    )


def test_an_expression_scheduler_refuses_is_422_and_leaves_no_job(api):
    # Given Scheduler refuses an expression our own checks let through
    refuse(api, "Invalid Schedule Expression cron(0 2 * * ? 2199).")
    # When a job with it is created
    body = {"name": "x", "job_type": "demo", "schedule": "cron(0 2 * * ? 2199)"}
    response = api.call("POST /jobs", body=body)
    # Then it is the caller's 422 naming Scheduler's reason, and no job is left without its schedule
    assert response.status == 422
    assert "Invalid Schedule Expression" in response.message
    assert response.body["details"] == [
        {"field": "schedule", "message": "Invalid Schedule Expression cron(0 2 * * ? 2199)."}
    ]
    assert api.call("GET /jobs").body["items"] == []


def test_a_replacement_scheduler_refuses_is_422_and_restores_the_job(api):
    # Given a scheduled job, and Scheduler refusing the expression of its replacement
    job = create(api, schedule="rate(1 hour)")
    refuse(api, "Invalid Schedule Expression rate(2 hours).", "rate(2 hours)")
    # When the job is replaced
    response = api.call(
        "PUT /jobs/{job_id}",
        path_params={"job_id": job["job_id"]},
        body=TWO_HOURS,
    )
    # Then 422, and the job and its schedule are as before
    assert response.status == 422
    assert api.call("GET /jobs/{job_id}", path_params={"job_id": job["job_id"]}).body == job
    assert api.schedule(job["job_id"])["ScheduleExpression"] == "rate(1 hour)"


def test_scheduler_refusing_the_deployment_is_a_500_that_names_nothing(api):
    refuse(api, "The execution role you provide must allow AWS EventBridge Scheduler to assume the role.")
    response = api.call("POST /jobs", body={"name": "x", "job_type": "demo", "schedule": "rate(1 hour)"})
    assert response.status == 500
    assert response.body == {
        "message": "the service is misconfigured; the operator has been alerted",
        "details": [],
    }
    assert api.call("GET /jobs").body["items"] == []


ALICE = Caller(user_id="user-alice", email=None, scopes=frozenset(ALL_SCOPES))


def put_body(**fields: Any) -> JobIn:
    return JobIn.model_validate({"name": "nightly backup", "job_type": "demo", **fields})


def stored_and_scheduled(api, job_id: str) -> tuple[Any, Any]:
    """(schedule, timezone, enabled) of the stored job and of its Scheduler schedule; None = none."""
    response = api.call("GET /jobs/{job_id}", path_params={"job_id": job_id})
    job = response.body if response.status == 200 else None
    stored = job and job["schedule"] and (job["schedule"], job["timezone"], job["enabled"])
    held = api.schedule(job_id)
    scheduled = held and (
        held["ScheduleExpression"],
        held["ScheduleExpressionTimezone"],
        held["State"] == "ENABLED",
    )
    return stored, scheduled


TWO_HOURS = {"name": "x", "job_type": "demo", "schedule": "rate(2 hours)"}


def test_a_put_overtaken_by_another_put_leaves_the_schedule_of_the_stored_job(api):
    # Given a scheduled job
    job = create(api, schedule="rate(1 hour)")
    real_upsert = api.services.schedules.upsert_job_schedule
    overtaken: list[bool] = []

    def upsert_after_another_put(**kwargs: Any) -> None:
        # Another PUT runs to its end between this request's job write and its schedule write
        if not overtaken:
            overtaken.append(True)
            api.services.jobs_service.replace(
                ALICE, job["job_id"], put_body(schedule="cron(0 3 * * ? *)", timezone="Europe/Berlin")
            )
        real_upsert(**kwargs)

    api.services.schedules.upsert_job_schedule = upsert_after_another_put
    # When alice's PUT writes its (now stale) schedule last
    response = api.call(
        "PUT /jobs/{job_id}",
        path_params={"job_id": job["job_id"]},
        body=TWO_HOURS,
    )
    assert response.status == 200
    # Then Scheduler holds the schedule of the job as stored: the other PUT's
    stored, scheduled = stored_and_scheduled(api, job["job_id"])
    assert stored == scheduled == ("cron(0 3 * * ? *)", "Europe/Berlin", True)


def test_a_put_between_the_two_deletes_of_a_delete_leaves_no_schedule(api):
    job = create(api, schedule="rate(1 hour)")
    real_delete = api.services.jobs.delete
    overtaken: list[bool] = []

    def delete_after_a_put(job_id: str) -> None:
        # A PUT lands after DELETE removed the schedule and before it removes the job
        if not overtaken:
            overtaken.append(True)
            api.services.jobs_service.replace(ALICE, job_id, put_body(schedule="rate(3 hours)"))
        real_delete(job_id)

    api.services.jobs.delete = delete_after_a_put
    assert api.call("DELETE /jobs/{job_id}", path_params={"job_id": job["job_id"]}).status == 204
    assert stored_and_scheduled(api, job["job_id"]) == (None, None)


def test_a_delete_before_a_puts_schedule_write_leaves_no_schedule(api):
    job = create(api, schedule="rate(1 hour)")
    real_upsert = api.services.schedules.upsert_job_schedule
    overtaken: list[bool] = []

    def upsert_after_a_delete(**kwargs: Any) -> None:
        if not overtaken:
            overtaken.append(True)
            api.services.jobs_service.delete(ALICE, job["job_id"])
        real_upsert(**kwargs)

    api.services.schedules.upsert_job_schedule = upsert_after_a_delete
    api.call(
        "PUT /jobs/{job_id}",
        path_params={"job_id": job["job_id"]},
        body=TWO_HOURS,
    )
    assert stored_and_scheduled(api, job["job_id"]) == (None, None)


def test_a_key_whose_run_was_deleted_is_409_not_404(api):
    # Given a manual run made with a key, finished and then deleted
    job = create(api)
    path = {"job_id": job["job_id"]}
    first = api.call("POST /jobs/{job_id}/run", path_params=path, headers={"Idempotency-Key": "k"})
    run = api.services.runs.get(first.body["run_id"])
    api.services.runs.transition(run, RunStatus.CANCELED)
    assert api.call("DELETE /job-logs/{run_id}", path_params={"run_id": run.run_id}).status == 204
    # When the key is sent again
    again = api.call("POST /jobs/{job_id}/run", path_params=path, headers={"Idempotency-Key": "k"})
    # Then 409 (the job exists; the key is spent), and a new key runs the job
    assert again.status == 409
    assert "new key" in again.message
    assert (
        api.call("POST /jobs/{job_id}/run", path_params=path, headers={"Idempotency-Key": "k2"}).status == 202
    )


def test_a_put_keeps_the_last_run_the_tracker_recorded_meanwhile(api):
    # Given a job whose run finishes (tracker: record_last_run) between the PUT's read and write
    job = create(api, schedule="rate(1 hour)")
    real_get = api.services.jobs.get
    recorded: list[bool] = []

    def get_then_record(job_id: str) -> Any:
        current = real_get(job_id)
        if not recorded:
            recorded.append(api.services.jobs.record_last_run(job_id, "01" + "R" * 24, RunStatus.FAILED))
        return current

    api.services.jobs.get = get_then_record
    # When the job is replaced
    response = api.call("PUT /jobs/{job_id}", path_params={"job_id": job["job_id"]}, body=TWO_HOURS)
    api.services.jobs.get = real_get
    # Then the new definition is stored and the last run is not rolled back
    assert response.status == 200
    stored = api.call("GET /jobs/{job_id}", path_params={"job_id": job["job_id"]}).body
    assert (stored["schedule"], stored["last_run_id"], stored["last_run_status"]) == (
        "rate(2 hours)",
        "01" + "R" * 24,
        "failed",
    )


def test_a_put_removes_the_optional_fields_it_leaves_out(api):
    job = create(api, schedule="rate(1 hour)", target="edge-1")
    path = {"job_id": job["job_id"]}
    api.call("PUT /jobs/{job_id}", path_params=path, body={"name": "x", "job_type": "demo"})
    stored = api.call("GET /jobs/{job_id}", path_params=path).body
    assert (stored["schedule"], stored["target"], stored["name"]) == (None, None, "x")
    assert api.schedule(job["job_id"]) is None


def test_the_schedule_is_stored_and_scheduled_as_validated_without_surrounding_spaces(api):
    job = create(api, schedule="  rate(1 hour)\n")
    assert job["schedule"] == "rate(1 hour)"
    assert api.schedule(job["job_id"])["ScheduleExpression"] == "rate(1 hour)"


def test_a_create_that_fails_after_writing_the_schedule_leaves_no_schedule(api):
    # Given the re-read of the new job (after its schedule was written) fails
    real_get = api.services.jobs.get

    def get_fails(job_id: str) -> Any:
        raise ClientError({"Error": {"Code": "InternalServerError", "Message": "x"}}, "GetItem")

    api.services.jobs.get = get_fails
    # When a scheduled job is created
    response = api.call("POST /jobs", body={"name": "x", "job_type": "demo", "schedule": "rate(1 hour)"})
    api.services.jobs.get = real_get
    # Then the request fails, and neither the job nor a schedule firing into a NotFound remains
    assert response.status >= 500
    assert api.call("GET /jobs").body["items"] == []
    assert api.scheduler.list_schedules(GroupName=GROUP)["Schedules"] == []


def test_an_http_check_latency_limit_longer_than_the_timeout_is_stored_and_parses(api):
    # The runner validates stored params with the same model: a bound added later must not turn
    # jobs stored before it into runs that fail as InvalidJob for good.
    from jobtracker_common import jobtypes

    params = {"url": "https://example.com", "max_latency_ms": 600_000}
    created = api.call("POST /jobs", body={"name": "x", "job_type": "http_check", "params": params})
    assert created.status == 201, created.body
    assert jobtypes.parse_params("http_check", created.body["params"]).max_latency_ms == 600_000  # type: ignore[attr-defined]
