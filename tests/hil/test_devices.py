"""Devices: golden bytes on both sides, the framer law, and hardware-in-the-loop over real ptys."""

from __future__ import annotations

import contextlib
import time
from decimal import Decimal
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from edge.engine import Engine, EngineRefusal
from edge.transports.serial import SerialReader
from firmware_sim.devices import CellCounterSim, Faults, ScannerSim
from firmware_sim.pty import PtyDevice
from hardware.cellcounter import CellCount, parse_cc1
from hardware.errors import FrameError
from hardware.framing import LineFramer
from hardware.profile import shipped_profile

FIX = Path(__file__).resolve().parents[1] / "fixtures"
GS = "\x1d"
COI = "&/CHA999926ABC123"


def test_simulators_produce_the_golden_bytes() -> None:
    assert (
        ScannerSim().frame(f"010950600013435210TM2611{GS}17270331")
        == (FIX / "scanner_gs1_datamatrix_crlf.bin").read_bytes()
    )
    assert (
        ScannerSim(suffix=b"\r", gs_substitute="|").frame(
            f"010950600013435210TM2611{GS}17270331", "]C1"
        )
        == (FIX / "scanner_pipe_gs_cr.bin").read_bytes()
    )
    assert ScannerSim().frame(COI, "]C0") == (FIX / "scanner_isbt_coi_crlf.bin").read_bytes()
    assert (
        CellCounterSim().frame("S-001", 2_500_000, 2_300_000)
        == (FIX / "cell_counter_cc1.bin").read_bytes()
    )


def test_codecs_read_the_golden_bytes() -> None:
    generic = shipped_profile("scanner_serial_generic")
    f = LineFramer(generic.terminator)
    assert f.feed((FIX / "scanner_gs1_datamatrix_crlf.bin").read_bytes()) == [
        f"]d2010950600013435210TM2611{GS}17270331".encode()
    ]
    pipe = shipped_profile("scanner_serial_pipe_gs")  # a new device: a profile, no code
    assert LineFramer(pipe.terminator).feed((FIX / "scanner_pipe_gs_cr.bin").read_bytes()) == [
        b"]C1010950600013435210TM2611|17270331"
    ]
    line = LineFramer().feed((FIX / "cell_counter_cc1.bin").read_bytes())[0]
    assert parse_cc1(line) == CellCount("S-001", 2_500_000, 2_300_000, Decimal("92.0"))


def test_cc1_refusals() -> None:
    good = (FIX / "cell_counter_cc1.bin").read_bytes().rstrip(b"\r\n")
    with pytest.raises(FrameError, match=r"CC1 checksum is .., expected .. \(line corrupted\)"):
        parse_cc1(good[:-2] + (b"00" if not good.endswith(b"00") else b"01"))
    with pytest.raises(FrameError, match="not a CC1 result line"):
        parse_cc1(b"$CC1,S-001,garbage*00")


@given(
    st.lists(
        st.lists(st.sampled_from(list(b"abcXYZ019]|\x1d")), max_size=30).map(bytes), max_size=8
    ),
    st.lists(st.integers(1, 17), max_size=40),
)
def test_framer_gives_the_same_lines_however_split(lines: list[bytes], cuts: list[int]) -> None:
    stream = b"".join(x + b"\r\n" for x in lines)
    whole = LineFramer().feed(stream)
    f, got, pos = LineFramer(), [], 0
    for n in cuts:
        got += f.feed(stream[pos : pos + n])
        pos += n
    got += f.feed(stream[pos:])
    assert got == whole == lines
    assert f.close() == b""


def wait_for(cond, timeout: float = 3.0) -> None:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        time.sleep(0.02)


@pytest.mark.hil
def test_scanner_on_a_pty_into_the_ledger_with_faults(started: Engine) -> None:
    dev = PtyDevice()
    scans: list[str] = []
    reader = SerialReader(
        dev.port, shipped_profile("scanner_serial_generic"), lambda s: scans.append(str(s))
    ).start()
    sim = ScannerSim()
    noisy = ScannerSim(faults=Faults(garble=1.0))
    try:
        dev.write(noisy.frame(COI, "]C0"))  # garbled on the wire
        dev.write_chunked(sim.frame("&/CHA999926ZZZ999", "]C0"), [3, 5, 2], pause=0.01)
        dev.write_chunked(sim.frame(COI, "]C0"), [1] * 25, pause=0.001)  # byte by byte
        dev.write(sim.frame(COI, "]C0")[:-2])  # cable pulled: terminator never arrives
        wait_for(lambda: len(scans) >= 2)
        time.sleep(0.2)
    finally:
        reader.stop()
        dev.close()
    assert scans == ["]C0&/CHA999926ZZZ999", f"]C0{COI}"]
    assert any("non-printable" in f for f in reader.stats.faults)
    assert any("without terminator" in f for f in reader.stats.faults)
    for raw in scans:  # the operator's station hands each delivered scan to the engine
        with contextlib.suppress(EngineRefusal):
            started.scan("B1", raw.removeprefix("]C0"), "op.alice")
    st = started.state("B1")
    assert [s["raw"] for s in st.scans_rejected] == ["&/CHA999926ZZZ999"]
    assert [s["raw"] for s in st.scans_accepted] == [COI]
    assert started.ledger.verify_all().event_count == started.ledger.head[0]


@pytest.mark.hil
def test_cell_counter_on_a_pty_refuses_bad_checksums() -> None:
    dev = PtyDevice()
    counts: list[object] = []
    reader = SerialReader(dev.port, shipped_profile("cell_counter_cc1"), counts.append).start()
    try:
        dev.write(CellCounterSim().frame("S-1", 2_000_000, 1_840_000))
        dev.write(
            CellCounterSim(faults=Faults(bad_checksum=1.0)).frame("S-2", 2_000_000, 1_500_000)
        )
        dev.write(CellCounterSim().frame("S-3", 1_000_000, 950_000))
        wait_for(lambda: len(counts) >= 2)
        time.sleep(0.1)
    finally:
        reader.stop()
        dev.close()
    assert [c.sample_id for c in counts] == ["S-1", "S-3"]  # type: ignore[attr-defined]
    assert any("checksum" in f for f in reader.stats.faults)
