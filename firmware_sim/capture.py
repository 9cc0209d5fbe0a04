"""Captures of real devices (and of the simulators): bytes or MQTT messages with their timing.

A capture is JSON Lines.  The first line says what it is::

    {"format": "ctgtp-capture", "version": 1, "kind": "serial", "source": "/dev/ttyUSB0",
     "recorded_at": "2026-11-30T10:00:00.000000Z", "note": "..."}

then one line per read (serial) or message (MQTT), ``t`` in seconds since the recording began::

    {"t": 0.412, "data": "XUMwJi9DSEE5OTk5MjZBQkMxMjMNCg=="}                  (serial, base64)
    {"t": 0.5, "topic": "units/U/telemetry/ph", "payload": "eyJtc2...", "qos": 1}  (MQTT)

Bytes are base64 so a capture holds line noise and broken frames exactly as they came.  Reading a
capture checks every line and names the first wrong one with what was expected.  Recording is
:func:`record_serial` / :func:`record_mqtt` (``ctgtp sim record``, ``ctgtp sim record-mqtt``);
replay is ``sim://replay?file=...&speed=10`` (serial, :mod:`firmware_sim.urlhandler.protocol_sim`)
and :func:`replay_mqtt` (``ctgtp sim replay-mqtt``).
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, Literal

FORMAT = "ctgtp-capture"
VERSION = 1
Kind = Literal["serial", "mqtt"]


class CaptureError(ValueError):
    """A capture file that cannot be read: the line and what was expected."""


@dataclass(frozen=True)
class Record:
    t: float
    data: bytes  # serial bytes, or the MQTT payload
    topic: str | None = None
    qos: int = 1


@dataclass(frozen=True)
class Capture:
    kind: Kind
    source: str
    records: tuple[Record, ...]
    note: str = ""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Writer:
    """Appends records to a capture file, flushed line by line (a recording cut short keeps
    what it had)."""

    def __init__(self, out: IO[str], kind: Kind, source: str, note: str = "") -> None:
        self.out = out
        self.kind = kind
        self.start = time.monotonic()
        self.count = 0
        self._lock = threading.Lock()
        head = {"format": FORMAT, "version": VERSION, "kind": kind, "source": source}
        self._line(head | {"recorded_at": _now(), "note": note})

    def _line(self, doc: dict[str, Any]) -> None:
        with self._lock:
            self.out.write(json.dumps(doc, separators=(",", ":")) + "\n")
            self.out.flush()

    def serial(self, data: bytes, t: float | None = None) -> None:
        at = round(time.monotonic() - self.start if t is None else t, 6)
        self._line({"t": at, "data": base64.b64encode(data).decode()})
        self.count += 1

    def mqtt(self, topic: str, payload: bytes, qos: int, t: float | None = None) -> None:
        at = round(time.monotonic() - self.start if t is None else t, 6)
        doc = {"t": at, "topic": topic, "payload": base64.b64encode(payload).decode(), "qos": qos}
        self._line(doc)
        self.count += 1


def _field(doc: dict[str, Any], key: str, kind: type, where: str) -> Any:
    v = doc.get(key)
    if not isinstance(v, kind) or isinstance(v, bool):
        raise CaptureError(f"{where}: {key} is {v!r}; expected {kind.__name__}")
    return v


def parse(lines: Iterator[str], name: str = "capture") -> Capture:
    """Read a capture, checking every line."""
    try:
        first = next(lines)
    except StopIteration:
        raise CaptureError(f"{name} is empty; expected a ctgtp-capture header line") from None
    try:
        head = json.loads(first)
    except ValueError as e:
        raise CaptureError(f"{name} line 1 is not JSON ({e}); expected the header") from e
    if not isinstance(head, dict) or head.get("format") != FORMAT:
        raise CaptureError(f"{name} line 1 is not a {FORMAT} header")
    if head.get("version") != VERSION:
        raise CaptureError(f"{name}: version {head.get('version')!r}; expected {VERSION}")
    kind = head.get("kind")
    if kind not in ("serial", "mqtt"):
        raise CaptureError(f"{name}: kind {kind!r}; expected serial or mqtt")
    records: list[Record] = []
    last = 0.0
    for n, line in enumerate(lines, 2):
        where = f"{name} line {n}"
        if not line.strip():
            continue
        try:
            doc = json.loads(line)
        except ValueError as e:
            raise CaptureError(f"{where} is not JSON ({e})") from e
        if not isinstance(doc, dict):
            raise CaptureError(f"{where} is {type(doc).__name__}; expected an object")
        t = doc.get("t")
        if not isinstance(t, int | float) or isinstance(t, bool) or t < last:
            raise CaptureError(f"{where}: t is {t!r}; expected seconds, not before {last}")
        last = float(t)
        key = "data" if kind == "serial" else "payload"
        try:
            data = base64.b64decode(_field(doc, key, str, where), validate=True)
        except binascii.Error as e:
            raise CaptureError(f"{where}: {key} is not base64 ({e})") from e
        if kind == "serial":
            records.append(Record(float(t), data))
        else:
            topic = _field(doc, "topic", str, where)
            qos = doc.get("qos", 1)
            if qos not in (0, 1, 2):
                raise CaptureError(f"{where}: qos is {qos!r}; expected 0, 1 or 2")
            records.append(Record(float(t), data, topic, int(qos)))
    return Capture(kind, str(head.get("source", "")), tuple(records), str(head.get("note", "")))


def load(path: Path) -> Capture:
    with path.open(encoding="utf-8") as f:
        return parse(iter(f), path.name)


def paced(
    records: tuple[Record, ...],
    speed: float,
    stop: threading.Event | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Iterator[Record]:
    """The records, each when its time comes (``t / speed`` after the first call)."""
    stop = stop or threading.Event()
    start = clock()
    for r in records:
        wait = start + r.t / speed - clock()
        if (wait > 0 and stop.wait(wait)) or stop.is_set():
            return
        yield r


def record_serial(
    url: str,
    out: IO[str],
    *,
    duration: float = 0.0,
    baudrate: int = 9600,
    note: str = "",
    source: str | None = None,
) -> int:
    """Record what the serial device at ``url`` (a port or any pyserial URL) sends, for
    ``duration`` seconds (0: until interrupted).  Returns the number of reads recorded."""
    import serial

    w = Writer(out, "serial", source or url, note)
    end = time.monotonic() + duration if duration else None
    with serial.serial_for_url(url, baudrate=baudrate, timeout=0.05) as port:
        try:
            while end is None or time.monotonic() < end:
                chunk = port.read(max(1, port.in_waiting))
                if chunk:
                    w.serial(chunk)
        except KeyboardInterrupt:
            pass
    return w.count


def record_mqtt(
    host: str,
    port: int,
    topic: str,
    out: IO[str],
    *,
    duration: float = 0.0,
    note: str = "",
    source: str | None = None,
) -> int:
    """Record the messages on ``topic`` (wildcards allowed) for ``duration`` seconds (0: until
    interrupted).  Returns the number recorded."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    w = Writer(out, "mqtt", source or f"mqtt://{host}:{port}/{topic}", note)
    subscribed = threading.Event()
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"ctgtp-record-{time.time_ns()}")
    c.on_connect = lambda cl, *_: cl.subscribe(topic, qos=1)
    c.on_subscribe = lambda *_: subscribed.set()
    c.on_message = lambda _c, _u, m: w.mqtt(m.topic, bytes(m.payload), m.qos)
    c.connect(host, port)
    c.loop_start()
    try:
        subscribed.wait(10)
        end = time.monotonic() + duration if duration else None
        while end is None or time.monotonic() < end:
            time.sleep(0.05)
    except KeyboardInterrupt:
        pass
    finally:
        c.loop_stop()
        c.disconnect()
    return w.count


def replay_mqtt(capture: Capture, host: str, port: int, *, speed: float = 1.0) -> int:
    """Publish a capture's messages to a broker, paced at ``speed``; returns how many."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    if capture.kind != "mqtt":
        raise CaptureError(f"a {capture.kind} capture; expected an mqtt one")
    c = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"ctgtp-replay-{time.time_ns()}",
        protocol=mqtt.MQTTv5,
    )
    c.connect(host, port)
    c.loop_start()
    infos = []
    try:
        for r in paced(capture.records, speed):
            infos.append(c.publish(str(r.topic), r.data, qos=r.qos))
        for info in infos:
            info.wait_for_publish(10)
    finally:
        c.loop_stop()
        c.disconnect()
    return len(infos)
