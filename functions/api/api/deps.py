"""The API's collaborators, built once per process on first use (not at import: cold start).

Tests swap the whole set with `override()`, passing moto-backed clients and a fake invoker.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

from jobtracker_common.timeutil import Clock, utcnow

if TYPE_CHECKING:
    from jobtracker_common.repositories import JobsRepository, RunsRepository
    from jobtracker_common.repositories.stats import StatsRepository
    from jobtracker_common.repositories.users import UsersRepository
    from jobtracker_common.schedules import ScheduleService
    from jobtracker_common.users import User

    from api.auth import Caller
    from api.service import Invoker, JobsService, RunsService, StatisticsService


@dataclass
class Services:
    jobs: JobsRepository
    runs: RunsRepository
    users: UsersRepository
    schedules: ScheduleService
    invoker: Invoker
    stats: StatsRepository | None = None
    clock: Clock = utcnow
    _provisioned: set[tuple[str, str | None]] = field(default_factory=set)

    @property
    def jobs_service(self) -> JobsService:
        from api.service import JobsService

        return JobsService(self.jobs, self.schedules, self.runs, self.invoker, self.clock)

    @property
    def statistics_service(self) -> StatisticsService:
        from api.service import StatisticsService

        if self.stats is None:
            from jobtracker_common.errors import ConfigurationError

            raise ConfigurationError("no statistics repository configured")
        return StatisticsService(self.stats, self.jobs, self.clock)

    @property
    def runs_service(self) -> RunsService:
        from api.service import RunsService

        return RunsService(self.runs, self.schedules, self.clock)

    def provision(self, caller: Caller) -> None:
        """Create the caller's user on first sight; remembered per process to save a read per request."""
        key = (caller.user_id, caller.email)
        if key not in self._provisioned:
            self.user(caller)
            self._provisioned.add(key)

    def user(self, caller: Caller) -> User:
        try:
            return self.users.get_or_create(caller.user_id, email=caller.email)
        except ValueError:
            # An email claim SES would refuse: keep the user, without an address.
            return self.users.get_or_create(caller.user_id)


@lru_cache(maxsize=1)
def _from_environment() -> Services:
    from jobtracker_common import aws
    from jobtracker_common.repositories import JobsRepository, RunsRepository
    from jobtracker_common.repositories.stats import StatsRepository
    from jobtracker_common.repositories.users import UsersRepository
    from jobtracker_common.schedules import ScheduleService
    from jobtracker_common.settings import load_settings

    from api.service import LambdaInvoker
    from api.settings import ApiSettings

    settings = load_settings(ApiSettings)
    ddb = aws.client("dynamodb")
    # Scheduler (job writes, cancels) and Lambda (run now) serve a minority of requests: those
    # clients are built by the first request that calls them, not by every cold start.
    return Services(
        jobs=JobsRepository(ddb, settings.jobs_table_name),
        runs=RunsRepository(ddb, settings.runs_table_name, active_shards=settings.active_index_shards),
        users=UsersRepository(ddb, settings.users_table_name),
        schedules=ScheduleService(
            aws.lazy_client("scheduler"),
            group_name=settings.schedule_group_name,
            role_arn=settings.scheduler_role_arn,
            target_arn=settings.job_runner_arn,
            dlq_arn=settings.scheduler_dlq_arn or None,
        ),
        invoker=LambdaInvoker(aws.lazy_client("lambda"), settings.job_runner_arn),
        stats=StatsRepository(ddb, settings.stats_table_name),
    )


_override: list[Services] = []


def services() -> Services:
    return _override[-1] if _override else _from_environment()


@contextmanager
def override(replacement: Services) -> Iterator[Services]:
    _override.append(replacement)
    try:
        yield replacement
    finally:
        _override.remove(replacement)
