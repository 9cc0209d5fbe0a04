"""``sim://scanner/NAME?suffix=crlf&gs=|&symbology=1&wedge=0&garble=0.1&seed=1&remote=1&buffer=4096``

A simulated serial scanner addressed by URL, so a test opens the "device" exactly the way
production opens a port.  Labels are fed with :func:`scan` (``scan("NAME", data)``); the port
returns the bytes the configured scanner would send, faults included.  ``disconnect("NAME")``
makes reads fail as an unplugged USB adapter does.  With ``remote=1`` another process can feed
it too, while it is open (``ctgtp sim scan``; see :mod:`firmware_sim.urlhandler.remote`).
As on a real line, at most ``buffer`` bytes (default 4096) wait unread; what does not fit is lost
(counted in the port's ``lost``).

``sim://replay?file=capture.jsonl&speed=10`` replays a recorded serial device instead
(:mod:`firmware_sim.capture`), optionally with faults.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
import urllib.parse
from pathlib import Path
from typing import Any

from serial.serialutil import PortNotOpenError, SerialBase, SerialException

from firmware_sim.capture import CaptureError, load, paced
from firmware_sim.devices import Faults, ScannerSim
from firmware_sim.faults import Device, Fault, check_params, serial_wire
from firmware_sim.pty import BUFFER
from firmware_sim.urlhandler.remote import Listener, RemoteError

_PORTS: dict[str, Serial] = {}
REPLAY_FAULTS = (Fault.NOISE, Fault.SPLIT, Fault.TRUNCATE, Fault.DUPLICATE, Fault.BAD_CHECKSUM)
_SUFFIX = {"crlf": b"\r\n", "cr": b"\r", "lf": b"\n"}


def scan(name: str, data: str, symbology: str = "]d2") -> None:
    port = _PORTS[name]
    port.feed(port.device.frame(data, symbology))


def disconnect(name: str) -> None:
    _PORTS[name].unplugged = True


class Serial(SerialBase):
    def open(self) -> None:
        if self.port is None:
            raise SerialException("port must be configured before it can be used")
        self._buf = bytearray()
        self.lost = 0
        self._cond = threading.Condition()
        self.unplugged = False
        self.listener: Listener | None = None
        self._replay: threading.Thread | None = None
        self._stop = threading.Event()
        if urllib.parse.urlsplit(str(self.port)).netloc == "replay":
            self._open_replay(str(self.port))
            self.is_open = True
            return
        self.name_key, self.device = self.from_url(str(self.port))
        if self._remote:
            try:
                self.listener = Listener(
                    self.name_key, lambda data, sym: self.feed(self.device.frame(data, sym))
                )
            except (RemoteError, OSError) as e:
                raise SerialException(f"cannot open {self.port}: {e}") from e
        _PORTS[self.name_key] = self
        self.is_open = True

    def _open_replay(self, url: str) -> None:
        """``sim://replay?file=capture.jsonl&speed=10&fault=noise&rate=0.5&seed=1``: the reads
        of a serial capture, paced at ``speed``; with ``fault``, each recorded read is hit with
        that probability (``rate``, default 1) by noise, split, truncate, duplicate or
        bad_checksum (with its default parameters)."""
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(urllib.parse.urlsplit(url).query).items()}
        unknown = sorted(set(q) - {"file", "speed", "fault", "rate", "seed", "buffer"})
        if unknown or "file" not in q:
            raise SerialException(
                f"bad sim://replay URL {url!r}: expected file=CAPTURE and optionally speed, "
                f"fault, rate, seed, buffer; got {', '.join(unknown) or 'no file'}"
            )
        self.name_key = ""
        try:
            self.buffer = int(q.get("buffer", BUFFER))
            speed = float(q.get("speed", 1))
            rate = float(q.get("rate", 1))
            if self.buffer < 1 or not speed > 0 or not 0 <= rate <= 1:
                raise ValueError("expected buffer >= 1, speed > 0 and rate in [0, 1]")
            capture = load(Path(q["file"]))
            if capture.kind != "serial":
                raise CaptureError(f"{q['file']} is an {capture.kind} capture; expected serial")
            fault = Fault(q["fault"]) if "fault" in q else None
            if fault is not None and fault not in REPLAY_FAULTS:
                raise ValueError(f"fault {fault}; expected one of {', '.join(REPLAY_FAULTS)}")
        except (ValueError, OSError) as e:
            raise SerialException(f"cannot open {url!r}: {e}") from e
        rng = random.Random(int(q.get("seed", 1)))
        params = {} if fault is None else check_params(Device.COUNTER, fault, None, "replay")[0]

        def run() -> None:
            for r in paced(capture.records, speed, self._stop):
                chunks = [(r.data, 0.0)]
                if fault is not None and rng.random() < rate:
                    with contextlib.suppress(ValueError):  # not a CC1 line: no checksum
                        chunks = serial_wire(fault, params, [r.data], b"\r\n", rng)
                for chunk, pause in chunks:
                    self.feed(chunk)
                    if pause and self._stop.wait(pause):
                        return

        self._replay = threading.Thread(target=run, daemon=True, name="sim-replay")
        self._replay.start()

    def from_url(self, url: str) -> tuple[str, ScannerSim]:
        parts = urllib.parse.urlsplit(url)
        if parts.scheme != "sim" or parts.netloc != "scanner":
            raise SerialException(f"expected sim://scanner/NAME?..., got {url!r}")
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(parts.query).items()}
        self._remote = q.get("remote", "0") == "1"
        try:
            self.buffer = int(q.get("buffer", BUFFER))
            if self.buffer < 1:
                raise ValueError(f"buffer is {self.buffer}; expected at least 1 byte")
            faults = Faults(garble=float(q.get("garble", 0)), truncate=float(q.get("truncate", 0)))
            if "seed" in q:
                faults.rng.seed(int(q["seed"]))
            return parts.path.strip("/") or "scanner", ScannerSim(
                suffix=_SUFFIX[q.get("suffix", "crlf")],
                gs_substitute=q.get("gs", ""),
                symbology_ids=q.get("symbology", "1") == "1",
                keyboard_wedge=q.get("wedge") == "1",
                faults=faults,
            )
        except (KeyError, ValueError) as e:
            raise SerialException(f"bad sim:// option in {url!r}: {e}") from e

    def feed(self, data: bytes) -> None:
        with self._cond:
            room = max(0, self.buffer - len(self._buf))
            self.lost += max(0, len(data) - room)
            self._buf += data[:room]
            self._cond.notify_all()

    def close(self) -> None:
        self.is_open = False
        stop = getattr(self, "_stop", None)
        if stop is not None:
            stop.set()
        listener = getattr(self, "listener", None)
        if listener is not None:
            listener.close()
            self.listener = None
        if _PORTS.get(getattr(self, "name_key", "")) is self:
            _PORTS.pop(self.name_key, None)

    def _reconfigure_port(self) -> None:
        pass

    @property
    def in_waiting(self) -> int:
        if not self.is_open:
            raise PortNotOpenError()
        return len(self._buf)

    def read(self, size: int = 1) -> bytes:
        if not self.is_open:
            raise PortNotOpenError()
        deadline = None if self.timeout is None else time.monotonic() + self.timeout
        with self._cond:
            while not self._buf:
                if self.unplugged:
                    raise SerialException("device disconnected")
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    return b""
                self._cond.wait(remaining if remaining is not None else 0.1)
            out = bytes(self._buf[:size])
            del self._buf[:size]
            return out

    def write(self, data: Any) -> int:
        return len(data)

    def reset_input_buffer(self) -> None:
        with self._cond:
            self._buf.clear()

    def reset_output_buffer(self) -> None:
        pass
