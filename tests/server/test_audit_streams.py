"""The audit trail chained per stream (issue 25), on SQLite and PostgreSQL: each write goes to
its object's stream, with a global id; ``ctgtp server audit verify`` walks every stream against
its head and every entry against its leaf in the transparency log, and names the first bad entry
of each bad stream: an entry altered, deleted (in the middle, at the end), inserted, reordered,
a head rolled back, a stream cut back with its head.  Only the attacked stream is named."""

from __future__ import annotations

import hashlib
import itertools
import json
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from click.testing import CliRunner
from sqlalchemy import Connection, Engine, select, text
from sqlalchemy.orm import Session

from server.audit import trail
from server.cli import server as server_cli
from server.db import AuditEntry, AuditHead, make_engine, migrate
from server.log import records
from server.log.verify import audit_anchors

AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
STREAMS = {"unit": ("U-1", 5), "batch": ("B-1", 4), "person": ("p.one", 3)}
ATTACKED = "unit/U-1"

records.install()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'audit.db'}"
    return str(request.getfixturevalue("pg").create_db(f"audit_{uuid.uuid4().hex[:16]}"))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = make_engine(db_url)
    migrate(e)
    with Session(e) as db:  # interleaved, one transaction each, as requests write them
        for i in range(max(n for _, n in STREAMS.values())):
            for kind, (oid, n) in STREAMS.items():
                if i < n:
                    trail.append(db, at=AT, actor="u", action=f"{kind}.changed",
                                 object_type=kind, object_id=oid, new={"i": i})  # fmt: skip
                    db.commit()
    yield e
    e.dispose()


def report(engine: Engine) -> trail.Report:
    with Session(engine) as db:
        return trail.check(db, audit_anchors(db))


def cli(engine: Engine) -> tuple[int, dict[str, object]]:
    url = engine.url.render_as_string(hide_password=False)
    r = CliRunner().invoke(server_cli, ["audit", "verify", "--json", "--database-url", url])
    return r.exit_code, json.loads(r.output)


def entries(engine: Engine, stream: str) -> list[AuditEntry]:
    with Session(engine) as db:
        return list(db.scalars(select(AuditEntry).where(AuditEntry.stream == stream)
                               .order_by(AuditEntry.stream_seq)))  # fmt: skip


def attack(engine: Engine, edit: Callable[[Connection], None]) -> None:
    """Someone with the database: the append-only guards go first."""
    with engine.begin() as c:
        if c.dialect.name == "sqlite":
            c.exec_driver_sql("DROP TRIGGER IF EXISTS audit_trail_no_update")
            c.exec_driver_sql("DROP TRIGGER IF EXISTS audit_trail_no_delete")
        else:
            c.exec_driver_sql("DROP TRIGGER IF EXISTS audit_trail_append_only ON audit_trail")
        edit(c)


def only_the_attacked_stream(rep: trail.Report) -> trail.Finding:
    bad = rep.first_by_stream()
    assert set(bad) == {ATTACKED}, [f.line() for f in rep.findings]
    return bad[ATTACKED][0]


def test_each_write_goes_to_its_objects_stream_and_verifies(engine: Engine) -> None:
    rep = report(engine)
    assert rep.ok, [f.line() for f in rep.findings]
    assert rep.entries == 12 and rep.streams == 3 and rep.anchored == 12
    with Session(engine) as db:
        rows = db.scalars(select(AuditEntry).order_by(AuditEntry.seq)).all()
        heads = {h.stream: (h.seq, h.hash) for h in db.scalars(select(AuditHead))}
    assert [r.seq for r in rows] == list(range(1, 13))  # the global id: the order of appends
    assert {r.stream for r in rows} == {"unit/U-1", "batch/B-1", "person/p.one"}
    for stream, n in (("unit/U-1", 5), ("batch/B-1", 4), ("person/p.one", 3)):
        mine = [r for r in rows if r.stream == stream]
        assert [r.stream_seq for r in mine] == list(range(1, n + 1))
        assert mine[0].prev_hash == trail.GENESIS
        assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(mine))
        assert heads[stream] == (n, mine[-1].hash)
    # where a write goes: its object's stream; a deviation in its batch's; a COI by its hash
    assert trail.stream_of("deviation", "B-7/DEV-1") == "batch/B-7"
    coi = "&/CHA999926PAT001"
    assert trail.stream_of("coi", coi) == "coi/" + hashlib.sha256(coi.encode()).hexdigest()
    code, out = cli(engine)
    assert code == 0 and out["ok"] and out["entries"] == 12, out


