"""The local stack itself, over HTTP: gateway auth, the Lambda Invoke API, Scheduler -> runner."""

from __future__ import annotations

import json
import shlex
import socket
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import boto3
import pytest
import requests
from jobtracker_local.demo import DEMO_EMAIL, DEMO_SUCCEEDS

from tests.e2e.conftest import Stack, eventually, running_stack

pytestmark = pytest.mark.e2e


def client(stack: Stack, service: str):
    return boto3.client(service, endpoint_url=stack.aws_url, region_name="us-east-1")


def test_the_gateway_serves_its_jwks_and_refuses_calls_without_a_token(stack):
    jwks = requests.get(f"{stack.api_url}/.well-known/jwks.json", timeout=10).json()
    assert jwks["keys"][0]["kid"] == stack.keys.kid

    response = requests.get(f"{stack.api_url}/job-logs/active", timeout=10)

    assert response.status_code == 401
    assert response.json() == {"message": "Unauthorized"}


def test_the_runner_answers_the_lambda_invoke_api(stack):
    # When a malformed event is sent through the standard Lambda Invoke API
    response = client(stack, "lambda").invoke(
        FunctionName="JobRunnerFunction", Payload=json.dumps({"kind": "nonsense"}).encode()
    )

    # Then the runner's own answer comes back
    assert response["StatusCode"] == 200
    assert "FunctionError" not in response
    body = json.loads(response["Payload"].read())
    assert body["ok"] is False
    assert body["error"]["type"] == "ValidationError"


def test_an_unknown_function_is_a_resource_not_found_error(stack):
    with pytest.raises(client(stack, "lambda").exceptions.ResourceNotFoundException):
        client(stack, "lambda").invoke(FunctionName="NoSuchFunction", Payload=b"{}")


def test_a_one_time_schedule_fires_the_runner_and_is_deleted(stack):
    # Given a job (written straight to the table) and a one-time schedule for it that is due
    ddb = client(stack, "dynamodb")
    job_id = f"e2e-sched-{datetime.now(UTC).strftime('%H%M%S%f')}"
    now = datetime.now(UTC).isoformat()
    ddb.put_item(
        TableName="JobsTable",
        Item={
            "job_id": {"S": job_id},
            "owner_id": {"S": "e2e-scheduler"},
            "name": {"S": "scheduled"},
            "job_type": {"S": "demo"},
            "params": {"M": {"duration_seconds": {"N": "0"}, "log_lines": {"N": "1"}}},
            "enabled": {"BOOL": True},
            "timezone": {"S": "UTC"},
            "retry": {"M": {"max_attempts": {"N": "1"}}},
            "created_at": {"S": now},
            "updated_at": {"S": now},
        },
    )
    scheduler = client(stack, "scheduler")
    group = scheduler.list_schedule_groups(NamePrefix="jobtracker-local")["ScheduleGroups"][0]["Name"]
    due = (datetime.now(UTC) - timedelta(seconds=1)).strftime("%Y-%m-%dT%H:%M:%S")
    scheduler.create_schedule(
        Name=f"once-{job_id}",
        GroupName=group,
        ScheduleExpression=f"at({due})",
        FlexibleTimeWindow={"Mode": "OFF"},
        ActionAfterCompletion="DELETE",
        Target={
            "Arn": "arn:aws:lambda:us-east-1:123456789012:function:JobRunnerFunction",
            "RoleArn": "arn:aws:iam::123456789012:role/SchedulerRole",
            "Input": json.dumps(
                {
                    "kind": "schedule",
                    "job_id": job_id,
                    "scheduled_time": "<aws.scheduler.scheduled-time>",
                    "schedule_arn": "<aws.scheduler.schedule-arn>",
                    "delivery_attempt": "<aws.scheduler.attempt-number>",
                }
            ),
        },
    )

    # Then a completed run of the job appears, scheduled for the schedule's time
    def completed_run():
        items = ddb.query(
            TableName="RunsTable",
            IndexName="by-job",
            KeyConditionExpression="job_id = :j",
            ExpressionAttributeValues={":j": {"S": job_id}},
        )["Items"]
        return [i for i in items if i.get("status", {}).get("S") == "completed"]

    (run,) = eventually(completed_run, timeout=30)
    assert run["trigger"]["S"] == "schedule"
    assert run["scheduled_time"]["S"].startswith(due)
    # And the one-time schedule deleted itself after completion
    eventually(
        lambda: not [s for s in scheduler.list_schedules(GroupName=group)["Schedules"] if job_id in s["Name"]]
    )


