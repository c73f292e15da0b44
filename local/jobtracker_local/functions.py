"""Runs the template's functions in this process, as Lambda would run them.

Each function's handler is imported from its package and called with a JSON round-tripped
event (so handlers see exactly what Lambda would deliver) and a context whose deadline is the
function's `Timeout`. Async invokes (`InvocationType=Event`, Scheduler targets) follow Lambda's
async rules: retries per `EventInvokeConfig.MaximumRetryAttempts`, then the on-failure
destination (SQS) receives Lambda's invocation record.

Environment: every function runs in this one process and reads its settings once
(`load_settings` is cached per process), so per-invocation environments are not possible. The
local stack therefore sets the UNION of all functions' resolved variables once at startup; the
template gives every function the same value for every shared key (table names, ARNs), and the
only key that differs, POWERTOOLS_SERVICE_NAME, is cosmetic (each module passes its service
name to its Logger explicitly). A real conflict is reported at startup.
"""

from __future__ import annotations

import base64
import importlib
import json
import logging
import os
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import unquote

from werkzeug.wrappers import Request, Response

from jobtracker_local.resources import LocalResources, aws_client

log = logging.getLogger("jobtracker.local")

#: Keys that legitimately differ between functions and are cosmetic in one process.
COSMETIC_KEYS = frozenset({"POWERTOOLS_SERVICE_NAME"})


class FunctionError(Exception):
    """The handler raised (Lambda's `Unhandled` function error) or timed out."""

    def __init__(self, error_type: str, message: str, stack: list[str] | None = None) -> None:
        super().__init__(f"{error_type}: {message}")
        self.error_type = error_type
        self.message = message
        self.stack = stack or []

    def payload(self) -> dict[str, Any]:
        return {"errorMessage": self.message, "errorType": self.error_type, "stackTrace": self.stack}


class FunctionNotFound(Exception):
    pass


class LocalLambdaContext:
    """The parts of Lambda's context object handlers use; the deadline counts down in real time."""

    def __init__(self, name: str, arn: str, timeout_s: int, memory_mb: int) -> None:
        self._deadline = time.monotonic() + timeout_s
        self.function_name = name
        self.function_version = "$LATEST"
        self.invoked_function_arn = arn
        self.memory_limit_in_mb = memory_mb
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{name}"
        self.log_stream_name = f"local/{self.aws_request_id}"
        self.identity = None
        self.client_context = None

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


def json_default(value: Any) -> Any:
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    if isinstance(value, datetime):
        return value.timestamp()
    if isinstance(value, set | frozenset):
        return sorted(value)
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def json_roundtrip(value: Any) -> Any:
    return json.loads(json.dumps(value, default=json_default))


@dataclass
class AsyncSettings:
    #: Lambda waits 1 and then 2 minutes between async retries; locally that is too slow to watch.
    retry_delay_seconds: float = 2.0
    max_concurrency: int = 32


