"""Server CPU per ingested event (issue 25): a few units sync realistic segments to a server in
its own process, and the server's and the database's CPU seconds are read from ``/proc``.

Each unit has its own key and ledger and syncs with the edge's own client (``edge.sync``: the
signed head request, the signed zstd segment, the receipt and its log proofs checked), as
``ctgtp fleet`` does, but in rounds instead of in real time, so a run is repeatable: each round
every unit records ``--readings`` readings (one commit group) and, every other round, an
operator step (4 events), then syncs (about the fleet's 5 s of a unit's events per segment).

Prints one JSON line: events stored, server and database CPU seconds, events per CPU second and
CPU microseconds per event.  ``--profile FILE``: samples the server with py-spy (``pip install
py-spy``) during the rounds and writes each function's share of the samples, inclusive (its
callees counted) and exclusive, to FILE (and the collapsed stacks to FILE.folded).

    python bench/ingest_profile.py --database postgres --units 40 --rounds 12
    python bench/ingest_profile.py --database sqlite --profile ingest-sqlite.txt
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from ctgtp.fleet import ADMIN, Mix, _Unit, cpu_seconds, operator_step
from server.pgcluster import PgCluster
from server.process import serve_subprocess, stop


def _round(u: _Unit, r: int, readings: int) -> int:
    """One round of a unit: its readings, every other round an operator step, then a sync."""
    group = _group(u.batch, r, readings)
    u.ledger.append_many(group)
    before = u.run.syncs
    u.sync()
    assert u.run.syncs == before + 1
    return len(group)


def _profile_table(folded: Path, top: int) -> str:
    """Each function's share of the samples: inclusive (anywhere on the stack) and exclusive."""
    incl: Counter[str] = Counter()
    excl: Counter[str] = Counter()
    total = 0
    for line in folded.read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        if not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = [f.split(" (", 1)[0] + " (" + f.split(" (", 1)[1].split(":")[0] + ")"
                  if " (" in f else f for f in stack.split(";")]  # fmt: skip
        for f in set(frames):
            incl[f] += count
        excl[frames[-1]] += count
    out = [f"{total} samples", "", "inclusive %  function"]
    out += [f"{100 * c / total:10.1f}  {f}" for f, c in incl.most_common(top)]
    out += ["", "exclusive %  function"]
    out += [f"{100 * c / total:10.1f}  {f}" for f, c in excl.most_common(top)]
    return "\n".join(out) + "\n"


@contextmanager
def _in_process(url: str, data_dir: Path) -> Iterator[str]:
    """``create_app`` served by uvicorn on a thread of this process (for --statements)."""
    import threading

    import uvicorn

    from server.app import create_app
    from server.db import make_engine, migrate
    from server.pgcluster import free_port
    from server.settings import Settings

    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    settings = Settings(database_url=url, data_dir=data_dir, admin_token=ADMIN,
                        rate_per_second=1000, rate_burst=1000)  # fmt: skip
    port = free_port()
    srv = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                        log_level="error"))  # fmt: skip
    t = threading.Thread(target=srv.run, daemon=True)
    t.start()
    while not srv.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        srv.should_exit = True
        t.join(10)


def _count_statements() -> Counter[str]:
    """Every statement any engine of this process runs from now on, by its text."""
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    seen: Counter[str] = Counter()

    def before(_conn: Any, _cur: Any, statement: str, *_: Any) -> None:
        seen[" ".join(statement.split())[:160]] += 1

    event.listen(Engine, "before_cursor_execute", before)
    return seen


def _print_statements(seen: Counter[str], segments: int, top: int) -> None:
    total = sum(seen.values())
    print(f"{total / segments:.1f} statements per segment (each sync: head, segment)",
          file=sys.stderr)  # fmt: skip
    for text, n in seen.most_common(top):
        print(f"{n / segments:7.2f}  {text}", file=sys.stderr)


def _group(batch: str, r: int, readings: int) -> list[Any]:
    """What a unit records in round ``r``: its readings, every other round an operator step."""
    from edge.ledger import Append

    step = f"s{r // 2}"
    group = [
        Append("reading.recorded", {"channel": "temp", "step": step,
                                    "value": {"value": f"37.{i % 10}", "unit": "Cel"}}, batch)
        for i in range(readings)
    ]  # fmt: skip
    if r % 2 == 1:
        group += operator_step(batch, step)
    return group


