"""The step engine: order, hard stops on wrong scans, limits, dose, Part 11 signatures."""

from __future__ import annotations

import pytest

from ebr_core.batch import fold
from edge.engine import Engine, EngineRefusal, ScanRejected
from edge.outcomes import (
    DeviationRaised,
    DoseCalculated,
    ScanAccepted,
    Signed,
    ValueCorrected,
    ValueRecorded,
)

from .conftest import COI, GS, PW, Clock


def sign(e: Engine, user: str, meaning: str = "performed") -> Signed:
    return e.sign("B1", PW[user], meaning, user)


def finish_receipt(e: Engine) -> None:
    e.scan("B1", COI, "op.alice")
    sign(e, "op.alice")
    sign(e, "op.bob", "verified")
    e.record_value("B1", "apheresis_volume", "200", "mL", "op.alice")
    sign(e, "op.alice")


def refusal(fn, *args) -> str:  # type: ignore[no-untyped-def]
    with pytest.raises(EngineRefusal) as exc:
        fn(*args)
    return str(exc.value)


def test_wrong_patient_scan_is_a_recorded_hard_stop(started: Engine) -> None:
    before = started.ledger.head[0]
    with pytest.raises(ScanRejected) as e:
        started.scan("B1", "&/CHA999926ZZZ999", "op.alice")
    assert str(e.value) == (
        "scan refused for patient material: COI &/CHA999926ZZZ999 does not match this batch's "
        "COI &/CHA999926ABC123 (wrong patient). Recorded as a rejected scan with a deviation; "
        "the step does not advance."
    )
    st = started.state("B1")
    assert started.ledger.head[0] == before + 2
    assert st.scans_rejected[0]["expected"] == COI
    assert st.deviations["DEV-B1-001"].category == "scan_mismatch"
    assert started.expectation("B1").scans[0].role == "patient_material"  # did not advance


def test_unparseable_scan_is_rejected_and_recorded(started: Engine) -> None:
    with pytest.raises(ScanRejected, match="GTIN 09501101530004 check digit is 4, expected 3"):
        started.scan("B1", "0109501101530004", "op.alice")
    assert len(started.state("B1").scans_rejected) == 1


def test_step_order_is_enforced(started: Engine) -> None:
    assert refusal(started.record_value, "B1", "apheresis_volume", "200", "mL", "op.alice") == (
        "step receipt/apheresis/coi-scan first expects a scan of patient material; signatures "
        "performed, verified"
    )
    assert refusal(sign, started, "op.alice") == (
        "step receipt/apheresis/coi-scan is not finished: it expects a scan of patient material; "
        "signatures performed, verified"
    )


def test_second_person_must_verify_critical_steps(started: Engine) -> None:
    started.scan("B1", COI, "op.alice")
    assert refusal(sign, started, "op.alice", "verified") == (
        "step receipt/apheresis/coi-scan must be signed 'performed' first"
    )
    sign(started, "op.alice")
    assert refusal(sign, started, "op.alice", "verified") == (
        "op.alice performed step receipt/apheresis/coi-scan; a second, different person must "
        "verify it"
    )
    done = sign(started, "op.bob", "verified")
    assert str(done).endswith("; step receipt/apheresis/coi-scan completed")
    assert (done.step_id, done.meaning, done.user_id) == (
        "receipt/apheresis/coi-scan", "verified", "op.bob"
    )  # fmt: skip
    assert done.step_completed and not done.batch_completed
    sigs = started.state("B1").signatures
    assert [(s.user_id, s.printed_name, s.meaning) for s in sigs] == [
        ("op.alice", "Alice Martin", "performed"),
        ("op.bob", "Bob Okafor", "verified"),
    ]
    assert all(len(s.signed_hash) == 64 for s in sigs)


def test_signature_is_bound_to_the_record_head(started: Engine) -> None:
    accepted = started.scan("B1", COI, "op.alice")
    assert isinstance(accepted, ScanAccepted) and str(accepted) == "patient material accepted"
    assert (accepted.step_id, accepted.role, accepted.seq) == (
        "receipt/apheresis/coi-scan", "patient_material", started.ledger.head[0]
    )  # fmt: skip
    head = started.ledger.head[1]
    signed = sign(started, "op.alice")
    assert started.state("B1").signatures[0].signed_hash == head == signed.signed_hash


