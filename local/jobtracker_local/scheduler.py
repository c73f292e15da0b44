"""Fires the schedules moto stores but never fires: EventBridge Scheduler and classic rules.

Everything is read through the AWS APIs (Scheduler `list_schedules`/`get_schedule`, EventBridge
`list_rules`/`list_targets_by_rule`), so whatever created a schedule — the API for a job, the
tracker for a retry, the template's ScheduleV2 events (created at startup like SAM would) — is
fired the same way:

- `rate`/`cron`/`at` in AWS syntax with `ScheduleExpressionTimezone`, via the layer's own
  `parse_schedule(...).next_fire_times` (rates count from the schedule's creation or StartDate);
- the target Input with `<aws.scheduler.scheduled-time>`, `<aws.scheduler.schedule-arn>`,
  `<aws.scheduler.attempt-number>` and `<aws.scheduler.execution-id>` substituted like AWS;
- Lambda targets are invoked asynchronously (Lambda's async retries and on-failure apply),
  SQS targets receive the input as a message;
- disabled schedules don't fire; one-time `at()` schedules fire once and are deleted when their
  ActionAfterCompletion is DELETE; StartDate/EndDate bound recurring schedules;
- classic rules with a ScheduleExpression send a "Scheduled Event" (or the target's Input).

pyawscron cannot evaluate some expressions Scheduler accepts (a day some month lacks, 29
February, explicit years): such a schedule is reported once and does not fire until its next
fire time can be computed again (tried from the current time every `UNCOMPUTABLE_RETRY`); it
never fires twice for one time, and never holds up the other schedules.
"""

from __future__ import annotations

import json
import logging
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError
from jobtracker_common.errors import ValidationError
from jobtracker_common.schedules import ScheduleExpression, parse_schedule
from jobtracker_common.timeutil import utcnow

from jobtracker_local.functions import FunctionNotFound, json_default
from jobtracker_local.resources import LocalResources, aws_client

log = logging.getLogger("jobtracker.local")

AsyncInvoke = Callable[[str, Any], None]
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
#: How often a schedule whose next fire time cannot be computed tries again from "now": later
#: months may be ones the library can evaluate (cron(0 12 29 * ? *) after 29 January).
UNCOMPUTABLE_RETRY = timedelta(hours=1)


@dataclass
class _Track:
    """Firing state of one schedule (or rule): the definition version and the next fire time."""

    version: Any
    expression: ScheduleExpression
    next_fire: datetime | None
    detail: dict[str, Any]
    #: Set while the next fire time cannot be computed: when to try again.
    retry_at: datetime | None = None