def _swap(c: Connection, a: AuditEntry, b: AuditEntry) -> None:
    for seq, place in ((a.seq, -1), (b.seq, a.stream_seq), (a.seq, b.stream_seq)):
        c.execute(text("UPDATE audit_trail SET stream_seq = :p WHERE seq = :s"),
                  {"p": place, "s": seq})  # fmt: skip


def _forge_after(c: Connection, last: AuditEntry) -> int:
    """A whole new entry at the stream's end, chained and hashed as the server would, and the
    head moved to it: only the log does not know it."""
    seq = int(c.execute(text("SELECT max(seq) FROM audit_trail")).scalar_one()) + 50
    e = AuditEntry(seq=seq, at=last.at, actor="u", action="unit.changed", object_type="unit",
                   object_id="U-1", new='{"i":99}', prev_hash=last.hash, stream=ATTACKED,
                   stream_seq=(last.stream_seq or 0) + 1)  # fmt: skip
    e.hash = trail.entry_hash(last.hash, e)
    c.execute(
        text("INSERT INTO audit_trail (seq, at, actor, action, object_type, object_id, new, "
             "prev_hash, hash, stream, stream_seq) VALUES (:seq, :at, 'u', 'unit.changed', "
             "'unit', 'U-1', :new, :prev, :h, :s, :n)"),
        {"seq": seq, "at": e.at, "new": e.new, "prev": e.prev_hash, "h": e.hash, "s": ATTACKED,
         "n": e.stream_seq},
    )  # fmt: skip
    c.execute(text("UPDATE audit_heads SET seq = :n, hash = :h WHERE stream = :s"),
              {"n": e.stream_seq, "h": e.hash, "s": ATTACKED})  # fmt: skip
    return seq


def test_an_altered_entry_is_named(engine: Engine) -> None:
    third = entries(engine, ATTACKED)[2]
    attack(engine, lambda c: c.execute(
        text("UPDATE audit_trail SET reason = 'nothing to see' WHERE seq = :s"), {"s": third.seq}))  # fmt: skip
    f = only_the_attacked_stream(report(engine))
    assert (f.seq, f.place) == (third.seq, 3) and "altered" in f.detail
    code, out = cli(engine)
    assert code == 1 and [b["stream"] for b in out["bad_streams"]] == [ATTACKED]  # type: ignore[union-attr]


def test_an_entry_deleted_in_the_middle_is_named(engine: Engine) -> None:
    rows = entries(engine, ATTACKED)
    attack(engine, lambda c: c.execute(text("DELETE FROM audit_trail WHERE seq = :s"),
                                       {"s": rows[1].seq}))  # fmt: skip
    rep = report(engine)
    f = only_the_attacked_stream(rep)
    assert f.seq == rows[2].seq and f.place == 3
    assert "entries #2 of the stream before it are missing (deleted)" in f.detail
    # and the log still holds the deleted entry's leaf
    (gone,) = rep.gone()
    assert gone.seq == rows[1].seq and "in the log" in gone.detail and "deleted" in gone.detail


