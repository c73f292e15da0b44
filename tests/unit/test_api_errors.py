"""The one error mapping: domain errors and validation errors to status + JSON shape."""

from __future__ import annotations

import json

import pytest
from api.auth import AuthenticationError, MissingScopeError
from api.errors import MAX_DETAILS, domain_error_response, validation_error_response
from aws_lambda_powertools.event_handler.openapi.exceptions import RequestValidationError
from jobtracker_common.errors import (
    ConfigurationError,
    ConflictError,
    DuplicateError,
    ForbiddenError,
    InvalidTransitionError,
    NotFoundError,
    TransientError,
    ValidationError,
)


def body(response):
    return json.loads(response.body) if isinstance(response.body, str) else response.body


@pytest.mark.parametrize(
    ("error", "status"),
    [
        (AuthenticationError("no token"), 401),
        (MissingScopeError("no scope"), 403),
        (ForbiddenError("not yours"), 403),
        (NotFoundError("gone"), 404),
        (ConflictError("changed"), 409),
        (InvalidTransitionError("terminal"), 409),
        (DuplicateError("seen", existing_id="r1"), 409),
        (ValidationError("bad", details=[{"field": "x"}]), 422),
        (TransientError("busy"), 503),
    ],
)
def test_domain_errors_map_to_status_and_shape(error, status):
    response = domain_error_response(error)
    assert response.status_code == status
    assert body(response) == {"message": error.message, "details": error.details}


def test_configuration_errors_do_not_leak_to_callers():
    response = domain_error_response(ConfigurationError("JOBS_TABLE_NAME missing"))
    assert response.status_code == 500
    assert "JOBS_TABLE_NAME" not in json.dumps(body(response))


def test_invalid_json_is_400_and_invalid_values_422():
    bad_json = RequestValidationError(
        [{"type": "json_invalid", "loc": ("body", 3), "msg": "x", "ctx": {"error": "Expecting value"}}]
    )
    assert validation_error_response(bad_json).status_code == 400
    invalid = RequestValidationError(
        [{"type": "missing", "loc": ("body", "name"), "msg": "Field required", "input": {"secret": "s3cr3t"}}]
    )
    response = validation_error_response(invalid)
    assert response.status_code == 422
    assert body(response)["details"] == [
        {"location": "body", "field": "name", "message": "Field required", "type": "missing"}
    ]
    assert "s3cr3t" not in json.dumps(body(response))


def test_a_validation_error_lists_the_first_details_and_says_how_many_there_were():
    # One detail per unknown field: 120,000 of them once made a 12 MB body, over Lambda's 6 MB
    # response limit (API Gateway then answers its own 500 instead of the 422).
    many = RequestValidationError(
        [
            {"type": "extra_forbidden", "loc": ("body", f"k{i}"), "msg": "Extra inputs are not permitted"}
            for i in range(120_000)
        ]
    )
    response = validation_error_response(many)
    assert response.status_code == 422
    assert len(body(response)["details"]) == MAX_DETAILS
    assert body(response)["details"][0]["field"] == "k0"
    assert f"120000 problems; details lists the first {MAX_DETAILS}" in body(response)["message"]


def test_error_texts_are_clipped_whatever_the_request_named():
    huge = "k" * 5_000_000
    invalid = RequestValidationError([{"type": "extra_forbidden", "loc": ("body", huge), "msg": huge}])
    response = validation_error_response(invalid)
    assert response.status_code == 422
    assert len(json.dumps(body(response))) < 5_000
    domain = domain_error_response(ValidationError(huge, details=[{"field": huge, "n": 1}]))
    assert len(json.dumps(body(domain))) < 5_000
    assert body(domain)["details"][0]["n"] == 1
