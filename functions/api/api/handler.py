"""Lambda entry point of the HTTP API: resolver, routers, auth middleware, error mapping.

Import stays light (no boto3 clients, no repositories): they are built on the first request
that needs them (see `api.deps`).
"""

from __future__ import annotations

import base64
import json
from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.logging import correlation_paths
from aws_lambda_powertools.utilities.typing import LambdaContext
from jobtracker_common.errors import ValidationError
from jobtracker_common.observability import logger as make_logger

from api import errors
from api.auth import caller_from_event, check_scopes, required_scopes
from api.deps import services
from api.routes import jobs, meta, runs, users
from api.routes.common import CALLER

logger = make_logger("api")


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_json(text: str) -> Any:
    """Strict JSON: no NaN/Infinity (Python's extension) and no lone surrogates, which could
    never be stored (DynamoDB wants valid UTF-8); both are malformed JSON (400), not a 500.
    Nesting deeper than the interpreter's recursion limit (`[[[[...`) is malformed JSON too."""
    try:
        value = json.loads(text, parse_constant=_reject_constant)
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except RecursionError as exc:
        raise json.JSONDecodeError("nested too deeply", text, 0) from exc
    except (ValueError, UnicodeEncodeError) as exc:
        if isinstance(exc, json.JSONDecodeError):
            raise
        raise json.JSONDecodeError(str(exc), text if isinstance(text, str) else "", 0) from exc
    return value


app = APIGatewayHttpResolver(enable_validation=True, json_body_deserializer=parse_json)


def check_access(resolver: APIGatewayHttpResolver) -> None:
    """Authenticate and authorize the current request for its route; raises 401/403 errors."""
    route = resolver.context.get("_route")
    scopes = required_scopes(getattr(route, "security", None))
    if scopes is None:
        return
    caller = caller_from_event(resolver.current_event.raw_event)
    check_scopes(caller, scopes)
    resolver.context[CALLER] = caller


def authenticate(resolver: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response[Any]:
    check_access(resolver)
    caller = resolver.context.get(CALLER)
    if caller is not None:
        services().provision(caller)
    return next_middleware(resolver)


def reject_unknown_query(resolver: APIGatewayHttpResolver, next_middleware: NextMiddleware) -> Response[Any]:
    """Unknown query parameters are rejected like unknown body fields: a typo (`stauts=failed`)
    must not silently widen a listing."""
    route = resolver.context.get("_route")
    # Only this package's routes declare their parameters; the resolver's own not-found route
    # (unknown path) must stay a 404 whatever the query.
    ours = getattr(getattr(route, "func", None), "__module__", "").startswith("api.")
    dependant = getattr(route, "dependant", None) if ours else None
    if dependant is not None:
        allowed = {param.alias for param in dependant.query_params}
        given = resolver.current_event.query_string_parameters or {}
        unknown = sorted(set(given) - allowed)
        if unknown:
            raise ValidationError(
                f"unknown query parameter(s): {', '.join(unknown) or '(empty name)'}",
                details=[
                    {"location": "query", "field": name, "message": "not a parameter of this route"}
                    for name in unknown
                ],
            )
    return next_middleware(resolver)


app.use(middlewares=[authenticate, reject_unknown_query])
errors.register(app, check_access)
for module in (meta, runs, jobs, users):
    app.include_router(module.router)


#: Bodies are JSON only. Any other declared media type is rewritten to one the resolver
#: rejects as unsupported (415 through the error mapping): its form and multipart parsers
#: would otherwise run on bodies this API never accepts, and fail with a 500 on bad input.
UNSUPPORTED_MEDIA = "application/octet-stream"


def normalize(event: dict[str, Any]) -> dict[str, Any]:
    """Bodies the resolver must never try to parse as anything but JSON."""
    headers = event.get("headers")
    if not isinstance(headers, dict):
        return event
    content_type = next((str(v) for k, v in headers.items() if k.lower() == "content-type"), "")
    media = content_type.split(";", 1)[0].strip().lower()
    changes: dict[str, Any] = {}
    if event.get("body") and media and media != "application/json":
        changes["headers"] = {
            **{k: v for k, v in headers.items() if k.lower() != "content-type"},
            "content-type": UNSUPPORTED_MEDIA,
        }
    if event.get("isBase64Encoded") and event.get("body"):
        try:
            changes["body"] = base64.b64decode(str(event["body"]), validate=True).decode("utf-8")
        except (ValueError, UnicodeDecodeError):
            changes["body"] = "<undecodable body>"  # answered as malformed JSON (400)
        changes["isBase64Encoded"] = False
    return {**event, **changes} if changes else event


@logger.inject_lambda_context(clear_state=True, correlation_id_path=correlation_paths.API_GATEWAY_HTTP)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(normalize(event), context)
