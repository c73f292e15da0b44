"""What the routes do, independent of HTTP: visibility, job/schedule consistency, manual runs,
cancellation. Routes parse and map; these classes decide. Repositories and clients are injected.
"""

from __future__ import annotations

import contextlib
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any, Protocol

from botocore.exceptions import ClientError
from jobtracker_common import jobtypes
from jobtracker_common.errors import (
    ConfigurationError,
    ConflictError,
    DuplicateError,
    JobTrackerError,
    NotFoundError,
    TransientError,
    ValidationError,
)
from jobtracker_common.ids import new_id
from jobtracker_common.lifecycle import new_run
from jobtracker_common.models import ErrorInfo, Job, LogEntry, Run, RunStatus, Trigger
from jobtracker_common.observability import logger as make_logger
from jobtracker_common.repositories.runs import DAY_INDEX, JOB_INDEX, OWNER_INDEX, RunsRepository
from jobtracker_common.schedules import parse_schedule
from jobtracker_common.statistics_query import StatisticsQuery, StatisticsResult, query_statistics
from jobtracker_common.timeutil import Clock, utcnow
from pydantic import ValidationError as PydanticValidationError
from ulid import ULID

from api import cursors
from api.auth import Caller
from api.models import JobIn

if TYPE_CHECKING:
    from jobtracker_common.repositories import JobsRepository
    from jobtracker_common.repositories.stats import StatsRepository
    from jobtracker_common.schedules import ScheduleService
    from mypy_boto3_lambda import LambdaClient

logger = make_logger("api")

#: How far back an admin's unfiltered run listing walks day by day unless `from` says otherwise.
DEFAULT_ADMIN_WINDOW = timedelta(days=30)
MAX_WINDOW = timedelta(days=366)


class Invoker(Protocol):
    """Starts the runner asynchronously (Lambda async invoke; a fake in tests)."""

    def invoke(self, payload: dict[str, Any]) -> None: ...


class LambdaInvoker:
    def __init__(self, client: LambdaClient, function_arn: str) -> None:
        self._client = client
        self._function = function_arn

    def invoke(self, payload: dict[str, Any]) -> None:
        self._client.invoke(
            FunctionName=self._function, InvocationType="Event", Payload=json.dumps(payload).encode()
        )


def _schedule_state(job: Job | None) -> tuple[str, str, bool] | None:
    """What of a job its Scheduler schedule reflects (None: no schedule)."""
    if job is None or job.schedule is None:
        return None
    return job.schedule, job.timezone, job.enabled


#: Words of Scheduler refusals that concern the API's configuration, not the caller's schedule.
_DEPLOYMENT_WORDS = re.compile(r"\b(role|arn|target|group|kms)\b", re.IGNORECASE)


def _scheduler_error(exc: ClientError) -> JobTrackerError | None:
    """Scheduler's ValidationException about the expression or timezone is the caller's 422
    (AWS rules our own checks may not know yet); about the role or target it is a deploy bug."""
    error = exc.response.get("Error", {})
    message = str(error.get("Message", ""))
    if error.get("Code") != "ValidationException":
        return None
    if _DEPLOYMENT_WORDS.search(message):
        logger.error("Scheduler refused the API's configuration", extra={"reason": message})
        return ConfigurationError(f"Scheduler refused the configuration: {message}")
    return ValidationError(
        f"EventBridge Scheduler refused the schedule: {message}",
        details=[{"field": "schedule", "message": message}],
    )


def ulid_bounds(start: datetime, end: datetime) -> tuple[str, str]:
    """The smallest and largest ULID of the time range: run ids sort by time."""
    lo = int(start.timestamp() * 1000)
    hi = int(end.timestamp() * 1000)
    lo = max(0, min(lo, 2**48 - 1))
    hi = max(0, min(hi, 2**48 - 1))
    return (
        str(ULID.from_bytes(lo.to_bytes(6, "big") + b"\x00" * 10)),
        str(ULID.from_bytes(hi.to_bytes(6, "big") + b"\xff" * 10)),
    )


