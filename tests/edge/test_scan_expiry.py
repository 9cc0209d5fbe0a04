"""Expiry and use-by dates are checked at scan time against the unit's clock (issue 17, item 6):
GS1 AI 17, 15 and 12 (DD = 00 is the month's last day) and the ISBT 128 expiration date, for
every scan role; an expired item is a hard stop like a quarantined lot.  And the fill step takes
the product bag's own printed DataMatrix (issue 17)."""

from __future__ import annotations

import re
from datetime import date, datetime

import pytest

import edge.engine
from ebr_core.identifiers import ScanData
from edge.engine import Engine, ScanRejected, gs1_date

from .conftest import COI, GS, PW
from .test_engine import record_dose_inputs

# The unit's clock (tests/edge/conftest.py) reads 2026-11-24.
TAIL = ". Recorded as a rejected scan with a deviation; the step does not advance."


def sign(e: Engine, user: str, meaning: str = "performed") -> None:
    e.sign("B1", PW[user], meaning, user)


def refused(e: Engine, raw: str) -> str:
    with pytest.raises(ScanRejected) as exc:
        e.scan("B1", raw, "op.alice")
    return str(exc.value)


@pytest.mark.parametrize(
    ("ai", "what"), [("17", "expiry date"), ("15", "best-before date"), ("12", "due date")]
)
def test_a_passed_gs1_date_refuses_the_scan_and_is_recorded(
    started: Engine, ai: str, what: str
) -> None:
    before = started.ledger.head[0]
    assert refused(started, f"{ai}261123251{COI}") == (
        f"scan refused for patient material: {what} (AI {ai}) 261123 is 2026-11-23, which has "
        f"passed; the unit's date is 2026-11-24{TAIL}"
    )
    st = started.state("B1")
    assert started.ledger.head[0] == before + 2
    assert not st.scans_accepted
    [rej] = st.scans_rejected
    assert rej["raw"] == f"{ai}261123251{COI}"
    assert rej["reason"].startswith(f"{what} (AI {ai}) 261123 is 2026-11-23")
    dev = st.deviations["DEV-B1-001"]
    assert (dev.category, dev.severity) == ("scan_mismatch", "major")
    assert dev.reason == rej["reason"]
    assert started.expectation("B1").scans[0].role == "patient_material"  # did not advance


@pytest.mark.parametrize("ai", ["17", "15", "12"])
def test_the_date_itself_is_still_usable(started: Engine, ai: str) -> None:
    assert str(started.scan("B1", f"{ai}261124251{COI}", "op.alice")) == "patient material accepted"


def test_day_00_is_the_last_day_of_the_month(started: Engine) -> None:
    assert refused(started, f"17261000251{COI}") == (
        "scan refused for patient material: expiry date (AI 17) 261000 is 2026-10-31, which has "
        f"passed; the unit's date is 2026-11-24{TAIL}"
    )
    # 261100 is 2026-11-30, not 2026-11-00 nor 2026-11-01: still in date on 2026-11-24
    assert str(started.scan("B1", f"17261100251{COI}", "op.alice")) == "patient material accepted"
    [acc] = started.state("B1").scans_accepted
    assert acc["identifiers"]["expiry"] == "2026-11-30"


def test_gs1_dates_centuries_and_day_00() -> None:
    today = date(2026, 11, 24)
    assert gs1_date("261100", today) == date(2026, 11, 30)
    assert gs1_date("240200", today) == date(2024, 2, 29)  # leap year
    assert gs1_date("270200", today) == date(2027, 2, 28)
    assert gs1_date("761231", today) == date(2076, 12, 31)  # 50 years ahead: this century
    assert gs1_date("771231", today) == date(1977, 12, 31)  # 51 ahead: the previous one
    assert gs1_date("991231", date(2060, 1, 1)) == date(2099, 12, 31)
    assert gs1_date("050101", date(2098, 6, 1)) == date(2105, 1, 1)  # 50 back: the next one
    assert gs1_date("261301", today) is None
    assert gs1_date("260231", today) is None
    assert gs1_date("2611", today) is None


def isbt(monkeypatch: pytest.MonkeyPatch, **kw: object) -> None:
    """The ISBT 128 parser (ebr_core.identifiers) gives the expiration date in ScanData.expiry."""
    data = ScanData(standard="isbt128", symbology="]C0", coi=COI, **kw)  # type: ignore[arg-type]
    monkeypatch.setattr(edge.engine, "parse_scan", lambda raw, gs_substitutes="": data)


