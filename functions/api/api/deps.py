"""The API's collaborators, built once per process on first use (not at import: cold start).

Tests swap the whole set with `override()`, passing moto-backed clients and a fake invoker.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
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
    from api.emails import EmailDirectory
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
    #: Where an address comes from when the token has none (the template's Cognito pool).
    emails: EmailDirectory | None = None
    _provisioned: set[tuple[str, str | None]] = field(default_factory=set)
    #: Users whose address the directory answered for (even "none"): not asked again per process.
    _emails_checked: set[str] = field(default_factory=set)
    _emails_failed_at: datetime | None = None

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
        """Create the caller's user on first sight; remembered per process to save a read per request.

        Not remembered while an address lookup is still owed (the directory was unreachable):
        a later request of the user tries again.
        """
        key = (caller.user_id, caller.email)
        if key not in self._provisioned:
            user = self.user(caller)
            if not self._lookup_owed(caller, user):
                self._provisioned.add(key)

    def user(self, caller: Caller) -> User:
        try:
            user = self.users.get_or_create(caller.user_id, email=caller.email)
        except ValueError:
            # An email claim SES would refuse: keep the user, without an address.
            user = self.users.get_or_create(caller.user_id)
        if self._lookup_owed(caller, user):
            user = self._fill_email(caller, user)
        return user

    def _lookup_owed(self, caller: Caller, user: User) -> bool:
        return user.email is None and self.emails is not None and caller.user_id not in self._emails_checked

    def _fill_email(self, caller: Caller, user: User) -> User:
        """The user with the directory's verified address stored, if it has one for them."""
        from api.emails import RETRY_AFTER, EmailLookupError

        assert self.emails is not None
        if self._emails_failed_at is not None and self.clock() < self._emails_failed_at + RETRY_AFTER:
            return user
        try:
            email = self.emails.verified_email(caller)
        except EmailLookupError as exc:
            # The request must not fail for an address it does not need; notifications wait.
            from api.emails import logger

            self._emails_failed_at = self.clock()
            logger.warning(
                "email lookup failed; retried on a later request",
                extra={"user_id": caller.user_id, "error": str(exc)},
            )
            return user
        self._emails_failed_at = None
        self._emails_checked.add(caller.user_id)
        if email is None:
            return user
        try:
            return self.users.get_or_create(caller.user_id, email=email)
        except ValueError:
            return user


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
    emails = None
    if settings.user_pool_id:
        from api.emails import CognitoEmails, cognito_client

        emails = CognitoEmails(cognito_client, settings.user_pool_id)
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
        emails=emails,
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
