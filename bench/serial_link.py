"""Serial framing over a real pty: lines/s through pyserial chunked reads + the LineFramer, vs the
raw ceiling of the same chunked reads of the same bytes (counting terminators only)."""

from __future__ import annotations

import os
import sys
import threading
import time
from pathlib import Path

import serial

sys.path.append(str(Path(__file__).resolve().parent))
from _common import emit

from firmware_sim.pty import PtyDevice
from hardware.framing import LineFramer

N = 100_000
LINE = b"]d2010950600013435210TM2611\x1d17270331\r\n"


def _pour(fd: int, data: bytes) -> None:
    """All of ``data`` into the pty's master, as fast as the reader takes it: the kernel makes a
    write wait while the line is full (``PtyDevice.write`` models a device's bounded buffer
    instead, and drops what does not fit)."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def run(framed: bool) -> float:
    dev = PtyDevice()
    ser = serial.serial_for_url(dev.port, timeout=0.1)
    data = LINE * N
    writer = threading.Thread(target=_pour, args=(dev.master, data))
    framer = LineFramer()
    count = 0
    t0 = time.perf_counter()
    writer.start()
    while count < N:
        chunk = ser.read(max(1, ser.in_waiting))
        if framed:
            count += len(framer.feed(chunk))
        else:
            count += chunk.count(b"\n")  # one byte: never split across chunks
    dt = time.perf_counter() - t0
    writer.join()
    ser.close()
    dev.close()
    return N / dt


def main() -> None:
    ceiling = run(False)
    emit(
        "serial lines framed over a pty (chunked reads + LineFramer)", run(True), "lines/s", ceiling
    )


if __name__ == "__main__":
    main()
