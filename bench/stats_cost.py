"""Statistics cost: a month of statistics with 1,000 and with 100,000 recorded runs.

The buckets are written through the tracker's own aggregation code (`statistics.aggregate`
+ `StatsRepository.put_aggregates`, the backfill path), which folds the same per-transition
deltas the stream consumer applies one by one; 100,000 transactional stream deliveries on moto
would take far longer and test nothing more here. The query is the API's: `query_statistics`
with `time_period=month`. Beside it, the seed's approach on the same runs: read every run of
the window (a by-day index query per day) and count in memory.
"""

from __future__ import annotations

import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

from bench.common import (
    Row,
    counting,
    isolated_aws,
    item_size,
    median,
    module_exists,
    new_client,
    not_measured,
    seed_items,
    utcnow,
)
from bench.runner_costs import fill_history

SMALL = 1_000
TARGET_RATIO = 1.2
STATUSES = ("completed", "completed", "completed", "failed", "timed_out", "completed", "canceled")


def _deltas(count: int, now: Any, owner: str) -> Any:
    from jobtracker_common.models import RunStatus
    from jobtracker_common.statistics import StatsDelta

    for i in range(count):
        status = RunStatus(STATUSES[i % len(STATUSES)])
        yield StatsDelta(
            run_id=f"RUN{i:010d}",
            attempt=1,
            status=status,
            job_id=f"{owner}-job-{i % 5}",
            job_type=("demo", "http_check", "backup")[i % 3],
            owner_id=owner,
            at=now - timedelta(days=i % 29, minutes=i % 1440),
            duration_ms=200 + (i * 37) % 60_000,
        )


class _Collector:
    """Stands in for the DynamoDB client under `put_aggregates`: keeps the items it would write."""

    def __init__(self) -> None:
        self.items: list[dict[str, Any]] = []

    def batch_write_item(self, RequestItems: dict[str, Any]) -> dict[str, Any]:
        for requests in RequestItems.values():
            self.items.extend(r["PutRequest"]["Item"] for r in requests)
        return {}


def write_buckets(count: int, now: Any, owner: str) -> int:
    """Bucket items for `count` runs, built by the tracker's aggregation code and item format
    (`aggregate` + `StatsRepository.put_aggregates`), then seeded into moto directly (its
    BatchWriteItem validates ~5 ms per item; a month at 100,000 runs is ~100,000 hourly job buckets)."""
    from jobtracker_common.repositories.stats import StatsRepository
    from jobtracker_common.statistics import aggregate

    collector = _Collector()
    StatsRepository(collector, "StatsTable").put_aggregates(  # type: ignore[arg-type]
        list(aggregate(_deltas(count, now, owner)).values())
    )
    return seed_items("StatsTable", {}, iter(collector.items))


