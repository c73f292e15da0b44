"""Alarms on our own metrics watch metrics the code really emits, with the dimensions it emits.

CloudWatch matches a metric by namespace, name and the exact dimension set; an alarm on a name
the code never emits (or with another `service`) stays green forever, and no gate notices.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from jobtracker_local import gates

pytestmark = pytest.mark.infra

FUNCTIONS = gates.ROOT / "functions"


def custom_metrics(doc: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(alarm, metric) for every alarm metric outside the AWS/ namespaces, metric math included."""
    for name, res in doc["Resources"].items():
        if res["Type"] != "AWS::CloudWatch::Alarm":
            continue
        props = res["Properties"]
        metrics = [props] if "MetricName" in props else []
        metrics += [m["MetricStat"]["Metric"] for m in props.get("Metrics", []) if "MetricStat" in m]
        for metric in metrics:
            if not str(metric["Namespace"]).startswith("AWS/"):
                yield name, metric


def emitted(sources: dict[Path, str]) -> set[tuple[str, str]]:
    """(service, metric name or f-string prefix + '*') per module: Metrics(service=...) + add_metric."""
    out = set()
    for text in sources.values():
        services = re.findall(r'make_metrics\("(\w+)"\)', text)
        names = re.findall(r'add_metric\(\s*name="(\w+)"', text)
        names += [p + "*" for p in re.findall(r'add_metric\(\s*name=f"(\w+)\{', text)]
        out |= {(service, n) for service in services for n in names}
    return out


def is_emitted(service: str, metric: str, found: set[tuple[str, str]]) -> bool:
    return any(
        s == service and (n == metric or (n.endswith("*") and metric.startswith(n[:-1]))) for s, n in found
    )


def test_every_custom_metric_alarm_watches_an_emitted_metric(template_doc: dict[str, Any]) -> None:
    # Given what the functions emit (Powertools Metrics: namespace from the environment, one
    # `service` dimension)
    namespace = template_doc["Globals"]["Function"]["Environment"]["Variables"][
        "POWERTOOLS_METRICS_NAMESPACE"
    ]
    found = emitted({p: p.read_text() for p in FUNCTIONS.rglob("*.py") if "tests" not in p.parts})
    alarms = list(custom_metrics(template_doc))
    assert alarms
    for alarm, metric in alarms:
        # Then each alarm metric has that namespace, exactly that dimension, and a module emits it
        assert metric["Namespace"] == namespace, alarm
        dimensions = {d["Name"]: d["Value"] for d in metric.get("Dimensions", [])}
        assert set(dimensions) == {"service"}, alarm
        assert is_emitted(dimensions["service"], metric["MetricName"], found), (alarm, metric["MetricName"])


def test_an_alarm_on_a_metric_nobody_emits_is_caught() -> None:
    found = emitted(
        {Path("x.py"): 'metrics = make_metrics("sweeper")\nmetrics.add_metric(name="LeasesExpired")'}
    )
    assert is_emitted("sweeper", "LeasesExpired", found)
    assert not is_emitted("sweeper", "LeaseExpired", found)
    assert not is_emitted("tracker", "LeasesExpired", found)
    prefixed = emitted(
        {Path("y.py"): 'm = make_metrics("notifier")\nm.add_metric(name=f"Notifications_{o}")'}
    )
    assert is_emitted("notifier", "Notifications_failed_permanent", prefixed)
