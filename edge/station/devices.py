"""A station's devices: each wraps one transport (``edge.transports``), keeps it connected and
says how it is (:class:`~edge.kiosk.port.DeviceState`).

* a serial scanner hands every code it reads to the agent (``on_scan``), which routes it to
  the kiosk;
* a serial instrument (a CC1 cell counter) records its results, bound to the running batch;
* a camera reads frames from a device index or a video file (or is fed frames in-process:
  ``sim://camera``) and hands every code it reads to the agent;
* an MQTT instrument (the bioreactor) is ingested exactly once (``MqttIngest``), bound to the
  running batch.

Serial ports reopen themselves after an unplug (the same path: a ``/dev/serial/by-id/`` link
comes back when the adapter is replugged), the MQTT client reconnects to a restarted broker (its
persistent session keeps what was published meanwhile), a camera that stops delivering frames is
reopened.  None of them needs its device present when the station starts.
"""

from __future__ import annotations

import logging
import threading
import urllib.parse
from collections import deque
from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import numpy as np
import serial

from ebr_core.mbr import TelemetryLimit
from ebr_core.record import Event
from edge.kiosk.port import DeviceState
from edge.ledger import Ledger
from edge.station.config import SIM_CAMERA, redact
from edge.transports.record import Context, record_cell_count
from edge.transports.serial import CellCount, SerialReader
from hardware.profile import Profile

log = logging.getLogger("ctgtp.edge.station")
CAMERA_RETRY_S = 2.0
ALARMS_KEPT = 5

Clock = Callable[[], datetime]


class Device(Protocol):
    name: str
    kind: str

    def start(self) -> None: ...

    def stop(self) -> None: ...

    def state(self) -> DeviceState: ...


def allow_sim_urls(port: str) -> None:
    """``sim://`` is the simulator's pyserial scheme.  pyserial finds a URL handler by package
    name (its plug-in mechanism), so the station names the simulator's package for that scheme
    and imports nothing of it (the apps stay independent)."""
    if port.startswith("sim://") and "firmware_sim.urlhandler" not in (
        serial.protocol_handler_packages
    ):
        serial.protocol_handler_packages.append("firmware_sim.urlhandler")


