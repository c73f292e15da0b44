"""DynamoDB cost of the runner's hot path and of listing active runs, counted on moto.

Requests are counted with botocore's `after-call` hook (one per API call) and `before-send`
(one per HTTP attempt). moto's ConsumedCapacity is a constant per call, not size-based, so
write units are computed from the written items with DynamoDB's sizing rules (1 WCU per
started KB per item, x2 in a transaction, +1 per global secondary index the item is in).
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from bench.common import (
    WRITE_OPS,
    FakeContext,
    RequestRecorder,
    Row,
    counting,
    isolated_aws,
    new_client,
    seed_items,
    utcnow,
    write_units,
)

JOB_ID = "01JBENCHJOB000000000000000"
SCHEDULE_ARN = f"arn:aws:scheduler:us-east-1:123456789012:schedule/jobtracker-jobs/job-{JOB_ID}"
MAX_WRITE_REQUESTS = 4


def add_job(client: Any, job_id: str = JOB_ID, **params: Any) -> Any:
    from jobtracker_common.models import Job, RetryPolicy
    from jobtracker_common.repositories import JobsRepository

    now = utcnow()
    job = Job(
        job_id=job_id,
        owner_id=params.pop("owner_id", "bench-owner"),
        name=params.pop("name", "bench job"),
        job_type=params.pop("job_type", "demo"),
        params=params or {"duration_seconds": 0, "log_lines": 20},
        target="core-sw-01",
        retry=RetryPolicy(max_attempts=1),
        created_at=now,
        updated_at=now,
    )
    return JobsRepository(client, "JobsTable").create(job)


def runner_service(client: Any) -> Any:
    from job_runner.service import RunnerService
    from jobtracker_common.repositories import JobsRepository, RunsRepository

    return RunnerService(JobsRepository(client, "JobsTable"), RunsRepository(client, "RunsTable"))


def schedule_event(at: Any, job_id: str = JOB_ID) -> dict[str, Any]:
    return {
        "kind": "schedule",
        "job_id": job_id,
        "scheduled_time": at.isoformat(),
        "schedule_arn": SCHEDULE_ARN.replace(JOB_ID, job_id),
        "delivery_attempt": "1",
    }


def _gsi_keys(table: str) -> list[list[str]]:
    from jobtracker_local.template import load_template

    definition = load_template().table_definitions()[table]
    return [
        [k["AttributeName"] for k in g["KeySchema"]] for g in definition.get("GlobalSecondaryIndexes", [])
    ]


def _in_indexes(item: dict[str, Any], indexes: list[list[str]]) -> int:
    return sum(1 for keys in indexes if all(k in item for k in keys))


def estimate_wcu(
    requests: list[tuple[str, dict[str, Any]]], images: dict[str, dict[str, Any]], table: str
) -> float:
    """Write units of `requests` on `table`; `images` maps pk|sk to the item after the run."""
    indexes = _gsi_keys(table)
    seen: dict[str, dict[str, Any]] = {}
    total = 0.0

    def key_of(item: dict[str, Any]) -> str:
        return f"{item['pk']['S']}|{item['sk']['S']}"

    def put(item: dict[str, Any], factor: int = 1) -> float:
        before = seen.get(key_of(item), {})
        seen[key_of(item)] = item
        gsi = max(_in_indexes(item, indexes), _in_indexes(before, indexes))
        return factor * write_units(item) * (1 + gsi)

    for op, params in requests:
        if op == "PutItem" and params.get("TableName") == table:
            total += put(params["Item"])
        elif op == "BatchWriteItem":
            for request in params["RequestItems"].get(table, []):
                if "PutRequest" in request:
                    total += put(request["PutRequest"]["Item"])
        elif op == "TransactWriteItems":
            for entry in params["TransactItems"]:
                if "Put" in entry and entry["Put"]["TableName"] == table:
                    total += put(entry["Put"]["Item"], factor=2)
        elif op == "UpdateItem" and params.get("TableName") == table:
            key = f"{params['Key']['pk']['S']}|{params['Key']['sk']['S']}"
            total += put(images.get(key) or params["Key"])
    return total


def writes_per_run() -> list[Row]:
    """One successful scheduled demo run with 20 log lines, through the runner's handler."""
    from job_runner import handler

    with isolated_aws():
        client = new_client("dynamodb")
        add_job(client)
        runner = runner_service(client)
        recorder = RequestRecorder(client)
        with counting(client, capacity=True) as calls:
            result = handler.handle(schedule_event(utcnow()), FakeContext(), runner)  # type: ignore[arg-type]
        recorder.detach()
        if result.get("status") != "completed":
            raise RuntimeError(f"demo run did not complete: {result}")
        run_id = result["run_id"]
        images = {
            f"{i['pk']['S']}|{i['sk']['S']}": i
            for i in client.query(
                TableName="RunsTable",
                KeyConditionExpression="pk = :pk",
                ExpressionAttributeValues={":pk": {"S": f"RUN#{run_id}"}},
            )["Items"]
        }
        entries = sum(len(i["entries"]["L"]) for k, i in images.items() if k.split("|")[1].startswith("LOG#"))
        writes = calls.total(WRITE_OPS)
        wcu = estimate_wcu(recorder.requests, images, "RunsTable")
        reads = calls.total() - writes
        breakdown = ", ".join(f"{op} {n}" for op, n in sorted(calls.calls.items()) if op in WRITE_OPS)
    return [
        Row(
            "writes per run: DynamoDB write requests (demo run, 20 log lines)",
            writes,
            "requests",
            f"<= {MAX_WRITE_REQUESTS}",
            writes <= MAX_WRITE_REQUESTS,
            f"{breakdown}; {entries} log entries stored; {reads} read request(s)",
        ),
        Row(
            "writes per run: write units (estimated from item sizes, GSIs included)",
            wcu,
            "WCU",
            "informational",
            None,
            f"moto reports a constant {calls.moto_capacity:g} units; sizes computed per DynamoDB rules",
        ),
    ]


