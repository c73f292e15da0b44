"""Helpers for runner tests: a stored job, an invocation through the handler, a counted job type."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from job_runner import handler
from job_runner.service import RunnerService
from jobtracker_common import jobtypes
from jobtracker_common.models import Job, RetryPolicy
from jobtracker_common.repositories import JobsRepository
from pydantic import BaseModel

from tests.conftest import FakeLambdaContext

JOB_ID = "01JDEMOJOB0000000000000000"


def add_job(
    jobs: JobsRepository, job_type: str = "demo", params: dict[str, Any] | None = None, **extra: Any
) -> Job:
    now = datetime.now(UTC)
    job = Job(
        job_id=extra.pop("job_id", JOB_ID),
        owner_id="u1",
        name="backup",
        job_type=job_type,
        params=params if params is not None else {"duration_seconds": 0, "log_lines": 2},
        target="core-sw-01",
        retry=extra.pop("retry", RetryPolicy(max_attempts=1)),
        created_at=now,
        updated_at=now,
        **extra,
    )
    return jobs.create(job)


def invoke(runner: RunnerService, event: dict[str, Any], remaining_ms: int = 900_000) -> dict[str, Any]:
    return handler.handle(event, FakeLambdaContext(remaining_ms), runner)  # type: ignore[arg-type]


def run_items(client: Any) -> list[dict[str, Any]]:
    return [i for i in client.scan(TableName="RunsTable")["Items"] if i["entity"]["S"] == "run"]


class CountingParams(BaseModel):
    sleep: float = 0.05
    fail: bool = False


@contextmanager
def counting_job_type() -> Iterator[list[int]]:
    """A job type named `counting` that records each time its body runs (and may fail)."""
    calls: list[int] = []
    lock = threading.Lock()

    def body(params: CountingParams, ctx: jobtypes.JobContext) -> dict[str, Any]:
        with lock:
            calls.append(1)
        time.sleep(params.sleep)
        if params.fail:
            raise jobtypes.JobFailure("counted, then failed", error_type="CountedFailure")
        return {"message": "counted"}

    jobtypes.register(jobtypes.JobType("counting", CountingParams, body))
    try:
        yield calls
    finally:
        jobtypes._REGISTRY.pop("counting", None)
