"""The OpenAPI document, generated from the routes. `python -m api.openapi` prints it;
`make openapi` writes docs/openapi.json, and a test fails when the two differ."""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from aws_lambda_powertools.event_handler.openapi.models import HTTPBearer

from api.auth import ALL_SCOPES, SECURITY_SCHEME

TITLE = "Job tracker API"
VERSION = "1.0.0"
DESCRIPTION = (
    "Scheduled job runs, their log entries and statistics, job definitions and notification "
    "preferences. Bearer JWT (API Gateway JWT authorizer); each operation lists the scopes it "
    f"accepts (any one suffices; Cognito's `jobtracker/<scope>` form works too): {', '.join(ALL_SCOPES)}. "
    "`admin` widens what the caller sees to every user's data. Errors are "
    '`{"message": ..., "details": [...]}`.'
)


@cache
def document() -> dict[str, Any]:
    from api.handler import app

    schema: dict[str, Any] = json.loads(
        app.get_openapi_json_schema(
            title=TITLE,
            version=VERSION,
            description=DESCRIPTION,
            security_schemes={
                SECURITY_SCHEME: HTTPBearer(
                    scheme="bearer", bearerFormat="JWT", description="Access token from the issuer."
                )
            },
        )
    )
    return schema


def render() -> str:
    return json.dumps(document(), indent=2, sort_keys=True) + "\n"


def main() -> None:
    print(render(), end="")


if __name__ == "__main__":
    main()
