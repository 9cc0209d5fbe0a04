"""The engine's cached fold and telemetry summary: always equal to a full fold, never trusted
when stale or corrupt, and independent of how many readings the batch holds."""

from __future__ import annotations

import contextlib

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebr_core.telemetry import summarise
from edge.engine import Engine, EngineRefusal
from edge.ledger import Append

from .conftest import COI, PW


def readings(e: Engine, n: int, start: int = 0) -> None:
    e.ledger.append_many(
        [
            Append(
                "reading.recorded",
                {
                    "channel": "temperature",
                    "value": {"value": f"37.{i % 10}", "unit": "Cel"},
                    "device_time": f"2026-11-24T{8 + i // 3600 % 10:02d}:{i // 60 % 60:02d}:00Z",
                    "msg_id": str(i),
                },
                "B1",
                None,
                f"mqtt:{i}:r",
            )
            for i in range(start, start + n)
        ]
    )


ACTIONS = ["readings", "wrong_scan", "deviation", "right_scan", "fresh_engine"]


@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(ACTIONS), min_size=1, max_size=10))
def test_the_cached_state_equals_a_full_fold_after_any_actions(
    started: Engine, plan: list[str]
) -> None:
    e = started
    n = 0
    for step in plan:
        if step == "readings":
            readings(e, 7, n)
            n += 7
        elif step == "wrong_scan":
            with contextlib.suppress(EngineRefusal):
                e.scan("B1", "&/CHA999926ZZZ999", "op.alice")
        elif step == "deviation":
            e.raise_deviation("B1", "operator note", "op.alice")
        elif step == "right_scan":
            with contextlib.suppress(EngineRefusal):  # the step may expect no scan now
                e.scan("B1", COI, "op.alice")
        else:
            e = Engine(e.ledger, e.mbr, e.mbr_hash, e.users, e.materials, e.clock)
        assert e.state("B1") == e.full_state("B1")
        assert e.telemetry("B1").to_json() == summarise(e.ledger.batch_events("B1")).to_json()


def test_readings_never_reach_the_step_fold(started: Engine) -> None:
    before = started.state("B1")
    readings(started, 500)
    assert started.state("B1") == before  # the same state, the readings are summarised apart
    assert started.telemetry("B1").readings == 500
    # what an action reads: the step events alone
    steps = list(started.ledger.batch_events("B1", telemetry=False))
    assert [ev.kind for ev in steps] == ["batch.started"]


def test_a_corrupt_telemetry_snapshot_is_rebuilt_not_trusted(
    started: Engine, monkeypatch: object
) -> None:
    import edge.engine as engine_mod

    monkeypatch.setattr(engine_mod, "TELEMETRY_SNAPSHOT_EVERY", 10)  # type: ignore[attr-defined]
    readings(started, 40)
    truth = started.telemetry("B1").to_json()
    raw = started.ledger.get_meta("telemetry:B1")
    assert raw is not None and '"readings":40' in raw
    # someone edits the snapshot (a count lowered) without fixing its digest
    started.ledger.set_meta("telemetry:B1", raw.replace('"readings":40', '"readings":4'))
    fresh = Engine(
        started.ledger, started.mbr, started.mbr_hash, started.users, started.materials,
        started.clock,
    )  # fmt: skip
    assert fresh.telemetry("B1").to_json() == truth
    # a snapshot whose digest matches but that names an event the ledger does not have
    started.ledger.set_meta("telemetry:B1", raw.replace('"upto_hash":"', '"upto_hash":"0'))
    fresh = Engine(
        started.ledger, started.mbr, started.mbr_hash, started.users, started.materials,
        started.clock,
    )  # fmt: skip
    assert fresh.telemetry("B1").to_json() == truth


def test_a_sound_snapshot_is_advanced_by_the_new_readings_only(started: Engine) -> None:
    import edge.engine as engine_mod

    engine_mod.TELEMETRY_SNAPSHOT_EVERY, saved = 10, engine_mod.TELEMETRY_SNAPSHOT_EVERY
    try:
        readings(started, 30)
        started.telemetry("B1")
        readings(started, 5, 30)
        fresh = Engine(
            started.ledger, started.mbr, started.mbr_hash, started.users, started.materials,
            started.clock,
        )  # fmt: skip
        calls: list[tuple[int, bool | None]] = []
        real = started.ledger.batch_events

        def spy(batch_id, after_seq=0, upto_seq=None, *, telemetry=None):  # type: ignore[no-untyped-def]
            calls.append((after_seq, telemetry))
            return real(batch_id, after_seq, upto_seq, telemetry=telemetry)

        fresh.ledger.batch_events = spy  # type: ignore[method-assign]
        t = fresh.telemetry("B1")
        assert t.readings == 35
        assert calls and all(after > 0 for after, tel in calls if tel)  # not from the start
    finally:
        engine_mod.TELEMETRY_SNAPSHOT_EVERY = saved
        started.ledger.__dict__.pop("batch_events", None)


def test_a_batch_that_was_never_started_is_refused_by_name(engine: Engine) -> None:
    try:
        engine.state("NOPE")
    except EngineRefusal as e:
        assert str(e) == "batch NOPE has not been started on this unit"
    else:
        raise AssertionError("no refusal")
    assert PW  # the fixtures' users exist
