"""Typed settings of the tracker and the sweeper (env var = field alias; no defaults for resources)."""

from __future__ import annotations

from jobtracker_common.settings import JobsTableSettings, RunsTableSettings
from pydantic import Field


class TrackerSettings(JobsTableSettings):
    """Runs arrive in stream records: the tracker never reads the runs table itself."""

    stats_table_name: str = Field(alias="STATS_TABLE_NAME", min_length=3)
    schedule_group_name: str = Field(alias="SCHEDULE_GROUP_NAME", min_length=1)
    scheduler_role_arn: str = Field(alias="SCHEDULER_ROLE_ARN", min_length=20)
    job_runner_arn: str = Field(alias="JOB_RUNNER_ARN", min_length=20)
    #: Where Scheduler sends a retry invocation it could not deliver.
    scheduler_dlq_arn: str | None = Field(default=None, alias="SCHEDULER_DLQ_ARN")


class SweeperSettings(RunsTableSettings):
    """The sweeper needs only the runs table (and the active-index shard count)."""
