"""Statistics cost: a month of statistics with 1,000 and with 100,000 recorded runs.

The buckets are written through the tracker's own aggregation code (`statistics.aggregate`
+ `StatsRepository.put_aggregates`, the backfill path), which folds the same per-transition
deltas the stream consumer applies one by one; 100,000 transactional stream deliveries on moto
would take far longer and test nothing more here. The query is the API's: `query_statistics`
with `time_period=month`. Beside it, the seed's approach on the same runs: read every run of
the window (a by-day index query per day) and count in memory.

What is timed, and why that way, is in `measure`'s docstring; in short: items read are counted
on the live call, and the product-side time is `query_statistics` replayed on the answer the
live call returned.
"""

from __future__ import annotations

import gc
import json
import pickle
import subprocess
import sys
import tempfile
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


class _Replay:
    """A DynamoDB client that answers Query with one recorded answer (the parsed response the
    real client returned), so `query_statistics` can be timed many times on exactly what
    DynamoDB gave it, with neither moto nor botocore in the loop."""

    def __init__(self, response: dict[str, Any]) -> None:
        self._response = response

    def query(self, **_: Any) -> dict[str, Any]:
        return self._response


#: `query_statistics` replayed in a fresh interpreter on the recorded answers (argv[1], a pickle
#: of {label: (answer, query)}, now, replays): no moto heap around the answers, whose objects
#: lie where a Lambda's botocore would put them. Prints {label: median seconds}.
FRESH_REPLAY = """
import gc, json, pickle, statistics, sys, time
from jobtracker_common.repositories.stats import StatsRepository
from jobtracker_common.statistics_query import query_statistics
class Replay:
    def __init__(self, response):
        self.response = response
    def query(self, **_):
        return self.response
with open(sys.argv[1], "rb") as handle:
    answers, now, replays = pickle.load(handle)
repos = {label: (StatsRepository(Replay(a), "StatsTable"), query) for label, (a, query) in answers.items()}
gc.collect()
gc.freeze()
times = {label: [] for label in repos}
for _ in range(replays):
    for label, (repo, query) in repos.items():
        started = time.perf_counter()
        query_statistics(repo, query, now=now)
        times[label].append(time.perf_counter() - started)
print(json.dumps({label: statistics.median(values) for label, values in times.items()}))
"""


def fresh_replay(answers: dict[str, tuple[dict[str, Any], Any]], now: Any, replays: int) -> dict[str, float]:
    """Median seconds of `query_statistics` per label, replayed in a fresh interpreter."""
    with tempfile.NamedTemporaryFile(suffix=".pickle") as recorded:
        pickle.dump((answers, now, replays), recorded)
        recorded.flush()
        done = subprocess.run(
            [sys.executable, "-c", FRESH_REPLAY, recorded.name],
            capture_output=True,
            text=True,
            timeout=600,
            check=True,
        )
    result: dict[str, float] = json.loads(done.stdout.splitlines()[-1])
    return result


