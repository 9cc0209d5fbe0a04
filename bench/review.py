"""QA review latency with 10,000 batches in the database (issue 7): the review queue page and the
full batch view (fold of the batch's events, evaluation in three jurisdictions, signatures), over
loopback HTTP against the server in its own process, on SQLite.

Ceiling, measured in the same run: ``GET /health`` on the same server and connection (an HTTP
round trip with nothing behind it).  Target: p99 <= 100 ms for both.
"""

from __future__ import annotations

import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit
from sync import serve

from ebr_core.canonical import canonical
from ebr_core.chain import ChainBuilder
from ebr_core.document import load_yaml
from ebr_core.keys import UnitSigner
from ebr_core.ledgerfile import encode_record
from server import projections
from server.db import make_engine, migrate
from server.people import service as people
from server.people.passwords import hash_password
from server.quality import review
from server.units import service

BATCHES = 10_000
EVENTS_PER_BATCH = 24
REQUESTS = 300
EXAMPLES = Path(__file__).resolve().parents[1] / "ebr_core" / "spec" / "examples"
PASSWORD = "Bench-Reviewer-2026!"


def seed(db_url: str) -> None:
    from sqlalchemy.orm import Session

    engine = make_engine(db_url)
    migrate(engine)
    t0 = datetime(2026, 11, 1, tzinfo=UTC)
    n = [0]

    def clock() -> datetime:
        n[0] += 1
        return t0 + timedelta(milliseconds=n[0])

    spec = orjson.loads(canonical(load_yaml((EXAMPLES / "cd19_commercial.yaml").read_text())))
    results = canonical(load_yaml((EXAMPLES / "results_example.yaml").read_text())).decode()
    sites = [f"SITE-{i}" for i in range(10)]
    with Session(engine) as s:
        reviewer = people.create_person(
            s, people.SYSTEM, at=clock(), user_id="bench.reviewer", printed_name="Bench Reviewer",
            password=PASSWORD, grants=[("qa_reviewer", "*")], reason="bench",
        )  # fmt: skip
        # a password someone else set signs nothing until its owner changes it
        people.change_own_password(
            s, reviewer, at=clock(), password_hash=hash_password(PASSWORD), keep_token=None
        )
        review.publish_spec(s, people.SYSTEM, at=clock(), content=spec, reason="bench")
        per_unit = BATCHES // len(sites)
        for u, site in enumerate(sites):
            signer = UnitSigner.generate(f"UNIT-{u}")
            service.enrol(s, site, signer.unit_id, signer.public.to_json(), at=clock())
            s.flush()
            chain = ChainBuilder(signer, clock)
            rows: list[tuple[Any, ...]] = []
            deltas: dict[str, Any] = {}
            for b in range(per_unit):
                bid = f"B-{u:02d}-{b:05d}"
                evs = [
                    chain.next_event(
                        "batch.started",
                        {"coi": f"&/CHA9999{u:02d}{b:05d}", "mbr_id": "CAR-T", "mbr_version": "3",
                         "mbr_hash": "0" * 64, "product": "p"},
                        batch_id=bid,
                    )
                ]  # fmt: skip
                for i in range(EVENTS_PER_BATCH - 2):
                    kind = "scan.rejected" if i == 3 and b % 7 == 0 else "value.recorded"
                    evs.append(
                        chain.next_event(
                            kind,
                            {"step": f"s{i}", "name": "v", "value": {"value": "1", "unit": "1"},
                             "limit": "ok", "reason": "r", "role": "x", "raw": "x",
                             "expected": "y"},
                            batch_id=bid,
                        )
                    )  # fmt: skip
                evs.append(chain.next_event("batch.completed", {}, batch_id=bid))
                for e in evs:
                    line = encode_record(e).rstrip(b"\n")
                    rows.append((signer.unit_id, e.seq, e.hash, bid, e.kind, e.recorded_at, line))
                    projections.tally(deltas, orjson.loads(line))
            conn = s.connection()
            conn.exec_driver_sql(
                "INSERT INTO events (unit_id, seq, hash, batch_id, kind, recorded_at, line) "
                "VALUES (?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
            projections.upsert_summaries(s, signer.unit_id, site, deltas)
            conn.exec_driver_sql(
                "INSERT INTO result_sets (batch_id, spec_id, spec_version, results, entered_by, "
                "entered_at, reason) VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    (bid, spec["spec_id"], str(spec["version"]), results, "bench", t0, "bench")
                    for bid in deltas
                ],
            )
        s.commit()


def latencies(c: httpx.Client, paths: list[str]) -> list[float]:
    out = []
    for p in paths:
        t = time.perf_counter()
        r = c.get(p)
        out.append((time.perf_counter() - t) * 1000)
        if r.status_code != 200:
            raise RuntimeError(f"{p}: {r.status_code} {r.text[:200]}")
    return out


def p(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        url = f"sqlite:///{tmp / 'server.db'}"
        t = time.perf_counter()
        seed(url)
        seeded = time.perf_counter() - t
        base, proc = serve(url, tmp / "data")
        try:
            tok = httpx.post(
                base + "/v1/auth/token",
                json={"user_id": "bench.reviewer", "password": PASSWORD},
            ).json()["token"]
            rng = random.Random(7)
            with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {tok}"}) as c:
                latencies(c, ["/health"] * 50 + ["/v1/review/queue"] * 20)  # warm up
                health = latencies(c, ["/health"] * REQUESTS)
                ceiling = 1000 / statistics.mean(health)
                total = c.get("/v1/review/queue").json()["total"]
                assert total == BATCHES, total
                pages = [
                    f"/v1/review/queue?limit=50&offset={rng.randrange(0, BATCHES - 50)}"
                    for _ in range(REQUESTS)
                ]
                views = [
                    f"/v1/batches/B-{rng.randrange(10):02d}-{rng.randrange(BATCHES // 10):05d}"
                    for _ in range(REQUESTS)
                ]
                for name, paths in (("review queue page (50 of 10k)", pages),
                                    ("review batch view (10k batches)", views)):  # fmt: skip
                    ms = latencies(c, paths)
                    emit(
                        name,
                        1000 / statistics.mean(ms),
                        "requests/s",
                        ceiling,
                        p50_ms=round(p(ms, 50), 2),
                        p99_ms=round(p(ms, 99), 2),
                        target_p99_ms=100,
                        batches=BATCHES,
                        seed_s=round(seeded, 1),
                    )
        finally:
            proc.terminate()
            proc.wait(10)


if __name__ == "__main__":
    main()