def scheduled_time_text(when: datetime) -> str:
    """Scheduler's `<aws.scheduler.scheduled-time>`: ISO 8601 in UTC, seconds precision, Z."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def substitute(template: str, *, scheduled: datetime, arn: str, attempt: int = 1) -> str:
    return (
        template.replace("<aws.scheduler.scheduled-time>", scheduled_time_text(scheduled))
        .replace("<aws.scheduler.schedule-arn>", arn)
        .replace("<aws.scheduler.attempt-number>", str(attempt))
        .replace("<aws.scheduler.execution-id>", str(uuid.uuid4()))
    )


class NoFireTime(Exception):
    """A cron expression for which the fire-time library returned nothing."""


def _next_of(expression: ScheduleExpression, after: datetime, anchor: datetime | None) -> datetime | None:
    """The first fire time after `after`; an empty answer for a cron is treated as a failure.

    pyawscron raises or answers nothing for some expressions Scheduler fires. A cron whose
    explicit years are all past also ends up here; retrying it hourly costs nothing.
    """
    fires = expression.next_fire_times(after, 1, anchor=anchor)
    if not fires and expression.kind == "cron":
        raise NoFireTime(f"no fire time after {scheduled_time_text(after)}")
    return fires[0] if fires else None


def _as_datetime(value: Any) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(float(value), UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


class ScheduleEmulator:
    def __init__(
        self,
        resources: LocalResources,
        invoke_async: AsyncInvoke,
        *,
        poll_interval: float = 0.5,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.resources = resources
        self._invoke_async = invoke_async
        self.poll_interval = poll_interval
        self._clock = clock
        self._scheduler = aws_client("scheduler", resources.endpoint, resources.region)
        self._events = aws_client("events", resources.endpoint, resources.region)
        self._sqs = aws_client("sqs", resources.endpoint, resources.region)
        self._tracks: dict[str, _Track] = {}
        self._reported: set[str] = set()
        self._fired_once: set[str] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        #: (arn, scheduled time) of every fire, newest last; for tests, benchmarks and the CLI.
        self.fired: list[tuple[str, datetime]] = []

    # ---- loop ----------------------------------------------------------------------------
    def start(self) -> None:
        self._thread = threading.Thread(target=self._run, name="schedule-emulator", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception:
                log.exception("schedule emulator tick failed")
            self._stop.wait(self.poll_interval)

    def tick(self) -> None:
        now = self._clock()
        seen: set[str] = set()
        for summary in self._list_schedules():
            seen.add(summary["Arn"])
            self._isolated(summary["Arn"], self._consider_schedule, summary, now)
        for rule in self._list_rules():
            seen.add(rule["Arn"])
            self._isolated(rule["Arn"], self._consider_rule, rule, now)
        for arn in set(self._tracks) - seen:
            del self._tracks[arn]

    def _isolated(self, arn: str, consider: Callable[[dict[str, Any], datetime], None], *args: Any) -> None:
        """One broken schedule must not hold up the others; each distinct failure is logged once."""
        try:
            consider(*args)
        except Exception as exc:
            key = f"{arn}|{type(exc).__name__}: {exc}"
            if key not in self._reported:
                self._reported.add(key)
                log.exception("schedule %s could not be considered", arn)

    def _plan(self, arn: str, track: _Track, now: datetime, compute: Callable[[], datetime | None]) -> None:
        """Set the track's next fire time; if it cannot be computed, say so and retry later."""
        try:
            track.next_fire = compute()
        except Exception as exc:  # pyawscron raises ValueError, AttributeError, bare Exception
            track.next_fire = None
            first = track.retry_at is None
            track.retry_at = now + UNCOMPUTABLE_RETRY
            (log.error if first else log.debug)(
                "schedule %s: pyawscron cannot compute the next fire time of %s (%s): %s: %s; "
                "it does not fire locally until it can (next try at %s); AWS would fire it.",
                arn,
                track.expression.expression,
                track.expression.timezone,
                type(exc).__name__,
                exc,
                scheduled_time_text(track.retry_at),
            )
            return
        if track.retry_at is not None:
            log.info("schedule %s: next fire time computable again: %s", arn, track.next_fire)
        track.retry_at = None
        if track.next_fire is None and track.expression.kind != "at":
            log.info("schedule %s (%s) has no further fire times", arn, track.expression.expression)

    def _due(self, arn: str, track: _Track, now: datetime, recompute: Callable[[], datetime | None]) -> bool:
        if track.retry_at is not None and now >= track.retry_at:
            self._plan(arn, track, now, recompute)
        return track.next_fire is not None and track.next_fire <= now

    # ---- Scheduler -----------------------------------------------------------------------
    def _list_schedules(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {}
        while True:
            response = self._scheduler.list_schedules(**kwargs)
            out.extend(response.get("Schedules", []))
            if not response.get("NextToken"):
                return out
            kwargs["NextToken"] = response["NextToken"]

    def _consider_schedule(self, summary: dict[str, Any], now: datetime) -> None:
        arn = summary["Arn"]
        if summary.get("State", "ENABLED") != "ENABLED":
            self._tracks.pop(arn, None)
            return
        version = summary.get("LastModificationDate")
        track = self._tracks.get(arn)
        if track is None or track.version != version:
            detail = self._scheduler.get_schedule(Name=summary["Name"], GroupName=summary["GroupName"])
            try:
                expression = parse_schedule(
                    detail["ScheduleExpression"], detail.get("ScheduleExpressionTimezone") or "UTC"
                )
            except ValidationError as exc:
                log.error("schedule %s cannot fire: %s", arn, exc.message)
                self._tracks[arn] = _Track(version, parse_schedule("at(1970-01-01T00:00:00)"), None, detail)
                return
            track = _Track(version, expression, None, detail)
            self._tracks[arn] = track
            self._plan(arn, track, now, lambda: self._first_fire(expression, detail, now))
        current = track
        if not self._due(arn, current, now, lambda: self._next_fire(current.expression, current.detail, now)):
            return
        assert track.next_fire is not None
        scheduled = track.next_fire
        # The next time is planned before this one fires: whatever happens while firing (or
        # planning), one scheduled time never fires twice.
        if track.expression.kind == "at":
            track.next_fire = None
        else:
            after = max(scheduled, now)
            self._plan(arn, track, now, lambda: self._next_fire(current.expression, current.detail, after))
        self._fire_schedule(track.detail, scheduled)
        if track.expression.kind == "at":
            self._fired_once.add(f"{arn}|{track.expression.expression}")
            if track.detail.get("ActionAfterCompletion") == "DELETE":
                self._delete_schedule(track.detail)

    def _first_fire(
        self, expression: ScheduleExpression, detail: dict[str, Any], now: datetime
    ) -> datetime | None:
        if expression.kind == "at":
            if f"{detail['Arn']}|{expression.expression}" in self._fired_once:
                return None
            # A one-time schedule whose time has passed while nobody watched still fires once.
            fires = expression.next_fire_times(_EPOCH, 1)
            return fires[0] if fires else None
        return self._next_fire(expression, detail, now)

    def _next_fire(
        self, expression: ScheduleExpression, detail: dict[str, Any], after: datetime
    ) -> datetime | None:
        start = _as_datetime(detail.get("StartDate"))
        end = _as_datetime(detail.get("EndDate"))
        if start is not None and after < start:
            after = start - timedelta(microseconds=1)
        anchor = start or _as_datetime(detail.get("CreationDate")) or after
        fire = _next_of(expression, after, anchor)
        if fire is None or (end is not None and fire > end):
            return None
        return fire

    def _fire_schedule(self, detail: dict[str, Any], scheduled: datetime) -> None:
        target = detail["Target"]
        payload_text = target.get("Input")
        payload_text = (
            substitute(payload_text, scheduled=scheduled, arn=detail["Arn"]) if payload_text else "{}"
        )
        log.info("schedule %s fired for %s", detail["Arn"], scheduled_time_text(scheduled))
        self.fired.append((detail["Arn"], scheduled))
        self._deliver(target, payload_text)

    def _delete_schedule(self, detail: dict[str, Any]) -> None:
        try:
            self._scheduler.delete_schedule(Name=detail["Name"], GroupName=detail["GroupName"])
        except ClientError as exc:
            if exc.response["Error"]["Code"] != "ResourceNotFoundException":
                raise

    def _deliver(self, target: dict[str, Any], payload_text: str) -> None:
        arn = str(target["Arn"])
        try:
            if ":sqs:" in arn:
                url = (
                    self.resources.queue_url_for_arn(arn)
                    or self._sqs.get_queue_url(QueueName=arn.rsplit(":", 1)[-1])["QueueUrl"]
                )
                self._sqs.send_message(QueueUrl=url, MessageBody=payload_text)
                return
            self._invoke_async(arn, json.loads(payload_text))
        except (FunctionNotFound, ClientError, ValueError) as exc:
            log.error("schedule target %s could not be invoked: %s", arn, exc)
            dlq = (target.get("DeadLetterConfig") or {}).get("Arn")
            if dlq:
                url = self.resources.queue_url_for_arn(dlq)
                if url:
                    self._sqs.send_message(QueueUrl=url, MessageBody=payload_text)

    # ---- classic EventBridge rules -------------------------------------------------------
    def _list_rules(self) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        kwargs: dict[str, Any] = {}
        while True:
            response = self._events.list_rules(**kwargs)
            out.extend(r for r in response.get("Rules", []) if r.get("ScheduleExpression"))
            if not response.get("NextToken"):
                return out
            kwargs["NextToken"] = response["NextToken"]

    def _consider_rule(self, rule: dict[str, Any], now: datetime) -> None:
        arn = rule["Arn"]
        if rule.get("State", "ENABLED") != "ENABLED":
            self._tracks.pop(arn, None)
            return
        version = rule["ScheduleExpression"]
        track = self._tracks.get(arn)
        if track is None or track.version != version:
            try:
                expression = parse_schedule(version)
            except ValidationError as exc:
                log.error("rule %s cannot fire: %s", arn, exc.message)
                self._tracks[arn] = _Track(version, parse_schedule("at(1970-01-01T00:00:00)"), None, rule)
                return
            track = _Track(version, expression, None, rule)
            self._tracks[arn] = track
            # Classic rules are UTC and count rates from when they were (first seen) created.
            self._plan(arn, track, now, lambda: _next_of(expression, now, now))
        current = track
        if not self._due(arn, current, now, lambda: _next_of(current.expression, now, now)):
            return
        assert track.next_fire is not None
        scheduled = track.next_fire
        self._plan(
            arn,
            track,
            now,
            lambda: _next_of(current.expression, max(scheduled, now), scheduled),
        )
        self.fired.append((arn, scheduled))
        log.info("rule %s fired for %s", arn, scheduled_time_text(scheduled))
        for target in self._events.list_targets_by_rule(Rule=rule["Name"]).get("Targets", []):
            event = target.get("Input") or json.dumps(
                self.scheduled_event(rule, scheduled), default=json_default
            )
            self._deliver(target, event)

    def scheduled_event(self, rule: dict[str, Any], scheduled: datetime) -> dict[str, Any]:
        return {
            "version": "0",
            "id": str(uuid.uuid4()),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": self.resources.account,
            "time": scheduled_time_text(scheduled),
            "region": self.resources.region,
            "resources": [rule["Arn"]],
            "detail": {},
        }
