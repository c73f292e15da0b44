"""The local stack: every piece started in one foreground process, stopped cleanly.

Order: AWS endpoint (moto, or `--aws-endpoint`) -> resources from the template -> functions'
environment -> HTTP gateway -> stream and schedule emulators -> outbox -> demo data -> ready.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from jobtracker_local.auth import JwtAuthorizer, KeyStore
from jobtracker_local.endpoint import ThreadedServer, expire_ttl_items, moto_server, prune_stream_iterators
from jobtracker_local.functions import AsyncSettings, FunctionRuntime
from jobtracker_local.gateway import Gateway, authorizer_config
from jobtracker_local.outbox import Outbox, in_process_moto, over_http
from jobtracker_local.resources import (
    LOCAL_AUDIENCE,
    LOCAL_ISSUER,
    LocalResources,
    local_parameters,
    provision,
)
from jobtracker_local.scheduler import ScheduleEmulator
from jobtracker_local.streams import EmulatorSettings, StreamEmulator, StreamSource
from jobtracker_local.template import ROOT, load_template

log = logging.getLogger("jobtracker.local")

STATE_FILE = "stack.json"


@dataclass
class StackConfig:
    host: str = "127.0.0.1"
    api_port: int = 3000
    aws_port: int = 4566
    #: Use this AWS-compatible endpoint (LocalStack...) instead of starting moto.
    aws_endpoint: str | None = None
    #: Port of the local Lambda Invoke API when moto is not ours (0: any free port).
    lambda_port: int = 0
    state_dir: Path = field(default_factory=lambda: ROOT / ".local")
    outbox: Path | None = None
    demo: bool = True
    stream_poll_interval: float = 0.25
    stream_retry_delay: float = 0.5
    max_batching_window: float | None = None
    schedule_poll_interval: float = 0.5
    outbox_poll_interval: float = 0.25
    async_retry_delay: float = 2.0
    metrics: bool = False

    @property
    def outbox_dir(self) -> Path:
        return self.outbox or self.state_dir / "outbox"


class LocalStack:
    def __init__(self, config: StackConfig) -> None:
        self.config = config
        self.template = load_template()
        self.moto: ThreadedServer | None = None
        self.lambda_server: ThreadedServer | None = None
        self.gateway_server: ThreadedServer | None = None
        self.runtime: FunctionRuntime | None = None
        self.streams: StreamEmulator | None = None
        self.scheduler: ScheduleEmulator | None = None
        self.outbox: Outbox | None = None
        self.resources: LocalResources | None = None
        self.keys = KeyStore(config.state_dir)
        self.unavailable: dict[str, str] = {}
        self.demo_jobs: list[str] = []
        self.started_in = 0.0
        self._stopping = threading.Event()
        self._maintenance: threading.Thread | None = None
        self._gateway: Gateway | None = None
        self.urls: dict[str, str] = {}
        self.issuer, self.audience = LOCAL_ISSUER, LOCAL_AUDIENCE

    # ---- lifecycle -----------------------------------------------------------------------
    def start(self) -> None:
        began = time.monotonic()
        cfg = self.config
        cfg.state_dir.mkdir(parents=True, exist_ok=True)
        if cfg.aws_endpoint is None:
            # Local credentials only: nothing in this process may reach a real account.
            os.environ.update(AWS_ACCESS_KEY_ID="testing", AWS_SECRET_ACCESS_KEY="testing")  # noqa: S106
            os.environ.pop("AWS_SESSION_TOKEN", None)
            os.environ.pop("AWS_PROFILE", None)
            self.moto = moto_server(cfg.host, cfg.aws_port, front=self._invoke_app)
            self.moto.start()
            endpoint = self.moto.url
            lambda_url = endpoint
        else:
            os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
            os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
            endpoint = cfg.aws_endpoint.rstrip("/")
            self.lambda_server = ThreadedServer(self._invoke_app, cfg.host, cfg.lambda_port, "lambda-invoke")
            self.lambda_server.start()
            lambda_url = self.lambda_server.url

        self.gateway_server = ThreadedServer(self._gateway_app, cfg.host, cfg.api_port, "http-gateway")
        self.gateway_server.start()
        api_url = self.gateway_server.url

        resources = LocalResources(self.template, endpoint, parameters=local_parameters())
        provision(resources)
        self.resources = resources
        runtime = FunctionRuntime(
            resources, async_settings=AsyncSettings(retry_delay_seconds=cfg.async_retry_delay)
        )
        env = runtime.apply_environment()
        os.environ.update(
            AWS_ENDPOINT_URL=endpoint,
            AWS_ENDPOINT_URL_LAMBDA=lambda_url,
            AWS_REGION=resources.region,
            AWS_DEFAULT_REGION=resources.region,
            POWERTOOLS_METRICS_DISABLED="false" if cfg.metrics else "true",
        )
        self.unavailable = runtime.check_imports()
        for function_id, reason in self.unavailable.items():
            log.warning("%s is not available yet: %s", function_id, reason)
        self.runtime = runtime

        issuer, audiences = authorizer_config(resources, "JwtAuthorizer")
        authorizers = {
            name: JwtAuthorizer(self.keys, *authorizer_config(resources, name))
            for name in resources.template.http_api_auth().get("Authorizers", {})
        }
        gateway = Gateway(resources, runtime.invoke, authorizers, jwks=self.keys.jwks(), openid_issuer=issuer)
        gateway.base_url = api_url
        self._gateway = gateway
        self.issuer, self.audience = issuer, audiences[0]

        sources = [s for s in StreamSource.from_template(resources) if s.function_id not in self.unavailable]
        self.streams = StreamEmulator(
            sources,
            {s.function_id: _bind(runtime.invoke, s.function_id) for s in sources},
            endpoint=endpoint,
            region=resources.region,
            resources=resources,
            settings=EmulatorSettings(
                poll_interval=cfg.stream_poll_interval,
                retry_delay=cfg.stream_retry_delay,
                max_batching_window=cfg.max_batching_window,
            ),
        )
        self.streams.start()
        self.scheduler = ScheduleEmulator(
            resources, runtime.invoke_async, poll_interval=cfg.schedule_poll_interval
        )
        self.scheduler.start()

        source = (
            in_process_moto(resources.account, resources.region)
            if self.moto is not None
            else over_http(endpoint)
        )
        self.outbox = Outbox(cfg.outbox_dir, source, poll_interval=cfg.outbox_poll_interval)
        self.outbox.start()

        if cfg.demo:
            from jobtracker_local import demo

            self.demo_jobs = demo.seed(env, api_url)
            for job_id in (demo.DEMO_SUCCEEDS, demo.DEMO_FAILS):
                if job_id in self.demo_jobs:
                    # One run right away: the first runs, retries and emails need not wait for a schedule.
                    runtime.invoke_async(
                        "JobRunnerFunction",
                        {"kind": "manual", "job_id": job_id, "client_request_id": f"startup-{time.time()}"},
                    )
        if self.moto is not None:
            self._maintenance = threading.Thread(target=self._maintain, name="maintenance", daemon=True)
            self._maintenance.start()
        self.urls = {"api": api_url, "aws": endpoint, "lambda": lambda_url}
        self._write_state()
        self.started_in = time.monotonic() - began

    def _maintain(self) -> None:
        assert self.resources is not None
        while not self._stopping.wait(30):
            try:
                prune_stream_iterators(self.resources.account, self.resources.region)
                expired = expire_ttl_items(self.resources.account, self.resources.region)
                if expired:
                    log.info("TTL: %d expired item(s) deleted", expired)
            except Exception:
                log.exception("maintenance failed")

    def stop(self) -> None:
        self._stopping.set()
        if self._maintenance is not None:
            self._maintenance.join(timeout=5)
        for part in (self.scheduler, self.streams, self.outbox):
            if part is not None:
                part.stop()
        if self.runtime is not None:
            self.runtime.stop()
        for server in (self.gateway_server, self.lambda_server, self.moto):
            if server is not None:
                server.stop()
        (self.config.state_dir / STATE_FILE).unlink(missing_ok=True)

    # ---- apps (bound late: the servers start before the functions are ready) -------------
    def _invoke_app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if self.runtime is None:
            return _unavailable(start_response)
        return self.runtime.invoke_app(environ, start_response)

    def _gateway_app(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        gateway = self._gateway
        if gateway is None:
            return _unavailable(start_response)
        result: Iterable[bytes] = gateway(environ, start_response)
        return result

    # ---- reporting -----------------------------------------------------------------------
    def _write_state(self) -> None:
        state = {
            **self.urls,
            "issuer": self.issuer,
            "audience": self.audience,
            "outbox": str(self.config.outbox_dir),
            "pid": os.getpid(),
        }
        path = self.config.state_dir / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(state, indent=2))
        tmp.rename(path)

    def token(self, sub: str, *, email: str | None = None, scopes: list[str] | None = None) -> str:
        return self.keys.mint(sub=sub, issuer=self.issuer, audience=self.audience, email=email, scopes=scopes)

    def ready_message(self) -> str:
        from jobtracker_local.demo import DEMO_EMAIL, DEMO_FAILS, DEMO_HEALTH, DEMO_SUCCEEDS, DEMO_USER

        api, aws = self.urls["api"], self.urls["aws"]
        token = self.token(DEMO_USER, email=DEMO_EMAIL)
        functions = ", ".join(f for f in self.template.functions() if f not in self.unavailable)
        lines = [
            f"jobtracker local stack ready in {self.started_in:.1f}s",
            f"  API gateway   {api}   (JWKS {api}/.well-known/jwks.json)",
            f"  AWS endpoint  {aws}   ({'moto' if self.moto else 'external'}; "
            f"export AWS_ENDPOINT_URL={aws} AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing)",
            f"  Lambda invoke {self.urls['lambda']}/2015-03-31/functions/<LogicalId>/invocations",
            f"  Outbox        {self.config.outbox_dir}/  (one .eml per email sent)",
            f"  Functions     {functions}",
        ]
        if self.unavailable:
            lines.append(f"  Not loaded    {', '.join(self.unavailable)} (their events are not delivered)")
        if self.demo_jobs or self.config.demo:
            lines.append(
                f"  Demo          user {DEMO_USER} <{DEMO_EMAIL}>; jobs {DEMO_SUCCEEDS} (succeeds every "
                f"minute), {DEMO_FAILS} (fails, retried), {DEMO_HEALTH} (http_check of /health)"
            )
        lines += [
            "  Try (token of the demo user, valid 12 h):",
            f'    curl -s -H "Authorization: Bearer {token}" {api}/job-logs/active',
            "  More tokens: jobtracker local token --sub alice --email alice@example.com [--scope admin]",
            "Ctrl-C to stop.",
        ]
        return "\n".join(lines)


def _unavailable(start_response: Callable[..., Any]) -> Iterable[bytes]:
    """Requests that arrive while the stack is still starting."""
    start_response("503 Service Unavailable", [("Content-Type", "application/json")])
    return [b'{"message": "Service Unavailable"}']


def _bind(invoke: Callable[[str, Any], Any], function_id: str) -> Callable[[dict[str, Any]], Any]:
    def call(event: dict[str, Any]) -> Any:
        return invoke(function_id, event)

    return call


def read_state(state_dir: Path) -> dict[str, Any]:
    path = state_dir / STATE_FILE
    if not path.exists():
        return {}
    data: dict[str, Any] = json.loads(path.read_text())
    return data


def up_command(*options: str) -> list[str]:
    """`jobtracker local up` as a child process of this interpreter (tests, benchmarks)."""
    return [sys.executable, "-m", "jobtracker_local.cli", "local", "up", *options]


def child_env(**extra: str) -> dict[str, str]:
    """This process's environment without its AWS settings, plus moto's fake credentials: a child
    stack must never reach real AWS, whatever the caller's shell exports."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        AWS_ACCESS_KEY_ID="testing",
        AWS_SECRET_ACCESS_KEY="testing",  # noqa: S106 (not a secret: moto's fixed key)
        AWS_DEFAULT_REGION="us-east-1",
    )
    env.update(extra)
    return env
