"""Sans-IO line framing: bytes in, complete lines out, whatever the chunking.

A line is only a line once its terminator has arrived: bytes after the last terminator are held,
and :meth:`LineFramer.close` returns them as a *dropped* fragment (a truncated line is never a
frame).  An over-long line is dropped whole (a device that never sends its terminator must not
grow memory).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class LineFramer:
    terminator: bytes = b"\r\n"
    prefix: bytes = b""
    max_len: int = 4096
    _buf: bytearray = field(default_factory=bytearray)
    dropped: int = 0

    def feed(self, data: bytes) -> list[bytes]:
        self._buf += data
        out: list[bytes] = []
        t = self.terminator
        while True:
            i = self._buf.find(t)
            if i < 0:
                break
            line = bytes(self._buf[:i])
            del self._buf[: i + len(t)]
            if self.prefix and line.startswith(self.prefix):
                line = line[len(self.prefix) :]
            if len(line) > self.max_len:
                self.dropped += 1
                continue
            out.append(line)
        if len(self._buf) > self.max_len:
            self._buf.clear()
            self.dropped += 1
        return out

    def close(self) -> bytes:
        """Bytes that never got their terminator (dropped, returned for the log)."""
        rest = bytes(self._buf)
        self._buf.clear()
        if rest:
            self.dropped += 1
        return rest