def test_continuous_session_needs_one_component_otherwise_two(
    started: Engine, clock: Clock
) -> None:
    started.scan("B1", COI, "op.alice")
    # op.alice authenticated with both components when starting the batch: session continues.
    signed = started.sign("B1", PW["op.alice"], "performed")
    assert (signed.user_id, signed.printed_name) == ("op.alice", "Alice Martin")
    assert str(signed) == f"signed 'performed' by Alice Martin (op.alice) at {signed.signed_at}"
    clock.advance(minutes=16)
    assert refusal(started.sign, "B1", PW["op.bob"], "verified") == (
        "the session is not continuous: enter your user id and password (21 CFR 11.200(a)(1)(ii))"
    )


def test_wrong_passwords_are_recorded_and_lock_the_user(started: Engine) -> None:
    started.scan("B1", COI, "op.alice")
    for _ in range(2):
        assert refusal(started.sign, "B1", "nope", "performed", "op.alice") == (
            "wrong password for user op.alice"
        )
    assert refusal(started.sign, "B1", "nope", "performed", "op.alice") == (
        "wrong password for user op.alice; user op.alice is now locked"
    )
    assert refusal(sign, started, "op.alice") == (
        "user op.alice is locked after 3 failed attempts; an administrator must unlock the account"
    )
    failed = [e for e in started.ledger.batch_events("B1") if e.kind == "signature.failed"]
    assert len(failed) == 3 and all(
        "password" not in str(e.payload).lower().replace("wrong password", "") for e in failed
    )


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("010950600013435210TM2609", "lot TM2609 is quarantined; expected a released lot"),
        ("010950600013436910IL2-0039", "lot IL2-0039 is IL-2, expected TexMACS medium"),
        (
            "010950600013435210TM9999",
            "lot TM9999 of GTIN 09506000134352 is not in the local materials list",
        ),
    ],
)
def test_reagent_refusals(started: Engine, raw: str, reason: str) -> None:
    finish_receipt(started)
    started.scan("B1", "010950600013437617271231" + "21CART-0001", "op.alice")
    started.scan("B1", "8004UNIT-0001", "op.alice")
    sign(started, "op.alice")
    with pytest.raises(ScanRejected) as e:
        started.scan("B1", raw, "op.alice")
    assert f"scan refused for reagent: {reason}." in str(e.value)


def test_expired_lot_overdue_equipment_wrong_cartridge(started: Engine) -> None:
    finish_receipt(started)
    with pytest.raises(
        ScanRejected, match="cartridge GTIN is 09501101530003, expected 09506000134376"
    ):
        started.scan("B1", "010950110153000321C1", "op.alice")
    started.scan("B1", "010950600013437617271231" + "21CART-0001", "op.alice")
    with pytest.raises(
        ScanRejected,
        match=r"equipment PIP-0007 \(Pipette set 7\) calibration is "
        "overdue since 2026-10-01",
    ):
        started.scan("B1", "8004PIP-0007", "op.alice")
    started.scan("B1", "8004UNIT-0001", "op.alice")
    sign(started, "op.alice")
    started.scan("B1", "010950600013435210TM2611", "op.alice")
    with pytest.raises(ScanRejected, match="lot IL2-0039 expired on 2026-01-31"):
        started.scan("B1", "010950600013436910IL2-0039", "op.alice")


