"""The ``ctgtp`` pytest plugin's fixtures (issue 26): each gives real parts and cleans up."""

from __future__ import annotations

from pathlib import Path

import httpx
import paho.mqtt.client as mqtt
import pytest
import serial
from paho.mqtt.enums import CallbackAPIVersion

from edge.transports.serial import SerialReader
from firmware_sim.bioreactor import BioreactorSim
from firmware_sim.broker import Broker
from firmware_sim.pytest_plugin import SimCellCounter, SimScanner, SimUnit, wait_for
from hardware.cellcounter import parse_cc1
from hardware.errors import FrameError
from hardware.profile import shipped_profile

pytestmark = pytest.mark.hil
COI = "&/CHA999926ABC123"


def test_sim_scanner_reads_back_through_pyserial_with_faults(sim_scanner: SimScanner) -> None:
    port = serial.serial_for_url(sim_scanner.url, timeout=1)
    try:
        sim_scanner.send(f"]C0{COI}")
        assert port.read_until(b"\r\n") == f"]C0{COI}\r\n".encode()
        sim_scanner.send(f"]C0{COI}", fault="split", sizes=[4], pause_s=0.01)
        assert port.read_until(b"\r\n") == f"]C0{COI}\r\n".encode()
        sim_scanner.send(f"]C0{COI}", fault="truncate", keep=0.5)
        assert port.read(100) == f"]C0{COI}"[:10].encode()
        with pytest.raises(ValueError, match="noise has no parameter 'loud'; expected bytes"):
            sim_scanner.send(COI, fault="noise", loud=1)
        with pytest.raises(ValueError, match="unknown fault 'fire'"):
            sim_scanner.send(COI, fault="fire")
    finally:
        port.close()
    with pytest.raises(RuntimeError, match=r"nobody has sim://scanner/.* open"):
        sim_scanner.send(COI, wait_s=0.1)


def test_sim_scanner_through_the_edges_transport_with_an_unplug(sim_scanner: SimScanner) -> None:
    got: list[str] = []
    r = SerialReader(
        sim_scanner.url,
        shipped_profile("scanner_serial_generic"),
        lambda s: got.append(str(s)),
        retry_s=0.05,
    ).start()
    try:
        sim_scanner.send(f"]C0{COI}")
        sim_scanner.send(f"]C0{COI}", fault="noise")
        sim_scanner.send(f"]C0{COI}", fault="unplug")
        assert wait_for(lambda: r.reconnects == 1)
        sim_scanner.send(f"]C0{COI}", fault="concat", count=2)
        assert wait_for(lambda: len(got) == 3)
    finally:
        r.stop()
    assert got == [f"]C0{COI}"] * 3
    assert any("line noise" in f for f in r.stats.faults)


def test_sim_cell_counter(sim_cell_counter: SimCellCounter) -> None:
    port = serial.serial_for_url(sim_cell_counter.url, timeout=1)
    try:
        sim_cell_counter.send("S-1", 2_000_000, 1_840_000, fault="bad_checksum")
        sim_cell_counter.send("S-2", 2_000_000, 1_840_000)
        bad, good = port.read_until(b"\r\n"), port.read_until(b"\r\n")
    finally:
        port.close()
    with pytest.raises(FrameError, match="CC1 checksum is 65, expected 64"):
        parse_cc1(bad.rstrip())
    assert parse_cc1(good.rstrip()).sample_id == "S-2"
    assert Path(sim_cell_counter.url).is_symlink()


def test_mosquitto_broker_and_sim_bioreactor(
    mosquitto_broker: Broker, sim_bioreactor: BioreactorSim
) -> None:
    got: list[bytes] = []
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="plugin-test")
    c.on_message = lambda _c, _u, m: got.append(m.payload)
    c.on_connect = lambda cl, *_: cl.subscribe("units/#", qos=1)
    c.connect("127.0.0.1", mosquitto_broker.port)
    c.loop_start()
    try:
        wait_for(c.is_connected)
        import time

        time.sleep(0.3)
        sim_bioreactor.state("priming").wait_for_publish(5)
        assert wait_for(lambda: len(got) == 1)
    finally:
        c.loop_stop()
        c.disconnect()
    assert b'"state":"priming"' in got[0]


def test_sim_unit_records_good_refuses_bad_loses_none(sim_unit: SimUnit) -> None:
    bio = sim_unit.bioreactor
    sim_unit.inject("{at: 0, device: bioreactor, fault: poison, params: {kind: nul}}")
    sim_unit.inject("{at: 0, device: bioreactor, fault: duplicate}")
    bio.reading("temperature", "37.0", "Cel").wait_for_publish(5)
    sim_unit.inject("{at: 0, device: counter, fault: bad_checksum}")
    sim_unit.inject("{at: 0, device: counter, fault: split}")
    sim_unit.inject("{at: 0, device: scanner, fault: noise}")
    sim_unit.scanner.write(sim_unit.injector.scan_frame())
    assert sim_unit.wait_for(lambda: len(sim_unit.events("reading.recorded")) == 2)
    assert sim_unit.wait_for(lambda: len(sim_unit.events("reading.refused")) == 1)
    assert sim_unit.wait_for(lambda: len(sim_unit.scans) == 1)
    recorded = sim_unit.events("reading.recorded")
    assert sorted(e.payload["channel"] for e in recorded) == ["cell_count", "temperature"]
    assert [e.payload["sample_id"] for e in recorded if "sample_id" in e.payload] == ["S-2"]
    assert sim_unit.scans == [f"]C0{COI}"]


def test_ctgtp_server_answers(ctgtp_server) -> None:  # type: ignore[no-untyped-def]
    assert httpx.get(ctgtp_server.url + "/health", timeout=5).status_code == 200
    proc = ctgtp_server.proc
    assert proc.poll() is None
