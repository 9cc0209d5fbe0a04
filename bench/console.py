"""The QA console with 10,000 batches and one batch of 1,000,000 readings (issue 22): the review
queue, the batch view and the telemetry endpoints (the whole series, and zoomed windows) over
loopback HTTP against the server in its own process, on SQLite.

The data set: ``bench/review.py``'s 10,000 batches (24 events each, results entered), and one
batch of 1,000,000 temperature readings (one a second, device time; an excursion every 50,000)
written straight into a SQLite file through the ingest's own projection code
(:func:`server.projections.tally_run`, :func:`upsert_summaries`).  Built once (a few minutes) and
kept under ``build/bench-console/`` (git-ignored); rebuilt when the schema moved on.

Ceiling, measured in the same run: ``GET /v1/me`` on the same server with the same token (an
authenticated request with nothing behind it).  Target: p99 <= 300 ms for each endpoint.
"""

from __future__ import annotations

import random
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit
from review import PASSWORD, seed
from sync import serve

from ebr_core.chain import ChainBuilder, NewEvent
from ebr_core.keys import UnitSigner
from ebr_core.ledgerfile import encode_record
from ebr_core.telemetry import READING
from server import projections
from server.db import make_engine, revisions
from server.units import service

ROOT = Path(__file__).resolve().parents[1]
CACHE = ROOT / "build" / "bench-console"
DB_FILE = CACHE / "server-v1.db"
READINGS = 1_000_000
CHUNK = 20_000
BIG = "B-BIG"
REQUESTS = 200
SLOW_REQUESTS = 20  # a case measured over seconds a request
T0 = datetime(2026, 11, 2, tzinfo=UTC)


def add_big_batch(url: str) -> None:
    """One unit, one batch: started, 1,000,000 readings, an alarm, completed; the rows written
    with the driver's bulk insert, the queue row and projection by the ingest's code."""
    from sqlalchemy.orm import Session

    engine = make_engine(url)
    n = [0]

    def clock() -> datetime:
        n[0] += 1
        return T0 + timedelta(milliseconds=n[0])

    signer = UnitSigner.generate("UNIT-BIG")
    with Session(engine) as s:
        service.enrol(s, "SITE-0", signer.unit_id, signer.public.to_json(), at=clock())
        s.flush()
        chain = ChainBuilder(signer, clock)
        deltas: dict[str, Any] = {}
        conn = s.connection()
        sql = ("INSERT INTO events (unit_id, seq, hash, batch_id, kind, recorded_at, line) "
               "VALUES (?, ?, ?, ?, ?, ?, ?)")  # fmt: skip

        def store(items: list[NewEvent]) -> None:
            evs = chain.next_events(items)
            rows = []
            for e in evs:
                line = encode_record(e).rstrip(b"\n")
                rows.append((signer.unit_id, e.seq, e.hash, BIG, e.kind, e.recorded_at, line))
            conn.exec_driver_sql(sql, rows)
            for kind in dict.fromkeys(e.kind for e in evs):
                run = [e for e in evs if e.kind == kind]
                projections.tally_run(
                    deltas, BIG, kind, [e.payload for e in run], [e.recorded_at for e in run],
                    run[0].seq, [e.hash for e in run],
                )  # fmt: skip

        store([NewEvent("batch.started", {"coi": "&/CHA999900BIG001", "mbr_id": "CAR-T",
                                          "mbr_version": "3", "mbr_hash": "0" * 64,
                                          "product": "p"}, BIG, "op.alice")])  # fmt: skip
        for c in range(0, READINGS, CHUNK):
            items = []
            for i in range(c, c + CHUNK):
                hot = i % 50_000 == 25_000
                items.append(NewEvent(READING, {
                    "channel": "temperature",
                    "value": {"value": "39.4" if hot else f"{37 + (i % 9) / 10:.1f}",
                              "unit": "Cel"},
                    "limit": "high" if hot else "ok",
                    "device_time": (T0 + timedelta(seconds=i)).isoformat(),
                }, BIG, None))  # fmt: skip
            store(items)
        store([NewEvent("alarm.raised", {"source": "bioreactor", "code": "T-HIGH",
                                         "message": "temperature high"}, BIG, None),
               NewEvent("batch.completed", {}, BIG, "op.alice")])  # fmt: skip
        projections.upsert_summaries(s, signer.unit_id, "SITE-0", deltas)
        s.commit()
    engine.dispose()


