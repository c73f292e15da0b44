"""Property: paging through GET /job-logs with any filter and page size returns exactly the
matching runs, newest first, each once, whatever the mix of matching and non-matching runs."""

from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from jobtracker_common.models import RunStatus

from tests.support.http import ALL_SCOPES, api_harness
from tests.support.runs import make_run

STATUSES = [RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.TIMED_OUT, RunStatus.RUNNING]
BASE = datetime(2025, 1, 1, tzinfo=UTC)
ADMIN = [*ALL_SCOPES, "admin"]


def test_paging_returns_exactly_the_matching_runs_in_order(aws):
    owners = (f"user-{n}" for n in itertools.count())
    with api_harness(aws) as api:

        @settings(
            max_examples=30,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(
            runs=st.lists(
                st.tuples(st.sampled_from(STATUSES), st.sampled_from(["demo", "http_check"])), max_size=25
            ),
            wanted=st.sets(st.sampled_from(STATUSES)),
            job_type=st.sampled_from([None, "demo"]),
            limit=st.integers(min_value=1, max_value=7),
        )
        def page_through(runs, wanted, job_type, limit):
            owner = next(owners)  # a fresh user per example: nothing else is visible to them
            created = [
                make_run(
                    api.services.runs,
                    owner_id=owner,
                    status=status,
                    job_type=kind,
                    queued_at=BASE + timedelta(minutes=i),
                )
                for i, (status, kind) in enumerate(runs)
            ]
            expected = [
                r.run_id
                for r in reversed(created)
                if (not wanted or r.status in wanted) and (job_type is None or r.job_type == job_type)
            ]
            query = {"limit": str(limit)}
            if wanted:
                query["status"] = ",".join(sorted(s.value for s in wanted))
            if job_type:
                query["job_type"] = job_type
            seen, cursor = [], None
            for _ in range(len(runs) + 2):
                page = api.call(
                    "GET /job-logs", user=owner, query=query | ({"cursor": cursor} if cursor else {})
                )
                assert page.status == 200, page.body
                assert len(page.body["items"]) <= limit
                seen += [r["run_id"] for r in page.body["items"]]
                cursor = page.body["next_cursor"]
                if cursor is None:
                    break
            assert seen == expected

        page_through()


def test_admin_day_by_day_paging_returns_every_run_once_in_order(aws):
    windows = itertools.count()
    with api_harness(aws) as api:

        @settings(
            max_examples=20,
            derandomize=True,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(
            offsets=st.lists(st.integers(min_value=0, max_value=4 * 24 * 60 - 1), max_size=20, unique=True),
            limit=st.integers(min_value=1, max_value=6),
        )
        def page_through(offsets, limit):
            # Each example owns a separate 4-day window, runs spread over it (some days empty)
            start = BASE + timedelta(days=5 * next(windows))
            created = [
                make_run(api.services.runs, owner_id="user-any", queued_at=start + timedelta(minutes=m))
                for m in offsets
            ]
            expected = [r.run_id for r in sorted(created, key=lambda r: r.queued_at, reverse=True)]
            window = {
                "from": start.isoformat().replace("+00:00", "Z"),
                "to": (start + timedelta(days=4) - timedelta(seconds=1)).isoformat().replace("+00:00", "Z"),
                "limit": str(limit),
            }
            seen, cursor = [], None
            for _ in range(len(offsets) + 6):
                query = window | ({"cursor": cursor} if cursor else {})
                page = api.call("GET /job-logs", user="root", scopes=ADMIN, query=query)
                assert page.status == 200, page.body
                seen += [r["run_id"] for r in page.body["items"]]
                cursor = page.body["next_cursor"]
                if cursor is None:
                    break
            assert seen == expected

        page_through()
