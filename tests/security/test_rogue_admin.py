"""A rogue administrator with the server's database (issue 24), on a running server over HTTP,
SQLite and PostgreSQL.  Each edit is made directly in the database, as an attacker would: the
append-only triggers are dropped first.  Who catches what:

| attack | caught by |
|---|---|
| change a disposition | ``ctgtp server log verify`` (the row's content_hash differs from its leaf); an auditor with the decision's ``.tlog-proof`` |
| delete a stored segment | ``server log verify`` (the segment leaf's events are gone) |
| delete the last N audit entries of a stream and rewind its head | ``server audit verify`` and ``server log verify`` (their leaves remain) |
| recompute a stream's audit chain after an edit | ``server audit verify`` and ``server log verify`` (the audit leaf's hash differs) |
| rewrite the log itself: a smaller tree re-signed | a witness holding an earlier checkpoint (``rewound``); ``server log verify --trusted`` |
| rewrite the log to match the edits: another tree re-signed (a fork) | a witness (``rewound`` or ``split-view``) and ``server log verify --trusted``; ``server log verify`` alone cannot |

The unit's own detection at its next sync (its stored checkpoint) is the edge's (issue 24, unit
side).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session

from ebr_core.keys import UnitSigner
from ebr_core.tlog.entries import EntryKind, LogEntry
from ebr_core.tlog.note import Ed25519NoteVerifier
from ebr_core.tlog.tiles import parse_entry_bundle
from ebr_core.tlog.tlogproof import TlogProof
from server.audit import trail
from server.cli import server as server_cli
from server.db import AuditEntry, make_engine
from server.keys import load_server_key
from server.log import records, store
from server.log.store import LogKey
from tests.security.test_review_record import settled_push_batch
from tests.server.conftest import Server, make_ledger
from tests.server.qa import add_people, enter_results, example_results, login, publish_spec, sign
from tests.server.test_ingest import lines, post_segment
from tests.server.test_log_witness import Witness

QA_PEOPLE = {
    "qa.global": ("Gina Global", [("qa_approver", "*")]),
    "rev.a": ("Rita Reviewer", [("qa_reviewer", "SITE-A")]),
    "appr.a": ("Paul Approver", [("qa_approver", "SITE-A")]),
}


def log_verify(server: Server, *trusted: Path) -> tuple[int, dict[str, Any]]:
    s = server.settings
    args = ["log", "verify", "--json", "--data-dir", str(s.data_dir),
            "--database-url", s.database_url]  # fmt: skip
    for p in trusted:
        args += ["--trusted", str(p)]
    r = CliRunner().invoke(server_cli, args)
    return r.exit_code, json.loads(r.output)


def audit_verify(server: Server) -> tuple[int, dict[str, Any]]:
    s = server.settings
    r = CliRunner().invoke(server_cli, ["audit", "verify", "--json", "--database-url",
                                        s.database_url])  # fmt: skip
    return r.exit_code, json.loads(r.output)


def drop_guards(conn: Connection, *tables: str) -> None:
    """What the attacker does first: the append-only triggers go."""
    for t in tables:
        if conn.dialect.name == "sqlite":
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {t}_no_update")
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {t}_no_delete")
        else:
            conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {t}_append_only ON {t}")


def refused(server: Server, sql: str) -> bool:
    engine = make_engine(server.settings.database_url)
    try:
        with engine.begin() as conn:
            conn.exec_driver_sql(sql)
    except DBAPIError:
        return True
    finally:
        engine.dispose()
    return False


def attack(server: Server, *guards: str) -> Any:
    class Ctx:
        def __enter__(self) -> Connection:
            self.engine = make_engine(server.settings.database_url)
            self.cm = self.engine.begin()
            conn = self.cm.__enter__()
            drop_guards(conn, *guards)
            return conn

        def __exit__(self, *exc: object) -> None:
            self.cm.__exit__(*exc)  # type: ignore[arg-type]
            self.engine.dispose()

    return Ctx()


def findings(report: dict[str, Any], part: str) -> list[dict[str, Any]]:
    return [f for f in report["findings"] if f["part"] == part]


def test_edits_of_the_records_are_named_by_log_verify(server: Server, tmp_path: Path) -> None:
    add_people(server, QA_PEOPLE)
    publish_spec(server)
    settled_push_batch(server, tmp_path, unit_id="UNIT-A1", site="SITE-A", batch_id="B-A1",
                       deviation=False)  # fmt: skip
    rev, appr = login(server, "rev.a"), login(server, "appr.a")
    assert enter_results(rev, "B-A1", example_results()).status_code == 201
    assert sign(rev, "B-A1", "rev.a", "reviewed").status_code == 201
    r = sign(appr, "B-A1", "appr.a", "released")
    assert r.status_code == 201, r.text
    decided = r.json()["disposition"]
    unit = UnitSigner.generate("UNIT-R1")
    server.enrol(unit)
    ls = lines(make_ledger(tmp_path / "r.db", unit, groups=2, per_group=4))
    cps = [i for i, ln in enumerate(ls) if b'"type":"checkpoint"' in ln]
    assert post_segment(server, unit, b"".join(ls[: cps[1] + 1])).status_code == 200
    assert post_segment(server, unit, b"".join(ls)).status_code == 200
    code, rep = log_verify(server)
    assert code == 0 and rep["ok"], rep["findings"]
    assert rep["checked"]["rows"] >= 3 and rep["checked"]["segments"] >= 3

    # The auditor's proof of the decision, taken before the edit.
    log = Ed25519NoteVerifier.from_vkey(httpx.get(server.url + "/v1/log/vkey").text)
    size = int(httpx.get(server.url + "/v1/log/checkpoint").text.split("\n")[1])
    assert size < 256  # one entry bundle holds them all
    bundle = httpx.get(f"{server.url}/v1/log/tile/entries/000.p/{size}")
    leaves = parse_entry_bundle(bundle.content, size)
    (d_idx,) = [i for i, lf in enumerate(leaves)
                if LogEntry.parse(lf).kind is EntryKind.DISPOSITION]  # fmt: skip
    proof = TlogProof.parse(httpx.get(f"{server.url}/v1/log/proof/{d_idx}.tlog-proof").content)

    # 1. Change the disposition.  The trigger refuses it; without the trigger it goes through.
    assert refused(server, "UPDATE dispositions SET disposition = 'rejected'")
    with attack(server, "dispositions") as c:
        c.exec_driver_sql("UPDATE dispositions SET disposition = 'rejected'")
    code, rep = log_verify(server)
    assert code == 1
    (f,) = findings(rep, "row")
    assert f["leaf"] == d_idx and f["record"].startswith("dispositions ")
    assert f"disposition: the log says '{decided}', the row says 'rejected'" in f["detail"]
    # The auditor: the proof still verifies for the logged decision, whose content hash is
    # not the row's any more.
    proof.verify(leaves[d_idx], log)
    engine = make_engine(server.settings.database_url)
    with engine.connect() as c:
        row = c.execute(text("SELECT * FROM dispositions")).mappings().one()
    logged = LogEntry.parse(leaves[d_idx]).fields
    assert logged["disposition"] == decided
    assert logged["content_hash"] != records.content_hash("dispositions", row)

    # 2. Delete the second stored segment (and rewind the unit's head to hide it).
    cut, head = (json.loads(ls[i])["seq"] for i in (cps[1], cps[-1]))
    with attack(server, "events", "checkpoints") as c:
        c.exec_driver_sql(f"DELETE FROM events WHERE unit_id = 'UNIT-R1' AND seq > {cut}")
        c.exec_driver_sql(f"DELETE FROM checkpoints WHERE unit_id = 'UNIT-R1' AND seq > {cut}")
        c.exec_driver_sql(f"UPDATE units SET head_seq = {cut} WHERE unit_id = 'UNIT-R1'")
    code, rep = log_verify(server)
    seg = findings(rep, "segment")
    assert code == 1 and {f["record"] for f in seg} == {f"unit UNIT-R1 events {cut + 1}-{head}"}
    assert len({f["leaf"] for f in seg}) == 1
    assert any("events are no longer stored" in f["detail"] for f in seg), seg

    # 3. Delete the last 2 audit entries of a stream and rewind its head: its chain still
    # verifies; their anchors in the log do not go away.
    assert audit_verify(server)[0] == 0
    with Session(engine) as db:
        last = db.query(AuditEntry).order_by(AuditEntry.seq.desc()).first()
        assert last is not None and last.stream is not None
        stream = last.stream
        mine = db.query(AuditEntry).filter(AuditEntry.stream == stream).order_by(
            AuditEntry.stream_seq).all()  # fmt: skip
        assert len(mine) >= 3
        keep, cut_off = mine[-3], [e.seq for e in mine[-2:]]
    with attack(server, "audit_trail") as c:
        c.execute(text("DELETE FROM audit_trail WHERE seq IN (:a, :b)"),
                  {"a": cut_off[0], "b": cut_off[1]})  # fmt: skip
        c.execute(text("UPDATE audit_heads SET seq = :s, hash = :h WHERE stream = :st"),
                  {"s": keep.stream_seq, "h": keep.hash, "st": stream})  # fmt: skip
    with Session(engine) as db:
        assert trail.check(db, None).ok  # the chains alone are fooled
    code, rep = audit_verify(server)
    assert code == 1 and sorted(f["seq"] for f in rep["gone"]) == cut_off, rep
    code, rep = log_verify(server)
    gone = [f for f in findings(rep, "audit") if "not in the trail (deleted)" in f["detail"]]
    assert code == 1 and [f["record"] for f in gone] == [f"audit entry {n}" for n in cut_off]

    # 4. Edit an audit entry and recompute its stream's chain and head from it: the chain
    # verifies again, the anchors of the three entries from it on do not.
    with Session(engine) as db:
        streams = db.execute(text("SELECT stream, count(*) FROM audit_trail WHERE stream IS NOT "
                                  "NULL GROUP BY stream ORDER BY count(*) DESC, stream")).all()  # fmt: skip
    longest = str(streams[0][0])
    with attack(server, "audit_trail") as c, Session(bind=c) as db:
        rows = db.query(AuditEntry).filter(AuditEntry.stream == longest).order_by(
            AuditEntry.stream_seq).all()[-3:]  # fmt: skip
        rows[0].reason = "nothing happened"
        prev = rows[0].prev_hash
        for e in rows:
            e.prev_hash, e.hash = prev, trail.entry_hash(prev, e)
            prev = e.hash
        db.flush()
        edited = [e.seq for e in rows]
        c.execute(text("UPDATE audit_heads SET hash = :h WHERE stream = :s"),
                  {"h": prev, "s": longest})  # fmt: skip
    with Session(engine) as db:
        assert trail.check(db, None).ok
    code, rep = audit_verify(server)
    (bad,) = rep["bad_streams"]
    assert code == 1 and bad["stream"] == longest and bad["first"]["seq"] == edited[0], rep
    assert "chain recomputed" in bad["first"]["detail"] and bad["findings"] == 3
    code, rep = log_verify(server)
    changed = [f for f in findings(rep, "audit") if "chain recomputed" in f["detail"]]
    assert code == 1 and [f["record"] for f in changed] == [f"audit entry {n}" for n in edited]
    engine.dispose()


def rewrite_log(server: Server, leaves: list[bytes]) -> None:
    """The attacker's last step: replace the whole log with ``leaves`` and sign it with the
    server's key (which the attacker, on the host, has)."""
    with attack(server, "tlog_leaves", "tlog_nodes", "tlog_checkpoints") as c:
        for t in ("tlog_leaves", "tlog_nodes", "tlog_checkpoints"):
            c.exec_driver_sql(f"DELETE FROM {t}")
        c.execute(text("UPDATE tlog_head SET size = 0, peaks = :p"), {"p": b""})
        store.append_leaves(c, leaves)
    engine = make_engine(server.settings.database_url)
    key = LogKey(server.settings.log_origin, load_server_key(server.settings.data_dir))
    with Session(engine) as db:
        store.current_checkpoint(db, key, datetime.now(UTC))
    engine.dispose()


