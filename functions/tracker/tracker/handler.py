"""Lambda entry point for the RunsTable stream: one record at a time, partial batch responses.

A record that fails (poison image, throttling that outlasted the client's retries) is reported
in `batchItemFailures`; Lambda retries from it (MaximumRetryAttempts, bisecting) and then sends
it to the on-failure queue. Nothing is dropped silently. The handler never reads
`eventSourceARN`, which moto's stream records lack.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from jobtracker_common import aws
from jobtracker_common.batch import partial_response, sequence_number
from jobtracker_common.errors import JobTrackerError
from jobtracker_common.observability import logger as make_logger
from jobtracker_common.observability import metrics as make_metrics
from jobtracker_common.repositories import JobsRepository
from jobtracker_common.repositories.stats import StatsRepository
from jobtracker_common.schedules import ScheduleService
from jobtracker_common.settings import load_settings

from tracker.settings import TrackerSettings
from tracker.transitions import TransitionTracker

logger = make_logger("tracker")
metrics = make_metrics("tracker")


@lru_cache(maxsize=1)
def tracker() -> TransitionTracker:
    settings = load_settings(TrackerSettings)
    ddb = aws.client("dynamodb")
    return TransitionTracker(
        StatsRepository(ddb, settings.stats_table_name),
        JobsRepository(ddb, settings.jobs_table_name),
        ScheduleService(
            # Only a failed run with attempts left needs Scheduler: most batches never build it.
            aws.lazy_client("scheduler"),
            group_name=settings.schedule_group_name,
            role_arn=settings.scheduler_role_arn,
            target_arn=settings.job_runner_arn,
            dlq_arn=settings.scheduler_dlq_arn,
        ),
    )


def handle(event: dict[str, Any], context: LambdaContext | None, target: TransitionTracker) -> dict[str, Any]:
    records = event.get("Records") or []
    metrics.add_metric(name="StreamRecordsReceived", unit=MetricUnit.Count, value=len(records))
    # Statistics of the batch are written together first; each record's outcome is then mapped
    # to the partial batch response (an exception = a batch item failure). Every record ends up
    # either processed or in batchItemFailures, even when all of them fail.
    outcomes = {
        id(record): outcome for record, outcome in zip(records, target.handle_batch(records), strict=True)
    }

    def record_handler(record: dict[str, Any]) -> None:
        outcome = outcomes[id(record)]
        if isinstance(outcome, Exception):
            reason = outcome.message if isinstance(outcome, JobTrackerError) else str(outcome)
            logger.error(
                "stream record failed",
                extra={
                    "reason": reason,
                    "sequence_number": sequence_number(record),
                },
            )
            metrics.add_metric(name="TrackerRecordFailures", unit=MetricUnit.Count, value=1)
            raise outcome
        if outcome.counted:
            metrics.add_metric(name="TransitionsCounted", unit=MetricUnit.Count, value=1)
        if outcome.scheduled:
            metrics.add_metric(name="RetriesScheduled", unit=MetricUnit.Count, value=1)

    return partial_response(event, record_handler, context)


@metrics.log_metrics
@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return handle(event, context, tracker())