def test_isbt_expiration_date_refuses_the_scan(
    started: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    isbt(monkeypatch, expiry=date(2026, 11, 23))
    assert refused(started, COI) == (
        "scan refused for patient material: ISBT 128 expiration date 2026-11-23 has passed; the "
        f"unit's date is 2026-11-24{TAIL}"
    )
    st = started.state("B1")
    assert len(st.scans_rejected) == 1 and "DEV-B1-001" in st.deviations
    assert started.expectation("B1").scans[0].role == "patient_material"


def test_isbt_expiration_time_on_the_day(started: Engine, monkeypatch: pytest.MonkeyPatch) -> None:
    # the unit's clock reads a few minutes past 08:00 on 2026-11-24
    isbt(monkeypatch, expiry=date(2026, 11, 24), expiry_time=datetime(2026, 11, 24, 7, 59))
    assert re.fullmatch(
        "scan refused for patient material: ISBT 128 expiration date and time 2026-11-24T07:59 "
        r"has passed; the unit's time is 2026-11-24T08:0\d" + re.escape(TAIL),
        refused(started, COI),
    )
    isbt(monkeypatch, expiry=date(2026, 11, 24), expiry_time=datetime(2026, 11, 24, 23, 59))
    assert str(started.scan("B1", COI, "op.alice")) == "patient material accepted"


def test_isbt_expiration_date_ahead_is_accepted(
    started: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    isbt(monkeypatch, expiry=date(2026, 12, 31))
    assert str(started.scan("B1", COI, "op.alice")) == "patient material accepted"


def receipt(e: Engine) -> None:
    e.scan("B1", COI, "op.alice")
    sign(e, "op.alice")
    sign(e, "op.bob", "verified")
    e.record_value("B1", "apheresis_volume", "200", "mL", "op.alice")
    sign(e, "op.alice")


def test_every_role_refuses_an_expired_label(started: Engine) -> None:
    receipt(started)
    assert refused(started, "010950600013437617261123" + "21CART-0001") == (
        "scan refused for cartridge: expiry date (AI 17) 261123 is 2026-11-23, which has passed; "
        f"the unit's date is 2026-11-24{TAIL}"
    )
    started.scan("B1", "010950600013437617271231" + "21CART-0001", "op.alice")
    assert refused(started, "172610008004UNIT-0001") == (
        "scan refused for equipment: expiry date (AI 17) 261000 is 2026-10-31, which has passed; "
        f"the unit's date is 2026-11-24{TAIL}"
    )
    started.scan("B1", "8004UNIT-0001", "op.alice")
    sign(started, "op.alice")
    assert refused(started, "01095060001343521526100010TM2611") == (
        "scan refused for reagent: best-before date (AI 15) 261000 is 2026-10-31, which has "
        f"passed; the unit's date is 2026-11-24{TAIL}"
    )
    started.scan("B1", "01095060001343521727013110TM2611", "op.alice")
    st = started.state("B1")
    assert [r["role"] for r in st.scans_rejected] == ["cartridge", "equipment", "reagent"]
    assert len(st.deviations) == 3
    assert all(d.severity == "major" for d in st.deviations.values())


def to_fill(e: Engine) -> None:
    receipt(e)
    e.scan("B1", "010950600013437617271231" + "21CART-0001", "op.alice")
    e.scan("B1", "8004UNIT-0001", "op.alice")
    sign(e, "op.alice")
    e.scan("B1", "010950600013435210TM2611", "op.alice")
    e.scan("B1", "010950600013436910IL2-0042", "op.alice")
    sign(e, "op.alice")
    e.scan("B1", "010950600013438310ACT-7731", "op.alice")
    e.scan("B1", COI, "op.alice")
    sign(e, "op.alice")
    sign(e, "op.chen", "verified")
    e.scan("B1", "010950600013439010LV-19-0007", "op.alice")
    e.record_value("B1", "moi", "3", "1", "op.alice")
    sign(e, "op.alice")
    sign(e, "op.chen", "verified")
    e.record_value("B1", "expansion_days", "9", "d", "op.alice")
    sign(e, "op.alice")
    e.record_value("B1", "viable_cell_density", "2.1", "10*6/mL", "op.alice")
    e.record_value("B1", "viability", "91.5", "%", "op.alice")
    sign(e, "op.alice")
    record_dose_inputs(e)
    e.calculate("B1", "op.alice")
    sign(e, "op.alice")
    sign(e, "op.chen", "verified")
    assert e.expectation("B1").scans[0].role == "final_product"


BAG = "0109506000134345"  # the product bag's GTIN


def test_fill_takes_the_bags_own_printed_datamatrix_and_refuses_others(started: Engine) -> None:
    to_fill(started)
    # what edge.labels prints on the product bag: (01)(17)(10)(21), no COI
    assert refused(started, f"{BAG}1727053110B2{GS}21BAG1") == (
        "scan refused for final product: the label carries no COI and its batch/lot (AI 10) is "
        f"B2; expected COI {COI} or this batch's own product bag label (batch/lot B1){TAIL}"
    )
    assert refused(started, f"{BAG}17270531" + "21BAG1") == (
        "scan refused for final product: the label carries no COI and its batch/lot (AI 10) is "
        f"(none); expected COI {COI} or this batch's own product bag label (batch/lot B1){TAIL}"
    )
    # this batch's own bag, but its expiry has passed
    assert refused(started, f"{BAG}1726112310B1{GS}21BAG1") == (
        "scan refused for final product: expiry date (AI 17) 261123 is 2026-11-23, which has "
        f"passed; the unit's date is 2026-11-24{TAIL}"
    )
    assert started.expectation("B1").scans[0].role == "final_product"
    assert str(started.scan("B1", f"{BAG}1727053110B1{GS}21BAG1", "op.alice")) == (
        "final product accepted"
    )
    acc = started.state("B1").scans_accepted[-1]
    assert acc["role"] == "final_product"
    assert (acc["identifiers"]["batch"], acc["identifiers"]["serial"]) == ("B1", "BAG1")


def test_fill_still_takes_a_bag_label_with_the_coi_and_refuses_another_patients(
    started: Engine,
) -> None:
    to_fill(started)
    assert refused(started, f"{BAG}1727053121BAG1{GS}251&/CHA999926ZZZ999") == (
        "scan refused for final product: COI &/CHA999926ZZZ999 does not match this batch's COI "
        f"{COI} (wrong patient){TAIL}"
    )
    assert str(started.scan("B1", f"{BAG}1727053121BAG1{GS}251{COI}", "op.alice")) == (
        "final product accepted"
    )
