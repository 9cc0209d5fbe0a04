"""The ``ctgtp`` pytest plugin: simulated hardware as fixtures, for test engineers' own HIL tests.

Load it with ``-p firmware_sim.pytest_plugin`` (or
``pytest_plugins = ["firmware_sim.pytest_plugin"]`` in a top-level ``conftest.py``; the
project's ``pytest11`` entry point ``ctgtp`` loads it by itself once installed).  Every fixture
runs real parts (a mosquitto process, pseudo-terminals, pyserial ``sim://`` ports, a server
process) and stops and removes them after the test.  See ``docs/hil.md`` for a complete example.

* ``mosquitto_broker``: a private mosquitto (:class:`firmware_sim.broker.Broker`) on a free
  port::

      def test_x(mosquitto_broker):
          client.connect("127.0.0.1", mosquitto_broker.port)

* ``sim_scanner``: a serial scanner addressed by URL (:class:`SimScanner`)::

      def test_x(sim_scanner):
          port = serial.serial_for_url(sim_scanner.url, timeout=1)
          sim_scanner.send("]C0&/CHA999926ABC123")              # a good scan
          sim_scanner.send("]C0&/CHA999926ABC123", fault="noise")  # line noise in it
          assert port.read_until(b"\\r\\n") == b"]C0&/CHA999926ABC123\\r\\n"

* ``sim_cell_counter``: a CC1 cell counter on a pseudo-terminal (:class:`SimCellCounter`)::

      def test_x(sim_cell_counter):
          port = serial.serial_for_url(sim_cell_counter.url, timeout=1)
          sim_cell_counter.send("S-1", 2_000_000, 1_840_000, fault="bad_checksum")

* ``sim_bioreactor``: the unit's MQTT bioreactor (:class:`firmware_sim.bioreactor.BioreactorSim`,
  unit ``UNIT-SIM-01``) publishing to ``mosquitto_broker``::

      def test_x(sim_bioreactor, mosquitto_broker):
          sim_bioreactor.reading("temperature", "37.0", "Cel").wait_for_publish(5)

* ``sim_unit``: a whole unit (:class:`SimUnit`): broker, bioreactor, scanner, cell counter, a
  folder for camera frames, the fault injector of ``ctgtp sim unit``, and an edge ledger that the
  edge's own MQTT ingest and serial readers fill::

      def test_x(sim_unit):
          sim_unit.inject("{at: 0, device: bioreactor, fault: poison}")
          sim_unit.bioreactor.reading("temperature", "37.0", "Cel").wait_for_publish(5)
          assert sim_unit.wait_for(lambda: len(sim_unit.events("reading.recorded")) == 1)

* ``ctgtp_server``: ``ctgtp server run`` in its own process on a free port, SQLite in a
  temporary folder (:class:`ServerProcess`); override the ``ctgtp_server_database_url`` fixture
  (or set ``CTGTP_TEST_DATABASE_URL``) for PostgreSQL::

      def test_x(ctgtp_server):
          assert httpx.get(ctgtp_server.url + "/health").status_code == 200

The plugin is test tooling: ``sim_unit`` loads the edge by name (``importlib``), the way the
edge's station names this package for ``sim://``, so the simulators themselves stay independent
of the apps they test.

Over 400 lines: one documented fixture per device or service, for projects outside this one
(docs/hil.md).
"""

from __future__ import annotations

import contextlib
import importlib
import os
import random
import secrets
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import firmware_sim  # noqa: F401 - registers sim:// with pyserial
from firmware_sim.bioreactor import BioreactorSim
from firmware_sim.broker import Broker
from firmware_sim.devices import CellCounterSim
from firmware_sim.faults import Device, Fault, Injection, check_params, load_schedule, serial_wire
from firmware_sim.pty import BUFFER, PtyDevice
from firmware_sim.unit import Injector, Parts
from firmware_sim.urlhandler import protocol_sim

