"""The OpenAPI document is generated from the code; the committed copy must match it, and the
template's routes and scopes must match what the code declares."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from api.openapi import document, render

ROOT = Path(__file__).resolve().parents[2]
COMMITTED = ROOT / "docs" / "openapi.json"


def test_committed_document_matches_the_code():
    committed = json.loads(COMMITTED.read_text())
    assert committed == document(), "docs/openapi.json is stale: run `make openapi` and commit it"
    assert COMMITTED.read_text() == render()


def template_routes() -> dict[tuple[str, str], list[str] | None]:
    """(METHOD, path) -> scopes (None = no authorizer) of the ApiFunction's HttpApi events."""
    from jobtracker_local.template import load_template

    template = load_template()
    function = template.resources["ApiFunction"]["Properties"]
    routes = {}
    for event in function["Events"].values():
        props = event["Properties"]
        auth = props.get("Auth", {})
        public = auth.get("Authorizer") == "NONE"
        routes[(props["Method"].upper(), props["Path"])] = (
            None if public else auth.get("AuthorizationScopes", [])
        )
    return routes


def code_routes() -> dict[tuple[str, str], list[str] | None]:
    routes = {}
    for path, operations in document()["paths"].items():
        for method, operation in operations.items():
            security = operation.get("security")
            routes[(method.upper(), path)] = None if security is None else security[0]["jwt"]
    return routes


def test_template_declares_exactly_the_routes_of_the_code():
    assert set(template_routes()) == set(code_routes())


@pytest.mark.parametrize("route", sorted(code_routes()), ids=lambda r: f"{r[0]} {r[1]}")
def test_template_scopes_match_the_code(route):
    in_template = template_routes()[route]
    in_code = code_routes()[route]
    if in_code is None:
        assert in_template is None, "public in code, behind the authorizer in the template"
        return
    assert in_template is not None, "protected in code, public in the template"
    # The template lists each scope twice: plain (external issuers) and Cognito-prefixed.
    assert sorted(in_template) == sorted([*in_code, *(f"jobtracker/{s}" for s in in_code)])


def test_every_operation_documents_its_errors_with_the_error_shape():
    doc = document()
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            if operation.get("security") is None:
                continue
            for code in ("401", "403", "422"):
                content = operation["responses"][code]["content"]["application/json"]["schema"]
                assert content == {"$ref": "#/components/schemas/ErrorResponse"}, (method, path, code)
