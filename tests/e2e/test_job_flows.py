"""What a user sees, end to end over HTTP: runs, retries, statistics and emails.

Each test signs in as a fresh user, so tests share the stack but never each other's data.
"""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from typing import Any

import pytest

from tests.e2e.conftest import Session, Stack, eventually

pytestmark = pytest.mark.e2e

#: Long enough for several stream/outbox polls (0.1 s each) and the batching window (0.2 s).
SETTLE_SECONDS = 1.5


def create_job(user: Session, **changes: Any) -> str:
    body: dict[str, Any] = {
        "name": "e2e backup",
        "job_type": "demo",
        "params": {"duration_seconds": 0, "outcome": "succeed", "log_lines": 1},
        "retry": {"max_attempts": 1},
        "timeout_seconds": 60,
        "target": "e2e-switch",
    }
    body.update(changes)
    response = user.post("/jobs", json=body)
    assert response.status_code == 201, response.text
    return str(response.json()["job_id"])


def run_now(user: Session, job_id: str) -> str:
    response = user.post(f"/jobs/{job_id}/run")
    assert response.status_code == 202, response.text
    return str(response.json()["run_id"])


def finished(user: Session, run_id: str, timeout: float = 30.0) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        response = user.get(f"/job-logs/{run_id}")
        if response.status_code != 200:
            return None
        run: dict[str, Any] = response.json()
        return run if run["status"] in {"completed", "failed", "timed_out", "canceled"} else None

    return eventually(check, timeout=timeout)


def body_of(message: EmailMessage) -> str:
    part = message.get_body(preferencelist=("plain", "html"))
    assert part is not None
    return str(part.get_content())


def emails_about(stack: Stack, user: Session, run_id: str) -> list[EmailMessage]:
    return [m for m in stack.emails_to(user.email) if run_id in body_of(m)]


def the_only_email_about(stack: Stack, user: Session, run_id: str) -> EmailMessage:
    """Wait for the run's email, give the pipeline time to send a duplicate, expect none."""
    eventually(lambda: emails_about(stack, user, run_id), timeout=15)
    time.sleep(SETTLE_SECONDS)
    (email,) = emails_about(stack, user, run_id)
    return email


def completed_runs(user: Session) -> int:
    response = user.get("/job-logs/statistics", params={"time_period": "day"})
    assert response.status_code == 200, response.text
    return int(response.json()["totals"]["by_status"].get("completed", 0))


def times_by_attempt(
    entries: list[dict[str, Any]], text: str, category: str | None = None
) -> dict[int, datetime]:
    """When the log entry containing `text` was written, per attempt."""
    return {
        e["attempt"]: datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00"))
        for e in entries
        if text in e["message"] and category in (None, e["category"])
    }


def test_a_manual_run_is_active_then_finishes_counts_and_emails_once(stack, user):
    # Given a signed-in user with a job that takes a few seconds
    assert user.get("/users/me").status_code == 200
    job_id = create_job(user, params={"duration_seconds": 3, "outcome": "succeed", "log_lines": 3})
    before = completed_runs(user)

    # When the user runs it now
    run_id = run_now(user, job_id)

    # Then it shows up among the active runs while it runs
    def active() -> dict[str, Any] | None:
        items = user.get("/job-logs/active").json()["items"]
        return next((r for r in items if r["run_id"] == run_id), None)

    seen = eventually(active, timeout=15)
    assert seen["job_id"] == job_id
    assert seen["status"] in {"queued", "running"}
    # And it finishes, with its log entries
    run = finished(user, run_id)
    assert run["status"] == "completed"
    entries = user.get(f"/job-logs/{run_id}/entries").json()["items"]
    assert any("step 3/3" in e["message"] for e in entries)
    assert not [r for r in user.get("/job-logs/active").json()["items"] if r["run_id"] == run_id]
    # And the statistics count it
    eventually(lambda: completed_runs(user) == before + 1, timeout=15)
    # And exactly one email tells the owner
    email = the_only_email_about(stack, user, run_id)
    assert "Completed" in email["Subject"]


