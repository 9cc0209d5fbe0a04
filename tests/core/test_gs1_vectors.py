"""biip's own test vectors (tests/fixtures/gs1/, source and licence in its README): the valid ones
parse to biip's AI/value pairs, the invalid ones are refused with this project's exact message."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ebr_core.errors import IdentifierError
from ebr_core.identifiers import parse_scan

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "gs1" / "biip_vectors.json").read_text("utf-8")
)


@pytest.mark.parametrize("case", VECTORS["valid"], ids=lambda c: repr(c["scan"]))
def test_biip_valid_vector_parses_to_its_element_strings(case: dict[str, Any]) -> None:
    s = parse_scan(case["scan"])
    assert s.standard == "gs1"
    assert s.elements == case["elements"]


@pytest.mark.parametrize("case", VECTORS["invalid"], ids=lambda c: repr(c["scan"]))
def test_biip_invalid_vector_is_refused_with_its_message(case: dict[str, Any]) -> None:
    with pytest.raises(IdentifierError) as e:
        parse_scan(case["scan"])
    assert str(e.value) == case["error"]


def test_vectors_the_old_dropped_separator_check_refused_are_accepted() -> None:
    # Issue 17: biip's vectors for AI 8008 and 3912 were refused as "dropped separator".
    assert parse_scan("8008000102141516").elements == {"8008": "000102141516"}
    assert parse_scan("39127101230").elements == {"3912": "7101230"}


def test_the_8003_vector_is_refused_for_its_grai_check_digit() -> None:
    with pytest.raises(IdentifierError) as e:
        parse_scan("800307071324001022085952")
    assert str(e.value) == "GRAI (AI 8003) 07071324001022 check digit is 2, expected 1"
    assert parse_scan("800307071324001021085952").elements == {"8003": "07071324001021085952"}
