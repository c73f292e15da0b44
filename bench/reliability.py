"""Fault-injection scenarios: inject a failure, count what came out, compare with what should.

`python -m bench.reliability` runs every scenario at full size, prints one table (scenario,
injected, expected, observed, lost, duplicated) and exits non-zero if any scenario fails.
`--small` runs the sizes the test suite uses. Every scenario builds its own moto world.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from bench.common import (
    FakeContext,
    counting,
    fake_aws_env,
    is_retryable_error,
    isolated_aws,
    new_client,
    table,
    throttle_dynamodb,
    utcnow,
)
from bench.runner_costs import add_job, runner_service, schedule_event


@dataclass(frozen=True)
class Sizes:
    duplicate_deliveries: int = 100
    racing_runs: int = 50
    throttled_runs: int = 40
    throttle_rate: float = 0.2
    stream_runs: int = 30
    poison_batch: int = 10
    ses_emails: int = 40
    ses_throttle_rate: float = 0.5
    killed_runs: int = 5
    #: botocore attempts per call in the throttling scenarios (None: the product's config).
    #: The tests set 1 to prove the scenario notices loss when nothing retries.
    max_attempts: int | None = None


FULL = Sizes()
SMALL = Sizes(
    duplicate_deliveries=100,
    racing_runs=20,
    throttled_runs=12,
    stream_runs=10,
    poison_batch=5,
    ses_emails=12,
    killed_runs=3,
)


@dataclass
class Outcome:
    scenario: str
    injected: str
    expected: str
    observed: str
    lost: int | None
    duplicated: int | None
    passed: bool | None  # None: skipped (the part it needs does not exist yet)
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return {True: "PASS", False: "FAIL", None: "SKIP"}[self.passed]


def skipped(scenario: str, injected: str, expected: str, why: str) -> Outcome:
    return Outcome(scenario, injected, expected, f"not run: {why}", None, None, None)


# ---- runner scenarios ----------------------------------------------------------------------
def duplicate_deliveries(sizes: Sizes) -> Outcome:
    """The same Scheduler delivery arrives N times at once: one run, the job body runs once."""
    from job_runner import handler

    n = sizes.duplicate_deliveries
    with isolated_aws():
        client = new_client("dynamodb", config=_pool_config(n))
        add_job(client, duration_seconds=0.3, log_lines=2)
        runner = runner_service(client)
        event = schedule_event(utcnow().replace(microsecond=0))
        barrier = threading.Barrier(n)
        results: list[dict[str, Any]] = []
        errors: list[str] = []
        lock = threading.Lock()

        def deliver(attempt: int) -> None:
            barrier.wait(timeout=60)
            try:
                result = handler.handle(
                    {**event, "delivery_attempt": str(attempt)},
                    FakeContext(),  # type: ignore[arg-type]
                    runner,
                )
            except Exception as exc:  # a crash is an observation, not the end of the scenario
                with lock:
                    errors.append(repr(exc))
                return
            with lock:
                results.append(result)

        threads = [threading.Thread(target=deliver, args=(i + 1,)) for i in range(n)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        runs = _run_items(client)
        executed = sum(1 for r in results if not r.get("duplicate"))
        told_duplicate = sum(1 for r in results if r.get("duplicate"))
        statuses = sorted({r["status"]["S"] for r in runs})
    ok = len(runs) == 1 and executed == 1 and told_duplicate == n - 1 and not errors
    return Outcome(
        "duplicate scheduler deliveries",
        f"{n} concurrent copies of one delivery",
        "1 run, body executed once",
        f"{len(runs)} run(s) {statuses}, executed {executed}, {told_duplicate} told duplicate"
        + (f", {len(errors)} errors" if errors else ""),
        lost=0 if runs else 1,
        duplicated=max(0, len(runs) - 1) + max(0, executed - 1),
        passed=ok,
        notes=errors[:3],
    )


def racing_writers(sizes: Sizes) -> Outcome:
    """Two writers read the same running run and both try to finish it (runner: completed;
    sweeper: timed_out). Exactly one may win; the loser must learn it lost; the winner's
    change must be in the item; a later writer cannot move the terminal run."""
    from jobtracker_common.errors import ConflictError, InvalidTransitionError
    from jobtracker_common.lifecycle import running_lease
    from jobtracker_common.models import ErrorInfo, Run, RunStatus, Trigger
    from jobtracker_common.repositories import RunsRepository

    n = sizes.racing_runs
    lost = duplicated = moved = 0
    with isolated_aws():
        client = new_client("dynamodb")
        repo = RunsRepository(client, "RunsTable")
        now = utcnow()
        for i in range(n):
            run = repo.create(
                Run(
                    run_id=f"01JRACE{i:019d}",
                    job_id="race-job",
                    job_name="race",
                    job_type="demo",
                    owner_id="bench-owner",
                    trigger=Trigger.MANUAL,
                    status=RunStatus.RUNNING,
                    queued_at=now,
                    started_at=now,
                    lease_until=running_lease(now, 60),
                )
            )
            barrier = threading.Barrier(2)
            wins: dict[str, Run] = {}
            later = now + timedelta(seconds=5)

            def finish(
                name: str,
                status: RunStatus,
                changes: dict[str, Any],
                seen: Run = run,
                gate: threading.Barrier = barrier,
                won: dict[str, Run] = wins,
            ) -> None:
                gate.wait(timeout=30)
                with contextlib.suppress(ConflictError):
                    won[name] = repo.transition(seen, status, **changes)

            writers = [
                threading.Thread(
                    target=finish,
                    args=(
                        "runner",
                        RunStatus.COMPLETED,
                        {"finished_at": later, "lease_until": None, "result": {"message": "ok"}},
                    ),
                ),
                threading.Thread(
                    target=finish,
                    args=(
                        "sweeper",
                        RunStatus.TIMED_OUT,
                        {
                            "finished_at": later,
                            "lease_until": None,
                            "error": ErrorInfo(type="LeaseExpired", message="lease expired"),
                        },
                    ),
                ),
            ]
            for writer in writers:
                writer.start()
            for writer in writers:
                writer.join(timeout=30)
            final = repo.get(run.run_id)
            if len(wins) > 1:
                duplicated += 1
            if not wins or any(w.status != final.status for w in wins.values()):
                lost += 1
            # A third, later writer with a fresh read must not move a terminal run.
            try:
                repo.transition(final, RunStatus.FAILED, error=ErrorInfo(type="Late", message="late"))
                moved += 1
            except InvalidTransitionError:
                pass
            if repo.get(run.run_id).status != final.status:
                moved += 1
    return Outcome(
        "two writers racing on one run",
        f"{n} runs, runner and sweeper finish each at once",
        "1 winner per run, its state kept, terminal final",
        f"{n - duplicated - lost} clean races, {duplicated} double wins, {moved} terminal moves",
        lost=lost,
        duplicated=duplicated,
        passed=lost == 0 and duplicated == 0 and moved == 0,
    )


def dynamodb_throttling(sizes: Sizes) -> Outcome:
    """ProvisionedThroughputExceededException on a share of every DynamoDB call of the runner:
    botocore's standard retry mode retries them; every run and every log entry is stored once."""
    from job_runner import handler

    n = sizes.throttled_runs
    code = "ProvisionedThroughputExceededException"
    with isolated_aws():
        client = new_client("dynamodb", config=_pool_config(8, sizes.max_attempts))
        add_job(client, duration_seconds=0, log_lines=20)
        runner = runner_service(client)
        base = utcnow().replace(second=0, microsecond=0)
        events = [schedule_event(base - timedelta(minutes=i)) for i in range(n)]
        injector = throttle_dynamodb(client, sizes.throttle_rate)
        failures: list[str] = []
        with counting(client) as calls, ThreadPoolExecutor(max_workers=8) as pool:

            def deliver(event: dict[str, Any]) -> dict[str, Any]:
                return handler.handle(event, FakeContext(), runner)  # type: ignore[arg-type]

            results = []
            for future in [pool.submit(deliver, e) for e in events]:
                try:
                    results.append(future.result(timeout=300))
                except Exception as exc:
                    failures.append(repr(exc))
        injector.detach()
        runs = _run_items(client)
        completed = sum(1 for r in runs if r["status"]["S"] == "completed")
        entries = _log_entries(client)
    expected_entries = n * 24  # 20 lines + demo start/finish + runner start/completed
    lost = (n - completed) + max(0, expected_entries - entries)
    duplicated = max(0, len(runs) - n) + max(0, entries - expected_entries)
    retries = sum(calls.attempts.values()) - calls.total()
    ok = lost == 0 and duplicated == 0 and not failures and is_retryable_error(code)
    return Outcome(
        "DynamoDB throttling",
        f"{code} on {sizes.throttle_rate:.0%} of attempts ({injector.injected} injected)",
        f"{n} runs completed, {expected_entries} log entries",
        f"{completed} completed, {entries} entries, {retries} retries by botocore, "
        f"{len(failures)} surfaced errors",
        lost=lost,
        duplicated=duplicated,
        passed=ok and injector.injected > 0,
        notes=failures[:3] + ([] if is_retryable_error(code) else [f"{code} is not retryable in botocore"]),
    )