def database() -> tuple[str, float]:
    """The cached data set's URL and how long building it took (0: it was cached)."""
    url = f"sqlite:///{DB_FILE}"
    if DB_FILE.exists():
        current, head = revisions(make_engine(url))
        if current == head:
            return url, 0.0
        DB_FILE.unlink()
    CACHE.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    partial = CACHE / "building.db"
    for f in CACHE.glob("building.db*"):
        f.unlink()
    seed(f"sqlite:///{partial}")
    add_big_batch(f"sqlite:///{partial}")
    partial.rename(DB_FILE)
    return url, time.perf_counter() - t


def latencies(c: httpx.Client, paths: list[str]) -> list[float]:
    out = []
    for p in paths:
        t = time.perf_counter()
        r = c.get(p)
        out.append((time.perf_counter() - t) * 1000)
        if r.status_code != 200 or "/console/signin" in str(r.url):
            raise RuntimeError(f"{p}: {r.status_code} {r.text[:300]}")
    return out


def p99(values: list[float]) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%S")


def main() -> None:
    url, built = database()
    run_dir = CACHE / "run"
    base, proc = serve(url, run_dir)
    try:
        tok = httpx.post(base + "/v1/auth/token",
                         json={"user_id": "bench.reviewer", "password": PASSWORD}).json()["token"]
        rng = random.Random(22)
        span = READINGS - 3600
        hours = [T0 + timedelta(seconds=rng.randrange(span)) for _ in range(REQUESTS)]
        days = [T0 + timedelta(seconds=rng.randrange(READINGS - 86400)) for _ in range(REQUESTS)]
        chart = f"/console/batches/{BIG}/chart?channel=temperature&i=0"
        cases = {
            "console review queue (10k batches)": ["/console/queue"] * REQUESTS,
            "console batch view (10k batches)": [
                f"/console/batches/B-{rng.randrange(10):02d}-{rng.randrange(1000):05d}"
                for _ in range(REQUESTS)
            ],
            "API batch view (1M readings)": [f"/v1/batches/{BIG}"] * REQUESTS,
            # the console's view adds the custody timeline (server.custody.service.timeline)
            "console batch view (1M readings)": [f"/console/batches/{BIG}"] * SLOW_REQUESTS,
            "telemetry series (1M readings)": [f"/v1/batches/{BIG}/telemetry"] * REQUESTS,
            "console chart zoom, 1 h window (1M readings)": [
                f"{chart}&from={iso(t)}&to={iso(t + timedelta(hours=1))}" for t in hours
            ],
            "telemetry window API, 1 h (1M readings)": [
                f"/v1/batches/{BIG}/telemetry/temperature?from={iso(t)}"
                f"&to={iso(t + timedelta(hours=1))}"
                for t in hours
            ],
            "console chart zoom, 1 day window (stored series)": [
                f"{chart}&from={iso(t)}&to={iso(t + timedelta(days=1))}" for t in days
            ],
        }
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {tok}"},
                          cookies={"console_session": tok}, timeout=60) as c:  # fmt: skip
            latencies(c, ["/v1/me"] * 30 + [f"/v1/batches/{BIG}", "/console/queue"] * 3)
            r = c.get(f"/v1/batches/{BIG}/telemetry").json()
            assert r["readings"] == READINGS, r["readings"]
            w = c.get(cases["telemetry window API, 1 h (1M readings)"][0]).json()
            assert w["resolution"] == "readings" and w["readings"] == 3600, w["readings"]
            for name, paths in cases.items():
                me = latencies(c, ["/v1/me"] * len(paths))  # the ceiling, in the same round
                ms = latencies(c, paths)
                emit(
                    name,
                    1000 / statistics.mean(ms),
                    "requests/s",
                    1000 / statistics.mean(me),
                    requests=len(ms),
                    p50_ms=round(statistics.median(ms), 2),
                    p99_ms=round(p99(ms), 2),
                    ceiling_p99_ms=round(p99(me), 2),
                    target_p99_ms=300,
                    batches=10_001,
                    readings=READINGS,
                    build_s=round(built, 1),
                )
    finally:
        proc.terminate()
        proc.wait(10)
        print(orjson.dumps({"cache": str(DB_FILE.relative_to(ROOT))}).decode(), file=sys.stderr)


if __name__ == "__main__":
    main()
