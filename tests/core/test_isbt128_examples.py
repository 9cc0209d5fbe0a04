"""The examples in tests/fixtures/isbt128/ (sources in its README) parse to what they say."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from ebr_core.isbt128 import parse_isbt128

EXAMPLES = json.loads(
    (Path(__file__).parents[1] / "fixtures" / "isbt128" / "examples.json").read_text("utf-8")
)


@pytest.mark.parametrize("example", EXAMPLES, ids=[e["name"] for e in EXAMPLES])
def test_example(example: dict[str, Any]) -> None:
    assert example["source"].startswith(("ST-001 ", "ST-017 ", "constructed"))
    out = parse_isbt128(example["text"]).to_json()
    assert {k: out[k] for k in example["expect"]} == example["expect"]