class FunctionRuntime:
    def __init__(self, resources: LocalResources, *, async_settings: AsyncSettings | None = None) -> None:
        self.resources = resources
        self.specs = resources.template.functions()
        self.async_settings = async_settings or AsyncSettings()
        self._slots = threading.BoundedSemaphore(self.async_settings.max_concurrency)
        self._threads: set[threading.Thread] = set()
        self._lock = threading.Lock()
        self._stopping = threading.Event()

    # ---- environment ---------------------------------------------------------------------
    def union_environment(self) -> dict[str, str]:
        """Every function's resolved variables; raises on a conflict that is not cosmetic."""
        union: dict[str, str] = {}
        conflicts: list[str] = []
        for function_id in self.specs:
            for key, value in self.resources.environment(function_id).items():
                if key in union and union[key] != value and key not in COSMETIC_KEYS:
                    conflicts.append(f"{key}: {union[key]!r} vs {value!r} ({function_id})")
                union.setdefault(key, value)
        if conflicts:
            raise RuntimeError(
                "functions need different values for the same variable, which one process cannot "
                "give them: " + "; ".join(conflicts)
            )
        union["POWERTOOLS_SERVICE_NAME"] = "jobtracker-local"
        return union

    def apply_environment(self) -> dict[str, str]:
        env = self.union_environment()
        os.environ.update(env)
        return env

    # ---- invoking ------------------------------------------------------------------------
    def function_id(self, name_or_arn: str) -> str:
        if name_or_arn in self.specs:
            return name_or_arn
        found = self.resources.function_for_arn(name_or_arn)
        if found is None:
            raise FunctionNotFound(f"Function not found: {name_or_arn}")
        return found

    def handler(self, function_id: str) -> Callable[[Any, Any], Any]:
        spec = self.specs[function_id]
        try:
            module = importlib.import_module(spec.module)
        except Exception as exc:
            raise FunctionError(
                "Runtime.ImportModuleError", f"Unable to import module '{spec.module}': {exc}"
            ) from exc
        handler: Callable[[Any, Any], Any] = getattr(module, spec.attribute)
        return handler

    def check_imports(self) -> dict[str, str]:
        """Import every handler now (fast first invokes); returns the ones that cannot load."""
        missing = {}
        for function_id in self.specs:
            try:
                self.handler(function_id)
            except FunctionError as exc:
                missing[function_id] = exc.message
        return missing

    def invoke(self, name_or_arn: str, event: Any) -> Any:
        """Synchronous (RequestResponse) invoke; FunctionError when the handler fails."""
        function_id = self.function_id(name_or_arn)
        spec = self.specs[function_id]
        handler = self.handler(function_id)
        name = str(self.resources.refs[function_id])
        context = LocalLambdaContext(name, self.resources.function_arn(name), spec.timeout, spec.memory_size)
        payload = json_roundtrip(event)
        outcome: dict[str, Any] = {}

        def call() -> None:
            try:
                outcome["result"] = handler(payload, context)
            except Exception as exc:
                outcome["error"] = FunctionError(
                    type(exc).__name__, str(exc), traceback.format_exception(exc)[-10:]
                )

        worker = threading.Thread(target=call, name=f"fn-{function_id}", daemon=True)
        worker.start()
        worker.join(timeout=spec.timeout)
        if worker.is_alive():
            # Lambda would freeze the sandbox; a thread cannot be killed, so it is left to finish.
            log.error("%s timed out after %s s", function_id, spec.timeout)
            raise FunctionError("Sandbox.Timedout", f"Task timed out after {spec.timeout:.2f} seconds")
        if "error" in outcome:
            error: FunctionError = outcome["error"]
            log.error("%s failed: %s: %s", function_id, error.error_type, error.message)
            raise error
        return json_roundtrip(outcome.get("result"))

    def invoke_async(self, name_or_arn: str, event: Any) -> None:
        """InvocationType=Event: returns at once; retries and on-failure like Lambda's async invoke."""
        function_id = self.function_id(name_or_arn)
        try:
            self.handler(function_id)
        except FunctionError as exc:
            log.error("%s: event dropped, the function cannot load: %s", function_id, exc.message)
            return
        payload = json_roundtrip(event)
        thread = threading.Thread(
            target=self._run_async, args=(function_id, payload), name=f"async-{function_id}", daemon=True
        )
        with self._lock:
            self._threads.add(thread)
        thread.start()

    def _run_async(self, function_id: str, payload: Any) -> None:
        config = self.specs[function_id].event_invoke_config
        retries = int(config.get("MaximumRetryAttempts", 2))
        request_id = str(uuid.uuid4())
        try:
            with self._slots:
                attempt = 0
                while True:
                    attempt += 1
                    try:
                        self.invoke(function_id, payload)
                        return
                    except FunctionError as exc:
                        if attempt > retries or self._stopping.is_set():
                            self._async_failed(function_id, payload, exc, request_id, attempt)
                            return
                    delay = self.async_settings.retry_delay_seconds * attempt
                    if self._stopping.wait(delay):
                        return
        finally:
            with self._lock:
                self._threads.discard(threading.current_thread())

    def _async_failed(
        self, function_id: str, payload: Any, error: FunctionError, request_id: str, attempts: int
    ) -> None:
        config = self.resources.resolve(self.specs[function_id].event_invoke_config)
        destination = config.get("DestinationConfig", {}).get("OnFailure", {}).get("Destination")
        log.error("%s: async invoke failed %d times; destination %s", function_id, attempts, destination)
        if not destination:
            return
        record = {
            "version": "1.0",
            "timestamp": datetime.now(UTC).isoformat().replace("+00:00", "Z"),
            "requestContext": {
                "requestId": request_id,
                "functionArn": self.resources.attrs[f"{function_id}.Arn"] + ":$LATEST",
                "condition": "RetriesExhausted",
                "approximateInvokeCount": attempts,
            },
            "requestPayload": payload,
            "responseContext": {
                "statusCode": 200,
                "executedVersion": "$LATEST",
                "functionError": "Unhandled",
            },
            "responsePayload": error.payload(),
        }
        send_to_destination(self.resources, destination, record)

    def stop(self, timeout: float = 5.0) -> None:
        self._stopping.set()
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout=max(0.0, deadline - time.monotonic()))

    # ---- Lambda Invoke API ---------------------------------------------------------------
    def invoke_app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        """WSGI app for `POST /2015-03-31/functions/{name}/invocations`."""
        request = Request(environ)
        response = self._invoke_response(request)
        return response(environ, start_response)

    def _invoke_response(self, request: Request) -> Response:
        name = unquote(request.path.split("/functions/", 1)[1].rsplit("/invocations", 1)[0])
        kind = request.headers.get("X-Amz-Invocation-Type", "RequestResponse")
        try:
            function_id = self.function_id(name)
        except FunctionNotFound as exc:
            return _error_response(404, "ResourceNotFoundException", str(exc))
        raw = request.get_data()
        try:
            event = json.loads(raw) if raw else {}
        except ValueError:
            return _error_response(
                400, "InvalidRequestContentException", "Could not parse request body into json"
            )
        headers = {"X-Amz-Executed-Version": "$LATEST"}
        if kind == "DryRun":
            return Response(status=204, headers=headers)
        if kind == "Event":
            self.invoke_async(function_id, event)
            return Response(status=202, headers=headers)
        try:
            result = self.invoke(function_id, event)
        except FunctionError as exc:
            headers["X-Amz-Function-Error"] = "Unhandled"
            return Response(
                json.dumps(exc.payload()), status=200, headers=headers, mimetype="application/json"
            )
        return Response(json.dumps(result), status=200, headers=headers, mimetype="application/json")


def _error_response(status: int, code: str, message: str) -> Response:
    return Response(
        json.dumps({"Type": "User", "message": message}),
        status=status,
        headers={"x-amzn-ErrorType": code},
        mimetype="application/json",
    )


def send_to_destination(resources: LocalResources, destination_arn: str, record: dict[str, Any]) -> None:
    """Deliver an on-failure record to an SQS destination (the only destination type used)."""
    if ":sqs:" not in destination_arn:
        log.error("on-failure destination %s is not SQS; record dropped: %s", destination_arn, record)
        return
    url = resources.queue_url_for_arn(destination_arn)
    sqs = aws_client("sqs", resources.endpoint, resources.region)
    if url is None:
        url = sqs.get_queue_url(QueueName=destination_arn.rsplit(":", 1)[-1])["QueueUrl"]
    sqs.send_message(QueueUrl=url, MessageBody=json.dumps(record, default=json_default))
