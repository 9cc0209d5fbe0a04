"""Paging the audit trail without gaps, and appends that cannot deadlock (issue 25), on real
PostgreSQL connections racing (and SQLite where it applies).

* ``GET /v1/audit?after=`` never passes an entry for good: a transaction that took seq 10 and
  commits after the one that took seq 11 still has its entry served (``trail.page``: entries
  in ``(xid, seq)`` order below the reader's snapshot horizon);
* a randomized interleaving of writers (appending, committing, rolling back) and a reader
  paging from its cursor: every committed entry is served exactly once, nothing else;
* two transactions appending to the same two streams in opposite orders both commit (the
  heads are taken at the commit, all at once, in stream order);
* a rolled-back transaction or savepoint leaves nothing of its appends."""

from __future__ import annotations

import random
import threading
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.orm import Session

from server.audit import trail
from server.db import AuditEntry, AuditHead, make_engine, migrate
from server.log import records
from server.log.verify import audit_anchors
from server.pgcluster import PgCluster

from .conftest import Server, server_settings, start_server

AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)

records.install()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'audit.db'}"
    else:
        url = request.getfixturevalue("pg").create_db(f"page_{uuid.uuid4().hex[:16]}")
    e = make_engine(url)
    migrate(e)
    yield e
    e.dispose()


@pytest.fixture
def pg_engine(pg: PgCluster) -> Iterator[Engine]:
    e = make_engine(pg.create_db(f"page_{uuid.uuid4().hex[:16]}"))
    migrate(e)
    yield e
    e.dispose()


def write(db: Session, oid: str, n: int = 1) -> list[int]:
    """Append ``n`` entries to ``unit/<oid>`` and write them, without committing: the
    transaction now holds their global ids (returned) and its transaction id."""
    out = []
    for i in range(n):
        out.append(trail.append(db, at=AT, actor="u", action="unit.changed",
                                object_type="unit", object_id=oid, new={"i": i}))  # fmt: skip
    trail.seal(db)  # as a commit does first: ids taken, heads held
    db.flush()
    return [e.seq for e in out]


def seqs(engine: Engine, after: int, limit: int = 100) -> list[int]:
    with Session(engine) as db:
        return [e.seq for e in trail.page(db, after=after, limit=limit)]


def get_page(srv: Server, after: int) -> tuple[list[int], int]:
    with srv.admin() as c:
        r = c.get("/v1/audit", params={"after": after, "limit": 1000})
        assert r.status_code == 200, r.text
        body = r.json()
        assert set(body) == {"entries", "next_after"}
        return [int(e["seq"]) for e in body["entries"]], int(body["next_after"])


def drain(srv: Server, after: int, want: int, timeout: float = 10.0) -> tuple[list[int], int]:
    """Page from ``after`` until ``want`` entries came (or ``timeout``: a page may hold an entry
    back while an older transaction of the server's own runs)."""
    got: list[int] = []
    end = time.monotonic() + timeout
    while len(got) < want and time.monotonic() < end:
        page, after = get_page(srv, after)
        got += page
        if len(got) < want:
            time.sleep(0.05)
    return got, after


