"""Issue 19's fault campaign: real parts, random faults, and an exactly-once check per unit.

Against a real server (``ctgtp server run`` in its own process, SQLite), a real mosquitto
(:class:`firmware_sim.broker.Broker`) and real edge processes, for a bounded time, it randomly
mixes:

* SIGKILLs of each unit's writing edge (a process that opens the unit's agent, records its own
  events and runs the MQTT ingest) and of its syncing edge (``ctgtp edge sync --watch``), and a
  second ``ctgtp edge sync`` run alongside the first;
* server SIGKILLs and restarts on the same port;
* TCP faults in a proxy between the syncing edges and the server: a request dropped, cut short,
  answered by a reset, sent twice, an old request replayed, an answer cut short;
* broker restarts and SIGKILLs;
* poison MQTT messages (JSON nested 100,000 deep, a lone surrogate in ``channel``, ``t`` or
  ``msg_id``, an object as ``channel``, a NUL character, garbage bytes), each followed by a good
  reading from the same device;
* message ids that collide: two devices per unit each count ``msg_id`` from 1, and a restarted
  device counts from 1 again;
* clock jumps of a unit's ledger clock (back, and forward).

Then faults stop, everything is brought back, every unit syncs, and the campaign checks, per unit:

* every event the edge ledger acknowledged (``append_many`` returned; the writer logs it only
  then) is on the server exactly once, the same bytes at the same seq;
* every message the broker acknowledged to a QoS 1 publisher (PUBACK) is on the server exactly
  once, as a ``reading.recorded`` or a ``reading.refused`` event; a poison message must be a
  ``reading.refused`` (never recorded as a reading);
* the edge ledger and the server's copy verify with the one verifier, and hold the same lines;
* background sync never stopped and the ingest never stopped (only a real fork or a revoked key
  may stop sync);
* each backward step of the recorded time, and each forward leap one writing process lived
  through, is explained by a ``clock.jumped`` event in its commit group; the server raised a
  clock alert for each segment that runs backwards and for the first event dated ahead of it;
* a second ``ctgtp edge sync`` waits for the running one or says another sync is running;
* once faults stop and clocks are set right, the background syncs catch up by themselves.

A broker SIGKILL loses what mosquitto had not autosaved yet (``autosave_interval 1``): a message
acknowledged within ``BROKER_WINDOW_S`` before a broker SIGKILL and found nowhere is counted as
lost in the broker's crash window, a figure of its own; any other loss is a failure, and its
message says how long before a SIGKILL it was acknowledged.

Every message a device publishes carries a campaign-wide serial in its value (``37.0000042``),
and poison messages carry it at the start of their raw bytes, so an event on the server is
matched to the publication it came from whatever key the ingest deduplicates on.

Run: ``.venv/bin/python -m tests.hil.campaign --seconds 120 --seed 7`` (exit 1 if a check
fails; ``--keep DIR`` keeps every log, ledger and database, ``--without kill.broker,proxy``
leaves faults out); ``tests/hil/test_fault_campaign.py`` runs it in ``make soak``
(``CAMPAIGN_SECONDS``, default 300).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import contextlib
import inspect
import json
import os
import random
import re
import secrets
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType
from typing import Any

import httpx
import orjson

REPO = Path(__file__).resolve().parents[2]
ADMIN = secrets.token_urlsafe(32)  # the admin token of this run's server
SITE = "SITE-CAMPAIGN"
CHANNEL = "temperature"
# The serial of a publication, in its value: "37." and seven digits.
VALUE_RE = re.compile(rb'"value":\s*"(37\.\d{7})"')
POISON_KINDS = (
    "deep_json",
    "surrogate_channel",
    "surrogate_t",
    "surrogate_msg_id",
    "object_channel",
    "nul",
    "garbage",
)
BATCH_STARTED = {
    "coi": "&/CHA999926ABC123",
    "mbr_id": "M",
    "mbr_version": "1",
    "mbr_hash": "0" * 64,
    "product": "p",
}
CLOCK_LEAP_S = 60.0  # the writing edge's bound on a forward leap of its clock
LEAP_S = 600.0  # a gap in recorded time beyond this, within a campaign, is a clock leap
TOPIC = "units/{unit}/telemetry/" + CHANNEL  # every device of a unit publishes here, named
# What a broker SIGKILL may lose: messages acknowledged since mosquitto's last autosave
# (autosave_interval 1, timed by its main loop: measured up to 1.9 s on a loaded machine).
# Such a loss is the broker's documented crash window, counted apart; any other is a failure.
BROKER_WINDOW_S = 2.5


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _tail(path: Path, n: int = 3) -> str:
    """The last lines of a child's log, for saying why it stopped."""
    try:
        lines = path.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(lines[-n:])[-600:]


# -- the server ------------------------------------------------------------------------------


class ServerProc:
    """``ctgtp server run`` in its own process, killed and restarted on the same port."""

    def __init__(self, data: Path, log: Path) -> None:
        self.data = data
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.env = {
            **os.environ,
            "CTGTP_SERVER_DATA_DIR": str(data),
            "CTGTP_SERVER_DATABASE_URL": f"sqlite:///{data / 'server.db'}",
            "CTGTP_SERVER_ADMIN_TOKEN": ADMIN,
            "CTGTP_SERVER_RATE_PER_SECOND": "1000",
            "CTGTP_SERVER_RATE_BURST": "1000",
            # In-process verification: a SIGKILLed server leaves no worker process behind.
            "CTGTP_SERVER_VERIFY_WORKERS": "0",
        }

    def start(self) -> None:
        with self.log.open("ab") as log:
            if not getattr(self, "_migrated", False):  # a deploy step: run refuses an old schema
                subprocess.run(
                    [sys.executable, "-m", "ctgtp", "server", "migrate"],
                    env=self.env,
                    cwd=REPO,
                    stdout=log,
                    stderr=log,
                    check=True,
                )
                self._migrated = True
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "ctgtp", "server", "run", "--port", str(self.port)],
                env=self.env,
                cwd=REPO,
                stdout=log,
                stderr=log,
            )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                time.sleep(0.05)
            if self.proc.poll() is not None:
                break
        raise RuntimeError(f"the server did not start: {_tail(self.log)}")

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.proc = None

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()
            self.proc = None

    def admin(self) -> httpx.Client:
        return httpx.Client(
            base_url=self.url, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=30
        )

    @property
    def db(self) -> Path:
        return self.data / "server.db"


# -- the TCP proxy ---------------------------------------------------------------------------

PROXY_FAULTS = ("drop", "truncate", "reset", "duplicate", "replay", "truncate_response")


