"""Clock jumps at the edge: a clock set back (against the head's time) or leaping forward within
one process (against the monotonic clock) is recorded as ``clock.jumped``, with a deviation on
each running batch, in the same commit group as the events that follow it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

from ebr_core.batch import apply
from ebr_core.keys import UnitSigner
from ebr_core.record import Event
from edge.ledger import Ledger


class Clock:
    def __init__(self) -> None:
        self.t = datetime(2026, 11, 30, 8, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.t += timedelta(seconds=1)
        return self.t


def _start(led: Ledger, batch_id: str) -> None:
    led.append("batch.started", {"coi": "&/CHA999926ABC123"}, batch_id=batch_id, actor="op.a")


def _fold(led: Ledger, batch_id: str) -> object:
    st = None
    for ev in led.batch_events(batch_id):
        st = apply(st, ev)
    return st


def _kinds(events: list[Event]) -> list[str]:
    return [e.kind for e in events]


def test_a_clock_set_back_a_year_is_recorded_with_a_deviation_on_running_batches(
    tmp_path: Path,
) -> None:
    clock = Clock()
    led = Ledger.open(tmp_path / "e.db", UnitSigner.generate("UNIT-K"), clock)
    _start(led, "B-RUN")
    _start(led, "B-DONE")
    led.append("batch.completed", {}, batch_id="B-DONE", actor="op.a")
    before = led.head[0]
    clock.t -= timedelta(days=365)
    led.append("step.completed", {"step": "s1"}, batch_id="B-RUN", actor="op.a")
    new = list(led.events(before + 1))
    assert _kinds(new) == ["clock.jumped", "deviation.raised", "step.completed"]
    jump, dev, step = new
    assert jump.payload["direction"] == "back"
    assert float(jump.payload["delta_s"]) < -364 * 86400
    assert jump.payload["new_time"] == step.recorded_at < jump.payload["old_time"]
    assert dev.batch_id == "B-RUN"
    assert dev.payload["category"] == "clock" and dev.payload["severity"] == "major"
    assert dev.payload["deviation_id"] == f"DEV-B-RUN-CLK-{jump.seq}"
    assert {"deviation_id", "step", "category", "reason", "severity"} <= set(dev.payload)
    assert "jumped back" in dev.payload["reason"]
    st = _fold(led, "B-RUN")
    assert f"DEV-B-RUN-CLK-{jump.seq}" in st.deviations  # type: ignore[attr-defined]
    # Once recorded, the clock runs on from the new time: no second event.
    led.append("step.completed", {"step": "s2"}, batch_id="B-RUN", actor="op.a")
    assert _kinds(list(led.events(step.seq + 1))) == ["step.completed"]
    assert led.verify_all().event_count == led.head[0]
    led.close()
    # Across a restart the head's time is the reference: a second jump back is seen too.
    clock.t -= timedelta(days=2)
    again = Ledger.open(tmp_path / "e.db", led.signer, clock)
    again.append("step.completed", {"step": "s3"}, batch_id="B-RUN", actor="op.a")
    assert _kinds(list(again.events(step.seq + 2))) == [
        "clock.jumped",
        "deviation.raised",
        "step.completed",
    ]
    again.close()


def test_a_clock_leaping_forward_within_a_process_is_recorded(tmp_path: Path) -> None:
    clock = Clock()
    led = Ledger.open(tmp_path / "e.db", UnitSigner.generate("UNIT-L"), clock, clock_leap_s=300)
    _start(led, "B-1")
    _start(led, "B-2")
    led.append("step.completed", {"step": "s1"}, batch_id="B-1", actor="op.a")  # +1 s: fine
    before = led.head[0]
    assert _kinds(list(led.events(1))).count("clock.jumped") == 0
    clock.t += timedelta(days=30)  # a leap the monotonic clock did not see
    led.append("step.completed", {"step": "s2"}, batch_id="B-1", actor="op.a")
    new = list(led.events(before + 1))
    assert _kinds(new) == ["clock.jumped", "deviation.raised", "deviation.raised", "step.completed"]
    assert new[0].payload["direction"] == "forward"
    assert {d.batch_id for d in new[1:3]} == {"B-1", "B-2"}
    ids = {d.payload["deviation_id"] for d in new[1:3]}
    assert ids == {f"DEV-B-1-CLK-{new[0].seq}", f"DEV-B-2-CLK-{new[0].seq}"}
    led.close()


def test_small_steps_and_duplicates_record_no_jump(tmp_path: Path) -> None:
    clock = Clock()
    led = Ledger.open(tmp_path / "e.db", UnitSigner.generate("UNIT-S"), clock)
    _start(led, "B-1")
    clock.t -= timedelta(seconds=30)  # an NTP step back within the tolerance
    led.append("reading.recorded", {"v": "1"}, batch_id="B-1", dedupe_key="k1")
    clock.t -= timedelta(days=365)
    led.append("reading.recorded", {"v": "1"}, batch_id="B-1", dedupe_key="k1")  # a duplicate
    assert "clock.jumped" not in _kinds(list(led.events()))
    led.close()
