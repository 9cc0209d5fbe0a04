"""Scans with each fault type, through the plugin's fixtures and the edge's scanner transport:
the edge records the good ones, refuses the bad ones, and loses no good one."""

from __future__ import annotations

import time

import pytest
import serial

from edge.transports.serial import SerialReader
from hardware.profile import shipped_profile

COI = "&/CHA999926ABC123"
GOOD = f"]C0{COI}"


def test_x(sim_scanner):
    port = serial.serial_for_url(sim_scanner.url, timeout=2)
    try:
        sim_scanner.send("]C0&/CHA999926ABC123")
        assert port.read_until(b"\r\n") == b"]C0&/CHA999926ABC123\r\n"
    finally:
        port.close()


# fault, its parameters, and how many copies of the scan the edge must deliver
CASES = [
    (None, {}, 1),
    ("noise", {"bytes": 1}, 0),
    ("split", {"sizes": [2, 5], "pause_s": 0.01}, 1),
    ("truncate", {"keep": 0.5}, 0),
    ("concat", {"count": 3}, 3),
    ("duplicate", {"copies": 1}, 2),
    ("unplug", {}, 0),
]


@pytest.mark.parametrize(("fault", "params", "copies"), CASES)
def test_each_fault_through_the_edges_scanner_transport(sim_scanner, fault, params, copies):
    got = []
    reader = SerialReader(
        sim_scanner.url,
        shipped_profile("scanner_serial_generic"),
        lambda scan: got.append(str(scan)),
        retry_s=0.05,
    ).start()
    try:
        sim_scanner.send("]C0&/CHA999926AAA111")  # a good scan before
        sim_scanner.send(GOOD, fault=fault, **params)
        if fault == "unplug":
            end = time.monotonic() + 5
            while reader.reconnects == 0 and time.monotonic() < end:
                time.sleep(0.02)
            assert reader.reconnects == 1
        sim_scanner.send("]C0&/CHA999926ZZZ999")  # a good scan after
        end = time.monotonic() + 5
        while len(got) < copies + 2 and time.monotonic() < end:
            time.sleep(0.02)
        time.sleep(0.2)
    finally:
        reader.stop()
    assert got == ["]C0&/CHA999926AAA111", *[GOOD] * copies, "]C0&/CHA999926ZZZ999"]
    refused = reader.stats.fault_count
    assert refused == (0 if copies or fault is None else 1), reader.stats.faults


def test_a_bad_cell_count_is_refused_and_the_next_recorded(sim_cell_counter):
    counts = []
    reader = SerialReader(
        sim_cell_counter.url, shipped_profile("cell_counter_cc1"), counts.append
    ).start()
    try:
        sim_cell_counter.send("S-1", 2_000_000, 1_840_000, fault="bad_checksum")
        sim_cell_counter.send("S-2", 2_000_000, 1_840_000)
        end = time.monotonic() + 5
        while not counts and time.monotonic() < end:
            time.sleep(0.02)
    finally:
        reader.stop()
    assert [c.sample_id for c in counts] == ["S-2"]
    assert "checksum" in reader.stats.faults[0]


def test_a_whole_unit_records_good_messages_and_refuses_poison(sim_unit):
    sim_unit.inject("{at: 0, device: bioreactor, fault: poison, params: {kind: surrogate}}")
    sim_unit.inject("{at: 0, device: bioreactor, fault: duplicate, params: {copies: 2}}")
    sim_unit.bioreactor.reading("temperature", "37.0", "Cel").wait_for_publish(5)
    assert sim_unit.wait_for(lambda: len(sim_unit.events("reading.recorded")) == 1)
    assert sim_unit.wait_for(lambda: len(sim_unit.events("reading.refused")) == 1)
    time.sleep(0.3)
    assert len(sim_unit.events("reading.recorded")) == 1  # the copies recorded once