class _Observed:
    """The last reading and the open alarms a device's panel shows."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.last_reading: str | None = None
        self.last_at: datetime | None = None
        self.alarms: deque[str] = deque(maxlen=ALARMS_KEPT)

    def saw(self, text: str) -> None:
        self.last_reading, self.last_at = text, self.clock()


class _OnSerialPort:
    """A device behind one serial port, read by a :class:`SerialReader` on its own thread."""

    kind: str
    name: str
    port: str
    seen: _Observed
    reader: SerialReader

    def _open(self, name: str, port: str, profile: Profile, clock: Clock) -> None:
        allow_sim_urls(port)
        self.name, self.port = name, port
        self.seen = _Observed(clock)
        self.reader = SerialReader(port, profile, self._got, wait_for_port=True, exclusive=True)

    def _got(self, item: object) -> None:
        raise NotImplementedError

    def start(self) -> None:
        self.reader.start()

    def stop(self) -> None:
        self.reader.stop()

    def state(self) -> DeviceState:
        r = self.reader
        detail = self.port if r.connected else (r.last_error or f"opening {self.port}")
        return DeviceState(
            self.name, self.kind, r.connected, detail, self.seen.last_reading, self.seen.last_at,
            tuple(self.seen.alarms),
        )  # fmt: skip


class SerialScanner(_OnSerialPort):
    kind = "serial_scanner"

    def __init__(
        self, name: str, port: str, profile: Profile, on_scan: Callable[[str, str], None],
        clock: Clock,
    ) -> None:  # fmt: skip
        self.on_scan = on_scan
        self._open(name, port, profile, clock)

    def _got(self, item: object) -> None:
        raw = str(item)
        self.seen.saw(f"scan {raw}")
        self.on_scan(self.name, raw)


class SerialInstrument(_OnSerialPort):
    """A CC1 cell counter: each result recorded (once per sample id), bound to the running
    batch and step."""

    kind = "serial_instrument"

    def __init__(
        self, name: str, port: str, profile: Profile, ledger: Ledger, context: Context,
        clock: Clock,
    ) -> None:  # fmt: skip
        self.ledger, self.context = ledger, context
        self.recorded = 0
        self._open(name, port, profile, clock)

    def _got(self, item: object) -> None:
        assert isinstance(item, CellCount)
        try:
            ev = record_cell_count(self.ledger, item, self.context, device=self.name)
        except Exception as e:  # the ledger refused (closed, disk): say so, loudly
            self.seen.alarms.append(f"result {item.sample_id} NOT recorded: {e}")
            log.error(
                "%s: result %s not recorded: %s", self.name, item.sample_id, e,
                extra={"event": "error", "fields": {"device": self.name}},
            )  # fmt: skip
            return
        self.recorded += 1
        self.seen.saw(
            f"cell count {item.sample_id}: {item.viable_per_ml} viable /mL, {item.viability_pct} %"
        )
        log.info(
            "%s: cell count %s recorded", self.name, item.sample_id,
            extra={"event": "reading.recorded", "fields": {
                "device": self.name, "seq": ev.seq, "batch_id": ev.batch_id}},
        )  # fmt: skip


class Camera:
    """Codes read from camera frames: a device index (reopened when it stops delivering), a
    video file (played once), or ``sim://camera`` (frames given to :meth:`feed`)."""

    kind = "camera"

    def __init__(
        self, name: str, source: int | str, on_scan: Callable[[str, str], None], clock: Clock
    ) -> None:
        from edge.transports.camera import CameraScanner

        self.name, self.source, self.on_scan = name, source, on_scan
        self.seen = _Observed(clock)
        self.fed = source == SIM_CAMERA
        # A live camera may blur a label still in view for a frame or two (see CameraScanner).
        self.scanner = CameraScanner.live() if isinstance(source, int) else CameraScanner()
        self.connected = self.fed
        self.last_error: str | None = None
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._run, daemon=True, name=f"camera-{name}")

    def feed(self, frame: np.ndarray) -> list[str]:
        """Read one frame; every code that came into view is handed on, and returned."""
        with self._lock:
            new = self.scanner.process(frame)
        for raw in new:
            self.seen.saw(f"scan {raw}")
            self.on_scan(self.name, raw)
        return new

    def _run(self) -> None:
        import cv2

        while not self._stop.is_set():
            cap = cv2.VideoCapture(self.source)
            try:
                if not cap.isOpened():
                    self.connected, self.last_error = False, f"cannot open camera {self.source}"
                else:
                    self.connected, self.last_error = True, None
                    while not self._stop.is_set():
                        ok, img = cap.read()
                        if not ok:
                            break
                        self.feed(img)
                    self.connected = False
                    self.last_error = (
                        "the video file has ended"
                        if isinstance(self.source, str)
                        else f"camera {self.source} stopped delivering frames"
                    )
            finally:
                cap.release()
            if isinstance(self.source, str) and self.last_error == "the video file has ended":
                return  # a file is played once
            self._stop.wait(CAMERA_RETRY_S)

    def start(self) -> None:
        if not self.fed:
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(5)
        self.connected = False

    def state(self) -> DeviceState:
        where = "frames fed in-process" if self.fed else f"camera {self.source}"
        detail = where if self.connected else (self.last_error or f"opening {where}")
        return DeviceState(
            self.name, self.kind, self.connected, detail, self.seen.last_reading,
            self.seen.last_at, tuple(self.seen.alarms),
        )  # fmt: skip


class MqttInstrument:
    """An instrument publishing over MQTT (the bioreactor): readings, states and alarms
    recorded exactly once and bound to the running batch; see ``edge.transports.mqtt``."""

    kind = "mqtt"

    def __init__(
        self, name: str, broker: str, ledger: Ledger, unit_id: str, context: Context,
        limits: dict[str, TelemetryLimit], clock: Clock,
    ) -> None:  # fmt: skip
        from edge.transports.mqtt import MqttIngest

        self.name, self.broker = name, redact(broker)
        self.seen = _Observed(clock)
        u = urllib.parse.urlsplit(broker)
        tls = u.scheme == "mqtts"
        self.ingest = MqttIngest(
            ledger,
            u.hostname or "127.0.0.1",
            u.port or (8883 if tls else 1883),
            unit_id,
            context=context,
            limits=limits,
            wait_for_broker=True,
            username=urllib.parse.unquote(u.username) if u.username else None,
            password=urllib.parse.unquote(u.password) if u.password else None,
            tls=tls,
            on_recorded=self._recorded,
        )

    def _recorded(self, events: list[Event]) -> None:
        for e in events:
            p: dict[str, Any] = e.payload
            if e.kind == "reading.recorded":
                v = p.get("value") or {}
                self.seen.saw(f"{p.get('channel')} {v.get('value')} {v.get('unit')}")
            elif e.kind == "alarm.raised":
                self.seen.alarms.append(f"{p.get('code')}: {p.get('message')}")
            elif e.kind == "process.state":
                self.seen.saw(f"state {p.get('state')}")

    def start(self) -> None:
        self.ingest.start()

    def stop(self) -> None:
        self.ingest.drain()

    def state(self) -> DeviceState:
        i = self.ingest
        up = i.connected and i.subscribed.is_set() and i.error is None
        waiting = f"connecting to {self.broker}"
        detail = self.broker if up else (i.error or i.last_error or waiting)
        alarms = tuple(self.seen.alarms) + ((i.error,) if i.error else ())
        return DeviceState(
            self.name, self.kind, up, detail, self.seen.last_reading, self.seen.last_at, alarms
        )