# ---- helpers -------------------------------------------------------------------------------
def _pool_config(threads: int, max_attempts: int | None = None) -> Any:
    from botocore.config import Config
    from jobtracker_common.aws import CLIENT_CONFIG

    config = CLIENT_CONFIG.merge(Config(max_pool_connections=max(10, threads)))
    if max_attempts is not None:
        config = config.merge(Config(retries={"max_attempts": max_attempts, "mode": "standard"}))
    return config


def _run_items(client: Any) -> list[dict[str, Any]]:
    return [i for i in _scan(client, "RunsTable") if i.get("entity", {}).get("S") == "run"]


def _log_entries(client: Any) -> int:
    return sum(
        len(i["entries"]["L"]) for i in _scan(client, "RunsTable") if i.get("entity", {}).get("S") == "log"
    )


def _scan(client: Any, name: str) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"TableName": name}
    while True:
        page = client.scan(**kwargs)
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


Scenario = Callable[[Sizes], Outcome]

SCENARIOS: dict[str, Scenario] = {
    "duplicates": duplicate_deliveries,
    "race": racing_writers,
    "ddb-throttle": dynamodb_throttling,
}


def run_scenario(name: str, sizes: Sizes) -> Outcome:
    started = time.perf_counter()
    try:
        outcome = SCENARIOS[name](sizes)
    except Exception as exc:
        outcome = Outcome(name, "-", "-", f"crashed: {exc!r}", None, None, False)
        outcome.notes.append(traceback.format_exc(limit=5))
    outcome.seconds = time.perf_counter() - started
    return outcome


