"""Two API workers on one PostgreSQL (server.workers, issue 25): a real server started with
``serve_subprocess(..., workers=2)``, requests over real HTTP, each racing request on its own
connection so the two worker processes take them as the kernel hands them out.  What the
database decides stays decided once: segments in order and exactly once, one enrolment, one
disposition per state, one custody step; writes to different audit streams at once all land,
every stream verifies and the log holds each of them once."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from ebr_core.keys import PublicKey, UnitSigner
from ebr_core.tlog.entries import EntryKind, LogEntry
from edge.ledger import Append, Ledger
from edge.sync import SyncClient
from server.audit import trail
from server.db import AuditEntry, make_engine
from server.log import store
from server.log.verify import audit_anchors
from server.pgcluster import PgCluster
from server.process import serve_subprocess, stop
from server.settings import Settings
from server.workers import per_worker_connections, worker_settings
from tests.security.test_review_record import settled_push_batch

from .conftest import ADMIN, Server, clock
from .qa import PASSWORD, add_people, enter_results, example_results, login, publish_spec, sign

pytestmark = pytest.mark.postgres
T = TypeVar("T")
PEOPLE = {
    "op.ana": ("Ana Operator", [("operator", "SITE-A")]),
    "nurse.lee": ("Lee Nurse", [("operator", "HOSP-1")]),
    "rev.a": ("Rita Reviewer", [("qa_reviewer", "SITE-A")]),
    "appr.a": ("Paul Approver", [("qa_approver", "SITE-A")]),
    "appr.a2": ("Petra Approver", [("qa_approver", "SITE-A")]),
    "qa.global": ("Gina Global", [("qa_approver", "*")]),
}


def children(pid: int) -> list[int]:
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


def database_connections(pid: int, port: int) -> int:
    """How many TCP connections process ``pid`` holds to 127.0.0.1:``port``."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = fd.readlink().name
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    n = 0
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        f = line.split()
        if f[2].endswith(f":{port:04X}") and f[9] in inodes:
            n += 1
    return n


@pytest.fixture(scope="module")
def two(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Server, str]]:
    """One server with two workers for the module (it takes seconds to start); at the end, each
    worker has opened its own connections to the database: both served the races."""
    tmp = tmp_path_factory.mktemp("workers")
    with PgCluster() as cluster:
        url = cluster.create_db("workers")
        base, proc = serve_subprocess(url, tmp / "server", ADMIN, workers=2,
                                      rate_per_second="1000", rate_burst="1000",
                                      password_checks_max="8")  # fmt: skip
        try:
            # uvicorn's supervisor and its two workers, each serving
            assert len(children(proc.pid)) >= 2
            key = PublicKey.from_bytes((tmp / "server" / "server.pub").read_bytes())
            settings = Settings(database_url=url, data_dir=tmp / "server", admin_token=ADMIN)
            yield Server(base, settings, key, None), url  # type: ignore[arg-type]
            serving = [p for p in children(proc.pid) if database_connections(p, cluster.port)]
            assert len(serving) == 2, f"workers holding database connections: {serving}"
        finally:
            stop(proc)


