"""A serial line loses what nobody reads (issue 26): a bounded buffer on the pty and on the
``sim://`` port, with the loss counted, and what is read after it arrives whole."""

from __future__ import annotations

import os
import select

import pytest
import serial

import firmware_sim  # noqa: F401 - sim:// URLs
from firmware_sim.devices import ScannerSim
from firmware_sim.pty import PtyDevice
from firmware_sim.urlhandler import protocol_sim

pytestmark = pytest.mark.hil
FRAME = ScannerSim().frame("&/CHA999926ABC123", "]C0")  # 22 bytes


def _drain(fd: int) -> bytes:
    out = b""
    while select.select([fd], [], [], 0.2)[0]:
        out += os.read(fd, 65536)
    return out


@pytest.mark.parametrize("buffer", [1, 64, 4000])
def test_a_pty_keeps_at_most_its_buffer_unread(buffer: int) -> None:
    dev = PtyDevice(buffer=buffer)
    reader = os.open(dev.tty, os.O_RDONLY | os.O_NOCTTY)
    try:
        for _ in range(1000):  # 22,000 bytes while nobody reads
            dev.write(FRAME)
        kept = _drain(reader)
        assert len(kept) == min(buffer, 22_000)
        assert dev.lost == 22_000 - len(kept)
        assert kept == (FRAME * 1000)[: len(kept)]  # the oldest kept, the newest lost (overrun)
        dev.write(FRAME)  # read again: a new frame arrives whole
        assert _drain(reader) == FRAME[:buffer]
    finally:
        os.close(reader)
        dev.close()


def test_the_sim_url_keeps_at_most_its_buffer_unread() -> None:
    port = serial.serial_for_url("sim://scanner/lossy?buffer=100", timeout=0.2)
    try:
        for _ in range(10):
            protocol_sim.scan("lossy", "&/CHA999926ABC123", "]C0")
        assert port.read(1000) == (FRAME * 10)[:100]
        assert port.lost == 120
        protocol_sim.scan("lossy", "&/CHA999926ABC123", "]C0")
        assert port.read(1000) == FRAME
    finally:
        port.close()


def test_a_bad_buffer_is_refused() -> None:
    with pytest.raises(serial.SerialException, match="buffer is 0; expected at least 1 byte"):
        serial.serial_for_url("sim://scanner/x?buffer=0")
    with pytest.raises(ValueError, match="buffer is 0; expected 1 to 4095 bytes"):
        PtyDevice(buffer=0)
