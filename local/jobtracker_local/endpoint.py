"""The AWS endpoint of the local stack: moto server in a thread, plus local Lambda `Invoke`.

moto cannot run Lambda code without Docker, so `POST /2015-03-31/functions/{name}/invocations`
is answered by the local function runtime, mounted in front of moto on the same port: the API's
`lambda.invoke(InvocationType="Event")` and `aws lambda invoke --endpoint-url ...` work unchanged.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

log = logging.getLogger("jobtracker.local")

_serialize_lock = threading.RLock()
_patched: list[bool] = []

WSGIApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


def serialize_dynamodb_writes() -> None:
    """Make moto's DynamoDB apply each request atomically, as DynamoDB does per item.

    moto checks a ConditionExpression and then writes without a lock, so two threads can both
    pass the check; real DynamoDB never lets that happen. The local stack serves requests from
    many threads (runner, API, stream consumers) whose correctness rests on conditional writes.
    """
    if _patched:
        return
    from moto.dynamodb.responses import DynamoHandler

    original = DynamoHandler.call_action

    def call_action(self: Any) -> Any:
        with _serialize_lock:
            return original(self)

    DynamoHandler.call_action = call_action  # type: ignore[method-assign]
    _patched.append(True)


class ThreadedServer:
    """A werkzeug server on its own thread: start() returns once the port is bound."""

    def __init__(
        self,
        app: WSGIApp,
        host: str,
        port: int,
        name: str,
        request_handler: type[WSGIRequestHandler] | None = None,
    ) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._name = name
        self._handler = request_handler
        self._server: BaseWSGIServer | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        base = self._handler or WSGIRequestHandler

        class Quiet(base):  # type: ignore[valid-type,misc]
            """One line per request from every server would drown the functions' logs."""

            def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
                return None

        try:
            self._server = make_server(
                self._host, self._port, self._app, threaded=True, request_handler=Quiet
            )
        except SystemExit as exc:  # werkzeug exits the process when the port is taken
            raise OSError(f"{self._name}: port {self._port} on {self._host} is already in use") from exc
        self._server.daemon_threads = True  # type: ignore[attr-defined]
        server = self._server
        # A short poll makes stop() (and Ctrl-C) return promptly.
        self._thread = threading.Thread(
            target=lambda: server.serve_forever(poll_interval=0.05), name=self._name, daemon=True
        )
        self._thread.start()

    @property
    def port(self) -> int:
        assert self._server is not None, "start() first"
        return int(self._server.server_port)

    @property
    def url(self) -> str:
        return f"http://{self._host}:{self.port}"

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._server = None
        self._thread = None


def moto_app(front: WSGIApp | None = None) -> WSGIApp:
    """moto's server app; `front` answers the Lambda Invoke API before moto sees it."""
    from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

    backend: WSGIApp = DomainDispatcherApplication(create_backend_app)
    if front is None:
        return backend

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        path = environ.get("PATH_INFO", "")
        if path.startswith("/2015-03-31/functions/") and path.endswith("/invocations"):
            return front(environ, start_response)
        return backend(environ, start_response)

    return app


@contextmanager
def fresh_moto(host: str = "127.0.0.1", port: int = 0) -> Iterator[ThreadedServer]:
    """An in-process moto server whose backends are empty before and after (tests, benchmarks).

    moto's backends are process-wide, so a server started in a process that already used moto
    would otherwise see that process's resources.
    """
    server = moto_server(host, port)
    server.start()
    reset = urllib.request.Request(f"{server.url}/moto-api/reset", method="POST")  # noqa: S310 (loopback)
    try:
        urllib.request.urlopen(reset, timeout=10).close()  # noqa: S310 (loopback URL built here)
        yield server
    finally:
        urllib.request.urlopen(reset, timeout=10).close()  # noqa: S310
        server.stop()


def moto_server(host: str, port: int, front: WSGIApp | None = None) -> ThreadedServer:
    from moto.moto_server.werkzeug_app import MotoRequestHandler

    from jobtracker_local.moto_ordering import install_fast_item_order
    from jobtracker_local.moto_transactions import install_fast_transactions

    serialize_dynamodb_writes()
    # moto's own TransactWriteItems deep-copies whole tables, and each Query sorts the whole
    # table comparing DynamoTypes: the stack would slow down as its history grows.
    install_fast_transactions()
    install_fast_item_order()
    return ThreadedServer(moto_app(front), host, port, "moto-server", request_handler=MotoRequestHandler)


#: DynamoDB's TTL leaves items whose expiry is more than five years in the past alone.
_TTL_HORIZON_SECONDS = 5 * 365 * 86400


def expire_ttl_items(account: str, region: str, now: float | None = None) -> int:
    """Delete the items of the in-process moto whose TTL has passed, as DynamoDB's TTL does.

    moto never expires items, so the local tables kept every run, log chunk and marker, and
    each Query (moto filters every item) slowed down with the history. Only tables with TTL
    enabled, only Number attributes in epoch seconds, as DynamoDB. Deleted through the backend,
    so the stream gets the REMOVE record a TTL deletion writes (without its service identity).
    """
    from moto.dynamodb.models import dynamodb_backends

    backend = dynamodb_backends[account][region]
    now = time.time() if now is None else now
    removed = 0
    with _serialize_lock:
        for name, table in list(backend.tables.items()):
            if table.ttl.get("TimeToLiveStatus") != "ENABLED" or not table.ttl.get("AttributeName"):
                continue
            attribute = table.ttl["AttributeName"]
            items: list[Any] = (
                [i for partition in table.items.values() for i in partition.values()]
                if table.range_key_attr
                else list(table.items.values())
            )
            for item in items:
                value = item.attrs.get(attribute)
                if value is None or value.type != "N":
                    continue
                expiry = float(value.value)
                if now - _TTL_HORIZON_SECONDS < expiry < now:
                    key = {table.hash_key_attr: item.hash_key.to_json()}
                    if table.range_key_attr is not None and item.range_key is not None:
                        key[table.range_key_attr] = item.range_key.to_json()
                    backend.delete_item(name, key)
                    removed += 1
    return removed


def prune_stream_iterators(account: str, region: str, keep_last: int = 256) -> int:
    """Forget all but the newest shard iterators of the in-process moto.

    moto stores every iterator it ever handed out (each `get_records` hands out one), so a
    stack polling its streams for a day would grow by hundreds of MB. Readers use only their
    newest iterator, and renew it if it is gone.
    """
    from moto.dynamodbstreams.models import dynamodbstreams_backends

    iterators = dynamodbstreams_backends[account][region].shard_iterators
    excess = len(iterators) - keep_last
    for key in list(iterators)[: max(0, excess)]:
        iterators.pop(key, None)
    return max(0, excess)
