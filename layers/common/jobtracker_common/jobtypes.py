"""Job-type registry: `job_type` -> handler with a typed params model.

New types plug in with `register()` without touching the runner. The API validates params
against the same models when a job is created, so a bad job is refused before it ever runs.
"""

from __future__ import annotations

import random
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, HttpUrl
from pydantic import ValidationError as PydanticValidationError

from jobtracker_common.errors import ValidationError
from jobtracker_common.models import LogLevel


class JobContext(Protocol):
    """What a job body may do while it runs."""

    def log(
        self,
        message: str,
        *,
        level: LogLevel = LogLevel.INFO,
        category: str = "job",
        details: dict[str, Any] | None = None,
    ) -> None: ...

    def should_stop(self) -> bool:
        """True when the run must stop now (deadline close, or cancel requested)."""
        ...

    def set_progress(self, note: str) -> None: ...


class JobFailure(Exception):
    """The job ran and its outcome is a failure (not a bug in the runner)."""

    def __init__(
        self, message: str, *, error_type: str = "JobFailed", details: dict[str, Any] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.error_type = error_type
        self.details = details or {}


class JobStopped(Exception):
    """The job noticed `should_stop()` and returned early."""


@dataclass(frozen=True)
class JobType:
    name: str
    params_model: type[BaseModel]
    run: Callable[[Any, JobContext], dict[str, Any]]
    description: str = ""


_REGISTRY: dict[str, JobType] = {}


def register(job_type: JobType) -> JobType:
    _REGISTRY[job_type.name] = job_type
    return job_type


def get(name: str) -> JobType:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise ValidationError(f"unknown job type {name!r}; known types: {known}") from None


def names() -> list[str]:
    return sorted(_REGISTRY)


def parse_params(job_type: str, params: dict[str, Any]) -> BaseModel:
    spec = get(job_type)
    try:
        return spec.params_model.model_validate(params)
    except PydanticValidationError as exc:
        details = [
            {"field": "params." + ".".join(str(p) for p in err["loc"]), "message": err["msg"]}
            for err in exc.errors()
        ]
        summary = "; ".join(f"{d['field']}: {d['message']}" for d in details)
        raise ValidationError(
            f"invalid params for job type {job_type!r}: {summary}", details=details
        ) from exc


# ---- built-in: demo ----------------------------------------------------------------------
class DemoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    duration_seconds: float = Field(default=1.0, ge=0, le=900)
    outcome: Literal["succeed", "fail", "random"] = "succeed"
    failure_rate: float = Field(default=0.5, ge=0, le=1)
    log_lines: int = Field(default=3, ge=0, le=1_000)


def _sleep(seconds: float, ctx: JobContext) -> None:
    """Sleep in short slices so a stop request (deadline, cancel) is honoured promptly."""
    end = time.monotonic() + seconds
    while (left := end - time.monotonic()) > 0:
        if ctx.should_stop():
            raise JobStopped("demo job stopped early")
        time.sleep(min(left, 0.2))


def _run_demo(params: DemoParams, ctx: JobContext) -> dict[str, Any]:
    ctx.log(
        "demo job started", details={"duration_seconds": params.duration_seconds, "outcome": params.outcome}
    )
    steps = max(1, params.log_lines)
    for step in range(1, steps + 1):
        _sleep(params.duration_seconds / steps, ctx)
        if step <= params.log_lines:
            ctx.log(f"working, step {step}/{steps}")
            ctx.set_progress(f"step {step}/{steps}")
    fail = params.outcome == "fail" or (params.outcome == "random" and random.random() < params.failure_rate)
    if fail:
        raise JobFailure("demo job failed as configured", error_type="DemoFailure")
    ctx.log("demo job finished")
    return {"message": f"demo job succeeded after {params.duration_seconds:g}s"}


register(
    JobType(
        "demo", DemoParams, _run_demo, "Sleeps, then succeeds or fails as configured (demos, load tests)."
    )
)


# ---- built-in: http_check ----------------------------------------------------------------
class HttpCheckParams(BaseModel):
    model_config = ConfigDict(extra="forbid")
    url: HttpUrl
    method: Literal["GET", "HEAD", "POST", "PUT", "OPTIONS"] = "GET"
    expected_status: int = Field(default=200, ge=100, le=599)
    timeout_seconds: float = Field(default=10.0, gt=0, le=300)
    body_contains: str | None = Field(default=None, max_length=1_000)
    headers: dict[str, str] = Field(default={})
    # At most the longest timeout: a slower response has already failed as a timeout.
    max_latency_ms: int | None = Field(default=None, ge=1)


def _run_http_check(params: HttpCheckParams, ctx: JobContext) -> dict[str, Any]:
    url = str(params.url)
    ctx.log(f"{params.method} {url}", category="http")
    request = urllib.request.Request(url, method=params.method, headers=params.headers)  # noqa: S310 (scheme checked by HttpUrl)
    started = time.monotonic()
    try:
        with urllib.request.urlopen(request, timeout=params.timeout_seconds) as response:  # noqa: S310
            status, body = response.status, response.read(1_000_000)
    except urllib.error.HTTPError as exc:
        status, body = exc.code, exc.read(1_000_000) if exc.fp else b""
    except TimeoutError as exc:
        raise JobFailure(
            f"no response within {params.timeout_seconds:g}s from {url}", error_type="HttpTimeout"
        ) from exc
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise JobFailure(
                f"no response within {params.timeout_seconds:g}s from {url}", error_type="HttpTimeout"
            ) from exc
        raise JobFailure(f"request to {url} failed: {exc.reason}", error_type="HttpError") from exc
    except OSError as exc:
        raise JobFailure(f"request to {url} failed: {exc}", error_type="HttpError") from exc
    latency_ms = round((time.monotonic() - started) * 1000, 1)
    result = {"status_code": status, "latency_ms": latency_ms, "url": url}
    ctx.log(f"HTTP {status} in {latency_ms} ms", category="http", details=result)
    if status != params.expected_status:
        raise JobFailure(
            f"expected HTTP {params.expected_status}, got {status}",
            error_type="UnexpectedStatus",
            details=result,
        )
    if params.body_contains is not None and params.body_contains not in body.decode("utf-8", "replace"):
        raise JobFailure(
            f"response body does not contain {params.body_contains!r}",
            error_type="BodyMismatch",
            details=result,
        )
    if params.max_latency_ms is not None and latency_ms > params.max_latency_ms:
        raise JobFailure(
            f"latency {latency_ms} ms above {params.max_latency_ms} ms",
            error_type="SlowResponse",
            details=result,
        )
    return {"message": f"HTTP {status} in {latency_ms} ms", **result}


register(
    JobType(
        "http_check", HttpCheckParams, _run_http_check, "Requests a URL; checks status, body and latency."
    )
)