def test_entries_deleted_at_the_end_are_named(engine: Engine) -> None:
    rows = entries(engine, ATTACKED)
    attack(engine, lambda c: c.execute(text("DELETE FROM audit_trail WHERE seq IN (:a, :b)"),
                                       {"a": rows[3].seq, "b": rows[4].seq}))  # fmt: skip
    rep = report(engine)
    f = only_the_attacked_stream(rep)
    assert f.seq is None and f.place == 4 and "entries #4-5 are missing at the end" in f.detail
    assert sorted(g.seq for g in rep.gone()) == [rows[3].seq, rows[4].seq]


def test_a_stream_cut_back_with_its_head_is_caught_by_its_anchors(engine: Engine) -> None:
    """The chain and its head agree again: only the log, which holds every entry's hash,
    still knows the two entries."""
    rows = entries(engine, ATTACKED)

    def cut(c: Connection) -> None:
        c.execute(text("DELETE FROM audit_trail WHERE seq IN (:a, :b)"),
                  {"a": rows[3].seq, "b": rows[4].seq})  # fmt: skip
        c.execute(text("UPDATE audit_heads SET seq = 3, hash = :h WHERE stream = :s"),
                  {"h": rows[2].hash, "s": ATTACKED})  # fmt: skip

    attack(engine, cut)
    with Session(engine) as db:
        assert trail.check(db, None).ok  # the chains alone are fooled
    rep = report(engine)
    assert not rep.first_by_stream()
    # each named by the leaf that holds it (sequenced right after its commit)
    assert [g.seq for g in rep.gone()] == [rows[3].seq, rows[4].seq]
    assert all(g.leaf is not None for g in rep.gone())
    code, out = cli(engine)
    assert code == 1 and len(out["gone"]) == 2  # type: ignore[arg-type]


def test_an_inserted_entry_is_named(engine: Engine) -> None:
    """Forged at the end with the right chain and head: not in the log.  Slipped in between
    two entries: its place is taken twice, and its successor no longer links to it."""
    last = entries(engine, ATTACKED)[-1]
    forged: list[int] = []
    attack(engine, lambda c: forged.append(_forge_after(c, last)))
    f = only_the_attacked_stream(report(engine))
    assert f.seq == forged[0] and f.place == 6 and "not in the log" in f.detail


def test_an_entry_inserted_between_two_is_named(engine: Engine) -> None:
    rows = entries(engine, ATTACKED)

    def slip(c: Connection) -> None:
        # make room: the unique (stream, place) index would refuse a second place 3
        c.exec_driver_sql("DROP INDEX audit_stream")
        c.execute(
            text("INSERT INTO audit_trail (seq, at, actor, action, object_type, object_id, "
                 "prev_hash, hash, stream, stream_seq) VALUES (999, :at, 'u', 'unit.changed', "
                 "'unit', 'U-1', :prev, :h, :s, 3)"),
            {"at": rows[0].at, "prev": rows[1].hash, "h": "ab" * 32, "s": ATTACKED},
        )  # fmt: skip

    attack(engine, slip)
    f = only_the_attacked_stream(report(engine))
    assert f.place == 3 and f.seq in (999, rows[2].seq)


def test_reordered_entries_are_named(engine: Engine) -> None:
    rows = entries(engine, ATTACKED)
    attack(engine, lambda c: _swap(c, rows[1], rows[2]))
    f = only_the_attacked_stream(report(engine))
    assert f.place == 2 and f.seq == rows[2].seq
    assert "does not link" in f.detail or "altered" in f.detail


def test_a_head_rolled_back_is_named(engine: Engine) -> None:
    rows = entries(engine, ATTACKED)
    attack(engine, lambda c: c.execute(
        text("UPDATE audit_heads SET seq = 3, hash = :h WHERE stream = :s"),
        {"h": rows[2].hash, "s": ATTACKED}))  # fmt: skip
    f = only_the_attacked_stream(report(engine))
    assert f.place == 4 and "its head says 3 entries, the stream holds 5" in f.detail
    code, out = cli(engine)
    assert code == 1 and out["bad_streams"][0]["first"]["place"] == 4  # type: ignore[index]
