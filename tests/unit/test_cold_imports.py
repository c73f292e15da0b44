"""Cold start: what a handler module imports, and what its cached builders build, is what every
cold start pays for (bench/coldstart.py measures the time, with this same probe). These guard the
heavy modules that a function does not need: boto3 itself (its session wrapper, resources and
s3transfer; functions use botocore clients), every Parser model (Powertools' batch utility loads
them when pydantic is imported first: jobtracker_common.batch must come first), the X-Ray SDK,
jinja2 before a render, Powertools' batch utility outside the stream consumers, and the
repositories a function does not use."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from jobtracker_local.template import load_template

from bench import coldstart

ALWAYS_ABSENT = {
    "boto3",
    "s3transfer",
    "aws_lambda_powertools.utilities.parser",
    "aws_xray_sdk",
    "jinja2",
}
#: Not for the functions that are not stream consumers (it also brings asyncio).
NO_BATCH = {"aws_lambda_powertools.utilities.batch", "asyncio"}
FUNCTIONS = {
    "JobRunnerFunction": ALWAYS_ABSENT | NO_BATCH | {"jobtracker_common.repositories.stats"},
    # The API's statistics query and response models: the tracker only aggregates.
    "TrackerFunction": ALWAYS_ABSENT | {"jobtracker_common.users", "jobtracker_common.statistics_query"},
    "SweeperFunction": ALWAYS_ABSENT
    | NO_BATCH
    | {"jobtracker_common.repositories.jobs", "jobtracker_common.statistics"},
    "NotifierFunction": ALWAYS_ABSENT | {"jobtracker_common.statistics"},
    "DigestFunction": ALWAYS_ABSENT | NO_BATCH | {"jobtracker_common.statistics"},
    # The HTTP resolver of Powertools imports asyncio itself.
    "ApiFunction": ALWAYS_ABSENT | {"aws_lambda_powertools.utilities.batch"},
}


def test_every_function_of_the_template_is_guarded() -> None:
    assert set(load_template().functions()) == set(FUNCTIONS)


@pytest.mark.parametrize("logical_id", sorted(FUNCTIONS))
def test_a_cold_start_leaves_out_what_the_function_does_not_use(logical_id: str) -> None:
    # Given a fresh interpreter with the function's environment, as in a Lambda cold start
    args, env = coldstart.probe(load_template().functions()[logical_id])
    env["PROBE_MODULES"] = "1"
    # When it imports the handler module and builds its settings and clients
    done = subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, check=True, timeout=60
    )
    info = json.loads(done.stdout.splitlines()[-1])
    assert info["built"], "the probe built nothing: the check would be import-only"
    # Then none of the modules it does not need were imported
    assert sorted(FUNCTIONS[logical_id] & set(info["modules"])) == []


def test_a_cold_start_passes_only_when_the_instruction_count_agrees_with_the_wall_time() -> None:
    assert coldstart.passes(1.2, 1.25) and coldstart.passes(1.3, None)
    # A lucky wall-time median (the baseline ran slow) is not a pass when the count says otherwise
    assert not coldstart.passes(1.11, 1.35)
    assert not coldstart.passes(1.35, 1.2)
