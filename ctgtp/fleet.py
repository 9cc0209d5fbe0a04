"""``ctgtp fleet``: N simulated units, each running batches and syncing concurrently to one
server (its own process, SQLite or a throwaway PostgreSQL cluster); checks that every
acknowledged event arrived exactly once and reports events/s and the p99 segment latency.

Each unit is a thread with its own ledger file: it records a batch (start, scans, instrument
readings, values, signatures, completion) in commit groups, syncs, and goes on to the next batch,
while the other units do the same.
"""

from __future__ import annotations

import tempfile
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import httpx

ADMIN = "fleet-admin-token-local-runs-only-0123"  # 32+ characters: the server refuses less


@dataclass
class UnitRun:
    unit_id: str
    batches: int = 0
    events: int = 0
    acked: int = 0
    segment_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    error: str | None = None


def _unit(base: str, key: Any, home: Path, run: UnitRun, batches: int, readings: int) -> None:
    from ebr_core.keys import PublicKey
    from edge.ledger import Append, Ledger
    from edge.sync import SyncClient

    last = [datetime.now(UTC)]

    def clock() -> datetime:
        # real time, strictly increasing: the server flags events dated before the unit's
        # enrolment or ahead of its own clock
        last[0] = max(datetime.now(UTC), last[0] + timedelta(milliseconds=1))
        return last[0]

    try:
        led = Ledger.open(home / f"{run.unit_id}.db", key, clock)
        client = SyncClient(led, base, server_key=PublicKey.from_bytes(
            httpx.get(base + "/server-key").content))  # fmt: skip
        for b in range(batches):
            bid = f"{run.unit_id}-B{b:03d}"
            coi = f"&/CHA999926{b:03d}{int(run.unit_id[-3:]):03d}"  # unique per unit and batch
            led.append("batch.started", {"coi": coi, "mbr_id": "CAR-T", "mbr_version": "3",
                                         "mbr_hash": "0" * 64, "product": "p"},
                       batch_id=bid, actor="op.fleet")  # fmt: skip
            for step in range(6):
                led.append_many(
                    [Append("scan.accepted", {"step": f"s{step}", "role": "reagent",
                                              "raw": "x", "identifiers": {}}, bid, "op.fleet")]
                    + [Append("reading.recorded", {"channel": "temp", "step": f"s{step}",
                                                   "value": {"value": "37.0", "unit": "Cel"}},
                              bid) for _ in range(readings)]
                    + [Append("value.recorded", {"step": f"s{step}", "name": "v",
                                                 "value": {"value": "1", "unit": "1"},
                                                 "limit": "ok"}, bid, "op.fleet"),
                       Append("signature.applied", {"step": f"s{step}", "user_id": "op.fleet",
                                                    "printed_name": "Fleet Operator",
                                                    "meaning": "performed",
                                                    "signed_hash": "0" * 64}, bid, "op.fleet"),
                       Append("step.completed", {"step": f"s{step}"}, bid, "op.fleet")]
                )  # fmt: skip
            led.append("batch.completed", {}, batch_id=bid, actor="op.fleet")
            r = client.sync_once()
            run.segment_ms += r.segment_ms
            run.server_ms += r.server_ms
            run.batches += 1
        run.events = led.head[0]
        run.acked = int(led.get_meta("sync.acked_seq") or 0)
        led.close()
    except Exception as e:
        run.error = f"{type(e).__name__}: {e}"


def _q(sorted_ms: list[float], q: float) -> float | None:
    if not sorted_ms:
        return None
    return round(sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * q))], 1)


def run_fleet(units: int, batches: int, readings: int, database: str, work: Path) -> dict[str, Any]:
    """Run the fleet; returns the report (raises ClickException on any loss or duplicate)."""
    from ebr_core.keys import UnitSigner
    from server.pgcluster import PgCluster
    from server.process import serve_subprocess

    cluster = None
    if database == "postgres":
        cluster = PgCluster().__enter__()
        url = cluster.create_db("fleet")
    else:
        url = f"sqlite:///{work / 'server.db'}"
    base, proc = serve_subprocess(
        url, work / "server", ADMIN, rate_per_second="1000", rate_burst="1000"
    )
    try:
        admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"})
        keys = {}
        for i in range(units):
            k = UnitSigner.generate(f"FLEET-{i:03d}")
            keys[k.unit_id] = k
            admin.post("/admin/units", json={"site_id": f"SITE-{i % 5}", "unit_id": k.unit_id,
                                             "public_key": k.public.to_json().decode()},
                       ).raise_for_status()  # fmt: skip
        runs = [UnitRun(u) for u in keys]
        threads = [
            threading.Thread(target=_unit, args=(base, keys[r.unit_id], work, r, batches, readings))
            for r in runs
        ]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        elapsed = time.perf_counter() - t
        errors = [f"{r.unit_id}: {r.error}" for r in runs if r.error]
        lost, server_total = [], 0
        for r in runs:
            held = admin.get(f"/admin/units/{r.unit_id}").json()
            server_total += int(held["events"])
            if not (held["events"] == held["head_seq"] == r.events == r.acked):
                lost.append(f"{r.unit_id}: edge {r.events}, acked {r.acked}, server "
                            f"{held['events']} (head {held['head_seq']})")  # fmt: skip
        lat = sorted(x for r in runs for x in r.segment_ms)
        srv = sorted(x for r in runs for x in r.server_ms)
        edge_total = sum(r.events for r in runs)
        return {
            "database": database,
            "units": units,
            "batches": sum(r.batches for r in runs),
            "edge_events": edge_total,
            "server_events": server_total,
            "seconds": round(elapsed, 2),
            "events_per_s": round(edge_total / elapsed, 1),
            "segments": len(lat),
            "round_trip_p50_ms": _q(lat, 0.5),
            "round_trip_p99_ms": _q(lat, 0.99),
            "server_ingest_p50_ms": _q(srv, 0.5),
            "server_ingest_p99_ms": _q(srv, 0.99),
            "errors": errors,
            "mismatches": lost,
        }
    finally:
        proc.terminate()
        proc.wait(10)
        if cluster is not None:
            cluster.__exit__(None, None, None)


@click.command()
@click.option("--units", default=50, show_default=True)
@click.option("--batches", default=3, show_default=True, help="Batches per unit")
@click.option("--readings", default=20, show_default=True, help="Readings per step")
@click.option("--database", type=click.Choice(["sqlite", "postgres", "both"]), default="both",
              show_default=True)  # fmt: skip
def fleet(units: int, batches: int, readings: int, database: str) -> None:
    """Soak: a fleet of units syncing concurrently to one server."""
    import json

    bad = False
    for db in ("sqlite", "postgres") if database == "both" else (database,):
        with tempfile.TemporaryDirectory() as d:
            r = run_fleet(units, batches, readings, db, Path(d))
        click.echo(json.dumps(r))
        bad = bad or bool(r["errors"] or r["mismatches"])
    if bad:
        raise click.ClickException("the fleet lost, duplicated or failed to sync events")
