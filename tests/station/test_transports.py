"""What the station needs of the transports over months of running."""

from __future__ import annotations

from edge.transports.serial import FAULTS_KEPT, SerialStats


def test_a_reader_keeps_its_recent_faults_and_counts_all() -> None:
    s = SerialStats()
    for i in range(FAULTS_KEPT + 500):
        s.fault(f"line noise {i}")
    assert s.fault_count == FAULTS_KEPT + 500
    assert len(s.faults) == FAULTS_KEPT
    assert s.faults[0] == "line noise 500" and s.faults[-1] == f"line noise {FAULTS_KEPT + 499}"
