"""The sweeper gives a pending run up only after AWS has stopped delivering its invocation.

A queued run waits for the API's asynchronous invoke of the runner; a retrying run waits for its
one-time schedule (EventBridge Scheduler, then the runner's asynchronous queue). If Lambda or
Scheduler may deliver longer than the sweeper waits, a late delivery finds the run `timed_out`
and is refused as stale: the work is lost and the owner is told a wrong reason. The windows are
one number, `lifecycle.DELIVERY_WINDOW`; these gates fail when the template drifts from it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from jobtracker_common.lifecycle import DELIVERY_WINDOW, LEASE_MARGIN, QUEUE_LEASE, RETRY_LEASE

pytestmark = pytest.mark.infra


def runner_event_max_age(doc: dict[str, Any]) -> timedelta:
    config = doc["Resources"]["JobRunnerFunction"]["Properties"]["EventInvokeConfig"]
    return timedelta(seconds=int(config["MaximumEventAgeInSeconds"]))


def test_runner_async_event_age_is_the_delivery_window(template_doc: dict[str, Any]) -> None:
    # Given the runner's asynchronous invoke config (Scheduler and the API invoke it with Event)
    # Then Lambda keeps an event exactly as long as the code assumes
    assert runner_event_max_age(template_doc) == DELIVERY_WINDOW


def test_pending_leases_outlast_every_delivery_aws_may_still_make(template_doc: dict[str, Any]) -> None:
    lambda_window = runner_event_max_age(template_doc)
    # Scheduler's side is pinned to the same constant by tests/unit/test_schedules.py.
    scheduler_window = DELIVERY_WINDOW

    # A queued run is invoked by the API directly: only Lambda's queue stands between; a retry is
    # first delivered by Scheduler (retrying its Invoke), then queued by Lambda. Each lease is
    # exactly that long: longer would only delay the report of a run nothing can start any more.
    assert lambda_window + LEASE_MARGIN == QUEUE_LEASE
    assert scheduler_window + lambda_window + LEASE_MARGIN == RETRY_LEASE
