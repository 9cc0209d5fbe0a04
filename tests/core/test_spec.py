"""Specifications: boundaries, units, pending vs missing, overlays that may only tighten."""

from __future__ import annotations

import copy
import subprocess
import sys
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebr_core.document import load_yaml
from ebr_core.errors import SpecificationError
from ebr_core.spec import (
    LooseningOverlayError,
    deviations_for,
    dose_range,
    endotoxin_limit,
    evaluate,
    inprocess_check,
    late_result_alerts,
    parse_spec,
    total_viable_car_cells,
)
from ebr_core.spec.model import Bound
from ebr_core.spec.units import convert

EX = Path(__file__).resolve().parents[2] / "ebr_core" / "spec" / "examples"


def content(name: str = "cd19_commercial") -> dict[str, Any]:
    return load_yaml((EX / f"{name}.yaml").read_text())


def results() -> dict[str, Any]:
    return load_yaml((EX / "results_example.yaml").read_text())


def tiny(limit: dict[str, str], unit: str = "%") -> dict[str, Any]:
    return {
        "spec_id": "T",
        "version": "1",
        "overlays": {"EU": {}},
        "attributes": {"a": {"unit": unit, "limit": limit}},
    }


@pytest.mark.parametrize(
    ("limit", "value", "status"),
    [
        ({"min": "70"}, "70", "pass"),
        ({"min": "70"}, "69.99", "fail"),
        ({"above": "70"}, "70", "fail"),
        ({"above": "70"}, "70.0001", "pass"),
        ({"max": "5"}, "5", "pass"),
        ({"max": "5"}, "5.01", "fail"),
        ({"below": "5"}, "5", "fail"),
        ({"below": "5"}, "4.999", "pass"),
        ({"min": "1", "max": "2"}, "1.5", "pass"),
        ({"min": "1", "max": "2"}, "2.0", "pass"),
    ],
)
def test_boundaries(limit: dict[str, str], value: str, status: str) -> None:
    s = parse_spec(tiny(limit))
    ev = evaluate(s, {"a": {"value": value, "unit": "%"}}, "EU")
    assert ev.verdicts[0].status == status
    assert ev.disposition == ("releasable" if status == "pass" else "not_releasable")


def test_unit_conversion_in_evaluation_and_units() -> None:
    s = parse_spec(tiny({"min": "1000000"}, "/mL"))
    ev = evaluate(s, {"a": {"value": "1000", "unit": "/uL"}}, "EU")
    assert ev.verdicts[0].status == "pass"
    assert ev.verdicts[0].explanation == "a: 1000 /uL (= 1000000 /mL) meets >= 1000000 /mL"
    assert evaluate(s, {"a": {"value": "999", "unit": "/uL"}}, "EU").verdicts[0].status == "fail"
    bad = evaluate(s, {"a": {"value": "1", "unit": "%"}}, "EU").verdicts[0]
    assert bad.status == "fail" and "cannot convert '%' (fraction) to '/mL'" in bad.explanation
    assert convert(Decimal("2.5"), "10*6/mL", "/uL") == Decimal("2500")


def test_pending_missing_conditional_incomplete() -> None:
    s = parse_spec(content())
    r = results()
    assert evaluate(s, r, "EU").disposition == "conditional"
    r2 = dict(r)
    del r2["potency"]
    ev = evaluate(s, r2, "EU")
    assert ev.disposition == "incomplete"
    assert {v.attribute: v.status for v in ev.verdicts}["potency"] == "missing"
    r3 = dict(r, viability={"status": "pending"})
    assert evaluate(s, r3, "EU").disposition == "incomplete"  # due before release


@pytest.mark.parametrize(
    ("spec", "jurisdiction", "disposition"),
    [
        ("cd19_commercial", "EU", "conditional"),
        ("cd19_commercial", "UK", "conditional"),
        ("cd19_commercial", "US", "conditional"),
        ("cd19_poc_academic", "EU", "not_releasable"),
        ("cd19_poc_academic", "UK", "not_releasable"),
        ("cd19_poc_academic", "US", "not_releasable"),
    ],
)
def test_every_jurisdiction_of_the_examples(spec: str, jurisdiction: str, disposition: str) -> None:
    ev = evaluate(parse_spec(content(spec)), results(), jurisdiction)
    assert ev.disposition == disposition
    if spec == "cd19_poc_academic":  # 2.0×10^6/kg against 0.8–1.2×10^6/kg
        assert [v.attribute for v in ev.failed()] == ["dose"]


