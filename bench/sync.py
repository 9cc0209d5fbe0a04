"""Edge → server sync over loopback HTTP, end to end (sign, zstd, POST, verify, store, receipt).

Ceiling, measured in the same run: raw sqlite3 ``executemany`` of the same rows plus a raw HTTP
POST of the same (compressed) bytes to a trivial endpoint on the same uvicorn; the two times add.
Two rounds, each a fresh unit's 100k events after its own ceiling run; the best of each is reported
(the machine's speed drifts, so the two are taken in the same rounds).
On PostgreSQL the store ceiling is COPY in its binary format (as the server writes; the text
format writes each line's bytea as hex and runs at about half the rate).
Floor (issue 5): >= 100,000 events/s and ratio >= 0.4.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit

from ebr_core.keys import UnitSigner
from edge.ledger import Append, Ledger
from edge.sync import COMPRESSORS, SyncClient
from server.pgcluster import PgCluster
from server.process import serve_subprocess

N = 100_000
SEGMENT = 10_000


ADMIN = "bench-admin-token-at-least-32-characters"  # the server refuses shorter ones


def serve(url: str, data_dir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """The server in its own process, as in production (edge and server never share a GIL)."""
    return serve_subprocess(
        url, data_dir, ADMIN, rate_per_second="10000", rate_burst="10000",
        max_body_bytes=str(64 << 20),
    )  # fmt: skip


ROUNDS = 2


def make_ledger(tmp: Path, r: int) -> Ledger:
    unit = UnitSigner.generate(f"UNIT-R{r}")
    t0 = datetime(2026, 11, 24, tzinfo=UTC)
    n = [0]

    def clock() -> datetime:
        n[0] += 1
        return t0 + timedelta(milliseconds=n[0])

    led = Ledger.open(tmp / f"edge-{r}.db", unit, clock)
    led.append("batch.started", {"coi": "&/CHA999926000001", "mbr_id": "CAR-T",
                                 "mbr_version": "3", "mbr_hash": "0" * 64, "product": "p"},
               batch_id=f"B-{r}", actor="op.bench")  # fmt: skip  # the unit's own (issue 18)
    for g in range(1, N, 1_000):  # N events in all
        led.append_many(
            [
                Append(
                    "reading.recorded",
                    {"channel": "DO", "i": g + i, "value": {"value": "41.5", "unit": "%"}},
                    f"B-{r}",
                )
                for i in range(min(1_000, N - g))
            ]
        )
    return led


def run(
    label: str, db_url: str, tmp: Path, ledgers: list[Ledger], ceiling_store: Callable[[], float]
) -> None:
    """ROUNDS rounds, each: the raw ceiling, then one unit's whole ledger synced; best of each
    (the machine's speed drifts, so both are taken in the same rounds)."""
    url, proc = serve(db_url, tmp / f"srv-{label}")
    try:
        best, best_ceiling = 0.0, 0.0
        for led in ledgers:
            httpx.post(
                url + "/admin/units",
                headers={"Authorization": f"Bearer {ADMIN}"},
                json={
                    "site_id": "S",
                    "unit_id": led.unit_id,
                    "public_key": led.signer.public.to_json().decode(),
                },
            ).raise_for_status()
            client = SyncClient(led, url, max_events=SEGMENT)
            segments = [COMPRESSORS[client.encoding](d) for _, d in client.segments(0)]
            store_rate = ceiling_store()
            start = time.perf_counter()
            with httpx.Client(base_url=url) as c:
                # raw transfer of the same bytes (the server answers 404 fast)
                for body in segments:
                    c.post("/bench/raw-transfer", content=body)
            http_dt = time.perf_counter() - start
            best_ceiling = max(best_ceiling, N / (N / store_rate + http_dt))
            start = time.perf_counter()
            report = client.sync_once()
            dt = time.perf_counter() - start
            assert report.server_head == N, report
            best = max(best, N / dt)
        emit(
            f"sync edge→server over HTTP into {label} (verified, stored, receipted)",
            best,
            "events/s",
            best_ceiling,
        )
    finally:  # a failed round leaves no server behind
        proc.terminate()
        proc.wait(10)


def sqlite_ceiling(tmp: Path, rows: list[tuple[object, ...]]) -> float:
    path = tmp / "raw.db"
    path.unlink(missing_ok=True)
    con = sqlite3.connect(path, isolation_level=None)
    con.execute("PRAGMA journal_mode=WAL")
    con.execute("PRAGMA synchronous=FULL")
    con.execute(
        "CREATE TABLE events (unit_id TEXT, seq INTEGER, hash TEXT, batch_id TEXT, "
        "kind TEXT, recorded_at TEXT, line BLOB, PRIMARY KEY (unit_id, seq))"
    )
    start = time.perf_counter()
    for i in range(0, len(rows), SEGMENT):
        con.execute("BEGIN")
        con.executemany("INSERT INTO events VALUES (?, ?, ?, ?, ?, ?, ?)", rows[i : i + SEGMENT])
        con.execute("COMMIT")
    return len(rows) / (time.perf_counter() - start)


def main() -> None:
    tmp = Path(tempfile.mkdtemp(prefix="bench-sync-"))
    line = (
        b'{"actor":null,"batch_id":"B-1","hash":"' + b"a" * 64 + b'","kind":"reading.recorded"'
        b',"payload":{"channel":"DO","i":1,"value":{"unit":"%","value":"41.5"}},"prev_hash"'
        b':"' + b"b" * 64 + b'","recorded_at":"2026-11-24T00:00:00.001000Z","seq":1,'
        b'"type":"event","unit_id":"UNIT-X"}'
    )
    rows = [
        ("UNIT-X", i, "a" * 64, "B-1", "reading.recorded", "2026-11-24T00:00:00.001000Z", line)
        for i in range(N)
    ]
    ledgers = [make_ledger(tmp, r) for r in range(ROUNDS)]
    run(
        "sqlite",
        f"sqlite:///{tmp / 'server.db'}",
        tmp,
        ledgers,
        lambda: sqlite_ceiling(tmp, rows),
    )
    with PgCluster() as pg:
        url = pg.create_db("bench")
        import psycopg

        def copy_rate() -> float:
            with psycopg.connect(url.replace("+psycopg", "")) as con:
                con.execute("DROP TABLE IF EXISTS raw")
                con.execute(
                    "CREATE TABLE raw (unit_id text, seq bigint, hash text, batch_id text, "
                    "kind text, recorded_at text, line bytea, PRIMARY KEY (unit_id, seq))"
                )
                con.commit()
                start = time.perf_counter()
                for i in range(0, N, SEGMENT):
                    with con.cursor().copy("COPY raw FROM STDIN (FORMAT BINARY)") as cp:
                        cp.set_types(["text", "int8", "text", "text", "text", "text", "bytea"])
                        for r in rows[i : i + SEGMENT]:
                            cp.write_row(r)
                    con.commit()
                return N / (time.perf_counter() - start)

        run("postgresql", url, tmp, ledgers, copy_rate)
    for led in ledgers:
        led.close()


if __name__ == "__main__":
    main()
