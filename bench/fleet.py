"""A region's fleet on PostgreSQL (``ctgtp fleet``, issue 25): 10, 100 and 1,000 units, each
with its own key, ledger and signed requests over real HTTP (telemetry at 8 readings/s, an
operator step every 10 s, a sync every 5 s), against a server with 1 and 2 API workers.

Rate: the events the server stored per second of the run (driving and the final drain).
Ceiling, in the same run: binary COPY (as the server writes) of the very rows the fleet stored,
from one connection into a table with the same key, one COPY and commit per segment (the fleet's
mean segment size), with nothing else running.  The rate is bounded by what the units offer
(``offered_per_s``): a fleet that keeps up stores what it is sent, so the ratio at 10 and 100
units says how much room is left, not how fast the server is; at 1,000 units (8,000 events/s
offered) it is the server's capacity on this machine.
Also: segment round trip and server ingest (the receipt's own time) p50/p99, and exactly once.
Goals: ratio >= 0.5, server ingest p99 <= 500 ms at 1,000 units, exactly once always.

``--quick``: 100 and 1,000 units, 20 s each; the full run: 10, 100 and 1,000 units, 60 s each;
``--units N`` and ``--workers N`` (repeatable) pick some of them.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit

from ctgtp.fleet import Mix, cpu_seconds, run_fleet
from server.pgcluster import PgCluster

TYPES = ["varchar", "int8", "varchar", "varchar", "varchar", "varchar", "bytea"]


def copy_ceiling(url: str, per_segment: int) -> float:
    """Events/s of binary COPY of the fleet's stored rows, ``per_segment`` rows a commit."""
    import psycopg

    with psycopg.connect(url.replace("+psycopg", "")) as con:
        rows = con.execute(
            "SELECT unit_id, seq, hash, batch_id, kind, recorded_at, line FROM events "
            "ORDER BY unit_id, seq"
        ).fetchall()
        con.execute(
            "CREATE TABLE ceiling (unit_id varchar(64), seq bigint, hash varchar(64), "
            "batch_id varchar(64), kind varchar(64), recorded_at varchar(32), line bytea, "
            "PRIMARY KEY (unit_id, seq))"
        )
        con.commit()
        start = time.perf_counter()
        for i in range(0, len(rows), per_segment):
            with con.cursor().copy(
                "COPY ceiling (unit_id, seq, hash, batch_id, kind, recorded_at, line) "
                "FROM STDIN (FORMAT BINARY)"
            ) as cp:
                cp.set_types(TYPES)
                for r in rows[i : i + per_segment]:
                    cp.write_row(r)
            con.commit()
        rate = len(rows) / (time.perf_counter() - start)
        con.execute("DROP TABLE ceiling")
        con.commit()
        return rate


def stored_bytes(url: str) -> tuple[int, int, int]:
    """(events, bytes of the events table with its indexes and TOAST, bytes of every table)."""
    import psycopg

    with psycopg.connect(url.replace("+psycopg", "")) as con:
        n = con.execute("SELECT count(*) FROM events").fetchone()
        ev = con.execute("SELECT pg_total_relation_size('events')").fetchone()
        every = con.execute(
            "SELECT sum(pg_total_relation_size(c.oid)) FROM pg_class c JOIN pg_namespace s "
            "ON s.oid = c.relnamespace WHERE c.relkind = 'r' AND s.nspname = 'public'"
        ).fetchone()
        assert n is not None and ev is not None and every is not None
        return int(n[0]), int(ev[0]), int(every[0])


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description="A region's fleet on PostgreSQL")
    p.add_argument("--quick", action="store_true", help="100 and 1,000 units, 20 s each")
    p.add_argument("--units", type=int, action="append", help="only these sizes (repeatable)")
    p.add_argument("--workers", type=int, action="append", help="only these (repeatable)")
    a = p.parse_args()
    sizes = tuple(a.units or ((100, 1000) if a.quick else (10, 100, 1000)))
    seconds = 20.0 if a.quick else 60.0
    if any(n < 1 for n in sizes) or any(w < 1 for w in a.workers or ()):
        p.error("--units and --workers: at least 1")
    mix = Mix()
    with PgCluster() as pg:
        postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
        for units in sizes:
            for workers in a.workers or (1, 2):
                url = pg.create_db(f"fleet_{units}_{workers}")
                load = os.getloadavg()[0]
                db_cpu0 = cpu_seconds(postmaster)
                with tempfile.TemporaryDirectory() as d:
                    r = run_fleet(units, seconds, "postgres", Path(d), workers=workers, mix=mix,
                                  database_url=url)  # fmt: skip
                db_cpu = cpu_seconds(postmaster) - db_cpu0
                per_segment = max(1, round(r["server_events"] / max(1, r["segments"])))
                n, events_bytes, all_bytes = stored_bytes(url)
                ceiling = copy_ceiling(url, per_segment)
                offered = units * (mix.readings_per_s + 4 / mix.step_s)
                emit(
                    f"fleet: {units} units, {workers} worker(s), PostgreSQL",
                    r["events_per_s"],
                    "events/s",
                    ceiling,
                    offered_per_s=round(offered, 1),
                    seconds=r["seconds"],
                    events=r["server_events"],
                    segments=r["segments"],
                    events_per_segment=per_segment,
                    round_trip_p50_ms=r["round_trip_p50_ms"],
                    round_trip_p99_ms=r["round_trip_p99_ms"],
                    server_ingest_p50_ms=r["server_ingest_p50_ms"],
                    server_ingest_p99_ms=r["server_ingest_p99_ms"],
                    exactly_once=not (r["errors"] or r["mismatches"])
                    and r["server_events"] == r["edge_events"],
                    errors=len(r["errors"]),
                    mismatches=len(r["mismatches"]),
                    events_table_bytes_per_event=round(events_bytes / max(1, n), 1),
                    all_tables_bytes_per_event=round(all_bytes / max(1, n), 1),
                    server_cpu_s=r.get("server_cpu_s"),
                    database_cpu_s=round(db_cpu, 1),
                    events_per_cpu_s=round(
                        r["server_events"] / max(0.1, r["server_cpu_s"] + db_cpu), 1
                    ),
                    load_average=round(load, 2),
                    cores=os.cpu_count(),
                )


if __name__ == "__main__":
    main()