SERIAL_FAULTS = ("noise", "split", "truncate", "concat", "duplicate", "unplug")


def _params(device: Device, fault: str, given: dict[str, Any]) -> dict[str, Any]:
    if fault not in list(Fault):
        raise ValueError(f"unknown fault {fault!r}; expected one of {', '.join(Fault)}")
    params, problems = check_params(device, Fault(fault), given, f"{device} fault")
    if problems:
        raise ValueError("; ".join(problems))
    return params


def wait_for(cond: Callable[[], object], timeout: float = 10.0, every: float = 0.02) -> bool:
    """Poll ``cond`` until it is true or ``timeout`` seconds pass; its last answer."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if cond():
            return True
        time.sleep(every)
    return bool(cond())


@dataclass
class SimScanner:
    """A simulated serial scanner: open :attr:`url` with pyserial (or give it to the edge's
    scanner transport), then :meth:`send` labels to it, with a fault if you like."""

    name: str
    url: str
    rng: random.Random = field(default_factory=lambda: random.Random(26))

    def send(
        self, code: str, *, fault: str | None = None, wait_s: float = 2.0, **params: Any
    ) -> None:
        """Scan ``code`` (``]C0...``: its own AIM symbology identifier, else ``]d2``; GS as
        ``\\x1d``).  ``fault``: noise, split, truncate, concat, duplicate or unplug (the port
        fails until it is reopened), with that fault's parameters (``firmware_sim.faults``).

        The port must be open (waited for up to ``wait_s``, as a reader thread starts): a real
        line loses what is sent while nobody listens, and so does this one."""
        symbology, data = (code[:3], code[3:]) if code.startswith("]") else ("]d2", code)
        port = self._port(wait_s)
        if fault == "unplug":
            protocol_sim.disconnect(self.name)
            return
        frame = port.device.frame(data, symbology)
        if fault is None:
            port.feed(frame)
            return
        p = _params(Device.SCANNER, fault, params)
        n = int(p["count"]) if fault == "concat" else 1
        for chunk, pause in serial_wire(Fault(fault), p, [frame] * n, port.device.suffix, self.rng):
            port.feed(chunk)
            if pause:
                time.sleep(pause)

    def _port(self, wait_s: float) -> protocol_sim.Serial:
        if not wait_for(lambda: self.name in protocol_sim._PORTS, wait_s, 0.01):
            raise RuntimeError(
                f"nobody has {self.url} open; open it first (serial.serial_for_url(url)) "
                "or start the reader: a serial line loses what is sent while nobody listens"
            )
        return protocol_sim._PORTS[self.name]

    @property
    def lost(self) -> int:
        """Bytes the open port dropped because nobody read them (its buffer was full)."""
        port = protocol_sim._PORTS.get(self.name)
        return port.lost if port is not None else 0


@dataclass
class SimCellCounter:
    """A CC1 cell counter on a real pseudo-terminal; :attr:`url` is its port's stable path."""

    pty: PtyDevice
    rng: random.Random = field(default_factory=lambda: random.Random(26))

    @property
    def url(self) -> str:
        return self.pty.port

    def send(
        self,
        sample_id: str,
        total_per_ml: int,
        viable_per_ml: int,
        *,
        fault: str | None = None,
        **params: Any,
    ) -> None:
        """Send one result line; ``fault``: noise, split, truncate, concat, bad_checksum,
        duplicate or unplug (the port goes away for ``for_s`` seconds, then comes back)."""
        frame = CellCounterSim().frame(sample_id, total_per_ml, viable_per_ml)
        if fault is None:
            self.pty.write(frame)
            return
        p = _params(Device.COUNTER, fault, params)
        if fault == "unplug":
            self.pty.unplug()
            time.sleep(float(p["for_s"]))
            self.pty.replug()
            return
        n = int(p["count"]) if fault == "concat" else 1
        for chunk, pause in serial_wire(Fault(fault), p, [frame] * n, b"\r\n", self.rng):
            self.pty.write(chunk)
            if pause:
                time.sleep(pause)


