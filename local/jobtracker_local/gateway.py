"""The local HTTP API: requests become API Gateway HTTP API (payload 2.0) events.

Routes, their functions, authorizers and scopes are read from the template's `HttpApi` events,
so a route added or a scope changed there is what the gateway enforces. JWTs are verified like
the HTTP API JWT authorizer (see auth.py); the JWKS is served at `/.well-known/jwks.json`.
"""

from __future__ import annotations

import base64
import json
import logging
import re
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from werkzeug.wrappers import Request, Response

from jobtracker_local.auth import AuthError, JwtAuthorizer, gateway_claims
from jobtracker_local.functions import FunctionError
from jobtracker_local.resources import LocalResources

log = logging.getLogger("jobtracker.local")

SyncInvoke = Callable[[str, Any], Any]
_TEXT_TYPES = ("text/", "application/json", "application/xml", "application/javascript", "+json", "+xml")


@dataclass(frozen=True)
class Route:
    method: str
    path: str
    function_id: str
    authorizer: str | None
    scopes: tuple[str, ...]
    pattern: re.Pattern[str]

    @property
    def route_key(self) -> str:
        return f"{self.method} {self.path}"

    @property
    def specificity(self) -> tuple[int, int, int]:
        """API Gateway prefers literal segments over parameters, and greedy paths last."""
        greedy = 1 if "+}" in self.path else 0
        return (greedy, self.path.count("{"), -len(self.path))


def compile_path(path: str) -> re.Pattern[str]:
    regex = ""
    for part in re.split(r"(\{[^}]+\})", path):
        if part.startswith("{") and part.endswith("+}"):
            regex += f"(?P<{part[1:-2]}>.+)"
        elif part.startswith("{"):
            regex += f"(?P<{part[1:-1]}>[^/]+)"
        else:
            regex += re.escape(part)
    return re.compile(f"^{regex}$")


def routes_from_template(resources: LocalResources) -> list[Route]:
    auth = resources.template.http_api_auth()
    default = auth.get("DefaultAuthorizer")
    routes = []
    for function_id, _, raw in resources.template.events_of_type("HttpApi"):
        props = resources.resolve(raw)
        route_auth = props.get("Auth", {})
        authorizer = route_auth.get("Authorizer", default)
        routes.append(
            Route(
                method=str(props.get("Method", "ANY")).upper(),
                path=props.get("Path", "$default"),
                function_id=function_id,
                authorizer=None if authorizer in (None, "NONE") else authorizer,
                scopes=tuple(route_auth.get("AuthorizationScopes", [])),
                pattern=compile_path(props.get("Path", "/{proxy+}")),
            )
        )
    return sorted(routes, key=lambda r: r.specificity)


def authorizer_config(resources: LocalResources, name: str) -> tuple[str, list[str]]:
    """(issuer, audiences) of a JWT authorizer, resolved from the template."""
    authorizers = resources.resolve(resources.template.http_api_auth().get("Authorizers", {}))
    config = authorizers[name]["JwtConfiguration"]
    audience = config.get("audience", [])
    return str(config["issuer"]), [str(a) for a in (audience if isinstance(audience, list) else [audience])]


