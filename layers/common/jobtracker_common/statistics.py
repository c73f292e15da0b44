"""Run statistics: the aggregation math the tracker writes (the API's query and its models are in
`statistics_query`, so the tracker does not build them at every cold start).

Pre-aggregated buckets live in the Stats table (see `repositories/stats.py` for the key layout):
per hour and per day; per scope (`ALL`, `OWNER#<owner>`, `JOB#<job>`) and, inside the ALL and
OWNER scopes, per job type. Each bucket item holds counts by terminal status, retries, duration
count/sum/min/max and a log-scale duration histogram (HISTOGRAM_STEPS_PER_OCTAVE buckets per
doubling), so p50/p95 come out within one histogram bucket of the true value.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from enum import StrEnum
from functools import lru_cache
from itertools import accumulate, repeat
from operator import add, itemgetter
from typing import Any

from jobtracker_common.models import Run, RunStatus
from jobtracker_common.timeutil import as_utc

#: Histogram resolution: 4 buckets per doubling, i.e. each bucket is ~19% wide.
HISTOGRAM_STEPS_PER_OCTAVE = 4
#: Statuses a run can end in; each has its own counter.
COUNTED_STATUSES: tuple[RunStatus, ...] = (
    RunStatus.COMPLETED,
    RunStatus.FAILED,
    RunStatus.TIMED_OUT,
    RunStatus.CANCELED,
)
#: How long bucket items live (DynamoDB TTL); a window older than this reads as empty.
HOURLY_RETENTION = timedelta(days=93)
DAILY_RETENTION = timedelta(days=800)
#: Longest explicit window; keeps the read cost bounded (days x job types items).
MAX_WINDOW = timedelta(days=400)
#: Explicit windows up to this long get hourly buckets, longer ones daily buckets.
HOURLY_WINDOW_LIMIT = timedelta(hours=72)

ALL_SCOPE = "ALL"
OVERALL_DIM = "*"
TYPE_DIM_PREFIX = "TYPE#"


class Granularity(StrEnum):
    HOUR = "hour"
    DAY = "day"

    @property
    def code(self) -> str:
        return "H" if self is Granularity.HOUR else "D"

    @property
    def step(self) -> timedelta:
        return timedelta(hours=1) if self is Granularity.HOUR else timedelta(days=1)

    @property
    def retention(self) -> timedelta:
        return HOURLY_RETENTION if self is Granularity.HOUR else DAILY_RETENTION

    def floor(self, at: datetime) -> datetime:
        at = as_utc(at)
        if self is Granularity.HOUR:
            return at.replace(minute=0, second=0, microsecond=0)
        return at.replace(hour=0, minute=0, second=0, microsecond=0)

    def label(self, at: datetime) -> str:
        """Bucket label; fixed width, so labels sort like the instants they name."""
        return self.floor(at).strftime("%Y-%m-%dT%H" if self is Granularity.HOUR else "%Y-%m-%d")

    def start_of(self, label: str) -> datetime:
        fmt = "%Y-%m-%dT%H" if self is Granularity.HOUR else "%Y-%m-%d"
        return datetime.strptime(label, fmt).replace(tzinfo=UTC)


# ---- histogram ----------------------------------------------------------------------------
def histogram_index(duration_ms: int) -> int:
    """Bucket 0 holds durations below 1 ms; bucket i >= 1 holds [2^((i-1)/S), 2^(i/S)) ms."""
    if duration_ms < 1:
        return 0
    index = 1 + math.floor(math.log2(duration_ms) * HISTOGRAM_STEPS_PER_OCTAVE)
    # Guard float rounding at exact powers: the lower bound must not exceed the value.
    while index > 1 and histogram_lower(index) > duration_ms:
        index -= 1
    while histogram_lower(index + 1) <= duration_ms:
        index += 1
    return index


def histogram_lower(index: int) -> float:
    return 0.0 if index <= 0 else 2 ** ((index - 1) / HISTOGRAM_STEPS_PER_OCTAVE)


def histogram_upper(index: int) -> float:
    return 1.0 if index <= 0 else 2 ** (index / HISTOGRAM_STEPS_PER_OCTAVE)


def percentile(
    histogram: Mapping[int, int], q: float, *, low: float | None, high: float | None
) -> float | None:
    """The q-quantile (0..1) of the histogrammed durations (bin -> count): the geometric middle
    of the bucket holding that rank, clamped to the exact min/max."""
    bins = [0] * (max(histogram, default=-1) + 1)
    for index, count in histogram.items():
        bins[index] = count
    return percentiles(bins, (q,), low=low, high=high)[0]


def percentiles(
    bins: Sequence[int], qs: Sequence[float], *, low: float | None, high: float | None
) -> list[float | None]:
    """Several quantiles (as `percentile`) of a histogram held as counts by bin index."""
    running = list(accumulate(bins))
    total = running[-1] if running else 0
    out: list[float | None] = []
    for q in qs:
        if total == 0:
            out.append(None)
            continue
        index = bisect_left(running, max(1, math.ceil(q * total)))
        value = 0.0 if index == 0 else math.sqrt(histogram_lower(index) * histogram_upper(index))
        if low is not None:
            value = max(value, float(low))
        if high is not None:
            value = min(value, float(high))
        out.append(value)
    return out


# ---- what one run transition contributes ----------------------------------------------------
@dataclass(frozen=True)
class StatsDelta:
    """One counted run transition: entering a terminal status, or entering `retrying`."""

    run_id: str
    attempt: int
    status: RunStatus
    job_id: str
    job_type: str
    owner_id: str
    at: datetime
    duration_ms: int | None = None

    @property
    def counter(self) -> str:
        return counter_name(self.status)

    @property
    def counts_duration(self) -> bool:
        return self.status.is_terminal and self.duration_ms is not None


def counter_name(status: RunStatus) -> str:
    return f"c_{status.value}"


def histogram_attribute(index: int) -> str:
    return f"h{index:03d}"


def delta_for(old: Run | None, new: Run) -> StatsDelta | None:
    """What a run change counts for, or None: only entering a terminal status or `retrying`
    (a new status, or a new attempt) counts; progress updates and replays of the same state do not."""
    if not (new.status.is_terminal or new.status is RunStatus.RETRYING):
        return None
    if old is not None and old.status is new.status and old.attempt == new.attempt:
        return None
    at = new.finished_at or new.started_at or new.queued_at
    return StatsDelta(
        run_id=new.run_id,
        attempt=new.attempt,
        status=new.status,
        job_id=new.job_id,
        job_type=new.job_type,
        owner_id=new.owner_id,
        at=as_utc(at),
        duration_ms=new.duration_ms if new.status.is_terminal else None,
    )


@dataclass(frozen=True)
class BucketKey:
    """Where one bucket lives: partition (scope + granularity) and sort key (bucket + dimension)."""

    scope: str
    granularity: Granularity
    label: str
    dimension: str = OVERALL_DIM

    @property
    def pk(self) -> str:
        return f"{self.scope}#{self.granularity.code}"

    @property
    def sk(self) -> str:
        return f"{self.label}#{self.dimension}"

    @property
    def job_type(self) -> str | None:
        return (
            self.dimension.removeprefix(TYPE_DIM_PREFIX)
            if self.dimension.startswith(TYPE_DIM_PREFIX)
            else None
        )

    def expires_at(self) -> int:
        end = self.granularity.start_of(self.label) + self.granularity.step
        return int((end + self.granularity.retention).timestamp())


def owner_scope(owner_id: str) -> str:
    return f"OWNER#{owner_id}"


def job_scope(job_id: str) -> str:
    return f"JOB#{job_id}"


def bucket_keys(delta: StatsDelta) -> list[BucketKey]:
    """Every bucket one transition updates: 2 granularities x 5 (scope, dimension) pairs."""
    keys = []
    type_dim = f"{TYPE_DIM_PREFIX}{delta.job_type}"
    for granularity in Granularity:
        label = granularity.label(delta.at)
        for scope, dim in (
            (ALL_SCOPE, OVERALL_DIM),
            (ALL_SCOPE, type_dim),
            (owner_scope(delta.owner_id), OVERALL_DIM),
            (owner_scope(delta.owner_id), type_dim),
            (job_scope(delta.job_id), OVERALL_DIM),
        ):
            keys.append(BucketKey(scope, granularity, label, dim))
    return keys


# ---- accumulated numbers of one bucket (or of a sum of buckets) -----------------------------
@dataclass
class Counters:
    counts: dict[RunStatus, int] = field(default_factory=lambda: dict.fromkeys(COUNTED_STATUSES, 0))
    retries: int = 0
    duration_count: int = 0
    duration_sum: int = 0
    duration_min: int | None = None
    duration_max: int | None = None
    #: Counts by histogram bin index (a plain array: merging and percentiles run in C).
    histogram: list[int] = field(default_factory=list)

    def add_delta(self, delta: StatsDelta) -> None:
        if delta.status is RunStatus.RETRYING:
            self.retries += 1
        else:
            self.counts[delta.status] += 1
        if delta.counts_duration:
            assert delta.duration_ms is not None
            self._add_duration(delta.duration_ms)

    def _add_duration(self, duration_ms: int) -> None:
        self.duration_count += 1
        self.duration_sum += duration_ms
        self.duration_min = duration_ms if self.duration_min is None else min(self.duration_min, duration_ms)
        self.duration_max = duration_ms if self.duration_max is None else max(self.duration_max, duration_ms)
        index = histogram_index(duration_ms)
        if index >= len(self.histogram):
            self.histogram.extend([0] * (index + 1 - len(self.histogram)))
        self.histogram[index] += 1

    def merge(self, other: Counters) -> None:
        for status, value in other.counts.items():
            self.counts[status] = self.counts.get(status, 0) + value
        self.retries += other.retries
        self.duration_count += other.duration_count
        self.duration_sum += other.duration_sum
        for extreme, pick in (("duration_min", min), ("duration_max", max)):
            mine, theirs = getattr(self, extreme), getattr(other, extreme)
            setattr(self, extreme, theirs if mine is None else mine if theirs is None else pick(mine, theirs))
        self._add_bins(0, other.histogram)

    def _add_bins(self, first: int, counts: Sequence[int]) -> None:
        """Add `counts` to bins first, first + 1, ..."""
        end = first + len(counts)
        bins = self.histogram
        if not bins:
            # Nothing to add to (a fresh sum, e.g. a series point): a copy, no per-bin additions.
            bins[:] = [0] * first
            bins.extend(counts)
            return
        if len(bins) < end:
            bins.extend([0] * (end - len(bins)))
        bins[first:end] = map(add, bins[first:end], counts)

    @classmethod
    def from_item(cls, item: Mapping[str, Mapping[str, Any]]) -> Counters:
        out = cls()
        out.add_item(item)
        return out

    def add_item(self, item: Mapping[str, Mapping[str, Any]]) -> None:
        """Add one bucket item as the low-level client returns it (attribute-value maps).

        No Python-level step per attribute (a bucket that has seen many runs carries one
        attribute per filled bin): the counters are a fixed set of names, and the filled bins
        can only lie between the bins of the exact min and max (written in the same transaction
        as the counts), so they are fetched as one run of names by C-level map/itemgetter and
        parsed from their "N" strings (no TypeDeserializer or Decimal per value). The bins must
        add up to d_count; an item that breaks this is read attribute by attribute instead."""
        numbers = list(map(int, map(_N, map(item.get, _NUMBER_ATTRIBUTES, repeat(_ZERO)))))
        for status, value in zip(COUNTED_STATUSES, numbers[:4], strict=True):
            self.counts[status] += value
        self.retries += numbers[4]
        self.duration_count += numbers[5]
        self.duration_sum += numbers[6]
        low, high = item.get("d_min"), item.get("d_max")
        if low is not None:
            low_ms = int(low["N"])
            self.duration_min = low_ms if self.duration_min is None else min(self.duration_min, low_ms)
        if high is not None:
            high_ms = int(high["N"])
            self.duration_max = high_ms if self.duration_max is None else max(self.duration_max, high_ms)
        if low is None or high is None:
            if numbers[5]:
                self._add_scanned_bins(item)
            return
        first, last = histogram_index(low_ms), histogram_index(high_ms)
        counts = list(map(int, map(_N, map(item.get, _bin_attributes(first, last), repeat(_ZERO)))))
        if sum(counts) == numbers[5]:
            self._add_bins(first, counts)
        else:
            self._add_scanned_bins(item)

    def _add_scanned_bins(self, item: Mapping[str, Mapping[str, Any]]) -> None:
        for name, value in item.items():
            if len(name) == 4 and name[0] == "h" and name[1:].isdigit():
                self._add_bins(int(name[1:]), (int(Decimal(value["N"])),))

    def to_attributes(self) -> dict[str, Any]:
        data: dict[str, Any] = {counter_name(s): v for s, v in self.counts.items() if v}
        if self.retries:
            data[counter_name(RunStatus.RETRYING)] = self.retries
        if self.duration_count:
            data.update(d_count=self.duration_count, d_sum=self.duration_sum)
        if self.duration_min is not None:
            data["d_min"] = self.duration_min
        if self.duration_max is not None:
            data["d_max"] = self.duration_max
        data.update({histogram_attribute(i): v for i, v in enumerate(self.histogram) if v})
        return data


#: Number attributes of a bucket item, in the order `Counters.add_item` reads them.
_NUMBER_ATTRIBUTES = (
    *(counter_name(s) for s in COUNTED_STATUSES),
    counter_name(RunStatus.RETRYING),
    "d_count",
    "d_sum",
)
_ZERO = {"N": "0"}
_N = itemgetter("N")


@lru_cache(maxsize=1024)
def _bin_attributes(first: int, last: int) -> tuple[str, ...]:
    """Histogram attribute names of bins first..last (few distinct spans: cached)."""
    return tuple(histogram_attribute(i) for i in range(first, last + 1))


@dataclass
class BucketAggregate:
    """A bucket's numbers plus its descriptive attributes (job type / owner)."""

    key: BucketKey
    counters: Counters = field(default_factory=Counters)
    job_type: str | None = None
    owner_id: str | None = None


def aggregate(deltas: Iterable[StatsDelta]) -> dict[tuple[str, str], BucketAggregate]:
    """Fold transitions into bucket aggregates in memory (backfills, rebuilds and tests write
    these directly; the tracker applies the same updates one transition at a time)."""
    out: dict[tuple[str, str], BucketAggregate] = {}
    for delta in deltas:
        for key in bucket_keys(delta):
            bucket = out.get((key.pk, key.sk))
            if bucket is None:
                attributes = describe(key, delta)
                bucket = out[(key.pk, key.sk)] = BucketAggregate(
                    key, job_type=attributes.get("job_type"), owner_id=attributes.get("owner_id")
                )
            bucket.counters.add_delta(delta)
    return out


def describe(key: BucketKey, delta: StatsDelta) -> dict[str, str]:
    """Descriptive attributes of a bucket item: the job type of TYPE and JOB buckets and the
    owner of JOB buckets (so an owner-scoped query can check a job bucket is theirs)."""
    if key.scope.startswith("JOB#"):
        return {"job_type": delta.job_type, "owner_id": delta.owner_id}
    if key.job_type is not None:
        return {"job_type": delta.job_type}
    return {}
