"""StatsRepository: min/max stay exact across processes with stale caches; owner scoping of jobs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from jobtracker_common.models import RunStatus
from jobtracker_common.repositories.stats import StatsRepository
from jobtracker_common.statistics import StatsDelta
from jobtracker_common.statistics_query import StatisticsQuery, query_statistics

from tests.support.moto_transactions import fast_transactions

NOW = datetime(2026, 3, 10, 12, 30, tzinfo=UTC)


def delta(run_id: str, duration_ms: int, owner: str = "alice", job_id: str = "job-a") -> StatsDelta:
    return StatsDelta(
        run_id=run_id,
        attempt=1,
        status=RunStatus.COMPLETED,
        job_id=job_id,
        job_type="demo",
        owner_id=owner,
        at=NOW,
        duration_ms=duration_ms,
    )


def test_min_and_max_stay_exact_when_two_processes_have_stale_bounds(
    aws: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given two tracker processes, each with its own cache of bucket bounds
    fast_transactions(monkeypatch)
    first, second = StatsRepository(aws, "StatsTable"), StatsRepository(aws, "StatsTable")

    # When they interleave: each writes while the other's cached bounds are out of date
    assert first.apply(delta("r1", 100))
    assert second.apply(delta("r2", 50))
    assert second.apply(delta("r3", 900))
    assert first.apply(delta("r4", 70))  # first still believes min=100, max=100
    assert first.apply(delta("r5", 500))
    assert not second.apply(delta("r1", 100))  # a redelivery

    # Then the buckets hold the true extremes and counts
    result = query_statistics(first, StatisticsQuery(time_period="day"), now=NOW)
    duration = result.totals.duration
    assert (duration.min_ms, duration.max_ms, duration.count) == (50, 900, 5)
    assert duration.avg_ms == pytest.approx((100 + 50 + 900 + 70 + 500) / 5)


def test_owner_never_sees_another_owners_job_statistics(aws: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    # Given runs of bob's job
    fast_transactions(monkeypatch)
    stats = StatsRepository(aws, "StatsTable")
    stats.apply_many(
        [delta("r1", 10, owner="bob", job_id="job-b"), delta("r2", 20, owner="bob", job_id="job-b")]
    )

    # When alice asks for that job, bob asks for it, and an admin does
    alice = query_statistics(stats, StatisticsQuery(owner_id="alice", job_id="job-b"), now=NOW)
    bob = query_statistics(stats, StatisticsQuery(owner_id="bob", job_id="job-b"), now=NOW)
    admin = query_statistics(stats, StatisticsQuery(job_id="job-b"), now=NOW)

    # Then only bob and the admin see its runs
    assert (alice.totals.total, bob.totals.total, admin.totals.total) == (0, 2, 2)
    assert alice.scope == "owner" and admin.scope == "global"
