"""Migration 0014 (``audit_trail.xid``, paging by visibility) on a trail written before it,
SQLite and PostgreSQL: no stored value changes, the old entries have no ``xid`` and are served
first, by ``seq``, then the new ones; ``ctgtp server audit verify`` passes on both; on
PostgreSQL a writer that does not name ``xid`` (an older server) still gets its transaction's;
the downgrade drops the column and nothing else."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from click.testing import CliRunner
from sqlalchemy import Engine, insert, inspect, text
from sqlalchemy.orm import Session

from server.audit import trail
from server.cli import server as server_cli
from server.db import AuditEntry, make_engine, migrate
from server.log import records, store
from server.pgcluster import PgCluster
from tests.security.test_ingest_legacy import MIGRATIONS, upgrade

AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
COLUMNS = (
    "seq, at, actor, action, object_type, object_id, old, new, reason, prev_hash, hash, "
    "stream, stream_seq"
)

records.install()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'old.db'}"
    return str(request.getfixturevalue("pg").create_db(f"m14_{uuid.uuid4().hex[:16]}"))


def populate_0013(engine: Engine, n: int = 6) -> None:
    """Entries in two streams as the server wrote them at 0013 (heads, leaves in the log)."""
    heads: dict[str, tuple[int, str]] = {}
    with engine.begin() as c:
        for seq in range(1, n + 1):
            stream = f"unit/U-{seq % 2}"
            place, prev = heads.get(stream, (0, trail.GENESIS))
            values = {"seq": seq, "at": "2026-11-30T12:00:00.000000Z", "actor": "u",
                      "action": "unit.changed", "object_type": "unit",
                      "object_id": stream.split("/")[1], "old": None, "new": f'{{"i":{seq}}}',
                      "reason": None, "prev_hash": prev, "stream": stream,
                      "stream_seq": place + 1}  # fmt: skip
            values["hash"] = trail.entry_hash(prev, AuditEntry(**values))
            c.execute(insert(AuditEntry.__table__).values(**values))
            store.append_leaves(c, [records.audit_entry(seq, values["hash"]).to_bytes()])
            heads[stream] = (place + 1, values["hash"])
        for s, (place, h) in heads.items():
            c.execute(text("INSERT INTO audit_heads (stream, seq, hash) VALUES (:s, :n, :h)"),
                      {"s": s, "n": place, "h": h})  # fmt: skip
        if c.dialect.name == "postgresql":
            c.execute(text("SELECT setval('audit_trail_seq', :n)"), {"n": n})


def rows(engine: Engine) -> list[tuple[object, ...]]:
    with engine.connect() as c:
        return [tuple(r) for r in c.execute(text(
            f"SELECT {COLUMNS} FROM audit_trail ORDER BY seq"))]  # fmt: skip


def verify(engine: Engine) -> dict[str, object]:
    url = engine.url.render_as_string(hide_password=False)
    r = CliRunner().invoke(server_cli, ["audit", "verify", "--json", "--database-url", url])
    assert r.exit_code == 0, r.output
    out: dict[str, object] = json.loads(r.output)
    return out


def test_old_entries_keep_their_values_and_are_served_first(db_url: str) -> None:
    upgrade(db_url, "0013")
    engine = make_engine(db_url)
    try:
        populate_0013(engine)
        before = rows(engine)
        migrate(engine)  # 0014
        assert rows(engine) == before  # no stored value rewritten
        with engine.connect() as c:
            assert c.execute(text("SELECT count(*) FROM audit_trail WHERE xid IS NOT NULL"))\
                .scalar() == 0  # fmt: skip
        for i in range(3):
            with Session(engine) as db:
                trail.append(db, at=AT, actor="u", action="unit.changed", object_type="unit",
                             object_id=f"U-{i % 2}")  # fmt: skip
                db.commit()
        with Session(engine) as db:
            new = db.query(AuditEntry).filter(AuditEntry.seq > 6).order_by(AuditEntry.seq).all()
            assert [(e.seq, e.stream, e.stream_seq) for e in new] == [
                (7, "unit/U-0", 4), (8, "unit/U-1", 4), (9, "unit/U-0", 5)]  # fmt: skip
            xids = [e.xid for e in new]
            if engine.dialect.name == "postgresql":
                assert all(x is not None for x in xids) and xids == sorted(xids)
            else:
                assert xids == [None] * 3
            assert [e.seq for e in trail.page(db, limit=4)] == [1, 2, 3, 4]
            assert [e.seq for e in trail.page(db, after=4)] == [5, 6, 7, 8, 9]
            assert [e.seq for e in trail.page(db, after=6)] == [7, 8, 9]
            assert [e.seq for e in trail.page(db, after=7)] == [8, 9]
        rep = verify(engine)
        assert rep["ok"] is True and rep["entries"] == 9, rep
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_a_writer_that_does_not_name_xid_gets_its_transactions(pg: PgCluster) -> None:
    engine = make_engine(pg.create_db(f"m14_{uuid.uuid4().hex[:16]}"))
    try:
        migrate(engine)
        with engine.connect() as c:
            mine = c.execute(text("SELECT CAST(CAST(pg_current_xact_id() AS text) AS bigint)"))\
                .scalar_one()  # fmt: skip
            got = c.execute(text(
                "INSERT INTO audit_trail (seq, at, actor, action, object_type, object_id, "
                "prev_hash, hash) VALUES (1, 'x', 'u', 'a', 't', 'o', 'p', 'h') RETURNING xid"
            )).scalar_one()  # fmt: skip
            assert got == mine
            c.rollback()
    finally:
        engine.dispose()


def test_the_downgrade_drops_the_column_and_nothing_else(db_url: str) -> None:
    upgrade(db_url, "0013")
    engine = make_engine(db_url)
    try:
        populate_0013(engine)
        before = rows(engine)
        migrate(engine)
        cfg = Config()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.set_main_option("sqlalchemy.url", db_url)
        with engine.begin() as conn:
            cfg.attributes["connection"] = conn
            command.downgrade(cfg, "0013")
        assert "xid" not in {c["name"] for c in inspect(engine).get_columns("audit_trail")}
        assert rows(engine) == before
        with engine.connect() as c, pytest.raises(Exception, match="append-only"):
            c.execute(text("DELETE FROM audit_trail WHERE seq = 1"))  # the guards stay
        migrate(engine)  # and up again
        assert rows(engine) == before and verify(engine)["ok"] is True
    finally:
        engine.dispose()
