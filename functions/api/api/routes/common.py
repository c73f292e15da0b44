"""Bits every router shares: the caller of this request, ids in paths, documented errors."""

from __future__ import annotations

from typing import Annotated, Any

from aws_lambda_powertools.event_handler.api_gateway import Router
from aws_lambda_powertools.event_handler.openapi.params import Path, Query
from jobtracker_common.models import ID_PATTERN

from api.auth import Caller
from api.models import ErrorResponse

__all__ = ["ID_PATTERN", "Cursor", "JobId", "Limit", "RunId", "caller", "responses"]

CALLER = "caller"

JobId = Annotated[str, Path(pattern=ID_PATTERN, description="Job id (ULID).")]
RunId = Annotated[str, Path(pattern=ID_PATTERN, description="Run id (ULID).")]
Limit = Annotated[int, Query(ge=1, le=200, description="Page size.")]
Cursor = Annotated[
    str | None,
    Query(max_length=2048, description="`next_cursor` of the previous page, unchanged."),
]


def caller(router: Router) -> Caller:
    """Set by the auth middleware before any protected route runs."""
    value = router.context.get(CALLER)
    if not isinstance(value, Caller):
        raise RuntimeError("route reached without authentication")
    return value


def _error(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"model": ErrorResponse}}}


_ERRORS: dict[int, dict[str, Any]] = {
    400: _error("The body is not valid JSON."),
    401: _error("No or invalid bearer token."),
    403: _error("The token lacks the route's scope."),
    404: _error("Not found (or not visible to the caller)."),
    409: _error("Conflicts with the resource's current state."),
    415: _error("The body is not application/json."),
    422: _error("The request is invalid; `details` names each problem."),
    503: _error("A dependency is busy; retry."),
}


def responses(
    ok: int, description: str, *codes: int, body: bool = False, empty: bool = False
) -> dict[int, Any]:
    """A route's documented responses: its success (schema from the return type, or none when
    `empty`), plus 401/403/422/503 always, 400/415 when it takes a body, and `codes`."""
    success: dict[str, Any] = {"description": description}
    if empty:
        success["content"] = {}
    extra = {400, 415} if body else set()
    return {ok: success} | {code: _ERRORS[code] for code in sorted({401, 403, 422, 503, *extra, *codes})}
