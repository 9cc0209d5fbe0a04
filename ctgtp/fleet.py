"""``ctgtp fleet``: a region's units against one server (its own process, ``--workers`` uvicorn
workers, on SQLite or a throwaway PostgreSQL cluster), for a set time; then checks that every
event each unit recorded arrived exactly once and prints one JSON line.

Each unit has its own key, its own ledger (a SQLite file) and signs its own requests, sent over
real HTTP.  Units do not get a thread each: a driver process holds many units, and a few threads
per process take turns over them (each thread owns a share of the units and visits each in turn
about once a second).  A unit runs one batch for the whole run and, on each visit, records:

- telemetry: ``reading.recorded`` at ``--readings-per-s`` (8 by default) since its last visit,
  as one commit group (a station commits its readings in groups, never one by one);
- operator events every ``--step-s`` seconds: a scan, a value, its signature, the step done;
- a sync every ``--sync-s`` seconds (starts spread over the first interval): the stored head,
  then the segments beyond it, with each receipt's transparency-log proof checked.

At the end every unit records ``batch.completed`` and syncs until the server holds all of it.
``events_per_s`` is what the server stored over the whole run (driving and draining).
"""

from __future__ import annotations

import json
import math
import os
import random
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click
import httpx

ADMIN = "fleet-admin-token-local-runs-only-0123"  # 32+ characters: the server refuses less
UNITS_PER_DRIVER = 400  # units one driver process takes before another is started


@dataclass(frozen=True)
class Mix:
    """What each unit sends, and how often."""

    readings_per_s: float = 8.0
    step_s: float = 10.0
    sync_s: float = 5.0
    threads: int = 16  # per driver process


@dataclass
class UnitRun:
    unit_id: str
    events: int = 0
    acked: int = 0
    syncs: int = 0
    segment_ms: list[float] = field(default_factory=list)
    server_ms: list[float] = field(default_factory=list)
    error: str | None = None

def operator_step(batch: str, step: str, op: str = "op.fleet") -> list[Any]:
    """An operator's step as a unit records it: a scan, a value, a signature, the step done."""
    from edge.ledger import Append

    return [
        Append("scan.accepted", {"step": step, "role": "reagent", "raw": "x",
                                 "identifiers": {}}, batch, op),
        Append("value.recorded", {"step": step, "name": "v",
                                  "value": {"value": "1", "unit": "1"}, "limit": "ok"}, batch, op),
        Append("signature.applied", {"step": step, "user_id": op, "printed_name": "Fleet Operator",
                                     "meaning": "performed", "signed_hash": "0" * 64}, batch, op),
        Append("step.completed", {"step": step}, batch, op),
    ]  # fmt: skip



