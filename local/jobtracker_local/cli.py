"""`jobtracker local up | token | invoke`: the local stack from the command line."""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from jobtracker_local.template import ROOT

DEFAULT_STATE_DIR = ROOT / ".local"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="jobtracker", description=__doc__)
    groups = parser.add_subparsers(dest="group", required=True)
    local = groups.add_parser("local", help="the whole system on this machine (no Docker, no AWS account)")
    commands = local.add_subparsers(dest="command", required=True)

    up = commands.add_parser("up", help="start the local stack in the foreground (what `make run` does)")
    up.add_argument("--api-port", type=int, default=3000, help="HTTP gateway port (0: any free port)")
    up.add_argument("--aws-port", type=int, default=4566, help="moto server port (0: any free port)")
    up.add_argument(
        "--aws-endpoint", help="use this AWS-compatible endpoint (e.g. LocalStack) instead of moto"
    )
    up.add_argument("--lambda-port", type=int, default=0, help="Lambda Invoke API port with --aws-endpoint")
    up.add_argument("--no-demo", action="store_true", help="do not create the demo user and jobs")
    up.add_argument("--outbox", type=Path, help="folder for sent emails (default: .local/outbox)")
    up.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR, help="keys and stack.json")
    up.add_argument("--poll-interval", type=float, default=0.25, help="stream/schedule/outbox polling (s)")
    up.add_argument(
        "--retry-delay", type=float, default=0.5, help="pause before a stream batch is retried (s)"
    )
    up.add_argument(
        "--async-retry-delay", type=float, default=2.0, help="pause before an async invoke is retried (s)"
    )
    up.add_argument("--max-batching-window", type=float, help="cap the template's batching windows (s)")
    up.add_argument("--metrics", action="store_true", help="print the functions' EMF metrics")
    up.add_argument("--log-level", default="INFO")

    token = commands.add_parser("token", help="print a bearer token the local gateway accepts")
    token.add_argument("--sub", required=True, help="user id (the JWT subject)")
    token.add_argument("--email")
    token.add_argument(
        "--scope", help='space-separated scopes, e.g. "read:jobs write:jobs"; "admin" for an admin'
    )
    token.add_argument("--ttl", type=int, default=12 * 3600, help="lifetime in seconds")
    token.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)

    invoke = commands.add_parser("invoke", help="run one function's handler once against the running stack")
    invoke.add_argument(
        "logical_id", help="function logical id in infra/template.yaml, e.g. JobRunnerFunction"
    )
    invoke.add_argument(
        "--event", type=Path, required=True, help="event JSON file (e.g. events/job_runner/manual.json)"
    )
    invoke.add_argument("--aws-endpoint", help="defaults to the running stack's endpoint")
    invoke.add_argument("--state-dir", type=Path, default=DEFAULT_STATE_DIR)

    args = parser.parse_args(argv)
    if args.command == "up":
        return _up(args)
    if args.command == "token":
        return _token(args)
    return _invoke(args)


