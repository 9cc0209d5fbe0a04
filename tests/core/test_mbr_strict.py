"""The master batch record is validated strictly: unknown keys, soft limits wider than the hard
ones and invalid UCUM units are refused, each naming the file, the path and what is expected."""

from __future__ import annotations

import copy
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ebr_core.document import load_yaml
from ebr_core.mbr import MbrError, parse_mbr
from ebr_core.ucum import MAX_LENGTH, METRIC, NON_METRIC, PREFIXES, UcumError, check_ucum, is_ucum

EXAMPLE = Path(__file__).resolve().parents[2] / "edge" / "examples" / "car_t_mbr.yaml"
CONTENT = load_yaml(EXAMPLE.read_text())
INSPECT = "procedure.unit_procedures[0].operations[0].phases[1]"


def phase(d: dict[str, Any], up: int, op: int, ph: int) -> dict[str, Any]:
    p: dict[str, Any] = d["procedure"]["unit_procedures"][up]["operations"][op]["phases"][ph]
    return p


def refusal(change: Any) -> str:
    d = copy.deepcopy(CONTENT)
    change(d)
    with pytest.raises(MbrError) as e:
        parse_mbr(d, "car_t_mbr.yaml")
    return str(e.value)


def test_a_misspelt_critical_is_refused_not_silently_dropped() -> None:
    assert parse_mbr(CONTENT).step("receipt/apheresis/coi-scan").critical

    def typo(d: dict[str, Any]) -> None:
        ph = phase(d, 0, 0, 0)
        ph["critcal"] = ph.pop("critical")

    assert refusal(typo) == (
        "car_t_mbr.yaml is not a valid master batch record: "
        "procedure.unit_procedures[0].operations[0].phases[0]: unknown key 'critcal' (did you "
        "mean 'critical'?); the allowed keys are id, name, instruction, scans, values, "
        "calculation, signature, critical [step receipt/apheresis/coi-scan]"
    )


@pytest.mark.parametrize(
    ("where", "path"),
    [
        (lambda d: d, "(top level)"),
        (lambda d: d["procedure"], "procedure"),
        (lambda d: d["procedure"]["unit_procedures"][1], "procedure.unit_procedures[1]"),
        (lambda d: d["dosing"], "dosing"),
        (lambda d: d["telemetry"]["ph"], "telemetry.ph"),
        (lambda d: phase(d, 1, 0, 0)["scans"][1], "procedure.unit_procedures[1].operations[0]"
         ".phases[0].scans[1]"),
        (lambda d: phase(d, 0, 0, 1)["values"][0]["limits"], f"{INSPECT}.values[0].limits"),
        (lambda d: phase(d, 0, 0, 1)["values"][0]["limits"]["hard"],
         f"{INSPECT}.values[0].limits.hard"),
    ],
)  # fmt: skip
def test_an_unknown_key_is_refused_at_every_level(where: Any, path: str) -> None:
    msg = refusal(lambda d: where(d).__setitem__("note", "x"))
    assert f": {path}: unknown key 'note'" in msg and "the allowed keys are" in msg


def test_soft_limits_wider_than_hard_are_refused_naming_the_bound() -> None:
    def wider(d: dict[str, Any]) -> None:
        phase(d, 0, 0, 1)["values"][0]["limits"]["soft"]["max"] = 600

    assert refusal(wider) == (
        f"car_t_mbr.yaml is not a valid master batch record: {INSPECT}.values[0].limits.soft: "
        "the soft limit 100–600 does not lie within the hard limit 50–500: soft max 600 is "
        "above hard max 500; expected soft limits within the hard limits "
        "[step receipt/apheresis/inspect, value apheresis_volume]"
    )


bound = st.none() | st.integers(-1000, 1000)


@given(hard_lo=bound, hard_hi=bound, soft_lo=bound, soft_hi=bound)
def test_any_soft_bound_outside_the_hard_limit_is_refused(
    hard_lo: int | None, hard_hi: int | None, soft_lo: int | None, soft_hi: int | None
) -> None:
    """The law: an MBR with both limits loads iff each soft bound lies within the hard range
    (and each limit has a bound, min <= max)."""

    def lim(lo: int | None, hi: int | None) -> dict[str, int]:
        return {k: v for k, v in (("min", lo), ("max", hi)) if v is not None}

    d = copy.deepcopy(CONTENT)
    phase(d, 0, 0, 1)["values"][0]["limits"] = {
        "hard": lim(hard_lo, hard_hi),
        "soft": lim(soft_lo, soft_hi),
    }

    def within(v: int | None) -> bool:
        return v is None or (
            (hard_lo is None or v >= hard_lo) and (hard_hi is None or v <= hard_hi)
        )

    def sound(lo: int | None, hi: int | None) -> bool:
        return (lo, hi) != (None, None) and (lo is None or hi is None or lo <= hi)

    valid = (
        sound(hard_lo, hard_hi) and sound(soft_lo, soft_hi) and within(soft_lo) and within(soft_hi)
    )
    if valid:
        spec = parse_mbr(d).step("receipt/apheresis/inspect").values[0]
        assert spec.soft is not None and spec.hard is not None
        assert spec.soft.min == (None if soft_lo is None else Decimal(soft_lo))
    else:
        with pytest.raises(MbrError, match=r"limits\.(hard|soft)"):
            parse_mbr(d)


