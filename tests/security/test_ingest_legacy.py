"""Migration 0005 (batch ownership): batches stored before it that mix two units' events are
flagged for review at their site, and nothing stored is changed."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import text

from server.db import make_engine, migrate
from server.pgcluster import PgCluster

MIGRATIONS = Path(__file__).resolve().parents[2] / "server" / "migrations"


def upgrade(url: str, to: str) -> None:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    cfg.set_main_option("sqlalchemy.url", url)
    engine = make_engine(url)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, to)


def check(url: str) -> None:
    upgrade(url, "0004")
    engine = make_engine(url)
    rows = [("UNIT-A", 1, "B-MIXED"), ("UNIT-B", 1, "B-MIXED"), ("UNIT-A", 2, "B-OWN"),
            ("UNIT-B", 2, None), ("UNIT-C", 1, None)]  # fmt: skip
    with engine.begin() as conn:
        for unit, seq, batch in rows:
            conn.execute(
                text("INSERT INTO events (unit_id, seq, hash, batch_id, kind, recorded_at, line) "
                     "VALUES (:u, :s, :h, :b, 'step.completed', '2026-11-30T08:00:00.000000Z', "
                     ":l)"),
                {"u": unit, "s": seq, "h": "0" * 64, "b": batch, "l": b"{}"},
            )  # fmt: skip
        conn.execute(
            text("INSERT INTO batches (batch_id, unit_id, site_id, status, events, exceptions, "
                 "review_state) VALUES ('B-MIXED', 'UNIT-A', 'SITE-A', 'in_progress', 2, 0, "
                 "'open')")
        )  # fmt: skip
    migrate(engine)  # to head: 0005 and on
    with engine.connect() as conn:
        alerts = conn.execute(text("SELECT kind, batch_id, site_id, message FROM alerts")).all()
        assert conn.execute(text("SELECT count(*) FROM events")).scalar() == 5
    assert [(k, b, s) for k, b, s, _ in alerts] == [("security.foreign_batch", "B-MIXED", "SITE-A")]
    assert "holds events of 2 units (UNIT-A .. UNIT-B)" in alerts[0][3]


def test_mixed_batches_are_flagged_on_sqlite(tmp_path: Path) -> None:
    check(f"sqlite:///{tmp_path / 'old.db'}")


@pytest.mark.postgres
def test_mixed_batches_are_flagged_on_postgres(pg: PgCluster) -> None:
    check(pg.create_db("legacy_0005"))
