"""Statistics math without AWS: histogram, percentiles, windows, what counts, transaction packing."""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jobtracker_common.dynamo import to_item
from jobtracker_common.models import ErrorInfo, Run, RunStatus, Trigger
from jobtracker_common.repositories.stats import MAX_TRANSACTION_ITEMS, StatsRepository
from jobtracker_common.statistics import (
    Counters,
    Granularity,
    StatsDelta,
    aggregate,
    bucket_keys,
    delta_for,
    histogram_index,
    histogram_lower,
    histogram_upper,
    percentile,
    percentiles,
)
from jobtracker_common.statistics_query import StatisticsQuery, summary_fields
from pydantic import ValidationError

NOW = datetime(2026, 3, 10, 12, 34, 56, tzinfo=UTC)


@given(st.integers(min_value=1, max_value=10**9))
def test_every_duration_falls_inside_its_histogram_bucket(duration_ms: int) -> None:
    index = histogram_index(duration_ms)
    assert histogram_lower(index) <= duration_ms < histogram_upper(index)


def test_histogram_buckets_are_at_most_19_percent_wide() -> None:
    for index in range(1, 120):
        assert histogram_upper(index) / histogram_lower(index) == pytest.approx(2**0.25)


def test_percentiles_land_within_one_bucket_of_the_exact_value() -> None:
    # Given 5,000 log-uniform durations folded into a histogram
    rng = random.Random(3)
    values = sorted(int(math.exp(rng.uniform(0, math.log(900_000)))) for _ in range(5_000))
    counters = Counters()
    for value in values:
        counters.add_delta(make_delta(duration_ms=value))

    # When p50/p95 are read back from the histogram
    summary = summary_fields(counters)["duration"]

    # Then each is within one bucket of the nearest-rank value
    for q, reported in ((0.5, summary.p50_ms), (0.95, summary.p95_ms)):
        exact = values[math.ceil(q * len(values)) - 1]
        assert reported is not None
        assert abs(histogram_index(round(reported)) - histogram_index(exact)) <= 1


def test_percentile_is_clamped_to_the_exact_extremes() -> None:
    assert percentile({10: 1}, 0.5, low=7, high=7) == 7
    assert percentile({}, 0.5, low=None, high=None) is None


def make_run(status: RunStatus, attempt: int = 1, **extra: object) -> Run:
    return Run.model_validate(
        {
            "run_id": "R1",
            "job_id": "J1",
            "job_name": "backup",
            "job_type": "demo",
            "owner_id": "alice",
            "trigger": Trigger.SCHEDULE,
            "status": status,
            "attempt": attempt,
            "queued_at": NOW,
            "started_at": NOW,
            **extra,
        }
    )


def make_delta(**changes: object) -> StatsDelta:
    fields: dict[str, object] = {
        "run_id": "R1",
        "attempt": 1,
        "status": RunStatus.COMPLETED,
        "job_id": "J1",
        "job_type": "demo",
        "owner_id": "alice",
        "at": NOW,
        "duration_ms": 10,
    }
    fields.update(changes)
    return StatsDelta(**fields)  # type: ignore[arg-type]


def test_only_entering_a_terminal_status_or_retrying_counts() -> None:
    running = make_run(RunStatus.RUNNING)
    done = make_run(RunStatus.COMPLETED, finished_at=NOW, duration_ms=1500)
    retrying = make_run(
        RunStatus.RETRYING,
        finished_at=NOW,
        duration_ms=800,
        error=ErrorInfo(type="x", message="y"),
        next_attempt_at=NOW + timedelta(seconds=30),
    )
    assert delta_for(None, running) is None
    assert delta_for(running, running) is None
    assert delta_for(done, done) is None  # progress-only change of a finished run
    counted = delta_for(running, done)
    assert counted is not None and counted.duration_ms == 1500 and counted.at == NOW
    retry = delta_for(running, retrying)
    assert retry is not None and retry.status is RunStatus.RETRYING and retry.duration_ms is None
    # A retry that fails again is a new transition (same status, next attempt)
    assert (
        delta_for(make_run(RunStatus.RUNNING, attempt=2), make_run(RunStatus.RETRYING, attempt=2)) is not None
    )


def test_one_transition_updates_hour_and_day_buckets_of_every_dimension() -> None:
    keys = bucket_keys(make_delta())
    assert len(keys) == 10
    assert {(k.pk, k.sk) for k in keys} >= {
        ("ALL#H", "2026-03-10T12#*"),
        ("ALL#D", "2026-03-10#TYPE#demo"),
        ("OWNER#alice#H", "2026-03-10T12#TYPE#demo"),
        ("JOB#J1#D", "2026-03-10#*"),
    }


def test_day_week_month_windows_and_explicit_ranges() -> None:
    granularity, labels = StatisticsQuery(time_period="day").window(NOW)
    assert granularity is Granularity.HOUR and len(labels) == 24 and labels[-1] == "2026-03-10T12"
    granularity, labels = StatisticsQuery(time_period="week").window(NOW)
    assert granularity is Granularity.DAY and labels == [f"2026-03-{d:02d}" for d in range(4, 11)]
    assert len(StatisticsQuery(time_period="month").window(NOW)[1]) == 30
    explicit = StatisticsQuery.model_validate({"from": "2026-03-01T10:30:00Z", "to": "2026-03-01T13:00:00Z"})
    assert explicit.window(NOW) == (Granularity.HOUR, ["2026-03-01T10", "2026-03-01T11", "2026-03-01T12"])
    long = StatisticsQuery.model_validate({"from": "2026-01-01T00:00:00Z", "to": "2026-02-01T00:00:00Z"})
    granularity, labels = long.window(NOW)
    assert granularity is Granularity.DAY and len(labels) == 31


