"""Who is calling: the caller comes from the JWT claims API Gateway verified, never from the
path or body. Scopes are checked by API Gateway per route and again here, so a route wired
without an authorizer (or a local gateway that forgot a scope) still cannot be misused.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from jobtracker_common.errors import ForbiddenError, JobTrackerError

READ_JOB_LOGS = "read:job_logs"
WRITE_JOB_LOGS = "write:job_logs"
READ_JOBS = "read:jobs"
WRITE_JOBS = "write:jobs"
ADMIN = "admin"
ALL_SCOPES = (READ_JOB_LOGS, WRITE_JOB_LOGS, READ_JOBS, WRITE_JOBS, ADMIN)

#: Cognito resource-server scopes arrive as `<identifier>/<scope>` (template: UserPoolResourceServer).
RESOURCE_SERVER = "jobtracker"
#: The OpenAPI security scheme name the routes declare their scopes under.
SECURITY_SCHEME = "jwt"


class AuthenticationError(JobTrackerError):
    """No token, or a token without a subject: 401."""


class MissingScopeError(ForbiddenError):
    """Authenticated, but the token lacks the route's scope: 403."""


@dataclass(frozen=True)
class Caller:
    user_id: str
    email: str | None
    scopes: frozenset[str]
    #: Cognito's `username` claim (access tokens; `cognito:username` in ID tokens): the name
    #: AdminGetUser looks the user up by when the token carries no email (api.emails).
    username: str | None = None

    @property
    def is_admin(self) -> bool:
        return ADMIN in self.scopes

    def can_see(self, owner_id: str) -> bool:
        return self.is_admin or owner_id == self.user_id


def normalize_scope(scope: str) -> str:
    """`jobtracker/read:jobs` -> `read:jobs`; scopes of other resource servers stay foreign."""
    prefix = RESOURCE_SERVER + "/"
    return scope[len(prefix) :] if scope.startswith(prefix) else scope


def _split_scopes(value: Any) -> list[str]:
    if isinstance(value, list | tuple):
        return [str(v) for v in value]
    if not isinstance(value, str):
        return []
    # HTTP API renders array claims as "[a b]"; the OAuth `scope` claim is space separated.
    return value.strip().strip("[]").split()


def caller_from_event(event: Mapping[str, Any]) -> Caller:
    """The caller named by the HTTP API v2 JWT authorizer context; AuthenticationError if none."""
    context = event.get("requestContext")
    authorizer = context.get("authorizer") if isinstance(context, Mapping) else None
    jwt = authorizer.get("jwt") if isinstance(authorizer, Mapping) else None
    claims = jwt.get("claims") if isinstance(jwt, Mapping) else None
    if not isinstance(claims, Mapping):
        raise AuthenticationError("missing or invalid bearer token")
    sub = claims.get("sub")
    if not isinstance(sub, str) or not sub.strip() or len(sub) > 256:
        raise AuthenticationError("token has no subject (sub claim)")
    email = claims.get("email")
    username = claims.get("username", claims.get("cognito:username"))
    raw = _split_scopes(claims.get("scope")) + _split_scopes(claims.get("scp"))
    if isinstance(jwt, Mapping):
        raw += _split_scopes(jwt.get("scopes"))
    return Caller(
        user_id=sub,
        email=email if isinstance(email, str) and email else None,
        scopes=frozenset(normalize_scope(s) for s in raw),
        username=username if isinstance(username, str) and username.strip() else None,
    )


def required_scopes(security: Iterable[Mapping[str, list[str]]] | None) -> list[str] | None:
    """Scopes a route declared in its OpenAPI `security`; None = public route."""
    if security is None:
        return None
    scopes: list[str] = []
    for requirement in security:
        scopes.extend(requirement.get(SECURITY_SCHEME, []))
    return scopes


def check_scopes(caller: Caller, scopes: list[str]) -> None:
    """Like API Gateway's AuthorizationScopes: any one of the route's scopes is enough."""
    if scopes and not caller.scopes.intersection(scopes):
        raise MissingScopeError(
            f"token lacks the required scope: {' or '.join(scopes)}",
            details=[{"required_scopes": scopes}],
        )


def secured(*scopes: str) -> list[dict[str, list[str]]]:
    """A route's `security` requirement: a valid token, with one of `scopes` if any are given."""
    return [{SECURITY_SCHEME: list(scopes)}]
