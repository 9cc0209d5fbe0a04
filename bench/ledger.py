"""Edge ledger: durable telemetry append with group commit, and operator event latency.

Ceiling: raw sqlite3 ``executemany`` of the same rows (same schema, WAL, synchronous=FULL, one
commit per group of the same size) in the same run.  Floors (issue 3): >= 50,000 events/s and
ratio >= 0.3; operator event p99 <= 10 ms.
"""

from __future__ import annotations

import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit

from ebr_core.keys import UnitSigner
from edge.ledger import SCHEMA, Append, Ledger, event_line

N = 100_000
GROUP = 1_000


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-ledger-"))
    signer = UnitSigner.from_seed(bytes(32), "UNIT-BENCH")
    clock = lambda: datetime.now(UTC)  # noqa: E731
    items = [
        Append(
            "reading.recorded",
            {"channel": "temperature", "value": {"value": f"37.{i % 10}", "unit": "Cel"}},
            "B-0001",
        )
        for i in range(N)
    ]

    ledger = Ledger.open(tmp / "edge.db", signer, clock)
    t0 = time.perf_counter()
    for i in range(0, N, GROUP):
        ledger.append_many(items[i : i + GROUP])
    rate = N / (time.perf_counter() - t0)
    rows = [
        (ev.seq, ev.hash, ev.batch_id, ev.kind, None, event_line(ev)) for ev in ledger.events(1, N)
    ]

    raw = sqlite3.connect(tmp / "raw.db", isolation_level=None)
    raw.execute("PRAGMA journal_mode=WAL")
    raw.execute("PRAGMA synchronous=FULL")
    for stmt in SCHEMA:
        raw.execute(stmt)
    t0 = time.perf_counter()
    for i in range(0, N, GROUP):
        raw.execute("BEGIN IMMEDIATE")
        raw.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)", rows[i : i + GROUP])
        raw.execute("COMMIT")
    ceiling = N / (time.perf_counter() - t0)
    emit(
        "ledger append, telemetry group commit (1,000/group, durable, signed)",
        rate,
        "events/s",
        ceiling,
    )

    lat = []
    for i in range(500):
        t = time.perf_counter()
        ledger.append(
            "value.recorded",
            {"field": "weight", "value": {"value": "70", "unit": "kg"}, "n": i},
            batch_id="B-0001",
            actor="op.alice",
        )
        lat.append((time.perf_counter() - t) * 1000)
    lat.sort()
    p50 = statistics.median(lat)
    p99 = lat[int(len(lat) * 0.99) - 1]
    raw_lat = []
    for i in range(500):
        t = time.perf_counter()
        raw.execute("BEGIN IMMEDIATE")
        raw.execute(
            "INSERT INTO events VALUES (?, ?, ?, ?, ?, ?)",
            (N + 10_000 + i, f"h{i}", "B", "k", None, b"x" * 300),
        )
        raw.execute("COMMIT")
        raw_lat.append((time.perf_counter() - t) * 1000)
    raw_lat.sort()
    emit(
        "ledger append, operator event acknowledged (p50 ms)", p50, "ms", statistics.median(raw_lat)
    )
    emit(
        "ledger append, operator event acknowledged (p99 ms)",
        p99,
        "ms",
        raw_lat[int(len(raw_lat) * 0.99) - 1],
    )
    ledger.close()
    raw.close()


if __name__ == "__main__":
    main()
