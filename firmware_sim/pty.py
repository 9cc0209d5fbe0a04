"""A device on a real pseudo-terminal: the edge opens ``device.port`` with pyserial exactly as it
opens a USB-serial adapter; the simulator writes to the master side."""

from __future__ import annotations

import contextlib
import os
import time
import tty
from collections.abc import Iterable


class PtyDevice:
    def __init__(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no line discipline: bytes pass unchanged
        self.port = os.ttyname(self.slave)

    def write(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            n = os.write(self.master, view)
            view = view[n:]

    def write_chunked(self, data: bytes, sizes: Iterable[int], pause: float = 0.0) -> None:
        """Split and delay a frame the way a slow UART or USB bridge does."""
        pos = 0
        for n in sizes:
            if pos >= len(data):
                break
            self.write(data[pos : pos + n])
            pos += n
            if pause:
                time.sleep(pause)
        if pos < len(data):
            self.write(data[pos:])

    def close(self) -> None:
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)
