"""Cold start: what a handler module imports is what every cold start pays for (bench/coldstart.py
measures the time). These guard the heavy modules that no function needs: boto3 itself (its
session wrapper, resources and s3transfer; functions use botocore clients), every Parser model
(Powertools' batch utility loads them when pydantic is imported first: jobtracker_common.batch
must come first), the X-Ray SDK, jinja2 before a render, and the repositories a function does
not use."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

ALWAYS_ABSENT = {
    "boto3",
    "s3transfer",
    "aws_lambda_powertools.utilities.parser",
    "aws_xray_sdk",
    "jinja2",
}
HANDLERS = {
    "job_runner.handler": ALWAYS_ABSENT | {"asyncio", "jobtracker_common.repositories.stats"},
    # Powertools' BatchProcessor imports asyncio itself.
    "tracker.handler": ALWAYS_ABSENT | {"jobtracker_common.users"},
    "tracker.sweeper": ALWAYS_ABSENT
    | {"asyncio", "jobtracker_common.repositories.jobs", "jobtracker_common.statistics"},
    "notifier.handler": ALWAYS_ABSENT | {"jobtracker_common.statistics"},
    "notifier.digest": ALWAYS_ABSENT | {"asyncio", "jobtracker_common.statistics"},
    # The HTTP resolver of Powertools imports asyncio itself.
    "api.handler": ALWAYS_ABSENT,
}


@pytest.mark.parametrize("module", sorted(HANDLERS))
def test_handler_import_leaves_out_what_the_function_does_not_use(module: str) -> None:
    # Given a fresh interpreter, as in a Lambda cold start
    code = (
        "import importlib, json, sys; importlib.import_module(sys.argv[1]); "
        "print(json.dumps(sorted(sys.modules)))"
    )
    # When it imports the handler module
    done = subprocess.run(
        [sys.executable, "-c", code, module], capture_output=True, text=True, check=True, timeout=60
    )
    loaded = set(json.loads(done.stdout.splitlines()[-1]))
    # Then none of the modules it does not need were imported
    assert sorted(HANDLERS[module] & loaded) == []