class _Unit:
    """One simulated unit: its ledger, its sync client and when it next does what."""

    def __init__(self, unit_id: str, key: Any, home: Path, http: httpx.Client, server_key: Any,
                 mix: Mix, start: float, rng: random.Random) -> None:  # fmt: skip
        from edge.ledger import Ledger
        from edge.sync import SyncClient

        self.run = UnitRun(unit_id)
        self.mix = mix
        last = [datetime.now(UTC)]

        def clock() -> datetime:
            # real time, strictly increasing: the server flags events dated before the unit's
            # enrolment or ahead of its own clock
            last[0] = max(datetime.now(UTC), last[0] + timedelta(microseconds=1))
            return last[0]

        self.ledger = Ledger.open(home / f"{unit_id}.db", key, clock)
        self.client = SyncClient(self.ledger, str(http.base_url), server_key=server_key,
                                 client=http)  # fmt: skip
        self.batch = f"{unit_id}-B000"
        n = int(unit_id.rsplit("-", 1)[-1])
        self.coi = f"&/CHA999926{n:06d}"  # unique per unit
        self.next_sync = start + rng.uniform(0, mix.sync_s)
        self.next_step = start + rng.uniform(0, mix.step_s)
        self.readings_at = start
        self.owed = 0.0  # readings due but not yet recorded (fractions carried over)
        self.step = 0

    def begin(self) -> None:
        self.ledger.append("batch.started", {"coi": self.coi, "mbr_id": "CAR-T",
                                             "mbr_version": "3", "mbr_hash": "0" * 64,
                                             "product": "p"},
                           batch_id=self.batch, actor="op.fleet")  # fmt: skip

    def visit(self, now: float) -> None:
        from edge.ledger import Append

        self.owed += (now - self.readings_at) * self.mix.readings_per_s
        self.readings_at = now
        due = int(self.owed)
        self.owed -= due
        step = f"s{self.step}"
        group = [
            Append("reading.recorded", {"channel": "temp", "step": step,
                                        "value": {"value": "37.0", "unit": "Cel"}}, self.batch)
            for _ in range(due)
        ]  # fmt: skip
        if now >= self.next_step:
            self.next_step += self.mix.step_s
            group += operator_step(self.batch, step)
            self.step += 1
        if group:
            self.ledger.append_many(group)
        if now >= self.next_sync:
            self.next_sync = max(self.next_sync + self.mix.sync_s, now)
            self.sync()

    def sync(self) -> None:
        r = self.client.sync_once()
        self.run.segment_ms += r.segment_ms
        self.run.server_ms += r.server_ms
        self.run.syncs += 1

    def finish(self, end: float) -> None:
        """The readings the instrument made up to the end of the run (a unit whose thread was
        busy with other units' syncs still records what its instrument measured), the batch's
        completion, and a sync of all of it."""
        from edge.ledger import Append

        self.owed += max(0.0, end - self.readings_at) * self.mix.readings_per_s
        self.readings_at = end
        due, self.owed = int(self.owed), 0.0
        step = f"s{self.step}"
        self.ledger.append_many(
            [Append("reading.recorded", {"channel": "temp", "step": step,
                                         "value": {"value": "37.0", "unit": "Cel"}}, self.batch)
             for _ in range(due)]
            + [Append("batch.completed", {}, self.batch, "op.fleet")]
        )  # fmt: skip
        self.sync()
        self.run.events = self.ledger.head[0]
        self.run.acked = int(self.ledger.get_meta("sync.acked_seq") or 0)

    def close(self) -> None:
        self.ledger.close()


def drive(
    base: str, unit_ids: list[str], home: str, seconds: float, mix: Mix
) -> list[dict[str, Any]]:
    """One driver process: enrol its units (each with a new key), run them for ``seconds`` on
    ``mix.threads`` threads, drain; the units' runs as dicts."""
    from ebr_core.keys import PublicKey, UnitSigner

    rng = random.Random(unit_ids[0] if unit_ids else 0)  # noqa: S311 - schedule jitter only
    limits = httpx.Limits(max_connections=mix.threads + 4, max_keepalive_connections=mix.threads)
    http = httpx.Client(base_url=base, timeout=120.0, limits=limits)
    admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"}, timeout=60)
    server_key = PublicKey.from_bytes(http.get("/server-key").content)
    threads = max(1, min(mix.threads, len(unit_ids)))
    shares = [unit_ids[i::threads] for i in range(threads)]
    start = time.monotonic() + 0.5
    stop = [False]

    def enrol(unit_id: str) -> _Unit:
        key = UnitSigner.generate(unit_id)
        r = admin.post(
            "/admin/units",
            json={
                "site_id": f"SITE-{int(unit_id[-5:]) % 5}",
                "unit_id": unit_id,
                "public_key": key.public.to_json().decode(),
            },
        )
        if r.status_code != 201:
            raise RuntimeError(f"enrolment answered {r.status_code}: {r.text[:200]}")
        u = _Unit(unit_id, key, Path(home), http, server_key, mix, start, rng)
        u.begin()
        return u

    failed: list[UnitRun] = []

    def own(share: list[str]) -> list[_Unit]:
        out = []
        for unit_id in share:
            try:
                out.append(enrol(unit_id))
            except Exception as e:  # reported per unit (an exception may not pickle)
                failed.append(UnitRun(unit_id, error=f"{type(e).__name__}: {e}"))
        return out

    with ThreadPoolExecutor(threads) as pool:
        mine = list(pool.map(own, shares))
    start = time.monotonic()
    for units in mine:
        for u in units:
            u.readings_at = start
            u.next_sync = start + rng.uniform(0, mix.sync_s)
            u.next_step = start + rng.uniform(0, mix.step_s)
    end = start + seconds

    def loop(units: list[_Unit]) -> None:
        while time.monotonic() < end and not stop[0]:
            round_start = time.monotonic()
            for u in units:
                if u.run.error is None and time.monotonic() < end:
                    try:
                        u.visit(time.monotonic())
                    except Exception as e:  # reported per unit
                        u.run.error = f"{type(e).__name__}: {e}"
            time.sleep(max(0.0, 1.0 - (time.monotonic() - round_start)))
        for u in units:
            if u.run.error is None:
                try:
                    u.finish(end)
                except Exception as e:  # reported per unit
                    u.run.error = f"{type(e).__name__}: {e}"
            u.close()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(loop, mine))
    http.close()
    admin.close()
    return [asdict(u.run) for units in mine for u in units] + [asdict(f) for f in failed]