# ---- jobs --------------------------------------------------------------------------------
@dataclass
class JobsService:
    jobs: JobsRepository
    schedules: ScheduleService
    runs: RunsRepository
    invoker: Invoker
    clock: Clock = utcnow

    def next_fire_times(self, job: Job, count: int = 3) -> list[datetime]:
        if not job.schedule or not job.enabled:
            return []
        try:
            expression = parse_schedule(job.schedule, job.timezone)
        except ValidationError as exc:
            # Stored under older rules (e.g. an at() outside years 1-9999 in UTC): the job must
            # stay readable, listable and deletable; it just shows no upcoming fire times.
            logger.warning(
                "stored schedule no longer parses", extra={"job_id": job.job_id, "error": exc.message}
            )
            return []
        # Scheduler counts rate() from when the schedule was created.
        return expression.next_fire_times(self.clock(), count, anchor=job.created_at)

    def _visible(self, caller: Caller, job_id: str) -> Job:
        job = self.jobs.get(job_id)
        if not caller.can_see(job.owner_id):
            raise NotFoundError(f"job {job_id} not found")
        return job

    def get(self, caller: Caller, job_id: str) -> Job:
        return self._visible(caller, job_id)

    def list_jobs(self, caller: Caller, *, limit: int, cursor: str | None) -> tuple[list[Job], str | None]:
        if caller.is_admin:
            cursors.check_cursor(cursor, {"job_id": "S"})
            return self.jobs.list_all(limit=limit, cursor=cursor)
        cursors.check_cursor(
            cursor,
            {"job_id": "S", "owner_id": "S", "created_at": "S"},
            fixed={"owner_id": caller.user_id},
        )
        return self.jobs.list_by_owner(caller.user_id, limit=limit, cursor=cursor)

    @staticmethod
    def _validate(body: JobIn) -> None:
        """Refuse a job that could never run: unknown type, bad params, schedule AWS would reject."""
        try:
            jobtypes.get(body.job_type)
        except ValidationError as exc:
            raise ValidationError(
                exc.message, details=[{"field": "job_type", "message": exc.message}]
            ) from exc
        jobtypes.parse_params(body.job_type, body.params)
        if body.schedule is not None:
            try:
                parse_schedule(body.schedule, body.timezone)
            except ValidationError as exc:
                raise ValidationError(
                    f"invalid schedule: {exc.message}",
                    details=[{"field": "schedule", "message": exc.message}],
                ) from exc

    def create(self, caller: Caller, body: JobIn) -> Job:
        self._validate(body)
        now = self.clock()
        job = Job(
            job_id=new_id(now), owner_id=caller.user_id, created_at=now, updated_at=now, **body.model_dump()
        )
        self.jobs.create(job)
        try:
            self._reconcile(job.job_id, job)
        except Exception:
            # The job must not exist without the schedule it describes.
            with contextlib.suppress(NotFoundError):
                self.jobs.delete(job.job_id)
            # Nor the schedule without its job: _reconcile may have written it before failing
            # (e.g. on re-reading the job), and it would fire into a NotFound forever.
            try:
                self.schedules.delete_job_schedule(job.job_id)
            except Exception:
                logger.exception(
                    "schedule of a job whose creation failed not deleted", extra={"job_id": job.job_id}
                )
            raise
        return job

    def replace(self, caller: Caller, job_id: str, body: JobIn) -> Job:
        self._validate(body)
        current = self._visible(caller, job_id)
        now = max(self.clock(), current.updated_at + timedelta(microseconds=1))
        job = Job.model_validate(
            {
                **current.model_dump(),
                **body.model_dump(),
                "updated_at": now,
            }
        )
        seen = current.model_dump(mode="json")["updated_at"]
        self.jobs.replace(job, expected_updated_at=seen)
        try:
            self._reconcile(job.job_id, job)
        except Exception:
            # Put the previous definition back, unless someone changed the job meanwhile: their
            # request reconciles the schedule with what they stored.
            with contextlib.suppress(ConflictError):
                self.jobs.replace(current, expected_updated_at=job.model_dump(mode="json")["updated_at"])
                self._reconcile(current.job_id, current)
            raise
        return job

    def delete(self, caller: Caller, job_id: str) -> None:
        job = self._visible(caller, job_id)
        # Schedule first: a schedule without its job would fire into a NotFound forever.
        self.schedules.delete_job_schedule(job.job_id)
        try:
            self.jobs.delete(job.job_id)
        except Exception:
            self._reconcile(job.job_id, job)
            raise
        # A PUT that wrote between our two deletes may have re-created the schedule.
        self._reconcile(job.job_id, None)

    def _reconcile(self, job_id: str, written: Job | None, *, rounds: int = 5) -> None:
        """Make the Scheduler schedule match the job as stored NOW, not just as this request wrote it.

        Two requests on one job interleave (A writes the job, B writes it and its schedule, A then
        writes its stale schedule). So after each schedule write, re-read the job and write again
        if it differs. The last request to write Scheduler has read the job after the last job
        write, so the schedule ends equal to the stored job.
        """
        expected = written
        for _ in range(rounds):
            self._sync_schedule(job_id, expected)
            try:
                stored: Job | None = self.jobs.get(job_id)
            except NotFoundError:
                stored = None
            if _schedule_state(stored) == _schedule_state(expected):
                return
            expected = stored
        # Only reachable if the job changes on every round; each of those writers reconciles too.
        logger.warning("job kept changing while its schedule was written", extra={"job_id": job_id})

    def _sync_schedule(self, job_id: str, job: Job | None) -> None:
        try:
            if job is None or job.schedule is None:
                self.schedules.delete_job_schedule(job_id)
            else:
                self.schedules.upsert_job_schedule(
                    job_id=job_id, expression=job.schedule, timezone=job.timezone, enabled=job.enabled
                )
        except ClientError as exc:
            mapped = _scheduler_error(exc)
            if mapped is None:
                raise
            raise mapped from exc

    def run_now(self, caller: Caller, job_id: str, idempotency_key: str | None) -> Run:
        """Create the queued run (once per idempotency key) and start the runner asynchronously.

        A repeated key answers with the run the first request created, as it is now.
        """
        job = self._visible(caller, job_id)
        now = self.clock()
        request_id = idempotency_key or new_id(now)
        dedupe_key = f"manual|{job.job_id}|{request_id}"  # = job_runner ManualInvocation.dedupe_key
        run = new_run(
            job, run_id=new_id(now), trigger=Trigger.MANUAL, now=now, dedupe_key=dedupe_key, queued=True
        )
        try:
            self.runs.create(run, dedupe_key=dedupe_key)
        except DuplicateError as dup:
            # A retried request: same run. Invoking again is harmless (the runner claims a
            # queued run once) and covers a first attempt whose invoke was lost.
            try:
                run = self.runs.get(dup.existing_id)
            except NotFoundError as gone:
                # The key's marker outlives a deleted run (it expires by TTL): not a missing job.
                raise ConflictError(
                    f"Idempotency-Key {idempotency_key!r} was used for run {dup.existing_id}, "
                    "which has been deleted; use a new key"
                ) from gone
            if run.status is not RunStatus.QUEUED:
                return run
        payload = {
            "kind": "manual",
            "job_id": job.job_id,
            "client_request_id": request_id,
            "run_id": run.run_id,
            "requested_by": caller.user_id,
        }
        try:
            self.invoker.invoke(payload)
        except Exception as exc:
            error = ErrorInfo(type="InvokeFailed", message="the runner could not be started")
            # ConflictError: the run moved on by itself, nothing to undo.
            with contextlib.suppress(ConflictError):
                self.runs.transition(
                    run, RunStatus.FAILED, finished_at=self.clock(), lease_until=None, error=error
                )
            # The run is recorded as failed, so the same key would only return that failure.
            raise TransientError("the runner could not be started; retry with a new Idempotency-Key") from exc
        return run


