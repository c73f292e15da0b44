"""cfn-lint (SAM and translated) and checkov gates: clean on the template, failing when broken."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from jobtracker_local import gates

pytestmark = pytest.mark.infra


def test_template_passes_cfn_lint_as_sam_and_as_translated_cloudformation() -> None:
    # When cfn-lint runs on the SAM file and on samtranslator's output
    findings = gates.cfn_lint(gates.TEMPLATE)
    # Then there is not a single error or warning
    assert findings == [], "\n".join(map(str, findings))


def test_cfn_lint_gate_fails_on_errors_and_on_warnings(broken_template: Callable[..., Path]) -> None:
    # Given a template with an invalid property value (error) and an unused parameter (warning)
    def mutate(doc: dict) -> None:
        doc["Resources"]["JobsTable"]["Properties"]["BillingMode"] = "FREE_OF_CHARGE"
        doc["Parameters"]["NobodyUsesMe"] = {"Type": "String", "Default": "x"}

    path = broken_template(mutate)
    # When the cfn-lint gate runs
    found = {f.rule for f in gates.cfn_lint(path)}
    # Then both the error and the warning fail it
    assert any(rule.startswith("E") for rule in found), found
    assert "W2001" in found


def test_cfn_lint_gate_reports_a_template_sam_cannot_translate(broken_template: Callable[..., Path]) -> None:
    # Given a stream event whose stream is missing (SAM refuses to translate it)
    path = broken_template(
        lambda d: d["Resources"]["TrackerFunction"]["Properties"]["Events"]["RunsStream"]["Properties"].pop(
            "Stream"
        )
    )
    # When the gate runs, Then it reports (not crashes)
    findings = gates.cfn_lint(path)
    assert findings
    assert all(f.gate == "cfn-lint" for f in findings)


def test_template_passes_checkov() -> None:
    findings = gates.checkov(gates.TEMPLATE)
    assert findings == [], "\n".join(map(str, findings))


def test_checkov_gate_fails_when_a_check_fails(broken_template: Callable[..., Path]) -> None:
    # Given the HTTP API without access logs (CKV_AWS_95 is not skipped)
    path = broken_template(lambda d: d["Resources"]["HttpApi"]["Properties"].pop("AccessLogSettings"))
    # When checkov runs with the repository's configuration
    found = {f.rule for f in gates.checkov(path)}
    # Then the failed check is a finding
    assert "CKV_AWS_95" in found


def test_every_checkov_skip_carries_a_reason() -> None:
    assert gates.checkov_skip_reasons() == []


def test_a_checkov_skip_without_reason_is_a_finding(tmp_path: Path) -> None:
    # Given a configuration with one reasoned and one bare skip
    config = tmp_path / ".checkov.yaml"
    config.write_text(
        "framework:\n  - cloudformation\nskip-check:\n"
        "  - CKV_AWS_117  # the functions call only public AWS APIs, a VPC adds NAT cost\n"
        "  - CKV_AWS_116\n"
    )
    # When the skips are checked, Then only the bare one is reported
    findings = gates.checkov_skip_reasons(config)
    assert [f.message for f in findings] == ["skip CKV_AWS_116 needs a reason"]


def test_every_code_folder_of_the_template_exists() -> None:
    assert gates.missing_code(gates.TEMPLATE) == []


def test_a_missing_code_folder_fails_the_build_gate_before_sam_runs(
    broken_template: Callable[..., Path],
) -> None:
    # Given a copy whose code paths are absolute (it lives in tmp), one of them pointing nowhere
    infra = gates.TEMPLATE.parent

    def mutate(doc: dict) -> None:
        for resource in doc["Resources"].values():
            props = resource.get("Properties", {})
            for key in ("CodeUri", "ContentUri"):
                if isinstance(props.get(key), str):
                    props[key] = str((infra / props[key]).resolve())
        doc["Resources"]["TrackerFunction"]["Properties"]["CodeUri"] = str(infra / "no-such-function")

    path = broken_template(mutate)
    # When the sam-build gate runs, Then it names the function and the folder
    findings = gates.sam_build(path)
    assert [(f.rule, f.where) for f in findings] == [("code-uri", "TrackerFunction.CodeUri")]


def elf(machine: int) -> bytes:
    # The 20 bytes the check reads: magic, class/data/version, padding, e_type, e_machine.
    return (
        b"\x7fELF" + bytes([2, 1, 1]) + bytes(9) + (3).to_bytes(2, "little") + machine.to_bytes(2, "little")
    )


def test_build_gate_rejects_native_code_for_the_wrong_cpu(tmp_path: Path) -> None:
    # Given a build with an arm64 pydantic-core and an x86_64 markupsafe
    lib = tmp_path / "CommonLayer" / "python"
    (lib / "pydantic_core").mkdir(parents=True)
    (lib / "markupsafe").mkdir()
    (lib / "pydantic_core" / "_pydantic_core.cpython-311-aarch64-linux-gnu.so").write_bytes(elf(0xB7))
    (lib / "markupsafe" / "_speedups.cpython-311-x86_64-linux-gnu.so").write_bytes(elf(0x3E))
    # When it is checked for arm64 functions, Then only the x86_64 library is reported
    findings = gates.wrong_architecture(tmp_path, "arm64")
    assert [f.where for f in findings] == [
        "CommonLayer/python/markupsafe/_speedups.cpython-311-x86_64-linux-gnu.so"
    ]
    # And for x86_64 functions, the other one
    assert len(gates.wrong_architecture(tmp_path, "x86_64")) == 1


def test_build_gate_rejects_modules_without_unchecked_bytecode(tmp_path: Path) -> None:
    # Given a function compiled the way infra/lambda/Makefile does, and a layer with one module
    # compiled with timestamps (pip's default) and one not compiled at all
    function = tmp_path / "TrackerFunction" / "tracker"
    layer = tmp_path / "CommonLayer" / "python" / "pydantic"
    for folder in (function, layer):
        folder.mkdir(parents=True)
        (folder / "__init__.py").write_text("X = 1\n")
    (layer / "main.py").write_text("Y = 2\n")
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", "--invalidation-mode", "unchecked-hash", str(function)],
        check=True,
    )
    subprocess.run([sys.executable, "-m", "compileall", "-q", str(layer / "__init__.py")], check=True)
    # When the build is checked, Then the layer is reported with both modules, the function is not
    findings = gates.missing_bytecode(tmp_path, "python3.11")
    assert [(f.rule, f.where) for f in findings] == [("bytecode", "CommonLayer")]
    assert findings[0].message.startswith("2 of 2 modules without unchecked-hash cpython-311 bytecode")
    # And bytecode of an older version of the source does not count either
    (function / "__init__.py").write_text("X = 2\n")
    assert [f.where for f in gates.missing_bytecode(tmp_path, "python3.11")] == [
        "CommonLayer",
        "TrackerFunction",
    ]
    # And bytecode for another interpreter does not count
    other = gates.missing_bytecode(tmp_path, "python3.12")
    assert [f.where for f in other] == ["CommonLayer", "TrackerFunction"]


def test_build_gate_rejects_layer_distributions_other_than_the_pins(tmp_path: Path) -> None:
    # Given constraints pinning two distributions, and a layer built with one of them in another
    # version and a third one nobody pinned
    constraints = tmp_path / "constraints.txt"
    constraints.write_text(
        "# the tested versions\npydantic-core==2.46.5\npython_dateutil==2.9.0.post0  # botocore\n"
    )
    layer = tmp_path / "CommonLayer" / "python"
    for info in ("pydantic_core-2.46.5", "python_dateutil-4.0.0", "six-1.17.0"):
        (layer / f"{info}.dist-info").mkdir(parents=True)
    # When the build is checked, Then the two that differ from the pins are reported
    findings = gates.unpinned_distributions(tmp_path / "CommonLayer", constraints)
    assert [(f.rule, f.where, f.message) for f in findings] == [
        ("pins", "CommonLayer: python_dateutil", "built 4.0.0, pinned 2.9.0.post0"),
        ("pins", "CommonLayer: six", "built 1.17.0, not pinned"),
    ]
    # And a layer without a constraints file is a finding of its own
    assert [f.rule for f in gates.unpinned_distributions(layer, tmp_path / "missing.txt")] == ["pins"]


def test_the_build_gate_checks_what_sam_built(monkeypatch: pytest.MonkeyPatch) -> None:
    # Given a `sam build` that succeeds but ships a module without bytecode and an unpinned wheel
    def fake_sam(args: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        build = Path(args[args.index("--build-dir") + 1])
        (build / "TrackerFunction" / "tracker").mkdir(parents=True)
        (build / "TrackerFunction" / "tracker" / "__init__.py").write_text("")
        (build / "CommonLayer" / "python" / "six-1.0.0.dist-info").mkdir(parents=True)
        (build / "template.yaml").write_text("")
        return subprocess.CompletedProcess(args, 0, "", "")

    monkeypatch.setattr(gates.subprocess, "run", fake_sam)
    # When the sam-build gate runs on the template, Then both are findings
    findings = gates.sam_build(gates.TEMPLATE)
    assert sorted((f.rule, f.where) for f in findings) == [
        ("bytecode", "TrackerFunction"),
        ("pins", "CommonLayer: six"),
    ]
