"""samconfig.toml, the Makefile's deploy targets and the Lambda requirements agree with the template."""

from __future__ import annotations

import marshal
import re
import shlex
import tomllib
from pathlib import Path
from typing import Any

import pytest
from jobtracker_local import gates

from bench.coldstart import build_code

pytestmark = pytest.mark.infra

ROOT = gates.ROOT


@pytest.fixture(scope="module")
def samconfig() -> dict[str, Any]:
    return tomllib.loads((ROOT / "samconfig.toml").read_text())


def overrides(text: str) -> dict[str, str]:
    """SAM's `Key=Value Key2="" ...` form."""
    return dict(item.split("=", 1) for item in shlex.split(text))


@pytest.mark.parametrize("env", ["default", "dev", "prod"])
def test_each_environment_deploys_with_resolve_s3_and_known_parameters(
    env: str, samconfig: dict[str, Any], template_doc: dict[str, Any]
) -> None:
    deploy = samconfig[env]["deploy"]["parameters"]
    assert deploy["resolve_s3"] is True
    assert samconfig[env]["global"]["parameters"]["stack_name"]
    given = overrides(deploy["parameter_overrides"])
    # A typo in an override would silently deploy the default: every key must be a template parameter.
    assert set(given) <= set(template_doc["Parameters"]), set(given) - set(template_doc["Parameters"])
    assert {"Stage", "SenderEmail", "JwtIssuer", "AlarmEmail"} <= set(given)
    for key, value in given.items():
        allowed = template_doc["Parameters"][key].get("AllowedValues")
        assert allowed is None or value in [str(a) for a in allowed], (key, value)


def test_prod_changes_are_confirmed_and_alarmed(samconfig: dict[str, Any]) -> None:
    deploy = samconfig["prod"]["deploy"]["parameters"]
    assert deploy["confirm_changeset"] is True
    assert overrides(deploy["parameter_overrides"])["AlarmEmail"]


def makefile_rule(target: str) -> tuple[str, list[str]]:
    text = (ROOT / "Makefile").read_text()
    match = re.search(rf"^{re.escape(target)}:(.*)\n((?:\t.*\n)*)", text, re.M)
    assert match, target
    return match.group(1), [line.strip() for line in match.group(2).splitlines()]


def test_make_test_runs_every_gate() -> None:
    deps, _ = makefile_rule("test")
    assert "validate" in deps.split()
    _, recipe = makefile_rule("validate")
    assert any("sam validate --lint" in line for line in recipe)
    assert any("jobtracker_local.gates all" in line for line in recipe)
    assert set(gates.GATES) == {"cfn-lint", "policy", "checkov", "sam-build"}


@pytest.mark.parametrize("target", ["validate", "build", "deploy"])
def test_sam_commands_get_an_absolute_config_file(target: str) -> None:
    # SAM resolves a relative --config-file against infra/ (the template's folder) for build and
    # validate but against the working directory for deploy: only an absolute path is right for all.
    text = (ROOT / "Makefile").read_text()
    assert re.search(r"^SAMCONFIG := \$\(CURDIR\)/samconfig\.toml$", text, re.M)
    _, recipe = makefile_rule(target)
    sam_lines = [line for line in recipe if "/bin/sam " in line]
    assert sam_lines
    assert all("--config-file $(SAMCONFIG)" in line for line in sam_lines)


def requirement_names(path: Path) -> dict[str, str]:
    out = {}
    for raw in path.read_text().splitlines():
        line = raw.split("#", 1)[0].strip()
        if line:
            name = re.split(r"[<>=!~\[ ;]", line, maxsplit=1)[0].lower()
            out[name] = line.replace(" ", "")
    return out


def test_lambda_requirements_mirror_pyproject() -> None:
    # What `sam build` installs into the layer/functions is what the tests ran against.
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    pinned = {re.split(r"[<>=!~\[ ;]", d, maxsplit=1)[0].lower(): d.replace(" ", "") for d in project}
    path = ROOT / "layers/common/requirements.txt"
    for name, spec in requirement_names(path).items():
        assert name in pinned, f"{path.relative_to(ROOT)}: {name} is not in pyproject.toml"
        assert spec == pinned[name], f"{path.relative_to(ROOT)}: {spec} != pyproject {pinned[name]}"
    # infra/lambda/Makefile installs the layer's requirements only: a function's would never ship.
    assert not sorted(ROOT.glob("functions/*/requirements.txt"))