# ---- runs --------------------------------------------------------------------------------
@dataclass
class RunFilter:
    statuses: list[RunStatus] = field(default_factory=list)
    job_id: str | None = None
    job_type: str | None = None
    start: datetime | None = None
    end: datetime | None = None


@dataclass
class RunsService:
    runs: RunsRepository
    schedules: ScheduleService
    clock: Clock = utcnow

    def get(self, caller: Caller, run_id: str) -> Run:
        run = self.runs.get(run_id)
        if not caller.can_see(run.owner_id):
            raise NotFoundError(f"run {run_id} not found")
        return run

    def active(self, caller: Caller) -> list[Run]:
        runs = [r for r in self.runs.list_active() if caller.can_see(r.owner_id)]
        return sorted(runs, key=lambda r: r.run_id, reverse=True)

    def entries(
        self, caller: Caller, run_id: str, *, limit: int, cursor: str | None
    ) -> tuple[list[LogEntry], str | None]:
        self.get(caller, run_id)
        cursors.check_cursor(cursor, {"sk": "S", "offset": "N"})
        return self.runs.list_logs(run_id, limit=limit, cursor=cursor)

    def list_runs(
        self, caller: Caller, flt: RunFilter, *, limit: int, cursor: str | None
    ) -> tuple[list[Run], str | None]:
        now = self.clock()
        end = flt.end or now
        start = flt.start
        if start is not None and start > end:
            raise ValidationError("'from' must not be after 'to'")
        owner = None if caller.is_admin else caller.user_id
        common: dict[str, Any] = {
            "statuses": flt.statuses,
            "job_type": flt.job_type,
            "run_id_range": ulid_bounds(start or datetime(1970, 1, 1, tzinfo=UTC), end),
            "limit": limit,
        }
        if flt.job_id is not None:
            cursors.check_cursor(cursor, _keys(JOB_INDEX), fixed={"job_id": flt.job_id})
            return self.runs.list_runs(job_id=flt.job_id, owner_id=owner, cursor=cursor, **common)
        if owner is not None:
            cursors.check_cursor(cursor, _keys(OWNER_INDEX), fixed={"owner_id": owner})
            return self.runs.list_runs(owner_id=owner, cursor=cursor, **common)
        return self._list_by_day(start or end - DEFAULT_ADMIN_WINDOW, end, common, cursor)

    def _list_by_day(
        self, start: datetime, end: datetime, common: dict[str, Any], cursor: str | None
    ) -> tuple[list[Run], str | None]:
        """Admin listing without a job: newest day first, one `by-day` query per day."""
        if end - start > MAX_WINDOW:
            raise ValidationError(f"the time window may span at most {MAX_WINDOW.days} days; narrow from/to")
        first_day, last_day = start.astimezone(UTC).date(), end.astimezone(UTC).date()
        state = cursors.unwrap(cursor) or {}
        day_text, inner = state.get("day"), state.get("c")
        day = last_day
        if day_text is not None:
            try:
                day = datetime.strptime(str(day_text), "%Y-%m-%d").replace(tzinfo=UTC).date()
            except ValueError as exc:
                raise ValidationError("cursor is not valid; pass back next_cursor unchanged") from exc
            if not first_day <= day <= last_day or not (inner is None or isinstance(inner, str)):
                raise ValidationError("cursor is not valid; pass back next_cursor unchanged")
        limit: int = common["limit"]
        out: list[Run] = []
        while day >= first_day:
            cursors.check_cursor(inner, _keys(DAY_INDEX), fixed={"run_day": day.isoformat()})
            page, inner = self.runs.list_runs(
                day=day.isoformat(), cursor=inner, **{**common, "limit": limit - len(out)}
            )
            out.extend(page)
            if inner is not None:
                return out, cursors.wrap({"day": day.isoformat(), "c": inner})
            day -= timedelta(days=1)
            if len(out) == limit:
                more = day >= first_day
                return out, cursors.wrap({"day": day.isoformat(), "c": None}) if more else None
        return out, None

    def cancel(self, caller: Caller, run_id: str, *, attempts: int = 3) -> Run:
        """queued/retrying -> canceled now; running -> asked to stop at its next checkpoint.

        The run may move while we decide (the runner claims a queued run, a retry starts):
        a lost conditional write re-reads the run and decides again.
        """
        for attempt in range(attempts):
            run = self.get(caller, run_id)
            if run.status.is_terminal:
                raise ConflictError(f"run {run_id} is already {run.status.value}")
            try:
                if run.status is RunStatus.RUNNING:
                    self.runs.request_cancel(run.run_id)
                    return run.model_copy(update={"cancel_requested": True})
                canceled = self.runs.transition(
                    run,
                    RunStatus.CANCELED,
                    finished_at=self.clock(),
                    lease_until=None,
                    next_attempt_at=None,
                    cancel_requested=True,
                )
            except ConflictError:
                if attempt == attempts - 1:
                    raise
                continue
            if run.status is RunStatus.RETRYING:
                self.schedules.delete_retry_schedule(run.run_id, run.attempt + 1)
            return canceled
        raise ConflictError(f"run {run_id} kept changing; retry")  # pragma: no cover - loop returns

    def delete(self, caller: Caller, run_id: str) -> None:
        self.runs.delete(self.get(caller, run_id))


