"""Migration 0006 (people security) on a database from before it: no user id is changed (no
silent lowercasing); ids outside the new rules (upper case, non-ASCII, confusable with an earlier
one) keep working under their exact spelling and are named in one ``people.legacy_id`` alert;
an account whose last password was set by someone else must change it."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.orm import Session

from server.db import make_engine, migrate
from server.people.ids import find_person
from server.pgcluster import PgCluster
from tests.security.test_ingest_legacy import upgrade

PEOPLE = ["Rita.R", "rita_r", "op\u0441", "ops1", "clean.one"]
# (object_id, action) in trail order: ops1 changed the password an administrator gave them.
TRAIL = [
    ("Rita.R", "person.created"),
    ("rita_r", "person.created"),
    ("ops1", "person.created"),
    ("ops1", "person.password_changed"),
    ("clean.one", "person.password_changed"),
    ("clean.one", "person.password_reset"),
]


def check(url: str) -> None:
    upgrade(url, "0005")
    engine = make_engine(url)
    at = datetime(2026, 11, 1, tzinfo=UTC)
    with engine.begin() as conn:
        for i, uid in enumerate(PEOPLE):
            conn.execute(
                text("INSERT INTO people (user_id, printed_name, password_hash, status, "
                     "failed_logins, created_at) VALUES (:u, 'P', 'h', 'active', 0, :t)"),
                {"u": uid, "t": at.replace(minute=i).isoformat(" ")},  # as sqlite3 wrote it
            )  # fmt: skip
        for seq, (uid, action) in enumerate(TRAIL, start=1):
            conn.execute(
                text("INSERT INTO audit_trail (seq, at, actor, action, object_type, object_id, "
                     "prev_hash, hash) VALUES (:s, '2026-11-01T00:00:00.000000Z', 'admin', :a, "
                     "'person', :u, :h, :h)"),
                {"s": seq, "a": action, "u": uid, "h": f"{seq:064d}"},
            )  # fmt: skip
    migrate(engine)  # to head: 0006 and on
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT user_id, must_change_password, id_skeleton FROM people ORDER BY user_id")
        ).all()
        alerts = conn.execute(text("SELECT kind, message FROM alerts")).all()
    got = {u: (bool(m), sk) for u, m, sk in rows}
    assert sorted(got) == sorted(PEOPLE)  # nothing renamed
    assert got["Rita.R"] == (True, "rlta.r")
    assert got["rita_r"] == (True, None)  # confusable with Rita.R: no skeleton of its own
    assert got["ops1"] == (False, "opsl")
    assert got["clean.one"][0] is True  # reset after the owner's last change
    assert [k for k, _ in alerts] == ["people.legacy_id"]
    message = alerts[0][1]
    for words in ["'Rita.R' (lower case only)", "'rita_r' (confusable with 'Rita.R')", "U+0441"]:
        assert words in message, message
    assert "ops1" not in message and "clean.one" not in message
    with Session(engine) as s:
        for typed, stored in [("Rita.R", "Rita.R"), ("RITA_R", "rita_r"), ("OPS1", "ops1")]:
            p = find_person(s, typed)
            assert p is not None and p.user_id == stored, typed


def test_legacy_ids_are_kept_and_named_on_sqlite(tmp_path: Path) -> None:
    check(f"sqlite:///{tmp_path / 'old.db'}")


@pytest.mark.postgres
def test_legacy_ids_are_kept_and_named_on_postgres(pg: PgCluster) -> None:
    check(pg.create_db("legacy_0006"))
