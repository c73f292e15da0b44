"""Every sample event in events/job_runner parses into the right invocation (or a clear error)."""

from __future__ import annotations

import pytest
from job_runner.events import (
    ManualInvocation,
    RetryInvocation,
    RuleInvocation,
    ScheduleInvocation,
    parse_invocation,
)
from jobtracker_common.errors import ValidationError

from tests.conftest import EVENTS, load_event


def test_scheduler_payload() -> None:
    inv = parse_invocation(load_event("job_runner/schedule.json"))
    assert isinstance(inv, ScheduleInvocation)
    assert inv.job_id == "01JDEMOJOB0000000000000000"
    assert inv.delivery_attempt == 1
    # the dedupe key ignores the scheduler's delivery attempt: a redelivery is the same run
    again = parse_invocation({**load_event("job_runner/schedule.json"), "delivery_attempt": "3"})
    assert isinstance(again, ScheduleInvocation) and again.dedupe_key == inv.dedupe_key


def test_classic_rule_event_names_its_job_in_the_rule() -> None:
    inv = parse_invocation(load_event("job_runner/rule.json"))
    assert isinstance(inv, RuleInvocation)
    assert inv.job_id == "01JDEMOJOB0000000000000000"
    assert inv.rule_arn.endswith("rule/jobtracker-job-01JDEMOJOB0000000000000000")


def test_manual_and_retry_payloads() -> None:
    manual = parse_invocation(load_event("job_runner/manual.json"))
    assert isinstance(manual, ManualInvocation) and manual.dedupe_key.endswith("3f1c2a9e-manual-run-1")
    assert manual.run_id is None  # the runner creates the run
    queued = parse_invocation(load_event("job_runner/manual_queued.json"))
    assert isinstance(queued, ManualInvocation) and queued.run_id == "01JDEMORUN0000000000000001"
    retry = parse_invocation(load_event("job_runner/retry.json"))
    assert isinstance(retry, RetryInvocation) and retry.attempt == 2


@pytest.mark.parametrize(
    "name", sorted(p.name for p in (EVENTS / "job_runner").glob("*.json") if p.name != "malformed.json")
)
def test_every_sample_event_is_a_valid_invocation(name: str) -> None:
    # Given a sample event meant for `sam local invoke -e` / `jobtracker local invoke --event`
    # When the runner parses it
    invocation = parse_invocation(load_event(f"job_runner/{name}"))
    # Then it is accepted as one of the four shapes
    assert isinstance(invocation, ScheduleInvocation | RuleInvocation | ManualInvocation | RetryInvocation)


@pytest.mark.parametrize(
    ("event", "message"),
    [
        (load_event("job_runner/malformed.json"), "job_id: Field required"),
        ({"kind": "teleport"}, "does not match any of the expected tags"),
        ({"hello": "world"}, "has no 'kind'"),
        ([], "must be a JSON object"),
        ({"detail-type": "Scheduled Event", "source": "aws.events", "resources": []}, "no rule ARN"),
        (
            {
                "detail-type": "Scheduled Event",
                "source": "aws.events",
                "time": "2026-01-01T00:00:00Z",
                "resources": ["arn:aws:events:us-east-1:1:rule/nightly"],
            },
            "does not name a job",
        ),
        ({"kind": "retry", "run_id": "r", "attempt": 1}, "attempt"),
    ],
)
def test_malformed_events_get_clear_errors(event: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        parse_invocation(event)