def direct(a: argparse.Namespace, url: str, work: Path) -> dict[str, Any]:
    """The unit API's own functions called in this thread, no HTTP: per segment the head
    request's authentication, then the segment's (``UnitGate.authenticate``) and its storing
    with the receipt (``server.units.api.store_segment``), as the routes call them.  The CPU is
    this thread's (``time.thread_time``); with ``--cprofile FILE`` a cProfile of the rounds."""
    import cProfile
    import pstats
    import secrets
    from datetime import UTC, datetime, timedelta

    from ebr_core.keys import UnitSigner
    from ebr_core.requestsig import sign_request
    from edge.ledger import Ledger
    from edge.sync import COMPRESSORS
    from server.app import create_app
    from server.db import make_engine, migrate
    from server.settings import Settings
    from server.units import service
    from server.units.api import UnitGate, store_segment

    engine = make_engine(url)
    migrate(engine)
    engine.dispose()
    settings = Settings(database_url=url, data_dir=work / "server", admin_token=ADMIN,
                        rate_per_second=1000, rate_burst=1000)  # fmt: skip
    app = create_app(settings)
    g: UnitGate = app.state.units
    log_key = app.state.log_key
    zstd = COMPRESSORS["zstd"]
    last = [datetime.now(UTC)]

    def clock() -> datetime:
        last[0] = max(datetime.now(UTC), last[0] + timedelta(microseconds=1))
        return last[0]

    ledgers: list[tuple[Ledger, UnitSigner, str]] = []
    for i in range(a.units):
        uid = f"PROF-{i:05d}"
        key = UnitSigner.generate(uid)
        with g.sessions() as s:
            service.enrol(s, f"SITE-{i % 5}", uid, key.public.to_json(), at=datetime.now(UTC))
            s.commit()
        led = Ledger.open(work / f"{uid}.db", key, clock)
        led.append("batch.started", {"coi": f"&/CHA999926{i:06d}", "mbr_id": "CAR-T",
                                     "mbr_version": "3", "mbr_hash": "0" * 64, "product": "p"},
                   batch_id=f"{uid}-B000", actor="op.fleet")  # fmt: skip
        ledgers.append((led, key, uid))

    def request(key: UnitSigner, uid: str, method: str, path: str, body: bytes) -> None:
        h = sign_request(key, method, path, body, timestamp=int(time.time()),
                         nonce=secrets.token_hex(16))  # fmt: skip
        g.authenticate(h.as_dict(), method, path, body, uid, "127.0.0.1")

    def sync(led: Ledger, key: UnitSigner, uid: str, sent: int) -> int:
        request(key, uid, "GET", f"/v1/units/{uid}/head", b"")
        head = led.head[0]
        body = zstd(led.wire_bytes(sent + 1, head))
        path = f"/v1/units/{uid}/segments"
        request(key, uid, "POST", path, body)
        got = store_segment(g, log_key, uid, body, "zstd")
        assert got["head_seq"] == head, got
        return head

    sent = {uid: sync(led, key, uid, 0) for led, key, uid in ledgers}  # batch.started
    events = 0
    prof = cProfile.Profile(time.thread_time) if a.cprofile else None
    cpu = 0.0
    for r in range(a.rounds):
        bodies = []
        for led, _key, uid in ledgers:
            events += len(led.append_many(_group(f"{uid}-B000", r, a.readings)))
            bodies.append(led)
        t0 = time.thread_time()
        if prof is not None:
            prof.enable()
        for led, key, uid in ledgers:
            sent[uid] = sync(led, key, uid, sent[uid])
        if prof is not None:
            prof.disable()
        cpu += time.thread_time() - t0
    if prof is not None:
        st = pstats.Stats(prof, stream=a.cprofile.open("w"))
        st.sort_stats("cumulative").print_stats(a.top)
        st.sort_stats("tottime").print_stats(a.top)
    for led, _key, _uid in ledgers:
        led.close()
    engine = make_engine(url)
    with engine.connect() as c:
        from sqlalchemy import text

        held = int(c.execute(text("SELECT count(*) FROM events")).scalar_one())
    engine.dispose()
    return {"events": events, "held": held, "server_cpu_s": cpu,
            "exactly_once": held == events + a.units}  # fmt: skip