def test_limits_raise_deviations(started: Engine) -> None:
    started.scan("B1", COI, "op.alice")
    sign(started, "op.alice")
    sign(started, "op.bob", "verified")
    assert refusal(started.record_value, "B1", "apheresis_volume", "200", "L", "op.alice") == (
        "apheresis_volume is recorded in 'mL', got 'L'"
    )
    assert refusal(started.record_value, "B1", "apheresis_volume", "lots", "mL", "op.alice") == (
        "apheresis_volume: 'lots' is not a decimal number such as 87.5"
    )
    msg = started.record_value("B1", "apheresis_volume", "501", "mL", "op.alice")
    assert str(msg) == "apheresis_volume = 501 mL recorded (hard limit breached: deviation raised)"
    assert msg == ValueRecorded(
        "B1", msg.seq, "receipt/apheresis/inspect", "apheresis_volume", "501", "mL",
        limit="hard", deviation_id="DEV-B1-001",
    )  # fmt: skip
    d = started.state("B1").deviations["DEV-B1-001"]
    assert (d.severity, d.reason) == (
        "major",
        "apheresis_volume 501 mL is outside the hard limit 50–500 mL",
    )
    assert refusal(started.record_value, "B1", "apheresis_volume", "200", "mL", "op.alice") == (
        "apheresis_volume is already recorded for step receipt/apheresis/inspect; a change is a "
        "correction (nothing is edited in place)"
    )


def test_deviations_are_commented_and_linked_never_edited(started: Engine) -> None:
    raised = started.raise_deviation("B1", "bag label smudged", "op.alice")
    assert raised == DeviationRaised(
        "B1", raised.seq, "DEV-B1-001", "receipt/apheresis/coi-scan", "bag label smudged"
    )
    assert str(raised) == "DEV-B1-001" and raised.message == "deviation DEV-B1-001 raised"
    a = raised.deviation_id
    b = started.raise_deviation("B1", "second label smudged", "op.alice").deviation_id
    commented = started.comment_deviation("B1", a, "label re-printed from the system", "op.bob")
    assert str(commented) == "comment added to DEV-B1-001"
    assert str(started.link_deviation("B1", b, a, "op.bob")) == "DEV-B1-002 linked to DEV-B1-001"
    st = started.state("B1")
    assert st.deviations[a].comments == ("label re-printed from the system",)
    assert st.deviations[b].links == (a,)
    assert refusal(started.comment_deviation, "B1", "DEV-X", "x", "op.bob") == (
        "deviation DEV-X does not exist in batch B1"
    )


def test_fold_on_the_server_equals_the_engine_state(started: Engine) -> None:
    finish_receipt(started)
    events = list(started.ledger.events())
    assert fold(events)["B1"] == started.state("B1")


def test_batch_cannot_start_twice_or_with_a_bad_coi(engine: Engine) -> None:
    assert refusal(
        engine.start_batch, "B1", "&/CHO999926ABC123", "op.alice", PW["op.alice"]
    ).startswith("COI '&/CHO999926ABC123' is not a valid chain-of-")
    started = engine.start_batch("B1", COI, "op.alice", PW["op.alice"])
    assert str(started) == f"batch B1 started for COI {COI} on MBR CAR-T-CARTRIDGE v3"
    assert started.to_json() == {
        "outcome": "batch_started",
        "batch_id": "B1",
        "seq": 1,
        "coi": COI,
        "mbr_id": "CAR-T-CARTRIDGE",
        "mbr_version": "3",
        "message": str(started),
    }
    assert refusal(engine.start_batch, "B1", COI, "op.alice", PW["op.alice"]) == (
        "batch B1 already exists on this unit"
    )


def to_harvest_count(e: Engine) -> None:
    """Walk a started batch to the harvest-count step (the dose's inputs come next)."""
    finish_receipt(e)
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


def record_dose_inputs(e: Engine) -> None:
    """At the harvest count: the dose's inputs recorded and signed (72.5 kg patient)."""
    for n, v, u in [
        ("viable_per_ml", "25000000", "/mL"),
        ("harvest_volume", "60", "mL"),
        ("car_percent", "40", "%"),
        ("patient_weight", "72.5", "kg"),
    ]:
        e.record_value("B1", n, v, u, "op.alice")
    sign(e, "op.alice")


