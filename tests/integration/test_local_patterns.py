"""Lambda event filtering (EventBridge patterns) as the local stream emulator applies it."""

from __future__ import annotations

import pytest
from jobtracker_local.patterns import matches, matches_any, parse_pattern
from jobtracker_local.resources import LocalResources
from jobtracker_local.streams import StreamSource
from jobtracker_local.template import load_template


def record(event_name: str = "MODIFY", entity: str = "run", status: str = "completed") -> dict:
    return {
        "eventName": event_name,
        "dynamodb": {"NewImage": {"entity": {"S": entity}, "status": {"S": status}, "attempt": {"N": "2"}}},
    }


def notifier_filters() -> list[dict]:
    (source,) = [
        s
        for s in StreamSource.from_template(LocalResources(load_template(), "http://x"))
        if s.function_id == "NotifierFunction"
    ]
    return list(source.filters)


@pytest.mark.parametrize(
    ("rec", "expected"),
    [
        (record(), True),
        (record(event_name="INSERT", status="failed"), True),
        (record(status="running"), False),
        (record(entity="log"), False),
        (record(event_name="REMOVE"), False),
        ({"eventName": "MODIFY", "dynamodb": {"Keys": {}}}, False),
    ],
)
def test_the_notifier_filter_from_the_template(rec, expected):
    assert matches_any(notifier_filters(), rec) is expected


def test_matchers():
    rec = record()
    assert matches({"dynamodb": {"NewImage": {"status": {"S": [{"prefix": "comp"}]}}}}, rec)
    assert matches(
        {"dynamodb": {"NewImage": {"status": {"S": [{"anything-but": ["running", "queued"]}]}}}}, rec
    )
    assert not matches({"dynamodb": {"NewImage": {"status": {"S": [{"anything-but": "completed"}]}}}}, rec)
    assert matches({"dynamodb": {"NewImage": {"error": [{"exists": False}]}}}, rec)
    assert not matches({"dynamodb": {"NewImage": {"entity": [{"exists": False}]}}}, rec)
    assert matches({"eventName": [{"equals-ignore-case": "modify"}]}, rec)
    assert matches({"n": [{"numeric": [">", 1, "<=", 3]}]}, {"n": 2})
    assert not matches({"n": [{"numeric": [">", 2]}]}, {"n": 2})
    assert matches({"tags": ["b"]}, {"tags": ["a", "b"]})
    assert not matches({"n": ["2"]}, {"n": 2})


def test_no_filters_keeps_everything_and_unknown_matchers_are_refused():
    assert matches_any([], {"anything": 1})
    with pytest.raises(ValueError, match="unsupported"):
        parse_pattern('{"a": [{"wildcard": "x*"}]}')
    with pytest.raises(ValueError, match="lists"):
        parse_pattern('{"a": "x"}')
