"""Notification delivery: per-recipient decisions and the exactly-once send protocol.

One record per (run, event, attempt where relevant, recipient) in the Notifications table is
the guard (see `jobtracker_common.repositories.notifications`):

1. claim — the record is created already claimed (`sending`, claim token, lease), or an
   existing `pending`/due `held` record is claimed with a conditional update. Only one
   worker can win; replays and duplicates find the record and stop. A claim DynamoDB applied
   but whose answer was lost (botocore's retry then fails the condition) is known by its token.
2. send — one SES call (throttling retried inside the time budget).
3. record — `sent` (with the SES message id) / `failed_permanent`, conditional on the token.
   Inside `batch()` (a stream batch, a digest tick's releases) `sent` is instead written as the
   whole record with the batch's other sent records, 25 per BatchWriteItem (see `SendBatch`).

A crash between 2 and 3 leaves the record `sending`; it is never claimed again, so it is never
re-sent: once its lease expires the sweep records it as `unconfirmed` (metric + log). The price
is at-most-once in that window: a crash after the claim but *before* SES accepted the message
loses that one email — visible as `unconfirmed`, never silent.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from enum import StrEnum
from typing import Any

from jobtracker_common.dynamo import BATCH_WRITE_LIMIT
from jobtracker_common.errors import JobTrackerError, PermanentDeliveryError, TransientError
from jobtracker_common.repositories.notifications import (
    Delivery,
    NotificationRecord,
    NotificationsRepository,
    NotificationState,
    due_shard,
    notification_key,
)
from jobtracker_common.repositories.users import UsersRepository
from jobtracker_common.timeutil import Clock, epoch_seconds, parse_iso, to_iso, utcnow
from jobtracker_common.users import NotificationFrequency, User

from notifier.events import RunEvent, snapshot
from notifier.periods import digest_period
from notifier.render import RenderedEmail, render_event
from notifier.sender import UNLIMITED, Budget, OutcomeUnknownError, SesSender
from notifier.settings import NotifierSettings

#: After this many claims a notification is given up (recorded failed_permanent), not retried forever.
MAX_SEND_ATTEMPTS = 8


class Outcome(StrEnum):
    SENT = "sent"
    FAILED_PERMANENT = "failed_permanent"
    UNCONFIRMED = "unconfirmed"
    HELD = "held"
    QUEUED = "queued"
    SUPPRESSED = "suppressed"
    SKIPPED = "skipped"
    DUPLICATE = "duplicate"
    IN_FLIGHT = "in_flight"


class UnrecordedSendsError(JobTrackerError):
    """Emails went out but their `sent` could not be written.

    Their claims stay `sending`, so they are never sent again; the sweep records them
    `unconfirmed` once the lease has expired.
    """

    def __init__(self, keys: list[str]) -> None:
        super().__init__(f"{len(keys)} sent email(s) not recorded: {', '.join(keys[:20])}")
        self.keys = keys


@dataclass
class SendBatch:
    """One unit of work (a stream batch, a digest tick's releases) shared by its sends.

    `users`: every recipient looked up so far (None: not provisioned), read with one
    BatchGetItem for the whole batch instead of one per run event. `sent`: finished claims of
    this worker waiting to be written together; at most one BatchWriteItem page (25) waits, which
    also bounds how many sent emails a crash can leave recorded only as claims.
    """

    users: dict[str, User | None] = field(default_factory=dict)
    sent: list[NotificationRecord] = field(default_factory=list)
    unrecorded: list[str] = field(default_factory=list)


def recipients_of(run_event: RunEvent) -> list[str]:
    return list(dict.fromkeys([run_event.run.owner_id, *run_event.run.subscribers]))


def is_own_claim(record: NotificationRecord | None, token: str) -> bool:
    return record is not None and record.state is NotificationState.SENDING and record.claim_token == token


class DeliveryFailedError(TransientError):
    """Some recipients of one run event could not be served yet; the record must be retried."""

    def __init__(self, message: str, outcomes: dict[str, Outcome]) -> None:
        super().__init__(message)
        self.outcomes = outcomes


@dataclass
class NotifierService:
    users: UsersRepository
    notifications: NotificationsRepository
    sender: SesSender
    settings: NotifierSettings
    clock: Clock = utcnow
    new_token: Callable[[], str] = field(default=lambda: uuid.uuid4().hex)

    @contextmanager
    def batch(self, run_events: Iterable[RunEvent]) -> Iterator[SendBatch]:
        """Serve several run events as one unit: users read once, `sent` written 25 at a time.

        On exit (also when the body raises) the remaining `sent` records are written; sends
        whose outcome could not be written raise UnrecordedSendsError.
        """
        batch = SendBatch()
        wanted = list(dict.fromkeys(u for e in run_events for u in recipients_of(e)))
        try:
            found = self.users.get_many(wanted)
        except Exception:  # each run event then reads its own users (and fails alone)
            found = None
        if found is not None:
            batch.users = {u: found.get(u) for u in wanted}
        try:
            yield batch
        finally:
            self._write_sent(batch)
        if batch.unrecorded:
            raise UnrecordedSendsError(batch.unrecorded)

    # ---- stream path ---------------------------------------------------------------------
    def notify(
        self, run_event: RunEvent, budget: Budget = UNLIMITED, batch: SendBatch | None = None
    ) -> dict[str, Outcome]:
        """Serve every recipient of one run event; raises DeliveryFailedError if any must retry.

        Recipients already served are skipped on the retry by their records, so retrying the
        whole stream record never re-sends to them.
        """
        run = run_event.run
        recipients = recipients_of(run_event)
        users = self._users(recipients, batch)
        outcomes: dict[str, Outcome] = {}
        errors: list[str] = []
        for user_id in recipients:
            try:
                outcomes[user_id] = self._notify_one(run_event, user_id, users.get(user_id), budget, batch)
            except TransientError as exc:
                errors.append(f"{user_id}: {exc.message}")
        if errors:
            raise DeliveryFailedError(
                f"run {run.run_id} {run_event.event.value}: {len(errors)} recipient(s) to retry: "
                + "; ".join(errors),
                outcomes,
            )
        return outcomes

    def _users(self, user_ids: list[str], batch: SendBatch | None) -> dict[str, User | None]:
        known = batch.users if batch is not None else {}
        missing = [u for u in user_ids if u not in known]
        if missing:
            found = self.users.get_many(missing)
            known = known | {u: found.get(u) for u in missing}
        return {u: known[u] for u in user_ids}

    def _notify_one(
        self, run_event: RunEvent, user_id: str, user: User | None, budget: Budget, batch: SendBatch | None
    ) -> Outcome:
        run = run_event.run
        pk, sk = notification_key(run.run_id, run_event.event.value, run_event.key_attempt, user_id)
        now = self.clock()
        payload = snapshot(run)
        base = {
            "pk": pk,
            "sk": sk,
            "user_id": user_id,
            "event": run_event.event.value,
            "run_id": run.run_id,
            "payload": payload,
            "created_at": to_iso(now),
            "expires_at": epoch_seconds(now + timedelta(days=self.settings.retention_days)),
        }
        if user is None or not user.email:
            # Recorded so "why did X get nothing?" has an answer; nothing to retry.
            reason = "user not provisioned" if user is None else "user has no email address"
            self.notifications.create(
                NotificationRecord.model_validate(
                    {
                        **base,
                        "state": NotificationState.SKIPPED,
                        "kind": run_event.event.value,
                        "reason": reason,
                    }
                )
            )
            return Outcome.SKIPPED
        prefs = user.preferences
        kind = prefs.resolve(run_event.event, job_id=run.job_id, job_type=run.job_type)
        if kind is None:
            return Outcome.SUPPRESSED
        base |= {"kind": kind.value, "email": user.email}
        if prefs.notification_frequency is not NotificationFrequency.IMMEDIATE:
            period = digest_period(prefs, now)
            record = NotificationRecord.model_validate(
                base
                | {
                    "state": NotificationState.QUEUED,
                    "delivery": Delivery.DIGEST,
                    "digest_period": period.key,
                    "due_pk": due_shard(user_id),
                    "due_at": to_iso(period.due),
                }
            )
            return Outcome.QUEUED if self.notifications.create(record) else Outcome.DUPLICATE
        if prefs.quiet_hours and prefs.quiet_hours.contains(now):
            record = NotificationRecord.model_validate(
                base
                | {
                    "state": NotificationState.HELD,
                    "delivery": Delivery.HELD,
                    "due_pk": due_shard(user_id),
                    "due_at": to_iso(prefs.quiet_hours.window_end(now)),
                }
            )
            return Outcome.HELD if self.notifications.create(record) else Outcome.DUPLICATE
        self.require_time(budget)
        token = self.new_token()
        lease_until = now + timedelta(seconds=self.settings.lease_seconds)
        # Rendered before the claim: a rendering bug must not strand a claim.
        email = self.render(kind.value, payload)
        # The claim leaves the payload out: nothing renders a claim again unless its send fails,
        # and then `release` stores it. Claims sit in the `due` index (projection ALL), so the
        # snapshot would be written twice per email for nothing.
        claimed = NotificationRecord.model_validate(
            {k: v for k, v in base.items() if k != "payload"}
            | {
                "state": NotificationState.SENDING,
                "claim_token": token,
                "lease_until": to_iso(lease_until),
                "send_attempts": 1,
                "due_pk": due_shard(user_id),
                "due_at": to_iso(lease_until),
            }
        )
        if self.notifications.create(claimed):
            return self._send(claimed, token, email, budget, payload=payload, batch=batch)
        existing = self.notifications.get(pk, sk)
        if is_own_claim(existing, token):
            # The put was applied but its answer lost; botocore's retry then failed the condition.
            return self._send(claimed, token, email, budget, payload=payload, batch=batch)
        return self.deliver(pk, sk, budget, seen=existing, batch=batch)

    # ---- shared by the stream path and the digest function -------------------------------
    def deliver(
        self,
        pk: str,
        sk: str,
        budget: Budget = UNLIMITED,
        *,
        release_held: bool = False,
        seen: NotificationRecord | None = None,
        batch: SendBatch | None = None,
    ) -> Outcome:
        """Send an existing record if it still needs sending; otherwise report why not.

        `seen`: the record as just read elsewhere (the digest's due-index query), so it is not read
        again. It may be stale; that is safe because the claim is conditional on the state.
        """
        record = seen or self.notifications.get(pk, sk)
        if record is None:
            raise TransientError(f"notification {pk}/{sk} vanished")
        now = self.clock()
        state = record.state
        if state.is_final:
            return Outcome.DUPLICATE
        if state is NotificationState.QUEUED:
            return Outcome.QUEUED
        if state is NotificationState.HELD and not release_held:
            return Outcome.HELD
        if state is NotificationState.SENDING:
            if record.lease_until and parse_iso(record.lease_until) < now:
                self.notifications.mark_unconfirmed(pk, sk, now=now)
                return Outcome.UNCONFIRMED
            return Outcome.IN_FLIGHT
        self.require_time(budget)
        email = self.render(record.kind, record.payload)
        token = self.new_token()
        from_states = (NotificationState.PENDING, NotificationState.HELD)
        claimed = self.notifications.claim(
            pk,
            sk,
            token=token,
            now=now,
            lease_until=now + timedelta(seconds=self.settings.lease_seconds),
            from_states=from_states,
            due_pk=due_shard(record.user_id),
            due_by=now if state is NotificationState.HELD else None,
        )
        if claimed is None:
            claimed = self.own_claim(pk, sk, token)
        if claimed is None:
            return Outcome.IN_FLIGHT  # another worker claimed it between our read and write
        if claimed.send_attempts > MAX_SEND_ATTEMPTS:
            self.notifications.mark_failed_permanent(
                pk, sk, token=token, error=f"gave up after {claimed.send_attempts - 1} attempts", now=now
            )
            return Outcome.FAILED_PERMANENT
        return self._send(claimed, token, email, budget, batch=batch)

    def own_claim(self, pk: str, sk: str, token: str) -> NotificationRecord | None:
        """The record, if a claim reported as failed is in fact this worker's own: DynamoDB applied
        it, the answer was lost, and botocore's retry of the same write failed its condition."""
        record = self.notifications.get(pk, sk)
        return record if is_own_claim(record, token) else None

    def require_time(self, budget: Budget) -> None:
        """Claim nothing that cannot be sent in this invocation (no claim/release churn)."""
        if budget.left_seconds() < self.sender.call_seconds:
            raise TransientError("no time left in this invocation to send")

    def render(self, kind: str, payload: dict[str, Any]) -> RenderedEmail:
        return render_event(
            kind,
            payload,
            product=self.settings.product_name,
            dashboard_url=self.settings.dashboard_url,
        )

    def _send(
        self,
        record: NotificationRecord,
        token: str,
        email: RenderedEmail,
        budget: Budget,
        *,
        payload: dict[str, Any] | None = None,
        batch: SendBatch | None = None,
    ) -> Outcome:
        """Send a claimed record and record the outcome.

        `record`: the claim exactly as stored, so with a `batch` its `sent` can be written as a
        whole item; `payload`: what a released claim needs to be rendered again, if it lacks it.
        """
        pk, sk = record.pk, record.sk
        if not record.email:
            self.notifications.mark_failed_permanent(
                pk, sk, token=token, error="no address", now=self.clock()
            )
            return Outcome.FAILED_PERMANENT
        try:
            message_id = self.sender.send(record.email, email, budget)
        except PermanentDeliveryError as exc:
            self.notifications.mark_failed_permanent(pk, sk, token=token, error=exc.message, now=self.clock())
            return Outcome.FAILED_PERMANENT
        except OutcomeUnknownError as exc:
            self.notifications.mark_unknown(pk, sk, token=token, error=exc.message, now=self.clock())
            return Outcome.UNCONFIRMED
        except Exception as exc:
            now = self.clock()
            message = exc.message if isinstance(exc, TransientError) else f"{type(exc).__name__}: {exc}"
            self.notifications.release(
                pk,
                sk,
                token=token,
                error=message,
                now=now,
                retry_at=now + timedelta(minutes=1),
                payload=payload,
            )
            if isinstance(exc, TransientError):
                raise
            raise TransientError(message) from exc
        if batch is not None:
            batch.sent.append(
                record.model_copy(
                    update={
                        "state": NotificationState.SENT,
                        "message_id": message_id,
                        "updated_at": to_iso(self.clock()),
                        "lease_until": None,
                        "due_pk": None,
                        "due_at": None,
                    }
                )
            )
            if len(batch.sent) >= BATCH_WRITE_LIMIT:
                self._write_sent(batch)
            return Outcome.SENT
        self.notifications.mark_sent(pk, sk, token=token, message_id=message_id, now=self.clock())
        return Outcome.SENT

    def _write_sent(self, batch: SendBatch) -> None:
        """Write the batch's waiting `sent` records; what cannot be written goes to `unrecorded`.

        Never raises: the emails are out, and their claims already prevent a second one.
        """
        records, batch.sent = batch.sent, []
        if not records:
            return
        try:
            left = self.notifications.put_outcomes(records)
        except Exception:  # fall back to one conditional write each
            left = records
        for record in left:
            try:
                self.notifications.mark_sent(
                    record.pk,
                    record.sk,
                    token=record.claim_token or "",
                    message_id=record.message_id or "",
                    now=self.clock(),
                )
            except Exception:  # reported by batch() as UnrecordedSendsError
                batch.unrecorded.append(record.key)
