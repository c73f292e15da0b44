"""The local stack under measurement: `jobtracker local up` as a child process on free ports.

- End-to-end latency: jobs with one-time `at()` schedules, created through the API; the time
  from each schedule's fire time to its email's .eml file in the outbox (file mtime).
- Fresh clone: `make run`'s command in a new `git clone` (dependencies installed, nothing of the
  project compiled, no `.local/`): the time to the ready line and to the first demo email.
- History: what one TransactWriteItems and one Query cost on the local stack's moto server
  once a table holds a long history, with the stack's moto patches and with moto's own code.
- API under load: N concurrent clients for D seconds on `/job-logs/active` and
  `/job-logs/statistics` through the local gateway (JWT verified, scopes enforced), beside the
  same requests made to the API handler in-process (moto in-process, same kind of data).

The stack runs with the settings `make run` uses (poll intervals, the template's batching
windows), so the latency is the one a person sees locally. Only loopback traffic; every loop
is bounded in count and time; the child is stopped with SIGINT like a user's Ctrl-C.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from jobtracker_local.stack import child_env, up_command

from bench.common import ROOT, Row, median, module_exists, not_measured, percentile, utcnow

SCOPES = ["read:job_logs", "read:jobs", "write:jobs", "write:job_logs"]
P50_TARGET = 3.0
READY_TARGET = 60.0
FIRST_EMAIL_TARGET = 120.0
READY_LINE = "jobtracker local stack ready"
ROUTES = ("/job-logs/active", "/job-logs/statistics?time_period=day")


@dataclass
class Stack:
    api: str
    state: dict[str, Any]
    state_dir: Path
    outbox: Path

    def token(self, sub: str) -> str:
        from jobtracker_local.auth import KeyStore

        return KeyStore(self.state_dir).mint(
            sub=sub,
            email=f"{sub}@example.com",
            issuer=self.state["issuer"],
            audience=self.state["audience"],
            scopes=SCOPES,
        )


@contextmanager
def running_stack(timeout: float = 120.0) -> Iterator[Stack]:
    with tempfile.TemporaryDirectory(prefix="jobtracker-bench-") as tmp:
        state_dir = Path(tmp)
        outbox = state_dir / "outbox"
        env = child_env()
        command = up_command(
            "--api-port=0",
            "--aws-port=0",
            "--no-demo",
            f"--state-dir={state_dir}",
            f"--outbox={outbox}",
            "--log-level=WARNING",
        )
        with (state_dir / "stack.log").open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
        try:
            state_file = state_dir / "stack.json"
            deadline = time.monotonic() + timeout
            while not state_file.exists():
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = (state_dir / "stack.log").read_text(errors="replace")[-2000:]
                    raise RuntimeError(f"local stack did not start: {tail}")
                time.sleep(0.1)
            state = json.loads(state_file.read_text())
            yield Stack(state["api"], state, state_dir, outbox)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _request(session: Any, method: str, url: str, token: str, **kwargs: Any) -> Any:
    response = session.request(
        method, url, headers={"Authorization": f"Bearer {token}"}, timeout=30, **kwargs
    )
    response.raise_for_status()
    return response.json() if response.content else None


def end_to_end_latency(runs: int = 20, spacing: float = 1.5) -> list[Row]:
    """Scheduled fire -> email file, for `runs` one-time schedules `spacing` seconds apart."""
    label = f"local end-to-end: scheduled fire to email file, p50 over {runs} runs"
    if not (module_exists("jobtracker_local.stack") and module_exists("api.handler")):
        return [not_measured(label, f"p50 < {P50_TARGET} s", "local stack or API not there yet", "s")]
    import requests

    with running_stack() as stack:
        user = f"bench-{uuid.uuid4().hex[:8]}"
        token = stack.token(user)
        session = requests.Session()
        _request(session, "GET", f"{stack.api}/users/me", token)
        first = utcnow().replace(microsecond=0) + timedelta(seconds=6)
        fire_at: dict[str, float] = {}
        for i in range(runs):
            at = first + timedelta(seconds=int(i * spacing))
            name = f"latency probe {i:02d} {uuid.uuid4().hex[:6]}"
            _request(
                session,
                "POST",
                f"{stack.api}/jobs",
                token,
                json={
                    "name": name,
                    "job_type": "demo",
                    "params": {"duration_seconds": 0, "log_lines": 1},
                    "schedule": f"at({at.strftime('%Y-%m-%dT%H:%M:%S')})",
                    "retry": {"max_attempts": 1},
                },
            )
            fire_at[name] = at.timestamp()
        deadline = time.monotonic() + (first - utcnow()).total_seconds() + runs * spacing + 60
        latencies: dict[str, float] = {}
        while len(latencies) < runs and time.monotonic() < deadline:
            for path in stack.outbox.glob("*.eml") if stack.outbox.exists() else []:
                text = path.read_text(errors="replace")
                for name, fired in fire_at.items():
                    if name not in latencies and name in text:
                        latencies[name] = path.stat().st_mtime - fired
            time.sleep(0.05)
    values = list(latencies.values())
    p50, p95 = percentile(values, 50), percentile(values, 95)
    missing = runs - len(values)
    return [
        Row(
            label,
            round(p50, 2) if values else None,
            "s",
            f"< {P50_TARGET} s",
            bool(values) and p50 < P50_TARGET and missing == 0,
            f"p95 {p95:.2f} s, min {min(values, default=0):.2f} s, max {max(values, default=0):.2f} s; "
            f"{missing} email(s) missing; defaults of `make run` (0.25 s polls, 1 s batching windows)",
        )
    ]


def fresh_clone_startup(timeout: float = 180.0) -> list[Row]:
    """`make run` on a fresh clone: seconds to the ready line, and to the first demo email.

    The clone runs with the installed environment (what `make install` leaves) but its own
    code: its source roots come first on sys.path (the editable install's finder comes after
    them), so none of the project is compiled yet, there are no keys and no `.local/`, and the
    state and outbox land in the clone, which shows it ran its own code. Free ports instead of
    3000/4566 (a benchmark must not take fixed ports); the demo data is on, as in `make run`.
    """
    ready_label = "local stack: fresh clone, `make run` to ready line"
    email_label = "local stack: fresh clone, `make run` to first demo email"
    if not module_exists("jobtracker_local.stack"):
        why = "local stack not there yet"
        return [
            not_measured(ready_label, f"< {READY_TARGET:g} s", why, "s"),
            not_measured(email_label, f"< {FIRST_EMAIL_TARGET:g} s", why, "s"),
        ]
    import tomllib

    with tempfile.TemporaryDirectory(prefix="jobtracker-clone-") as tmp:
        clone = Path(tmp) / "jobtracker"
        subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True, timeout=120)
        roots = tomllib.loads((clone / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"][
            "pythonpath"
        ]
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env["PYTHONPATH"] = os.pathsep.join(str(clone / root) for root in roots if root != ".")
        log_path = Path(tmp) / "stack.log"
        outbox = clone / ".local" / "outbox"
        command = up_command("--api-port=0", "--aws-port=0")
        began = time.time()
        with log_path.open("wb") as log:
            process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=clone)
        ready: float | None = None
        email: float | None = None
        try:
            while time.time() - began < timeout and process.poll() is None and email is None:
                if ready is None and READY_LINE in log_path.read_text(errors="replace"):
                    ready = time.time() - began
                sent = sorted(outbox.glob("*.eml")) if outbox.exists() else []
                if sent:
                    email = min(path.stat().st_mtime for path in sent) - began
                time.sleep(0.05)
        finally:
            process.send_signal(signal.SIGINT)
            try:
                code = process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
        tail = log_path.read_text(errors="replace")
    stopped = (
        "stopped cleanly on SIGINT" if code == 0 and "stopped." in tail else f"exit code {code} on SIGINT"
    )
    note = f"wall time from the command to the line, imports included; {stopped}"
    return [
        Row(
            ready_label,
            round(ready, 1) if ready is not None else None,
            "s",
            f"< {READY_TARGET:g} s",
            ready is not None and ready < READY_TARGET,
            note if ready is not None else f"no ready line in {timeout:g} s: {tail[-300:]!r}",
        ),
        Row(
            email_label,
            round(email, 1) if email is not None else None,
            "s",
            f"< {FIRST_EMAIL_TARGET:g} s",
            email is not None and email < FIRST_EMAIL_TARGET,
            "from the command to the first .eml in the clone's .local/outbox/ (file mtime)"
            if email is not None
            else f"no email in {timeout:g} s",
        ),
    ]


def moto_history_cost(items: int = 30_000, repeats: int = 3) -> list[Row]:
    """ms per TransactWriteItems / base-table Query / sparse-index Query on an `items` table."""
    label = f"local moto at {items:,} items"
    if not module_exists("jobtracker_local.moto_ordering"):
        return [not_measured(label, "informational", "local stack not there yet", "ms")]
    from jobtracker_local.endpoint import fresh_moto
    from jobtracker_local.moto_ordering import MOTO_ALL_ITEMS
    from jobtracker_local.moto_ordering import all_items as fast_all_items
    from jobtracker_local.moto_transactions import MOTO_TRANSACT_WRITE_ITEMS, transact_write_items
    from jobtracker_local.resources import REGION, aws_client
    from moto.core import DEFAULT_ACCOUNT_ID
    from moto.dynamodb.models import DynamoDBBackend, dynamodb_backends
    from moto.dynamodb.models.table import Table

    def timed(call: Any) -> float:
        started = time.perf_counter()
        for _ in range(repeats):
            call()
        return (time.perf_counter() - started) / repeats * 1000

    results: dict[str, dict[str, float]] = {}
    with fresh_moto() as server:
        ddb = aws_client("dynamodb", server.url)
        ddb.create_table(
            TableName="History",
            KeySchema=[
                {"AttributeName": "pk", "KeyType": "HASH"},
                {"AttributeName": "sk", "KeyType": "RANGE"},
            ],
            AttributeDefinitions=[
                {"AttributeName": "pk", "AttributeType": "S"},
                {"AttributeName": "sk", "AttributeType": "S"},
                {"AttributeName": "active", "AttributeType": "S"},
            ],
            BillingMode="PAY_PER_REQUEST",
            StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
            GlobalSecondaryIndexes=[
                {
                    "IndexName": "active",
                    "KeySchema": [{"AttributeName": "active", "KeyType": "HASH"}],
                    "Projection": {"ProjectionType": "ALL"},
                }
            ],
        )
        table = dynamodb_backends[DEFAULT_ACCOUNT_ID][REGION].get_table("History")
        # Like the runs table: a run item and two log chunks per run, time-ordered ids, a few active.
        for n in range(items):
            item = {"pk": {"S": f"RUN#{n // 3:09d}"}, "sk": {"S": ("META", "LOG#1", "LOG#2")[n % 3]}}
            if n % 1000 == 0:
                item["active"] = {"S": "shard-0"}
            table.put_item({**item, "detail": {"S": "x" * 200}})
        counter = iter(range(10**9))

        def transaction() -> None:
            k = next(counter)
            ddb.transact_write_items(
                TransactItems=[
                    {"Put": {"TableName": "History", "Item": {"pk": {"S": f"NEW#{k}"}, "sk": {"S": "META"}}}},
                    {
                        "Update": {
                            "TableName": "History",
                            "Key": {"pk": {"S": "RUN#000000007"}, "sk": {"S": "META"}},
                            "UpdateExpression": "SET n = :n",
                            "ExpressionAttributeValues": {":n": {"N": str(k)}},
                        }
                    },
                ]
            )

        def partition() -> None:
            ddb.query(
                TableName="History",
                KeyConditionExpression="pk = :p",
                ExpressionAttributeValues={":p": {"S": "RUN#000000077"}},
            )

        def index() -> None:
            ddb.query(
                TableName="History",
                IndexName="active",
                KeyConditionExpression="active = :a",
                ExpressionAttributeValues={":a": {"S": "shard-0"}},
            )

        installed = (DynamoDBBackend.transact_write_items, Table.all_items)
        try:
            for name, (tx, order) in {
                "moto": (MOTO_TRANSACT_WRITE_ITEMS, MOTO_ALL_ITEMS),
                "stack": (transact_write_items, fast_all_items),
            }.items():
                DynamoDBBackend.transact_write_items = tx  # type: ignore[method-assign]
                Table.all_items = order  # type: ignore[method-assign]
                results[name] = {"tx": timed(transaction), "query": timed(partition), "index": timed(index)}
        finally:
            DynamoDBBackend.transact_write_items, Table.all_items = installed  # type: ignore[method-assign]
    names = {
        "tx": "TransactWriteItems (Put + Update)",
        "query": "Query of one run",
        "index": "Query of a sparse index",
    }
    return [
        Row(
            f"{label}: {names[key]}",
            round(results["stack"][key], 1),
            "ms",
            "informational",
            None,
            f"moto's own code: {results['moto'][key]:.1f} ms "
            f"({results['moto'][key] / results['stack'][key]:.0f}x); over HTTP, mean of {repeats}",
        )
        for key in names
    ]


def api_under_load(duration: float = 30.0, clients: int = 20, history_runs: int = 20) -> list[Row]:
    """`clients` threads hammer the gateway for `duration` seconds, alternating the routes."""
    label = "API under load on the local gateway"
    if not (module_exists("jobtracker_local.stack") and module_exists("api.handler")):
        return [not_measured(label, "0 errors", "local stack or API not there yet")]
    import requests

    with running_stack() as stack:
        user = f"bench-{uuid.uuid4().hex[:8]}"
        token = stack.token(user)
        warm = requests.Session()
        _request(warm, "GET", f"{stack.api}/users/me", token)
        for route in ROUTES:
            _request(warm, "GET", stack.api + route, token)
        latencies: list[float] = []
        errors: list[str] = []
        lock = threading.Lock()
        stop_at = time.monotonic() + duration

        def client(index: int) -> None:
            session = requests.Session()
            n = index
            while time.monotonic() < stop_at:
                route = ROUTES[n % len(ROUTES)]
                n += 1
                started = time.perf_counter()
                try:
                    response = session.get(
                        stack.api + route, headers={"Authorization": f"Bearer {token}"}, timeout=30
                    )
                    ok = response.status_code == 200
                    detail = f"{response.status_code} {route}"
                except requests.RequestException as exc:
                    ok, detail = False, f"{type(exc).__name__} {route}"
                elapsed = time.perf_counter() - started
                with lock:
                    latencies.append(elapsed)
                    if not ok:
                        errors.append(detail)

        threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
        began = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=duration + 60)
        wall = time.perf_counter() - began
    in_process = _in_process_latency(history_runs)
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    rate = len(latencies) / wall
    # Under saturation p50 is mostly queueing; wall time per request is the gateway's real cost
    # per request (HTTP, JWT, event mapping, the handler, moto over HTTP), set against the handler.
    return [
        Row(
            f"API under load: errors ({clients} clients, {duration:g} s)",
            len(errors),
            "errors",
            "0",
            not errors,
            f"{len(latencies):,} requests; first errors: {', '.join(sorted(set(errors))[:3]) or 'none'}",
        ),
        Row(
            "API under load: latency p50 / p95",
            f"{p50 * 1000:.0f} / {p95 * 1000:.0f}",
            "ms",
            "informational",
            None,
            f"{rate:.1f} req/s over {wall:.1f} s; routes {', '.join(ROUTES)}",
        ),
        Row(
            "API under load: gateway time per request vs in-process handler call",
            round((wall / max(len(latencies), 1)) / in_process, 1) if in_process else None,
            "x",
            "informational",
            None,
            f"{wall / max(len(latencies), 1) * 1000:.1f} ms of wall time per request at saturation vs "
            f"{in_process * 1000:.1f} ms p50 in-process (one caller, moto in-process); p50 ratio "
            f"{p50 / in_process:.0f}x includes queueing behind {clients} clients on 2 cores",
        ),
    ]


def _in_process_latency(history_runs: int, repeats: int = 60) -> float:
    """p50 of the same routes, calling `api.handler.lambda_handler` directly (no HTTP, no JWT)."""
    from bench.reliability import _run_jobs
    from bench.world import world
    from tests.support.http import api_harness, claims, http_event, lambda_response

    with world() as w:
        _run_jobs(w, history_runs, 0)
        for batch in w.batches("TrackerFunction"):
            w.deliver_tracker(batch)
        samples: list[float] = []
        with api_harness(w.ddb):
            token = claims("owner-ok", email="owner-ok@example.com")
            events = [
                http_event("GET /job-logs/active", token_claims=token),
                http_event("GET /job-logs/statistics", query={"time_period": "day"}, token_claims=token),
            ]
            for i in range(repeats):
                event = events[i % len(events)]
                started = time.perf_counter()
                response = lambda_response(event)
                samples.append(time.perf_counter() - started)
                if response["statusCode"] != 200:
                    raise RuntimeError(f"in-process API answered {response['statusCode']}: {response}")
    return median(samples)
