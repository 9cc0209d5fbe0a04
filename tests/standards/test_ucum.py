"""UCUM: the project's validator against UCUM's own material, the example specifications' units,
the v3 migration (results in the old units still evaluate), and the display names.

UCUM's table of example codes and ``ucum-essence.xml`` are read from the ``ucumvert`` package,
which ships copies of both (its ``vendor/`` folder, UCUM 2.2 and table version 1.5); ``ucumvert``'s
parser is the second opinion on generated codes.
"""

from __future__ import annotations

import copy
import csv
import re
import xml.etree.ElementTree as ET
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebr_core.document import load_yaml
from ebr_core.errors import SpecificationError
from ebr_core.spec import evaluate, parse_spec
from ebr_core.spec.units import convert, legacy_note
from ebr_core.ucum import METRIC, NON_METRIC, PREFIXES, UcumError, check_ucum, is_ucum
from ebr_core.units_display import display_quantity, display_unit

ucumvert = pytest.importorskip("ucumvert")

EX = Path(__file__).resolve().parents[2] / "ebr_core" / "spec" / "examples"
VENDOR = resources.files("ucumvert") / "vendor"
NS = {"u": "http://unitsofmeasure.org/ucum-essence"}
# In UCUM's example table but not a UCUM code: the table's own note says so ("Torr" is not in
# ucum-essence.xml; mm[Hg] is).
NOT_IN_ESSENCE = {"Torr"}


def example_codes() -> list[str]:
    with (VENDOR / "ucum_examples.tsv").open() as f:
        rows = list(csv.reader(f, delimiter="\t"))
    assert rows[0][1] == "UCUM_CODE"
    return [r[1] for r in rows[1:] if r[1]]


def test_every_code_of_ucums_example_table_is_valid() -> None:
    codes = example_codes()
    assert len(codes) > 800
    refused = {c for c in codes if not is_ucum(c)}
    assert refused == NOT_IN_ESSENCE


def test_the_atom_tables_are_ucum_essences() -> None:
    root = ET.parse(str(VENDOR / "ucum-essence.xml")).getroot()
    assert root.get("version") == "2.2"
    base = {b.get("Code") for b in root.findall("u:base-unit", NS)}
    units = root.findall("u:unit", NS)
    assert {u.get("Code") for u in units if u.get("isMetric") == "yes"} | base == METRIC
    assert {u.get("Code") for u in units if u.get("isMetric") != "yes"} == NON_METRIC
    assert {p.get("Code") for p in root.findall("u:prefix", NS)} == PREFIXES
    ehrlich = next(u for u in units if u.get("Code") == "[EU]")
    assert ehrlich.findtext("u:name", namespaces=NS) == "Ehrlich unit"  # why endotoxin is {EU}