def _keys(index: str) -> dict[str, str]:
    return dict.fromkeys(RunsRepository.LISTING_KEYS[index], "S")


# ---- statistics --------------------------------------------------------------------------
@dataclass
class StatisticsService:
    stats: StatsRepository
    jobs: JobsRepository
    clock: Clock = utcnow

    def query(
        self,
        caller: Caller,
        *,
        time_period: str | None,
        start: datetime | None,
        end: datetime | None,
        job_type: str | None,
        job_id: str | None,
    ) -> StatisticsResult:
        """The caller's statistics (everyone's for admins), from pre-aggregated buckets."""
        if job_id is not None and not caller.is_admin:
            try:
                job = self.jobs.get(job_id)
            except NotFoundError:
                job = None  # deleted jobs keep their statistics; the buckets carry the owner
            if job is not None and job.owner_id != caller.user_id:
                raise NotFoundError(f"job {job_id} not found")
        try:
            query = StatisticsQuery.model_validate(
                {
                    "time_period": time_period,
                    "from": start,
                    "to": end,
                    "job_type": job_type,
                    "job_id": job_id,
                    "owner_id": None if caller.is_admin else caller.user_id,
                }
            )
        except PydanticValidationError as exc:
            details = [
                {"field": "query", "message": str(e["msg"]).removeprefix("Value error, ")}
                for e in exc.errors()
            ]
            raise ValidationError(
                "invalid statistics window: " + "; ".join(d["message"] for d in details), details=details
            ) from exc
        return query_statistics(self.stats, query, now=self.clock())
