"""Scheduled every 5 minutes: digests, quiet-hours releases and the sweep of orphaned claims.

Everything it handles comes from the sparse `due` index of the Notifications table, so one
tick reads only work whose time has come:
- `queued` records (hourly/daily users): one digest email per (user, period) listing them all;
- `held` records (quiet hours) and `pending` ones (a failed send): sent one by one;
- `sending` records whose lease expired (a worker died mid-send): recorded `unconfirmed`.

A digest has its own exactly-once record (`DIGEST#<user>` / period key) that lists the items it
covers; a crash after SES accepted a digest but before the items were marked leaves the
digest `sent` (or `unconfirmed`), and the next tick marks its items without sending again.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from jobtracker_common import aws
from jobtracker_common.errors import JobTrackerError, PermanentDeliveryError, TransientError
from jobtracker_common.observability import logger as make_logger
from jobtracker_common.observability import metrics as make_metrics
from jobtracker_common.repositories.notifications import (
    NotificationRecord,
    NotificationState,
    digest_key,
    due_shard,
)
from jobtracker_common.settings import load_settings
from jobtracker_common.timeutil import epoch_seconds, parse_iso, to_iso
from jobtracker_common.users import NotificationEvent, User

from notifier.periods import follow_up_period, period_label
from notifier.render import render_digest
from notifier.sender import UNLIMITED, Budget, OutcomeUnknownError
from notifier.service import NotifierService, Outcome, SendBatch, UnrecordedSendsError
from notifier.settings import NotifierSettings
from notifier.wiring import build_service, ses_client

logger = make_logger("digest")
metrics = make_metrics("digest")

#: Rows listed in one digest email; the rest are counted ("... and N more").
DIGEST_ROWS = 200
#: Bytes of item keys one digest record may list (a DynamoDB item holds 400 KB): a period with
#: more items is covered by follow-up digests, the next tick each.
DIGEST_KEY_BYTES = 200_000
POSTPONED = "postponed"


class DigestFailedError(JobTrackerError):
    """Digests that failed for a reason other than a transient one (logged with their trace)."""


def _quiet_until(user: User, record: NotificationRecord, now: datetime) -> datetime | None:
    """When the user's current quiet hours end, if the record fell due inside them and `now` is
    still inside them. Due inside: a record due at a window's end, picked up once the next
    window has begun (a gap shorter than a tick), goes out, or it would be postponed every day."""
    quiet = user.preferences.quiet_hours
    if (
        not quiet
        or not record.due_at
        or not quiet.contains(now)
        or not quiet.contains(parse_iso(record.due_at))
    ):
        return None
    return quiet.window_end(now).astimezone(UTC)


def _covered(items: list[NotificationRecord]) -> list[NotificationRecord]:
    """The items one digest covers, oldest first, as many as its record can list."""
    shown = sorted(items, key=lambda i: (i.payload.get("finished_at") or i.created_at, i.key))
    size = 0
    for count, item in enumerate(shown):
        size += len(item.key.encode()) + 4
        if size > DIGEST_KEY_BYTES:
            return shown[:count]
    return shown


@dataclass
class DigestReport:
    outcomes: dict[str, int] = field(default_factory=dict)
    digests_sent: int = 0
    errors: list[str] = field(default_factory=list)
    #: Unexpected failures: the invocation ends in an error once everything else is done.
    failed: list[str] = field(default_factory=list)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def as_dict(self) -> dict[str, Any]:
        return {
            "outcomes": self.outcomes,
            "digests_sent": self.digests_sent,
            "errors": self.errors,
            "failed": self.failed,
        }


class DigestService:
    def __init__(self, notifier: NotifierService) -> None:
        self.notifier = notifier
        self.notifications = notifier.notifications
        self.clock = notifier.clock

    def run(self, budget: Budget = UNLIMITED) -> DigestReport:
        report = DigestReport()
        now = self.clock()
        due = list(self.notifications.list_due(now))
        try:
            users = self.notifier.users.get_many(r.user_id for r in due)
        except TransientError as exc:
            # Without the users nothing can be judged; everything stays due for the next tick.
            report.errors.append(f"users not read: {exc.message}")
            return report
        digests: dict[tuple[str, str], list[NotificationRecord]] = defaultdict(list)
        try:
            # Held and pending releases record `sent` together, as the stream path does.
            with self.notifier.batch([]) as batch:
                for record in due:
                    self._sort(
                        record,
                        user=users.get(record.user_id),
                        now=now,
                        budget=budget,
                        report=report,
                        batch=batch,
                        digests=digests,
                    )
        except UnrecordedSendsError as exc:
            # Sent, and their claims forbid a resend: the sweep records them unconfirmed.
            report.errors.append(exc.message)
        for (user_id, period), items in sorted(digests.items()):
            try:
                self._digest(user_id, users.get(user_id), period, items, budget=budget, report=report)
            except TransientError as exc:
                report.errors.append(f"digest {user_id} {period}: {exc.message}")
            except Exception as exc:
                # One user's digest that cannot go out (a bug, data DynamoDB refuses) must not
                # hold back every digest after it; the tick reports it as an error at the end.
                logger.exception("digest failed", extra={"user_id": user_id, "period": period})
                report.failed.append(f"digest {user_id} {period}: {type(exc).__name__}: {exc}")
        return report

    def _sort(
        self,
        record: NotificationRecord,
        *,
        user: User | None,
        now: datetime,
        budget: Budget,
        report: DigestReport,
        batch: SendBatch,
        digests: dict[tuple[str, str], list[NotificationRecord]],
    ) -> None:
        """Settle one due record now (skip, sweep, release) or set it aside for its digest."""
        waiting = record.state in (NotificationState.HELD, NotificationState.QUEUED)
        if waiting and (reason := self._no_longer_wanted(record, user)):
            if self.notifications.skip_waiting(record.pk, record.sk, reason=reason, now=now):
                report.count(Outcome.SKIPPED.value)
            return
        if waiting and user is not None and (until := _quiet_until(user, record, now)) is not None:
            # Judged by the user's quiet hours now, not those of when it was queued: a window set
            # or widened while it waited holds it too (all of a digest's items alike, so the
            # digest goes out once, at the window's end).
            if self.notifications.postpone(record.pk, record.sk, until=until, now=now):
                report.count(POSTPONED)
            return
        if record.state is NotificationState.SENDING:
            expired = record.lease_until is not None and parse_iso(record.lease_until) < now
            if expired and self.notifications.mark_unconfirmed(record.pk, record.sk, now=now):
                logger.warning("orphaned claim recorded as unconfirmed", extra={"key": record.key})
                report.count(Outcome.UNCONFIRMED.value)
        elif record.entity == "notification" and record.state is NotificationState.QUEUED:
            digests[(record.user_id, record.digest_period or "")].append(record)
        elif record.entity == "notification" and record.state in (
            NotificationState.HELD,
            NotificationState.PENDING,
        ):
            self._release(record, budget, report, batch)

    @staticmethod
    def _no_longer_wanted(record: NotificationRecord, user: User | None) -> str | None:
        """Why a waiting record must not go out any more, judged by the user's current settings.

        Someone who switched an event off (or all email) during quiet hours or a digest period
        expects silence, not a delayed email they no longer asked for.
        """
        if user is None:
            return "user no longer exists"
        if not user.email:
            return "user has no email address"
        try:
            event = NotificationEvent(record.event)
        except ValueError:
            return None
        job_id = str(record.payload.get("job_id", ""))
        job_type = str(record.payload.get("job_type", ""))
        if user.preferences.resolve(event, job_id=job_id, job_type=job_type) is None:
            return "preferences changed while waiting"
        return None

    def _release(
        self, record: NotificationRecord, budget: Budget, report: DigestReport, batch: SendBatch
    ) -> None:
        try:
            outcome = self.notifier.deliver(
                record.pk, record.sk, budget, release_held=True, seen=record, batch=batch
            )
        except TransientError as exc:
            report.errors.append(f"{record.key}: {exc.message}")
            return
        report.count(outcome.value)

    def _digest(
        self,
        user_id: str,
        user: User | None,
        period: str,
        items: list[NotificationRecord],
        *,
        budget: Budget,
        report: DigestReport,
    ) -> None:
        self.notifier.require_time(budget)
        now = self.clock()
        pk, sk = digest_key(user_id, period)
        shown = _covered(items)
        keys = sorted(i.key for i in shown)
        existing = self.notifications.get(pk, sk)
        token = self.notifier.new_token()
        lease_until = now + timedelta(seconds=self.notifier.settings.lease_seconds)
        address = user.email if user and user.email else items[0].email
        timezone = user.preferences.timezone if user else "UTC"
        # Rendered before any claim: a rendering bug must not strand a claimed digest.
        email = render_digest(
            [{"kind": i.kind, "payload": i.payload} for i in shown[:DIGEST_ROWS]],
            product=self.notifier.settings.product_name,
            dashboard_url=self.notifier.settings.dashboard_url,
            period_label=period_label(period, timezone),
            omitted=max(0, len(shown) - DIGEST_ROWS),
        )
        if existing is None:
            record = NotificationRecord(
                pk=pk,
                sk=sk,
                entity="digest",
                user_id=user_id,
                state=NotificationState.SENDING,
                kind="digest",
                email=address,
                created_at=to_iso(now),
                send_attempts=1,
                claim_token=token,
                lease_until=to_iso(lease_until),
                due_pk=due_shard(user_id),
                due_at=to_iso(lease_until),
                digest_period=period,
                items=keys,
                expires_at=epoch_seconds(now + timedelta(days=self.notifier.settings.retention_days)),
            )
            if not self.notifications.create(record) and not self.notifier.own_claim(pk, sk, token):
                return  # another tick got there first; its record decides next time
        elif existing.state in (
            NotificationState.SENT,
            NotificationState.UNCONFIRMED,
            NotificationState.FAILED_PERMANENT,
        ):
            self._settle(existing, items, now, report)
            return
        elif existing.state is NotificationState.PENDING:
            if not self.notifications.claim(
                pk,
                sk,
                token=token,
                now=now,
                lease_until=lease_until,
                from_states=(NotificationState.PENDING,),
                due_pk=due_shard(user_id),
                items=keys,
            ) and not self.notifier.own_claim(pk, sk, token):
                return
            record = existing.model_copy(update={"items": keys, "email": address})
        else:
            return  # sending: a live worker has it (or the sweep will record it unconfirmed)
        if not address:
            self.notifications.mark_failed_permanent(pk, sk, token=token, error="no address", now=now)
            self._settle(
                record.model_copy(update={"state": NotificationState.FAILED_PERMANENT}), items, now, report
            )
            return
        try:
            message_id = self.notifier.sender.send(address, email, budget)
        except PermanentDeliveryError as exc:
            self.notifications.mark_failed_permanent(pk, sk, token=token, error=exc.message, now=self.clock())
            report.count(Outcome.FAILED_PERMANENT.value)
        except OutcomeUnknownError as exc:
            self.notifications.mark_unknown(pk, sk, token=token, error=exc.message, now=self.clock())
            report.count(Outcome.UNCONFIRMED.value)
        except TransientError as exc:
            self.notifications.release(pk, sk, token=token, error=exc.message, now=now, retry_at=now)
            raise
        else:
            self.notifications.mark_sent(pk, sk, token=token, message_id=message_id, now=self.clock())
            report.digests_sent += 1
        self._settle(record, items, self.clock(), report)

    def _settle(
        self, digest: NotificationRecord, items: list[NotificationRecord], now: Any, report: DigestReport
    ) -> None:
        """Mark the items a finished digest covered; late arrivals go into a follow-up digest."""
        covered = set(digest.items or [])
        for item in items:
            if item.key in covered:
                if self.notifications.mark_digested(
                    item.pk, item.sk, digest=f"{digest.pk}|{digest.sk}", now=now
                ):
                    report.count("digested")
            else:
                self.notifications.move_to_period(
                    item.pk, item.sk, period=follow_up_period(digest.sk, now), now=now
                )


@lru_cache(maxsize=1)
def service() -> DigestService:
    # Most ticks find nothing to send: the SES client is built by the first send, not by every
    # cold start (as jinja2 is loaded by the first render).
    return DigestService(build_service(load_settings(NotifierSettings), ses=aws.lazy(ses_client)))


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    report = service().run(Budget(remaining_ms=context.get_remaining_time_in_millis))
    for outcome, count in report.outcomes.items():
        metrics.add_metric(name=f"Digest_{outcome}", unit=MetricUnit.Count, value=count)
    metrics.add_metric(name="DigestsSent", unit=MetricUnit.Count, value=report.digests_sent)
    if report.errors:
        # Work left for the next tick (5 minutes): logged, counted, retried then; not raised, or the
        # scheduler's retry would run a second tick at the same time.
        logger.warning("digest tick left work for the next tick", extra={"errors": report.errors[:50]})
        metrics.add_metric(name="DigestDeferred", unit=MetricUnit.Count, value=len(report.errors))
    if report.failed:
        # Not work for the next tick but a fault: the function's error alarm must see it.
        raise DigestFailedError(f"{len(report.failed)} digest(s) failed: " + "; ".join(report.failed[:5]))
    return report.as_dict()
