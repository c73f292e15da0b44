"""BatchWriteItem paging and UnprocessedItems retries: the one loop every repository uses."""

from __future__ import annotations

from typing import Any

import pytest
from jobtracker_common.dynamo import batch_write
from jobtracker_common.errors import ConflictError, TransientError
from jobtracker_common.models import LogEntry
from jobtracker_common.repositories.runs import RunsRepository
from jobtracker_common.repositories.stats import StatsRepository
from jobtracker_common.statistics import BucketAggregate, BucketKey, Granularity

from tests.support.runs import sample_run


class ThrottlingBatches:
    """Leaves the last `hold_back` requests of each call unprocessed, `times` calls in a row."""

    def __init__(self, *, hold_back: int = 1, times: int = 2) -> None:
        self.calls: list[int] = []
        self.written: list[Any] = []
        self.hold_back = hold_back
        self.times = times

    def batch_write_item(self, RequestItems: dict[str, list[Any]]) -> dict[str, Any]:
        ((table, requests),) = RequestItems.items()
        assert len(requests) <= 25
        self.calls.append(len(requests))
        keep = self.hold_back if self.times > 0 else 0
        self.times -= 1
        done, left = requests[: len(requests) - keep], requests[len(requests) - keep :]
        self.written.extend(done)
        return {"UnprocessedItems": {table: left} if left else {}}


def put(n: int) -> dict[str, Any]:
    return {"PutRequest": {"Item": {"pk": {"S": str(n)}}}}


def test_pages_of_25_and_unprocessed_requests_retried_until_written() -> None:
    # Given 60 requests and a table that leaves one request unprocessed twice
    client = ThrottlingBatches(hold_back=1, times=2)
    sleeps: list[float] = []
    # When they are written
    left = batch_write(client, "T", [put(n) for n in range(60)], sleep=sleeps.append)  # type: ignore[arg-type]
    # Then every request was written exactly once, in pages of at most 25, with backoff between retries
    assert left == []
    assert sorted(int(r["PutRequest"]["Item"]["pk"]["S"]) for r in client.written) == list(range(60))
    assert client.calls == [25, 1, 1, 25, 10]
    assert sleeps == [0.05, 0.1]


def test_requests_still_unprocessed_after_every_attempt_are_returned() -> None:
    client = ThrottlingBatches(hold_back=2, times=100)
    left = batch_write(client, "T", [put(n) for n in range(5)], attempts=3, sleep=lambda _s: None)  # type: ignore[arg-type]
    assert left == [put(3), put(4)]
    assert len(client.calls) == 3


def test_log_chunks_that_stay_unprocessed_fail_the_write(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a table that never takes the last log chunk
    monkeypatch.setattr("time.sleep", lambda _s: None)
    runs = RunsRepository(ThrottlingBatches(hold_back=1, times=100), "RunsTable")  # type: ignore[arg-type]
    entries = [LogEntry(timestamp=sample_run().queued_at, message=f"line {n}") for n in range(120)]
    # When the entries are written / Then the caller hears it (the runner keeps them for the next flush)
    with pytest.raises(ConflictError, match="1 log chunk"):
        runs.append_logs(sample_run(), entries, first_seq=0)


def test_statistics_items_that_stay_unprocessed_are_a_transient_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Given a statistics table that never takes the last bucket of a backfill
    monkeypatch.setattr("time.sleep", lambda _s: None)
    stats = StatsRepository(ThrottlingBatches(hold_back=1, times=100), "StatsTable")  # type: ignore[arg-type]
    buckets = [BucketAggregate(BucketKey("ALL", Granularity.DAY, f"2026-03-{d:02d}")) for d in range(1, 4)]
    # When they are written / Then it is a transient error (retried), not a silent loss
    with pytest.raises(TransientError, match="1 statistics item"):
        stats.put_aggregates(buckets)