def fill_history(
    client: Any, count: int, *, day_spread: int = 28, owner: str = "bench-owner", table: str = "RunsTable"
) -> float:
    """`count` terminal runs, seeded straight into moto (see `seed_items`); like every terminal
    run they carry no active-index key. Returns seconds taken."""
    from jobtracker_common.ids import new_id
    from jobtracker_common.models import Run, RunStatus, Trigger
    from jobtracker_common.repositories import RunsRepository

    repo = RunsRepository(client, "RunsTable")
    started = time.perf_counter()
    now = utcnow()
    base = Run(
        run_id="TEMPLATE",
        job_id=JOB_ID,
        job_name="bench job",
        job_type="demo",
        owner_id=owner,
        trigger=Trigger.SCHEDULE,
        status=RunStatus.COMPLETED,
        queued_at=now,
        started_at=now,
        finished_at=now,
        duration_ms=1200,
    )
    item = repo._to_item(base)
    statuses = [{"S": s} for s in ("completed", "completed", "failed", "completed", "timed_out")]

    def overrides() -> Any:
        for i in range(count):
            at = now - timedelta(days=i % day_spread, seconds=i)
            run_id = new_id(at)
            yield {
                "pk": {"S": f"RUN#{run_id}"},
                "run_id": {"S": run_id},
                "run_day": {"S": at.strftime("%Y-%m-%d")},
                "queued_at": {"S": at.isoformat()},
                "status": statuses[i % len(statuses)],
            }

    seed_items(table, item, overrides())
    return time.perf_counter() - started


def active_runs_cost(history: int = 100_000, active: int = 10) -> list[Row]:
    """Items read by `/job-logs/active` (RunsRepository.list_active) with `active` active runs
    among `history` terminal ones; beside it, what a Scan (the seed's way) reads."""
    from jobtracker_common.lifecycle import running_lease
    from jobtracker_common.models import Run, RunStatus, Trigger
    from jobtracker_common.repositories import RunsRepository

    with isolated_aws():
        client = new_client("dynamodb")
        fill_seconds = fill_history(client, history)
        repo = RunsRepository(client, "RunsTable")
        now = utcnow()
        for n in range(active):
            repo.create(
                Run(
                    run_id=f"01JACTIVE{n:017d}",
                    job_id=JOB_ID,
                    job_name="bench job",
                    job_type="demo",
                    owner_id="bench-owner",
                    trigger=Trigger.MANUAL,
                    status=RunStatus.RUNNING,
                    queued_at=now,
                    started_at=now,
                    lease_until=running_lease(now, 300),
                )
            )
        with counting(client) as calls:
            found = repo.list_active()
        if len(found) != active:
            raise RuntimeError(f"list_active returned {len(found)} runs, expected {active}")
        # A Scan reads (and bills) every item of the table whatever its filter; moto's Scan
        # serialises the whole table per page (minutes at this size), so the count comes from
        # DescribeTable instead of paging through it.
        scanned = int(client.describe_table(TableName="RunsTable")["Table"]["ItemCount"])
    read = calls.items_read
    return [
        Row(
            f"active runs: items read by list_active ({active} active among {history:,})",
            read,
            "items",
            f"<= {active} (proportional to active runs)",
            read <= active,
            f"{calls.total()} Query requests (one per index shard); history seeded in {fill_seconds:.1f} s",
        ),
        Row(
            "active runs: items read by a filtered Scan (seed's approach), same data",
            scanned,
            "items",
            "informational",
            None,
            f"a Scan reads every item (DescribeTable ItemCount); "
            f"{scanned / max(read, 1):,.0f}x the index read",
        ),
    ]
