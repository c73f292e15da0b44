"""Helpers for the template gates: a private copy of the template to break in each test."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from jobtracker_local import gates

Mutation = Callable[[dict[str, Any]], None]


@pytest.fixture(scope="session")
def template_doc() -> dict[str, Any]:
    """infra/template.yaml as loaded by the gates (never mutate: use `broken_template`)."""
    return gates.load(gates.TEMPLATE)


@pytest.fixture
def broken_template(tmp_path: Path, template_doc: dict[str, Any]) -> Callable[[Mutation], Path]:
    """Copy the template to tmp (as JSON, which CloudFormation and every gate read), mutated."""

    def make(mutate: Mutation) -> Path:
        doc = copy.deepcopy(template_doc)
        mutate(doc)
        path = tmp_path / "template.json"
        path.write_text(json.dumps(doc, indent=1))
        return path

    return make
