"""Runner logic: dedupe the delivery, claim the run with a lease, execute, finish."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from jobtracker_common import jobtypes
from jobtracker_common.errors import ConflictError, DuplicateError, NotFoundError, ValidationError
from jobtracker_common.ids import deterministic_id, new_id
from jobtracker_common.lifecycle import (
    cancel_changes,
    failure_changes,
    new_run,
    running_lease,
    success_changes,
)
from jobtracker_common.models import ErrorInfo, Job, LogEntry, LogLevel, Run, RunStatus, Trigger
from jobtracker_common.observability import logger as make_logger
from jobtracker_common.repositories import JobsRepository, RunsRepository
from jobtracker_common.timeutil import Clock, utcnow

from job_runner.events import (
    Invocation,
    ManualInvocation,
    RetryInvocation,
    RuleInvocation,
    ScheduleInvocation,
)

logger = make_logger("job_runner")

#: Flush buffered log entries mid-run once this many are waiting or this much time passed,
#: so long runs show progress without one write per line.
FLUSH_ENTRIES = 250
FLUSH_SECONDS = 30.0


@dataclass
class RunnerResult:
    ok: bool
    run_id: str | None = None
    status: str | None = None
    duplicate: bool = False
    message: str | None = None
    error: dict[str, Any] | None = None

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


@dataclass
class RunContext:
    """The `JobContext` a job body sees: buffered logs, progress, stop requests."""

    run: Run
    runs: RunsRepository
    clock: Clock
    cancel_poll_seconds: float
    stop_event: threading.Event = field(default_factory=threading.Event)
    _buffer: list[LogEntry] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _next_seq: int = 0
    _last_flush: float = field(default_factory=time.monotonic)
    _last_cancel_poll: float = field(default_factory=time.monotonic)
    progress: str | None = None
    cancel_seen: bool = False
    #: Set once the attempt is recorded: a job thread that outlived it (deadline, timeout;
    #: Python cannot kill a thread) must not add log entries to a finished attempt.
    closed: bool = False

    def log(
        self,
        message: str,
        *,
        level: LogLevel = LogLevel.INFO,
        category: str = "job",
        details: dict[str, Any] | None = None,
    ) -> None:
        entry = LogEntry(
            timestamp=self.clock(),
            level=level,
            category=category,
            message=message[:4000],
            details=details,
            attempt=self.run.attempt,
        )
        with self._lock:
            if self.closed:
                return
            self._buffer.append(entry)
            due = len(self._buffer) >= FLUSH_ENTRIES or time.monotonic() - self._last_flush > FLUSH_SECONDS
        if due:
            self.flush()

    def flush(self, *, last: bool = False) -> None:
        with self._lock:
            self.closed = self.closed or last
            entries, self._buffer = self._buffer, []
            first = self._next_seq
            self._next_seq += len(entries)
            self._last_flush = time.monotonic()
        if not entries:
            return
        try:
            self.runs.append_logs(self.run, entries, first_seq=first)
        except Exception:
            with self._lock:
                if last or self._next_seq != first + len(entries):
                    raise
                # Kept for the next flush under the same sequence numbers (chunks that were
                # written are then overwritten with the same content), not lost.
                self._buffer[:0] = entries
                self._next_seq = first
            logger.warning(
                "log entries not stored yet; kept for the next flush",
                exc_info=True,
                extra={"run_id": self.run.run_id, "entries": len(entries)},
            )

    def should_stop(self) -> bool:
        if self.stop_event.is_set():
            return True
        if time.monotonic() - self._last_cancel_poll >= self.cancel_poll_seconds:
            self._last_cancel_poll = time.monotonic()
            if self.runs.is_cancel_requested(self.run.run_id):
                self.cancel_seen = True
                self.stop_event.set()
        return self.stop_event.is_set()

    def set_progress(self, note: str) -> None:
        self.progress = note[:200]


class RunnerService:
    def __init__(
        self,
        jobs: JobsRepository,
        runs: RunsRepository,
        *,
        clock: Clock = utcnow,
        safety_margin_ms: int = 3_000,
        cancel_poll_seconds: float = 5.0,
    ) -> None:
        self._jobs = jobs
        self._runs = runs
        self._clock = clock
        self._margin_ms = safety_margin_ms
        self._cancel_poll = cancel_poll_seconds

    # ---- entry ---------------------------------------------------------------------------
    def handle(self, invocation: Invocation, remaining_ms: Callable[[], int]) -> RunnerResult:
        try:
            claimed = self._claim(invocation)
        except DuplicateError as exc:
            logger.info("duplicate delivery ignored", extra={"run_id": exc.existing_id})
            return RunnerResult(ok=True, run_id=exc.existing_id, duplicate=True, message=exc.message)
        if isinstance(claimed, RunnerResult):
            return claimed
        run, job = claimed
        return self._execute(run, job, remaining_ms)

    # ---- claim ---------------------------------------------------------------------------
    def _claim(self, inv: Invocation) -> tuple[Run, Job] | RunnerResult:
        now = self._clock()
        if isinstance(inv, RetryInvocation):
            return self._claim_retry(inv, now)
        if isinstance(inv, ManualInvocation) and inv.run_id:
            return self._claim_queued(inv, now)
        job = self._jobs.get(inv.job_id)
        if isinstance(inv, ScheduleInvocation | RuleInvocation) and not job.enabled:
            return RunnerResult(ok=True, message=f"job {job.job_id} is disabled; scheduled run skipped")
        if isinstance(inv, ManualInvocation):
            run = new_run(
                job,
                run_id=new_id(now),
                trigger=Trigger.MANUAL,
                now=now,
                scheduled=None,
                dedupe_key=inv.dedupe_key,
            )
            return self._runs.create(run, dedupe_key=inv.dedupe_key), job
        trigger = Trigger.SCHEDULE if isinstance(inv, ScheduleInvocation) else Trigger.RULE
        run_id = deterministic_id(inv.scheduled_time, inv.dedupe_key)
        run = new_run(
            job,
            run_id=run_id,
            trigger=trigger,
            now=now,
            scheduled=inv.scheduled_time,
            dedupe_key=inv.dedupe_key,
        )
        return self._runs.create(run), job

    def _claim_queued(self, inv: ManualInvocation, now: datetime) -> tuple[Run, Job] | RunnerResult:
        assert inv.run_id is not None
        run = self._runs.get(inv.run_id)
        if run.status is not RunStatus.QUEUED:
            raise DuplicateError(f"run {run.run_id} is already {run.status.value}", existing_id=run.run_id)
        job = self._job_or_fail(run, now)
        if job is None:
            return RunnerResult(
                ok=False,
                run_id=run.run_id,
                status=RunStatus.FAILED.value,
                message=f"job {run.job_id} no longer exists",
            )
        try:
            claimed = self._runs.transition(
                run, RunStatus.RUNNING, started_at=now, lease_until=running_lease(now, job.timeout_seconds)
            )
        except ConflictError as exc:
            raise DuplicateError(str(exc), existing_id=run.run_id) from exc
        return claimed, job

    def _claim_retry(self, inv: RetryInvocation, now: datetime) -> tuple[Run, Job] | RunnerResult:
        run = self._runs.get(inv.run_id)
        if run.status is not RunStatus.RETRYING or run.attempt != inv.attempt - 1:
            raise DuplicateError(
                f"run {run.run_id} is {run.status.value} at attempt {run.attempt}; "
                f"retry {inv.attempt} is stale",
                existing_id=run.run_id,
            )
        if run.cancel_requested:
            return self._cancel_retry(run, inv.attempt, now)
        job = self._job_or_fail(run, now)
        if job is None:
            return RunnerResult(
                ok=False,
                run_id=run.run_id,
                status=RunStatus.FAILED.value,
                message=f"job {run.job_id} no longer exists",
            )
        try:
            claimed = self._runs.transition(
                run,
                RunStatus.RUNNING,
                attempt=inv.attempt,
                started_at=now,
                finished_at=None,
                duration_ms=None,
                next_attempt_at=None,
                lease_until=running_lease(now, job.timeout_seconds),
            )
        except ConflictError as exc:
            raise DuplicateError(str(exc), existing_id=run.run_id) from exc
        return claimed, job

    def _cancel_retry(self, run: Run, attempt: int, now: datetime) -> RunnerResult:
        """A cancel requested while an earlier attempt ran, which then failed before the runner
        saw the request (or whose runner died): the run ends `canceled`, the job is not run again.
        The request is read consistently here, so no cancel can slip past the retry."""
        try:
            canceled = self._runs.transition(run, RunStatus.CANCELED, **cancel_changes(run, now))
        except ConflictError as exc:
            raise DuplicateError(str(exc), existing_id=run.run_id) from exc
        logger.info("retry not started: cancel requested", extra={"run_id": run.run_id, "attempt": attempt})
        return RunnerResult(
            ok=False,
            run_id=canceled.run_id,
            status=canceled.status.value,
            message=f"retry {attempt} not started: cancel requested during attempt {run.attempt}",
        )

    def _job_or_fail(self, run: Run, now: datetime) -> Job | None:
        """The run's job, or None after failing the run because its job was deleted."""
        try:
            return self._jobs.get(run.job_id)
        except NotFoundError:
            error = ErrorInfo(
                type="JobDeleted", message=f"job {run.job_id} was deleted before this run started"
            )
            try:
                self._runs.transition(
                    run,
                    RunStatus.FAILED,
                    finished_at=now,
                    error=error,
                    lease_until=None,
                    next_attempt_at=None,
                )
            except ConflictError:
                logger.warning(
                    "run moved on while failing it for a deleted job", extra={"run_id": run.run_id}
                )
            return None

    # ---- execute -------------------------------------------------------------------------
    def _execute(self, run: Run, job: Job, remaining_ms: Callable[[], int]) -> RunnerResult:
        ctx = RunContext(run=run, runs=self._runs, clock=self._clock, cancel_poll_seconds=self._cancel_poll)
        ctx.log(
            f"attempt {run.attempt}/{run.retry.max_attempts} started ({run.trigger.value})", category="runner"
        )
        lambda_budget = (remaining_ms() - self._margin_ms) / 1000
        budget = min(float(job.timeout_seconds), lambda_budget)
        outcome: dict[str, Any] = {}

        try:
            spec = jobtypes.get(job.job_type)
            params = jobtypes.parse_params(job.job_type, job.params)
        except ValidationError as exc:
            # A configuration error fails the run for good: retrying cannot fix it.
            ctx.log(exc.message, level=LogLevel.ERROR, category="runner")
            error = ErrorInfo(type="InvalidJob", message=exc.message)
            return self._finish(
                ctx,
                RunStatus.FAILED,
                {
                    "finished_at": self._clock(),
                    "error": error,
                    "lease_until": None,
                    "next_attempt_at": None,
                    "duration_ms": 0,
                },
            )

        def body() -> None:
            try:
                outcome["result"] = spec.run(params, ctx)
            except BaseException as exc:
                outcome["error"] = exc

        worker = threading.Thread(target=body, name=f"job-{run.run_id}", daemon=True)
        worker.start()
        worker.join(timeout=max(0.0, budget))
        now = self._clock()
        if worker.is_alive() or isinstance(outcome.get("error"), jobtypes.JobStopped):
            ctx.stop_event.set()
            if ctx.cancel_seen:
                ctx.log("canceled on request", level=LogLevel.WARNING, category="runner")
                return self._finish(
                    ctx,
                    RunStatus.CANCELED,
                    success_changes(run, now, {"message": "canceled"}) | {"result": None},
                )
            if budget < job.timeout_seconds:
                message = (
                    f"stopped {self._margin_ms / 1000:g}s before the Lambda deadline after {budget:.1f}s; "
                    f"the job's timeout of {job.timeout_seconds}s exceeds the function's remaining time"
                )
            else:
                message = f"exceeded the job timeout of {job.timeout_seconds}s"
            ctx.log(message, level=LogLevel.ERROR, category="runner")
            status, changes = failure_changes(
                run, now, ErrorInfo(type="Timeout", message=message), timed_out=True
            )
            return self._finish(ctx, status, changes)
        raised: BaseException | None = outcome.get("error")
        if raised is None:
            result = outcome.get("result") or {}
            ctx.log("attempt completed", category="runner")
            return self._finish(ctx, RunStatus.COMPLETED, success_changes(run, now, result))
        measured: dict[str, Any] | None = None
        if isinstance(raised, jobtypes.JobFailure):
            info = ErrorInfo(type=raised.error_type, message=raised.message)
            # What the job measured before failing (e.g. http_check's status code and latency)
            # is the run's result summary too; it also replaces an earlier attempt's.
            measured = raised.details or None
        else:
            logger.exception("job body raised", exc_info=raised, extra={"run_id": run.run_id})
            info = ErrorInfo(type=type(raised).__name__, message=str(raised) or type(raised).__name__)
        ctx.log(f"attempt failed: {info.message}", level=LogLevel.ERROR, category="runner")
        status, changes = failure_changes(run, now, info, timed_out=False)
        return self._finish(ctx, status, {**changes, "result": measured})

    def _finish(self, ctx: RunContext, status: RunStatus, changes: dict[str, Any]) -> RunnerResult:
        if status is RunStatus.RETRYING and self._cancel_requested(ctx):
            # The owner asked the run to stop and this attempt ended (failed, timed out) before a
            # checkpoint saw it: retrying would run the job again and could end `completed`.
            ctx.log("cancel requested: no retry", level=LogLevel.WARNING, category="runner")
            status, changes = RunStatus.CANCELED, {**changes, "lease_until": None, "next_attempt_at": None}
        if status is RunStatus.RETRYING:
            ctx.log(
                f"retry {ctx.run.attempt + 1} scheduled for {changes['next_attempt_at'].isoformat()}",
                category="runner",
            )
        try:
            ctx.flush(last=True)
        except Exception:
            # The outcome matters more than its log lines: a run left `running` would be timed
            # out by the sweeper (and maybe retried) although the attempt ended. The lost lines
            # are reported here, with the error.
            logger.exception("log entries of the attempt were not stored", extra={"run_id": ctx.run.run_id})
        if ctx.progress:
            changes = {**changes, "progress": ctx.progress}
        try:
            final = self._runs.transition(ctx.run, status, **changes)
        except ConflictError as exc:
            current = self._runs.get(ctx.run.run_id)
            logger.warning(
                "run finished elsewhere first",
                extra={"run_id": current.run_id, "status": current.status.value, "reason": str(exc)},
            )
            return RunnerResult(
                ok=False,
                run_id=current.run_id,
                status=current.status.value,
                message=f"run was already {current.status.value}; outcome {status.value} not recorded",
            )
        logger.info(
            "run finished",
            extra={
                "run_id": final.run_id,
                "status": final.status.value,
                "duration_ms": final.duration_ms,
                "attempt": final.attempt,
            },
        )
        return RunnerResult(
            ok=status is RunStatus.COMPLETED,
            run_id=final.run_id,
            status=final.status.value,
            error=final.error.model_dump() if final.error else None,
        )

    def _cancel_requested(self, ctx: RunContext) -> bool:
        """Whether a cancel was requested, read consistently before a retry is recorded."""
        if ctx.cancel_seen:
            return True
        try:
            return self._runs.is_cancel_requested(ctx.run.run_id, consistent=True)
        except Exception:
            # The retry's claim reads the request again (consistently) and cancels the run
            # there, so an unreadable request now only costs a retry schedule, not the cancel.
            logger.warning(
                "cancel request not readable; retry recorded", exc_info=True, extra={"run_id": ctx.run.run_id}
            )
            return False
