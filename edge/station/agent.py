"""The station agent: one production unit's devices, background sync and kiosk around the one
:class:`~edge.engine.Engine` (``ctgtp edge run``, and the demo's station).

``StationAgent.from_file(station_toml).start()`` opens the unit's home (the station file's
folder unless ``home`` is given), then every device of the station file, background sync when a
server is named, and the kiosk on its address; ``stop()`` stops taking input (kiosk, then
devices), commits what is in flight (the MQTT ingest drains its queue; a serial frame being
recorded finishes), stops sync and closes the ledger cleanly.

Instrument readings are bound to the running batch: the batch started last and not completed
(one cartridge, one batch at a time), at its current step.  Scans from the scanner or the camera
go to the kiosk's sink (:meth:`set_scan_sink`): only a signed-in operator's step can take a
scan, so a scan with no sink attached is logged and dropped.

It implements :class:`edge.kiosk.port.StationPort`.  Its structured log is described in
``edge.station.logs``.

Over 400 lines: the agent is the kiosk's StationPort, where devices, sync, users and scans are
wired in one place.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from ebr_core.errors import EbrError, KeyFormatError
from ebr_core.keys import PublicKey
from edge.agent import EdgeAgent, open_agent
from edge.engine import Engine
from edge.errors import EdgeError
from edge.kiosk.port import DeviceState, SyncState
from edge.station.config import Station, StationFileError, load_station, redact
from edge.station.devices import Camera, Device, MqttInstrument, SerialInstrument, SerialScanner
from edge.station.logs import event
from edge.sync import ACKED, BackgroundSync, SyncClient, sync_alarm
from hardware.profile import shipped_profile

log = logging.getLogger("ctgtp.edge.station")
MONITOR_S = 0.25  # how often device and sync states are looked at (and changes logged)
KIOSK_GRACE_S = 2  # seconds the kiosk's requests get to finish when the station stops


class StationError(EdgeError):
    """The station cannot start: its file, its home, a key or the kiosk's address."""


def system_clock() -> datetime:
    return datetime.now(UTC)


