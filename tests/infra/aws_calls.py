"""Child process of test_iam_covers_calls.py: every AWS call each function makes, on the local stack.

    python -m tests.infra.aws_calls STATE_DIR OUT.json

Starts the local stack in this process (its own moto, no demo data), drives every function
through the HTTP gateway, the stream and schedule emulators and direct invokes, and writes each
botocore call made while a function's handler runs: function, service, operation, and the
resource names IAM would check. Runs in a child so the stack's environment and cached clients
never leak into the test process.
"""

from __future__ import annotations

import json
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from botocore.client import BaseClient
from jobtracker_local.functions import FunctionRuntime
from jobtracker_local.stack import LocalStack, StackConfig

ROOT = Path(__file__).resolve().parents[2]
_current = threading.local()
calls: list[dict[str, Any]] = []
_lock = threading.Lock()


def _resources(operation: str, params: dict[str, Any]) -> list[dict[str, Any]]:
    """The (action, resource) pairs IAM evaluates for one call, as names."""
    if operation in {"BatchGetItem", "BatchWriteItem"}:
        return [{"operation": operation, "table": t} for t in params.get("RequestItems", {})]
    if operation == "TransactWriteItems":
        # IAM checks each item's own action; there is no dynamodb:TransactWriteItems action.
        out = []
        for item in params.get("TransactItems", []):
            for kind, body in item.items():
                out.append(
                    {
                        "operation": f"{kind}Item" if kind != "ConditionCheck" else "ConditionCheckItem",
                        "table": body["TableName"],
                    }
                )
        return out
    if operation == "TransactGetItems":
        return [
            {"operation": "GetItem", "table": i["Get"]["TableName"]} for i in params.get("TransactItems", [])
        ]
    entry: dict[str, Any] = {"operation": operation}
    for key, name in (
        ("TableName", "table"),
        ("IndexName", "index"),
        ("GroupName", "group"),
        ("FunctionName", "target_function"),
        ("RoleArn", "role"),
        ("FromEmailAddress", "from"),
        ("UserPoolId", "user_pool"),
    ):
        if key in params:
            entry[name] = params[key]
    if "Target" in params and "RoleArn" in params["Target"]:
        entry["role"] = params["Target"]["RoleArn"]
    return [entry]


def _record(original: Callable[..., Any]) -> Callable[..., Any]:
    def make_api_call(self: BaseClient, operation: str, params: dict[str, Any]) -> Any:
        function_id = getattr(_current, "function_id", None)
        if function_id:
            service = self.meta.service_model.service_name
            with _lock:
                calls.extend(
                    {"function": function_id, "service": service, **r} for r in _resources(operation, params)
                )
        return original(self, operation, params)

    return make_api_call


def _attribute(original: Callable[..., Any]) -> Callable[..., Any]:
    def handler(self: FunctionRuntime, function_id: str) -> Callable[[Any, Any], Any]:
        inner = original(self, function_id)

        def run(event: Any, context: Any) -> Any:
            previous = getattr(_current, "function_id", None)
            _current.function_id = function_id
            try:
                return inner(event, context)
            finally:
                _current.function_id = previous

        return run

    return handler


def _request(stack: LocalStack, method: str, path: str, token: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        stack.urls["api"] + path,
        data=data,
        method=method,
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read() or b"null")


def _until(check: Callable[[], bool], timeout: float = 40.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError("the local stack did not get there in time")
        time.sleep(0.2)


def _made(function_id: str, operation: str) -> bool:
    with _lock:
        return any(c["function"] == function_id and c["operation"] == operation for c in calls)


def drive(stack: LocalStack) -> None:
    scopes = ["read:job_logs", "write:job_logs", "read:jobs", "write:jobs"]
    token = stack.token("iam-probe", email="probe@example.com", scopes=scopes)
    assert _request(stack, "GET", "/users/me", token)[0] == 200
    prefs = {"email_on_job_failure": True, "email_on_job_retry": True, "notification_frequency": "immediate"}
    assert _request(stack, "PATCH", "/users/me/notification-preferences", token, prefs)[0] == 200
    job = {
        "name": "iam probe",
        "job_type": "demo",
        "params": {"duration_seconds": 0, "outcome": "fail"},
        "schedule": "rate(1 hour)",
        "retry": {"max_attempts": 2, "backoff_seconds": 1, "jitter": False},
    }
    status, created = _request(stack, "POST", "/jobs", token, job)
    assert status == 201, created
    job_id = created["job_id"]
    status, run = _request(stack, "POST", f"/jobs/{job_id}/run", token)
    assert status == 202, run
    # The runner fails attempt 1, the tracker schedules attempt 2, the notifier mails.
    _until(lambda: _made("TrackerFunction", "CreateSchedule") and _made("NotifierFunction", "SendEmail"))
    run_id = run["run_id"]
    for path in (
        "/jobs",
        f"/jobs/{job_id}",
        "/job-logs/active",
        "/job-logs/statistics",
        f"/job-logs?job_id={job_id}",
        f"/job-logs/{run_id}",
        f"/job-logs/{run_id}/entries",
    ):
        assert _request(stack, "GET", path, token)[0] == 200, path
    _request(stack, "POST", f"/job-logs/{run_id}/cancel", token)
    assert _request(stack, "PUT", f"/jobs/{job_id}", token, {**job, "schedule": "rate(2 hours)"})[0] == 200
    assert _request(stack, "DELETE", f"/jobs/{job_id}", token)[0] in {200, 204}
    runtime = stack.runtime
    assert runtime is not None
    for function_id, event in (
        ("SweeperFunction", "tracker/sweeper_tick.json"),
        ("DigestFunction", "notifier/digest_tick.json"),
    ):
        runtime.invoke(function_id, json.loads((ROOT / "events" / event).read_text()))


def main(argv: list[str]) -> int:
    state_dir, out = Path(argv[0]), Path(argv[1])
    BaseClient._make_api_call = _record(BaseClient._make_api_call)  # type: ignore[method-assign]
    FunctionRuntime.handler = _attribute(FunctionRuntime.handler)  # type: ignore[method-assign]
    stack = LocalStack(
        StackConfig(
            api_port=0,
            aws_port=0,
            state_dir=state_dir,
            demo=False,
            stream_poll_interval=0.1,
            schedule_poll_interval=0.2,
            async_retry_delay=0.1,
            max_batching_window=0.1,
        )
    )
    stack.start()
    try:
        drive(stack)
    finally:
        stack.stop()
        with _lock:
            out.write_text(json.dumps(calls, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