class Gateway:
    def __init__(
        self,
        resources: LocalResources,
        invoke: SyncInvoke,
        authorizers: dict[str, JwtAuthorizer],
        *,
        jwks: dict[str, Any],
        openid_issuer: str,
    ) -> None:
        self.resources = resources
        self.routes = routes_from_template(resources)
        self._invoke = invoke
        self._authorizers = authorizers
        self._jwks = jwks
        self._issuer = openid_issuer
        self.api_id = str(resources.refs.get("HttpApi", "local"))
        self.base_url = ""

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        request = Request(environ)
        try:
            response = self.handle(request)
        except Exception:
            log.exception("gateway error")
            response = _message(500, "Internal Server Error")
        return response(environ, start_response)

    def match(self, method: str, path: str) -> tuple[Route, dict[str, str]] | None:
        for route in self.routes:
            if route.method not in (method, "ANY"):
                continue
            if m := route.pattern.match(path):
                return route, m.groupdict()
        return None

    def handle(self, request: Request) -> Response:
        path = request.path
        matched = self.match(request.method, path)
        if matched is None:
            if request.method == "GET" and path == "/.well-known/jwks.json":
                return Response(json.dumps(self._jwks), mimetype="application/json")
            if request.method == "GET" and path == "/.well-known/openid-configuration":
                body = {"issuer": self._issuer, "jwks_uri": f"{self.base_url}/.well-known/jwks.json"}
                return Response(json.dumps(body), mimetype="application/json")
            return _message(404, "Not Found")
        route, params = matched
        authorizer_context: dict[str, Any] | None = None
        if route.authorizer is not None:
            try:
                claims, scopes = self._authorizers[route.authorizer].authorize(
                    request.headers.get("Authorization"), list(route.scopes)
                )
            except AuthError as exc:
                response = _message(exc.status, exc.message)
                if exc.status == 401:
                    why = exc.description or "missing token"
                    response.headers["www-authenticate"] = (
                        f'Bearer error="invalid_token" error_description="{why}"'
                    )
                return response
            authorizer_context = {"jwt": {"claims": gateway_claims(claims), "scopes": scopes or None}}
        event = self.event(request, route, params, authorizer_context)
        try:
            result = self._invoke(route.function_id, event)
        except FunctionError as exc:
            log.error("%s failed behind %s: %s", route.function_id, route.route_key, exc)
            return _message(500, "Internal Server Error")
        return self.response(result, event["requestContext"]["requestId"])

    def event(
        self,
        request: Request,
        route: Route,
        params: dict[str, str],
        authorizer: dict[str, Any] | None,
    ) -> dict[str, Any]:
        now = datetime.now(UTC)
        headers: dict[str, str] = {}
        for key, value in request.headers.items():
            name = key.lower()
            headers[name] = f"{headers[name]},{value}" if name in headers else value
        cookies = [c.strip() for c in headers.pop("cookie", "").split(";") if c.strip()]
        raw_query = request.query_string.decode("latin-1")
        query: dict[str, str] = {}
        for key, value in parse_qsl(raw_query, keep_blank_values=True):
            query[key] = f"{query[key]},{value}" if key in query else value
        request_id = base64.b32encode(uuid.uuid4().bytes[:10]).decode().rstrip("=")
        context: dict[str, Any] = {
            "accountId": self.resources.account,
            "apiId": self.api_id,
            "domainName": request.host,
            "domainPrefix": request.host.split(".")[0].split(":")[0],
            "http": {
                "method": request.method,
                "path": request.path,
                "protocol": request.environ.get("SERVER_PROTOCOL", "HTTP/1.1"),
                "sourceIp": request.remote_addr or "127.0.0.1",
                "userAgent": request.headers.get("User-Agent", ""),
            },
            "requestId": request_id,
            "routeKey": route.route_key,
            "stage": "$default",
            "time": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "timeEpoch": int(time.time() * 1000),
        }
        if authorizer is not None:
            context["authorizer"] = authorizer
        event: dict[str, Any] = {
            "version": "2.0",
            "routeKey": route.route_key,
            "rawPath": request.path,
            "rawQueryString": raw_query,
            "headers": headers,
            "requestContext": context,
            "isBase64Encoded": False,
        }
        if cookies:
            event["cookies"] = cookies
        if query:
            event["queryStringParameters"] = query
        if params:
            event["pathParameters"] = params
        body = request.get_data()
        if body:
            content_type = headers.get("content-type", "")
            textual = (
                not content_type or any(t in content_type for t in _TEXT_TYPES) or "form" in content_type
            )
            try:
                text = body.decode("utf-8") if textual else None
            except UnicodeDecodeError:
                text = None
            if text is None:
                event["body"] = base64.b64encode(body).decode()
                event["isBase64Encoded"] = True
            else:
                event["body"] = text
        return event

    @staticmethod
    def response(result: Any, request_id: str) -> Response:
        """Payload format 2.0: a dict with statusCode is a response; anything else is a JSON 200."""
        if not (isinstance(result, dict) and "statusCode" in result):
            response = Response(json.dumps(result), status=200, mimetype="application/json")
        else:
            body: Any = result.get("body") or ""
            if result.get("isBase64Encoded"):
                body = base64.b64decode(body)
            response = Response(body, status=int(result["statusCode"]))
            response.headers.remove("Content-Type")
            for key, value in (result.get("headers") or {}).items():
                response.headers[key] = str(value)
            for key, values in (result.get("multiValueHeaders") or {}).items():
                for value in values:
                    response.headers.add(key, str(value))
            for cookie in result.get("cookies") or []:
                response.headers.add("Set-Cookie", cookie)
            if "Content-Type" not in response.headers and body:
                response.headers["Content-Type"] = "application/json"
        response.headers["apigw-requestid"] = request_id
        return response


def _message(status: int, message: str) -> Response:
    return Response(json.dumps({"message": message}), status=status, mimetype="application/json")
