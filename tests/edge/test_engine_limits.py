"""The engine writes into the record the limits it judged against: each judged value (recorded,
corrected, calculated) carries its hard and soft limits with their unit, and batch.started the
MBR's telemetry limits per channel, so no reader needs the MBR to show them."""

from __future__ import annotations

from ebr_core.batch import current_values
from ebr_core.limits import check_payload, describe_judged
from edge.engine import Engine

from .conftest import COI, PW
from .test_engine import record_dose_inputs, sign, to_harvest_count

INSPECT = "receipt/apheresis/inspect"


def _events(e: Engine, kind: str) -> list[dict[str, object]]:
    return [ev.payload for ev in e.ledger.batch_events("B1", telemetry=False) if ev.kind == kind]


def test_batch_started_records_the_mbrs_telemetry_limits(started: Engine) -> None:
    (p,) = _events(started, "batch.started")
    assert p["telemetry_limits"] == {
        "dissolved_oxygen": {"unit": "%", "min": "15"},
        "ph": {"unit": "[pH]", "min": "6.8", "max": "7.6"},
        "temperature": {"unit": "Cel", "min": "36.0", "max": "38.0"},
    }
    assert (p["mbr_id"], p["mbr_version"]) == (started.mbr.mbr_id, started.mbr.version)
    check_payload("batch.started", p)  # the shape every reader checks


def test_a_recorded_value_and_its_correction_carry_the_limits_they_were_judged_against(
    started: Engine,
) -> None:
    started.scan("B1", COI, "op.alice")
    sign(started, "op.alice")
    sign(started, "op.bob", "verified")
    started.record_value("B1", "apheresis_volume", "320", "mL", "op.alice")  # above soft 300
    (v,) = _events(started, "value.recorded")
    expected = {"unit": "mL", "hard": {"min": "50", "max": "500"},
                "soft": {"min": "100", "max": "300"}}  # fmt: skip
    assert v["limit"] == "soft" and v["limits"] == expected
    assert describe_judged(v) == "soft (soft 100–300 mL, hard 50–500 mL)"

    started.correct_value(
        "B1", INSPECT, "apheresis_volume", "220", "mL", "transcription error", "op.alice",
        PW["op.alice"],
    )  # fmt: skip
    (c,) = _events(started, "correction.recorded")
    assert c["limit"] == "ok" and c["limits"] == expected
    # the value in force carries the correction's own judgement, the record keeps the first
    st = started.state("B1")
    now, _ = current_values(st.values, st.corrections)
    assert now[f"{INSPECT}:apheresis_volume"]["limit"] == "ok"
    assert describe_judged(now[f"{INSPECT}:apheresis_volume"]) == (
        "ok (soft 100–300 mL, hard 50–500 mL)"
    )
    assert st.values[f"{INSPECT}:apheresis_volume"]["limit"] == "soft"


def test_the_calculated_dose_carries_the_dosing_rules_range(started: Engine) -> None:
    e = started
    to_harvest_count(e)
    record_dose_inputs(e)
    e.calculate("B1", "op.alice")
    dose = next(p for p in _events(e, "value.recorded") if p["name"] == "dose")
    assert dose["limits"] == {"unit": "/kg", "hard": {"min": "200000", "max": "5000000"}}
    weight = next(p for p in _events(e, "value.recorded") if p["name"] == "patient_weight")
    assert weight["limits"] == {"unit": "kg", "hard": {"min": "3", "max": "250"}}
    assert e.ledger.verify_all().event_count == e.ledger.head[0]