@pytest.mark.parametrize(
    ("unit", "why"),
    [
        ("cel", "'cel' is not a UCUM unit"),
        ("ml/", "a '.' or '/' must stand between two units"),
        ("rpm", "'rpm' is not a UCUM unit"),
        ("kh", "'h' is not a metric unit and takes no prefix ('k')"),
        ("10 * 6/mL", "printable ASCII without spaces"),
    ],
)
def test_a_unit_that_is_not_ucum_is_refused(unit: str, why: str) -> None:
    def set_unit(d: dict[str, Any]) -> None:
        phase(d, 0, 0, 1)["values"][0]["unit"] = unit

    msg = refusal(set_unit)
    assert msg.startswith(
        f"car_t_mbr.yaml is not a valid master batch record: {INSPECT}.values[0].unit: "
    )
    assert why in msg
    telemetry = refusal(lambda d: d["telemetry"]["temperature"].__setitem__("unit", unit))
    assert ": telemetry.temperature.unit: " in telemetry and why in telemetry


def test_other_strict_rules() -> None:
    assert "critical: Input should be a valid boolean (got 'yes')" in refusal(
        lambda d: phase(d, 0, 0, 0).__setitem__("critical", "yes")
    )
    assert "limits.hard.min: True is not a decimal number" in refusal(
        lambda d: phase(d, 0, 0, 1)["values"][0]["limits"]["hard"].__setitem__("min", True)
    )
    assert "only a reagent scan names a material, not a cartridge scan" in refusal(
        lambda d: phase(d, 1, 0, 0)["scans"][0].__setitem__("material", "IL-2")
    )
    assert "cartridge_gtin: GTIN 09506000134377 has a wrong check digit" in refusal(
        lambda d: d.__setitem__("cartridge_gtin", "09506000134377")
    )
    assert "value 'apheresis_volume' is listed twice" in refusal(
        lambda d: phase(d, 0, 0, 1)["values"].append(phase(d, 0, 0, 1)["values"][0])
    )
    two = refusal(
        lambda d: (
            phase(d, 0, 0, 0).__setitem__("critcal", True),
            d["telemetry"]["ph"].__setitem__("unit", "ppm"),
        )
    )
    assert "(2 problems):\n  " in two and "'ppm' is not a UCUM unit" in two


@pytest.mark.parametrize(
    "code",
    ["Cel", "[pH]", "%", "mL", "10*6/mL", "/mL", "1", "d", "kg", "{copies}/{cell}", "[EU]/mL",
     "mmol/L", "ug/mL", "m2", "10^6/mL", "mL{bag}", "L/min", "mbar", "%{saturation}",
     "(m/s)", "m.s-2", "B[10.nV]", "[m/s2/Hz^(1/2)]", "dam", "10*-3", "s/(m.kg)"],
)  # fmt: skip
def test_ucum_codes_that_are_valid(code: str) -> None:
    check_ucum(code)


@pytest.mark.parametrize(
    "code",
    ["", "cel", "mL/", "foo", "Cel.", "rpm", "ppm", "kh", "/", "(m", "m)", "m{a{b}}", "0", "m0",
     "µL", "m L", "x" * 65],
)  # fmt: skip
def test_ucum_codes_that_are_not(code: str) -> None:
    assert not is_ucum(code)
    with pytest.raises(UcumError, match="UCUM"):
        check_ucum(code)


annotation = st.text(
    alphabet=[chr(c) for c in range(33, 127) if chr(c) not in "{}"], min_size=0, max_size=6
).map(lambda s: "{" + s + "}")
simple = st.sampled_from(sorted(METRIC | NON_METRIC)) | st.builds(
    str.__add__, st.sampled_from(sorted(PREFIXES)), st.sampled_from(sorted(METRIC))
)
exponent = st.just("") | st.from_regex(r"[+-]?[1-9][0-9]?", fullmatch=True)
component = (
    st.builds(lambda u, e, a: u + e + a, simple, exponent, st.just("") | annotation)
    | annotation
    | st.from_regex(r"[1-9][0-9]{0,3}", fullmatch=True)
)


@st.composite
def ucum_terms(draw: st.DrawFn, depth: int = 0) -> str:
    parts = draw(st.lists(component, min_size=1, max_size=3))
    if depth == 0 and draw(st.booleans()):
        parts.append("(" + draw(ucum_terms(depth=1)) + ")")
    ops = draw(st.lists(st.sampled_from("./"), min_size=len(parts), max_size=len(parts)))
    return "".join(op + p for op, p in zip(ops, parts, strict=True))[1:]


@given(term=ucum_terms(), leading=st.sampled_from(["", "/"]))
def test_any_code_the_ucum_grammar_builds_from_its_atoms_is_valid(term: str, leading: str) -> None:
    """The law: whatever the grammar (section 2 of UCUM) derives from the atom table is valid;
    the same code with a space or a non-ASCII character in it is not."""
    code = leading + term
    if len(code) > MAX_LENGTH:
        return
    check_ucum(code)
    assert not is_ucum(code + " ") and not is_ucum("µ" + code)
