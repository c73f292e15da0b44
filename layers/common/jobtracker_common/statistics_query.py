"""Run statistics as the API serves them: the query, its window, and the response models.

Apart from `statistics` (the aggregation the tracker writes) so that the tracker does not build
these pydantic models at every cold start. A query reads one partition range: (buckets in the
window) x (1 + job types) items at most, whatever the number of runs.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from jobtracker_common.models import RunStatus
from jobtracker_common.statistics import (
    ALL_SCOPE,
    COUNTED_STATUSES,
    HOURLY_WINDOW_LIMIT,
    MAX_WINDOW,
    OVERALL_DIM,
    TYPE_DIM_PREFIX,
    Counters,
    Granularity,
    job_scope,
    owner_scope,
    percentiles,
)
from jobtracker_common.timeutil import as_utc

if TYPE_CHECKING:
    from jobtracker_common.repositories.stats import StatsRepository

TimePeriod = Literal["day", "week", "month"]
_PERIODS: dict[str, tuple[Granularity, int]] = {
    "day": (Granularity.HOUR, 24),
    "week": (Granularity.DAY, 7),
    "month": (Granularity.DAY, 30),
}


class StatisticsQuery(BaseModel):
    """`time_period` (day = last 24 hourly buckets, week = last 7 days, month = last 30 days,
    each ending with the current bucket) or an explicit `from`/`to` (hourly buckets up to 72 h,
    daily beyond; rounded out to whole buckets). `owner_id` None means global (admins only:
    the caller decides who may ask for it)."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    time_period: TimePeriod | None = None
    from_: datetime | None = Field(default=None, alias="from")
    to: datetime | None = None
    job_type: str | None = Field(default=None, min_length=1, max_length=64)
    job_id: str | None = Field(default=None, min_length=1, max_length=64)
    owner_id: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _check_window(self) -> StatisticsQuery:
        if (self.from_ is None) != (self.to is None):
            raise ValueError("give both 'from' and 'to', or neither (then time_period applies)")
        if self.from_ is not None and self.to is not None:
            if self.time_period is not None:
                raise ValueError("give either time_period or from/to, not both")
            start, end = as_utc(self.from_), as_utc(self.to)
            if start >= end:
                raise ValueError("'from' must be before 'to'")
            if end - start > MAX_WINDOW:
                raise ValueError(f"the window may span at most {MAX_WINDOW.days} days")
        return self

    def window(self, now: datetime) -> tuple[Granularity, list[str]]:
        """Granularity and bucket labels (oldest first) the query covers."""
        if self.from_ is not None and self.to is not None:
            start, end = as_utc(self.from_), as_utc(self.to)
            granularity = Granularity.HOUR if end - start <= HOURLY_WINDOW_LIMIT else Granularity.DAY
            first = granularity.floor(start)
            # `to` is exclusive: a window ending exactly on a boundary does not take the next bucket.
            last = granularity.floor(end - timedelta(microseconds=1))
        else:
            granularity, count = _PERIODS[self.time_period or "day"]
            last = granularity.floor(now)
            first = last - granularity.step * (count - 1)
        labels = []
        cursor = first
        while cursor <= last:
            labels.append(granularity.label(cursor))
            cursor += granularity.step
        return granularity, labels


class DurationSummary(BaseModel):
    count: int
    avg_ms: float | None
    p50_ms: float | None
    p95_ms: float | None
    min_ms: int | None
    max_ms: int | None


class StatsSummary(BaseModel):
    #: Runs that ended (completed + failed + timed_out + canceled).
    total: int
    by_status: dict[str, int]
    #: Attempts that failed and were retried (entries into `retrying`).
    retries: int
    #: completed / (completed + failed + timed_out); canceled runs are neither. None if no runs.
    success_rate: float | None
    duration: DurationSummary


class JobTypeStats(StatsSummary):
    job_type: str


class SeriesPoint(StatsSummary):
    start: datetime
    end: datetime


