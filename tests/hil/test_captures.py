"""Record and replay (issue 26): the golden captures of ``tests/fixtures/captures/`` read by the
codecs, replayed through the edge's transports (``sim://replay``, ``ctgtp sim replay-mqtt``),
with faults, and a recorded simulator session replaying to the same ledger content."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import serial
from click.testing import CliRunner

import firmware_sim  # noqa: F401 - sim:// URLs
from ebr_core.identifiers import parse_scan
from ebr_core.keys import UnitSigner
from edge.ledger import Ledger
from edge.transports.mqtt import MqttIngest
from edge.transports.serial import SerialReader
from firmware_sim.bioreactor import BioreactorSim
from firmware_sim.broker import Broker
from firmware_sim.capture import CaptureError, load, parse, record_mqtt, record_serial
from firmware_sim.cli import sim
from firmware_sim.devices import ScannerSim
from firmware_sim.pty import PtyDevice
from hardware.cellcounter import parse_cc1
from hardware.errors import FrameError
from hardware.framing import LineFramer
from hardware.profile import shipped_profile

pytestmark = pytest.mark.hil
CAP = Path(__file__).resolve().parents[1] / "fixtures" / "captures"
GS = "\x1d"
SCANS = [
    "]C0&/CHA999926ABC123",
    f"]d2010950600013435210TM2611{GS}17270331",
    "]C0&/CHA999926ABC125",
    "]C0&/CHA999926ABC127",
    "]C10109506000134352",
]


def wait_for(cond: Callable[[], bool], timeout: float = 10.0) -> bool:
    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        time.sleep(0.02)
    return cond()


def _serial_bytes(name: str) -> list[bytes]:
    return [r.data for r in load(CAP / name).records]


def test_the_scanner_framer_and_parser_read_the_scanner_capture() -> None:
    profile = shipped_profile("scanner_serial_generic")
    framer = LineFramer(profile.terminator, profile.prefix, symbology_identifiers=True)
    lines = [
        line for chunk in _serial_bytes("scanner_sim_session.jsonl") for line in framer.feed(chunk)
    ]
    fragments = framer.take_fragments()
    assert fragments == [b"]C0&/CHA99"]  # the truncated scan, resynchronised on the next ]C0
    assert b"]C0&/CH\xb4A999926ABC124" in lines  # the noisy one reaches the decoder, which refuses
    good = [line.decode() for line in lines if all(b < 0x7F for b in line)]
    assert good == SCANS
    assert parse_scan(good[1]).gtin == "09506000134352"
    assert parse_scan(good[0]).coi == "&/CHA999926ABC123"


def test_the_cc1_codec_reads_the_cell_counter_capture() -> None:
    framer = LineFramer(b"\r\n")
    lines = [
        line
        for chunk in _serial_bytes("cell_counter_sim_session.jsonl")
        for line in framer.feed(chunk)
    ]
    assert [parse_cc1(lines[0]).sample_id, parse_cc1(lines[2]).sample_id] == ["S-1", "S-3"]
    with pytest.raises(FrameError, match="CC1 checksum is 66, expected 67"):
        parse_cc1(lines[1])


def _replayed(
    url: str, profile: str, n: int, timeout: float = 10.0
) -> tuple[list[Any], SerialReader]:
    got: list[Any] = []
    r = SerialReader(url, shipped_profile(profile), got.append).start()
    wait_for(lambda: len(got) >= n, timeout)
    time.sleep(0.3)
    r.stop()
    return got, r


def test_sim_replay_through_the_edges_scanner_transport() -> None:
    url = f"sim://replay?file={CAP / 'scanner_sim_session.jsonl'}&speed=10"
    got, r = _replayed(url, "scanner_serial_generic", 5)
    assert [str(s) for s in got] == SCANS
    assert r.stats.fault_count == 2  # the noisy scan refused, the truncated one dropped
    counts, r = _replayed(
        f"sim://replay?file={CAP / 'cell_counter_sim_session.jsonl'}&speed=10",
        "cell_counter_cc1",
        2,
    )
    assert [c.sample_id for c in counts] == ["S-1", "S-3"]


def test_sim_replay_with_faults() -> None:
    url = f"sim://replay?file={CAP / 'cell_counter_sim_session.jsonl'}&speed=10&fault=bad_checksum"
    counts, r = _replayed(url, "cell_counter_cc1", 1, timeout=2)
    # Every line's checksum flipped: S-1 and S-3 refused, S-2's spoilt one put right again.
    assert [c.sample_id for c in counts] == ["S-2"]
    assert r.stats.fault_count == 2
    url = f"sim://replay?file={CAP / 'scanner_sim_session.jsonl'}&speed=10&fault=split"
    got, _ = _replayed(url, "scanner_serial_generic", 5)
    assert [str(s) for s in got] == SCANS  # split reads change nothing


def test_bad_replay_urls_and_captures_are_refused(tmp_path: Path) -> None:
    with pytest.raises(serial.SerialException, match="expected file=CAPTURE"):
        serial.serial_for_url("sim://replay?speed=2")
    with pytest.raises(serial.SerialException, match="is an mqtt capture; expected serial"):
        serial.serial_for_url(f"sim://replay?file={CAP / 'bioreactor_sim_session.jsonl'}")
    with pytest.raises(serial.SerialException, match="fault concat; expected one of noise"):
        serial.serial_for_url(f"sim://replay?file={CAP / 'scanner_sim_session.jsonl'}&fault=concat")
    head = '{"format":"ctgtp-capture","version":1,"kind":"serial"}\n'
    with pytest.raises(CaptureError, match=r"c line 3: t is 0.5; expected seconds, not before 1.0"):
        parse(iter([head, '{"t":1,"data":""}', '{"t":0.5,"data":""}']), "c")
    with pytest.raises(CaptureError, match="c line 2: data is not base64"):
        parse(iter([head, '{"t":1,"data":"@@@"}']), "c")
    with pytest.raises(CaptureError, match="c line 1 is not a ctgtp-capture header"):
        parse(iter(['{"t":1}']), "c")


def test_a_recorded_serial_session_replays_the_same_scans(tmp_path: Path) -> None:
    dev = PtyDevice()
    frames = [ScannerSim().frame(f"&/CHA999926ABC{i:03d}", "]C0") for i in range(5)]
    out = io.StringIO()
    t = threading.Thread(target=record_serial, args=(dev.tty, out), kwargs={"duration": 1.5})
    t.start()
    time.sleep(0.3)
    for f in frames:
        dev.write(f)
        time.sleep(0.05)
    t.join()
    dev.close()
    (tmp_path / "c.jsonl").write_text(out.getvalue())
    got, _ = _replayed(
        f"sim://replay?file={tmp_path / 'c.jsonl'}&speed=5", "scanner_serial_generic", 5
    )
    assert [str(s) for s in got] == [f.decode().strip() for f in frames]


def _ledger_of(port: int, path: Path, publish: Callable[[], None], n: int) -> list[tuple[str, Any]]:
    led = Ledger.open(path, UnitSigner.generate("UNIT-CAP"), lambda: datetime.now(UTC))
    ingest = MqttIngest(led, "127.0.0.1", port, "UNIT-CAP").start()
    try:
        assert ingest.subscribed.wait(10)
        publish()
        assert wait_for(lambda: led.head[0] >= n, 20), ingest.stats
        time.sleep(0.5)
        out = []
        for e in led.events():
            p = dict(e.payload)
            if e.kind == "reading.refused":
                p.pop("received_at", None)
            out.append((e.kind, p))
        return out
    finally:
        ingest.stop()
        led.close()


def test_a_recorded_mqtt_session_replays_to_the_same_ledger_content(tmp_path: Path) -> None:
    capture = tmp_path / "bio.jsonl"
    with Broker() as broker:

        def live() -> None:
            with capture.open("w") as out:
                rec = threading.Thread(
                    target=record_mqtt,
                    args=("127.0.0.1", broker.port, "units/#", out),
                    kwargs={"duration": 2.5},
                )
                rec.start()
                time.sleep(0.5)
                bio = BioreactorSim("127.0.0.1", broker.port, "UNIT-CAP")
                bio.state("expansion")
                bio.reading("temperature", "37.0", "Cel")
                bio.duplicate_next(1)
                bio.reading("ph", "7.21", "[pH]")
                bio.poison("object_channel")
                bio.alarm("DO_LOW", "dissolved oxygen below 20 %")
                bio.wait_published()
                bio.close()
                rec.join()

        first = _ledger_of(broker.port, tmp_path / "a.db", live, 5)
    assert len(load(capture).records) == 6  # the duplicate was on the wire
    with Broker() as broker:

        def replay() -> None:
            result = CliRunner().invoke(
                sim,
                [
                    "replay-mqtt",
                    str(capture),
                    "--broker",
                    f"127.0.0.1:{broker.port}",
                    "--speed",
                    "5",
                ],
            )
            assert result.exit_code == 0, result.output
            assert "replayed 6 messages" in result.output

        second = _ledger_of(broker.port, tmp_path / "b.db", replay, 5)
    assert [k for k, _ in first] == [
        "process.state",
        "reading.recorded",
        "reading.recorded",
        "reading.refused",
        "alarm.raised",
    ]
    assert second == first


def test_the_golden_bioreactor_capture_through_the_edge(tmp_path: Path) -> None:
    with Broker() as broker:

        def replay() -> None:
            result = CliRunner().invoke(
                sim,
                [
                    "replay-mqtt",
                    str(CAP / "bioreactor_sim_session.jsonl"),
                    "--broker",
                    f"127.0.0.1:{broker.port}",
                    "--speed",
                    "10",
                ],
            )
            assert result.exit_code == 0, result.output

        events = _ledger_of(broker.port, tmp_path / "g.db", replay, 7)
    kinds = [k for k, _ in events]
    assert kinds.count("reading.recorded") == 4  # the duplicate pH reading recorded once
    assert kinds.count("reading.refused") == 1 and kinds.count("alarm.raised") == 1
    assert kinds[0] == "process.state"


def test_ctgtp_sim_record_and_record_mqtt_commands(tmp_path: Path) -> None:
    dev = PtyDevice()
    out = tmp_path / "rec.jsonl"
    frame = ScannerSim().frame("&/CHA999926ABC123", "]C0")
    writer = threading.Timer(0.5, dev.write, args=(frame,))
    writer.start()
    result = CliRunner().invoke(
        sim, ["record", dev.tty, "--out", str(out), "--duration", "1.2", "--note", "bench"]
    )
    dev.close()
    assert result.exit_code == 0, result.output
    capture = load(out)
    assert b"".join(r.data for r in capture.records) == frame
    assert capture.note == "bench" and 0.3 < capture.records[0].t < 1.2
    bad = CliRunner().invoke(
        sim, ["record", "/nonexistent/tty", "--out", str(out), "--duration", "1"]
    )
    assert bad.exit_code == 1 and "cannot record /nonexistent/tty" in bad.output
    bad = CliRunner().invoke(sim, ["record-mqtt", "host:notaport", "units/#", "--out", str(out)])
    assert bad.exit_code == 2
    assert "'host:notaport' is not a broker address; expected HOST:PORT" in bad.output
    with Broker() as broker:

        def publish() -> None:
            bio = BioreactorSim("127.0.0.1", broker.port, "U-R")
            bio.state("harvest").wait_for_publish(5)
            bio.close()

        pub = threading.Timer(0.8, publish)
        pub.start()
        result = CliRunner().invoke(
            sim,
            [
                "record-mqtt",
                f"mqtt://127.0.0.1:{broker.port}",
                "units/#",
                "--out",
                str(out),
                "--duration",
                "2",
            ],
        )
        pub.join()
    assert result.exit_code == 0, result.output
    (rec,) = load(out).records
    assert rec.topic == "units/U-R/state" and b'"state":"harvest"' in rec.data
