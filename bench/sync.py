"""Edge → server sync over loopback HTTP, end to end (sign, gzip, POST, verify, store, receipt).

Ceiling, measured in the same run: raw sqlite3 ``executemany`` of the same rows plus a raw HTTP
POST of the same (gzip'd) bytes to a trivial endpoint on the same uvicorn; the two times add.
Floor (issue 5): >= 100,000 events/s and ratio >= 0.4.
"""

from __future__ import annotations

import gzip
import sqlite3
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit

from ebr_core.keys import UnitSigner
from edge.ledger import Append, Ledger
from edge.sync import SyncClient
from server.pgcluster import PgCluster
from server.process import serve_subprocess

N = 100_000
SEGMENT = 10_000


def serve(url: str, data_dir: Path) -> tuple[str, subprocess.Popen[bytes]]:
    """The server in its own process, as in production (edge and server never share a GIL)."""
    return serve_subprocess(
        url, data_dir, "bench", rate_per_second="10000", rate_burst="10000",
        max_body_bytes=str(64 << 20),
    )  # fmt: skip


def run(label: str, db_url: str, tmp: Path, ceiling_store: float) -> None:
    unit = UnitSigner.generate(f"UNIT-{label}")
    t0 = datetime(2026, 11, 24, tzinfo=UTC)
    n = [0]

    def clock() -> datetime:
        n[0] += 1
        return t0 + timedelta(milliseconds=n[0])

    led = Ledger.open(tmp / f"{label}.db", unit, clock)
    for g in range(0, N, 1_000):
        led.append_many(
            [
                Append(
                    "reading.recorded",
                    {"channel": "DO", "i": g + i, "value": {"value": "41.5", "unit": "%"}},
                    "B-1",
                )
                for i in range(1_000)
            ]
        )
    url, proc = serve(db_url, tmp / f"srv-{label}")
    httpx.post(
        url + "/admin/units",
        headers={"Authorization": "Bearer bench"},
        json={
            "site_id": "S",
            "unit_id": unit.unit_id,
            "public_key": unit.public.to_json().decode(),
        },
    ).raise_for_status()
    client = SyncClient(led, url, max_events=SEGMENT)
    start = time.perf_counter()
    report = client.sync_once()
    dt = time.perf_counter() - start
    assert report.server_head == N, report
    segments = [gzip.compress(d, 1) for _, d in client.segments(0)]
    start = time.perf_counter()
    with httpx.Client(base_url=url) as c:
        for body in segments:  # raw transfer of the same bytes (the server answers 404 fast)
            c.post("/bench/raw-transfer", content=body)
    http_dt = time.perf_counter() - start
    ceiling = N / (N / ceiling_store + http_dt)
    emit(
        f"sync edge→server over HTTP into {label} (verified, stored, receipted)",
        N / dt,
        "events/s",
        ceiling,
    )
    proc.terminate()
    proc.wait(10)
    led.close()


def sqlite_ceiling(tmp: Path, rows: list[tuple[object, ...]]) -> float:
    con = sqlite3.connect(tmp / "raw.db", isolation_level=None)
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
    run("sqlite", f"sqlite:///{tmp / 'server.db'}", tmp, sqlite_ceiling(tmp, rows))
    with PgCluster() as pg:
        url = pg.create_db("bench")
        import psycopg

        with psycopg.connect(url.replace("+psycopg", "")) as con:
            con.execute(
                "CREATE TABLE raw (unit_id text, seq bigint, hash text, batch_id text, "
                "kind text, recorded_at text, line bytea, PRIMARY KEY (unit_id, seq))"
            )
            start = time.perf_counter()
            for i in range(0, N, SEGMENT):
                with con.cursor().copy("COPY raw FROM STDIN") as cp:
                    for r in rows[i : i + SEGMENT]:
                        cp.write_row(r)
                con.commit()
            copy_rate = N / (time.perf_counter() - start)
        run("postgresql", url, tmp, copy_rate)


if __name__ == "__main__":
    main()
