"""Lambda entry point of the HTTP API: resolver, routers, auth middleware, error mapping.

Import stays light (no boto3 clients, no repositories): they are built on the first request
that needs them (see `api.deps`).
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.event_handler import APIGatewayHttpResolver, Response
from aws_lambda_powertools.event_handler.middlewares import NextMiddleware
from aws_lambda_powertools.utilities.typing import LambdaContext
from jobtracker_common.observability import logger as make_logger

from api import errors
from api.auth import caller_from_event, check_scopes, required_scopes
from api.deps import services
from api.routes import jobs, meta, runs, users
from api.routes.common import CALLER

logger = make_logger("api")

app = APIGatewayHttpResolver(enable_validation=True)


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


app.use(middlewares=[authenticate])
errors.register(app, check_access)
for module in (meta, runs, jobs, users):
    app.include_router(module.router)


@logger.inject_lambda_context(clear_state=True)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    return app.resolve(event, context)