class StatisticsResult(BaseModel):
    model_config = ConfigDict(populate_by_name=True, serialize_by_alias=True)

    scope: Literal["owner", "global"]
    owner_id: str | None
    time_period: TimePeriod | None
    from_: datetime = Field(alias="from")
    to: datetime
    granularity: Granularity
    job_type: str | None
    job_id: str | None
    totals: StatsSummary
    by_job_type: list[JobTypeStats]
    series: list[SeriesPoint]


def query_statistics(
    repository: StatsRepository, query: StatisticsQuery, *, now: datetime | None = None
) -> StatisticsResult:
    """Statistics for the window and filters, from pre-aggregated buckets: one Query over one
    partition range, (buckets) x (1 + job types) items at most, independent of the run count."""
    now = as_utc(now or datetime.now(UTC))
    granularity, labels = query.window(now)
    if query.job_id is not None:
        scope = job_scope(query.job_id)
    elif query.owner_id is not None:
        scope = owner_scope(query.owner_id)
    else:
        scope = ALL_SCOPE
    items = repository.read_buckets(scope, granularity, labels[0], labels[-1])

    per_label: dict[str, Counters] = {}
    per_type: dict[str, Counters] = {}
    for item in items:
        label, _, dimension = item["sk"]["S"].partition("#")
        job_type = _string(item, "job_type")
        if query.job_id is not None:
            # A job bucket is visible only to its owner (and admins).
            if query.owner_id is not None and _string(item, "owner_id") != query.owner_id:
                continue
            if query.job_type is not None and job_type != query.job_type:
                continue
            _counters(per_label, label).add_item(item)
            if job_type is not None:
                _counters(per_type, job_type).add_item(item)
            continue
        if dimension == OVERALL_DIM:
            if query.job_type is None:
                _counters(per_label, label).add_item(item)
            continue
        type_name = dimension.removeprefix(TYPE_DIM_PREFIX)
        if query.job_type is not None and type_name != query.job_type:
            continue
        _counters(per_type, type_name).add_item(item)
        if query.job_type is not None:
            _counters(per_label, label).add_item(item)

    totals = Counters()
    series = []
    for label in labels:
        counters = per_label.get(label, Counters())
        totals.merge(counters)
        start = granularity.start_of(label)
        series.append(SeriesPoint(start=start, end=start + granularity.step, **summary_fields(counters)))
    return StatisticsResult(
        scope="global" if query.owner_id is None else "owner",
        owner_id=query.owner_id,
        time_period=None if query.from_ is not None else (query.time_period or "day"),
        from_=granularity.start_of(labels[0]),
        to=granularity.start_of(labels[-1]) + granularity.step,
        granularity=granularity,
        job_type=query.job_type,
        job_id=query.job_id,
        totals=StatsSummary(**summary_fields(totals)),
        by_job_type=[
            JobTypeStats(job_type=name, **summary_fields(per_type[name])) for name in sorted(per_type)
        ],
        series=series,
    )


def _counters(target: dict[str, Counters], key: str) -> Counters:
    counters = target.get(key)
    if counters is None:
        counters = target[key] = Counters()
    return counters


def _string(item: Mapping[str, Mapping[str, Any]], name: str) -> str | None:
    value = item.get(name)
    return None if value is None else value.get("S")


def summary_fields(counters: Counters) -> dict[str, Any]:
    """StatsSummary's fields, for the models that extend it (no dump and re-validate)."""
    terminal = sum(counters.counts.values())
    judged = terminal - counters.counts.get(RunStatus.CANCELED, 0)
    p50, p95 = percentiles(
        counters.histogram, (0.50, 0.95), low=counters.duration_min, high=counters.duration_max
    )
    return {
        "total": terminal,
        "by_status": {s.value: counters.counts.get(s, 0) for s in COUNTED_STATUSES},
        "retries": counters.retries,
        "success_rate": (counters.counts.get(RunStatus.COMPLETED, 0) / judged) if judged else None,
        "duration": DurationSummary(
            count=counters.duration_count,
            avg_ms=(counters.duration_sum / counters.duration_count) if counters.duration_count else None,
            p50_ms=p50,
            p95_ms=p95,
            min_ms=counters.duration_min,
            max_ms=counters.duration_max,
        ),
    }
