"""Every resource the local stack creates comes from the very template the gates check."""

from __future__ import annotations

import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from jobtracker_local import gates
from jobtracker_local.endpoint import moto_server
from jobtracker_local.gateway import routes_from_template
from jobtracker_local.resources import LocalResources, aws_client, local_parameters, provision
from jobtracker_local.template import TEMPLATE_PATH, Template, load_template

pytestmark = pytest.mark.infra


def of_type(doc: dict[str, Any], kind: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in doc["Resources"].items() if v["Type"] == kind}


def test_local_stack_and_gates_read_the_same_file() -> None:
    assert TEMPLATE_PATH.resolve() == gates.TEMPLATE.resolve()
    assert Template().path.resolve() == gates.TEMPLATE.resolve()


def test_local_table_definitions_are_the_gated_tables(template_doc: dict[str, Any]) -> None:
    # Given the tables as the gates see them
    gated = of_type(template_doc, "AWS::DynamoDB::Table")
    # When the local stack derives its create_table arguments
    local = Template().table_definitions()
    # Then they are the same tables, with the same keys, attributes and indexes
    assert set(local) == set(gated)
    for logical_id, kwargs in local.items():
        props = gated[logical_id]["Properties"]
        assert kwargs["KeySchema"] == props["KeySchema"]
        assert kwargs["AttributeDefinitions"] == props["AttributeDefinitions"]
        assert kwargs.get("GlobalSecondaryIndexes", []) == props.get("GlobalSecondaryIndexes", [])
        assert ("StreamSpecification" in kwargs) == ("StreamSpecification" in props)


def test_local_event_sources_are_the_gated_ones(template_doc: dict[str, Any]) -> None:
    # The stream emulator and the scheduler read these; the policy gate checks the same dicts.
    template = Template()
    gated = {
        (fn, event_id): event["Properties"]
        for fn, res in of_type(template_doc, "AWS::Serverless::Function").items()
        for event_id, event in res["Properties"].get("Events", {}).items()
        if event["Type"] in {"DynamoDB", "ScheduleV2"}
    }
    local = {
        (fn, event_id): props for fn, event_id, props in template.events_of_type("DynamoDB", "ScheduleV2")
    }
    assert local == gated


@pytest.fixture
def provisioned() -> Iterator[LocalResources]:
    server = moto_server("127.0.0.1", 0)
    server.start()
    try:
        resources = LocalResources(load_template(), server.url)
        provision(resources)
        yield resources
    finally:
        urllib.request.urlopen(urllib.request.Request(server.url + "/moto-api/reset", method="POST"))
        server.stop()


def test_provisioning_creates_exactly_the_templates_resources(
    provisioned: LocalResources, template_doc: dict[str, Any]
) -> None:
    # Given a local endpoint provisioned the way `make run` does
    endpoint = provisioned.endpoint
    # Then its tables, queues and schedule groups are those of the gated template
    tables = aws_client("dynamodb", endpoint).list_tables()["TableNames"]
    assert sorted(tables) == sorted(
        provisioned.refs[t] for t in of_type(template_doc, "AWS::DynamoDB::Table")
    )
    queue_urls = aws_client("sqs", endpoint).list_queues().get("QueueUrls", [])
    assert sorted(url.rsplit("/", 1)[-1] for url in queue_urls) == sorted(
        of_type(template_doc, "AWS::SQS::Queue")
    )
    groups = {g["Name"] for g in aws_client("scheduler", endpoint).list_schedule_groups()["ScheduleGroups"]}
    assert {provisioned.refs[g] for g in of_type(template_doc, "AWS::Scheduler::ScheduleGroup")} <= groups
    # And the schedules are exactly the template's ScheduleV2 events, under the names they set
    # (SAM's default, <Function><Event> in the account's `default` group, would collide with a
    # second stack in the account), with their expressions and targets
    schedules = aws_client("scheduler", endpoint)
    expected = {
        provisioned.resolve(event["Properties"]["Name"]): (fn, event["Properties"])
        for fn, res in of_type(template_doc, "AWS::Serverless::Function").items()
        for event_id, event in res["Properties"].get("Events", {}).items()
        if event["Type"] == "ScheduleV2"
    }
    assert expected
    assert all(name.startswith(f"{provisioned.stack_name}-") for name in expected)
    created = {s["Name"] for s in schedules.list_schedules()["Schedules"]}
    assert created == set(expected)
    for name, (fn, props) in expected.items():
        schedule = schedules.get_schedule(Name=name, GroupName=props.get("GroupName", "default"))
        assert schedule["ScheduleExpression"] == props["ScheduleExpression"]
        assert schedule["Target"]["Arn"] == provisioned.attrs[f"{fn}.Arn"]
        assert (
            schedule["Target"]["RetryPolicy"]["MaximumRetryAttempts"]
            == (props["RetryPolicy"]["MaximumRetryAttempts"])
        )
        if "DeadLetterConfig" in props:
            queue = props["DeadLetterConfig"]["Arn"]["Fn::GetAtt"][0]
            assert schedule["Target"]["DeadLetterConfig"]["Arn"] == provisioned.attrs[f"{queue}.Arn"]
    # And the only SES identity is the template's sender
    identities = aws_client("sesv2", endpoint).list_email_identities()["EmailIdentities"]
    assert [i["IdentityName"] for i in identities] == [template_doc["Parameters"]["SenderEmail"]["Default"]]


@pytest.mark.parametrize(("tracing", "disabled"), [("true", "false"), ("false", "true")])
def test_tracing_parameter_switches_powertools_tracer_in_every_function(tracing: str, disabled: str) -> None:
    # Given the stack resolved with TracingEnabled set (the condition X-Ray's Tracing uses too)
    resources = LocalResources(
        load_template(), "http://127.0.0.1:9", parameters=local_parameters({"TracingEnabled": tracing})
    )
    # Then every function's Powertools Tracer follows it
    for function_id in resources.template.functions():
        assert resources.environment(function_id)["POWERTOOLS_TRACE_DISABLED"] == disabled
    glob = resources.template.doc["Globals"]["Function"]
    assert resources.resolve(glob["Tracing"]) == ("Active" if tracing == "true" else "PassThrough")


def test_local_gateway_routes_are_the_gated_routes(template_doc: dict[str, Any]) -> None:
    # Given the HTTP API routes and scopes as the gates see them
    gated = {
        (event["Properties"]["Method"].upper(), event["Properties"]["Path"]): (
            fn,
            tuple(event["Properties"].get("Auth", {}).get("AuthorizationScopes", [])),
        )
        for fn, res in of_type(template_doc, "AWS::Serverless::Function").items()
        for event in res["Properties"].get("Events", {}).values()
        if event["Type"] == "HttpApi"
    }
    # When the local gateway derives its routes
    local = routes_from_template(LocalResources(load_template(), "http://127.0.0.1:9"))
    # Then they are the same routes, served by the same functions, with the same scopes
    assert {(r.method, r.path): (r.function_id, r.scopes) for r in local} == gated


def test_local_function_environments_are_the_gated_ones(template_doc: dict[str, Any]) -> None:
    # The variables each function gets locally are exactly the template's (Globals + its own).
    resources = LocalResources(load_template(), "http://127.0.0.1:9")
    glob = template_doc["Globals"]["Function"]["Environment"]["Variables"]
    for fn, res in of_type(template_doc, "AWS::Serverless::Function").items():
        own = res["Properties"].get("Environment", {}).get("Variables", {})
        assert set(resources.environment(fn)) == set(glob) | set(own), fn