def _read_request(conn: socket.socket) -> bytes | None:
    """One HTTP/1.1 request (headers and a Content-Length body) from ``conn``; None at EOF."""
    buf = b""
    while b"\r\n\r\n" not in buf:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        buf += chunk
    head, _, body = buf.partition(b"\r\n\r\n")
    m = re.search(rb"(?im)^content-length:\s*(\d+)\s*$", head)
    length = int(m.group(1)) if m else 0
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            return None
        body += chunk
    # One request per upstream connection: the answer then ends when the server closes.
    lines = [ln for ln in head.split(b"\r\n") if not ln.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + body[:length]


class FaultProxy:
    """A TCP proxy from the syncing edges to the server that, while ``enabled``, hurts a share
    of the requests at the byte level (see :data:`PROXY_FAULTS`), counted in ``stats``."""

    def __init__(self, upstream_port: int, rng: random.Random, rate: float = 0.25) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.rng = rng
        self.rate = rate
        self.enabled = threading.Event()
        self.stats: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._seen: deque[bytes] = deque(maxlen=32)  # past requests, for replays
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.sock.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True, name="proxy")

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        with contextlib.suppress(OSError):
            self.sock.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _pick(self) -> str | None:
        with self._lock:
            if not self.enabled.is_set() or self.rng.random() >= self.rate:
                return None
            kind = self.rng.choice(PROXY_FAULTS)
            self.stats[kind] += 1
            return kind

    def _cut(self, n: int) -> int:
        with self._lock:
            return self.rng.randrange(1, max(2, n))

    def _forward(self, req: bytes) -> bytes | None:
        try:
            with socket.create_connection(self.upstream, timeout=60) as up:
                up.sendall(req)
                out = b""
                while chunk := up.recv(65536):
                    out += chunk
                return out
        except OSError:
            return None  # the server is down: the client sees its connection closed

    def _send_cut(self, req: bytes) -> None:
        with contextlib.suppress(OSError), socket.create_connection(self.upstream, 5) as up:
            up.sendall(req[: self._cut(len(req))])

    def _serve(self, conn: socket.socket) -> None:
        with conn, contextlib.suppress(OSError):
            self._serve_one(conn)

    def _serve_one(self, conn: socket.socket) -> None:
        req = _read_request(conn)
        if req is None:
            return
        kind = self._pick()
        if kind == "drop":
            return  # never reaches the server
        if kind == "truncate":
            self._send_cut(req)  # the server reads a request cut short; the client, nothing
            return
        if kind == "replay":
            with self._lock:
                old = self.rng.choice(self._seen) if self._seen else req
            self._forward(old)  # an old signed request, sent again
        if req.startswith(b"POST"):
            with self._lock:
                self._seen.append(req)
        resp = self._forward(req)
        if kind == "duplicate":
            resp = self._forward(req) or resp  # the second answer reaches the client
        if resp is None:
            return
        if kind == "reset":  # the server acted; the client gets a reset instead of its answer
            conn.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
            )
            return
        if kind == "truncate_response":
            resp = resp[: self._cut(len(resp))]
        conn.sendall(resp)


# -- MQTT devices ----------------------------------------------------------------------------


@dataclass
class Ledgerbook:
    """What was acknowledged, campaign-wide: publications by serial, and the kind of each."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    serial: int = 0
    acked: dict[int, str] = field(default_factory=dict)  # serial -> unit, PUBACKed
    acked_at: dict[int, float] = field(default_factory=dict)  # serial -> monotonic PUBACK time
    poison: dict[int, str] = field(default_factory=dict)  # serial -> poison kind
    msg_ids: Counter[tuple[str, str]] = field(default_factory=Counter)  # (unit, msg_id) sent

    def ack(self, serial: int, unit: str) -> None:
        with self.lock:
            self.acked[serial] = unit
            self.acked_at[serial] = time.monotonic()

    def next_serial(self) -> int:
        with self.lock:
            self.serial += 1
            return self.serial


class Device:
    """A QoS 1 publisher with a persistent session; a PUBACK counts its message acknowledged.

    Its message ids count from 1 per boot, as real instruments do (and collide with another
    device's, and with its own before a restart)."""

    def __init__(self, book: Ledgerbook, unit: str, name: str, port: int) -> None:
        self.book, self.unit, self.name, self.port = book, unit, name, port
        self.topic = TOPIC.format(unit=unit)
        self._pending: dict[int, int] = {}  # mid -> serial
        self._early: set[int] = set()  # PUBACKs that came before publish() returned
        self._lock = threading.Lock()
        self.client: Any = None
        self.boots = 0
        self.boot()

    def boot(self) -> None:
        """(Re)start: a new client, a new boot id, and message ids from 1 again."""
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion
        from paho.mqtt.packettypes import PacketTypes
        from paho.mqtt.properties import Properties

        self.close()
        self.boots += 1
        self.boot_id = f"{self.name}-boot{self.boots}-{os.urandom(4).hex()}"
        self.counter = 0
        with self._lock:
            self._pending.clear()
            self._early.clear()
        c = mqtt.Client(
            CallbackAPIVersion.VERSION2,
            client_id=f"{self.unit}-{self.name}",
            protocol=mqtt.MQTTv5,
        )
        c.max_queued_messages_set(0)
        c.reconnect_delay_set(1, 2)
        c.on_publish = self._on_publish
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600
        c.connect_async("127.0.0.1", self.port, clean_start=False, properties=props)
        c.loop_start()
        self.client = c

    def _on_publish(self, _c: Any, _u: Any, mid: int, rc: Any, _p: Any) -> None:
        if getattr(rc, "is_failure", False):
            return
        with self._lock:
            serial = self._pending.pop(mid, None)
            if serial is None:
                self._early.add(mid)
                return
        self.book.ack(serial, self.unit)

    def publish(self, serial: int, payload: bytes) -> None:
        info = self.client.publish(self.topic, payload, qos=1)
        with self._lock:
            if info.mid in self._early:
                self._early.discard(info.mid)
                early = True
            else:
                self._pending[info.mid] = serial
                early = False
        if early:
            self.book.ack(serial, self.unit)

    def next_msg_id(self) -> str:
        self.counter += 1
        with self.book.lock:
            self.book.msg_ids[(self.unit, str(self.counter))] += 1
        return str(self.counter)

    def reading(self) -> None:
        serial = self.book.next_serial()
        doc = {
            "msg_id": self.next_msg_id(),
            "device": self.name,
            "boot": self.boot_id,
            "channel": CHANNEL,
            "value": f"37.{serial:07d}",
            "unit": "Cel",
            "t": _now_iso(),
        }
        self.publish(serial, json.dumps(doc, separators=(",", ":")).encode())

    def poison(self, kind: str, rng: random.Random) -> None:
        serial = self.book.next_serial()
        with self.book.lock:
            self.book.poison[serial] = kind
        payload = poison_payload(kind, serial, self.next_msg_id(), self.name, self.boot_id, rng)
        self.publish(serial, payload)

    def unacked(self) -> int:
        with self._lock:
            return len(self._pending)

    def close(self) -> None:
        if self.client is not None:
            self.client.loop_stop()
            self.client.disconnect()
            self.client = None


def poison_payload(
    kind: str, serial: int, msg_id: str, device: str, boot: str, rng: random.Random
) -> bytes:
    """A message that cannot become a valid reading; its serial is in its first bytes."""
    head = f'{{"value":"37.{serial:07d}",'
    fields = {
        "msg_id": json.dumps(msg_id),
        "device": json.dumps(device),
        "boot": json.dumps(boot),
        "channel": json.dumps(CHANNEL),
        "unit": '"Cel"',
        "t": json.dumps(_now_iso()),
    }
    if kind == "garbage":
        return head.encode() + bytes(rng.randrange(256) for _ in range(200))
    if kind == "deep_json":
        fields["extra"] = "[" * 100_000 + "]" * 100_000
    elif kind == "surrogate_channel":
        fields["channel"] = '"\\ud800"'
    elif kind == "surrogate_t":
        fields["t"] = '"2026-11-30T08:00:00\\ud800Z"'
    elif kind == "surrogate_msg_id":
        fields["msg_id"] = '"7\\ud800"'
    elif kind == "object_channel":
        fields["channel"] = '{"x":[1,2]}'
    elif kind == "nul":
        fields["channel"] = '"tempe\\u0000rature"'
    body = ",".join(f'"{k}":{v}' for k, v in fields.items())
    return (head + body + "}").encode()


class DeviceRunner:
    """Publishes readings from a unit's devices at ``rate`` per device, in one thread."""

    def __init__(self, devices: list[Device], rate: float) -> None:
        self.devices = devices
        self.rate = rate
        self.lock = threading.Lock()  # held while a device restarts
        self.stop_event = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="devices")

    def start(self) -> DeviceRunner:
        self._thread.start()
        return self

    def _run(self) -> None:
        while not self.stop_event.wait(1 / self.rate):
            with self.lock:
                for d in self.devices:
                    d.reading()

    def stop(self) -> None:
        self.stop_event.set()
        self._thread.join(10)


