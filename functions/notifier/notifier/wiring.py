"""How both notifier functions (the stream handler and the digest tick) build their collaborators.

Kept apart from `notifier.handler`: that module imports Powertools' batch utility, which the
digest never uses and which, imported after pydantic, loads every Parser model (~0.2x of a cold
start).
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from botocore.config import Config
from jobtracker_common import aws
from jobtracker_common.repositories.notifications import NotificationsRepository
from jobtracker_common.repositories.users import UsersRepository

from notifier.sender import SesSender
from notifier.service import NotifierService
from notifier.settings import NotifierSettings

if TYPE_CHECKING:
    from mypy_boto3_sesv2 import SESV2Client

#: SES throttling is retried by SesSender within the invocation's time budget, so botocore must
#: not retry on its own (it would sleep past the deadline and hide how long we waited).
SES_CLIENT_CONFIG = aws.CLIENT_CONFIG.merge(Config(retries={"total_max_attempts": 1, "mode": "standard"}))


@lru_cache(maxsize=1)
def ses_client() -> SESV2Client:
    client: SESV2Client = aws.new_client("sesv2", SES_CLIENT_CONFIG)
    return client


def build_service(settings: NotifierSettings, ses: SESV2Client | None = None) -> NotifierService:
    ddb = aws.client("dynamodb")
    return NotifierService(
        users=UsersRepository(ddb, settings.users_table_name),
        notifications=NotificationsRepository(ddb, settings.notifications_table_name),
        sender=SesSender(
            client=ses or ses_client(),
            sender_email=settings.sender_email,
            product_name=settings.product_name,
            reply_to=settings.reply_to_email,
        ),
        settings=settings,
    )
