"""The run state machine and retry policy: pure rules, no AWS."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from jobtracker_common.lifecycle import failure_changes, success_changes
from jobtracker_common.models import (
    ALLOWED_TRANSITIONS,
    TERMINAL_STATUSES,
    ErrorInfo,
    Job,
    RetryPolicy,
    Run,
    RunStatus,
    Trigger,
    can_transition,
)
from pydantic import ValidationError

NOW = datetime(2026, 11, 29, 4, 0, tzinfo=UTC)


def make_run(**overrides: object) -> Run:
    data: dict[str, object] = {
        "run_id": "01RUN",
        "job_id": "01JOB",
        "job_name": "backup",
        "job_type": "demo",
        "owner_id": "u1",
        "trigger": Trigger.SCHEDULE,
        "status": RunStatus.RUNNING,
        "queued_at": NOW,
        "started_at": NOW,
    }
    data.update(overrides)
    return Run.model_validate(data)


@pytest.mark.parametrize("terminal", sorted(TERMINAL_STATUSES))
def test_terminal_states_have_no_way_out(terminal: RunStatus) -> None:
    # Given a terminal status / Then no transition leaves it
    assert all(not can_transition(terminal, target) for target in RunStatus)
    assert terminal.is_terminal and not terminal.is_active


def test_every_active_state_can_end() -> None:
    for status in (RunStatus.QUEUED, RunStatus.RUNNING, RunStatus.RETRYING):
        assert ALLOWED_TRANSITIONS[status] & TERMINAL_STATUSES


def test_backoff_grows_by_rate_and_is_capped() -> None:
    policy = RetryPolicy(backoff_seconds=10, backoff_rate=3, max_backoff_seconds=60, jitter=False)
    assert [policy.delay_after(n, "s").total_seconds() for n in (1, 2, 3, 4)] == [10, 30, 60, 60]


def test_jitter_is_deterministic_and_within_half_to_full_delay() -> None:
    policy = RetryPolicy(backoff_seconds=100, jitter=True)
    delays = {policy.delay_after(1, f"run{i}#1") for i in range(50)}
    assert all(timedelta(seconds=50) <= d <= timedelta(seconds=100) for d in delays)
    assert len(delays) > 10  # spread, not one value
    assert policy.delay_after(1, "same") == policy.delay_after(1, "same")  # replay-safe


def test_failed_attempt_with_attempts_left_becomes_retrying() -> None:
    run = make_run(attempt=1, retry=RetryPolicy(max_attempts=3, backoff_seconds=5, jitter=False))
    status, changes = failure_changes(run, NOW, ErrorInfo(type="X", message="boom"), timed_out=False)
    assert status is RunStatus.RETRYING
    assert changes["next_attempt_at"] == NOW + timedelta(seconds=5)
    assert changes["lease_until"] > changes["next_attempt_at"]


def test_last_attempt_is_final_failed_or_timed_out() -> None:
    run = make_run(attempt=3, retry=RetryPolicy(max_attempts=3))
    error = ErrorInfo(type="X", message="boom")
    assert failure_changes(run, NOW, error, timed_out=False)[0] is RunStatus.FAILED
    assert failure_changes(run, NOW, error, timed_out=True)[0] is RunStatus.TIMED_OUT


def test_success_records_duration() -> None:
    run = make_run(started_at=NOW - timedelta(seconds=2, milliseconds=500))
    assert success_changes(run, NOW, {"message": "ok"})["duration_ms"] == 2500


def test_job_rejects_unknown_fields_and_bad_timezone() -> None:
    base = {
        "job_id": "j",
        "owner_id": "u",
        "name": "n",
        "job_type": "demo",
        "created_at": NOW,
        "updated_at": NOW,
    }
    Job.model_validate(base)
    with pytest.raises(ValidationError, match="extra"):
        Job.model_validate({**base, "surprise": 1})
    with pytest.raises(ValidationError, match="timezone"):
        Job.model_validate({**base, "timezone": "Mars/Olympus"})


def test_empty_list_and_dict_defaults_are_never_shared_between_instances() -> None:
    # Models write empty defaults as Field(default=[]/{}) (cold start): pydantic must copy them.
    job_fields = {"job_id": "j", "owner_id": "u1", "name": "n", "job_type": "demo"}
    stamps = {"created_at": NOW, "updated_at": NOW}
    jobs = [Job.model_validate({**job_fields, **stamps}), Job(**job_fields, **stamps), Job.model_construct()]
    runs = [make_run(), make_run(), Run.model_construct()]
    # When the defaults of one instance are mutated
    jobs[0].params["x"] = 1
    jobs[0].subscribers.append("u2")
    runs[0].subscribers.append("u2")
    # Then no other instance, and no later one, sees it
    assert [j.params for j in jobs[1:]] == [{}, {}] and [j.subscribers for j in jobs[1:]] == [[], []]
    assert [r.subscribers for r in runs[1:]] == [[], []]
    later = Job(**job_fields, **stamps)
    assert (later.params, later.subscribers, make_run().subscribers) == ({}, [], [])
