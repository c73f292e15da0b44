"""Notifier settings (both functions: the stream consumer and the digest sender)."""

from __future__ import annotations

from jobtracker_common.settings import BaseSettings
from jobtracker_common.users import validate_email
from pydantic import Field, field_validator


class NotifierSettings(BaseSettings):
    users_table_name: str = Field(alias="USERS_TABLE_NAME", min_length=3)
    notifications_table_name: str = Field(alias="NOTIFICATIONS_TABLE_NAME", min_length=3)
    sender_email: str = Field(alias="SENDER_EMAIL", min_length=3)
    reply_to_email: str | None = Field(default=None, alias="REPLY_TO_EMAIL")
    product_name: str = Field(default="NetRaven", alias="PRODUCT_NAME", min_length=1, max_length=60)
    dashboard_url: str | None = Field(default=None, alias="DASHBOARD_URL")
    #: Notification records outlive the runs they describe only as long as they are useful.
    retention_days: int = Field(default=90, alias="NOTIFICATION_RETENTION_DAYS", ge=1, le=3_650)
    #: A claim's lease: longer than the function timeout, so a live worker never loses its claim.
    lease_seconds: int = Field(default=900, alias="NOTIFICATION_LEASE_SECONDS", ge=60)

    @field_validator("reply_to_email", "dashboard_url", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        # SAM passes unset parameters as "" (the template's defaults).
        return None if value in ("", None) else value

    @field_validator("dashboard_url")
    @classmethod
    def _strip_slash(cls, value: str | None) -> str | None:
        return value.rstrip("/") if value else value

    @field_validator("sender_email", "reply_to_email")
    @classmethod
    def _check_address(cls, value: str | None) -> str | None:
        # These end up in From/Reply-To headers: a CR/LF here would be a header injection.
        return None if value is None else validate_email(value)