def at_once(n: int, fn: Callable[[int], T]) -> list[T]:
    """``fn(0..n-1)`` on n threads released together."""
    gate, out = threading.Barrier(n), [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        gate.wait()
        try:
            out[i] = fn(i)  # type: ignore[call-overload]
        except BaseException as e:  # re-raised below
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    if errors:
        raise errors[0]
    return out  # type: ignore[return-value]


def stored(url: str, unit_id: str) -> tuple[int, int, int, int]:
    """(rows, distinct seqs, lowest, highest) the database holds for the unit."""
    engine = make_engine(url)
    try:
        with engine.connect() as c:
            row = c.execute(text("SELECT count(*), count(DISTINCT seq), min(seq), max(seq) "
                                 "FROM events WHERE unit_id = :u"), {"u": unit_id}).one()  # fmt: skip
            return int(row[0]), int(row[1]), int(row[2]), int(row[3])
    finally:
        engine.dispose()


def test_pool_and_gate_are_shared_out_between_workers() -> None:
    assert per_worker_connections(2, budget=80) == 40
    assert per_worker_connections(4, budget=80) == 20
    assert per_worker_connections(1, budget=500) == 80  # 40 threads: anyio's default
    assert per_worker_connections(8, budget=8) == 4  # at least 2 threads and 4 connections
    s = Settings(password_checks_max=5)
    assert worker_settings(s, 2).password_checks_max == 3 and s.password_checks_max == 5
    with pytest.raises(ValueError, match="at least 1"):
        per_worker_connections(0)


def test_segments_in_order_and_exactly_once(two: tuple[Server, str], tmp_path: Path) -> None:
    srv, url = two
    units = [UnitSigner.generate(f"W-SEG-{i}") for i in range(2)]
    ledgers: list[Ledger] = []
    for u in units:
        srv.enrol(u)
        led = Ledger.open(tmp_path / f"{u.unit_id}.db", u, clock())  # type: ignore[arg-type]
        bid = f"B-{u.unit_id}"
        led.append("batch.started", {"coi": f"&/CHA99992600000{u.unit_id[-1]}", "mbr_id": "M",
                                     "mbr_version": "1", "mbr_hash": "0" * 64, "product": "p"},
                   batch_id=bid, actor="op.alice")  # fmt: skip
        for g in range(12):
            led.append_many([Append("reading.recorded", {"channel": "temp", "i": g * 100 + i,
                                                         "value": {"value": "37.0", "unit": "Cel"}},
                                    bid) for i in range(15)])  # fmt: skip
        ledgers.append(led)

    def push(i: int) -> int:
        # Threads 0-3 push unit 0's ledger (four clients on one ledger, small segments, no
        # sync lock: they race for the same seqs); 4-5 push unit 1's.
        led = ledgers[0 if i < 4 else 1]
        with httpx.Client(base_url=srv.url, timeout=60) as http:
            c = SyncClient(led, srv.url, server_key=srv.key, client=http, max_events=16,
                           exclusive=False)  # fmt: skip
            return c.sync_once().pushed

    pushed = at_once(6, push)
    for led in ledgers:
        n = led.head[0]
        assert stored(url, led.unit_id) == (n, n, 1, n)  # every seq once, none missing
        with srv.admin() as a:
            held = a.get(f"/admin/units/{led.unit_id}").json()
        assert held["head_seq"] == n and held["head_hash"] == led.head[1]
    # the racing clients of unit 0 shared its events between them, none sent twice as new
    assert sum(pushed[:4]) == ledgers[0].head[0] and sum(pushed[4:]) == ledgers[1].head[0]


def unit_ledger(path: Path, u: UnitSigner, groups: int = 6) -> Ledger:
    led = Ledger.open(path, u, clock())  # type: ignore[arg-type]
    bid = f"B-{u.unit_id}"
    led.append("batch.started", {"coi": "&/CHA999926000001", "mbr_id": "M", "mbr_version": "1",
                                 "mbr_hash": "0" * 64, "product": "p"},
               batch_id=bid, actor="op.alice")  # fmt: skip
    for g in range(groups):
        led.append_many([Append("reading.recorded", {"channel": "temp", "i": g * 100 + i,
                                                     "value": {"value": "37.0", "unit": "Cel"}},
                                bid) for i in range(10)])  # fmt: skip
    return led


def test_writes_to_different_streams_at_once_all_land_once(
    two: tuple[Server, str], tmp_path: Path
) -> None:
    """Eight units enrolled at once, then all pushing at once, in small segments: each write
    goes to its unit's audit stream, no stream waits for another, and the log's sequencer
    integrates every leaf once whichever worker committed it."""
    srv, url = two
    units = [UnitSigner.generate(f"W-STREAM-{i}") for i in range(8)]
    at_once(len(units), lambda i: srv.enrol(units[i]))
    ledgers = [unit_ledger(tmp_path / f"{u.unit_id}.db", u) for u in units]

    def push(i: int) -> int:
        with httpx.Client(base_url=srv.url, timeout=60) as http:
            c = SyncClient(ledgers[i], srv.url, server_key=srv.key, client=http, max_events=12)
            r = c.sync_once()
            assert "receipt inclusion proofs verified" in r.log, r.log
            return r.pushed

    pushed = at_once(len(units), push)
    assert pushed == [led.head[0] for led in ledgers]
    engine = make_engine(url)
    try:
        with Session(engine) as db:
            rep = trail.check(db, audit_anchors(db))
            assert rep.ok, [f.line() for f in rep.findings]
            leaves = [LogEntry.parse(x) for x in store.leaves(db, 0, store.head(db).size)]
            assert store.queued(db) == []
            for u, led in zip(units, ledgers, strict=True):
                stream = db.query(AuditEntry).filter(
                    AuditEntry.stream == f"unit/{u.unit_id}").order_by(
                    AuditEntry.stream_seq).all()  # fmt: skip
                actions = [e.action for e in stream]
                assert actions[0] == "unit.enrolled" and set(actions[1:]) == {"segment.stored"}
                # the unit's segments: one leaf each, together every seq once
                segs = sorted((int(e.fields["first_seq"]), int(e.fields["last_seq"]))
                              for e in leaves if e.kind is EntryKind.SEGMENT
                              and e.fields["unit_id"] == u.unit_id)  # fmt: skip
                assert len(segs) == len(actions) - 1 >= 2
                assert [a for a, _ in segs] == [1] + [b + 1 for _, b in segs[:-1]]
                assert segs[-1][1] == led.head[0]
        audit_seqs = [int(e.fields["seq"]) for e in leaves if e.kind is EntryKind.AUDIT]
        assert len(audit_seqs) == len(set(audit_seqs)) == rep.entries  # each entry once
    finally:
        engine.dispose()


def test_one_enrolment_when_enrolled_twice_at_once(two: tuple[Server, str]) -> None:
    srv, url = two
    keys = [UnitSigner.generate("W-ENROL") for _ in range(6)]

    def enrol(i: int) -> int:
        with srv.admin() as a:
            r = a.post(
                "/admin/units",
                json={
                    "site_id": "SITE-A",
                    "unit_id": "W-ENROL",
                    "public_key": keys[i].public.to_json().decode(),
                },
            )
            assert r.status_code in (201, 409), r.text  # fmt: skip
            return r.status_code

    codes = at_once(6, enrol)
    assert sorted(codes) == [201] + [409] * 5
    engine = make_engine(url)
    with engine.connect() as c:
        units = c.execute(text("SELECT count(*) FROM units WHERE unit_id = 'W-ENROL'")).scalar()
        held = c.execute(text("SELECT count(*) FROM unit_keys WHERE unit_id = 'W-ENROL'")).scalar()
    engine.dispose()
    assert units == 1 and held == 1


@pytest.fixture(scope="module")
def batch(two: tuple[Server, str], tmp_path_factory: pytest.TempPathFactory) -> str:
    """A completed batch at SITE-A with its results entered and one review signature."""
    srv, _ = two
    add_people(srv, PEOPLE)
    publish_spec(srv)
    settled_push_batch(srv, tmp_path_factory.mktemp("qa"), unit_id="W-QA", site="SITE-A",
                       batch_id="B-W1", deviation=False)  # fmt: skip
    with login(srv, "rev.a") as rev:
        assert enter_results(rev, "B-W1", example_results()).status_code == 201
        assert sign(rev, "B-W1", "rev.a", "reviewed").status_code == 201
    return "B-W1"


def test_two_decisions_at_once_give_one_per_state(two: tuple[Server, str], batch: str) -> None:
    srv, _ = two
    approvers = ["appr.a", "appr.a2", "appr.a", "appr.a2"]
    clients = [login(srv, u) for u in approvers]
    view = clients[0].get(f"/v1/batches/{batch}").json()

    def release(i: int) -> httpx.Response:
        return sign(clients[i], batch, approvers[i], "released", view=view)

    codes = sorted(r.status_code for r in at_once(4, release))
    assert codes == [201, 409, 409, 409], codes
    view = clients[0].get(f"/v1/batches/{batch}").json()
    eu = [d for d in view["dispositions"] if d["jurisdiction"] == "EU"]
    assert [d["disposition"] for d in eu] == ["conditional_release"]

    def reject(i: int) -> httpx.Response:
        return sign(clients[i], batch, approvers[i], "rejected", view=view)

    codes = sorted(r.status_code for r in at_once(4, reject))
    assert codes == [201, 409, 409, 409], codes
    view = clients[0].get(f"/v1/batches/{batch}").json()
    eu = [d["disposition"] for d in view["dispositions"] if d["jurisdiction"] == "EU"]
    assert eu == ["conditional_release", "rejected"]
    for c in clients:
        c.close()


def test_two_custody_steps_at_once_give_one(two: tuple[Server, str], batch: str) -> None:
    srv, _ = two
    coi = "&/CHA999926ABC123"
    path = "/v1/custody/" + coi.removeprefix("&/")
    step: dict[str, Any] = {
        "kind": "handoff", "from_party": "SITE-A", "to_party": "HOSP-1", "place": "dispatch",
        "bag_scan": "]C0" + coi, "shipper_scan": "]C0" + coi,
        "parties": [{"user_id": "op.ana", "password": PASSWORD, "meaning": "handed_over"},
                    {"user_id": "nurse.lee", "password": PASSWORD, "meaning": "received"}],
    }  # fmt: skip
    clients = [login(srv, "op.ana") for _ in range(3)]
    answers = at_once(3, lambda i: clients[i].post(path + "/events", json=step))
    codes = sorted(r.status_code for r in answers)
    assert codes == [201, 409, 409], [r.text for r in answers]
    timeline = clients[0].get(path).json()
    assert [e["kind"] for e in timeline["events"]] == ["handoff"]
    assert timeline["holder"] == "HOSP-1"
    for c in clients:
        c.close()
