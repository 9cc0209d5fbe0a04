"""A station with no devices: the kiosk over a bare :class:`~edge.agent.EdgeAgent`.

For the kiosk's own tests and for development; the station agent (``edge.station``) is the one
that runs at a production unit.  Scans come in through :meth:`LocalStation.scan`, as the agent's
reader threads would deliver them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from edge.agent import EdgeAgent
from edge.engine import Engine
from edge.kiosk.port import DeviceState, SyncState

ACKED_META = "sync.acked_seq"


class LocalStation:
    """Implements :class:`~edge.kiosk.port.StationPort` with no devices attached."""

    def __init__(self, agent: EdgeAgent) -> None:
        self.agent = agent
        self.engine: Engine = agent.engine
        self.unit_id: str = agent.unit_id
        self._sink: Callable[[str], None] | None = None
        self._lock = threading.Lock()

    def devices(self) -> list[DeviceState]:
        return []

    def sync_state(self) -> SyncState:
        seq, _ = self.engine.ledger.head
        acked = int(self.engine.ledger.get_meta(ACKED_META) or 0)
        return SyncState(
            unsynced_events=max(0, seq - acked),
            last_receipt_at=None,
            server_head=acked or None,
            alarm=None,
        )

    def set_scan_sink(self, sink: Callable[[str], None] | None) -> None:
        with self._lock:
            self._sink = sink

    def scan(self, raw: str) -> None:
        """A code read by a scanner: handed to the kiosk's sink, if one is attached."""
        with self._lock:
            sink = self._sink
        if sink is not None:
            sink(raw)

    def health(self) -> dict[str, object]:
        seq, _ = self.engine.ledger.head
        return {"status": "ok", "unit_id": self.unit_id, "ledger_seq": seq, "devices": []}