def _q(sorted_ms: list[float], q: float) -> float | None:
    if not sorted_ms:
        return None
    return round(sorted_ms[min(len(sorted_ms) - 1, int(len(sorted_ms) * q))], 1)


def run_fleet(
    units: int,
    seconds: float,
    database: str,
    work: Path,
    *,
    workers: int = 1,
    drivers: int | None = None,
    mix: Mix = Mix(),
    database_url: str | None = None,
) -> dict[str, Any]:
    """Run the fleet against a new server; the report (``errors`` and ``mismatches`` list every
    unit that failed, lost or duplicated anything).  ``database_url``: an empty PostgreSQL
    database to use instead of a new cluster."""
    from server.pgcluster import PgCluster
    from server.process import serve_subprocess, stop

    if units < 1 or seconds <= 0 or workers < 1:
        raise ValueError(f"units ({units}), seconds ({seconds}) and workers ({workers}) must be "
                         "positive")  # fmt: skip
    cluster = None
    if database == "postgres":
        if database_url is None:
            cluster = PgCluster().__enter__()
            database_url = cluster.create_db("fleet")
        url = database_url
    elif database == "sqlite":
        url = f"sqlite:///{work / 'server.db'}"
    else:
        raise ValueError(f"database {database!r}: 'sqlite' or 'postgres' expected")
    drivers = drivers or max(1, math.ceil(units / UNITS_PER_DRIVER))
    base, proc = serve_subprocess(url, work / "server", ADMIN, workers=workers,
                                  rate_per_second="1000", rate_burst="1000")  # fmt: skip
    try:
        ids = [f"FLEET-{i:05d}" for i in range(units)]
        (work / "units").mkdir(exist_ok=True)
        cpu0 = cpu_seconds(proc.pid)  # the server's start-up (imports, head check) not counted
        t = time.perf_counter()
        if drivers == 1:
            runs = drive(base, ids, str(work / "units"), seconds, mix)
        else:
            with ProcessPoolExecutor(drivers) as pool:
                parts = [pool.submit(drive, base, ids[i::drivers], str(work / "units"), seconds,
                                     mix) for i in range(drivers)]  # fmt: skip
                runs = [r for p in parts for r in p.result()]
        elapsed = time.perf_counter() - t
        out = report(base, runs, database, units, workers, drivers, elapsed)
        # CPU seconds the server (its workers and their verifier processes) and the database
        # spent over the run: events per CPU second whatever else the machine runs
        out["server_cpu_s"] = round(cpu_seconds(proc.pid) - cpu0, 1)
        if cluster is not None:
            pid = int((cluster.data / "postmaster.pid").read_text().split()[0])
            out["database_cpu_s"] = round(cpu_seconds(pid), 1)
        return out
    finally:
        try:
            stop(proc)
        finally:
            if cluster is not None:
                cluster.__exit__(None, None, None)


def cpu_seconds(pid: int) -> float:
    """User and system CPU seconds of ``pid`` and its live descendants, plus what its waited-for
    children used (Linux ``/proc``; 0.0 elsewhere)."""
    tick = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100
    total, todo = 0, [pid]
    while todo:
        p = todo.pop()
        try:
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += sum(int(x) for x in fields[11:15])  # utime, stime, cutime, cstime
            for task in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (task / "children").read_text().split()]
        except (OSError, IndexError, ValueError):
            continue
    return total / tick