@pytest.fixture
def mosquitto_broker() -> Iterator[Broker]:
    """A private mosquitto on 127.0.0.1 (``.port``; ``.restart()``, ``.kill()`` + ``.start()``
    for broker faults); stopped and its folder removed after the test."""
    with Broker() as broker:
        yield broker


@pytest.fixture
def sim_scanner() -> Iterator[SimScanner]:
    """A ``sim://`` scanner under a name of its own (CR LF, symbology identifiers)."""
    name = f"plugin-{secrets.token_hex(4)}"
    yield SimScanner(name, f"sim://scanner/{name}?suffix=crlf&buffer={BUFFER}")
    port = protocol_sim._PORTS.get(name)
    if port is not None:
        port.close()


@pytest.fixture
def sim_cell_counter(tmp_path: Path) -> Iterator[SimCellCounter]:
    """A CC1 cell counter on a pseudo-terminal, behind a stable path in ``tmp_path``."""
    counter = SimCellCounter(PtyDevice(link=tmp_path / "cell-counter"))
    yield counter
    counter.pty.close()


@pytest.fixture
def sim_bioreactor(mosquitto_broker: Broker) -> Iterator[BioreactorSim]:
    """The bioreactor of unit ``UNIT-SIM-01``, connected to ``mosquitto_broker``."""
    bio = BioreactorSim("127.0.0.1", mosquitto_broker.port, "UNIT-SIM-01")
    yield bio
    bio.wait_published(2)
    bio.close()


@dataclass
class SimUnit:
    """A whole simulated unit and the edge recording it (see the ``sim_unit`` fixture)."""

    unit_id: str
    broker: Broker
    bioreactor: BioreactorSim
    scanner: PtyDevice
    counter: PtyDevice
    camera_dir: Path
    injector: Injector
    ledger: Any  # edge.ledger.Ledger
    ingest: Any  # edge.transports.mqtt.MqttIngest
    readers: list[Any]  # edge.transports.serial.SerialReader, scanner then counter
    scans: list[str] = field(default_factory=list)

    def wait_for(self, cond: Callable[[], object], timeout: float = 10.0) -> bool:
        return wait_for(cond, timeout)

    def inject(self, entry: str | Injection) -> None:
        """Inject one fault now: an :class:`Injection` or one schedule entry in YAML, such as
        ``"{at: 0, device: broker, fault: broker_kill, params: {down_s: 1}}"``."""
        if isinstance(entry, str):
            (entry,) = load_schedule(f"faults: [{entry}]")
        self.injector.inject(entry)

    def events(self, kind: str | None = None) -> list[Any]:
        return [e for e in self.ledger.events() if kind is None or e.kind == kind]