def test_the_venv_runs_the_versions_the_layer_pins() -> None:
    # What the tests ran against is what infra/lambda/Makefile installs into the layer.
    from importlib.metadata import version

    from jobtracker_local.gates import pinned_versions

    pins = pinned_versions(ROOT / "layers/common/constraints.txt")
    assert {name: version(name) for name in pins} == pins
    # And every runtime dependency of the layer is pinned
    assert set(requirement_names(ROOT / "layers/common/requirements.txt")) <= set(pins)


def test_template_builds_for_arm64_with_the_layer(template_doc: dict[str, Any]) -> None:
    # sam build resolves arm64 wheels (pydantic-core) for the layer; functions and layer must agree.
    archs = template_doc["Globals"]["Function"]["Architectures"]
    layer = template_doc["Resources"]["CommonLayer"]
    assert archs == layer["Properties"]["CompatibleArchitectures"] == [layer["Metadata"]["BuildArchitecture"]]
    # infra/lambda/Makefile asks pip for that architecture's wheels, with the functions' Python
    makefile = (ROOT / "infra/lambda/Makefile").read_text()
    wheels = {"arm64": "manylinux2014_aarch64", "x86_64": "manylinux2014_x86_64"}[archs[0]]
    assert re.search(rf"^PLATFORM \?= {wheels}$", makefile, re.M)
    runtime = template_doc["Globals"]["Function"]["Runtime"]
    version = runtime.removeprefix("python")
    assert re.search(rf"^LAMBDA_PYTHON \?= {runtime}$", makefile, re.M)
    assert re.search(rf"^LAMBDA_CACHE_TAG := cpython-{version.replace('.', '')}$", makefile, re.M)
    assert f"--python-version {version}" in makefile


def test_every_function_and_the_layer_build_with_bytecode(template_doc: dict[str, Any]) -> None:
    # Lambda cannot write __pycache__: without the Makefile's bytecode every cold start compiles.
    makefile = (ROOT / "infra/lambda/Makefile").read_text()
    targets = set(re.findall(r"^FUNCTIONS := (.*)$", makefile, re.M)[0].split()) | {"CommonLayer"}
    built = {
        name
        for name, resource in template_doc["Resources"].items()
        if resource["Type"] in ("AWS::Serverless::Function", "AWS::Serverless::LayerVersion")
    }
    assert built == targets
    for name in built:
        metadata = template_doc["Resources"][name].get("Metadata", {})
        assert (metadata.get("BuildMethod"), metadata.get("ContextPath")) == ("makefile", "lambda"), name


#: Resources someone operating or testing the stack looks up by name or URL.
OUTPUT_TYPES = {
    "AWS::DynamoDB::Table",
    "AWS::SQS::Queue",
    "AWS::Serverless::Function",
    "AWS::Logs::LogGroup",
    "AWS::Scheduler::ScheduleGroup",
    "AWS::Serverless::HttpApi",
    "AWS::CloudWatch::Dashboard",
    "AWS::SNS::Topic",
    "AWS::Cognito::UserPool",
    "AWS::Cognito::UserPoolClient",
    "AWS::Cognito::UserPoolDomain",
}


def test_every_named_resource_is_an_output(template_doc: dict[str, Any]) -> None:
    # Given the resources a user or a test needs to find after `sam deploy`
    wanted = {k for k, v in template_doc["Resources"].items() if v["Type"] in OUTPUT_TYPES}
    # When the outputs are read
    referenced = gates._references(template_doc["Outputs"])
    # Then each is in one of them (the stack outputs are the only place to look names up)
    assert wanted - referenced == set()


def test_the_lambda_build_is_the_same_wherever_it_runs(tmp_path: Path) -> None:
    # Given the tracker's code built twice, into two different directories
    for name in ("one", "elsewhere/two"):
        build_code(ROOT / "functions/tracker", tmp_path / name)
    # Then every file is byte for byte the same (SAM zips with fixed dates, so the zips are too,
    # and an unchanged function is not uploaded again) ...
    one = {
        p.relative_to(tmp_path / "one"): p.read_bytes() for p in (tmp_path / "one").rglob("*") if p.is_file()
    }
    two = tmp_path / "elsewhere/two"
    assert one == {p.relative_to(two): p.read_bytes() for p in two.rglob("*") if p.is_file()}
    # ... the bytecode names the path the module has in Lambda ...
    pyc = tmp_path / "one/tracker/__pycache__/handler.cpython-311.pyc"
    code = marshal.loads(pyc.read_bytes()[16:])
    assert code.co_filename == "/var/task/tracker/handler.py"
    # ... and only our packages ship, every module with its bytecode
    assert {p.parts[0] for p in one} == {"tracker"}
    assert {p.stem for p in one if p.suffix == ".py"} == {
        p.stem.split(".")[0] for p in one if p.suffix == ".pyc"
    }


