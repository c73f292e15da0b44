"""Without test overrides the API builds its collaborators from the template's environment."""

from __future__ import annotations

import boto3
import pytest

from tests.support.aws import REGION
from tests.support.http import claims, http_event, invoke


@pytest.fixture
def from_environment(aws, monkeypatch):
    from api import deps
    from jobtracker_common.settings import load_settings
    from jobtracker_local.resources import default_resources

    env = default_resources("http://127.0.0.1:1").environment("ApiFunction")
    for key, value in env.items():
        if key.endswith("_TABLE_NAME"):
            continue  # the `aws` fixture's tables
        monkeypatch.setenv(key, value)
    boto3.client("scheduler", region_name=REGION).create_schedule_group(Name=env["SCHEDULE_GROUP_NAME"])
    load_settings.cache_clear()
    deps._from_environment.cache_clear()
    yield env
    load_settings.cache_clear()
    deps._from_environment.cache_clear()


def test_template_environment_is_valid_api_settings(from_environment):
    from api.settings import ApiSettings

    settings = ApiSettings.from_env(from_environment)
    assert settings.job_runner_arn.endswith(":function:JobRunnerFunction")


def test_handler_runs_on_environment_built_services(from_environment):
    created = invoke(
        http_event(
            "POST /jobs",
            body={"name": "wired", "job_type": "demo", "schedule": "rate(1 day)"},
            token_claims=claims("user-wire"),
        )
    )
    assert created.status == 201, created.body
    listed = invoke(http_event("GET /jobs", token_claims=claims("user-wire")))
    assert [j["job_id"] for j in listed.body["items"]] == [created.body["job_id"]]
    stats = invoke(http_event("GET /job-logs/statistics", token_claims=claims("user-wire")))
    assert stats.status == 200


def test_missing_configuration_is_a_500_without_details(aws, monkeypatch):
    from api import deps
    from jobtracker_common.settings import load_settings

    monkeypatch.delenv("SCHEDULE_GROUP_NAME", raising=False)
    load_settings.cache_clear()
    deps._from_environment.cache_clear()
    try:
        response = invoke(http_event("GET /jobs", token_claims=claims("user-wire")))
    finally:
        load_settings.cache_clear()
        deps._from_environment.cache_clear()
    assert response.status == 500
    assert "SCHEDULE_GROUP_NAME" not in response.message


def test_addresses_are_looked_up_only_in_a_stack_with_its_own_user_pool(from_environment, monkeypatch):
    from api import deps
    from api.emails import CognitoEmails
    from jobtracker_common.settings import load_settings

    # Given the template's environment with an external issuer (the local stack): no pool
    assert from_environment["USER_POOL_ID"] == ""
    # Then the API never asks a directory for addresses
    assert deps.services().emails is None
    # Given a stack with the template's Cognito pool, Then the API asks that pool
    monkeypatch.setenv("USER_POOL_ID", "eu-west-1_pool")
    load_settings.cache_clear()
    deps._from_environment.cache_clear()
    emails = deps.services().emails
    assert isinstance(emails, CognitoEmails)
    assert emails._user_pool_id == "eu-west-1_pool"
