"""Two stacks of this template share an account (dev and prod, samconfig.toml) or a stack name
(one per region): every name the template gives an account- or region-wide resource must keep
them apart, fit its limit, and nothing a failed or deleted stack leaves behind may block the next.
"""

from __future__ import annotations

from typing import Any

import pytest
from jobtracker_local import gates
from jobtracker_local.template import resolve

pytestmark = pytest.mark.infra

Doc = dict[str, Any]

#: Longest stack name the template deploys under (docs/deploy.md): the Cognito domain prefix
#: `<stack>-<account id>` must fit 63 characters.
MAX_STACK_NAME = 50
ACCOUNT = "123456789012"


def refs(stack: str, region: str) -> dict[str, Any]:
    return {"AWS::StackName": stack, "AWS::Region": region, "AWS::AccountId": ACCOUNT}


def schedule_events(doc: Doc) -> dict[str, Doc]:
    return {
        f"{fn}.{event_id}": event["Properties"]
        for fn, resource in gates._functions(doc).items()
        for event_id, event in (resource.get("Events") or {}).items()
        if event["Type"] == "ScheduleV2"
    }


def global_names(doc: Doc) -> dict[str, tuple[str, Any, int]]:
    """Names that must be unique beyond the stack -> (scope, unresolved name, length limit)."""
    out: dict[str, tuple[str, Any, int]] = {}
    for where, props in schedule_events(doc).items():
        # Without a GroupName SAM puts the schedule in the account's `default` group.
        assert "GroupName" not in props, where
        out[where] = ("region", props["Name"], 64)
    for name, resource in doc["Resources"].items():
        props = resource.get("Properties") or {}
        kind = resource["Type"]
        if kind == "AWS::Serverless::LayerVersion":
            out[name] = ("region", props["LayerName"], 140)
        elif kind == "AWS::Scheduler::ScheduleGroup":
            out[name] = ("region", props["Name"], 64)
        elif kind == "AWS::CloudWatch::Dashboard":
            out[name] = ("account", props["DashboardName"], 255)
        elif kind == "AWS::Cognito::UserPoolDomain":
            out[name] = ("region", props["Domain"], 63)
    return out


def test_every_schedule_event_is_named_by_its_stack(template_doc: Doc) -> None:
    # SAM's default name <Function><Event> in the `default` group is the same for every stack:
    # the second stack in an account and region fails to create it (aws/serverless-application-model#3109).
    events = schedule_events(template_doc)
    assert events
    for where, props in events.items():
        assert "AWS::StackName" in gates._references(props.get("Name")), where
        assert not props.get("OmitName"), where


def test_names_keep_two_stacks_apart(template_doc: Doc) -> None:
    # Given the names the template gives resources AWS requires to be unique in a region or account
    names = global_names(template_doc)
    expected = {"SweeperFunction.EveryMinute", "DigestFunction.EveryFiveMinutes", "CommonLayer", "Dashboard"}
    assert expected <= set(names)
    for where, (scope, name, _) in names.items():
        dev, prod = (
            resolve(name, refs(stack, "eu-west-1")) for stack in ("jobtracker-dev", "jobtracker-prod")
        )
        # Then dev and prod in one account and region do not collide
        assert dev != prod, where
        if scope == "account":
            # And one stack name in two regions does not either (dashboards are account-wide)
            assert resolve(name, refs("jobtracker-dev", "us-east-1")) != dev, where


def test_names_fit_their_limits_with_the_longest_stack_name(template_doc: Doc) -> None:
    longest = refs("j" * MAX_STACK_NAME, "ap-southeast-5")
    for where, (_, name, limit) in global_names(template_doc).items():
        resolved = resolve(name, longest)
        assert len(resolved) <= limit, (where, resolved)


def test_the_documented_stack_name_limit_is_the_tested_one() -> None:
    deploy = (gates.ROOT / "docs" / "deploy.md").read_text()
    assert f"at most {MAX_STACK_NAME} characters" in deploy


def test_layer_versions_go_with_the_stack_and_its_updates(template_doc: Doc) -> None:
    # SAM's default keeps every layer version forever (RetentionPolicy: Retain), also after
    # `sam delete`; Delete removes a replaced version once the update that replaced it succeeded.
    layer = template_doc["Resources"]["CommonLayer"]["Properties"]
    assert layer["RetentionPolicy"] == "Delete"
    translated = gates.translate(template_doc)
    (version,) = (r for r in translated["Resources"].values() if r["Type"] == "AWS::Lambda::LayerVersion")
    assert version["DeletionPolicy"] == "Delete"
    assert version["Properties"]["LayerName"] == layer["LayerName"]


def test_data_is_kept_by_sam_delete_but_not_by_a_failed_first_deploy(template_doc: Doc) -> None:
    # Given the resources that hold data: the tables and the user pool
    kinds = {"AWS::DynamoDB::Table", "AWS::Cognito::UserPool"}
    held = {k for k, v in template_doc["Resources"].items() if v["Type"] in kinds}
    assert len(held) == 6
    # When SAM translates the template (it must pass the attributes through unchanged)
    translated = gates.translate(template_doc)["Resources"]
    for name in held:
        # Then `sam delete` and a replacement keep them; the rollback of the deploy that created
        # them deletes them, so a retry after a failed first deploy finds no orphans
        assert translated[name]["DeletionPolicy"] == "RetainExceptOnCreate", name
        assert translated[name]["UpdateReplacePolicy"] == "Retain", name
