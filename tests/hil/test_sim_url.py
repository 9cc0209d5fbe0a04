"""The same scanner through a pyserial URL (``sim://``), and reconnecting after a disconnect."""

from __future__ import annotations

import time

import pytest

from edge.transports.serial import SerialReader
from firmware_sim.devices import ScannerSim
from firmware_sim.pty import PtyDevice
from firmware_sim.urlhandler import protocol_sim, register
from hardware.profile import shipped_profile

pytestmark = pytest.mark.hil
COI = "&/CHA999926ABC123"


def wait_for(cond, timeout: float = 3.0) -> bool:  # type: ignore[no-untyped-def]
    end = time.monotonic() + timeout
    while time.monotonic() < end and not cond():
        time.sleep(0.02)
    return bool(cond())


def test_sim_url_scanner_with_pipe_gs_and_a_keyboard_wedge() -> None:
    register()
    got: list[str] = []
    r = SerialReader(
        "sim://scanner/s1?suffix=cr&gs=|",
        shipped_profile("scanner_serial_pipe_gs"),
        lambda s: got.append(str(s)),
    ).start()
    protocol_sim.scan("s1", "010950600013435210TM2611\x1d17270331")
    assert wait_for(lambda: len(got) == 1)
    r.stop()
    assert got == ["]d2010950600013435210TM2611|17270331"]
    wedge: list[str] = []
    r = SerialReader(
        # A keyboard wedge types what it reads: no GS, and no symbology identifier either (a scan
        # that carries ]d2 or ]C1 transmits every FNC1 separator as GS, and is trusted).
        "sim://scanner/s2?wedge=1&symbology=0",
        shipped_profile("scanner_serial_generic"),
        lambda s: wedge.append(str(s)),
    ).start()
    protocol_sim.scan("s2", "010950600013435210TM2611\x1d21SER9")  # GS dropped by the wedge
    time.sleep(0.3)
    r.stop()
    assert wedge == []  # the ambiguous split is refused, never guessed
    assert any("cannot be split without guessing" in f for f in r.stats.faults)


def test_reconnect_after_a_serial_disconnect() -> None:
    profile = shipped_profile("scanner_serial_generic")
    got: list[str] = []
    dev = PtyDevice()
    r = SerialReader(dev.port, profile, lambda s: got.append(str(s))).start()
    dev.write(ScannerSim().frame(COI, "]C0"))
    assert wait_for(lambda: len(got) == 1)
    dev.close()  # unplugged
    assert wait_for(lambda: any("port error" in f for f in r.stats.faults))
    r.stop()
    dev2 = PtyDevice()  # plugged back in (a new device node, as USB adapters get)
    r2 = SerialReader(dev2.port, profile, lambda s: got.append(str(s))).start()
    dev2.write(ScannerSim().frame(COI, "]C0"))
    assert wait_for(lambda: len(got) == 2)
    r2.stop()
    dev2.close()
    assert got == [f"]C0{COI}"] * 2


def test_the_reader_reopens_the_same_port_after_an_unplug() -> None:
    register()
    got: list[str] = []
    url = "sim://scanner/s3"
    r = SerialReader(
        url, shipped_profile("scanner_serial_generic"), lambda s: got.append(str(s))
    ).start()
    protocol_sim.scan("s3", COI, "]C0")
    assert wait_for(lambda: len(got) == 1)
    protocol_sim.disconnect("s3")  # unplugged; the reader retries the same URL
    assert wait_for(lambda: r.reconnects == 1)
    protocol_sim.scan("s3", COI, "]C0")  # plugged back in under the same name
    assert wait_for(lambda: len(got) == 2)
    r.stop()
    assert any("device disconnected" in f for f in r.stats.faults)


def test_ctgtp_sim_scan_reaches_a_remote_sim_scanner_from_another_process() -> None:
    """``sim://scanner/NAME?remote=1`` listens while open; ``ctgtp sim scan`` (a separate
    process) pulls its trigger; the bytes arrive through the reader like any scan."""
    import subprocess
    import sys

    register()
    got: list[str] = []
    r = SerialReader(
        "sim://scanner/remote-t1?remote=1",
        shipped_profile("scanner_serial_generic"),
        lambda s: got.append(str(s)),
    ).start()
    try:
        cmd = [sys.executable, "-m", "ctgtp", "sim", "scan", "--unit", "remote-t1"]
        out = subprocess.run(
            [*cmd, "010950600013435210TM2611<GS>17270331"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert out.returncode == 0, out.stderr
        assert out.stdout == "remote-t1: scanned ]d2010950600013435210TM2611<GS>17270331\n"
        out = subprocess.run([*cmd, f"]C0{COI}"], capture_output=True, text=True, check=False)
        assert out.returncode == 0, out.stderr
        assert wait_for(lambda: len(got) == 2)
        assert got == ["]d2010950600013435210TM2611\x1d17270331", f"]C0{COI}"]
        bad = subprocess.run(
            [*cmd, "--symbology", "d2", "X"], capture_output=True, text=True, check=False
        )
        assert bad.returncode == 1
        assert "symbology 'd2' is not an AIM identifier such as ]d2 or ]C0" in bad.stderr
    finally:
        r.stop()
    gone = subprocess.run(
        [sys.executable, "-m", "ctgtp", "sim", "scan", "--unit", "remote-t1", "X"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert gone.returncode == 1
    assert "no simulated scanner 'remote-t1' is running" in gone.stderr
    assert got == ["]d2010950600013435210TM2611\x1d17270331", f"]C0{COI}"]


def test_a_remote_request_that_is_not_a_scan_is_refused() -> None:
    import socket

    from firmware_sim.urlhandler.remote import socket_path

    register()
    r = SerialReader(
        "sim://scanner/remote-t2?remote=1", shipped_profile("scanner_serial_generic"), print
    ).start()
    try:
        for request, answer in [
            (b"not json\n", "Expecting value"),
            (b'["x"]\n', "expected a JSON object"),
            (b'{"data": 5, "symbology": "]d2"}\n', "expected data and symbology as text"),
            (b'{"data": "A\\u0000", "symbology": "]C0"}\n', "the code holds U+0000"),
        ]:
            with socket.socket(socket.AF_UNIX) as s:
                s.connect(str(socket_path("remote-t2")))
                s.sendall(request)
                assert answer in s.recv(4096).decode()
    finally:
        r.stop()
