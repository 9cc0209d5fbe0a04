"""Instrument results into the ledger, bound to the running batch and step."""

from __future__ import annotations

from collections.abc import Callable

from ebr_core.quantity import quantity
from ebr_core.record import Event
from edge.ledger import Ledger
from hardware.cellcounter import CellCount

Context = Callable[[], tuple[str | None, str | None]]


def record_cell_count(
    ledger: Ledger, count: CellCount, context: Context, device: str = "cell-counter"
) -> Event:
    batch_id, step = context()
    return ledger.append(
        "reading.recorded",
        {
            "channel": "cell_count",
            "device": device,
            "sample_id": count.sample_id,
            "step": step,
            "total": quantity(count.total_per_ml, "/mL"),
            "viable": quantity(count.viable_per_ml, "/mL"),
            "viability": quantity(count.viability_pct, "%"),
        },
        batch_id=batch_id,
        dedupe_key=f"{device}:{count.sample_id}",
    )