class _QueryTimings:
    """Per Query call on a client: botocore's parsing of the answer (before-parse to
    response-received: client-side work in the Lambda that grows with the answer's size) and
    the parsed answer itself."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.parse_seconds: list[float] = []
        self.last_response: dict[str, Any] | None = None
        self._started = 0.0
        self._hooks = [
            ("before-parse.dynamodb.Query", self._before_parse),
            ("response-received.dynamodb.Query", self._received),
            ("after-call.dynamodb.Query", self._after_call),
        ]
        for name, hook in self._hooks:
            client.meta.events.register(name, hook)

    def detach(self) -> None:
        for name, hook in self._hooks:
            self.client.meta.events.unregister(name, hook)

    def _before_parse(self, **_: Any) -> None:
        self._started = time.perf_counter()

    def _received(self, **_: Any) -> None:
        self.parse_seconds.append(time.perf_counter() - self._started)

    def _after_call(self, parsed: dict[str, Any], **_: Any) -> None:
        self.last_response = parsed


def measure(history: int = 100_000, repeats: int = 9, replays: int = 101) -> list[Row]:
    """Both sizes live in the same tables as two owners, and the owner-scoped month query is
    run for each: moto's Query walks the whole table whatever the key (DynamoDB does not), so
    sharing the tables gives both sides the same moto overhead.

    The product side (the target) is `query_statistics`' own work: timed `replays` times per
    size, interleaved, on the very answer DynamoDB (moto) returned through the real client. Timed
    around a live moto call instead, the few milliseconds of product work sit next to seconds
    of moto walking ~10,000 items, and what lands in them is mostly moto's aftermath (collecting
    its garbage, cold caches): that figure is kept as a cross-check, not the target. The tables
    the bench built are frozen out of the garbage collector before timing: a Lambda's heap
    does not hold 10,000 moto items, and a full collection that starts inside the query would
    otherwise charge scanning them to the product."""
    needed = "jobtracker_common.repositories.stats"
    if not module_exists(needed) or not module_exists("jobtracker_common.statistics"):
        return [not_measured("statistics cost", "equal reads", f"{needed} does not exist yet")]
    from jobtracker_common.ids import new_id
    from jobtracker_common.repositories.stats import StatsRepository
    from jobtracker_common.statistics_query import StatisticsQuery, query_statistics

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
        answers: dict[str, dict[str, Any]] = {}
        times: dict[str, list[float]] = {label: [] for label in sizes}
        around_moto: dict[str, list[float]] = {label: [] for label in sizes}
        parsing: dict[str, list[float]] = {label: [] for label in sizes}
        gc.collect()
        gc.freeze()
        timings = _QueryTimings(client)
        try:
            for _ in range(repeats):  # interleaved: load drift hits both sizes alike
                for label in sizes:
                    with counting(client) as calls:
                        started = time.perf_counter()
                        result = query_statistics(repo, queries[label], now=now)
                        elapsed = time.perf_counter() - started
                    times[label].append(elapsed)
                    around_moto[label].append(elapsed - calls.call_seconds)
                    parsing[label].append(timings.parse_seconds[-1])
                    reads[label] = calls.items_read
                    totals[label] = result.totals.total
                    assert timings.last_response is not None
                    answers[label] = timings.last_response
            own: dict[str, list[float]] = {label: [] for label in sizes}
            replayed = {label: StatsRepository(_Replay(answers[label]), "StatsTable") for label in sizes}  # type: ignore[arg-type]
            for _ in range(replays):
                for label in sizes:
                    started = time.perf_counter()
                    result = query_statistics(replayed[label], queries[label], now=now)
                    own[label].append(time.perf_counter() - started)
                    assert result.totals.total == totals[label]
        finally:
            timings.detach()
            gc.unfreeze()
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
        values = {label: sum(len(item) for item in answers[label]["Items"]) for label in sizes}
        first_run_id = new_id(datetime.fromisoformat(labels[0]).replace(tzinfo=UTC))[:10] + "0" * 16
        started = time.perf_counter()
        seed_read, counts = _seed_way(client, owners["small"], first_run_id)
        seed_time = time.perf_counter() - started
        seed_complete = sum(counts.values()) == SMALL

    fresh = fresh_replay({label: (answers[label], queries[label]) for label in sizes}, now, replays)
    small_t, large_t = median(times["small"]), median(times["large"])
    small_own, large_own = median(own["small"]), median(own["large"])
    ratio = large_own / small_own
    small_moto, large_moto = median(around_moto["small"]), median(around_moto["large"])
    small_parse, large_parse = median(parsing["small"]), median(parsing["large"])
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
            f"median of {replays}, interleaved: {large_own * 1000:.1f} ms vs {small_own * 1000:.1f} ms in "
            "query_statistics on the answer DynamoDB (moto) returned; same 120 items, "
            f"{values['large']:,} vs {values['small']:,} attribute values, "
            f"{read_bytes['large'] / 1024:.0f} KB vs {read_bytes['small'] / 1024:.0f} KB "
            "(histograms fill up, to a fixed number of bins)",
        ),
        Row(
            "statistics: product side replayed in a fresh process (cross-check)",
            round(fresh["large"] / fresh["small"], 2),
            "x",
            "informational",
            None,
            f"median of {replays}, interleaved: {fresh['large'] * 1000:.1f} ms vs "
            f"{fresh['small'] * 1000:.1f} ms; the same answers and code as the row above, in an "
            "interpreter that holds no moto tables (as a Lambda holds none), so the answers' "
            "objects are not scattered among moto's",
        ),
        Row(
            "statistics: product side timed around the live moto call (cross-check)",
            round(large_moto / small_moto, 2),
            "x",
            "informational",
            None,
            f"median of {repeats}: {large_moto * 1000:.1f} ms vs {small_moto * 1000:.1f} ms = time in "
            "query_statistics minus the DynamoDB call; next to seconds of moto per call, mostly moto's "
            "aftermath (garbage collection, cold caches), so noisy",
        ),
        Row(
            "statistics: botocore's parsing of the answer (client side, not product code)",
            round(large_parse / small_parse, 2),
            "x",
            "informational",
            None,
            f"median of {repeats}: {large_parse * 1000:.1f} ms vs {small_parse * 1000:.1f} ms; "
            "grows with the answer's attribute values like DynamoDB's own share (bytes read)",
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