@pytest.mark.postgres
def test_a_lower_seq_committed_after_a_higher_one_is_still_served(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    """Transaction A takes seq n, B takes n+1 and commits first; a reader pages; A commits; the
    reader pages on from its cursor: both entries, once each (paging by seq served n+1 with
    ``next_after`` n+1 and never served n)."""
    with start_server(server_settings("postgres", request, tmp_path)) as srv:
        engine = make_engine(srv.settings.database_url)
        try:
            base, cursor = get_page(srv, 0)
            with Session(engine) as a, Session(engine) as b:
                (ea,) = write(a, "U-A")
                (eb,) = write(b, "U-B")
                assert ea < eb
                b.commit()
                first, cursor = get_page(srv, cursor)
                assert eb not in first  # held back: A (older) still runs
                a.commit()
            rest, cursor = drain(srv, cursor, 2 - len(first))
            served = first + rest
            assert sorted(served) == [ea, eb], served
            assert get_page(srv, cursor) == ([], cursor)  # nothing twice
            # a client paging from the start sees both, in the order they became visible
            everything, _ = drain(srv, 0, len(base) + 2)
            assert everything[-2:] == [ea, eb]
        finally:
            engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize("seed", range(4))
def test_randomly_interleaved_writers_and_a_reader_miss_nothing(
    pg_engine: Engine, seed: int
) -> None:
    """Writers (one stream each) append, commit and roll back in a random interleaving while a
    reader pages on from its cursor with random page sizes: at the end every committed entry
    was served exactly once, and no rolled-back one."""
    rnd = random.Random(seed)
    writers = [Session(pg_engine) for _ in range(4)]
    open_: list[list[int]] = [[] for _ in writers]  # seqs written, not yet committed
    committed: set[int] = set()
    served: list[int] = []
    cursor = 0
    try:
        for _ in range(120):
            op = rnd.choice(["write", "write", "commit", "rollback", "read", "read"])
            w = rnd.randrange(len(writers))
            if op == "write":
                open_[w] += write(writers[w], f"W{w}", rnd.randint(1, 2))
            elif op == "commit":
                writers[w].commit()
                committed.update(open_[w])
                open_[w] = []
            elif op == "rollback":
                writers[w].rollback()
                open_[w] = []
            else:
                page = seqs(pg_engine, cursor, rnd.randint(1, 4))
                assert not set(page) - committed, "an entry served before its commit"
                served += page
                cursor = page[-1] if page else cursor
        for w, db in enumerate(writers):
            if rnd.random() < 0.5:
                db.commit()
                committed.update(open_[w])
            else:
                db.rollback()
        end = time.monotonic() + 10  # another transaction of the cluster may hold some back
        while set(served) != committed and time.monotonic() < end:
            page = seqs(pg_engine, cursor, 3)
            served += page
            cursor = page[-1] if page else cursor
            if not page:
                time.sleep(0.05)
    finally:
        for db in writers:
            db.close()
    assert len(served) == len(set(served)), "an entry served twice"
    assert set(served) == committed, (sorted(committed - set(served)), "missed")


def test_paging_on_sqlite_and_postgres_serves_each_entry_once_in_commit_order(
    engine: Engine,
) -> None:
    for i in range(7):
        with Session(engine) as db:
            write(db, f"U-{i % 3}", 1 + i % 2)
            db.commit()
    with Session(engine) as db:
        everything = [e.seq for e in db.scalars(select(AuditEntry).order_by(AuditEntry.seq))]
    got, cursor = [], 0
    while page := seqs(engine, cursor, 4):
        got += page
        cursor = page[-1]
    assert got == everything  # one writer at a time: commit order is seq order
    # a cursor naming no entry (a rolled-back id): nothing after it is skipped
    assert seqs(engine, 10**9) == []
    with Session(engine) as db:
        write(db, "U-gone")
        db.rollback()
    assert seqs(engine, everything[2]) == everything[3:]


@pytest.mark.postgres
def test_after_a_seq_that_names_no_entry_nothing_after_it_is_skipped(pg_engine: Engine) -> None:
    """A rolled-back transaction's id names no entry (on SQLite the id is taken again)."""
    engine = pg_engine
    with Session(engine) as db:
        write(db, "U-1")
        db.commit()
    with Session(engine) as db:
        (gone,) = write(db, "U-2")
        db.rollback()
    with Session(engine) as db:
        later = write(db, "U-3", 2)
        db.commit()
    got = seqs(engine, gone)
    assert later == [s for s in got if s > gone]


# -- cross-stream appends: no deadlock ----------------------------------------------------------


@pytest.mark.postgres
def test_opposite_orders_over_two_streams_do_not_deadlock(pg_engine: Engine) -> None:
    """Two transactions, each having written something, append to ``unit/U-1`` and
    ``batch/B-1`` in opposite orders, both past their first append before either makes its
    second, then commit together: both commit (taking heads at first use, A-then-B against
    B-then-A, made PostgreSQL abort one with a deadlock)."""
    errors: list[BaseException] = []
    rounds = 5

    def worker(order: list[tuple[str, str]], barrier: threading.Barrier) -> None:
        try:
            with Session(pg_engine) as db:
                for i, (kind, oid) in enumerate(order):
                    trail.append(db, at=AT, actor="u", action=f"{kind}.changed",
                                 object_type=kind, object_id=oid)  # fmt: skip
                    db.flush()
                    if i == 0:
                        barrier.wait(20)
                barrier.wait(20)
                db.commit()
        except BaseException as e:
            errors.append(e)
            barrier.abort()

    unit, batch = ("unit", "U-1"), ("batch", "B-1")
    for _ in range(rounds):
        barrier = threading.Barrier(2)
        threads = [threading.Thread(target=worker, args=(o, barrier))
                   for o in ([unit, batch], [batch, unit])]  # fmt: skip
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        assert not errors, errors
    with Session(pg_engine) as db:
        heads = {h.stream: h.seq for h in db.scalars(select(AuditHead))}
        assert heads == {"unit/U-1": 2 * rounds, "batch/B-1": 2 * rounds}
        rep = trail.check(db, audit_anchors(db))
        assert rep.ok and rep.entries == 4 * rounds, [f.line() for f in rep.findings]


@pytest.mark.postgres
def test_many_transactions_over_shared_streams_in_random_orders(pg_engine: Engine) -> None:
    """Eight threads, each committing transactions that append to three of five shared streams
    in a random order: no error, and every stream chains and verifies."""
    errors: list[BaseException] = []
    streams = [("unit", "U-1"), ("unit", "U-2"), ("batch", "B-1"), ("batch", "B-2"),
               ("person", "p")]  # fmt: skip

    def worker(seed: int) -> None:
        rnd = random.Random(seed)
        try:
            for _ in range(6):
                with Session(pg_engine) as db:
                    for kind, oid in rnd.sample(streams, 3):
                        trail.append(db, at=AT, actor="u", action="x", object_type=kind,
                                     object_id=oid)  # fmt: skip
                        db.execute(text("SELECT pg_sleep(0.002)"))
                    db.commit()
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(s,)) for s in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    with Session(pg_engine) as db:
        rep = trail.check(db, audit_anchors(db))
        assert rep.ok and rep.entries == 8 * 6 * 3, [f.line() for f in rep.findings]


