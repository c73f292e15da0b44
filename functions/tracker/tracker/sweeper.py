"""Lambda entry point of the sweeper (EventBridge Scheduler, rate(1 minute))."""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from jobtracker_common import aws
from jobtracker_common.observability import logger as make_logger
from jobtracker_common.observability import metrics as make_metrics
from jobtracker_common.repositories import RunsRepository
from jobtracker_common.settings import load_settings

from tracker.settings import SweeperSettings
from tracker.sweep import Sweeper

logger = make_logger("sweeper")
metrics = make_metrics("sweeper")


@lru_cache(maxsize=1)
def sweeper() -> Sweeper:
    settings = load_settings(SweeperSettings)
    return Sweeper(
        RunsRepository(
            aws.client("dynamodb"), settings.runs_table_name, active_shards=settings.active_index_shards
        )
    )


def handle(event: Any, context: LambdaContext | None, target: Sweeper) -> dict[str, Any]:
    report = target.sweep()
    metrics.add_metric(name="LeasesExpired", unit=MetricUnit.Count, value=report.expired)
    metrics.add_metric(name="RunsTimedOut", unit=MetricUnit.Count, value=len(report.timed_out))
    return report.as_dict()


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle(event, context, sweeper())