@pytest.mark.parametrize(
    ("code", "message"),
    [
        ("cel", "'cel' is not a UCUM unit (case matters"),
        ("m/", "a '.' or '/' must stand between two units"),
        ("k%", "'%' is not a metric unit and takes no prefix ('k')"),
        ("{a{b}}", "'{' inside an annotation"),
        ("(m", "')' is missing"),
        ("cells/mL", "'cells' is not a UCUM unit"),  # EU/mL is valid: exa-enzyme units!
    ],
)
def test_refusals_name_the_wrong_part(code: str, message: str) -> None:
    with pytest.raises(UcumError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_ucum(code)


# Two annotations in a row, or a factor with an exponent: outside UCUM's grammar (section 2).
LENIENT = re.compile(r"\}\{|(?:^|[./(])[0-9]+[+-][0-9]")
PARSER = ucumvert.get_ucum_parser()  # built once: building it takes about half a second
ATOMS = ["m", "g", "L", "mL", "kg", "Cel", "[pH]", "%", "10*", "h", "min", "[iU]", "U", "ug",
         "mm[Hg]", "dam", "[ppm]", "s", "mol", "Ms"]  # fmt: skip
PIECES = [*ATOMS, "{cells}", "{EU}", "{}", "1", "10", "0", "2", "-2", "+3", ".", "/", "(", ")"]


@settings(max_examples=600, deadline=None)
@given(st.lists(st.sampled_from(PIECES), min_size=1, max_size=6).map("".join))
def test_agrees_with_ucumvert_except_where_ucumvert_is_lenient(code: str) -> None:
    """Where the two differ, ucumvert accepts what UCUM's grammar does not: two annotations in a
    row, or an exponent on a factor (``10+3``); this module never accepts what ucumvert refuses."""
    ours = is_ucum(code)
    try:
        PARSER.parse(code)
        theirs = True
    except Exception:
        theirs = False
    if ours != theirs:
        assert theirs and not ours, code
        with pytest.raises(UcumError):
            check_ucum(code)
        lenient = LENIENT.search(code)
        assert lenient, code


def spec(name: str) -> dict[str, Any]:
    return load_yaml((EX / f"{name}.yaml").read_text())


def units_of(content: dict[str, Any]) -> list[str]:
    out = [a["unit"] for a in content["attributes"].values() if "unit" in a]
    for ov in content["overlays"].values():
        for a in ((ov or {}).get("add") or {}).values():
            out += [a["unit"]] if "unit" in a else []
        for t in ((ov or {}).get("tighten") or {}).values():
            out += [t["unit"]] if "unit" in t else []
    for band in (content.get("dosing") or {}).get("bands", []):
        out += [band[k]["unit"] for k in ("per_kg", "total") if k in band and "unit" in band[k]]
    return out


@pytest.mark.parametrize("name", ["cd19_commercial", "cd19_poc_academic"])
def test_example_specifications_write_ucum_as_ucum_means_it(name: str) -> None:
    units = units_of(spec(name))
    for u in units:
        check_ucum(u)
        assert legacy_note(u) is None, u  # no Ehrlich unit standing for endotoxin
    assert "{EU}/mL" in units and "10*6{cells}/kg" in units and "{cells}" in units


def test_a_spec_refuses_a_unit_that_is_not_ucum_at_load() -> None:
    bad = copy.deepcopy(spec("cd19_commercial"))
    bad["attributes"]["potency"]["unit"] = "pg/ml"
    with pytest.raises(SpecificationError, match="attribute potency: unit 'pg/ml' is not a UCUM"):
        parse_spec(bad)
    bad = copy.deepcopy(spec("cd19_commercial"))
    bad["attributes"]["dose"]["unit"] = "%"
    with pytest.raises(SpecificationError, match=r"a dose is a number of cells .* not '%'"):
        parse_spec(bad)
    bad = copy.deepcopy(spec("cd19_commercial"))
    bad["dosing"]["bands"][0]["per_kg"]["unit"] = "10*6{cells}/mL"
    with pytest.raises(SpecificationError, match="dosing band 1 per_kg: cannot convert"):
        parse_spec(bad)
    bad = copy.deepcopy(spec("cd19_commercial"))
    bad["attributes"]["appearance"]["unit"] = "furlong"
    with pytest.raises(SpecificationError, match="attribute appearance: 'furlong' is not a UCUM"):
        parse_spec(bad)


def old_units(results: dict[str, Any]) -> dict[str, Any]:
    """The same results as v2-era records wrote them: endotoxin in [EU]/mL, the dose in 1."""
    r = copy.deepcopy(results)
    r["endotoxin"]["unit"] = "[EU]/mL"
    r["dose"]["unit"] = "1"
    return r


@pytest.mark.parametrize("name", ["cd19_commercial", "cd19_poc_academic"])
def test_results_in_the_old_units_evaluate_as_in_the_new(name: str) -> None:
    s = parse_spec(spec(name))
    new = load_yaml((EX / "results_example.yaml").read_text())
    for j in s.overlays:
        a, b = evaluate(s, new, j), evaluate(s, old_units(new), j)
        assert a.disposition == b.disposition
        assert [(v.attribute, v.status) for v in a.verdicts] == [
            (v.attribute, v.status) for v in b.verdicts
        ]
    # and a failing endotoxin result in the old unit still fails
    r = old_units(new)
    r["endotoxin"]["value"] = "7"
    ev = evaluate(s, r, "EU")
    assert {v.attribute: v.status for v in ev.verdicts}["endotoxin"] == "fail"


def test_the_new_spec_judges_doses_as_the_old_one_did() -> None:
    """v2's bands were bare cells and cells/kg; v3 writes 10*6{cells}: same limits."""
    v3 = parse_spec(spec("cd19_commercial"))
    v2_content = copy.deepcopy(spec("cd19_commercial"))
    v2_content["dosing"]["bands"] = [
        {"max_weight_kg": "50", "per_kg": {"min": "200000", "max": "5000000"}},
        {"above_weight_kg": "50", "total": {"min": "10000000", "max": "250000000"}},
    ]
    v2 = parse_spec(v2_content)
    assert v2.dose_bands == v3.dose_bands


@settings(max_examples=80, deadline=None)  # 200 took 16 s under coverage
@given(
    cells=st.integers(min_value=0, max_value=400_000_000),
    weight=st.decimals(min_value=3, max_value=150, places=1),
)
def test_a_dose_in_1_cells_or_millions_of_cells_is_the_same_dose(cells: int, weight: Any) -> None:
    s = parse_spec(spec("cd19_commercial"))
    base = load_yaml((EX / "results_example.yaml").read_text())
    base["patient_weight"] = {"value": str(weight), "unit": "kg"}
    statuses = set()
    for value, unit in ((str(cells), "1"), (str(cells), "{cells}"),
                        (str(Decimal(cells) / 10**6), "10*6{cells}")):  # fmt: skip
        r = dict(base, dose={"value": value, "unit": unit})
        statuses.add({v.attribute: v.status for v in evaluate(s, r, "EU").verdicts}["dose"])
    assert len(statuses) == 1


def test_annotations_are_unity_but_endotoxin_is_not_cells() -> None:
    assert convert(Decimal(5), "{cells}/mL", "/mL") == 5
    assert convert(Decimal(2), "10*6{cells}/kg", "/kg") == 2_000_000
    assert convert(Decimal(3), "[EU]/mL", "{EU}/mL") == 3
    with pytest.raises(SpecificationError, match=r"cannot convert '\{EU\}/mL' \(endotoxin/volume"):
        convert(Decimal(1), "{EU}/mL", "{cells}/mL")
    assert legacy_note("[EU]/mL") is not None and "Ehrlich" in str(legacy_note("[EU]/mL"))


@pytest.mark.parametrize(
    ("value", "code", "shown"),
    [
        ("36.9", "Cel", "36.9 °C"),
        ("2.0", "10*6{cells}/kg", "2.0 × 10⁶ cells/kg"),
        ("0.25", "{EU}/mL", "0.25 EU/mL"),
        ("0.25", "[EU]/mL", "0.25 EU/mL"),
        ("1.8", "{copies}/{cell}", "1.8 copies/cell"),
        ("7.20", "[pH]", "pH 7.20"),
        ("145000000", "1", "145000000"),
        ("145000000", "{cells}", "145000000 cells"),
        ("1200000", "{cells}/mL", "1200000 cells/mL"),
        ("4.1", "10*9/L", "4.1 × 10⁹/L"),
        ("12", "ug/mL", "12 µg/mL"),
    ],
)
def test_display_names(value: str, code: str, shown: str) -> None:
    assert display_quantity(value, code) == shown


def test_every_unit_of_the_examples_has_a_display_name_without_braces() -> None:
    for name in ("cd19_commercial", "cd19_poc_academic"):
        for u in units_of(spec(name)):
            assert not set(display_unit(u)) & set("{}[]*"), u


def test_a_result_in_a_unit_that_is_not_ucum_fails_naming_it() -> None:
    s = parse_spec(spec("cd19_commercial"))
    r = load_yaml((EX / "results_example.yaml").read_text())
    r["potency"]["unit"] = "pg/ml"
    v = {x.attribute: x for x in evaluate(s, r, "EU").verdicts}["potency"]
    assert v.status == "fail" and "unit 'pg/ml' is not a UCUM unit" in v.explanation


def test_a_v2_specification_still_loads_and_explains_itself_as_before() -> None:
    """Stored v2 specifications ([EU]/mL, dose in 1, bare bands) load, and their evaluation text,
    which QA signatures are bound to through the evaluation hash, is as it was."""
    v2 = copy.deepcopy(spec("cd19_commercial"))
    v2["version"] = "2"
    v2["attributes"]["endotoxin"]["unit"] = "[EU]/mL"
    v2["attributes"]["dose"]["unit"] = "1"
    v2["dosing"]["bands"] = [
        {"max_weight_kg": "50", "per_kg": {"min": "200000", "max": "5000000"}},
        {"above_weight_kg": "50", "total": {"min": "10000000", "max": "250000000"}},
    ]
    r = old_units(load_yaml((EX / "results_example.yaml").read_text()))
    evaluation = evaluate(parse_spec(v2), r, "EU")
    # The hash the code before the UCUM change (commit aed7678) gave the shipped v2 spec and
    # example results: a QA signature bound to it still applies.
    assert evaluation.hash() == "f9714e49b1a657a577fd24a1f6c7557ca3edc4962936e304ed15481f6845627e"
    ev = {v.attribute: v for v in evaluation.verdicts}
    assert ev["endotoxin"].explanation == "Bacterial endotoxins: 0.25 [EU]/mL meets < 5 [EU]/mL"
    assert ev["dose"].limit == "10000000–250000000 cells (band 2, 72.5 kg)"
