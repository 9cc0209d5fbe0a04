"""The master batch record's units (issue 23, alongside the labels): version 4 of the example
CAR-T MBR writes counts as UCUM annotations (``{cells}/mL``, ``10*6{cells}/mL``, ``{TU}/{cell}``,
``{samples}``), as the v3 specifications do; version 3 stays as published, because batches made
under it keep it.  Every unit is UCUM by the project's validator at load and by ``ucumvert``'s
parser, and shows without braces.  (It sits beside the label tests only for file ownership;
``tests/standards/test_ucum.py`` is its natural home.)"""

from __future__ import annotations

import copy
import hashlib
from pathlib import Path
from typing import Any

import pytest

from ebr_core.document import content_hash, load_yaml
from ebr_core.mbr import MbrError, parse_mbr
from ebr_core.ucum import check_ucum
from ebr_core.units_display import display_unit

ucumvert = pytest.importorskip("ucumvert")

EX = Path(__file__).resolve().parents[2] / "edge" / "examples"
V3, V4 = EX / "car_t_mbr.yaml", EX / "car_t_mbr_v4.yaml"
# A count written without saying what it counts: what v4 must no longer write.
BARE_COUNTS = {"1", "/mL", "10*6/mL", "/kg", "10*6/kg"}


def values(content: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out = {}
    for up in content["procedure"]["unit_procedures"]:
        for op in up["operations"]:
            for ph in op["phases"]:
                for v in ph.get("values", []):
                    out[v["name"]] = v
    return out


def units(content: dict[str, Any]) -> list[str]:
    return [v["unit"] for v in values(content).values()] + [
        t["unit"] for t in content.get("telemetry", {}).values()
    ]


def test_v4_writes_counts_as_ucum_annotations_and_every_unit_is_ucum() -> None:
    content = load_yaml(V4.read_text())
    mbr = parse_mbr(content, V4.name)  # the MBR validator checks every unit at load
    assert (mbr.mbr_id, mbr.version) == ("CAR-T-CARTRIDGE", "4")
    parser = ucumvert.get_ucum_parser()
    for u in units(content):
        check_ucum(u)
        parser.parse(u)
        assert not set(display_unit(u)) & set("{}[]*"), u
    assert not BARE_COUNTS & set(units(content))
    got = {n: v["unit"] for n, v in values(content).items()}
    assert got["viable_cell_density"] == "10*6{cells}/mL"
    assert got["viable_per_ml"] == "{cells}/mL"
    assert got["moi"] == "{TU}/{cell}"
    assert got["qc_samples_taken"] == "{samples}"
    assert display_unit(got["viable_cell_density"]) == "× 10⁶ cells/mL"


def test_v4_changes_only_the_units_of_v3() -> None:
    v3, v4 = load_yaml(V3.read_text()), load_yaml(V4.read_text())

    def without_units(c: dict[str, Any]) -> Any:
        c = copy.deepcopy(c)
        c.pop("version")
        for v in values(c).values():
            v.pop("unit")
        return c

    assert without_units(v3) == without_units(v4)
    changed = {n for n, v in values(v3).items() if v["unit"] != values(v4)[n]["unit"]}
    assert changed == {"viable_cell_density", "viable_per_ml", "moi", "qc_samples_taken"}


def test_the_published_v3_is_not_edited_in_place() -> None:
    """Batches made under v3 keep it: its version, its units and its content hash stay."""
    v3 = load_yaml(V3.read_text())
    assert v3["version"] == "3"
    assert values(v3)["viable_cell_density"]["unit"] == "10*6/mL"
    assert content_hash(v3) != content_hash(load_yaml(V4.read_text()))
    assert hashlib.sha256(V3.read_bytes()).hexdigest() != hashlib.sha256(V4.read_bytes()).hexdigest()


def test_a_unit_that_is_not_ucum_is_refused_at_load_naming_it() -> None:
    bad = V4.read_text().replace('unit: "{cells}/mL"', 'unit: "cells/mL"')
    with pytest.raises(MbrError, match=r"values\[0\]\.unit: .*cells/mL"):
        parse_mbr(load_yaml(bad), V4.name)

