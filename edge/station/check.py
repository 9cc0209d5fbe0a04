"""``ctgtp edge station-check``: open each device of a checked station file once, and say how
it went, one line per device (and one for the server when one is named).

Nothing is recorded and no session is taken: the MQTT check connects with its own client id and
a clean session, so the unit's persistent session (and the messages it holds) is left alone.
"""

from __future__ import annotations

import threading
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

import httpx
import serial

from ebr_core.errors import EbrError
from ebr_core.keys import PublicKey
from edge.station.config import SIM_CAMERA, Station, redact
from edge.station.devices import allow_sim_urls
from hardware.profile import shipped_profile

TIMEOUT_S = 5.0


@dataclass(frozen=True)
class Check:
    name: str
    kind: str
    ok: bool
    detail: str

    def line(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'}  {self.name} ({self.kind}): {self.detail}"


def check_station(station: Station) -> list[Check]:
    out = []
    for name, d in station.config.devices.items():
        try:
            if d.kind in ("serial_scanner", "serial_instrument"):
                assert d.port is not None
                detail = _serial(d.port, d.profile)
            elif d.kind == "camera":
                detail = _camera(station.camera_source(name))
            else:
                assert d.broker is not None
                detail = _mqtt(d.broker)
            out.append(Check(name, d.kind, True, detail))
        except Exception as e:
            out.append(Check(name, d.kind, False, str(e) or type(e).__name__))
    server = station.config.server
    if server is not None:
        try:
            out.append(Check("server", "sync", True, _server(station)))
        except Exception as e:
            out.append(Check("server", "sync", False, str(e)))
    return out


def _serial(port: str, profile_name: str) -> str:
    allow_sim_urls(port)
    baud = int(shipped_profile(profile_name).serial.get("baudrate", 9600))
    try:
        # Exclusive, as the station opens it: a port a running station holds is reported
        # busy, never opened beside it (opening a port flushes what waits in its input).
        s = serial.serial_for_url(port, baudrate=baud, timeout=0.05, exclusive=True)
    except (serial.SerialException, OSError, ValueError) as e:
        if "exclusively lock" in str(e):
            raise RuntimeError(
                f"{port} is busy: another process holds it (is the station running?); check "
                "a station's devices before it starts"
            ) from None
        raise RuntimeError(f"cannot open {port}: {e}") from None
    s.close()
    return f"opened {port} at {baud} baud"


def _camera(source: int | str) -> str:
    if source == SIM_CAMERA:
        return "frames are fed by the program running the agent; nothing to open"
    import cv2

    cap = cv2.VideoCapture(source)
    try:
        if not cap.isOpened():
            raise RuntimeError(f"cannot open camera {source}")
        ok, img = cap.read()
        if not ok:
            raise RuntimeError(f"camera {source} opened but gave no frame")
        return f"camera {source}: a {img.shape[1]}x{img.shape[0]} frame read"
    finally:
        cap.release()


def _mqtt(broker: str) -> str:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    u = urllib.parse.urlsplit(broker)
    tls = u.scheme == "mqtts"
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=f"station-check-{uuid.uuid4().hex[:8]}",
        protocol=mqtt.MQTTv5,
    )
    if u.username:
        client.username_pw_set(
            urllib.parse.unquote(u.username), urllib.parse.unquote(u.password or "")
        )
    if tls:
        client.tls_set()
    answered = threading.Event()
    result: list[Any] = []

    def on_connect(_c: Any, _u: Any, _f: Any, rc: Any, _p: Any) -> None:
        result.append(rc)
        answered.set()

    client.on_connect = on_connect
    shown = redact(broker)
    try:
        client.connect(u.hostname or "127.0.0.1", u.port or (8883 if tls else 1883), 10)
    except OSError as e:
        raise RuntimeError(f"cannot reach the broker {shown}: {e.strerror or e}") from None
    client.loop_start()
    try:
        if not answered.wait(TIMEOUT_S):
            raise RuntimeError(f"the broker {shown} did not answer within {TIMEOUT_S:g} s")
        if result[0].is_failure:
            raise RuntimeError(f"the broker {shown} refused the connection: {result[0]}")
    finally:
        client.disconnect()
        client.loop_stop()
    return f"connected to {shown}"


def _server(station: Station) -> str:
    server = station.config.server
    key_path = station.server_key()
    assert server is not None and key_path is not None
    try:
        want = PublicKey.from_bytes(key_path.read_bytes())
    except (OSError, EbrError) as e:
        raise RuntimeError(f"server.key {str(key_path)!r} is not a public key: {e}") from None
    try:
        r = httpx.get(server.url + "/server-key", timeout=TIMEOUT_S)
    except httpx.HTTPError as e:
        raise RuntimeError(f"cannot reach {server.url}: {e}") from None
    if r.status_code != 200:
        raise RuntimeError(f"{server.url}/server-key answered {r.status_code}")
    try:
        got = PublicKey.from_bytes(r.content)
    except EbrError as e:
        raise RuntimeError(f"{server.url}/server-key is not a key: {e}") from None
    if got.key_id != want.key_id:
        raise RuntimeError(
            f"{server.url} signs with key {got.key_id}, but server.key is {want.key_id}; "
            "expected the key of the server named in server.url"
        )
    return f"{server.url} answers with the key in {key_path.name} ({want.key_id})"
