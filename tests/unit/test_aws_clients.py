"""Clients: one session per process; clients most invocations never call are built on first use."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

from jobtracker_common import aws


class FakeClient:
    def describe(self) -> str:
        return "real"


def test_a_lazy_client_is_built_on_first_use_only() -> None:
    # Given a lazily wrapped builder
    built: list[FakeClient] = []

    def build() -> Any:
        built.append(FakeClient())
        return built[-1]

    lazy = aws.lazy(build)
    # When nothing is called on it, then nothing is built
    assert built == []
    # When a method is called, then the client is built and answers
    assert lazy.describe() == "real"
    assert len(built) == 1


def test_clients_share_one_session_and_are_cached_per_service() -> None:
    # In a fresh interpreter: a client (or session) cached in this process before moto is
    # imported would never be mocked, and later tests would reach for real AWS.
    code = """
from jobtracker_common import aws
first, second = aws.new_client("dynamodb"), aws.new_client("sesv2")
assert first._loader is second._loader, "one session, one loader"
assert aws.client("scheduler") is aws.client("scheduler")
assert aws.lazy_client("scheduler").meta is aws.client("scheduler").meta
print(first.meta.service_model.service_name, second.meta.service_model.service_name)
"""
    env = {**os.environ, "AWS_DEFAULT_REGION": "us-east-1"}
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, env=env, check=False
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["dynamodb", "sesv2"]
