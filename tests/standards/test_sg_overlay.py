"""The Singapore (HSA) overlay of the example specifications (docs/sg-hsa-overlay.md): what it
changes against the baseline and the other jurisdictions, and the MHRA–HSA corridor law (a
batch the UK releases, with the RCL result SG adds, is released in SG)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebr_core.document import load_yaml
from ebr_core.errors import SpecificationError
from ebr_core.spec import evaluate, parse_spec

EX = Path(__file__).resolve().parents[2] / "ebr_core" / "spec" / "examples"


def content(name: str = "cd19_commercial") -> dict[str, Any]:
    return load_yaml((EX / f"{name}.yaml").read_text())


def results() -> dict[str, Any]:
    return load_yaml((EX / "results_example.yaml").read_text())


def status(name: str, r: dict[str, Any], j: str) -> dict[str, str]:
    return {v.attribute: v.status for v in evaluate(parse_spec(content(name)), r, j).verdicts}


@pytest.mark.parametrize(
    ("name", "disposition"),
    [("cd19_commercial", "conditional"), ("cd19_poc_academic", "not_releasable")],
)
def test_every_example_specification_covers_the_four_jurisdictions(
    name: str, disposition: str
) -> None:
    s = parse_spec(content(name))
    assert sorted(s.overlays) == ["EU", "SG", "UK", "US"]
    assert {j: evaluate(s, results(), j).disposition for j in s.overlays} == dict.fromkeys(
        ["EU", "SG", "UK", "US"], disposition
    )


def test_sg_tightens_viability_as_the_uk_does() -> None:
    r = dict(results(), viability={"value": "75", "unit": "%", "method": "flow-7aad"})
    assert status("cd19_commercial", r, "SG")["viability"] == "fail"
    assert status("cd19_commercial", r, "UK")["viability"] == "fail"
    assert status("cd19_commercial", r, "US")["viability"] == "pass"


def test_sg_accepts_pharmacopoeial_methods_of_either_book() -> None:
    r = dict(results(), sterility={"value": "no growth", "method": "usp-71"},
             mycoplasma={"value": "not detected", "method": "usp-63"})  # fmt: skip
    sg, uk = status("cd19_commercial", r, "SG"), status("cd19_commercial", r, "UK")
    assert (sg["sterility"], sg["mycoplasma"]) == ("pass", "pass")
    assert (uk["sterility"], uk["mycoplasma"]) == ("fail", "fail")


def test_sg_requires_rcl_and_says_which_clause() -> None:
    ev = evaluate(parse_spec(content()), results(), "SG")
    rcl = next(v for v in ev.verdicts if v.attribute == "rcl")
    assert rcl.status == "pending" and "HSA" in rcl.clause
    assert "rcl" not in status("cd19_commercial", results(), "UK")


def test_an_sg_overlay_that_loosens_is_refused() -> None:
    c = copy.deepcopy(content())
    c["overlays"]["SG"]["tighten"]["viability"]["limit"]["min"] = "60"
    with pytest.raises(
        SpecificationError, match="overlay SG: viability: lower limit >= 60 % loosens"
    ):
        parse_spec(c)


VALUES = {
    "viability": st.sampled_from(["65", "75", "80", "95"]).map(
        lambda v: {"value": v, "unit": "%", "method": "flow-7aad"}
    ),
    "sterility": st.sampled_from(["ph-eur-2.6.27", "bact-alert", "usp-71"]).map(
        lambda m: {"value": "no growth", "method": m}
    ),
    "mycoplasma": st.sampled_from(["ph-eur-2.6.7-nat", "usp-63"]).map(
        lambda m: {"value": "not detected", "method": m}
    ),
    "endotoxin": st.sampled_from(["0.25", "4.9", "5", "7"]).map(
        lambda v: {"value": v, "unit": "{EU}/mL", "method": "ph-eur-2.6.14"}
    ),
    "vcn": st.sampled_from(["1.8", "6"]).map(
        lambda v: {"value": v, "unit": "{copies}/{cell}", "method": "qpcr-vcn"}
    ),
}


def test_the_corridor_has_releasable_cases() -> None:
    """The law below is not vacuous: such a batch exists, and both release it."""
    s = parse_spec(content())
    r = dict(results(), sterility={"value": "no growth", "method": "bact-alert"},
             vcn={"value": "1.8", "unit": "{copies}/{cell}", "method": "qpcr-vcn"},
             rcl={"value": "not detected", "method": "qpcr-vsvg"})  # fmt: skip
    assert evaluate(s, r, "UK").disposition == evaluate(s, r, "SG").disposition == "releasable"


@settings(max_examples=60, deadline=None)  # 150 took 15 s under coverage
@given(st.fixed_dictionaries(VALUES))
def test_the_mhra_hsa_corridor(changes: dict[str, Any]) -> None:
    """Results the UK releases, plus a passing RCL (which SG adds), are released in SG."""
    s = parse_spec(content())
    r = dict(results(), **changes, rcl={"value": "not detected", "method": "qpcr-vsvg"})
    if evaluate(s, r, "UK").disposition == "releasable":
        assert evaluate(s, r, "SG").disposition == "releasable"


@pytest.mark.parametrize(
    ("shelf_life", "message"),
    [
        ({"value": "9", "unit": "mo"}, "unit 'mo' is not one of d, wk, h"),
        ({"value": "36", "unit": "h"}, "36 h is not a positive whole number of days"),
        ({"value": "270"}, "give {value, unit}"),
        ({"value": "-1", "unit": "d"}, "-1 d is not a positive whole number of days"),
    ],
)
def test_shelf_life_is_whole_days(shelf_life: dict[str, str], message: str) -> None:
    c = dict(content(), shelf_life=shelf_life)
    with pytest.raises(SpecificationError, match=message.replace("{", r"\{").replace("}", r"\}")):
        parse_spec(c)
    assert (
        parse_spec(dict(content(), shelf_life={"value": "6", "unit": "wk"})).shelf_life_days == 42
    )
