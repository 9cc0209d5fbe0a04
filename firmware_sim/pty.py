"""A device on a real pseudo-terminal: the edge opens ``device.port`` with pyserial exactly as it
opens a USB-serial adapter; the simulator writes to the master side.

A real line loses what nobody reads: a UART's driver holds a bounded buffer and drops the bytes
that do not fit (an overrun).  A pty would instead hold everything written until its kernel queue
blocks the writer, so :meth:`PtyDevice.write` keeps at most ``buffer`` unread bytes on the line and
counts the rest in :attr:`PtyDevice.lost`.

With ``link`` the port is a stable path (a symbolic link, as ``/dev/serial/by-id/...`` is for a
USB adapter): :meth:`unplug` closes the pty and removes the link, :meth:`replug` opens a new pty
behind the same path, so a reader that reopens its port by name finds the device again.
"""

from __future__ import annotations

import array
import contextlib
import fcntl
import os
import termios
import time
import tty
from collections.abc import Iterable
from pathlib import Path

BUFFER = 4000  # bytes a serial line holds unread by default (a UART driver's buffer is ~4 KB)
# What FIONREAD can see: the pty's line discipline holds 4096 bytes, more waits unseen behind it.
PTY_MAX = 4095
SETTLE_S = 0.01  # how long a write waits for the kernel to move its bytes where FIONREAD sees


class PtyDevice:
    def __init__(self, *, buffer: int = BUFFER, link: Path | None = None) -> None:
        if not 1 <= buffer <= PTY_MAX:
            raise ValueError(f"buffer is {buffer}; expected 1 to {PTY_MAX} bytes")
        self.buffer = buffer
        self.link = link
        self.lost = 0  # bytes dropped because the line's buffer was full
        self.plugged = False
        self._plug()
        self.port = str(link) if link is not None else self.tty

    def _plug(self) -> None:
        self.master, self.slave = os.openpty()
        tty.setraw(self.slave)  # no echo, no line discipline: bytes pass unchanged
        self.tty = os.ttyname(self.slave)
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()
            self.link.symlink_to(self.tty)
        self.plugged = True

    def unread(self) -> int:
        """Bytes written and not read yet by whoever has the port open."""
        n = array.array("i", [0])
        fcntl.ioctl(self.slave, termios.FIONREAD, n)
        return int(n[0])

    def write(self, data: bytes) -> None:
        if not self.plugged:
            self.lost += len(data)  # nothing at the other end of the cable
            return
        before = self.unread()
        room = max(0, self.buffer - before)
        if room < len(data):
            self.lost += len(data) - room
            data = data[:room]
        view = memoryview(data)
        while view:
            n = os.write(self.master, view)
            view = view[n:]
        # The kernel hands bytes written to the master on to the slave's queue a moment later;
        # until then FIONREAD does not count them and the next write would overfill the line.
        end = time.monotonic() + SETTLE_S
        while data and self.unread() == before and time.monotonic() < end:
            time.sleep(0.0002)

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

    def unplug(self) -> None:
        """The cable is pulled: the port goes away (a reader's next read fails)."""
        self._close_fds()
        if self.link is not None:
            with contextlib.suppress(FileNotFoundError):
                self.link.unlink()

    def replug(self) -> None:
        """Plugged back in: a new pty behind the same ``link`` (needs one to be found again)."""
        if not self.plugged:
            self._plug()

    def _close_fds(self) -> None:
        self.plugged = False
        for fd in (self.master, self.slave):
            with contextlib.suppress(OSError):
                os.close(fd)

    def close(self) -> None:
        self.unplug()