def _up(args: argparse.Namespace) -> int:
    began = time.monotonic()
    from jobtracker_local.stack import LocalStack, StackConfig

    line = "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=args.log_level.upper(), format=line)
    # Powertools filters root handlers by substring of its service names ("tracker" is in
    # "jobtracker"), so the stack's own log gets a handler of its own.
    own = logging.getLogger("jobtracker.local")
    handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter(line))
    own.addHandler(handler)
    own.setLevel(args.log_level.upper())
    own.propagate = False
    for noisy in ("werkzeug", "botocore", "urllib3", "moto"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
    config = StackConfig(
        api_port=args.api_port,
        aws_port=args.aws_port,
        aws_endpoint=args.aws_endpoint,
        lambda_port=args.lambda_port,
        state_dir=args.state_dir.resolve(),
        outbox=args.outbox.resolve() if args.outbox else None,
        demo=not args.no_demo,
        stream_poll_interval=args.poll_interval,
        schedule_poll_interval=args.poll_interval,
        outbox_poll_interval=args.poll_interval,
        stream_retry_delay=args.retry_delay,
        async_retry_delay=args.async_retry_delay,
        max_batching_window=args.max_batching_window,
        metrics=args.metrics,
    )
    stop = threading.Event()

    def request_stop(signum: int, _: Any) -> None:
        stop.set()

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    stack = LocalStack(config)
    try:
        try:
            stack.start()
        except Exception as exc:  # port taken, endpoint unreachable, template conflict...
            logging.getLogger("jobtracker.local").debug("start failed", exc_info=True)
            print(f"jobtracker: cannot start the local stack: {exc}", file=sys.stderr)
            if "already in use" in str(exc):
                print(
                    "jobtracker: choose free ports with --api-port/--aws-port "
                    '(make run ARGS="--api-port 3001 --aws-port 4567")',
                    file=sys.stderr,
                )
            return 1
        stack.started_in = time.monotonic() - began  # imports included: what a user waits for
        print(stack.ready_message(), flush=True)
        while not stop.wait(0.5):
            pass
        print("stopping...", flush=True)
    finally:
        stack.stop()
    print("stopped.", flush=True)
    return 0


def _token(args: argparse.Namespace) -> int:
    from jobtracker_local.auth import KeyStore, expand_scopes
    from jobtracker_local.resources import LOCAL_AUDIENCE, LOCAL_ISSUER
    from jobtracker_local.stack import read_state

    state = read_state(args.state_dir)
    scopes = expand_scopes(args.scope.split() if args.scope else None)
    print(
        KeyStore(args.state_dir).mint(
            sub=args.sub,
            email=args.email,
            scopes=scopes,
            issuer=state.get("issuer", LOCAL_ISSUER),
            audience=state.get("audience", LOCAL_AUDIENCE),
            ttl_seconds=args.ttl,
        )
    )
    return 0


def _invoke(args: argparse.Namespace) -> int:
    import os

    from botocore.exceptions import BotoCoreError, ClientError

    from jobtracker_local.functions import FunctionError, FunctionRuntime
    from jobtracker_local.resources import LocalResources, discover
    from jobtracker_local.stack import read_state
    from jobtracker_local.template import load_template

    state = read_state(args.state_dir)
    endpoint = args.aws_endpoint or state.get("aws") or "http://127.0.0.1:4566"
    os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
    os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
    resources = LocalResources(load_template(), endpoint)
    try:
        discover(resources)
    except (BotoCoreError, ClientError) as exc:
        print(
            f"jobtracker: no running local stack at {endpoint} (start it with `make run`, "
            f"or pass --aws-endpoint): {exc}",
            file=sys.stderr,
        )
        return 1
    runtime = FunctionRuntime(resources)
    if args.logical_id not in runtime.specs:
        print(f"no function {args.logical_id!r}; known: {', '.join(runtime.specs)}", file=sys.stderr)
        return 2
    # One function in its own process: exactly its own environment, as Lambda would give it.
    os.environ.update(resources.environment(args.logical_id))
    os.environ.update(
        AWS_ENDPOINT_URL=endpoint,
        AWS_ENDPOINT_URL_LAMBDA=state.get("lambda", endpoint),
        AWS_REGION=resources.region,
        AWS_DEFAULT_REGION=resources.region,
    )
    event = json.loads(args.event.read_text())
    # Like `sam local invoke`: the function's logs go to stderr, its response alone to stdout.
    # Handlers are imported inside invoke(), so their log handlers bind to stderr.
    stdout, sys.stdout = sys.stdout, sys.stderr
    try:
        result = runtime.invoke(args.logical_id, event)
    except FunctionError as exc:
        print(json.dumps(exc.payload(), indent=2), file=stdout)
        return 1
    finally:
        sys.stdout = stdout
    print(json.dumps(result, indent=2, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
