"""The whole back end in one process on moto: runner, tracker, notifier, and the runs stream.

The stream is read through moto's DynamoDB Streams API with the local stack's `ShardReader`
(records shaped as Lambda delivers them) and filtered with the template's FilterCriteria, then
handed to the real handlers' `handle()` functions; the scenarios choose how often and in what
order batches arrive. Clients are fresh per world, so fault injectors never leak.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from bench.common import FakeContext, isolated_aws, new_client

SENDER = "jobs@example.com"
NOTIFIER_ENV = {
    "JOBS_TABLE_NAME": "JobsTable",
    "USERS_TABLE_NAME": "UsersTable",
    "NOTIFICATIONS_TABLE_NAME": "NotificationsTable",
    "SENDER_EMAIL": SENDER,
    "PRODUCT_NAME": "NetRaven",
}


@dataclass
class World:
    ddb: Any
    ses: Any
    streams: Any
    scheduler: Any
    tracker: Any = None
    notifier: Any = None
    _readers: dict[str, Any] = field(default_factory=dict)
    _offsets: dict[str, int] = field(default_factory=dict)

    # ---- stream --------------------------------------------------------------------------
    def _reader(self) -> Any:
        from jobtracker_local.streams import ShardReader

        if "runs" not in self._readers:
            arn = self.ddb.describe_table(TableName="RunsTable")["Table"]["LatestStreamArn"]
            (shard,) = self.streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][:1]
            self._readers["runs"] = ShardReader(self.streams, arn, shard["ShardId"], "us-east-1")
        return self._readers["runs"]

    def new_records(self, function_id: str) -> list[dict[str, Any]]:
        """Records not yet taken by `function_id`, filtered by its template FilterCriteria."""
        from jobtracker_local.patterns import matches_any

        reader = self._reader()
        reader.fetch(0)
        source = stream_source(function_id)
        records = reader.after(None)
        start = self._offsets.get(function_id, 0)
        self._offsets[function_id] = len(records)
        return [r for r in records[start:] if matches_any(list(source.filters), r)]

    def batches(self, function_id: str) -> Iterator[list[dict[str, Any]]]:
        size = stream_source(function_id).batch_size
        records = self.new_records(function_id)
        for start in range(0, len(records), size):
            yield records[start : start + size]

    # ---- handlers ------------------------------------------------------------------------
    def deliver_tracker(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        from tracker import handler

        result: dict[str, Any] = handler.handle({"Records": records}, FakeContext(), self.tracker)  # type: ignore[arg-type]
        return result

    def deliver_notifier(self, records: list[dict[str, Any]]) -> dict[str, Any]:
        from notifier import handler

        result: dict[str, Any] = handler.handle({"Records": records}, FakeContext(), self.notifier)  # type: ignore[arg-type]
        return result

    def sent_emails(self) -> list[Any]:
        from moto.core import DEFAULT_ACCOUNT_ID  # type: ignore[attr-defined]
        from moto.ses.models import ses_backends

        return list(ses_backends[DEFAULT_ACCOUNT_ID]["us-east-1"].sent_messages)


def stream_source(function_id: str) -> Any:
    from jobtracker_local.resources import LocalResources
    from jobtracker_local.streams import StreamSource
    from jobtracker_local.template import load_template

    resources = LocalResources(load_template(), "http://127.0.0.1:1")
    (source,) = [s for s in StreamSource.from_template(resources) if s.function_id == function_id]
    return source


def build_tracker(ddb: Any, scheduler: Any) -> Any:
    from jobtracker_common.repositories import JobsRepository
    from jobtracker_common.repositories.stats import StatsRepository
    from jobtracker_common.schedules import ScheduleService
    from tracker.transitions import TransitionTracker

    return TransitionTracker(
        StatsRepository(ddb, "StatsTable"),
        JobsRepository(ddb, "JobsTable"),
        ScheduleService(
            scheduler,
            group_name="jobtracker-jobs",
            role_arn="arn:aws:iam::123456789012:role/SchedulerRole",
            target_arn="arn:aws:lambda:us-east-1:123456789012:function:JobRunnerFunction",
        ),
    )


def build_notifier(ddb: Any, ses: Any) -> Any:
    from jobtracker_common.repositories.notifications import NotificationsRepository
    from jobtracker_common.repositories.users import UsersRepository
    from notifier.sender import SesSender
    from notifier.service import NotifierService
    from notifier.settings import NotifierSettings

    settings = NotifierSettings.from_env(NOTIFIER_ENV)
    return NotifierService(
        users=UsersRepository(ddb, "UsersTable"),
        notifications=NotificationsRepository(ddb, "NotificationsTable"),
        sender=SesSender(client=ses, sender_email=SENDER, product_name=settings.product_name),
        settings=settings,
    )


def ses_client() -> Any:
    from notifier.wiring import SES_CLIENT_CONFIG

    return new_client("sesv2", config=SES_CLIENT_CONFIG)


@contextmanager
def world(*, tracker: bool = True, notifier: bool = True, ddb_config: Any = None) -> Iterator[World]:
    with isolated_aws():
        ddb = new_client("dynamodb", **({"config": ddb_config} if ddb_config else {}))
        ses = ses_client()
        ses.create_email_identity(EmailIdentity=SENDER)
        scheduler = new_client("scheduler")
        w = World(ddb=ddb, ses=ses, streams=new_client("dynamodbstreams"), scheduler=scheduler)
        if tracker:
            w.tracker = build_tracker(ddb, scheduler)
        if notifier:
            w.notifier = build_notifier(ddb, ses)
        yield w


def add_user(ddb: Any, user_id: str, email: str | None = None) -> Any:
    from jobtracker_common.repositories.users import UsersRepository

    return UsersRepository(ddb, "UsersTable").get_or_create(user_id, email=email or f"{user_id}@example.com")
