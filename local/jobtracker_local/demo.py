"""Demo data: a demo user and three jobs, created through the code paths the API uses.

Jobs are written with the layer's repositories and scheduled with its `ScheduleService`, so the
Scheduler schedules exist in the endpoint and the emulator fires them like any user's job.
Ids are fixed: starting the stack again against a kept endpoint does not duplicate anything.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from jobtracker_common import aws
from jobtracker_common.errors import ConflictError
from jobtracker_common.models import Job, RetryPolicy
from jobtracker_common.repositories import JobsRepository
from jobtracker_common.repositories.users import UsersRepository
from jobtracker_common.schedules import ScheduleService
from jobtracker_common.timeutil import utcnow

log = logging.getLogger("jobtracker.local")

DEMO_USER = "demo-user"
DEMO_EMAIL = "demo@example.com"
#: Job ids are ULID-shaped (what the API accepts); fixed, so a restart finds them again.
DEMO_SUCCEEDS = "01JDEM0J0B0000000000000001"
DEMO_FAILS = "01JDEM0J0B0000000000000002"
DEMO_HEALTH = "01JDEM0J0B0000000000000003"


@dataclass(frozen=True)
class DemoJob:
    job_id: str
    name: str
    job_type: str
    params: dict[str, Any]
    schedule: str
    retry: RetryPolicy


def demo_jobs(api_url: str) -> list[DemoJob]:
    return [
        DemoJob(
            DEMO_SUCCEEDS,
            "Demo: config backup (succeeds every minute)",
            "demo",
            {"duration_seconds": 2, "outcome": "succeed", "log_lines": 3},
            "rate(1 minute)",
            RetryPolicy(max_attempts=1),
        ),
        DemoJob(
            DEMO_FAILS,
            "Demo: flaky device (fails, retried with backoff)",
            "demo",
            {"duration_seconds": 1, "outcome": "fail", "log_lines": 2},
            "rate(5 minutes)",
            RetryPolicy(max_attempts=3, backoff_seconds=10, backoff_rate=2.0, jitter=False),
        ),
        DemoJob(
            DEMO_HEALTH,
            "Demo: API health check",
            "http_check",
            {"url": f"{api_url}/health", "expected_status": 200, "timeout_seconds": 5},
            "rate(1 minute)",
            RetryPolicy(max_attempts=2, backoff_seconds=5, jitter=False),
        ),
    ]


def seed(env: dict[str, str], api_url: str) -> list[str]:
    """Create the demo user and jobs (idempotent); returns the ids of jobs created now."""
    ddb = aws.client("dynamodb")
    _seed_user(ddb, env)
    jobs = JobsRepository(ddb, env["JOBS_TABLE_NAME"])
    schedules = ScheduleService(
        aws.client("scheduler"),
        group_name=env["SCHEDULE_GROUP_NAME"],
        role_arn=env["SCHEDULER_ROLE_ARN"],
        target_arn=env["JOB_RUNNER_ARN"],
        dlq_arn=env.get("SCHEDULER_DLQ_ARN"),
    )
    created = []
    for demo in demo_jobs(api_url):
        now = utcnow()
        job = Job(
            job_id=demo.job_id,
            owner_id=DEMO_USER,
            name=demo.name,
            job_type=demo.job_type,
            params=demo.params,
            schedule=demo.schedule,
            timezone="UTC",
            timeout_seconds=60,
            retry=demo.retry,
            target="demo-lab",
            retention_days=7,
            created_at=now,
            updated_at=now,
        )
        try:
            jobs.create(job)
        except ConflictError:
            continue
        schedules.upsert_job_schedule(
            job_id=job.job_id, expression=demo.schedule, timezone=job.timezone, enabled=True
        )
        created.append(job.job_id)
    return created


def _seed_user(ddb: Any, env: dict[str, str]) -> None:
    UsersRepository(ddb, env["USERS_TABLE_NAME"]).get_or_create(DEMO_USER, email=DEMO_EMAIL)