@pytest.fixture
def sim_unit(tmp_path: Path, mosquitto_broker: Broker) -> Iterator[SimUnit]:
    """Broker, bioreactor, scanner and cell counter (ptys behind stable paths), a camera folder,
    and an edge ledger (``tmp_path/edge.db``) filled by the edge's MQTT ingest (readings, states,
    alarms, refusals) and its cell-counter reader (``reading.recorded``, channel cell_count); the
    scans its scanner reader delivers are in ``.scans``."""
    ledger_mod = importlib.import_module("edge.ledger")
    keys = importlib.import_module("ebr_core.keys")
    mqtt_mod = importlib.import_module("edge.transports.mqtt")
    serial_mod = importlib.import_module("edge.transports.serial")
    record = importlib.import_module("edge.transports.record")
    profile = importlib.import_module("hardware.profile")
    from datetime import UTC, datetime

    unit_id = "UNIT-SIM-01"
    ledger = ledger_mod.Ledger.open(
        tmp_path / "edge.db", keys.UnitSigner.generate(unit_id), lambda: datetime.now(UTC)
    )
    ingest = mqtt_mod.MqttIngest(ledger, "127.0.0.1", mosquitto_broker.port, unit_id).start()
    if not ingest.subscribed.wait(10):
        raise RuntimeError("the edge's MQTT ingest did not subscribe within 10 s")
    bio = BioreactorSim("127.0.0.1", mosquitto_broker.port, unit_id)
    scanner = PtyDevice(link=tmp_path / "scanner")
    counter = PtyDevice(link=tmp_path / "cell-counter")
    camera = tmp_path / "camera"
    camera.mkdir()
    unit = SimUnit(
        unit_id,
        mosquitto_broker,
        bio,
        scanner,
        counter,
        camera,
        Injector(Parts(scanner, counter, bio, mosquitto_broker, camera)),
        ledger,
        ingest,
        [],
    )
    unit.readers = [
        serial_mod.SerialReader(
            scanner.port,
            profile.shipped_profile("scanner_serial_generic"),
            lambda s: unit.scans.append(str(s)),
            retry_s=0.05,
        ).start(),
        serial_mod.SerialReader(
            counter.port,
            profile.shipped_profile("cell_counter_cc1"),
            lambda c: record.record_cell_count(ledger, c, lambda: (None, None)),
            retry_s=0.05,
        ).start(),
    ]
    try:
        yield unit
    finally:
        unit.injector.settle()
        for r in unit.readers:
            r.stop()
        bio.wait_published(2)
        bio.close()
        ingest.stop()
        scanner.close()
        counter.close()
        ledger.close()


@dataclass
class ServerProcess:
    """``ctgtp server run`` in its own process (see the ``ctgtp_server`` fixture)."""

    url: str
    port: int
    admin_token: str
    data_dir: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def ctgtp_server_database_url() -> str | None:
    """The server's database: ``None`` for SQLite in the server's folder (the default), or a
    URL such as ``postgresql+psycopg://...`` (override this fixture, or set
    ``CTGTP_TEST_DATABASE_URL``)."""
    return os.environ.get("CTGTP_TEST_DATABASE_URL") or None


@pytest.fixture
def ctgtp_server(ctgtp_server_database_url: str | None) -> Iterator[ServerProcess]:
    """A real server on a free port, with its admin token (``.admin_token``); stopped (SIGTERM)
    and its folder removed after the test."""
    import httpx

    with tempfile.TemporaryDirectory(prefix="ctgtp-server-") as folder:
        data = Path(folder)
        port, token = _free_port(), secrets.token_urlsafe(32)
        env = {
            **os.environ,
            "CTGTP_SERVER_DATA_DIR": str(data),
            "CTGTP_SERVER_DATABASE_URL": ctgtp_server_database_url
            or f"sqlite:///{data / 'server.db'}",
            "CTGTP_SERVER_ADMIN_TOKEN": token,
            "CTGTP_SERVER_VERIFY_WORKERS": "0",
        }
        log = data / "server.log"
        ctgtp = [sys.executable, "-m", "ctgtp", "server"]
        migrated = subprocess.run(
            [*ctgtp, "migrate"], env=env, capture_output=True, text=True, check=False
        )
        if migrated.returncode != 0:
            raise RuntimeError(f"ctgtp server migrate failed: {migrated.stderr[-2000:]}")
        with log.open("ab") as out:
            proc = subprocess.Popen(
                [*ctgtp, "run", "--port", str(port)],
                env=env,
                stdout=out,
                stderr=out,
            )
        server = ServerProcess(f"http://127.0.0.1:{port}", port, token, data, proc, log)
        try:
            ok = False
            end = time.monotonic() + 60
            while time.monotonic() < end and proc.poll() is None and not ok:
                with contextlib.suppress(httpx.HTTPError):
                    ok = httpx.get(server.url + "/health", timeout=2).status_code == 200
                if not ok:
                    time.sleep(0.1)
            if not ok:
                tail = log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"ctgtp server did not start on port {port}: {tail}")
            yield server
        finally:
            server.stop()
