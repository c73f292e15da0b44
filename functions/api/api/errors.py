"""The one place where errors become HTTP responses: `{"message": ..., "details": [...]}`.

Domain errors (jobtracker_common.errors) map by class; request validation is 422, except a
body that is not JSON at all (400). A request that is both unauthenticated (or lacks the
route's scope) and malformed gets the 401/403: who may ask is decided before what was asked.
"""

from __future__ import annotations

from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any

from aws_lambda_powertools.event_handler import Response, content_types
from aws_lambda_powertools.event_handler.exceptions import NotFoundError as RouteNotFoundError
from aws_lambda_powertools.event_handler.openapi.exceptions import (
    RequestUnsupportedContentType,
    RequestValidationError,
)
from jobtracker_common.errors import (
    ConfigurationError,
    ConflictError,
    ForbiddenError,
    JobTrackerError,
    NotFoundError,
    TransientError,
    ValidationError,
    clip,
)
from jobtracker_common.observability import logger as make_logger

from api.auth import AuthenticationError

if TYPE_CHECKING:
    from aws_lambda_powertools.event_handler import APIGatewayHttpResolver

logger = make_logger("api")

#: Most specific first; the first class an error is an instance of decides the status.
DOMAIN_STATUS: tuple[tuple[type[JobTrackerError], HTTPStatus], ...] = (
    (AuthenticationError, HTTPStatus.UNAUTHORIZED),
    (ForbiddenError, HTTPStatus.FORBIDDEN),
    (NotFoundError, HTTPStatus.NOT_FOUND),
    (ConflictError, HTTPStatus.CONFLICT),
    (ValidationError, HTTPStatus.UNPROCESSABLE_ENTITY),
    (TransientError, HTTPStatus.SERVICE_UNAVAILABLE),
    (ConfigurationError, HTTPStatus.INTERNAL_SERVER_ERROR),
)

_THROTTLING = {
    "ThrottlingException",
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
}


#: An error body must stay far below Lambda's 6 MB response limit (over it, API Gateway answers
#: its own 500), however many problems a request has (one per unknown field) and however long
#: the names and values its messages quote: the first MAX_DETAILS details, texts clipped.
MAX_DETAILS = 50
MAX_MESSAGE_CHARS = 2_000
MAX_DETAIL_CHARS = 500


def _bounded(detail: dict[str, Any]) -> dict[str, Any]:
    return {k: clip(v, MAX_DETAIL_CHARS) if isinstance(v, str) else v for k, v in detail.items()}


def error_response(
    status: HTTPStatus, message: str, details: list[dict[str, Any]] | None = None
) -> Response[Any]:
    headers = {"Retry-After": "1"} if status == HTTPStatus.SERVICE_UNAVAILABLE else None
    details = details or []
    message = clip(message, MAX_MESSAGE_CHARS)
    if len(details) > MAX_DETAILS:
        message += f" ({len(details)} problems; details lists the first {MAX_DETAILS})"
    return Response(
        status_code=status.value,
        content_type=content_types.APPLICATION_JSON,
        body={"message": message, "details": [_bounded(d) for d in details[:MAX_DETAILS]]},
        headers=headers,
    )


def domain_error_response(exc: JobTrackerError) -> Response[Any]:
    status = next((s for cls, s in DOMAIN_STATUS if isinstance(exc, cls)), HTTPStatus.INTERNAL_SERVER_ERROR)
    if status >= 500:
        logger.error("request failed", extra={"error": type(exc).__name__, "reason": exc.message})
    if status == HTTPStatus.INTERNAL_SERVER_ERROR:
        # Configuration problems are for the operator's logs, not for the caller.
        return error_response(status, "the service is misconfigured; the operator has been alerted")
    return error_response(status, exc.message, exc.details)


def _location(loc: tuple[Any, ...]) -> tuple[str, str]:
    where = str(loc[0]) if loc else "request"
    return where, ".".join(str(p) for p in loc[1:])


def validation_error_response(exc: RequestValidationError) -> Response[Any]:
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return error_response(
            HTTPStatus.BAD_REQUEST,
            "request body is not valid JSON",
            [{"location": "body", "message": str(e.get("ctx", {}).get("error", ""))} for e in errors],
        )
    details = []
    for err in errors:
        where, field = _location(tuple(err.get("loc", ())))
        # The message only: never the input (it may be large or sensitive) or pydantic internals.
        details.append(
            {
                "location": where,
                "field": field,
                "message": str(err.get("msg", "invalid")),
                "type": err.get("type"),
            }
        )
    summary = "; ".join(f"{d['field'] or d['location']}: {d['message']}" for d in details[:5])
    return error_response(HTTPStatus.UNPROCESSABLE_ENTITY, f"request is invalid: {summary}", details)


def register(app: APIGatewayHttpResolver, check_access: Callable[[APIGatewayHttpResolver], None]) -> None:
    """Install the mapping on `app`; `check_access` raises when the caller may not use the route."""

    def _invalid_request(exc: RequestValidationError) -> Response[Any]:
        # Validation runs before any middleware; authorization must still win over it.
        try:
            check_access(app)
        except JobTrackerError as denied:
            return domain_error_response(denied)
        return validation_error_response(exc)

    def _unsupported(exc: RequestUnsupportedContentType) -> Response[Any]:
        try:
            check_access(app)
        except JobTrackerError as denied:
            return domain_error_response(denied)
        return error_response(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the request body as application/json")

    def _domain(exc: JobTrackerError) -> Response[Any]:
        return domain_error_response(exc)

    def _no_route(exc: RouteNotFoundError) -> Response[Any]:
        return error_response(HTTPStatus.NOT_FOUND, "no such route")

    def _unexpected(exc: Exception) -> Response[Any]:
        response = getattr(exc, "response", None)
        code = response.get("Error", {}).get("Code", "") if isinstance(response, dict) else ""
        if code in _THROTTLING:
            logger.warning("throttled by AWS", extra={"code": code})
            return error_response(HTTPStatus.SERVICE_UNAVAILABLE, "the service is busy; retry shortly")
        logger.exception("unhandled error")
        return error_response(HTTPStatus.INTERNAL_SERVER_ERROR, "internal error")

    app.exception_handler(RequestValidationError)(_invalid_request)
    app.exception_handler(RequestUnsupportedContentType)(_unsupported)
    app.exception_handler(JobTrackerError)(_domain)
    app.exception_handler(RouteNotFoundError)(_no_route)
    app.exception_handler(Exception)(_unexpected)