def test_the_demo_stack_answers_the_ready_lines_curl_with_runs_statistics_and_an_email(tmp_path):
    # Given the stack started with its demo data, as `make run` starts it
    with running_stack(tmp_path, "--aws-port=0", demo=True) as stack:
        # When the `curl` of the ready line is run as printed
        line = eventually(lambda: _ready_curl(stack), timeout=30)
        args = shlex.split(line)
        url, header = args[-1], args[args.index("-H") + 1]
        token_header = dict([header.split(": ", 1)])
        response = requests.get(url, headers=token_header, timeout=10)

        # Then the demo user is signed in, and sees demo runs, statistics and an email
        assert response.status_code == 200, response.text
        assert url == f"{stack.api_url}/job-logs/active"

        def demo_runs() -> set[str]:
            listed = requests.get(f"{stack.api_url}/job-logs", headers=token_header, timeout=10)
            return {f"{r['job_id']}:{r['status']}" for r in listed.json()["items"]}

        eventually(lambda: {f"{DEMO_SUCCEEDS}:completed"} & demo_runs(), timeout=60)
        (email, *_) = eventually(lambda: stack.emails_to(DEMO_EMAIL), timeout=60)
        assert "Demo: config backup" in str(email["Subject"])

        def completed_today() -> int:
            stats = requests.get(
                f"{stack.api_url}/job-logs/statistics",
                params={"time_period": "day"},
                headers=token_header,
                timeout=10,
            )
            return int(stats.json()["totals"]["by_status"].get("completed", 0))

        assert eventually(completed_today, timeout=30) >= 1


def _ready_curl(stack: Stack) -> str | None:
    for line in stack.log_path.read_text(errors="replace").splitlines():
        if line.strip().startswith("curl ") and "Authorization: Bearer" in line:
            return line.strip()
    return None


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_stack_runs_against_an_existing_endpoint(tmp_path):
    # Given an AWS-compatible endpoint that is already running (a separate moto server process)
    port = free_port()
    endpoint = subprocess.Popen(
        [str(Path(sys.executable).parent / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        eventually(lambda: _reachable(url), timeout=30)
        # When the stack starts with --aws-endpoint
        with running_stack(tmp_path, f"--aws-endpoint={url}") as stack:
            # Then it created the template's resources there and serves Lambda Invoke itself
            assert stack.aws_url == url
            assert stack.state["lambda"] != url
            tables = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1").list_tables()
            assert "RunsTable" in tables["TableNames"]
            response = boto3.client(
                "lambda", endpoint_url=stack.state["lambda"], region_name="us-east-1"
            ).invoke(FunctionName="JobRunnerFunction", Payload=b'{"kind": "nonsense"}')
            assert json.loads(response["Payload"].read())["ok"] is False
            # And mail sent through that endpoint reaches the outbox
            boto3.client("sesv2", endpoint_url=url, region_name="us-east-1").send_email(
                FromEmailAddress="jobs@example.com",
                Destination={"ToAddresses": ["external@example.com"]},
                Content={"Simple": {"Subject": {"Data": "hello"}, "Body": {"Text": {"Data": "from afar"}}}},
            )
            (email,) = eventually(lambda: stack.emails_to("external@example.com"), timeout=30)
            assert email["Subject"] == "hello"
    finally:
        endpoint.terminate()
        endpoint.wait(timeout=10)


def _reachable(url: str) -> bool:
    try:
        requests.get(url + "/moto-api/", timeout=1)
    except requests.ConnectionError:
        return False
    return True


def jobtracker(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "jobtracker_local.cli", "local", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_the_cli_mints_tokens_the_gateway_accepts(stack):
    state_dir = str(stack.log_path.parent)
    admin = jobtracker(
        "token",
        "--sub",
        "cli-admin",
        "--email",
        "admin@example.com",
        "--scope",
        "admin",
        f"--state-dir={state_dir}",
    )
    reader = jobtracker("token", "--sub", "cli-reader", "--scope", "read:jobs", f"--state-dir={state_dir}")
    assert admin.returncode == 0, admin.stderr

    def get(path: str, token: str) -> int:
        return requests.get(
            stack.api_url + path, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ).status_code

    assert get("/users/me", admin.stdout.strip()) == 200
    assert get("/job-logs/active", admin.stdout.strip()) == 200
    assert get("/jobs", reader.stdout.strip()) == 200
    assert get("/job-logs/active", reader.stdout.strip()) == 403


def test_the_cli_invokes_a_function_against_the_running_stack(stack):
    result = jobtracker(
        "invoke",
        "JobRunnerFunction",
        "--event",
        "events/job_runner/malformed.json",
        f"--state-dir={stack.log_path.parent}",
    )

    assert result.returncode == 0, result.stderr
    response = json.loads(result.stdout)  # logs went to stderr, like `sam local invoke`
    assert response["ok"] is False
    assert response["error"]["type"] == "ValidationError"


def test_a_taken_port_is_a_clear_error_not_a_traceback(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]

        result = jobtracker(
            "up", f"--aws-port={port}", "--api-port=0", "--no-demo", f"--state-dir={tmp_path}"
        )

    assert result.returncode == 1
    assert "cannot start the local stack" in result.stderr
    assert "--aws-port" in result.stderr
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "stack.json").exists()


def test_invoke_without_a_running_stack_is_a_clear_error_not_a_traceback(tmp_path):
    # Given no stack state and an endpoint nobody listens on
    endpoint = f"http://127.0.0.1:{free_port()}"

    result = jobtracker(
        "invoke",
        "JobRunnerFunction",
        "--event",
        "events/job_runner/malformed.json",
        f"--aws-endpoint={endpoint}",
        f"--state-dir={tmp_path}",
    )

    assert result.returncode == 1
    assert f"no running local stack at {endpoint}" in result.stderr
    assert "Traceback" not in result.stderr
    assert result.stdout == ""