def test_overlay_tightens_and_adds_with_its_clause() -> None:
    s = parse_spec(content())
    r = dict(results(), viability={"value": "75", "unit": "%", "method": "flow-7aad"})
    eu = evaluate(s, r, "EU")
    us = evaluate(s, r, "US")
    via_eu = next(v for v in eu.verdicts if v.attribute == "viability")
    assert (via_eu.status, via_eu.clause) == ("fail", "EU marketing authorisation 3.3")
    assert next(v for v in us.verdicts if v.attribute == "viability").status == "pass"
    assert "rcl" in {v.attribute for v in eu.verdicts}
    assert "rcl" not in {v.attribute for v in evaluate(s, r, "UK").verdicts}


def test_method_must_be_accepted_in_the_jurisdiction() -> None:
    s = parse_spec(content())
    r = dict(results(), sterility={"value": "no growth", "method": "usp-71"})
    eu = {v.attribute: v for v in evaluate(s, r, "EU").verdicts}["sterility"]
    assert eu.status == "fail"
    assert eu.explanation == (
        "Sterility: method 'usp-71' is not accepted in EU; accepted: ph-eur-2.6.27, bact-alert"
    )
    us = {v.attribute: v for v in evaluate(s, r, "US").verdicts}["sterility"]
    assert us.status == "pass"


@pytest.mark.parametrize(
    ("overlay", "message"),
    [
        (
            {"tighten": {"viability": {"limit": {"min": "60"}}}},
            "overlay EU: viability: lower limit >= 60 % loosens the baseline >= 70 %",
        ),
        (
            {"tighten": {"endotoxin": {"limit": {"max": "5"}}}},
            "overlay EU: endotoxin: upper limit <= 5 {EU}/mL loosens the baseline < 5 {EU}/mL",
        ),
        (
            {"tighten": {"sterility": {"accepted": ["no growth", "growth"]}}},
            "overlay EU: sterility: accepted results ['growth'] are not accepted by the baseline",
        ),
        (
            {"tighten": {"viability": {"timing": "after_release"}}},
            "overlay EU: viability: moving the result from before to after release loosens",
        ),
        (
            {"methods": {"viability": ["eyeballing"]}},
            "overlay EU: viability methods ['eyeballing'] are not accepted by the baseline",
        ),
    ],
)
def test_loosening_overlays_are_refused(overlay: dict[str, Any], message: str) -> None:
    c = content()
    c["overlays"]["EU"] = overlay
    with pytest.raises(LooseningOverlayError) as e:
        parse_spec(c)
    assert str(e.value).startswith(message)


def test_unknown_jurisdiction_and_bad_documents() -> None:
    s = parse_spec(content())
    with pytest.raises(
        SpecificationError, match="has no overlay for jurisdiction 'JP'; it covers EU, SG, UK, US"
    ):
        evaluate(s, results(), "JP")
    with pytest.raises(SpecificationError, match="the limit admits no value"):
        parse_spec(tiny({"min": "5", "below": "5"}))
    with pytest.raises(SpecificationError, match="unit 'furlong' is not a UCUM unit"):
        parse_spec(tiny({"min": "1"}, "furlong"))


bounds = st.decimals(min_value=0, max_value=1000, places=2, allow_nan=False)


@settings(max_examples=200, deadline=None)
@given(
    base=bounds,
    delta=st.decimals(min_value=0, max_value=100, places=2),
    value=bounds,
    strict=st.booleans(),
)
def test_tightening_never_turns_a_failing_batch_into_a_passing_one(
    base: Decimal, delta: Decimal, value: Decimal, strict: bool
) -> None:
    c = tiny({"min": str(base)})
    loose = evaluate(parse_spec(c), {"a": {"value": str(value), "unit": "%"}}, "EU")
    c["overlays"]["EU"] = {
        "tighten": {"a": {"limit": {("above" if strict else "min"): str(base + delta)}}}
    }
    tight = evaluate(parse_spec(c), {"a": {"value": str(value), "unit": "%"}}, "EU")
    if loose.disposition == "not_releasable":
        assert tight.disposition == "not_releasable"


