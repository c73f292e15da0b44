"""Each function's environment is exactly what its settings class reads, and the code reads it.

The policy gate ties a function's table grants to its environment (`table-access`,
`table-grant-unused`). These tests close the chain to the code: every variable the template gives
a function is a field of that function's settings class (so a table in the environment, and the
grant that goes with it, is something the code is told about), every required field is in the
environment (a missing one fails at the first invocation after deploy, never in moto), and every
field is read somewhere in the function's package.
"""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from api.settings import ApiSettings
from jobtracker_common.settings import BaseSettings, RunsSettings
from jobtracker_local import gates
from jobtracker_local.template import Template
from notifier.settings import NotifierSettings
from pydantic import BaseModel, Field
from tracker.settings import SweeperSettings, TrackerSettings

pytestmark = pytest.mark.infra

#: Which settings class each function loads (checked against the code below).
SETTINGS: dict[str, type[BaseSettings]] = {
    "JobRunnerFunction": RunsSettings,
    "TrackerFunction": TrackerSettings,
    "SweeperFunction": SweeperSettings,
    "NotifierFunction": NotifierSettings,
    "DigestFunction": NotifierSettings,
    "ApiFunction": ApiSettings,
}

#: Read by aws-lambda-powertools and pydantic themselves, not by our settings.
LIBRARY_PREFIX = ("POWERTOOLS_", "PYDANTIC_")


def package_sources(handler_module: str) -> dict[Path, str]:
    spec = importlib.util.find_spec(handler_module.partition(".")[0])
    assert spec and spec.submodule_search_locations, handler_module
    root = Path(next(iter(spec.submodule_search_locations)))
    return {path: path.read_text() for path in sorted(root.rglob("*.py"))}


def drift(template: Template, settings: dict[str, type[BaseModel]]) -> list[str]:
    """Every way a function's environment, settings class and code disagree."""
    problems = []
    functions = template.functions()
    if missing := sorted(set(functions) - set(settings)):
        problems.append(f"no settings class known for {missing}")
    for fn, spec in sorted(functions.items()):
        cls = settings.get(fn)
        if cls is None:
            continue
        aliases = {f.alias or name: (name, f) for name, f in cls.model_fields.items()}
        for var in sorted(spec.environment):
            if not var.startswith(LIBRARY_PREFIX) and var not in aliases:
                problems.append(f"{fn}: {var} is in the environment but {cls.__name__} never reads it")
        for var, (_, field) in sorted(aliases.items()):
            if field.is_required() and var not in spec.environment:
                problems.append(f"{fn}: {cls.__name__} requires {var}, the template does not set it")
        sources = package_sources(spec.module)
        if not any(f"load_settings({cls.__name__})" in text for text in sources.values()):
            problems.append(f"{fn}: its package never calls load_settings({cls.__name__})")
        code = "\n".join(sources.values())
        for var, (name, _) in sorted(aliases.items()):
            if var.startswith(LIBRARY_PREFIX):
                continue
            if not re.search(rf"\.{name}\b", code):
                problems.append(f"{fn}: {cls.__name__}.{name} ({var}) is read nowhere in its package")
    return problems


def test_every_function_reads_exactly_its_environment() -> None:
    # Given the template the gates check and the settings class each function loads
    # When environment, settings fields and code are compared
    problems = drift(Template(), SETTINGS)
    # Then they agree for every function
    assert problems == [], "\n".join(problems)


def test_no_function_gets_a_table_it_does_not_use() -> None:
    # The grants follow the environment (policy gate); pin the known narrow ones explicitly.
    template = Template()
    tables = {
        fn: {v for v in spec.environment if v.endswith("_TABLE_NAME")}
        for fn, spec in template.functions().items()
    }
    assert tables["SweeperFunction"] == {"RUNS_TABLE_NAME"}
    assert tables["TrackerFunction"] == {"JOBS_TABLE_NAME", "STATS_TABLE_NAME"}
    assert (
        tables["NotifierFunction"]
        == tables["DigestFunction"]
        == {"USERS_TABLE_NAME", "NOTIFICATIONS_TABLE_NAME"}
    )
    assert gates.policy(gates.TEMPLATE) == []


Doc = dict[str, Any]


def env_of(doc: Doc, fn: str) -> dict[str, Any]:
    variables: dict[str, Any] = doc["Resources"][fn]["Properties"]["Environment"]["Variables"]
    return variables


CASES: dict[str, tuple[Callable[[Doc], None], str]] = {
    "a table the sweeper's code never reads": (
        lambda d: env_of(d, "SweeperFunction").update(JOBS_TABLE_NAME={"Ref": "JobsTable"}),
        "SweeperFunction: JOBS_TABLE_NAME is in the environment but SweeperSettings never reads it",
    ),
    "a queue the notifier's code never reads": (
        lambda d: env_of(d, "NotifierFunction").update(DLQ_URL={"Ref": "NotifierDLQ"}),
        "NotifierFunction: DLQ_URL is in the environment but NotifierSettings never reads it",
    ),
    "a global variable nobody reads": (
        lambda d: d["Globals"]["Function"]["Environment"]["Variables"].update(STAGE={"Ref": "Stage"}),
        "ApiFunction: STAGE is in the environment but ApiSettings never reads it",
    ),
    "a required table missing": (
        lambda d: env_of(d, "TrackerFunction").pop("STATS_TABLE_NAME"),
        "TrackerFunction: TrackerSettings requires STATS_TABLE_NAME, the template does not set it",
    ),
    "a new function without a settings class": (
        lambda d: d["Resources"].update(
            ExtraFunction={**d["Resources"]["SweeperFunction"], "Type": "AWS::Serverless::Function"}
        ),
        "no settings class known for ['ExtraFunction']",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_drift_is_caught(case: str, broken_template: Callable[..., Path]) -> None:
    # Given a copy of the template broken in one way
    mutate, expected = CASES[case]
    # When environment, settings and code are compared
    problems = drift(Template(broken_template(mutate)), SETTINGS)
    # Then the drift is named
    assert expected in problems, problems


class UnusedFieldSettings(BaseSettings):
    runs_table_name: str = Field(alias="RUNS_TABLE_NAME", min_length=3)
    never_read_anywhere_xyz: str = "x"


def test_a_settings_field_the_code_never_reads_is_caught(broken_template: Callable[..., Path]) -> None:
    # Given the sweeper loading a class with a field its package never reads
    path = broken_template(lambda d: None)
    # When compared, Then that field is named (and the class is not the one the code loads)
    problems = drift(Template(path), {**SETTINGS, "SweeperFunction": UnusedFieldSettings})
    assert (
        "SweeperFunction: UnusedFieldSettings.never_read_anywhere_xyz (never_read_anywhere_xyz) "
        "is read nowhere in its package" in problems
    )
    assert "SweeperFunction: its package never calls load_settings(UnusedFieldSettings)" in problems