def render(outcomes: list[Outcome]) -> str:
    rows = [
        [
            o.scenario,
            o.injected,
            o.expected,
            o.observed,
            "-" if o.lost is None else str(o.lost),
            "-" if o.duplicated is None else str(o.duplicated),
            o.status,
            f"{o.seconds:.1f}",
        ]
        for o in outcomes
    ]
    headers = ["scenario", "injected", "expected", "observed", "lost", "duplicated", "result", "s"]
    return table(headers, rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__)
    parser.add_argument("--small", action="store_true", help="the test suite's sizes")
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="run only these")
    parser.add_argument(
        "--strict", action="store_true", help="a skipped scenario (missing part) also fails the run"
    )
    args = parser.parse_args(argv)
    fake_aws_env()
    sizes = SMALL if args.small else FULL
    outcomes = []
    for name in args.only or list(SCENARIOS):
        outcome = run_scenario(name, sizes)
        outcomes.append(outcome)
        print(
            f"  {outcome.status}  {outcome.scenario} ({outcome.seconds:.1f} s)", file=sys.stderr, flush=True
        )
    print(render(outcomes))
    for outcome in outcomes:
        for note in outcome.notes:
            print(f"\n[{outcome.scenario}] {note}")
    failed = [o for o in outcomes if o.passed is False or (args.strict and o.passed is None)]
    print(
        f"\n{sum(o.passed is True for o in outcomes)} passed, {len(failed)} failed, "
        f"{sum(o.passed is None for o in outcomes)} skipped"
    )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
