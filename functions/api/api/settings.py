"""The API function's environment (template: ApiFunction Environment)."""

from __future__ import annotations

from jobtracker_common.settings import RunsSettings
from pydantic import Field


class ApiSettings(RunsSettings):
    stats_table_name: str = Field(alias="STATS_TABLE_NAME", min_length=3)
    users_table_name: str = Field(alias="USERS_TABLE_NAME", min_length=3)
    schedule_group_name: str = Field(alias="SCHEDULE_GROUP_NAME", min_length=1)
    scheduler_role_arn: str = Field(alias="SCHEDULER_ROLE_ARN", min_length=1)
    scheduler_dlq_arn: str | None = Field(default=None, alias="SCHEDULER_DLQ_ARN")
    job_runner_arn: str = Field(alias="JOB_RUNNER_ARN", min_length=1)
    #: The template's Cognito user pool; empty with an external issuer (no address lookups).
    user_pool_id: str = Field(alias="USER_POOL_ID")
