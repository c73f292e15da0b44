"""boto3 clients: one per service per process, created lazily, injected into repositories.

The endpoint comes from boto3's own `AWS_ENDPOINT_URL` / `AWS_ENDPOINT_URL_<SERVICE>` settings,
so the same code talks to AWS, to moto server or to LocalStack without a code path of its own.
"""

from __future__ import annotations

from functools import cache
from typing import Any

import boto3
from botocore.config import Config

#: Standard retry mode retries throttling (ProvisionedThroughputExceeded, Throttling...) with
#: exponential backoff and jitter; adaptive adds client-side rate limiting under sustained load.
CLIENT_CONFIG = Config(
    retries={"max_attempts": 8, "mode": "standard"},
    connect_timeout=3,
    read_timeout=10,
    tcp_keepalive=True,
)


@cache
def client(service: str) -> Any:
    """A cached boto3 client; typed at the call site with the mypy_boto3 client type."""
    return boto3.session.Session().client(service, config=CLIENT_CONFIG)  # type: ignore[call-overload]
