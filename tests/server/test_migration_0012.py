"""Migration 0012 (audit streams, the log's queue) on a database populated before it, SQLite and
PostgreSQL: every stored row is unchanged, the old single chain is the ``legacy`` stream and
still verifies with its leaves in the log, and what is written after it goes to streams with
global ids that continue the old ones."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session

from ebr_core.keys import UnitSigner
from server.audit import trail
from server.db import AuditEntry, make_engine, migrate
from server.log import records, store
from server.log.store import LogKey
from server.log.verify import audit_anchors, verify_log
from tests.security.test_ingest_legacy import upgrade

AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
KEY = LogKey("test.example/log", UnitSigner.generate("ctgtp-server"))

records.install()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    return str(request.getfixturevalue("pg").create_db(f"m12_{uuid.uuid4().hex[:16]}"))


def populate_0011(engine: Engine, n: int = 6) -> None:
    """A trail written as the server wrote it before 0012: one chain by seq under the single
    ``audit_head`` row, each entry logged (its leaf appended with it)."""
    prev = trail.GENESIS
    with engine.begin() as c:
        for seq in range(1, n + 1):
            e = AuditEntry(seq=seq, at="2026-11-30T12:00:00.000000Z", actor="u",
                           action="person.created", object_type="person",
                           object_id=f"p{seq}", new=f'{{"i":{seq}}}', reason=None,
                           prev_hash=prev)  # fmt: skip
            e.hash = trail.entry_hash(prev, e)
            c.execute(insert(AuditEntry.__table__).values(
                seq=seq, at=e.at, actor="u", action=e.action, object_type="person",
                object_id=e.object_id, new=e.new, prev_hash=prev, hash=e.hash))  # fmt: skip
            store.append_leaves(c, [records.audit_entry(seq, e.hash).to_bytes()])
            prev = e.hash
        c.execute(text("UPDATE audit_head SET seq = :n, hash = :h"), {"n": n, "h": prev})


def rows(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(text(
            "SELECT seq, at, actor, action, object_type, object_id, old, new, reason, "
            "prev_hash, hash FROM audit_trail ORDER BY seq"))]  # fmt: skip


def log_rows(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as c:
        return [(r[0], bytes(r[1])) for r in c.execute(text(
            "SELECT idx, leaf FROM tlog_leaves ORDER BY idx"))]  # fmt: skip


def test_the_old_chain_stays_verifiable_and_new_entries_go_to_streams(db_url: str) -> None:
    upgrade(db_url, "0011")
    engine = make_engine(db_url)
    try:
        populate_0011(engine)
        before, leaves_before = rows(engine), log_rows(engine)
        with engine.connect() as c:
            head = tuple(c.execute(text("SELECT seq, hash FROM audit_head")).one())
        migrate(engine)  # 0012 and on
        # nothing stored was rewritten
        assert rows(engine) == before and log_rows(engine) == leaves_before
        with engine.connect() as c:
            legacy = c.execute(text("SELECT seq, hash FROM audit_heads WHERE stream = 'legacy'"))
            assert tuple(legacy.one()) == head
            assert c.execute(text("SELECT count(*) FROM audit_trail "
                                  "WHERE stream IS NOT NULL")).scalar() == 0  # fmt: skip
        with Session(engine) as db:
            rep = trail.check(db, audit_anchors(db))
            assert rep.ok and rep.entries == 6 and rep.streams == 1, [f.line() for f in rep.findings]
            # written after: streams, ids after the old ones
            for i in range(3):
                trail.append(db, at=AT, actor="u", action="unit.enrolled", object_type="unit",
                             object_id=f"U-{i % 2}")  # fmt: skip
                db.commit()
            new = db.query(AuditEntry).filter(AuditEntry.seq > 6).order_by(AuditEntry.seq).all()
            assert [(e.seq, e.stream, e.stream_seq) for e in new] == [
                (7, "unit/U-0", 1), (8, "unit/U-1", 1), (9, "unit/U-0", 2)]  # fmt: skip
            rep = trail.check(db, audit_anchors(db))
            assert rep.ok and rep.entries == 9 and rep.streams == 3, [f.line() for f in rep.findings]
            store.current_checkpoint(db, KEY, AT)
            found = verify_log(db, KEY.verifier).findings
            assert found == [], [f.line() for f in found]
        # the legacy chain is still checked: an edit in it is named
        with engine.begin() as c:
            if c.dialect.name == "sqlite":
                c.exec_driver_sql("DROP TRIGGER audit_trail_no_update")
            else:
                c.exec_driver_sql("DROP TRIGGER audit_trail_append_only ON audit_trail")
            c.exec_driver_sql("UPDATE audit_trail SET actor = 'x' WHERE seq = 4")
        with Session(engine) as db:
            bad = trail.check(db, audit_anchors(db)).first_by_stream()
        assert list(bad) == ["legacy"] and bad["legacy"][0].seq == 4, bad
    finally:
        engine.dispose()


def test_a_fresh_database_has_no_legacy_stream(db_url: str) -> None:
    engine = make_engine(db_url)
    try:
        migrate(engine)
        with engine.connect() as c:
            assert c.execute(text("SELECT count(*) FROM audit_heads")).scalar() == 0
        with Session(engine) as db:
            e = trail.append(db, at=AT, actor="u", action="a", object_type="spec", object_id="S@1")
            db.commit()
            assert (e.seq, e.stream, e.stream_seq) == (1, "spec/S@1", 1)
    finally:
        engine.dispose()