# -- an append belongs to its transaction --------------------------------------------------------


def test_entries_are_chained_at_the_commit_in_the_order_appended(engine: Engine) -> None:
    with Session(engine) as db:
        es = [
            trail.append(db, at=AT, actor="u", action="a", object_type=kind, object_id=oid)
            for kind, oid in (("unit", "U-9"), ("batch", "B-9"), ("unit", "U-9"))
        ]
        assert all(e.seq is None and e.hash is None for e in es)  # not yet chained
        db.commit()
        assert [e.seq for e in es] == sorted(e.seq for e in es)
        assert [e.stream_seq for e in es] == [1, 1, 2]
        assert es[2].prev_hash == es[0].hash and es[1].prev_hash == trail.GENESIS
        rep = trail.check(db, audit_anchors(db))
        assert rep.ok and rep.entries == 3, [f.line() for f in rep.findings]


def test_a_rollback_and_a_savepoint_rolled_back_drop_their_appends(engine: Engine) -> None:
    with Session(engine) as db:
        trail.append(db, at=AT, actor="u", action="dropped", object_type="unit", object_id="U")
        db.rollback()
        kept = trail.append(db, at=AT, actor="u", action="kept", object_type="unit",
                            object_id="U")  # fmt: skip
        try:
            with db.begin_nested():
                trail.append(db, at=AT, actor="u", action="in.savepoint", object_type="batch",
                             object_id="B")  # fmt: skip
                raise RuntimeError("the savepoint fails")
        except RuntimeError:
            pass
        with db.begin_nested():
            trail.append(db, at=AT, actor="u", action="released", object_type="batch",
                         object_id="B")  # fmt: skip
        db.commit()
        got = [(e.action, e.stream, e.stream_seq) for e in db.scalars(
            select(AuditEntry).order_by(AuditEntry.seq))]  # fmt: skip
        assert got == [("kept", "unit/U", 1), ("released", "batch/B", 1)], got
        assert kept.seq == 1  # nothing rolled back took an id
        rep = trail.check(db, audit_anchors(db))
        assert rep.ok, [f.line() for f in rep.findings]
