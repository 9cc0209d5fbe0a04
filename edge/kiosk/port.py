"""The seam between the station agent and the kiosk.

The station agent (``edge.station``) owns the devices, the background sync and the one
:class:`~edge.engine.Engine`; the kiosk only reads their state through this port and routes the
codes the attached scanner or camera reads to the signed-in operator's current step.  Both sides
build to this contract: fields may be added, never removed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from edge.engine import Engine

DEVICE_KINDS = ("serial_scanner", "serial_instrument", "camera", "mqtt")


@dataclass(frozen=True)
class DeviceState:
    name: str  # as named in station.toml, e.g. "scanner", "bioreactor"
    kind: str  # "serial_scanner" | "serial_instrument" | "camera" | "mqtt"
    connected: bool
    detail: str  # port or URL when connected; why not, when not
    last_reading: str | None  # human text, e.g. "temperature 37.1 Cel"
    last_at: datetime | None
    alarms: tuple[str, ...]  # open alarms, human text


@dataclass(frozen=True)
class SyncState:
    unsynced_events: int
    last_receipt_at: datetime | None
    server_head: int | None
    alarm: str | None  # e.g. clock skew, server unreachable


class StationPort(Protocol):
    engine: Engine  # the one Engine, the same the CLI uses
    unit_id: str

    def devices(self) -> list[DeviceState]: ...

    def sync_state(self) -> SyncState: ...

    def set_scan_sink(self, sink: Callable[[str], None] | None) -> None:
        """The agent calls ``sink(raw)`` (from its reader threads) for every code the attached
        scanner or camera reads; the kiosk routes it to the signed-in operator's current step.
        ``None`` detaches the kiosk."""

    def health(self) -> dict[str, object]:
        """Served at ``GET /health``."""
