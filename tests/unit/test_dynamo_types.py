"""Attribute-value conversion: the layer's own rules give exactly what boto3's TypeSerializer and
TypeDeserializer give (Lambda code does not import boto3; see jobtracker_common.dynamo)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from jobtracker_common.dynamo import UnstorableError, check_storable, from_item, serialize, to_item

VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -17,
    10**37,
    Decimal("1.50"),
    Decimal("-0.000001"),
    "",
    "text ü 🚀",
    b"\x00\x01",
    {1, 2, 3},
    {"a", "b"},
    {b"x", b"y"},
    set(),
    [],
    [1, "a", None, [True, {"k": Decimal("2")}]],
    (1, 2),
    {},
    {"nested": {"list": [1, 2], "set": {"x"}, "flag": False, "none": None}},
]


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_serialize_matches_boto3(value: Any) -> None:
    expected: dict[str, Any] = dict(TypeSerializer().serialize(value))
    got: dict[str, Any] = dict(serialize(value))
    if isinstance(value, set):
        # Set order is not defined: compare the members.
        ((kind, members),) = expected.items()
        assert got.keys() == {kind} and sorted(got[kind]) == sorted(members)
    elif isinstance(value, dict):
        # to_item/serialize leave None members of maps out (absent, not NULL): boto3 with those removed.
        assert got == TypeSerializer().serialize(_without_none(value))
    else:
        assert got == expected


def _without_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list | tuple):
        return [_without_none(v) for v in value]
    return value


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_deserialize_matches_boto3(value: Any) -> None:
    attribute = TypeSerializer().serialize(value)
    expected = TypeDeserializer().deserialize(attribute)
    got = from_item({"a": attribute})["a"]
    if isinstance(value, bytes):
        assert got == expected.value  # boto3 wraps binary in Binary; plain bytes here
    elif isinstance(value, set) and value and isinstance(next(iter(value)), bytes):
        assert got == {b.value for b in expected}
    else:
        assert got == _plain(expected)


def _plain(value: Any) -> Any:
    """from_item's own conversion of numbers: int when integral, else float."""
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, set):
        return {_plain(v) for v in value}
    return value


def test_floats_are_stored_as_exact_decimals() -> None:
    assert serialize(0.1) == {"N": "0.1"}
    assert to_item({"x": 2.5, "gone": None}) == {"x": {"N": "2.5"}}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (Decimal("Infinity"), "Infinity and NaN"),
        ({1.5, 2.5}, "Float types"),
        (object(), "Unsupported type"),
    ],
)
def test_what_boto3_refuses_is_refused(value: Any, message: str) -> None:
    with pytest.raises(TypeError, match=message):
        TypeSerializer().serialize(value)
    with pytest.raises(TypeError, match=message):
        serialize(value)


def test_a_number_dynamodb_cannot_hold_exactly_is_refused() -> None:
    too_precise = Decimal("1." + "1" * 40)
    with pytest.raises(Exception) as boto3_error:
        TypeSerializer().serialize(too_precise)
    with pytest.raises(type(boto3_error.value)):
        serialize(too_precise)


@pytest.mark.parametrize("attribute", [{}, {"X": "1"}])
def test_unknown_or_empty_attribute_values_are_refused(attribute: dict[str, Any]) -> None:
    with pytest.raises(TypeError):
        TypeDeserializer().deserialize(attribute)  # type: ignore[arg-type]
    with pytest.raises(TypeError):
        from_item({"a": attribute})


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"x": 1e-200}, "params.x: 1E-200 is too close to zero"),  # decimal.Underflow in serialize
        ({"x": 5e-324}, "too close to zero"),
        ({"x": 1e-131}, "too close to zero"),  # serializes; PutItem refuses below 1E-130
        ({"x": 1e126}, "too large"),
        ({"x": 123456789012345678901234567890123456789}, "38 significant digits"),  # decimal.Inexact
        ({"x": [{"y": Decimal("NaN")}]}, "params.x.0.y: NaN is not a finite number"),
        ({"x": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}, "nested deeper"),
        ({"x": object()}, "cannot store"),
    ],
)
def test_check_storable_names_what_dynamodb_would_refuse(value: Any, message: str) -> None:
    with pytest.raises(UnstorableError, match=message):
        check_storable(value, "params")


@pytest.mark.parametrize(
    "value",
    [
        {"x": 0.0, "y": -0.0, "z": 0},
        {"x": 1e-130, "y": -1e-130},
        {"x": Decimal("9.9999999999999999999999999999999999999E+125")},
        {"x": 12345678901234567890123456789012345678},
        {"x": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},  # 32 levels with the map
        {"x": [1.5, "a", None, True, {"y": 2}]},
    ],
    ids=repr,
)
def test_check_storable_accepts_what_dynamodb_stores(value: Any) -> None:
    check_storable(value, "params")
    serialize(value)


def test_check_storable_walks_without_recursion() -> None:
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    with pytest.raises(UnstorableError, match="nested deeper"):
        check_storable({"x": deep}, "params")