class StationAgent:
    """See the module docstring."""

    def __init__(
        self,
        agent: EdgeAgent,
        station: Station,
        *,
        owns_agent: bool = False,
        clock: Callable[[], datetime] = system_clock,
    ) -> None:
        cfg = station.config
        if cfg.unit_id is not None and cfg.unit_id != agent.unit_id:
            raise StationFileError(
                f"{station.path}: unit_id {cfg.unit_id!r} does not match the home {agent.home}, "
                f"which is unit {agent.unit_id!r}; expected this unit's station file"
            )
        self.agent, self.station, self.clock = agent, station, clock
        self.engine: Engine = agent.engine
        self.unit_id: str = agent.unit_id
        self._owns_agent = owns_agent
        self._sink: Callable[[str], None] | None = None
        self._sink_lock = threading.Lock()
        self.kiosk_url: str | None = None
        self.kiosk_error: str | None = None
        self.sync: BackgroundSync | None = None
        self.last_receipt_at: datetime | None = None
        self.server_head: int | None = None
        # Since when background sync rounds have not reached the server (None: the last did).
        self.unreachable_since: datetime | None = None
        self.scans = 0
        # Set when stop() begins: /health says "stopping", new scans are dropped, and the kiosk
        # may end its live streams (they hold its shutdown for KIOSK_GRACE_S otherwise).
        self.stopping = self._stopping = threading.Event()
        self._stopped = False
        self._server: Any = None
        self._server_thread: threading.Thread | None = None
        self._monitor = threading.Thread(target=self._watch, daemon=True, name="station-monitor")
        self.devices_by_name: dict[str, Device] = {}
        try:
            for name, d in cfg.devices.items():
                self.devices_by_name[name] = self._device(name, d.profile)
        except BaseException:
            for made in self.devices_by_name.values():
                made.stop()
            raise

    @classmethod
    def from_file(
        cls,
        station_toml: Path,
        home: Path | None = None,
        *,
        clock: Callable[[], datetime] = system_clock,
    ) -> StationAgent:
        """The station described by ``station_toml`` for the unit at ``home`` (default: the
        station file's folder).  The home is opened and the serial ports tried (a port absent
        now is retried once started); nothing is read until :meth:`start`."""
        station = load_station(station_toml)
        try:
            agent = open_agent(
                home or station_toml.parent, clock, clock_leap_s=station.config.clock.leap_s
            )
        except (EdgeError, EbrError) as e:
            raise StationError(str(e)) from e
        try:
            return cls(agent, station, owns_agent=True, clock=clock)
        except BaseException:
            agent.close()
            raise

    # -- wiring -----------------------------------------------------------------------------

    def _device(self, name: str, profile_name: str) -> Device:
        d = self.station.config.devices[name]
        profile = shipped_profile(profile_name)
        led = self.agent.ledger
        if d.kind == "serial_scanner":
            assert d.port is not None
            return SerialScanner(name, d.port, profile, self._scanned, self.clock)
        if d.kind == "serial_instrument":
            assert d.port is not None
            return SerialInstrument(name, d.port, profile, led, self.running, self.clock)
        if d.kind == "camera":
            return Camera(name, self.station.camera_source(name), self._scanned, self.clock)
        assert d.broker is not None
        return MqttInstrument(
            name, d.broker, led, self.unit_id, self.running, self.engine.mbr.telemetry, self.clock
        )

    def device(self, name: str) -> Device:
        return self.devices_by_name[name]

    def running_batch(self) -> str | None:
        """The batch started last and not completed, if any (one cartridge, one batch)."""
        led = self.agent.ledger
        done = {e.batch_id for e in led.events_of_kind("batch.completed")}
        live = [e.batch_id for e in led.events_of_kind("batch.started") if e.batch_id not in done]
        return live[-1] if live else None

    def running(self) -> tuple[str | None, str | None]:
        """(batch, step) that an instrument reading arriving now belongs to."""
        batch = self.running_batch()
        return (None, None) if batch is None else self.engine.running(batch)

    def _scanned(self, device: str, raw: str) -> None:
        self.scans += 1
        symbology = raw[:3] if raw.startswith("]") else None
        with self._sink_lock:
            sink = self._sink
        if self._stopping.is_set():
            event("scan.dropped", f"{device}: scan after stop began, not taken", device=device)
            return
        event(
            "scan.received",
            f"{device}: scan received",
            device=device,
            symbology=symbology,
            length=len(raw),
            routed=sink is not None,
        )
        if sink is None:
            return
        try:
            sink(raw)
        except Exception:  # the kiosk's defect must not stop the reader thread
            log.exception(
                "the kiosk's scan sink failed",
                extra={"event": "error", "fields": {"device": device}},
            )

    # -- StationPort ------------------------------------------------------------------------

    def devices(self) -> list[DeviceState]:
        return [d.state() for d in self.devices_by_name.values()]

    def sync_state(self) -> SyncState:
        led = self.agent.ledger
        seq, _ = led.head
        acked = int(led.get_meta(ACKED) or 0)
        alarm: str | None = None
        if self.sync is not None:
            alarm = self.sync.error or self.sync.alarm
            if alarm is None and self.unreachable_since is not None:
                alarm = (
                    f"server unreachable since {self.unreachable_since.isoformat()}; nothing is "
                    "lost, sync resumes when it answers"
                )
        elif self.station.config.server is None:
            stored = sync_alarm(led)
            alarm = None if stored is None else str(stored.get("message"))
        return SyncState(
            unsynced_events=max(0, seq - acked),
            last_receipt_at=self.last_receipt_at,
            server_head=self.server_head,
            alarm=alarm,
        )

    def set_scan_sink(self, sink: Callable[[str], None] | None) -> None:
        self.swap_scan_sink(sink)

    def swap_scan_sink(self, sink: Callable[[str], None] | None) -> Callable[[str], None] | None:
        """Attach ``sink`` and return the one it replaces (the demo borrows the scanner from
        the kiosk for its scripted batch, then gives it back)."""
        with self._sink_lock:
            old, self._sink = self._sink, sink
        return old

    def health(self) -> dict[str, object]:
        devs = self.devices()
        sync = self.sync_state()
        ok = all(d.connected for d in devs) and sync.alarm is None and self.kiosk_error is None
        status = "stopping" if self._stopping.is_set() else ("ok" if ok else "degraded")
        return {
            "status": status,
            "unit_id": self.unit_id,
            "ledger_seq": self.agent.ledger.head[0],
            "running_batch": self.running_batch(),
            "devices": [
                {
                    "name": d.name,
                    "kind": d.kind,
                    "connected": d.connected,
                    "detail": d.detail,
                    "last_reading": d.last_reading,
                    "last_at": None if d.last_at is None else d.last_at.isoformat(),
                    "alarms": list(d.alarms),
                }
                for d in devs
            ],
            "sync": {
                "configured": self.station.config.server is not None,
                "unsynced_events": sync.unsynced_events,
                "server_head": sync.server_head,
                "last_receipt_at": None
                if sync.last_receipt_at is None
                else sync.last_receipt_at.isoformat(),
                "alarm": sync.alarm,
            },
            "kiosk": self.kiosk_url,
            "kiosk_error": self.kiosk_error,
        }

    # -- running ----------------------------------------------------------------------------

    def start(self, *, kiosk: bool = True, sync: bool = True) -> StationAgent:
        """Open the devices, start background sync (when a server is named) and the kiosk;
        returns once the kiosk listens (devices connect in the background).  The demo starts
        without the kiosk and sync for its scripted batch, then :meth:`start_kiosk` and
        :meth:`start_sync`."""
        cfg = self.station.config
        event(
            "station.starting",
            f"station {self.unit_id} starting",
            unit_id=self.unit_id,
            home=str(self.agent.home),
            devices=sorted(self.devices_by_name),
        )
        for d in self.devices_by_name.values():
            d.start()
        self._monitor.start()
        if sync and cfg.server is not None:
            self.start_sync()
        if kiosk:
            self.start_kiosk()
        event("station.started", "station started", unit_id=self.unit_id, kiosk=self.kiosk_url)
        return self

    def start_sync(self) -> None:
        server = self.station.config.server
        if server is None or self.sync is not None:
            return
        key_path = self.station.server_key()
        assert key_path is not None
        try:
            key = PublicKey.from_bytes(key_path.read_bytes())
        except (OSError, KeyFormatError, EbrError) as e:
            raise StationError(
                f"server.key {str(key_path)!r} is not the server's receipt key: {e}"
            ) from e
        client = SyncClient(self.agent.ledger, server.url, server_key=key)
        self.sync = BackgroundSync(client, server.interval_s).start()
        event("sync.started", f"background sync to {redact(server.url)}", server=server.url)

    def _kiosk_app(self, host: str, port: int) -> Any:
        """The kiosk (``edge.kiosk.app``).  A kiosk that fails to build is an error in the log
        and in ``/health`` (served alone then), and the station goes on recording its
        instruments: their readings matter more than the screen."""
        try:
            from edge.kiosk.app import KioskSettings, create_app

            return create_app(self, KioskSettings(host=host, port=port))
        except Exception as e:
            self.kiosk_error = f"the kiosk failed to start: {type(e).__name__}: {e}"
            log.exception(self.kiosk_error, extra={"event": "error", "fields": {}})
            return _health_app(self)

    def start_kiosk(self) -> None:
        import uvicorn

        if self._server is not None:
            return
        k = self.station.config.kiosk
        host = "127.0.0.1" if k.host == "localhost" else k.host
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, k.port))
        except OSError as e:
            sock.close()
            raise StationError(
                f"kiosk.bind {k.bind!r}: cannot listen there ({e.strerror or e}); expected a free "
                "port on an address of this machine"
            ) from e
        port = sock.getsockname()[1]
        shown = f"[{host}]" if family == socket.AF_INET6 else host
        self.kiosk_url = f"http://{shown}:{port}"
        config = uvicorn.Config(
            self._kiosk_app(host, port),
            log_config=None,
            access_log=False,
            log_level="warning",
            # A screen's live stream (SSE) never ends by itself: on stop, requests get this
            # long to finish, then the streams are cancelled (else stop waited for every open
            # screen).
            timeout_graceful_shutdown=KIOSK_GRACE_S,
        )
        self._server = uvicorn.Server(config)
        self._server_thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [sock]}, daemon=True, name="kiosk"
        )
        self._server_thread.start()
        end = time.monotonic() + 15
        while not self._server.started:
            if time.monotonic() > end or not self._server_thread.is_alive():
                raise StationError(f"the kiosk did not start on {self.kiosk_url}")
            time.sleep(0.01)
        event("kiosk.listening", f"kiosk on {self.kiosk_url}", url=self.kiosk_url)

    def _watch(self) -> None:
        """Log each device's connection changes, each sync round and alarm, as they happen."""
        was: dict[str, bool | None] = dict.fromkeys(self.devices_by_name)
        alarm, unreachable = None, 0
        while not self._stopping.wait(MONITOR_S):
            try:
                for d in self.devices():
                    if was[d.name] != d.connected:
                        if d.connected:
                            event("device.connected", f"{d.name} connected: {d.detail}",
                                  device=d.name, kind=d.kind, detail=d.detail)  # fmt: skip
                        elif was[d.name] is not None or d.detail:
                            event("device.lost", f"{d.name} not connected: {d.detail}",
                                  level=logging.WARNING, device=d.name, kind=d.kind,
                                  detail=d.detail)  # fmt: skip
                        was[d.name] = d.connected
                bg = self.sync
                if bg is not None:
                    new = bg.reports[:]
                    for r in new:
                        if r.segments:
                            self.last_receipt_at = self.clock()
                        self.server_head = r.server_head
                        event("sync.round", f"sync: {r.pushed} events pushed",
                              pushed=r.pushed, segments=r.segments, retries=r.retries,
                              server_head=r.server_head, local_head=r.local_head)  # fmt: skip
                    # Logged, so let go: one report a round would grow for as long as the
                    # station runs (one appended meanwhile stays for the next look).
                    del bg.reports[: len(new)]
                    if new:
                        self.unreachable_since = None
                    elif bg.unreachable > unreachable and self.unreachable_since is None:
                        self.unreachable_since = self.clock()
                        event("sync.unreachable", "sync: the server is unreachable",
                              level=logging.WARNING)  # fmt: skip
                    unreachable = bg.unreachable
                    now = bg.error or bg.alarm
                    if now != alarm:
                        event("sync.alarm" if now else "sync.resumed", now or "sync resumed",
                              level=logging.WARNING if now else logging.INFO)  # fmt: skip
                        alarm = now
            except Exception:
                log.exception("station monitor", extra={"event": "error", "fields": {}})

    def stop(self) -> None:
        """Stop taking input, commit what is in flight, close the devices and the ledger."""
        if self._stopped:
            return
        self._stopped = True
        self._stopping.set()
        event("station.stopping", "stopping: no new input; committing what is in flight")
        if self._server is not None:
            # The kiosk's open event streams end first, or uvicorn's graceful exit waits for them.
            kiosk = getattr(getattr(self._server.config.app, "state", None), "kiosk", None)
            if kiosk is not None:
                kiosk.close()
            self._server.should_exit = True  # in-flight requests finish first
            assert self._server_thread is not None
            self._server_thread.join(15)
        for d in self.devices_by_name.values():
            try:
                d.stop()
            except Exception:
                log.exception(
                    "closing %s", d.name, extra={"event": "error", "fields": {"device": d.name}}
                )
        if self.sync is not None:
            self.sync.stop()
        if self._monitor.is_alive():
            self._monitor.join(5)
        seq = self.agent.ledger.head[0]
        if self._owns_agent:
            self.agent.close()
        event("station.stopped", f"station stopped; ledger at seq {seq}", ledger_seq=seq)

    def wait_connected(self, timeout: float = 10.0) -> list[DeviceState]:
        """Wait until every device is connected; returns those still not connected."""
        end = time.monotonic() + timeout
        while True:
            down = [d for d in self.devices() if not d.connected]
            if not down or time.monotonic() > end:
                return down
            time.sleep(0.02)

    def __enter__(self) -> StationAgent:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _health_app(station: StationAgent) -> Any:
    """``GET /health`` alone, when the kiosk cannot be built."""
    from starlette.applications import Starlette
    from starlette.requests import Request
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def health(_request: Request) -> JSONResponse:
        return JSONResponse(station.health())

    return Starlette(routes=[Route("/health", health)])
