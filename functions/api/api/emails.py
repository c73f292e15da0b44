"""A user's email address when the token does not carry one.

Cognito ACCESS tokens have no `email` claim (only `sub`, `username`, `client_id`, `scope`...), so
with the template's own user pool every user would be provisioned without an address and the
notifier would skip them all. The API therefore asks the pool once (AdminGetUser) for a user it
holds no address for, and stores it. Only a VERIFIED address is taken: an unverified one may
belong to someone else, and mail to it would leak job results.

External issuers get no lookup: their access tokens must carry `email` (README, Authentication).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Protocol

from aws_lambda_powertools import Logger
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

if TYPE_CHECKING:
    from api.auth import Caller

logger = Logger(service="api", child=True)

#: A lookup runs inside a user's request (API Gateway gives up after 30 s): fail fast, answer
#: without the address, and try again on a later request.
LOOKUP_CONFIG = Config(
    retries={"total_max_attempts": 2, "mode": "standard"},
    connect_timeout=2,
    read_timeout=3,
)


#: After a failed lookup, none for this long (any user, this process): an unreachable Cognito
#: would otherwise add its timeouts to every request of every user still without an address,
#: and a route that reads the user again would ask twice in one request.
RETRY_AFTER = timedelta(seconds=30)


class EmailLookupError(Exception):
    """The directory could not be asked (unreachable, throttled, denied): retry later."""


class EmailDirectory(Protocol):
    def verified_email(self, caller: Caller) -> str | None:
        """The caller's verified address, or None if they have none; EmailLookupError if unknown."""
        ...


class CognitoEmails:
    """Verified addresses from a Cognito user pool (cognito-idp:AdminGetUser on that pool only)."""

    def __init__(self, connect: Callable[[], Any], user_pool_id: str) -> None:
        # A factory: most requests never look anything up, so the client is built on first use.
        self._connect = connect
        self._client: Any = None
        self._user_pool_id = user_pool_id

    def verified_email(self, caller: Caller) -> str | None:
        if self._client is None:
            self._client = self._connect()
        try:
            response = self._client.admin_get_user(
                UserPoolId=self._user_pool_id, Username=caller.username or caller.user_id
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "UserNotFoundException":
                return None
            raise EmailLookupError(str(exc)) from exc
        except BotoCoreError as exc:
            raise EmailLookupError(str(exc)) from exc
        attributes = {a["Name"]: a.get("Value") for a in response.get("UserAttributes", [])}
        # A username can be reused after its user was deleted: the token's subject must match.
        if attributes.get("sub", caller.user_id) != caller.user_id:
            return None
        if str(attributes.get("email_verified", "")).lower() != "true":
            return None
        email = attributes.get("email")
        return email if isinstance(email, str) and email else None


def cognito_client() -> Any:
    """A cognito-idp client with the short timeouts above (not the shared, patient one)."""
    from jobtracker_common import aws

    return aws.new_client("cognito-idp", LOOKUP_CONFIG)
