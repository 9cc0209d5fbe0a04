"""Serial devices: pyserial with chunked reads and the framer from ``hardware``.

Reads whatever is waiting (not byte-at-a-time ``readline``), frames lines with
:class:`hardware.framing.LineFramer`; a line without its terminator is dropped and logged, never
delivered.  A scanner whose profile sends symbology identifiers (``symbology_identifiers``) is
resynchronised on the next identifier too: a scan cut short costs that scan only, never the good
scan after it.  For scanners, a line that is not printable text or not a readable GS1 / ISBT 128
message is a device fault: logged and dropped (the operator rescans), never recorded as a scan.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import serial

from ebr_core.errors import IdentifierError
from ebr_core.identifiers import parse_scan
from hardware.cellcounter import CellCount, parse_cc1
from hardware.errors import FrameError
from hardware.framing import LineFramer
from hardware.profile import Profile

log = logging.getLogger("ctgtp.edge.serial")


FAULTS_KEPT = 1000  # the most recent faults a reader keeps (a station runs for months)


@dataclass
class SerialStats:
    frames: int = 0
    delivered: int = 0
    faults: list[str] = field(default_factory=list)  # the last FAULTS_KEPT
    fault_count: int = 0  # all of them

    def fault(self, text: str) -> None:
        self.fault_count += 1
        self.faults.append(text)
        if len(self.faults) > FAULTS_KEPT:
            del self.faults[: len(self.faults) - FAULTS_KEPT]


class SerialReader:
    """Reads one serial device in a thread and delivers decoded frames to ``deliver``."""

    def __init__(
        self,
        port: str,
        profile: Profile,
        deliver: Callable[[object], None],
        *,
        reconnect: bool = True,
        retry_s: float = 0.2,
        wait_for_port: bool = False,
        exclusive: bool = False,
    ) -> None:
        """``wait_for_port``: a port that cannot be opened now is retried by the reader's thread
        (a station starting before its scanner is plugged in) instead of raising here.
        ``exclusive``: the port is locked (``flock``) while open, so no other process reads it,
        or flushes its input by opening it."""
        self.exclusive = exclusive
        self.port = port
        self.profile = profile
        self.deliver = deliver
        self.reconnect = reconnect
        self.retry_s = retry_s
        self.framer = LineFramer(
            profile.terminator,
            profile.prefix,
            symbology_identifiers=bool(profile.framing.get("symbology_identifiers", False)),
            frame_start=profile.frame_start,
        )
        self.stats = SerialStats()
        self.reconnects = 0
        # Whether the port is open now, and why not when it is not (for a station's devices).
        self.connected = False
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self.ser: serial.Serial | None = None
        try:
            self.ser = self._open()
            self.connected = True
        except (serial.SerialException, OSError) as e:
            if not wait_for_port:
                raise
            self.last_error = f"cannot open {port}: {e}"

    def _open(self) -> serial.Serial:
        # serial_for_url returns a Serial or a URL handler's Serial subclass (sim://, loop://).
        return serial.serial_for_url(
            self.port,
            baudrate=int(self.profile.serial.get("baudrate", 9600)),
            timeout=0.05,
            exclusive=True if self.exclusive else None,
        )

    def start(self) -> SerialReader:
        self._thread.start()
        return self

    def _run(self) -> None:
        if self.ser is None and not self._reopen():
            return
        while not self._stop.is_set():
            assert self.ser is not None
            try:
                chunk = self.ser.read(max(1, self.ser.in_waiting))
            except (serial.SerialException, OSError) as e:
                self.connected, self.last_error = False, f"port error: {e}"
                self.stats.fault(f"port error: {e}")
                log.warning("serial port error on %s: %s", self.profile.name, e)
                # A partial line from before the unplug must not be glued to the next frame.
                rest = self.framer.close()
                if rest:
                    self.stats.fault(f"line without terminator dropped: {rest[:40]!r}")
                if not self.reconnect or not self._reopen():
                    break
                continue
            if chunk:
                lines = self.framer.feed(chunk)
                self._log_fragments()
                for line in lines:
                    self._frame(line)

    def _log_fragments(self) -> None:
        for rest in self.framer.take_fragments():
            self.stats.fault(
                f"line without terminator dropped (resynchronised on the next frame): {rest[:40]!r}"
            )
            log.warning("%s: dropped unterminated line %r", self.profile.name, rest[:40])

    def _reopen(self) -> bool:
        """Reopen the same port (a USB adapter's by-id path comes back when replugged)."""
        first = self.ser is None  # never opened: the first open is not a reconnection
        if self.ser is not None:
            with contextlib.suppress(serial.SerialException, OSError):
                self.ser.close()
        while not self._stop.wait(self.retry_s):
            try:
                self.ser = self._open()
            except (serial.SerialException, OSError) as e:
                self.last_error = f"cannot open {self.port}: {e}"
                continue
            self.connected, self.last_error = True, None
            if not first:
                self.reconnects += 1
                log.info("%s: reconnected to %s", self.profile.name, self.port)
            return True
        return False

    def _frame(self, line: bytes) -> None:
        self.stats.frames += 1
        try:
            item = self.decode(line)
        except (FrameError, IdentifierError, UnicodeDecodeError) as e:
            self.stats.fault(str(e))
            log.warning("%s: dropped frame %r: %s", self.profile.name, line[:40], e)
            return
        self.stats.delivered += 1
        self.deliver(item)

    def decode(self, line: bytes) -> object:
        if self.profile.protocol == "cc1":
            return parse_cc1(line)
        if any(b >= 0x7F or (b < 0x20 and b != 0x1D) for b in line):
            raise FrameError(f"scan holds non-printable bytes (line noise): {line[:40]!r}")
        text = line.decode("ascii")
        sym = self.profile.symbology  # what the scanner is set to read (profile), never a guess
        parse_scan(text, gs_substitutes=self.profile.gs_substitute, symbology=sym)  # sanity
        if sym is not None and not text.startswith(sym):
            text = sym + text  # the step engine sees the identifier the device vouched for
        return text

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(2)
        rest = self.framer.close()
        if rest:
            self.stats.fault(f"line without terminator dropped: {rest[:40]!r}")
            log.warning("%s: dropped unterminated line %r", self.profile.name, rest[:40])
        if self.ser is not None:
            self.ser.close()
        self.connected = False


__all__ = ["CellCount", "SerialReader", "SerialStats"]