def main() -> None:
    p = argparse.ArgumentParser(description="Server CPU per ingested event")
    p.add_argument("--database", choices=["postgres", "sqlite"], default="postgres")
    p.add_argument("--units", type=int, default=40)
    p.add_argument("--rounds", type=int, default=12)
    p.add_argument("--readings", type=int, default=40, help="readings per unit per round")
    p.add_argument("--threads", type=int, default=4, help="units syncing at once")
    p.add_argument("--workers", type=int, default=None, help="uvicorn workers (default: one "
                   "process, `ctgtp server run`)")  # fmt: skip
    p.add_argument("--profile", type=Path, default=None, help="py-spy the server into FILE")
    p.add_argument("--top", type=int, default=60)
    p.add_argument(
        "--statements",
        action="store_true",
        help="serve in this process and print the SQL statements run per segment",
    )
    p.add_argument("--direct", action="store_true", help="call the unit API's functions in "
                   "this thread (no HTTP): the server's own CPU, little noise")  # fmt: skip
    p.add_argument("--cprofile", type=Path, default=None, help="with --direct: cProfile to FILE")
    a = p.parse_args()
    if a.direct:
        with tempfile.TemporaryDirectory() as d, ExitStack() as stack:
            if a.database == "postgres":
                url = stack.enter_context(PgCluster()).create_db("ingest_profile")
            else:
                url = f"sqlite:///{Path(d) / 'server.db'}"
            load = os.getloadavg()[0]
            r = direct(a, url, Path(d))
        print(json.dumps({
            "database": a.database, "mode": "direct", "units": a.units, "rounds": a.rounds,
            "events": r["events"], "segments": a.units * a.rounds,
            "exactly_once": r["exactly_once"], "server_cpu_s": round(r["server_cpu_s"], 3),
            "cpu_us_per_event": round(1e6 * r["server_cpu_s"] / r["events"], 1),
            "cpu_us_per_segment": round(1e6 * r["server_cpu_s"] / (a.units * a.rounds), 1),
            "load_average": round(load, 2),
        }))  # fmt: skip
        return

    from ebr_core.keys import PublicKey

    with tempfile.TemporaryDirectory() as d, ExitStack() as stack:
        work = Path(d)
        if a.database == "postgres":
            pg = stack.enter_context(PgCluster())
            url = pg.create_db("ingest_profile")
            postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
        else:
            url = f"sqlite:///{work / 'server.db'}"
            postmaster = None
        if a.statements:
            base, proc = stack.enter_context(_in_process(url, work / "server")), None
        else:
            base, proc = serve_subprocess(url, work / "server", ADMIN, workers=a.workers,
                                          rate_per_second="1000", rate_burst="1000")  # fmt: skip
        try:
            import httpx

            http = httpx.Client(base_url=base, timeout=120.0)
            admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {ADMIN}"})
            server_key = PublicKey.from_bytes(http.get("/server-key").content)
            from ebr_core.keys import UnitSigner

            units: list[_Unit] = []
            rng = random.Random(0)
            (work / "units").mkdir()
            for i in range(a.units):
                uid = f"PROF-{i:05d}"
                key = UnitSigner.generate(uid)
                r = admin.post("/admin/units", json={"site_id": f"SITE-{i % 5}", "unit_id": uid,
                               "public_key": key.public.to_json().decode()})  # fmt: skip
                assert r.status_code == 201, r.text
                u = _Unit(uid, key, work / "units", http, server_key, Mix(), time.monotonic(), rng)
                u.begin()
                u.sync()  # batch.started: the first round measures steady state
                units.append(u)
            spy = None
            if a.profile is not None:
                folded = a.profile.with_name(a.profile.name + ".folded")
                spy = subprocess.Popen(
                    [str(Path(sys.executable).with_name("py-spy")), "record", "--pid",
                     str(proc.pid), "--rate", "250", "--format", "raw", "--subprocesses",
                     "--nonblocking", "--gil", "--output", str(folded)],
                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                )  # fmt: skip
                time.sleep(1.0)
            load = os.getloadavg()[0]
            seen = _count_statements() if a.statements else None
            cpu0 = cpu_seconds(proc.pid) if proc else 0.0
            db0 = cpu_seconds(postmaster) if postmaster else 0.0
            t0 = time.perf_counter()
            events = 0
            with ThreadPoolExecutor(a.threads) as pool:
                for r in range(a.rounds):
                    events += sum(pool.map(lambda u, r=r: _round(u, r, a.readings), units))
            wall = time.perf_counter() - t0
            server_cpu = (cpu_seconds(proc.pid) if proc else 0.0) - cpu0
            if seen is not None:
                _print_statements(seen, a.units * a.rounds, a.top)
            db_cpu = (cpu_seconds(postmaster) - db0) if postmaster else 0.0
            if spy is not None:
                spy.send_signal(2)
                spy.wait(60)
            held = sum(int(admin.get(f"/admin/units/{u.run.unit_id}").json()["events"])
                       for u in units)  # fmt: skip
            recorded = sum(u.ledger.head[0] for u in units)
            for u in units:
                u.close()
            http.close()
            admin.close()
        finally:
            if proc is not None:
                stop(proc)
    cpu = max(1e-6, server_cpu + db_cpu)
    out: dict[str, Any] = {
        "database": a.database,
        "units": a.units,
        "rounds": a.rounds,
        "events": events,
        "segments": a.units * a.rounds,
        "exactly_once": held == recorded,
        "wall_s": round(wall, 2),
        "server_cpu_s": round(server_cpu, 2),
        "database_cpu_s": round(db_cpu, 2),
        "events_per_cpu_s": round(events / cpu, 1),
        "cpu_us_per_event": round(1e6 * cpu / events, 1),
        "server_cpu_us_per_event": round(1e6 * server_cpu / events, 1),
        "load_average": round(load, 2),
    }
    print(json.dumps(out))
    if a.profile is not None:
        a.profile.write_text(_profile_table(folded, a.top))


if __name__ == "__main__":
    main()