def _seed_way(client: Any, owner: str, first_run_id: str) -> tuple[int, Counter[str]]:
    """What the seed did: every run of the owner's window, read and counted in memory."""
    read = 0
    counts: Counter[str] = Counter()
    kwargs: dict[str, Any] = {
        "TableName": "RunsTable",
        "IndexName": "by-owner",
        "KeyConditionExpression": "owner_id = :o AND run_id >= :from",
        "ExpressionAttributeValues": {":o": {"S": owner}, ":from": {"S": first_run_id}},
    }
    while True:
        page = client.query(**kwargs)
        read += page["ScannedCount"]
        counts.update(item["status"]["S"] for item in page["Items"])
        if "LastEvaluatedKey" not in page:
            return read, counts
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def measure(history: int = 100_000, repeats: int = 9) -> list[Row]:
    """Both sizes live in the same tables as two owners, and the owner-scoped month query is
    timed for each: moto's Query walks the whole table whatever the key (DynamoDB does not),
    so sharing the tables gives both sides the same moto overhead, and what differs is only
    the product's own work."""
    needed = "jobtracker_common.repositories.stats"
    if not module_exists(needed) or not module_exists("jobtracker_common.statistics"):
        return [not_measured("statistics cost", "equal reads", f"{needed} does not exist yet")]
    from jobtracker_common.ids import new_id
    from jobtracker_common.repositories.stats import StatsRepository
    from jobtracker_common.statistics import StatisticsQuery, query_statistics

    sizes = {"small": SMALL, "large": history}
    owners = {label: f"owner-{label}" for label in sizes}
    with isolated_aws():
        client = new_client("dynamodb")
        now = utcnow()
        build: dict[str, float] = {}
        buckets: dict[str, int] = {}
        for label, count in sizes.items():
            started = time.perf_counter()
            buckets[label] = write_buckets(count, now, owners[label])
            build[label] = time.perf_counter() - started
        # The seed's data (the runs themselves) at the small size only: moto pages a Query by
        # walking and sorting the whole table each page, so reading 100,000 runs back would take
        # an hour here; DynamoDB reads (and bills) every run it returns, so the large read is
        # the run count by rule.
        fill_history(client, SMALL, table="RunsTable", day_spread=29, owner=owners["small"])
        repo = StatsRepository(client, "StatsTable")
        queries = {label: StatisticsQuery(time_period="month", owner_id=owners[label]) for label in sizes}
        reads: dict[str, int] = {}
        totals: dict[str, int] = {}
        times: dict[str, list[float]] = {label: [] for label in sizes}
        own: dict[str, list[float]] = {label: [] for label in sizes}
        for _ in range(repeats):  # interleaved: load drift hits both sizes alike
            for label in sizes:
                with counting(client) as calls:
                    started = time.perf_counter()
                    result = query_statistics(repo, queries[label], now=now)
                    elapsed = time.perf_counter() - started
                times[label].append(elapsed)
                own[label].append(elapsed - calls.call_seconds)
                reads[label] = calls.items_read
                totals[label] = result.totals.total
        _, labels = queries["small"].window(now)
        read_bytes = {
            label: sum(
                item_size(item)
                for item in client.query(
                    TableName="StatsTable",
                    KeyConditionExpression="pk = :pk AND sk BETWEEN :a AND :b",
                    ExpressionAttributeValues={
                        ":pk": {"S": f"OWNER#{owners[label]}#D"},
                        ":a": {"S": labels[0]},
                        ":b": {"S": f"{labels[-1]}#~"},
                    },
                )["Items"]
            )
            for label in sizes
        }
        first_run_id = new_id(datetime.fromisoformat(labels[0]).replace(tzinfo=UTC))[:10] + "0" * 16
        started = time.perf_counter()
        seed_read, counts = _seed_way(client, owners["small"], first_run_id)
        seed_time = time.perf_counter() - started
        seed_complete = sum(counts.values()) == SMALL

    small_t, large_t = median(times["small"]), median(times["large"])
    small_own, large_own = median(own["small"]), median(own["large"])
    ratio = large_own / small_own
    exact = totals["small"] == SMALL and totals["large"] == history
    return [
        Row(
            f"statistics: items read for a month, {SMALL:,} vs {history:,} runs",
            f"{reads['small']} vs {reads['large']}",
            "items",
            "equal",
            reads["small"] == reads["large"] and exact,
            f"one Query per request; totals {totals['small']:,} / {totals['large']:,} runs "
            f"({'exact' if exact else 'NOT exact'}); {buckets['large']:,} bucket items at {history:,} runs, "
            f"built in {build['large']:.0f} s",
        ),
        Row(
            f"statistics: time ratio, month query at {history:,} vs {SMALL:,} runs (product side)",
            round(ratio, 2),
            "x",
            f"<= {TARGET_RATIO}x",
            ratio <= TARGET_RATIO,
            f"median of {repeats}: {large_own * 1000:.1f} ms vs {small_own * 1000:.1f} ms in "
            "query_statistics outside the DynamoDB call; DynamoDB side: same 120 items, "
            f"{read_bytes['large'] / 1024:.0f} KB vs {read_bytes['small'] / 1024:.0f} KB "
            "(histograms fill up, to a fixed number of bins)",
        ),
        Row(
            "statistics: time ratio including moto's answer",
            round(large_t / small_t, 2),
            "x",
            "informational",
            None,
            f"{large_t * 1000:.0f} ms vs {small_t * 1000:.0f} ms; moto walks the whole table per Query "
            "(both sizes share it), so this is mostly moto and machine noise",
        ),
        Row(
            f"statistics, seed's approach: items read for a month at {SMALL:,} / {history:,} runs",
            f"{seed_read:,} / {history:,}",
            "items",
            "informational",
            None,
            f"{seed_read / max(reads['small'], 1):.0f}x / {history / max(reads['large'], 1):,.0f}x "
            "the bucket read; the large figure by rule (every run returned is read), not replayed on moto; "
            f"counts {'complete' if seed_complete else 'INCOMPLETE'}",
        ),
        Row(
            f"statistics, seed's approach: time vs buckets at {SMALL:,} runs",
            round(seed_time / small_t, 1),
            "x",
            "informational",
            None,
            f"{seed_time * 1000:.0f} ms vs {small_t * 1000:.0f} ms, same moto; grows with the run count",
        ),
    ]