def test_a_failing_job_is_retried_with_backoff_then_fails_for_good(stack, user):
    # Given a job that always fails, allowed three attempts with a short, growing backoff
    assert user.get("/users/me").status_code == 200
    job_id = create_job(
        user,
        params={"duration_seconds": 0, "outcome": "fail", "log_lines": 1},
        retry={"max_attempts": 3, "backoff_seconds": 1, "backoff_rate": 2.0, "jitter": False},
    )

    run_id = run_now(user, job_id)
    run = finished(user, run_id, timeout=45)

    # Then the run failed for good on its third attempt
    assert run["status"] == "failed"
    assert run["attempt"] == 3
    entries = user.get(f"/job-logs/{run_id}/entries", params={"limit": 200}).json()["items"]
    starts = times_by_attempt(entries, "started", category="runner")
    ends = times_by_attempt(entries, "attempt failed")
    assert sorted(starts) == [1, 2, 3]
    # And each retry waited for its backoff (retry schedules have whole-second precision)
    assert (starts[2] - ends[1]).total_seconds() >= 0
    assert (starts[3] - ends[2]).total_seconds() >= 1.0
    # And one failure email was sent (retry emails are off by default)
    email = the_only_email_about(stack, user, run_id)
    assert "Failed" in email["Subject"]


def test_changed_preferences_change_what_is_sent(stack, user):
    # Given a user who turned completion emails off but keeps failure emails
    assert user.get("/users/me").status_code == 200
    response = user.patch("/users/me/notification-preferences", json={"email_on_job_completion": False})
    assert response.status_code == 200, response.text
    assert response.json()["email_on_job_completion"] is False
    ok_job = create_job(user)
    bad_job = create_job(user, params={"duration_seconds": 0, "outcome": "fail", "log_lines": 0})

    # When a run succeeds and then another fails
    quiet_run = run_now(user, ok_job)
    assert finished(user, quiet_run)["status"] == "completed"
    loud_run = run_now(user, bad_job)
    assert finished(user, loud_run)["status"] == "failed"

    # Then only the failure is emailed (the stream is delivered in order: once the later
    # failure's email exists, the earlier success has been decided)
    eventually(lambda: emails_about(stack, user, loud_run), timeout=15)
    assert emails_about(stack, user, quiet_run) == []

    # And turning completion emails back on sends the next success
    user.patch("/users/me/notification-preferences", json={"email_on_job_completion": True})
    next_run = run_now(user, ok_job)
    assert finished(user, next_run)["status"] == "completed"
    eventually(lambda: emails_about(stack, user, next_run), timeout=15)


def test_an_http_check_job_checks_the_gateway_itself(stack, user):
    job_id = create_job(
        user,
        job_type="http_check",
        params={"url": f"{stack.api_url}/health", "expected_status": 200, "body_contains": "ok"},
    )

    run = finished(user, run_now(user, job_id))

    assert run["status"] == "completed"
    assert run["result"]["status_code"] == 200


def test_a_job_scheduled_through_the_api_fires_on_time(stack, user):
    # Given a job whose one-time schedule is due in a few seconds
    due = (datetime.now(UTC) + timedelta(seconds=3)).replace(microsecond=0)
    job_id = create_job(user, schedule=f"at({due.strftime('%Y-%m-%dT%H:%M:%S')})", timezone="UTC")

    # Then the emulator fires it: a scheduled run for that time completes
    def scheduled_run() -> dict[str, Any] | None:
        items = user.get("/job-logs", params={"job_id": job_id}).json()["items"]
        return next((r for r in items if r["trigger"] == "schedule" and r["status"] == "completed"), None)

    run = eventually(scheduled_run, timeout=30)
    assert datetime.fromisoformat(run["scheduled_time"].replace("Z", "+00:00")) == due
    assert datetime.fromisoformat(run["started_at"].replace("Z", "+00:00")) >= due
