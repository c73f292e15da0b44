"""Property-based fuzzing of the API from its own OpenAPI document (schemathesis, in-process).

Positive and negative inputs for every operation; every response must be documented, match its
schema, and never be a 5xx. Derandomized with a fixed number of examples: same cases every run.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from jobtracker_common.models import RunStatus
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    negative_data_rejection,
    response_schema_conformance,
    status_code_conformance,
)

from tests.support.http import api_harness
from tests.support.runs import make_run
from tests.support.wsgi import lambda_wsgi_app

pytestmark = pytest.mark.slow

schema = schemathesis.openapi.from_wsgi("/openapi.json", lambda_wsgi_app)
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    negative_data_rejection,
]


@pytest.fixture
def api(aws):
    with api_harness(aws) as harness:
        # Something to find: the fuzzing user owns a job and runs in several states.
        created = harness.call(
            "POST /jobs", user="fuzzer", body={"name": "seed", "job_type": "demo", "schedule": "rate(1 hour)"}
        )
        for status in (RunStatus.COMPLETED, RunStatus.RUNNING, RunStatus.RETRYING):
            make_run(
                harness.services.runs, owner_id="fuzzer", job_id=created.body["job_id"], status=status, logs=2
            )
        yield harness


@schema.parametrize()
@settings(
    max_examples=10,
    derandomize=True,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_openapi_document(api, case):
    # The same case as an ordinary user and as an admin (other listings, global statistics).
    case.call_and_validate(headers={"Authorization": "Bearer fuzzer"}, checks=CHECKS)
    case.call_and_validate(headers={"Authorization": "Bearer admin:root"}, checks=CHECKS)