def current_leaves(server: Server) -> list[bytes]:
    engine = make_engine(server.settings.database_url)
    with Session(engine) as db:
        out = store.leaves(db, 0, store.head(db).size)
    engine.dispose()
    return out


def test_a_rewritten_log_is_caught_by_a_witness(server: Server, tmp_path: Path) -> None:
    unit = UnitSigner.generate("UNIT-R2")
    server.enrol(unit)
    ls = lines(make_ledger(tmp_path / "r.db", unit, groups=2, per_group=4))
    assert post_segment(server, unit, b"".join(ls)).status_code == 200
    w = Witness(server, tmp_path / "w")
    assert w.look().exit_code == 0
    held = w.cosigned()
    trusted = w.state / "checkpoint"
    assert log_verify(server, trusted)[0] == 0
    before = current_leaves(server)
    assert len(before) == held.size and held.size >= 3
    assert refused(server, "DELETE FROM tlog_leaves")

    # A smaller tree, re-signed: the history after it is gone from every proof.
    rewrite_log(server, before[:-2])
    r = w.look()
    assert r.exit_code == 3 and "ALERT rewound" in r.output, r.output
    code, rep = log_verify(server, trusted)
    (f,) = findings(rep, "checkpoint")
    assert code == 1 and f"is of size {held.size}" in f["detail"] and "rewound" in f["detail"]
    alerts = [json.loads(x) for x in (w.state / "alerts.jsonl").read_text().splitlines()]
    assert [a["kind"] for a in alerts] == ["rewound"]

    # Another tree of the same size, covering an edited audit entry: a fork.
    forged = list(before)
    forged[1] = records.audit_entry(2, "ee" * 32).to_bytes()
    rewrite_log(server, forged)
    r = w.look()
    assert r.exit_code == 3 and "ALERT split-view" in r.output, r.output
    code, rep = log_verify(server, trusted)
    (f,) = findings(rep, "checkpoint")
    assert code == 1 and "a fork" in f["detail"]
    # Without what was handed out before, the database alone holds a consistent forgery of
    # the log; only the records it no longer matches show.
    code, rep = log_verify(server)
    assert not findings(rep, "checkpoint") and not findings(rep, "tree")
