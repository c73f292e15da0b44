"""The local stack for e2e tests: `jobtracker local up` in a child process on free ports.

The stack runs in its own process (its own moto, its own environment), exactly as `make run`
starts it, with fast polling, a temporary state folder and outbox, and no demo data. Tests
drive it over HTTP only and isolate themselves by user: each test signs in as a fresh user.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from email import message_from_bytes, policy
from email.message import EmailMessage
from pathlib import Path
from typing import Any, TypeVar

import pytest
import requests
from jobtracker_local.auth import KeyStore
from jobtracker_local.stack import child_env, up_command

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT = 90.0
T = TypeVar("T")


def eventually(check: Callable[[], T | None], timeout: float = 30.0, interval: float = 0.1) -> T:
    """Poll until `check` returns something truthy; fail with the last value after `timeout`."""
    deadline = time.monotonic() + timeout
    last: T | None = None
    while time.monotonic() < deadline:
        last = check()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


@dataclass
class Session:
    """One signed-in user of the local stack."""

    api_url: str
    token: str
    user_id: str
    email: str

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        return requests.request(method, self.api_url + path, headers=headers, timeout=30, **kwargs)

    def get(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("GET", path, **kwargs)

    def post(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("POST", path, **kwargs)

    def patch(self, path: str, **kwargs: Any) -> requests.Response:
        return self.request("PATCH", path, **kwargs)


@dataclass
class Stack:
    api_url: str
    aws_url: str
    outbox: Path
    state: dict[str, Any]
    keys: KeyStore
    log_path: Path

    def session(self, scopes: list[str] | None = None) -> Session:
        user_id = f"e2e-{uuid.uuid4().hex[:12]}"
        email = f"{user_id}@example.com"
        token = self.keys.mint(
            sub=user_id,
            email=email,
            issuer=self.state["issuer"],
            audience=self.state["audience"],
            scopes=scopes,
        )
        return Session(self.api_url, token, user_id, email)

    def emails_to(self, address: str) -> list[EmailMessage]:
        out = []
        for path in sorted(self.outbox.glob("*.eml")):
            message = message_from_bytes(path.read_bytes(), policy=policy.default)
            assert isinstance(message, EmailMessage)
            if address in str(message.get("To", "")):
                out.append(message)
        return out

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def _port_open(url: str) -> bool:
    host, port = url.rsplit("//", 1)[-1].split(":")
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0


@contextmanager
def running_stack(state_dir: Path, *extra: str, demo: bool = False) -> Iterator[Stack]:
    """`jobtracker local up` as a child process; stopped with Ctrl-C (SIGINT) like a user would."""
    outbox = state_dir / "outbox"
    log_path = state_dir / "stack.log"
    env = child_env()
    command = [
        *up_command("--api-port=0"),
        *([] if demo else ["--no-demo"]),
        f"--state-dir={state_dir}",
        f"--outbox={outbox}",
        "--poll-interval=0.1",
        "--retry-delay=0.1",
        "--async-retry-delay=0.5",
        "--max-batching-window=0.2",
        *extra,
    ]
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
    state_file = state_dir / "stack.json"
    deadline = time.monotonic() + START_TIMEOUT
    while not state_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            process.wait()
            pytest.fail("local stack did not start:\n" + log_path.read_text(errors="replace")[-4000:])
        time.sleep(0.1)
    state = json.loads(state_file.read_text())
    stack = Stack(state["api"], state["aws"], outbox, state, KeyStore(state_dir), log_path)
    try:
        yield stack
    finally:
        process.send_signal(signal.SIGINT)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            pytest.fail("local stack did not stop on Ctrl-C:\n" + stack.log_tail())
        # Ctrl-C must free every port the stack bound.
        assert not _port_open(stack.api_url), "gateway port still open after stop"
        assert not _port_open(stack.state["lambda"]), "AWS/Lambda endpoint port still open after stop"


@pytest.fixture(scope="session")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with running_stack(tmp_path_factory.mktemp("local-stack"), "--aws-port=0") as running:
        yield running


@pytest.fixture
def user(stack: Stack) -> Session:
    return stack.session()