def report(base: str, runs: list[dict[str, Any]], database: str, units: int, workers: int,
           drivers: int, elapsed: float) -> dict[str, Any]:  # fmt: skip
    """Exactly once, unit by unit: the server holds as many events as the unit recorded, its
    head is the unit's head, and the unit's receipts acknowledged all of them."""
    errors = [f"{r['unit_id']}: {r['error']}" for r in runs if r["error"]]
    lost, server_total = [], 0
    with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"},
                      timeout=60) as admin:  # fmt: skip
        for r in runs:
            got = admin.get(f"/admin/units/{r['unit_id']}")
            if got.status_code != 200:
                lost.append(f"{r['unit_id']}: the server answered {got.status_code}")
                continue
            held = got.json()
            server_total += int(held["events"])
            if not (held["events"] == held["head_seq"] == r["events"] == r["acked"]):
                lost.append(f"{r['unit_id']}: edge {r['events']}, acked {r['acked']}, server "
                            f"{held['events']} (head {held['head_seq']})")  # fmt: skip
    lat = sorted(x for r in runs for x in r["segment_ms"])
    srv = sorted(x for r in runs for x in r["server_ms"])
    edge_total = sum(r["events"] for r in runs)
    return {
        "database": database,
        "units": units,
        "workers": workers,
        "drivers": drivers,
        "edge_events": edge_total,
        "server_events": server_total,
        "seconds": round(elapsed, 2),
        "events_per_s": round(server_total / elapsed, 1),
        "syncs": sum(r["syncs"] for r in runs),
        "segments": len(lat),
        "round_trip_p50_ms": _q(lat, 0.5),
        "round_trip_p99_ms": _q(lat, 0.99),
        "server_ingest_p50_ms": _q(srv, 0.5),
        "server_ingest_p99_ms": _q(srv, 0.99),
        "errors": errors,
        "mismatches": lost,
    }


@click.command()
@click.option("--units", default=100, show_default=True, type=click.IntRange(1, 100_000))
@click.option("--seconds", default=60.0, show_default=True, type=click.FloatRange(1, 86_400),
              help="How long the units run their batches (then a final sync)")  # fmt: skip
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 64),
              help="API worker processes")  # fmt: skip
@click.option("--database", type=click.Choice(["sqlite", "postgres"]), default="postgres",
              show_default=True)  # fmt: skip
@click.option(
    "--drivers",
    default=None,
    type=click.IntRange(1, 64),
    help=f"Processes driving the units [default: one per {UNITS_PER_DRIVER} units]",
)
@click.option("--threads", default=16, show_default=True, type=click.IntRange(1, 256),
              help="Threads per driver process")  # fmt: skip
@click.option(
    "--readings-per-s",
    default=8.0,
    show_default=True,
    type=click.FloatRange(0, 10_000),
    help="Telemetry per unit while its batch runs",
)
@click.option("--sync-s", default=5.0, show_default=True, type=click.FloatRange(0.5, 3600))
@click.option("--step-s", default=10.0, show_default=True, type=click.FloatRange(0.5, 3600),
              help="Seconds between a unit's operator steps (4 events each)")  # fmt: skip
def fleet(units: int, seconds: float, workers: int, database: str, drivers: int | None,
          threads: int, readings_per_s: float, sync_s: float, step_s: float) -> None:  # fmt: skip
    """A region's units syncing to one server for a set time; checks exactly once per unit."""
    mix = Mix(readings_per_s=readings_per_s, step_s=step_s, sync_s=sync_s, threads=threads)
    with tempfile.TemporaryDirectory() as d:
        r = run_fleet(units, seconds, database, Path(d), workers=workers, drivers=drivers,
                      mix=mix)  # fmt: skip
    click.echo(json.dumps(r))
    if r["errors"] or r["mismatches"]:
        raise click.ClickException("the fleet lost, duplicated or failed to sync events")
