"""Lambda entry point: parse the event, call the service, map the result. Nothing else."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from jobtracker_common import aws
from jobtracker_common.errors import NotFoundError, ValidationError
from jobtracker_common.observability import logger as make_logger
from jobtracker_common.observability import metrics as make_metrics
from jobtracker_common.repositories import JobsRepository, RunsRepository
from jobtracker_common.settings import RunsSettings, load_settings

from job_runner.events import parse_invocation
from job_runner.service import RunnerService

logger = make_logger("job_runner")
metrics = make_metrics("job_runner")


@lru_cache(maxsize=1)
def service() -> RunnerService:
    settings = load_settings(RunsSettings)
    ddb = aws.client("dynamodb")
    return RunnerService(
        JobsRepository(ddb, settings.jobs_table_name),
        RunsRepository(ddb, settings.runs_table_name, active_shards=settings.active_index_shards),
    )


def handle(event: Any, context: LambdaContext, runner: RunnerService) -> dict[str, Any]:
    try:
        invocation = parse_invocation(event)
        result = runner.handle(invocation, context.get_remaining_time_in_millis)
    except (ValidationError, NotFoundError) as exc:
        # Malformed or unknown: nothing was written. Reported (log + metric + alarm), not retried:
        # a retry of the same bad event cannot succeed.
        logger.error("runner event rejected", extra={"reason": exc.message, "event": event})
        metrics.add_metric(name="RejectedInvocations", unit=MetricUnit.Count, value=1)
        return {
            "ok": False,
            "error": {"type": type(exc).__name__, "message": exc.message, "details": exc.details},
        }
    if result.duplicate:
        metrics.add_metric(name="DuplicateDeliveries", unit=MetricUnit.Count, value=1)
    elif result.status:
        metrics.add_metric(name=f"Runs_{result.status}", unit=MetricUnit.Count, value=1)
    return result.as_dict()


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle(event, context, service())
