"""Migration 0008: the status columns refuse a word outside their vocabulary, on a database
from before it too, whose stored words all pass; the copied SQLite tables keep their
append-only guards; and the migration's words are the vocabularies' (ebr_core.vocab)."""

from __future__ import annotations

import importlib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.exc import DBAPIError

from ebr_core import vocab
from server.db import Base, Vocab, make_engine, migrate
from server.people.service import ROLES
from server.pgcluster import PgCluster
from tests.security.test_ingest_legacy import upgrade

M = importlib.import_module("server.migrations.versions.0008_vocabularies")


def test_the_migration_s_words_are_the_vocabularies() -> None:
    words = {(t, c): set(w) for t, c, w in M.CHECKS}
    assert words[("units", "status")] == set(vocab.UnitStatus)
    assert words[("unit_keys", "status")] == set(vocab.KeyStatus)
    assert words[("people", "status")] == set(vocab.PersonStatus)
    assert words[("role_grants", "role")] == set(vocab.Role) == set(ROLES)
    assert words[("batches", "status")] == set(vocab.BatchStatus)
    assert words[("batches", "review_state")] == set(vocab.ReviewState)
    assert words[("deviation_actions", "action")] == set(vocab.DeviationActionKind)
    assert words[("qa_signatures", "meaning")] == set(vocab.Meaning)
    assert words[("dispositions", "disposition")] == set(vocab.Disposition)
    assert words[("oos_cases", "state")] == set(vocab.OosState)
    assert words[("custody_events", "kind")] == set(vocab.CustodyStep)


def _value(col: sa.Column[Any], i: int) -> Any:
    t = col.type
    if isinstance(t, sa.Boolean):
        return False
    if isinstance(t, sa.DateTime):
        return datetime(2026, 1, 1, tzinfo=UTC)
    if isinstance(t, sa.Date):
        return date(2026, 1, 1)
    if isinstance(t, sa.Integer | sa.BigInteger):
        return i
    if isinstance(t, sa.LargeBinary):
        return b"x"
    return f"x{i}"


def _row(table: sa.Table, column: str, word: str, i: int) -> dict[str, Any]:
    """A row of ``table`` with ``column`` = ``word`` and filler in every other required column
    (distinct per ``i``, so composite keys do not collide)."""
    row = {
        c.name: _value(c, i)
        for c in table.columns
        if not c.nullable and not (c.primary_key and c.autoincrement is True)
    }
    valid = {c: w[0] for t, c, w in M.CHECKS if t == table.name}
    return row | valid | {column: word}


def _raw(t: sa.Table) -> sa.TableClause:
    """``t`` without its vocabulary types (server.db.Vocab): a write they do not check first,
    as any other writer of the database would make it."""
    return sa.table(
        t.name,
        # The other types kept: sqlite3's own datetime adapter is deprecated since Python 3.12.
        *(sa.column(c.name, None if isinstance(c.type, Vocab) else c.type) for c in t.columns),
    )


def _insert(engine: sa.Engine, t: sa.Table, row: dict[str, Any]) -> None:
    with engine.begin() as conn:
        conn.execute(_raw(t).insert().values(**row))


def _insert_every_word(conn: sa.Connection) -> int:
    n = 0
    for table, column, words in M.CHECKS:
        t = Base.metadata.tables[table]
        for w in words:
            n += 1
            conn.execute(t.insert().values(**_row(t, column, w, n)))
    return n


def test_a_database_from_before_keeps_its_words_and_refuses_others(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 's.db'}"
    upgrade(url, "0007")
    engine = make_engine(url)
    with engine.begin() as conn:
        n = _insert_every_word(conn)
    migrate(engine)
    with engine.connect() as conn:
        kept = sum(
            conn.execute(sa.select(sa.func.count()).select_from(Base.metadata.tables[t])).scalar()
            or 0
            for t in {t for t, _, _ in M.CHECKS}
        )
    assert kept == n  # every stored word passed, every row was copied
    for table, column, _ in M.CHECKS:  # "conditional" is a readiness, no stored status
        t = Base.metadata.tables[table]
        bad = _row(t, column, "conditional", 10_000)
        with pytest.raises(DBAPIError, match=f"CHECK constraint failed: ck_{table}_{column}"):
            _insert(engine, t, bad)
    # The copied append-only tables still refuse an update.
    for table in M.APPEND_ONLY:
        with pytest.raises(DBAPIError, match="append-only"), engine.begin() as conn:
            conn.execute(sa.text(f"DELETE FROM {table}"))


@pytest.mark.postgres
def test_postgres_refuses_a_word_outside_the_vocabulary(pg: PgCluster) -> None:
    url = pg.create_db("vocabulary")
    migrate(make_engine(url))
    engine = make_engine(url)
    t = Base.metadata.tables["people"]
    with pytest.raises(DBAPIError, match="ck_people_status"), engine.begin() as conn:
        conn.execute(_raw(t).insert().values(**_row(t, "status", "suspended", 1)))
    with engine.begin() as conn:
        conn.execute(t.insert().values(**_row(t, "status", "locked", 2)))
