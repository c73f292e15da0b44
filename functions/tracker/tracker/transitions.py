"""What the tracker does with one runs-stream record.

Every step is idempotent, so a redelivered record (Lambda retries a batch, bisects it, or
replays it after a partial failure) changes nothing the first delivery already did:
- statistics: counted once per (run, attempt, status) through the stats "applied" marker;
- retry schedule: deterministic name `retry-<run_id>-<attempt>`, a second create is a conflict;
- the job's last run: a conditional write that never moves back to an older run.
Follow-ups (retry schedule, last run) run before a transition is counted, so its marker also
means "fully handled" and a replayed batch costs one read.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError
from jobtracker_common.errors import JobTrackerError, ValidationError
from jobtracker_common.models import Run, RunStatus
from jobtracker_common.observability import logger as make_logger
from jobtracker_common.repositories import JobsRepository, RunsRepository
from jobtracker_common.repositories.stats import StatsRepository
from jobtracker_common.schedules import ScheduleService
from jobtracker_common.statistics import StatsDelta, delta_for
from jobtracker_common.timeutil import Clock, utcnow

logger = make_logger("tracker")

#: A retry whose time has (nearly) passed by the time its record arrives (stream lag, redelivery)
#: is scheduled this far ahead instead, so the `at()` time is still in the future when Scheduler
#: gets it. Kept short: it only lengthens backoffs shorter than the stream's lag.
RETRY_MIN_LEAD = timedelta(seconds=2)


@dataclass(frozen=True)
class RecordOutcome:
    run_id: str | None
    status: str | None = None
    #: True: counted now; False: counted by an earlier delivery; None: nothing to count.
    counted: bool | None = None
    #: True: retry schedule created; False: it existed already; None: no retry.
    scheduled: bool | None = None
    last_run_recorded: bool | None = None


def parse_images(record: Mapping[str, Any]) -> tuple[Run | None, Run | None]:
    """Old and new run images of a Lambda DynamoDB stream record (either may be absent).

    A record whose images cannot be read is a poison record: ValidationError, never skipped.
    """
    data = record.get("dynamodb")
    if not isinstance(data, Mapping):
        raise ValidationError("stream record has no 'dynamodb' section")
    images: list[Run | None] = []
    for name in ("OldImage", "NewImage"):
        image = data.get(name)
        if image is None:
            images.append(None)
            continue
        try:
            images.append(RunsRepository.from_item(dict(image)))
        except Exception as exc:  # any unreadable image is poison, reported, never a crash
            raise ValidationError(f"stream record {name} is not a valid run: {exc}") from exc
    return images[0], images[1]


class TransitionTracker:
    def __init__(
        self,
        stats: StatsRepository,
        jobs: JobsRepository,
        schedules: ScheduleService,
        *,
        clock: Clock = utcnow,
    ) -> None:
        self._stats = stats
        self._jobs = jobs
        self._schedules = schedules
        self._clock = clock

    def handle(self, record: Mapping[str, Any]) -> RecordOutcome:
        """One record on its own (raises what made it fail)."""
        (result,) = self.handle_batch([record])
        if isinstance(result, Exception):
            raise result
        return result

    def handle_batch(self, records: list[Mapping[str, Any]]) -> list[RecordOutcome | Exception]:
        """Outcome or error per record, in order. Retry schedules per record; the job's last
        run once per job; statistics of the whole batch together (merged bucket updates)."""
        parsed: list[tuple[Run | None, Run, StatsDelta | None] | Exception | None] = []
        for record in records:
            if record.get("eventName") == "REMOVE":
                # TTL expiry or a user delete: history, not a transition.
                parsed.append(None)
                continue
            try:
                old, new = parse_images(record)
                if new is None:
                    raise ValidationError(f"{record.get('eventName')} record without NewImage")
                parsed.append((old, new, delta_for(old, new)))
            except JobTrackerError as exc:
                parsed.append(exc)
        deltas = [p[2] for p in parsed if isinstance(p, tuple) and p[2] is not None]
        # A transition whose marker exists was fully handled by an earlier delivery: its
        # follow-ups (retry schedule, job's last run) ran BEFORE it was counted. So replays
        # cost one read, and a delivery that failed half-way redoes only what is missing.
        done = iter(self._stats.already_counted(deltas))
        outcomes: list[RecordOutcome | Exception] = []
        to_count: list[tuple[int, StatsDelta]] = []
        latest: dict[str, Run] = {}
        for item in parsed:
            if item is None or isinstance(item, Exception):
                outcomes.append(item or RecordOutcome(run_id=None))
                continue
            _old, new, delta = item
            if delta is None:
                outcomes.append(RecordOutcome(run_id=new.run_id, status=new.status.value))
            elif next(done):
                outcomes.append(RecordOutcome(run_id=new.run_id, status=new.status.value, counted=False))
            else:
                try:
                    scheduled = self._schedule_retry(new) if new.status is RunStatus.RETRYING else None
                except (JobTrackerError, ClientError) as exc:
                    outcomes.append(exc)
                    continue
                outcomes.append(
                    RecordOutcome(run_id=new.run_id, status=new.status.value, scheduled=scheduled)
                )
                to_count.append((len(outcomes) - 1, delta))
                if new.status.is_terminal and (
                    new.job_id not in latest or new.run_id > latest[new.job_id].run_id
                ):
                    latest[new.job_id] = new
        # Only a job's newest run of the batch can become its last run: one write per job.
        recorded: dict[str, bool | Exception] = {}
        for job_id, run in latest.items():
            try:
                recorded[job_id] = self._jobs.record_last_run(job_id, run.run_id, run.status)
            except (JobTrackerError, ClientError) as exc:
                recorded[job_id] = exc
        countable: list[tuple[int, StatsDelta]] = []
        for position, delta in to_count:
            result = recorded.get(delta.job_id) if delta.status.is_terminal else None
            if isinstance(result, Exception):
                outcomes[position] = result
            else:
                previous = outcomes[position]
                assert isinstance(previous, RecordOutcome)
                outcomes[position] = replace(previous, last_run_recorded=result)
                countable.append((position, delta))
        counted = self._stats.apply_many([delta for _, delta in countable])
        for (position, _delta), outcome in zip(countable, counted, strict=True):
            previous = outcomes[position]
            assert isinstance(previous, RecordOutcome)
            outcomes[position] = (
                outcome if isinstance(outcome, Exception) else replace(previous, counted=outcome)
            )
        return outcomes

    def _schedule_retry(self, run: Run) -> bool:
        if run.next_attempt_at is None:
            raise ValidationError(f"run {run.run_id} is retrying without next_attempt_at")
        at: datetime = max(run.next_attempt_at, self._clock() + RETRY_MIN_LEAD)
        created = self._schedules.create_retry_schedule(run_id=run.run_id, attempt=run.attempt + 1, at=at)
        logger.info(
            "retry scheduled" if created else "retry schedule already existed",
            extra={"run_id": run.run_id, "attempt": run.attempt + 1, "at": at.isoformat()},
        )
        return created
