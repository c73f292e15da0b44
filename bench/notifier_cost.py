"""Notifier cost: DynamoDB and SES calls per email, and time per email against a bare SES send.

1,000 run transitions (running -> completed, each owner wants completion emails, immediate)
go through the notifier's stream handler in batches of the template's size; beside each batch,
the same number of bare `sesv2.send_email` calls go to the same moto, so both sides see the
same load. moto in-process answers both.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

from bench.common import Row, counting, module_exists, not_measured, utcnow

MAX_CALLS = 3
MAX_RATIO = 2.0


def transition_records(count: int, owners: int, *, status: str = "completed") -> list[dict[str, Any]]:
    """Stream records as Lambda delivers them: MODIFY running -> `status`, one per run."""
    from jobtracker_common.ids import new_id
    from jobtracker_common.lifecycle import running_lease
    from jobtracker_common.models import ErrorInfo, Run, RunStatus, Trigger
    from jobtracker_common.repositories import RunsRepository

    repo = RunsRepository(None, "RunsTable")  # type: ignore[arg-type]
    now = utcnow()
    records = []
    for i in range(count):
        started = now - timedelta(seconds=30 + i)
        running = Run(
            run_id=new_id(started),
            job_id=f"job-{i % 20}",
            job_name="nightly backup",
            job_type="demo",
            target="core-sw-01",
            owner_id=f"user-{i % owners}",
            trigger=Trigger.SCHEDULE,
            status=RunStatus.RUNNING,
            queued_at=started,
            started_at=started,
            lease_until=running_lease(started, 300),
            version=1,
        )
        final = running.model_copy(
            update={
                "status": RunStatus(status),
                "finished_at": started + timedelta(seconds=3),
                "duration_ms": 3000,
                "lease_until": None,
                "version": 2,
                "error": None
                if status == "completed"
                else ErrorInfo(type="DemoFailure", message="demo job failed as configured"),
            }
        )
        seq = f"{i + 1:021d}"
        records.append(
            {
                "eventID": f"bench-{seq}",
                "eventName": "MODIFY",
                "eventVersion": "1.1",
                "eventSource": "aws:dynamodb",
                "awsRegion": "us-east-1",
                "eventSourceARN": "arn:aws:dynamodb:us-east-1:123456789012:table/RunsTable/stream/bench",
                "dynamodb": {
                    "Keys": {"pk": {"S": f"RUN#{running.run_id}"}, "sk": {"S": "META"}},
                    "OldImage": repo._to_item(running),
                    "NewImage": repo._to_item(final),
                    "SequenceNumber": seq,
                    "SizeBytes": 900,
                    "StreamViewType": "NEW_AND_OLD_IMAGES",
                },
            }
        )
    return records


def measure(transitions: int = 1_000, owners: int = 10) -> list[Row]:
    if not module_exists("notifier.handler"):
        return [not_measured("notifier cost", f"<= {MAX_CALLS} calls per email", "notifier not there yet")]
    from notifier.sender import SesSender

    from bench.world import SENDER, add_user, stream_source, world

    batch_size = stream_source("NotifierFunction").batch_size
    records = transition_records(transitions, owners)
    with world(tracker=False) as w:
        for n in range(owners):
            add_user(w.ddb, f"user-{n}")
        bare = SesSender(client=w.ses, sender_email=SENDER, product_name="NetRaven")
        # Rendering is the notifier's own cost; the bare send carries the same rendered bytes.
        sample = bare.request("user-0@example.com", _sample_email(records[0]))
        notifier_seconds = bare_seconds = notifier_ses_seconds = 0.0
        bare_sends = 0
        failures = 0
        with counting(w.ddb) as ddb_calls, counting(w.ses) as ses_calls:
            for start in range(0, len(records), batch_size):
                batch = records[start : start + batch_size]
                ses_seconds_before = ses_calls.call_seconds
                t0 = time.perf_counter()
                response = w.deliver_notifier(batch)
                notifier_seconds += time.perf_counter() - t0
                notifier_ses_seconds += ses_calls.call_seconds - ses_seconds_before
                failures += len(response.get("batchItemFailures", []))
                ses_before = ses_calls.total()
                t0 = time.perf_counter()
                for _ in batch:
                    w.ses.send_email(**sample)
                bare_seconds += time.perf_counter() - t0
                bare_sends += len(batch)
                # Bare sends are the yardstick, not the notifier's calls.
                ses_calls.calls["SendEmail"] -= ses_calls.total() - ses_before
        emails = len(w.sent_emails()) - bare_sends
    ddb_total, ses_total = ddb_calls.total(), ses_calls.total()
    per_email = (ddb_total + ses_total) / max(emails, 1)
    notifier_per = notifier_seconds / max(emails, 1)
    bare_per = bare_seconds / max(bare_sends, 1)
    ratio = notifier_per / bare_per
    breakdown = ", ".join(f"{op} {n}" for op, n in sorted(ddb_calls.calls.items()))
    # Where the notifier's time goes (inside calls = before-call..after-call; moto answers there).
    ddb_ms, ses_ms = (1000 * s / max(emails, 1) for s in (ddb_calls.call_seconds, notifier_ses_seconds))
    rest_ms = notifier_per * 1000 - ddb_ms - ses_ms
    return [
        Row(
            f"notifier: AWS calls per email ({transitions:,} transitions)",
            round(per_email, 2),
            "calls",
            f"<= {MAX_CALLS}",
            per_email <= MAX_CALLS and emails == transitions and failures == 0,
            f"{emails:,} emails; DynamoDB {ddb_total:,} ({breakdown}); SES {ses_total:,}; "
            f"{failures} failed records",
        ),
        Row(
            "notifier: time per email vs a bare SES send",
            round(ratio, 2),
            "x",
            f"<= {MAX_RATIO}x",
            ratio <= MAX_RATIO,
            f"{notifier_per * 1000:.1f} ms vs {bare_per * 1000:.1f} ms per email, batches of {batch_size} "
            f"interleaved with as many bare sends; per email inside DynamoDB calls {ddb_ms:.1f} ms, "
            f"inside SES calls {ses_ms:.1f} ms, the rest (request building, rendering, handler) "
            f"{rest_ms:.1f} ms",
        ),
    ]


def _sample_email(record: dict[str, Any]) -> Any:
    """The email the notifier would render for `record`, so the bare send carries the same bytes."""
    from notifier.events import parse_record, snapshot
    from notifier.render import render_event

    event = parse_record(record)
    assert event is not None
    return render_event(event.event.value, snapshot(event.run), product="NetRaven", dashboard_url=None)