def test_the_dose_uses_corrected_values(started: Engine) -> None:
    """A patient weight corrected before the dose is calculated: the dose is the corrected
    weight's (the fold keeps values as recorded; the engine must read the value in force)."""
    e = started
    to_harvest_count(e)
    for n, v, u in [
        ("viable_per_ml", "25000000", "/mL"),
        ("harvest_volume", "60", "mL"),
        ("car_percent", "40", "%"),
        ("patient_weight", "80", "kg"),  # misread
    ]:
        e.record_value("B1", n, v, u, "op.alice")
    e.correct_value(
        "B1", "formulation/harvest/harvest-count", "patient_weight", "72.5", "kg", "misread",
        "op.alice", PW["op.alice"],
    )  # fmt: skip
    sign(e, "op.alice")
    assert e.calculate("B1", "op.alice").cells_to_infuse == "145000000"  # 72.5 kg, not 80


def test_final_product_label_must_carry_the_coi(started: Engine) -> None:
    from edge.engine import ScanRejected as SR

    e = started
    to_harvest_count(e)
    record_dose_inputs(e)
    dose = e.calculate("B1", "op.alice")
    assert dose.detail() == {
        "cells_to_infuse": "145000000",
        "per_kg": "2000000",
        "volume_to_infuse_ml": "14.5",
        "total_viable_car_cells": "600000000",
    }
    assert isinstance(dose, DoseCalculated) and dose.within_range and dose.deviation_id is None
    assert str(dose).splitlines()[0] == "cells_to_infuse: 145000000"
    recorded = e.ledger.batch_events("B1", dose.seq - 1, dose.seq, telemetry=False)
    assert [ev.payload["detail"] for ev in recorded] == [dose.detail()]
    sign(e, "op.alice")
    sign(e, "op.chen", "verified")
    with pytest.raises(SR, match="COI &/CHA999926ZZZ999 does not match"):
        e.scan("B1", "01095060001343451725123121BAG1" + GS + "251&/CHA999926ZZZ999", "op.alice")
    e.scan("B1", "01095060001343451727053121BAG1" + GS + "251" + COI, "op.alice")
    sign(e, "op.alice")
    sign(e, "op.chen", "verified")
    e.record_value("B1", "end_temperature", "-90", "Cel", "op.alice")
    sign(e, "op.alice")
    e.record_value("B1", "qc_samples_taken", "5", "1", "op.alice")
    sign(e, "op.alice")
    st = e.state("B1")
    assert st.status == "completed" and len(st.completed_steps) == 13
    assert refusal(e.raise_deviation, "B1", "", "op.alice") == "a deviation needs a reason"
    assert refusal(e.scan, "B1", COI, "op.alice") == (
        "batch B1 is completed; nothing more can be recorded"
    )
    assert e.ledger.verify_all().event_count == e.ledger.head[0]


def test_a_correction_is_a_new_event_referencing_the_original(started: Engine) -> None:
    started.scan("B1", COI, "op.alice")
    sign(started, "op.alice")
    sign(started, "op.bob", "verified")
    started.record_value("B1", "apheresis_volume", "220", "mL", "op.alice")
    before = [e for e in started.ledger.batch_events("B1") if e.kind == "value.recorded"]
    msg = started.correct_value(
        "B1",
        "receipt/apheresis/inspect",
        "apheresis_volume",
        "202",
        "mL",
        "transcription error",
        "op.alice",
        PW["op.alice"],
    )
    assert str(msg) == (
        f"apheresis_volume corrected from 220 to 202 mL by Alice Martin (op.alice) (correcting "
        f"seq {before[0].seq}): transcription error"
    )
    assert isinstance(msg, ValueCorrected)
    assert (msg.old_value, msg.value, msg.corrects, msg.limit) == (
        "220",
        "202",
        before[0].seq,
        "ok",
    )
    st = started.state("B1")
    assert st.corrections[0]["corrects"] == before[0].seq
    assert st.values["receipt/apheresis/inspect:apheresis_volume"]["value"]["value"] == "220"
    assert (
        refusal(
            started.correct_value,
            "B1",
            "receipt/apheresis/inspect",
            "apheresis_volume",
            "1",
            "mL",
            " ",
            "op.alice",
            PW["op.alice"],
        )
        == "a correction needs a reason"
    )