def test_the_lambda_build_refuses_bytecode_for_another_python(tmp_path: Path) -> None:
    # Lambda ignores bytecode of another interpreter and would compile at every cold start.
    with pytest.raises(RuntimeError, match=r"is not cpython-399: set LAMBDA_PYTHON to a Python 3\.11"):
        build_code(ROOT / "functions/tracker", tmp_path, "/var/task", "LAMBDA_CACHE_TAG=cpython-399")
    assert not list(tmp_path.rglob("*.pyc"))


def rule_value(expr: Any, params: dict[str, str]) -> Any:
    """A Rules expression (the rule functions this template uses) under parameter values."""
    if not isinstance(expr, dict):
        return expr
    ((key, arg),) = expr.items()
    if key == "Ref":
        return params[arg]
    if key == "Fn::Equals":
        left, right = (rule_value(a, params) for a in arg)
        return str(left) == str(right)
    if key == "Fn::Not":
        return not rule_value(arg[0], params)
    if key == "Fn::And":
        return all(rule_value(a, params) for a in arg)
    if key == "Fn::Or":
        return any(rule_value(a, params) for a in arg)
    raise NotImplementedError(f"rule function {key}: teach this test to evaluate it")


def failed_rules(template_doc: dict[str, Any], given: dict[str, str]) -> list[str]:
    """Names of the template's rules CloudFormation would refuse these parameters with."""
    params = {k: str(v.get("Default", "")) for k, v in template_doc["Parameters"].items()} | given
    failed = []
    for name, rule in template_doc.get("Rules", {}).items():
        if "RuleCondition" in rule and not rule_value(rule["RuleCondition"], params):
            continue
        if not all(rule_value(a["Assert"], params) for a in rule["Assertions"]):
            failed.append(name)
    return failed


@pytest.mark.parametrize(
    ("issuer", "audience", "refused"),
    [
        ("", "", False),  # Cognito: the audience is the stack's own app clients
        ("https://issuer.example.com/", "api://jobtracker", False),
        ("https://issuer.example.com/", "", True),
    ],
)
def test_an_external_issuer_is_refused_without_an_audience(
    issuer: str, audience: str, refused: bool, template_doc: dict[str, Any]
) -> None:
    # An issuer without an audience would make the authorizer expect aud [""]: every route 401.
    assert template_doc["Parameters"]["JwtAudience"]["Type"] == "String"
    given = {"JwtIssuer": issuer, "JwtAudience": audience}
    assert failed_rules(template_doc, given) == (["ExternalIssuerNeedsAudience"] if refused else [])


@pytest.mark.parametrize("env", ["default", "dev", "prod"])
def test_each_environment_passes_the_templates_rules(
    env: str, samconfig: dict[str, Any], template_doc: dict[str, Any]
) -> None:
    given = overrides(samconfig[env]["deploy"]["parameters"]["parameter_overrides"])
    assert failed_rules(template_doc, given) == []


def test_the_local_stacks_parameters_pass_the_templates_rules(template_doc: dict[str, Any]) -> None:
    from jobtracker_local.resources import local_parameters

    assert failed_rules(template_doc, local_parameters()) == []


def test_one_bound_on_active_index_shards(template_doc: dict[str, Any]) -> None:
    # The sweeper reads every shard up to MAX_ACTIVE_SHARDS (runs stay in the shard they were
    # created in, also after the count is lowered): the parameter and the setting must not allow more.
    from jobtracker_common.repositories.runs import MAX_ACTIVE_SHARDS
    from jobtracker_common.settings import RunsTableSettings

    parameter = template_doc["Parameters"]["ActiveIndexShards"]
    assert int(parameter["MaxValue"]) == MAX_ACTIVE_SHARDS
    field = RunsTableSettings.model_fields["active_index_shards"]
    assert [m.le for m in field.metadata if hasattr(m, "le")] == [MAX_ACTIVE_SHARDS]
