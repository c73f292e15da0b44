"""Imports run one way: functions -> layer. The layer never imports functions or the local stack;
a function never imports another function; Lambda code never imports tests or dev tooling."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
FUNCTION_PACKAGES = {"job_runner", "tracker", "notifier", "api"}
PACKAGES = {
    "jobtracker_common": ROOT / "layers/common/jobtracker_common",
    "job_runner": ROOT / "functions/job_runner/job_runner",
    "tracker": ROOT / "functions/tracker/tracker",
    "notifier": ROOT / "functions/notifier/notifier",
    "api": ROOT / "functions/api/api",
}
NEVER_IN_LAMBDA = {"tests", "moto", "jobtracker_local", "pytest", "bench"}


def imported_roots(path: Path) -> set[str]:
    roots = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            roots |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            roots.add(node.module.split(".")[0])
    return roots


@pytest.mark.parametrize("package", sorted(PACKAGES))
def test_imports_run_one_way(package: str) -> None:
    forbidden = set(NEVER_IN_LAMBDA)
    if package == "jobtracker_common":
        forbidden |= FUNCTION_PACKAGES
    else:
        forbidden |= FUNCTION_PACKAGES - {package}
    offenders = {
        str(path.relative_to(ROOT)): sorted(imported_roots(path) & forbidden)
        for path in PACKAGES[package].rglob("*.py")
        if imported_roots(path) & forbidden
    }
    assert offenders == {}
