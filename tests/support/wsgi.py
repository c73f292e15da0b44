"""A WSGI face for the API Lambda, so schemathesis can fuzz it in-process.

Each WSGI request becomes the HTTP API v2 event API Gateway would send. Test-only "token":
`Authorization: Bearer <sub>` stands for a token API Gateway verified for that subject with
every scope (`Bearer admin:<sub>`: and `admin`). No header = no token, as on public routes.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qsl, quote

from tests.support.http import ALL_SCOPES, claims, http_event, lambda_response

StartResponse = Callable[[str, list[tuple[str, str]]], Any]
_REASONS = {
    200: "OK",
    201: "Created",
    202: "Accepted",
    204: "No Content",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    409: "Conflict",
    415: "Unsupported Media Type",
    422: "Unprocessable Entity",
    500: "Internal Server Error",
    503: "Service Unavailable",
}


def _headers(environ: dict[str, Any]) -> dict[str, str]:
    headers = {k[5:].replace("_", "-").lower(): str(v) for k, v in environ.items() if k.startswith("HTTP_")}
    if environ.get("CONTENT_TYPE"):
        headers["content-type"] = environ["CONTENT_TYPE"]
    return headers


def lambda_wsgi_app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
    method = environ["REQUEST_METHOD"]
    raw_uri = environ.get("RAW_URI") or environ.get("REQUEST_URI")
    path = raw_uri.split("?", 1)[0] if raw_uri else quote(environ.get("PATH_INFO", "/"))
    query_string = environ.get("QUERY_STRING", "")
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw_body = environ["wsgi.input"].read(length) if length else b""
    headers = _headers(environ)
    auth = headers.pop("authorization", "")
    token = None
    if auth:
        subject = auth.removeprefix("Bearer ").strip() or "anonymous"
        admin = subject.startswith("admin:")
        scopes = (*ALL_SCOPES, "admin") if admin else ALL_SCOPES
        token = claims(subject.removeprefix("admin:"), scopes=scopes)

    event = http_event(f"{method} {path}", headers=headers, token_claims=token)
    event["routeKey"] = "$default"
    event["rawPath"] = event["requestContext"]["http"]["path"] = path
    event["rawQueryString"] = query_string
    event.pop("pathParameters", None)
    params: dict[str, str] = {}
    for key, value in parse_qsl(query_string, keep_blank_values=True):
        # HTTP API joins repeated query parameters with commas.
        params[key] = f"{params[key]},{value}" if key in params else value
    if params:
        event["queryStringParameters"] = params
    else:
        event.pop("queryStringParameters", None)
    if raw_body:
        try:
            event["body"] = raw_body.decode("utf-8")
        except UnicodeDecodeError:
            event["body"] = base64.b64encode(raw_body).decode()
            event["isBase64Encoded"] = True
    else:
        event.pop("body", None)

    result = lambda_response(event)
    body = result.get("body") or ""
    payload = base64.b64decode(body) if result.get("isBase64Encoded") else body.encode()
    out_headers = [
        (k, str(v)) for k, v in (result.get("headers") or {}).items() if k.lower() != "content-length"
    ]
    out_headers.append(("Content-Length", str(len(payload))))
    status = int(result["statusCode"])
    start_response(f"{status} {_REASONS.get(status, 'Status')}", out_headers)
    return [payload]