@pytest.mark.parametrize(
    "fields",
    [
        {"from": "2026-03-01T00:00:00Z"},
        {"from": "2026-03-02T00:00:00Z", "to": "2026-03-01T00:00:00Z"},
        {"from": "2024-01-01T00:00:00Z", "to": "2026-01-01T00:00:00Z"},
        {"time_period": "day", "from": "2026-03-01T00:00:00Z", "to": "2026-03-02T00:00:00Z"},
        {"time_period": "year"},
        {"owner": "x"},
    ],
)
def test_invalid_queries_are_rejected(fields: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        StatisticsQuery.model_validate(fields)


def test_aggregate_matches_the_sum_of_single_transitions() -> None:
    deltas = [make_delta(run_id=f"R{i}", duration_ms=10 * (i + 1)) for i in range(5)]
    deltas.append(make_delta(run_id="R9", status=RunStatus.RETRYING, duration_ms=None))
    buckets = aggregate(deltas)
    overall = buckets[("ALL#H", "2026-03-10T12#*")].counters
    assert overall.counts[RunStatus.COMPLETED] == 5 and overall.retries == 1
    assert (overall.duration_min, overall.duration_max, overall.duration_sum) == (10, 50, 150)
    assert buckets[("JOB#J1#D", "2026-03-10#*")].owner_id == "alice"


def test_a_batch_is_packed_into_transactions_of_at_most_100_items() -> None:
    # Given 300 transitions spread over many jobs and hours
    deltas = [
        make_delta(run_id=f"R{i}", job_id=f"J{i % 40}", owner_id=f"o{i % 7}", at=NOW + timedelta(hours=i % 5))
        for i in range(300)
    ]
    repository = StatsRepository(None, "StatsTable")  # type: ignore[arg-type]

    # When they are chunked
    chunks = repository._chunks(list(range(300)), deltas)

    # Then every transition is in exactly one chunk and no transaction exceeds the limit
    assert sorted(i for chunk in chunks for i in chunk) == list(range(300))
    for chunk in chunks:
        keys = {(k.pk, k.sk) for i in chunk for k in bucket_keys(deltas[i])}
        assert len(chunk) + len(keys) <= MAX_TRANSACTION_ITEMS


def stored_item(counters: Counters) -> dict[str, Any]:
    """A bucket item as the low-level client returns it."""
    return to_item({"pk": "ALL#D", "sk": "2026-03-10#*", "expires_at": 1, **counters.to_attributes()})


@given(
    st.lists(
        st.tuples(st.sampled_from(list(RunStatus)), st.integers(min_value=0, max_value=10**8)),
        max_size=60,
    )
)
def test_a_bucket_item_reads_back_as_the_counters_it_was_written_from(
    transitions: list[tuple[RunStatus, int]],
) -> None:
    # Given counters folded from any terminal/retrying transitions and durations
    written = Counters()
    for status, duration in transitions:
        if status.is_terminal or status is RunStatus.RETRYING:
            written.add_delta(make_delta(status=status, duration_ms=duration))

    # When the stored item is read back (fast path: bins fetched between the min's and max's)
    read = Counters.from_item(stored_item(written))

    # Then every number is the same
    assert read.to_attributes() == written.to_attributes()
    assert summary_fields(read) == summary_fields(written)


def test_an_item_whose_bins_do_not_add_up_is_read_attribute_by_attribute() -> None:
    # Given items a hand-written backfill could hold: bins outside [min, max], bins without min/max
    outside = {**to_item({"d_count": 3, "d_sum": 60, "d_min": 10, "d_max": 10}), "h014": {"N": "2"}}
    outside["h001"] = {"N": "1"}
    no_extremes = to_item({"c_completed": 2, "d_count": 2, "d_sum": 40, "h018": 2})

    # When they are read
    first, second = Counters.from_item(outside), Counters.from_item(no_extremes)

    # Then no bin is lost
    assert first.to_attributes()["h001"] == 1 and first.to_attributes()["h014"] == 2
    assert second.to_attributes()["h018"] == 2 and second.counts[RunStatus.COMPLETED] == 2


def test_several_percentiles_in_one_pass_match_one_at_a_time() -> None:
    histogram = {0: 3, 5: 10, 9: 1, 40: 6}
    bins = [histogram.get(i, 0) for i in range(41)]
    assert percentiles(bins, (0.05, 0.5, 0.95, 0.99), low=0.5, high=900_000) == [
        percentile(histogram, q, low=0.5, high=900_000) for q in (0.05, 0.5, 0.95, 0.99)
    ]
    assert percentiles([0, 0], (0.5,), low=None, high=None) == [None]


@pytest.mark.parametrize("extreme", ["d_min", "d_max"])
def test_an_item_with_only_one_extreme_keeps_it(extreme: str) -> None:
    # Given an item holding one of min/max (e.g. a bucket re-created after its TTL expiry by a
    # tracker whose cached bounds made it write only the new minimum)
    item = to_item({"c_completed": 2, "d_count": 2, "d_sum": 30, extreme: 10, "h014": 1, "h001": 1})

    # When it is read
    read = Counters.from_item(item)

    # Then that extreme is reported, and no bin is lost
    assert read.to_attributes()[extreme] == 10
    assert (read.histogram[1], read.histogram[14]) == (1, 1)
