"""The log's queue and sequencer on PostgreSQL (issue 25): a writer's leaves are queued in its
own transaction, with no lock anyone waits for, and integrated after its commit in a short
transaction of their own, many writers' at once.  A committed record always reaches the log: a
writer killed between its commit and the sequencing leaves its leaf queued, counted by both
verifiers, and the next worker to start integrates it; nothing is integrated twice."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, text
from sqlalchemy.orm import Session

from ebr_core.keys import UnitSigner
from ebr_core.tlog.entries import EntryKind, LogEntry
from server.audit import trail
from server.db import make_engine, migrate
from server.log import records, store
from server.log.store import LogKey
from server.log.verify import audit_anchors, verify_log
from server.pgcluster import PgCluster
from server.process import serve_subprocess, stop

from .conftest import ADMIN

pytestmark = pytest.mark.postgres
AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
KEY = LogKey("test.example/log", UnitSigner.generate("ctgtp-server"))

records.install()


def fresh(pg: PgCluster) -> Engine:
    engine = make_engine(pg.create_db(f"seq_{uuid.uuid4().hex[:16]}"))
    migrate(engine)
    return engine


def counts(engine: Engine) -> tuple[int, int, int]:
    """(audit entries, leaves in the tree, leaves queued)."""
    with engine.connect() as c:
        return (
            int(c.execute(text("SELECT count(*) FROM audit_trail")).scalar_one()),
            int(c.execute(text("SELECT size FROM tlog_head")).scalar_one()),
            int(c.execute(text("SELECT count(*) FROM tlog_pending")).scalar_one()),
        )


def test_one_sequencing_integrates_many_writers_leaves(pg: PgCluster) -> None:
    engine = fresh(pg)
    try:
        for i in range(5):
            with Session(engine) as db:
                trail.append(db, at=AT, actor="u", action="a", object_type="unit",
                             object_id=f"U-{i}")  # fmt: skip
                trail.seal(db)  # chained now (a commit would), so its leaf is queued
                db.flush()
                db.info.pop(store.QUEUED)  # as if the writer died before its sequencing
                db.commit()
        assert counts(engine) == (5, 0, 5)
        assert store.sequence(engine) == 5  # one lock, one transaction for all five
        assert counts(engine) == (5, 5, 0)
        assert store.sequence(engine) == 0  # nothing twice
        with Session(engine) as db:
            kinds = [LogEntry.parse(x).kind for x in store.leaves(db, 0, 5)]
            assert kinds == [EntryKind.AUDIT] * 5
            assert trail.check(db, audit_anchors(db)).ok
    finally:
        engine.dispose()


WRITER = textwrap.dedent("""
    import os, sys
    from datetime import UTC, datetime
    from sqlalchemy.orm import Session
    from server.audit import trail
    from server.db import make_engine
    from server.log import records, store

    records.install()
    # killed right after its commit, before the sequencing the commit would run
    store.sequence_on = lambda *a, **k: os._exit(9)
    with Session(make_engine(sys.argv[1])) as db:
        trail.append(db, at=datetime.now(UTC), actor="u", action="spec.published",
                     object_type="spec", object_id="S@1")
        db.commit()
    os._exit(0)
""")


def test_a_writer_killed_between_commit_and_sequencing_is_logged_by_the_next_worker(
    pg: PgCluster, tmp_path: Path
) -> None:
    engine = fresh(pg)
    url = engine.url.render_as_string(hide_password=False)
    try:
        r = subprocess.run([sys.executable, "-c", WRITER, url], check=False, capture_output=True,
                           timeout=60)
        assert r.returncode == 9, r.stderr.decode()
        assert counts(engine) == (1, 0, 1)  # committed, its leaf queued, not in the tree
        with Session(engine) as db:
            # neither check calls it missing: the leaf is the record's, queued
            rep = trail.check(db, audit_anchors(db))
            assert rep.ok and rep.queued == 1
            log = verify_log(db, KEY.verifier)
            assert log.ok and log.checked["queued"] == 1, [f.line() for f in log.findings]
        _, proc = serve_subprocess(url, tmp_path / "server", ADMIN, workers=1)
        try:
            assert counts(engine) == (1, 1, 0)  # the worker sequenced it as it started
            with Session(engine) as db:
                (leaf,) = store.leaves(db, 0, 1)
                assert LogEntry.parse(leaf).kind is EntryKind.AUDIT
                rep = trail.check(db, audit_anchors(db))
                assert rep.ok and rep.anchored == 1 and rep.queued == 0
        finally:
            stop(proc)
    finally:
        engine.dispose()


def test_a_rolled_back_writer_leaves_nothing_queued(pg: PgCluster) -> None:
    engine = fresh(pg)
    try:
        with Session(engine) as db:
            trail.append(db, at=AT, actor="u", action="a", object_type="unit", object_id="U")
            trail.seal(db)
            db.flush()
            assert db.info.get(store.QUEUED)
            db.rollback()
            assert store.QUEUED not in db.info
        assert counts(engine) == (0, 0, 0)
    finally:
        engine.dispose()


def test_a_receipt_whose_sequencing_fails_carries_no_index_and_raises_no_alert(
    pg: PgCluster, request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database refuses the sequencing right after a segment's commit (a lock timeout,
    say): the segment is stored, its leaf stays queued, and the receipt carries the latest
    checkpoint without an index, which the unit accepts as it accepts a retried segment's; the
    next sequencing integrates the leaf and the next receipts prove theirs again."""
    from sqlalchemy.exc import OperationalError

    from edge.sync import SyncClient

    from .conftest import make_ledger, server_settings, start_server

    def refused(*_: object, **__: object) -> int:
        raise OperationalError("sequence", {}, Exception("lock timeout"))

    with start_server(server_settings("postgres", request, tmp_path)) as srv:
        unit = UnitSigner.generate("UNIT-SEQ")
        srv.enrol(unit)
        led = make_ledger(tmp_path / "u.db", unit, groups=2, per_group=4)
        with monkeypatch.context() as m:
            m.setattr(store, "sequence_on", refused)
            r = SyncClient(led, srv.url, server_key=srv.key).sync_once()
        assert r.pushed == led.head[0] and r.alerts == [] and r.log_index is None, r
        engine = make_engine(srv.settings.database_url)
        try:
            assert counts(engine)[2] >= 1  # the segment's leaf (and its audit entry's) queued
            with Session(engine) as db:
                assert verify_log(db, KEY.verifier).checked["queued"] >= 1
            assert store.sequence(engine) >= 1
            assert counts(engine)[2] == 0
        finally:
            engine.dispose()
        led.append("step.completed", {"step": "s"}, batch_id="B-1", actor="op.alice")
        r = SyncClient(led, srv.url, server_key=srv.key).sync_once()
        assert r.alerts == [] and r.log_index is not None
        assert "receipt inclusion proofs verified" in (r.log or ""), r.log
