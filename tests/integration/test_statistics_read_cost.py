"""The statistics query reads as many items for 10,000 runs as for 100: cost follows the window."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from jobtracker_common.models import RunStatus
from jobtracker_common.repositories.stats import StatsRepository
from jobtracker_common.statistics import StatsDelta, aggregate
from jobtracker_common.statistics_query import StatisticsQuery, query_statistics
from jobtracker_local.template import load_template

NOW = datetime(2026, 3, 10, 23, 40, tzinfo=UTC)
FIRST_HOUR = datetime(2026, 3, 10, 0, 0, tzinfo=UTC)
STATUSES = [
    RunStatus.COMPLETED,
    RunStatus.COMPLETED,
    RunStatus.FAILED,
    RunStatus.TIMED_OUT,
    RunStatus.RETRYING,
]
QUERIES = [
    StatisticsQuery(time_period="day"),
    StatisticsQuery(time_period="week"),
    StatisticsQuery(time_period="month", job_type="demo"),
    StatisticsQuery(time_period="day", owner_id="owner-1"),
    StatisticsQuery(time_period="week", owner_id="owner-0", job_type="http_check"),
    StatisticsQuery(time_period="day", owner_id="owner-1", job_id="job-1-0"),
    StatisticsQuery(**{"from": FIRST_HOUR, "to": FIRST_HOUR + timedelta(hours=12)}),
]


def deltas(count: int) -> list[StatsDelta]:
    """Runs spread so that even 100 of them touch every (hour, owner, job type) bucket."""
    out = []
    for i in range(count):
        hour, job_type, owner = i % 24, (i // 24) % 2, (i // 48) % 2
        out.append(
            StatsDelta(
                run_id=f"R{i:06d}",
                attempt=1,
                status=STATUSES[i % len(STATUSES)],
                job_id=f"job-{owner}-{job_type}",
                job_type=["http_check", "demo"][job_type],
                owner_id=f"owner-{owner}",
                at=FIRST_HOUR + timedelta(hours=hour, minutes=i % 60),
                duration_ms=None if STATUSES[i % len(STATUSES)] is RunStatus.RETRYING else 50 + i % 5000,
            )
        )
    return out


@pytest.fixture
def items_read(aws: Any) -> Iterator[list[int]]:
    """Items DynamoDB read (ScannedCount) per Query call on this client."""
    counts: list[int] = []

    def count(parsed: dict[str, Any], **_: Any) -> None:
        counts.append(int(parsed.get("ScannedCount", 0)))

    aws.meta.events.register("after-call.dynamodb.Query", count)
    yield counts
    aws.meta.events.unregister("after-call.dynamodb.Query", count)


def read_costs(stats: StatsRepository, items_read: list[int]) -> tuple[list[int], list[int]]:
    costs, totals = [], []
    for query in QUERIES:
        items_read.clear()
        result = query_statistics(stats, query, now=NOW)
        costs.append(sum(items_read))
        totals.append(result.totals.total + result.totals.retries)
    return costs, totals


def test_read_cost_is_the_same_for_100_and_10000_runs(aws: Any, items_read: list[int]) -> None:
    # Given the statistics of 100 runs in one stats table and of 10,000 runs in another
    aws.create_table(TableName="StatsTableLarge", **load_template().table_definitions()["StatsTable"])
    small = StatsRepository(aws, "StatsTable")
    small.put_aggregates(list(aggregate(deltas(100)).values()))
    large = StatsRepository(aws, "StatsTableLarge")
    large.put_aggregates(list(aggregate(deltas(10_000)).values()))

    # When the same queries run against both
    small_costs, small_totals = read_costs(small, items_read)
    large_costs, large_totals = read_costs(large, items_read)

    # Then every query read exactly as many items, while it counted ~100x the runs
    assert large_costs == small_costs
    assert all(big > 50 * little > 0 for big, little in zip(large_totals, small_totals, strict=True))
    # ... and the cost is the window times the dimensions: 24 hours x (overall + 2 job types)
    assert small_costs[0] == 24 * 3
