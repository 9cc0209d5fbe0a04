"""Sans-IO line framing: bytes in, complete lines out, whatever the chunking.

A line is only a line once its terminator has arrived: bytes after the last terminator are held,
and :meth:`LineFramer.close` returns them as a *dropped* fragment (a truncated line is never a
frame).  An over-long line is dropped whole (a device that never sends its terminator must not
grow memory).

Resynchronisation: when the device sends an AIM symbology identifier at the start of every scan
(``]`` + code letter + modifier digit, e.g. ``]C0``, ``]d2``; the scanner profiles'
``symbology_identifiers``), a frame start seen before the terminator of the frame being held ends
that frame: the bytes before it are dropped as a fragment, and framing restarts at the new frame.
So a scan cut short (``]C0&/CHA999926AB``) followed by a good one loses the cut one only, never
the good one.  A device whose every frame starts with a fixed marker (the CC1 cell counter's
``$CC1,``; the profile's ``frame_start``) resynchronises on that marker the same way.  Without
either, the terminator is the only point of resynchronisation.
Dropped fragments are kept (the last :data:`KEEP_FRAGMENTS`) for the transport to log.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

KEEP_FRAGMENTS = 32
# An AIM symbology identifier: ']' + symbology code character + modifier digit.
AIM_START = rb"\][A-Za-z][0-9]"


@dataclass
class LineFramer:
    terminator: bytes = b"\r\n"
    prefix: bytes = b""
    max_len: int = 4096
    symbology_identifiers: bool = False  # every frame starts with an AIM identifier
    frame_start: bytes = b""  # every frame starts with these bytes (e.g. b"$CC1,")
    _buf: bytearray = field(default_factory=bytearray)
    dropped: int = 0
    fragments: list[bytes] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._start: re.Pattern[bytes] | None = None
        if self.frame_start:
            self._start = re.compile(re.escape(self.prefix + self.frame_start))
        elif self.symbology_identifiers:
            self._start = re.compile(re.escape(self.prefix) + AIM_START)

    def _drop(self, fragment: bytes) -> None:
        self.dropped += 1
        self.fragments.append(fragment)
        del self.fragments[:-KEEP_FRAGMENTS]

    def _next_start(self, end: int) -> int:
        """Where the next frame starts after the held frame's first byte (-1: none before end)."""
        if self._start is None:
            return -1
        m = self._start.search(self._buf, 1, end)
        return m.start() if m else -1

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        t = self.terminator
        while True:
            i = self._buf.find(t)
            s = self._next_start(i if i >= 0 else len(self._buf))
            if s > 0:  # a new frame starts before this one ended: this one was cut short
                self._drop(bytes(self._buf[:s]))
                del self._buf[:s]
                continue
            if i < 0:
                break
            line = bytes(self._buf[:i])
            del self._buf[: i + len(t)]
            if self.prefix and line.startswith(self.prefix):
                line = line[len(self.prefix) :]
            if len(line) > self.max_len:
                self._drop(line[:64])
                continue
            out.append(line)
        if len(self._buf) > self.max_len:
            self._drop(bytes(self._buf[:64]))
            self._buf.clear()
        return out

    def take_fragments(self) -> list[bytes]:
        """The fragments dropped since the last call (for the log)."""
        out, self.fragments = self.fragments, []
        return out

    def close(self) -> bytes:
        """Bytes that never got their terminator (dropped, returned for the log)."""
        rest = bytes(self._buf)
        self._buf.clear()
        if rest:
            self.dropped += 1
        return rest