# -- the edge --------------------------------------------------------------------------------


def make_home(home: Path, unit: str) -> None:
    """A unit's state directory, as ``ctgtp edge init`` makes it (the example MBR, signed by a
    publisher key made here)."""
    import edge.agent
    from ebr_core.document import load_yaml, sign_document
    from ebr_core.keys import UnitSigner
    from edge.agent import init_home

    examples = Path(edge.agent.__file__).parent / "examples"
    work = home.parent / f"{unit}-publish"
    work.mkdir(parents=True)
    qa = UnitSigner.generate("qa.approver")
    (work / "qa.pub").write_bytes(qa.public.to_json())
    content = load_yaml((examples / "car_t_mbr.yaml").read_text())
    doc = sign_document(
        content,
        doc_type="mbr",
        doc_id=content["mbr_id"],
        version=str(content["version"]),
        signer=qa,
        signed_at=datetime.now(UTC),
    )
    (work / "mbr.signed.json").write_bytes(doc.to_bytes())
    init_home(
        home,
        unit_id=unit,
        mbr=work / "mbr.signed.json",
        publisher_key=work / "qa.pub",
        users=examples / "users.yaml",
        materials=examples / "materials.yaml",
    )


class UnitClock:
    """The unit's wall clock plus an offset the campaign writes to ``clock_offset_s`` in its
    home (re-read when the file changes): the clock jumps back or leaps forward."""

    def __init__(self, home: Path) -> None:
        self.path = home / "clock_offset_s"
        self._mtime = -1
        self.offset = 0.0

    def __call__(self) -> datetime:
        try:
            m = self.path.stat().st_mtime_ns
            if m != self._mtime:
                self._mtime, self.offset = m, float(self.path.read_text() or 0)
        except (OSError, ValueError):
            pass
        return datetime.now(UTC) + timedelta(seconds=self.offset)


def writer_main(home: Path, unit: str, broker_port: int) -> int:
    """The writing edge: the unit's agent records its own events (each logged to ``acks.log``
    only once ``append_many`` returned) while the MQTT ingest records the devices' messages.

    Exit 3: the ingest stopped; 4: the ledger refused an append; 0: SIGTERM."""
    from edge.agent import open_agent
    from edge.ledger import Append
    from edge.transports.mqtt import MqttIngest

    stop = threading.Event()

    def on_term(_s: int, _f: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_term)
    kw: dict[str, Any] = {}
    if "clock_leap_s" in inspect.signature(open_agent).parameters:
        kw["clock_leap_s"] = CLOCK_LEAP_S  # a long-running agent watches its clock leap
    agent = open_agent(home, UnitClock(home), **kw)
    batch = f"B-{unit}"
    if not agent.ledger.has_batch(batch):  # readings go to a running batch
        agent.ledger.append("batch.started", BATCH_STARTED, batch_id=batch, actor="op.alice")
    ingest = None
    while ingest is None and not stop.is_set():
        try:
            ingest = MqttIngest(
                agent.ledger,
                "127.0.0.1",
                broker_port,
                unit,
                context=lambda: (batch, "campaign"),
            ).start()
        except OSError:
            time.sleep(0.3)  # the broker is down: try again
    if ingest is not None and ingest.subscribed.wait(30):
        (home / "subscribed").touch()  # the unit's session exists: devices may publish
    rng = random.Random()
    pid, n, code = os.getpid(), 0, 0
    with (home / "acks.log").open("a") as acks:
        while not stop.is_set():
            if ingest is not None and ingest.error is not None:
                print(f"ingest stopped: {ingest.error}", file=sys.stderr, flush=True)
                code = 3
                break
            items = [
                Append("note.added", {"op": f"{pid}-{n + i}", "text": "campaign"})
                for i in range(rng.randint(1, 3))
            ]
            n += len(items)
            try:
                events = agent.ledger.append_many(items)
            except Exception as e:
                print(f"append refused: {type(e).__name__}: {e}", file=sys.stderr, flush=True)
                code = 4
                break
            acks.write("".join(f"{e.seq} {e.hash} {e.payload['op']}\n" for e in events))
            acks.flush()
            stop.wait(rng.uniform(0.01, 0.05))
    if ingest is not None:
        ingest.stop()
    agent.close()
    return code