@settings(max_examples=200, deadline=None)
@given(
    base=bounds, delta=st.decimals(min_value="0.01", max_value=100, places=2), upper=st.booleans()
)
def test_a_loosening_overlay_is_always_refused(base: Decimal, delta: Decimal, upper: bool) -> None:
    key = "max" if upper else "min"
    c = tiny({key: str(base + 200)}) if upper else tiny({key: str(base)})
    new = base + 200 + delta if upper else base - delta
    c["overlays"]["EU"] = {"tighten": {"a": {"limit": {key: str(new)}}}}
    with pytest.raises(LooseningOverlayError):
        parse_spec(c)


def test_calculators() -> None:
    assert endotoxin_limit(Decimal("1")) == Decimal(5)
    assert endotoxin_limit(Decimal("10"), Decimal("0.2")) == Decimal("0.02")
    assert total_viable_car_cells(Decimal("25000000"), Decimal("60"), Decimal("40")) == Decimal(
        "600000000"
    )
    s = parse_spec(content())
    assert dose_range(s.dose_bands, Decimal("50")) == (Decimal("1.0E+7"), Decimal("2.5E+8"), 1)
    assert dose_range(s.dose_bands, Decimal("50.1"))[2] == 2
    lo, hi, band = dose_range(s.dose_bands, Decimal("20"))
    assert (lo, hi, band) == (Decimal("4000000"), Decimal("100000000"), 1)


def test_inprocess_check_is_exact_at_the_boundary() -> None:
    vals = ["36.5", "37.0", "38.0", "38.01", "35.99"]
    r = inprocess_check(vals, Bound(Decimal("36.0"), True), Bound(Decimal("38.0"), True))
    assert (r.count, r.below, r.above, r.first_breach) == (5, 1, 1, 3)
    r2 = inprocess_check(vals, Bound(Decimal("36.5"), False), None)
    assert (r2.below, r2.first_breach) == (2, 0)
    long = ["1.0000000000000001", "1.0000000000000000"]  # 17 digits: the Decimal path
    assert inprocess_check(long, None, Bound(Decimal("1"), True)).above == 1


def test_deviations_and_late_result_alerts() -> None:
    s = parse_spec(content())
    r = dict(results(), sterility={"value": "growth", "method": "bact-alert"})
    ev = evaluate(s, r, "EU")
    drafts = deviations_for(ev)
    assert [d.attribute for d in drafts] == ["sterility"]
    assert drafts[0].reason.startswith("OOS in EU: Sterility: 'growth' is not an accepted result")
    alerts = late_result_alerts("released", ev)
    assert len(alerts) == 1 and "inform the infusion site" in alerts[0].message
    assert late_result_alerts("rejected", ev) == []
    assert len(ev.hash()) == 64 and ev.hash() != evaluate(s, results(), "EU").hash()


def test_spec_cli(tmp_path: Path) -> None:
    def run(*a: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "ctgtp", *a], capture_output=True, text=True, check=False
        )

    r = run(
        "spec",
        "evaluate",
        str(EX / "cd19_commercial.yaml"),
        str(EX / "results_example.yaml"),
        "--jurisdiction",
        "EU",
    )
    assert r.returncode == 0 and r.stdout.startswith("CD19-COMMERCIAL v3 in EU: conditional")
    assert run("keys", "new", "qa.approver", "--out", str(tmp_path)).returncode == 0
    out = tmp_path / "spec.signed.json"
    p = run(
        "spec",
        "publish",
        str(EX / "cd19_commercial.yaml"),
        "--key",
        str(tmp_path / "qa.approver.key"),
        "--signer",
        "qa.approver",
        "--out",
        str(out),
    )
    assert p.returncode == 0, p.stderr
    ok = run("spec", "check", str(out), "--publisher-key", str(tmp_path / "qa.approver.pub"))
    assert ok.returncode == 0 and "OK CD19-COMMERCIAL v3" in ok.stdout
    bad = copy.deepcopy(load_yaml((EX / "cd19_commercial.yaml").read_text()))
    bad["overlays"]["EU"]["tighten"]["viability"]["limit"]["min"] = "50"
    import yaml

    f = tmp_path / "loose.yaml"
    f.write_text(yaml.safe_dump(bad))
    r = run("spec", "check", str(f))
    assert r.returncode == 1 and "loosens the baseline >= 70 %" in r.stderr
