"""Lambda entry point for the runs stream: parse records, notify, report partial failures."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from jobtracker_common.batch import partial_response
from jobtracker_common.errors import ValidationError
from jobtracker_common.observability import logger as make_logger
from jobtracker_common.observability import metrics as make_metrics
from jobtracker_common.settings import load_settings

from notifier.events import RunEvent, parse_record
from notifier.sender import Budget
from notifier.service import NotifierService, UnrecordedSendsError
from notifier.settings import NotifierSettings
from notifier.wiring import build_service

logger = make_logger("notifier")
metrics = make_metrics("notifier")


@lru_cache(maxsize=1)
def service() -> NotifierService:
    return build_service(load_settings(NotifierSettings))


def handle(event: dict[str, Any], context: LambdaContext, notifier: NotifierService) -> dict[str, Any]:
    budget = Budget(remaining_ms=context.get_remaining_time_in_millis)
    # Always answer with a partial response, even when every record failed: the failures name
    # exactly what to retry, so there is nothing for a function error (and bisection) to add.
    # Parsed once up front: the batch needs every recipient before the first record is served.
    parsed = {_seq_of(raw): _parse(raw) for raw in event.get("Records", [])}

    def record_handler(record: dict[str, Any]) -> None:
        seq = _seq_of(record)
        run_event = parsed[seq] if seq in parsed else _parse(record)
        if isinstance(run_event, ValidationError):
            exc = run_event
            # A run image that cannot be parsed will never parse: log + metric (alarmed), no retry.
            logger.error("unparseable run image", extra={"reason": exc.message, "seq": seq})
            metrics.add_metric(name="RejectedRecords", unit=MetricUnit.Count, value=1)
            return
        if run_event is None:
            return
        try:
            outcomes = notifier.notify(run_event, budget, batch)
        except Exception:
            logger.exception(
                "notification delivery incomplete; record reported as a batch item failure",
                extra={"run_id": run_event.run.run_id, "event": run_event.event.value, "seq": seq},
            )
            metrics.add_metric(name="FailedRecords", unit=MetricUnit.Count, value=1)
            raise
        for outcome in outcomes.values():
            metrics.add_metric(name=f"Notifications_{outcome.value}", unit=MetricUnit.Count, value=1)

    response: dict[str, Any] = {}
    try:
        with notifier.batch(e for e in parsed.values() if isinstance(e, RunEvent)) as batch:
            response = partial_response(event, record_handler, context)
    except UnrecordedSendsError as exc:
        # The emails went out and their claims forbid a resend, so a retry would change nothing:
        # the sweep records them `unconfirmed` once the lease has expired.
        logger.error("sent emails whose outcome could not be recorded", extra={"keys": exc.keys[:50]})
        metrics.add_metric(name="UnrecordedSends", unit=MetricUnit.Count, value=len(exc.keys))
    return response


def _parse(raw: dict[str, Any]) -> RunEvent | ValidationError | None:
    try:
        return parse_record(raw)
    except ValidationError as exc:
        return exc


def _seq_of(raw: dict[str, Any]) -> str | None:
    seq = raw.get("dynamodb", {}).get("SequenceNumber")
    return str(seq) if seq is not None else None


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle(event, context, service())