def syncer_main(home: Path, url: str, key: Path) -> int:
    """The syncing edge of a unit whose host clock jumps: :class:`edge.sync.BackgroundSync`
    signing its requests with the unit's clock (``UnitClock``), so a jump beyond the server's
    window is refused as clock skew, and must be recovered from once the clock is right.

    Exit 1 when the background loop stopped (only a fork or a revoked key may stop it)."""
    from ebr_core.keys import PublicKey
    from edge.agent import open_agent
    from edge.sync import BackgroundSync, SyncClient

    stop = threading.Event()

    def on_signal(_s: int, _f: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    clock = UnitClock(home)
    agent = open_agent(home, clock, writer=False)
    kw: dict[str, Any] = {}
    if "wall" in inspect.signature(SyncClient).parameters:
        kw["wall"] = lambda: clock().timestamp()
    client = SyncClient(agent.ledger, url, server_key=PublicKey.from_bytes(key.read_bytes()), **kw)
    bkw: dict[str, Any] = {}
    if "max_backoff" in inspect.signature(BackgroundSync).parameters:
        bkw["max_backoff"] = 5.0
    bg = BackgroundSync(client, 0.5, **bkw).start()
    skewed = 0
    with (home / "skew.log").open("a") as log:
        while bg.wait(0.5) and not stop.is_set():
            now = int(getattr(bg, "skewed", 0))  # rounds refused for clock skew so far
            if now > skewed:
                log.write(f"{now - skewed}\n")  # counted by the campaign
                log.flush()
                skewed = now
    bg.stop()
    agent.close()
    if bg.error is not None:
        print(f"background sync stopped: {bg.error}", file=sys.stderr, flush=True)
        return 1
    return 0


class Child:
    """A supervised child process of one role for one unit; a death the campaign did not cause
    is kept in ``exits`` with the last lines of its log."""

    def __init__(self, role: str, argv: list[str], log: Path, env: dict[str, str]) -> None:
        self.role, self.argv, self.log, self.env = role, argv, log, env
        self.proc: subprocess.Popen[bytes] | None = None
        self.exits: list[str] = []
        self.kills = 0
        self.restart_at = 0.0
        self.retired = False  # stopped for good by the campaign: not restarted

    def start(self) -> None:
        with self.log.open("ab") as log:
            self.proc = subprocess.Popen(
                self.argv, cwd=REPO, env=self.env, stdout=log, stderr=log, stdin=subprocess.DEVNULL
            )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()
            self.kills += 1
        self.proc = None

    def check(self, now: float) -> None:
        """Note a death nobody caused, and start it again (after a second)."""
        if self.retired:
            return
        if self.proc is not None and (rc := self.proc.poll()) is not None:
            self.exits.append(f"exit {rc}: {_tail(self.log)}")
            self.proc = None
            self.restart_at = now + 1.0
        if self.proc is None and now >= self.restart_at:
            self.start()

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> int | None:
        self.retired = True
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
                return None
        rc = self.proc.returncode
        self.proc = None
        return rc


@dataclass
class Unit:
    unit_id: str
    home: Path
    writer: Child
    syncer: Child
    devices: list[Device]
    prober: Device
    runner: DeviceRunner
    clock_offset: float = 0.0
    clock_steps: int = 0  # backward steps and forward leaps seen in its recorded time
    backward_steps: list[int] = field(default_factory=list)  # seqs where recorded time ran back
    leaps_within_process: list[int] = field(default_factory=list)  # seqs of forward leaps
    first_ahead: int | None = None  # first seq dated beyond the campaign's end + 300 s
    not_ahead: int = 0  # the last seq before it dated before the campaign's start + 300 s
    second_syncs: list[str] = field(default_factory=list)


# -- reading what was recorded ---------------------------------------------------------------


def identities(payload: dict[str, Any], kind: str) -> list[int]:
    """The publication serials an MQTT event stands for (normally one)."""
    if kind == "reading.recorded":
        v = payload.get("value")
        text = v.get("value") if isinstance(v, dict) else None
        if isinstance(text, str) and re.fullmatch(r"37\.\d{7}", text):
            return [int(text[3:])]
        return []
    found: set[int] = set()  # reading.refused: its raw bytes, however they are kept
    for s in _strings(payload):
        for blob in (s.encode(errors="surrogatepass"), *_decoded(s)):
            found.update(int(m.group(1)[3:]) for m in VALUE_RE.finditer(blob))
    return sorted(found)


def _strings(x: Any) -> Iterator[str]:
    if isinstance(x, str):
        yield x
    elif isinstance(x, dict):
        for v in x.values():
            yield from _strings(v)
    elif isinstance(x, list):
        for v in x:
            yield from _strings(v)


def _decoded(s: str) -> list[bytes]:
    out = []
    with contextlib.suppress(binascii.Error, ValueError):
        out.append(base64.b64decode(s, validate=True))
    with contextlib.suppress(ValueError):
        out.append(bytes.fromhex(s))
    return out


def mqtt_serials(lines: Iterator[tuple[int, bytes]]) -> dict[int, list[tuple[int, str]]]:
    """serial -> [(seq, kind)] of the readings and refusals among event lines."""
    out: dict[int, list[tuple[int, str]]] = {}
    for seq, line in lines:
        if b'"kind":"reading.' not in line:
            continue
        ev = orjson.loads(line)
        if ev["kind"] not in ("reading.recorded", "reading.refused"):
            continue
        for s in identities(ev["payload"], ev["kind"]):
            out.setdefault(s, []).append((seq, ev["kind"]))
    return out


def edge_lines(home: Path, after: int = 0) -> Iterator[tuple[int, bytes]]:
    """The edge ledger's event lines after seq ``after`` (read-only, beside the writer)."""
    con = sqlite3.connect(f"file:{home / 'edge.db'}?mode=ro", uri=True, timeout=30)
    try:
        yield from con.execute("SELECT seq, line FROM events WHERE seq > ? ORDER BY seq", (after,))
    finally:
        con.close()


def server_rows(db: Path, unit: str) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
    """The server's stored event and checkpoint lines of ``unit``, by seq."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        ev = con.execute(
            "SELECT seq, line FROM events WHERE unit_id = ? ORDER BY seq", (unit,)
        ).fetchall()
        cp = con.execute(
            "SELECT seq, line FROM checkpoints WHERE unit_id = ? ORDER BY seq", (unit,)
        ).fetchall()
    finally:
        con.close()
    return [(s, bytes(x)) for s, x in ev], [(s, bytes(x)) for s, x in cp]


def stored_segments(db: Path) -> dict[str, list[tuple[int, int]]]:
    """unit -> the (head before, head after) of each segment the server stored, from its audit
    trail."""
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
    try:
        rows = con.execute(
            "SELECT object_id, old, new FROM audit_trail WHERE action = 'segment.stored' "
            "ORDER BY seq"
        ).fetchall()
    finally:
        con.close()
    out: dict[str, list[tuple[int, int]]] = {}
    for unit, old, new in rows:
        lo, hi = json.loads(old)["head_seq"], json.loads(new)["head_seq"]
        out.setdefault(unit, []).append((int(lo), int(hi)))
    return out


# -- the campaign ----------------------------------------------------------------------------


@dataclass
class Result:
    seconds: float
    seed: int
    units: int
    without: frozenset[str] = frozenset()
    kills: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    acked_events: int = 0
    acked_readings: int = 0
    acked_poison: int = 0
    lost: int = 0
    lost_in_broker_window: int = 0  # acked within BROKER_WINDOW_S before a broker SIGKILL
    duplicated: int = 0
    colliding_ids: int = 0
    skew_rounds: int = 0  # background sync rounds the server refused for clock skew
    failures: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def fail(self, check: str, detail: str) -> None:
        self.failures.append(f"{check}: {detail}")

    def figures(self) -> str:
        k = ", ".join(f"{n} {c}" for n, c in sorted(self.kills.items()))
        f = ", ".join(f"{n} {c}" for n, c in sorted(self.faults.items()))
        acked = self.acked_events + self.acked_readings + self.acked_poison
        out = [
            f"fault campaign: seed {self.seed}, {self.seconds:g} s of faults, {self.units} units"
            + (f", without {', '.join(sorted(self.without))}" if self.without else ""),
            f"kills survived: {sum(self.kills.values())} ({k})",
            f"faults injected: {sum(self.faults.values())} ({f})",
            f"colliding message ids published: {self.colliding_ids}",
            f"sync rounds refused for clock skew (then resumed): {self.skew_rounds}",
            f"events acknowledged: {acked} (ledger {self.acked_events}, broker-acked readings "
            f"{self.acked_readings}, broker-acked poison {self.acked_poison})",
            f"lost: {self.lost} (must be 0)",
            f"lost in the broker's crash window (acked within {BROKER_WINDOW_S:g} s before a "
            f"broker SIGKILL, not yet autosaved; documented): {self.lost_in_broker_window}",
            f"duplicated: {self.duplicated} (must be 0)",
        ]
        out += [f"note: {n}" for n in self.notes]
        out.append(f"checks failed: {len(self.failures)}")
        out += [f"  FAIL {x}" for x in self.failures]
        return "\n".join(out)


class Campaign:
    def __init__(
        self, seconds: float, seed: int, units: int, work: Path, without: frozenset[str]
    ) -> None:
        from firmware_sim.broker import Broker

        unknown = without - {n for n, _ in self.FAULTS} - {"proxy"}
        if unknown:
            raise ValueError(f"no such fault: {sorted(unknown)}; see Campaign.FAULTS and 'proxy'")
        self.seconds, self.seed = seconds, seed
        self.without = without
        self.rng = random.Random(seed)
        self.work = work
        self.result = Result(seconds, seed, units, without)
        self.book = Ledgerbook()
        self.server = ServerProc(work / "server", work / "server.log")
        self.broker = Broker()
        self.proxy = FaultProxy(self.server.port, random.Random(seed + 1))
        self.unit_ids = [f"UNIT-FC{i + 1}" for i in range(units)]
        self.units: list[Unit] = []
        self.broker_kills: list[float] = []  # monotonic times of broker SIGKILLs
        self.began = time.monotonic()
        self.timeline: list[str] = []  # what was injected when (kept in the work folder)
        self.poison_order: list[str] = []
        self.side_procs: list[subprocess.Popen[str]] = []  # second syncs (killed at the end)
        self.began_wall = datetime.now(UTC)
        self.ended_wall = datetime.now(UTC)  # the wall time when the units stopped recording
        self.env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}

    # -- setup ----------------------------------------------------------------------------

    def setup(self) -> None:
        from edge.sync import SyncClient

        if "wall" not in inspect.signature(SyncClient).parameters:
            self.result.notes.append(
                "sync clock skew not injected: SyncClient takes no wall clock (only the "
                "ledger clocks jump)"
            )
        self.server.start()
        self.broker.start()
        self.proxy.start()
        key = self.server.data / "server.pub"
        for uid in self.unit_ids:
            home = self.work / uid / "home"
            make_home(home, uid)
            with self.server.admin() as c:
                r = c.post(
                    "/admin/units",
                    json={
                        "site_id": SITE,
                        "unit_id": uid,
                        "public_key": (home / "unit.pub").read_text(),
                    },
                )
                if r.status_code != 201:
                    raise RuntimeError(f"enrolment of {uid}: {r.status_code} {r.text}")
            py = [sys.executable, "-m"]
            writer = Child(
                "writer",
                [*py, "tests.hil.campaign", "writer", str(home), uid, str(self.broker.port)],
                self.work / uid / "writer.log",
                self.env,
            )
            # The first unit syncs with the CLI's background mode; the others with a
            # BackgroundSync whose request clock is the unit's (jumps become clock skew).
            if uid == self.unit_ids[0]:
                argv = [*py, "ctgtp", "edge", "sync", "--home", str(home), "--server"]
                argv += [self.proxy.url, "--server-key", str(key), "--watch", "0.5", "-q"]
            else:
                argv = [*py, "tests.hil.campaign", "syncer", str(home), self.proxy.url, str(key)]
            syncer = Child("sync", argv, self.work / uid / "sync.log", self.env)
            port = self.broker.port
            devices = [Device(self.book, uid, f"bio-{c}", port) for c in "AB"]
            prober = Device(self.book, uid, "bio-P", port)
            runner = DeviceRunner(devices, rate=8.0)
            self.units.append(Unit(uid, home, writer, syncer, devices, prober, runner))
        for u in self.units:
            u.writer.start()
            u.syncer.start()
        # A first connection has no session yet: what devices publish before the edge's
        # subscription is granted reaches nobody, so they start once every unit has one.
        deadline = time.monotonic() + 60
        while not all((u.home / "subscribed").exists() for u in self.units):
            if time.monotonic() > deadline:
                raise RuntimeError("the writing edges did not subscribe within 60 s")
            time.sleep(0.1)
        self.began = time.monotonic()
        self.began_wall = datetime.now(UTC)
        for u in self.units:
            u.runner.start()

    # -- faults ---------------------------------------------------------------------------

    FAULTS: tuple[tuple[str, float], ...] = (
        ("kill.writer", 3),
        ("kill.sync", 2),
        ("kill.server", 1),
        ("broker.restart", 0.7),
        ("kill.broker", 0.7),
        ("poison", 3),
        ("device.restart", 1),
        ("clock.back", 0.6),
        ("clock.forward", 0.6),
        ("second_sync", 1),
    )

    def inject(self) -> None:
        faults = [(n, w) for n, w in self.FAULTS if n not in self.without]
        if not faults:
            return
        kind = self.rng.choices([n for n, _ in faults], weights=[w for _, w in faults])[0]
        u = self.rng.choice(self.units)
        r = self.result
        self.timeline.append(f"{time.monotonic() - self.began:8.2f} {kind} {u.unit_id}")
        if kind == "kill.writer":
            u.writer.kill()
            u.writer.restart_at = time.monotonic() + self.rng.uniform(0.1, 1.5)
            r.kills["writer"] += 1
        elif kind == "kill.sync":
            u.syncer.kill()
            u.syncer.restart_at = time.monotonic() + self.rng.uniform(0.1, 1.5)
            r.kills["sync"] += 1
        elif kind == "kill.server":
            self.server.kill()
            time.sleep(self.rng.uniform(0.1, 2.0))
            self.server.start()
            r.kills["server"] += 1
        elif kind == "broker.restart":
            self.broker.restart()
            r.faults["broker.restart"] += 1
        elif kind == "kill.broker":
            self._kill_broker()
            r.kills["broker"] += 1
        elif kind == "poison":
            if not self.poison_order:  # every kind once, in a random order, then again
                self.poison_order = self.rng.sample(POISON_KINDS, len(POISON_KINDS))
            p = self.poison_order.pop()
            u.prober.poison(p, self.rng)
            u.prober.reading()  # a good reading right after: it must be recorded
            r.faults[f"poison.{p}"] += 1
        elif kind == "device.restart":
            with u.runner.lock:
                self.rng.choice(u.devices).boot()
            r.faults["device.restart"] += 1
        elif kind in ("clock.back", "clock.forward"):
            jump = self.rng.choice([3600.0, 86_400.0, 365 * 86_400.0])
            u.clock_offset += -jump if kind == "clock.back" else jump
            (u.home / "clock_offset_s").write_text(repr(u.clock_offset))
            r.faults[kind] += 1
        elif kind == "second_sync":
            threading.Thread(target=self._second_sync, args=(u,), daemon=True).start()
            r.faults["second_sync"] += 1

    def _kill_broker(self) -> None:
        self.broker_kills.append(time.monotonic())
        self.broker.kill()
        time.sleep(self.rng.uniform(0.1, 1.0))
        self.broker.start()

    def _second_sync(self, u: Unit) -> None:
        """A manual ``ctgtp edge sync`` while the background one runs: it may wait for it, or
        exit saying another sync is running, or fail to reach the server; it may not refuse."""
        key = self.server.data / "server.pub"
        argv = [sys.executable, "-m", "ctgtp", "edge", "sync", "--home", str(u.home)]
        argv += ["--server", self.proxy.url, "--server-key", str(key), "-q", "--attempts", "3"]
        p = subprocess.Popen(
            argv, cwd=REPO, env=self.env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.side_procs.append(p)
        try:
            _out, err = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            p.communicate()
            u.second_syncs.append("did not finish in 120 s")
            return
        msg = (err.strip().splitlines() or [""])[-1]
        ok = p.returncode == 0 or "another sync is running" in msg or "unreachable" in msg
        if not ok:
            u.second_syncs.append(f"exit {p.returncode}: {msg[:300]}")

    def supervise(self) -> None:
        now = time.monotonic()
        for u in self.units:
            u.writer.check(now)
            u.syncer.check(now)

    def run_faults(self) -> None:
        if "proxy" not in self.without:
            self.proxy.enabled.set()
        end = time.monotonic() + self.seconds
        while time.monotonic() < end:
            self.inject()
            pause_end = time.monotonic() + self.rng.uniform(0.3, 1.5)
            while time.monotonic() < pause_end:
                self.supervise()
                time.sleep(0.05)
        self.proxy.enabled.clear()
        self.result.faults.update({f"proxy.{k}": v for k, v in self.proxy.stats.items()})

    # -- healing and checking -------------------------------------------------------------

    def heal(self) -> None:
        """Faults off: everything up, the devices' last messages acknowledged and recorded,
        then every unit synced straight to the server."""
        for u in self.units:
            u.runner.stop()
        deadline = time.monotonic() + 30
        devices = [d for u in self.units for d in (*u.devices, u.prober)]
        while time.monotonic() < deadline and any(d.unacked() for d in devices):
            self.supervise()
            time.sleep(0.1)
        self._wait_recorded()
        for u in self.units:  # NTP sets the clocks right: sync must resume by itself
            u.clock_offset = 0.0
            (u.home / "clock_offset_s").write_text("0.0")
        for u in self.units:
            rc = u.writer.stop(signal.SIGTERM)
            if rc not in (0, None):
                u.writer.exits.append(f"exit {rc} at the end: {_tail(u.writer.log)}")
            for d in (*u.devices, u.prober):
                d.close()
        self._wait_synced()
        for u in self.units:
            rc = u.syncer.stop(signal.SIGINT)
            if rc not in (0, None):
                u.syncer.exits.append(f"exit {rc} at the end: {_tail(u.syncer.log)}")
        key = self.server.data / "server.pub"
        for u in self.units:
            argv = [sys.executable, "-m", "ctgtp", "edge", "sync", "--home", str(u.home)]
            argv += ["--server", self.server.url, "--server-key", str(key), "-q"]
            p = subprocess.run(
                argv,
                check=False,
                cwd=REPO,
                env=self.env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            if p.returncode != 0:
                self.result.fail(
                    "final sync", f"{u.unit_id}: exit {p.returncode}: {p.stderr.strip()[-400:]}"
                )

    def _wait_synced(self, limit_s: float = 120.0) -> None:
        """Until the background syncs (faults off, clocks right, writers stopped) have brought
        the server to each edge's head by themselves; a unit they leave behind fails."""
        deadline = time.monotonic() + limit_s
        behind: dict[str, tuple[int, int]] = {}
        while time.monotonic() < deadline:
            self.supervise()
            behind = {}
            for u in self.units:
                con = sqlite3.connect(f"file:{u.home / 'edge.db'}?mode=ro", uri=True)
                try:
                    edge_head = int(con.execute("SELECT max(seq) FROM events").fetchone()[0] or 0)
                finally:
                    con.close()
                try:
                    with self.server.admin() as c:
                        server_head = int(c.get(f"/admin/units/{u.unit_id}").json()["head_seq"])
                except (httpx.HTTPError, KeyError, ValueError):
                    server_head = -1
                if server_head != edge_head:
                    behind[u.unit_id] = (server_head, edge_head)
            if not behind:
                return
            time.sleep(1.0)
        for uid, (srv, edge) in behind.items():
            self.result.fail(
                "background sync catches up once faults stop",
                f"{uid}: server head {srv}, edge head {edge} after {limit_s:g} s",
            )

    def _wait_recorded(self, stall_s: float = 30.0, limit_s: float = 180.0) -> None:
        """Until every broker-acked publication is in its unit's edge ledger, or none of them
        was recorded for ``stall_s`` seconds (or ``limit_s`` passed)."""
        began = time.monotonic()
        seen: dict[str, set[int]] = {u.unit_id: set() for u in self.units}
        after = dict.fromkeys(seen, 0)
        last_progress = time.monotonic()
        while True:
            self.supervise()
            for u in self.units:
                with contextlib.suppress(sqlite3.Error):
                    for seq, line in edge_lines(u.home, after[u.unit_id]):
                        after[u.unit_id] = seq
                        new = mqtt_serials(iter([(seq, line)])).keys() - seen[u.unit_id]
                        if new:
                            last_progress = time.monotonic()
                            seen[u.unit_id].update(new)
            with self.book.lock:
                missing = [s for s, uid in self.book.acked.items() if s not in seen[uid]]
            now = time.monotonic()
            if not missing or now - last_progress > stall_s or now - began > limit_s:
                return
            time.sleep(1.0)

    def check(self) -> None:
        self.ended_wall = datetime.now(UTC)
        self.server.stop()
        r = self.result
        with self.book.lock:
            acked = dict(self.book.acked)
            poison = dict(self.book.poison)
            r.colliding_ids = sum(n - 1 for n in self.book.msg_ids.values() if n > 1)
        for u in self.units:
            skew = u.home / "skew.log"
            if skew.exists():
                r.skew_rounds += sum(int(x) for x in skew.read_text().split())
            self._check_unit(u, {s for s, uid in acked.items() if uid == u.unit_id}, poison)
        self._check_alerts()

    def _check_unit(self, u: Unit, acked: set[int], poison: dict[int, str]) -> None:
        from ebr_core.keys import Keyring, PublicKey
        from ebr_core.verify import ChainVerifier

        r, uid = self.result, u.unit_id
        events, cps = server_rows(self.server.db, uid)
        # The same lines at the same seqs on the edge and on the server.
        edge = dict(edge_lines(u.home))
        srv = dict(events)
        if len(srv) != len(events):
            r.fail("server seqs unique", f"{uid}: {len(events) - len(srv)} seqs stored twice")
        differ = [s for s in srv if edge.get(s) != srv[s]]
        if differ:
            r.fail("server holds the edge's bytes", f"{uid}: seqs {differ[:5]} differ")
        if len(srv) != len(edge):
            r.fail("server holds the whole ledger", f"{uid}: edge {len(edge)}, server {len(srv)}")
        # Both chains verify with the one verifier.
        key = PublicKey.from_bytes((u.home / "unit.pub").read_bytes())
        for where, evs, cks in (("server", events, cps), ("edge", *self._edge_rows(u))):
            try:
                v = ChainVerifier(Keyring([key]), unit_id=uid)
                v.check_lines(_wire(evs, cks))
                v.finish()
            except Exception as e:
                r.fail(f"{where} chain verifies", f"{uid}: {type(e).__name__}: {e}")
        # Every event the ledger acknowledged: on the server once, same seq and hash.
        ops: Counter[str] = Counter()
        for _s, line in events:
            if b'"kind":"note.added"' in line:
                ops[orjson.loads(line)["payload"]["op"]] += 1
        lost: list[str] = []
        twice: list[str] = []
        acks = u.home / "acks.log"
        for ln in acks.read_text().splitlines() if acks.exists() else []:
            seq, h, op = ln.split()
            r.acked_events += 1
            stored = srv.get(int(seq))
            if stored is None or orjson.loads(stored)["hash"] != h or ops[op] == 0:
                lost.append(f"seq {seq} ({op})")
            elif ops[op] > 1:
                twice.append(f"{op} x{ops[op]}")
        r.lost += len(lost)
        r.duplicated += len(twice)
        if lost:
            r.fail("acknowledged event on the server", f"{uid}: {len(lost)} missing: {lost[:3]}")
        if twice:
            r.fail("acknowledged event once", f"{uid}: {len(twice)} stored twice: {twice[:3]}")
        self._check_mqtt(u, acked, poison, events)
        self._check_clock(u, events, cps)
        for x in u.writer.exits:
            r.fail("the writing edge (ingest) never stops", f"{uid}: {x}")
        for x in u.syncer.exits:
            r.fail("background sync never stops for a non-fork", f"{uid}: {x}")
        for x in u.second_syncs:
            r.fail("a second sync process waits or says so", f"{uid}: {x}")

    def _edge_rows(self, u: Unit) -> tuple[list[tuple[int, bytes]], list[tuple[int, bytes]]]:
        con = sqlite3.connect(f"file:{u.home / 'edge.db'}?mode=ro", uri=True)
        try:
            ev = con.execute("SELECT seq, line FROM events ORDER BY seq").fetchall()
            cp = con.execute("SELECT seq, line FROM checkpoints ORDER BY seq").fetchall()
        finally:
            con.close()
        return [(s, bytes(x)) for s, x in ev], [(s, bytes(x)) for s, x in cp]

    def _check_mqtt(
        self, u: Unit, acked: set[int], poison: dict[int, str], events: list[tuple[int, bytes]]
    ) -> None:
        r, uid = self.result, u.unit_id
        found = mqtt_serials(iter(events))
        lost: list[int] = []
        twice: list[int] = []
        accepted: Counter[str] = Counter()  # poison recorded as a reading, by kind
        refused_good: list[int] = []  # good readings the edge refused
        for s in sorted(acked):
            hits = found.get(s, [])
            if s in poison:
                r.acked_poison += 1
                if any(k == "reading.recorded" for _seq, k in hits):
                    accepted[poison[s]] += 1
            else:
                r.acked_readings += 1
                if hits and all(k == "reading.refused" for _seq, k in hits):
                    refused_good.append(s)
            if not hits:
                lost.append(s)
            elif len(hits) > 1:
                twice.append(s)
        if lost:  # what the broker's crash window explains is counted apart
            with self.book.lock:
                acked_at = {s: self.book.acked_at[s] for s in lost}
            in_window = {
                s
                for s in lost
                if any(0 <= k - acked_at[s] <= BROKER_WINDOW_S for k in self.broker_kills)
            }
            r.lost_in_broker_window += len(in_window)
            lost = [s for s in lost if s not in in_window]
        r.lost += len(lost)
        r.duplicated += len(twice)
        if refused_good:
            lines = dict(events)
            first = orjson.loads(lines[found[refused_good[0]][0][0]])
            r.fail(
                "a good reading is recorded, not refused",
                f"{uid}: {len(refused_good)} refused, e.g. serials {refused_good[:5]}; the "
                f"first at seq {first['seq']}: {str(first['payload'].get('reason'))[:300]}",
            )
        if accepted:
            r.fail(
                "poison quarantined as reading.refused",
                f"{uid}: recorded as readings: {dict(accepted)}",
            )
        if twice:
            r.fail(
                "broker-acked message once",
                f"{uid}: {len(twice)} stored more than once, e.g. {twice[0]} at {found[twice[0]]}",
            )
        if lost:
            kinds = Counter(poison.get(s, "reading") for s in lost)
            on_edge = mqtt_serials(edge_lines(u.home)).keys()
            with self.book.lock:
                at = {s: self.book.acked_at[s] for s in lost}
            before_kill = [
                min((k - at[s] for k in self.broker_kills if k >= at[s]), default=None)
                for s in lost
            ]
            gaps = [g for g in before_kill if g is not None]
            window = [g for g in gaps if g <= BROKER_WINDOW_S]
            r.fail(
                "broker-acked message on the server",
                f"{uid}: {len(lost)} lost ({dict(kinds)}; {len(set(lost) & on_edge)} of them "
                f"are in the edge ledger; {len(window)} were acked within "
                f"{BROKER_WINDOW_S:g} s before a broker SIGKILL, "
                f"{len(gaps)} within {max(gaps, default=0):.1f} s), e.g. serials {lost[:5]} "
                f"acked at {[round(at[x] - self.began, 1) for x in lost[:5]]} s",
            )

    def _check_clock(
        self, u: Unit, events: list[tuple[int, bytes]], cps: list[tuple[int, bytes]]
    ) -> None:
        """Each backward step of recorded time, and each forward leap the writing process lived
        through (its own events on both sides of it), has a ``clock.jumped`` event in the
        commit group of the first event that shows it.  A leap while no writer ran cannot be
        told from the time it was down, so it is not asked for."""
        from ebr_core.record import parse_time

        r, uid = self.result, u.unit_id
        ends = [s for s, _ in cps]
        group: dict[int, int] = {}  # seq -> its group's checkpoint seq
        i = 0
        jumped_groups: set[int] = set()
        prev: datetime | None = None
        writer: dict[int, str] = {}  # seq -> pid of the writer process of the last note so far
        pid = ""
        leaps: list[int] = []  # forward leaps, checked once the next note names its writer
        for seq, line in events:
            while i < len(ends) and ends[i] < seq:
                i += 1
            group[seq] = ends[i] if i < len(ends) else -1
            ev = orjson.loads(line)
            writer[seq] = pid
            t = parse_time(ev["recorded_at"])
            if prev is not None and t < prev:
                u.backward_steps.append(seq)
                u.clock_steps += 1
            elif prev is not None and (t - prev).total_seconds() > LEAP_S:
                leaps.append(seq)
            if u.first_ahead is None:
                if t <= self.began_wall + timedelta(seconds=300):
                    u.not_ahead = seq  # never ahead of the server's clock when it came
                elif t > self.ended_wall + timedelta(seconds=300):
                    u.first_ahead = seq  # always ahead of it
            prev = t
            if ev["kind"] == "clock.jumped":
                jumped_groups.add(group[seq])
            elif ev["kind"] == "note.added":
                now_pid = str(ev["payload"]["op"]).split("-")[0]
                same = [x for x in leaps if writer[x] == now_pid]
                u.clock_steps += len(same)
                u.leaps_within_process.extend(same)
                leaps, pid = [], now_pid
        steps = sorted([*u.backward_steps, *u.leaps_within_process])
        unexplained = [s for s in steps if group[s] not in jumped_groups]
        if unexplained:
            r.fail(
                "clock jumps recorded as clock.jumped",
                f"{uid}: {len(u.backward_steps)} backward steps and "
                f"{len(u.leaps_within_process)} forward leaps of one writer in recorded time, "
                f"{len(unexplained)} without a clock.jumped event in their commit group (seqs "
                f"{unexplained[:5]})",
            )

    def _check_alerts(self) -> None:
        """The server raised a clock alert for each segment where a unit's recorded time runs
        backwards (naming the first such event of the segment: one alert per segment and kind,
        as ``server/service.py`` says), and for the first event dated ahead of its clock."""
        segments = stored_segments(self.server.db)
        self.server.start()
        try:
            with self.server.admin() as c:
                alerts = c.get("/admin/alerts").json()
        finally:
            self.server.stop()
        for u in self.units:
            named: set[int] = set()
            for a in alerts:
                if a.get("unit_id") == u.unit_id and "clock" in str(a.get("kind", "")).lower():
                    named.update(int(x) for x in re.findall(r"\bseq (\d+)", str(a["message"])))
            starts = sorted(lo for lo, _hi in segments.get(u.unit_id, []))

            def segment_start(seq: int, starts: list[int] = starts) -> int:
                return max((lo for lo in starts if lo < seq), default=0)

            missing = [
                s for s in u.backward_steps if not any(segment_start(s) < x <= s for x in named)
            ]
            # The server names the first event of a segment dated ahead of its clock, which is
            # after the last one that cannot have been, and at or before the first that was.
            ahead = u.first_ahead
            if ahead is not None and not any(u.not_ahead < s <= ahead for s in named):
                missing.append(ahead)
            if missing:
                self.result.fail(
                    "server alerts on a unit's clock jumps",
                    f"{u.unit_id}: no clock alert names seqs {missing[:5]} "
                    f"({len(u.backward_steps)} backward steps; first event dated ahead: "
                    f"{u.first_ahead})",
                )

    # -- whole run ------------------------------------------------------------------------

    def run(self) -> Result:
        try:
            self.setup()
            self.run_faults()
            self.heal()
            self.check()
        finally:
            self.teardown()
        return self.result

    def teardown(self) -> None:
        for p in self.side_procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        for u in self.units:
            u.runner.stop()
            for d in (*u.devices, u.prober):
                d.close()
            u.writer.kill()
            u.syncer.kill()
        self.server.kill()
        self.proxy.close()
        (self.work / "timeline.log").write_text("\n".join(self.timeline) + "\n")
        with contextlib.suppress(OSError):
            shutil.copyfile(self.broker.log, self.work / "mosquitto.log")
        with contextlib.suppress(Exception):
            self.broker.__exit__(None, None, None)


def _wire(events: list[tuple[int, bytes]], cps: list[tuple[int, bytes]]) -> list[bytes]:
    """Event lines with each checkpoint after its event (the exchange format's order)."""
    by_seq = dict(cps)
    out: list[bytes] = []
    for seq, line in events:
        out.append(line)
        if seq in by_seq:
            out.append(by_seq[seq])
    return out


def run_campaign(
    seconds: float,
    seed: int,
    units: int = 2,
    work: Path | None = None,
    without: frozenset[str] = frozenset(),
) -> Result:
    """Run the whole campaign in ``work`` (a temporary folder by default, removed after),
    leaving out the faults named in ``without`` (to look into one defect at a time; the
    `make soak` run leaves out none)."""
    tmp = None
    if work is None:
        tmp = work = Path(tempfile.mkdtemp(prefix="ctgtp-campaign-"))
    try:
        return Campaign(seconds, seed, units, work, without).run()
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if args[:1] == ["writer"]:
        return writer_main(Path(args[1]), args[2], int(args[3]))
    if args[:1] == ["syncer"]:
        return syncer_main(Path(args[1]), args[2], Path(args[3]))
    p = argparse.ArgumentParser(prog="python -m tests.hil.campaign", description=__doc__)
    p.add_argument(
        "--seconds", type=float, default=float(os.environ.get("CAMPAIGN_SECONDS", "300"))
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--units", type=int, default=2)
    p.add_argument("--keep", type=Path, default=None, help="Work in this folder and keep it.")
    p.add_argument(
        "--without",
        default="",
        help="Faults to leave out, comma-separated (e.g. kill.broker,proxy).",
    )
    a = p.parse_args(args)
    seed = a.seed if a.seed is not None else random.SystemRandom().randrange(1_000_000)
    if a.keep is not None:
        a.keep.mkdir(parents=True, exist_ok=True)
    without = frozenset(x.strip() for x in a.without.split(",") if x.strip())
    result = run_campaign(a.seconds, seed, a.units, a.keep, without)
    print(result.figures(), flush=True)
    return 1 if result.failures or result.lost or result.duplicated else 0


if __name__ == "__main__":
    sys.exit(main())
