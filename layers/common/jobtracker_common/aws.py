"""AWS clients: one per service per process, created lazily, injected into repositories.

The endpoint comes from the SDK's own `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` settings,
so the same code talks to AWS, to moto server or to LocalStack without a code path of its own.

Clients are botocore's low-level clients (the same objects `boto3.client()` returns): importing
boto3 would add its session wrapper, resource layer and s3transfer (~0.13x of a bare client's
cold start), none of which a function uses. Every client comes from ONE session per process:
a session's loader caches the files all clients share (endpoints, partitions, retry and
default-config data), so a second client costs ~1/3 of the first.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import cache, partial
from typing import TYPE_CHECKING, Any

import botocore.session
from botocore.config import Config

if TYPE_CHECKING:
    from botocore.session import Session

#: Standard retry mode retries throttling (ProvisionedThroughputExceeded, Throttling...) with
#: exponential backoff and jitter; adaptive adds client-side rate limiting under sustained load.
CLIENT_CONFIG = Config(
    retries={"max_attempts": 8, "mode": "standard"},
    connect_timeout=3,
    read_timeout=10,
    tcp_keepalive=True,
)

# Sessions are not thread-safe; clients are. Clients are only ever created under this lock.
_lock = threading.Lock()


@cache
def session() -> Session:
    return botocore.session.Session()


def new_client(service: str, config: Config | None = None) -> Any:
    """A new client from the process's session (for a client with its own config)."""
    with _lock:
        return session().create_client(service, config=config or CLIENT_CONFIG)


@cache
def client(service: str) -> Any:
    """A cached boto3 client; typed at the call site with the mypy_boto3 client type."""
    return new_client(service)


class _LazyClient:
    """Stands in for a client that most invocations of a function never call (Scheduler in the
    tracker: only a failed run with attempts left needs it); built on first use."""

    def __init__(self, build: Callable[[], Any]) -> None:
        self._build = build

    def __getattr__(self, name: str) -> Any:
        return getattr(self._build(), name)


def lazy_client(service: str) -> Any:
    """`client(service)`, created on first attribute access instead of now."""
    return _LazyClient(partial(client, service))


def lazy(build: Callable[[], Any]) -> Any:
    """The client a cached builder returns, built on first attribute access instead of now."""
    return _LazyClient(build)
