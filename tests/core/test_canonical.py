"""Canonical bytes: orjson's fast path equals the stdlib definition; floats are refused."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ebr_core.canonical import canonical_checked, check_value, reference_canonical
from ebr_core.errors import CanonicalError, RecordFormatError
from ebr_core.quantity import parse_quantity, quantity

# JSON values as records hold them: no floats, 64-bit ints, any Unicode text except lone
# surrogates (which UTF-8 cannot encode).
text = st.text(st.characters(exclude_categories=("Cs",)), max_size=20)
json_values: st.SearchStrategy[Any] = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | text,
    lambda children: st.lists(children, max_size=5) | st.dictionaries(text, children, max_size=5),
    max_leaves=25,
)
json_objects = st.dictionaries(text, json_values, max_size=6)


@given(json_objects)
def test_orjson_bytes_equal_the_reference_encoder(obj: dict[str, Any]) -> None:
    assert canonical_checked(obj) == reference_canonical(obj)


@given(json_objects)
def test_canonical_round_trips(obj: dict[str, Any]) -> None:
    data = canonical_checked(obj)
    assert orjson.loads(data) == obj
    assert canonical_checked(orjson.loads(data)) == data


def test_canonical_form_is_sorted_and_compact() -> None:
    assert canonical_checked({"b": 1, "a": {"d": "µ", "c": None}}) == (
        '{"a":{"c":null,"d":"µ"},"b":1}'.encode()
    )


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"v": 87.5}, "$.v: float 87.5 is not allowed; expected a decimal string"),
        ({"a": [1, {"b": float("nan")}]}, "$.a[1].b: float nan is not allowed"),
        ({"big": 2**63}, "$.big: integer 9223372036854775808 is outside the signed 64-bit range"),
        ({"d": Decimal("1.5")}, "$.d: Decimal is not a JSON value"),
        ({1: "x"}, "$: key 1 is not a string"),
    ],
)
def test_non_canonical_values_are_refused_with_the_path(value: Any, message: str) -> None:
    with pytest.raises(CanonicalError) as e:
        check_value(value)
    assert str(e.value).startswith(message)


def test_quantity_is_exact_and_refuses_floats() -> None:
    assert quantity(Decimal("87.50"), "%") == {"value": "87.50", "unit": "%"}
    assert quantity("-3", "Cel") == {"value": "-3", "unit": "Cel"}
    assert parse_quantity({"value": "2.5", "unit": "10*6/mL"}) == (Decimal("2.5"), "10*6/mL")
    with pytest.raises(RecordFormatError, match="is a float"):
        quantity(87.5, "%")  # type: ignore[arg-type]
    with pytest.raises(RecordFormatError, match="is not a plain decimal"):
        quantity("1e3", "%")
    with pytest.raises(RecordFormatError, match="is not a UCUM code"):
        quantity("1", "per cent")
