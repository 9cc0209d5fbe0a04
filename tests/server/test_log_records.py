"""What the log holds of the server's records: one leaf per logged row, appended by the listener
in the row's transaction, bound by the row's content hash and carrying no patient identifier;
``server log verify`` names a row changed or added behind the log's back; a database from before
the log gets its records logged by the migration; concurrent writers on PostgreSQL get distinct
consecutive indexes; ``bench/tlog.py`` still runs."""

from __future__ import annotations

import importlib.util
import json
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path

import pytest
from sqlalchemy import Engine, insert, text
from sqlalchemy.orm import Session

from ebr_core.keys import UnitSigner
from ebr_core.tlog.cosignature import CosignatureVerifier
from ebr_core.tlog.entries import EntryKind, LogEntry
from server.audit import trail
from server.db import (
    AuditEntry,
    ClosureSignature,
    CustodyEventRow,
    DeviationAction,
    DeviationLink,
    Disposition,
    EventRow,
    Licence,
    LicenceLink,
    QaSignature,
    Site,
    Unit,
    make_engine,
    migrate,
)
from server.log import records, store
from server.log.store import LogKey
from server.log.verify import verify_log
from tests.security.test_ingest_legacy import upgrade

COI = "&/CHA999926PAT001"
AT = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
KEY = LogKey("test.example/log", UnitSigner.generate("ctgtp-server"))


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'log.db'}"
    # a fresh name each time: id() of a collected object comes back, and the cluster keeps
    # every database of the session (createdb refused the second "log_<id>")
    return str(request.getfixturevalue("pg").create_db(f"log_{uuid.uuid4().hex[:16]}"))


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    e = make_engine(db_url)
    yield e
    e.dispose()


def all_leaves(db: Session) -> list[LogEntry]:
    return [LogEntry.parse(x) for x in store.leaves(db, 0, store.head(db).size)]


def check(db: Session) -> list[str]:
    """The findings of ``server log verify`` (after signing a checkpoint of the tree), as lines."""
    store.current_checkpoint(db, KEY, AT)
    return [f.line() for f in verify_log(db, KEY.verifier).findings]


def add_records(db: Session) -> None:
    db.add(Site(site_id="S", name="Site"))
    db.add(Licence(licence_id="L-1", classification="EAR99", authority="BIS", holder="H",
                   valid_until=date(2027, 1, 1), alerted="", created_by="u", created_at=AT))  # fmt: skip
    db.flush()
    db.add(LicenceLink(licence_id="L-1", object_type="shipment", object_id="SHIP-" + COI))
    db.add(CustodyEventRow(coi=COI, batch_id="B-1", kind="handoff", from_party="a",
                           to_party="b", place="dock", payload="{}", recorded_by="u", at=AT))  # fmt: skip
    db.add(DeviationAction(batch_id="B-1", deviation_id="DEV-1", action="comment", text="t",
                           user_id="u", at=AT))  # fmt: skip
    close = DeviationAction(batch_id="B-1", deviation_id="DEV-1", action="close", text="t",
                            user_id="u", at=AT)  # fmt: skip
    db.add(close)
    db.flush()
    db.add(ClosureSignature(batch_id="B-1", deviation_id="DEV-1", action_id=close.id,
                            user_id="u", printed_name="U", meaning="closed", reason="r",
                            record_hash="ab" * 32, covers="{}", signed_at=AT))  # fmt: skip
    sig = QaSignature(batch_id="B-1", jurisdiction="EU", user_id="u", printed_name="U",
                      meaning="released", reason="r", record_hash="ab" * 32,
                      evaluation_hash="cd" * 32, signed_at=AT)  # fmt: skip
    db.add(sig)
    db.flush()
    db.add(Disposition(batch_id="B-1", jurisdiction="EU", disposition="released",
                       signature_id=sig.id, pending="[]", decided_at=AT))  # fmt: skip
    db.add(DeviationLink(batch_id="B-1", deviation_id="DEV-1", linked_to="DEV-2",
                         reason="same roll", user_id="u", at=AT))  # fmt: skip
    trail.append(db, at=AT, actor="u", action="x", object_type="batch", object_id="B-1")


def test_each_logged_row_gets_one_leaf_without_patient_identifiers(engine: Engine) -> None:
    migrate(engine)
    with Session(engine) as db:
        add_records(db)
        db.commit()
        leaves = all_leaves(db)
        kinds = sorted(e.kind.value for e in leaves)
        assert kinds == sorted(["licence", "licence", "custody", "deviation-closure",
                                "deviation-closure", "deviation-link", "qa-signature",
                                "disposition", "audit"])  # fmt: skip
        raw = b"".join(store.leaves(db, 0, len(leaves)))
        assert COI.encode() not in raw and b"PAT001" not in raw  # the COI only as its SHA-256
        (cust,) = [e for e in leaves if e.kind is EntryKind.CUSTODY]
        assert cust.fields["coi"] == records.coi_digest(COI)
        assert check(db) == []
        # A licence's change is logged too, and verify compares the row with its latest leaf.
        lic = db.get(Licence, "L-1")
        assert lic is not None
        lic.alerted = "expiring"
        db.commit()
        assert [e.kind for e in all_leaves(db)].count(EntryKind.LICENCE) == 3
        assert check(db) == []
        # Behind the log's back: a licence edited, a disposition added.
        db.execute(text("UPDATE licences SET holder = 'Other' WHERE licence_id = 'L-1'"))
        db.execute(insert(DeviationLink).values(batch_id="B-1", deviation_id="DEV-1",
                   linked_to="DEV-9", reason="r", user_id="u", at=AT))  # fmt: skip
        db.execute(insert(Disposition).values(batch_id="B-2", jurisdiction="EU",
                   disposition="released", signature_id=1, pending="[]", decided_at=AT))  # fmt: skip
        db.commit()
        found = check(db)
        assert len(found) == 3, found
        assert any('licences ["L-1"]: content differs from its leaf' in f for f in found)
        assert any("deviation_links [2]: is in the database but not in the log" in f for f in found)
        assert any("dispositions [2]: is in the database but not in the log" in f for f in found)


def test_a_database_from_before_the_log_is_logged_by_the_migration(db_url: str) -> None:
    upgrade(db_url, "0008")
    engine = make_engine(db_url)
    try:
        prev = trail.GENESIS
        with engine.begin() as c:
            c.execute(insert(Site).values(site_id="S", name="Site"))
            c.execute(insert(Unit).values(unit_id="U-1", site_id="S", status="active",
                      head_seq=2, head_hash="ef" * 32, checkpoint_seq=2, enrolled_at=AT))  # fmt: skip
            for seq in (1, 2):
                c.execute(insert(EventRow).values(unit_id="U-1", seq=seq, hash="ef" * 32 if
                          seq == 2 else "01" * 32, batch_id="B-1", kind="k",
                          recorded_at="2026", line=b"{}"))  # fmt: skip
            for seq in (1, 2, 3):
                e = AuditEntry(seq=seq, at="2026-11-30T12:00:00.000000Z", actor="u", action="a",
                               object_type="t", object_id=str(seq), prev_hash=prev)  # fmt: skip
                e.hash = trail.entry_hash(prev, e)
                c.execute(insert(AuditEntry).values(
                    seq=seq, at=e.at, actor="u", action="a", object_type="t",
                    object_id=str(seq), prev_hash=prev, hash=e.hash))  # fmt: skip
                prev = e.hash
            c.execute(text("UPDATE audit_head SET seq = 3, hash = :h"), {"h": prev})
            c.execute(insert(CustodyEventRow).values(coi=COI, batch_id="B-1", kind="received",
                      place="p", payload="{}", recorded_by="u", at=AT))  # fmt: skip
        migrate(engine)
        with Session(engine) as db:
            kinds = [e.kind.value for e in all_leaves(db)]
            assert kinds == ["audit", "audit", "audit", "custody", "segment"]
            assert check(db) == []
    finally:
        engine.dispose()


@pytest.mark.postgres
def test_concurrent_writers_get_distinct_consecutive_indexes(pg: object) -> None:
    """Six writers on PostgreSQL, each transaction an audit entry (its leaf written by the
    listener at the flush) and a segment's leaf (as ingest writes it): the leaves are queued
    with their records and sequenced after each commit; every one lands once, and each writer
    finds its segment's leaf."""
    url = pg.create_db("log_concurrent")  # type: ignore[attr-defined]
    engine = make_engine(url)
    migrate(engine)
    got: list[int] = []
    errors: list[BaseException] = []
    lock = threading.Lock()

    def writer(w: int) -> None:
        try:
            for i in range(15):
                with Session(engine) as db:
                    trail.append(db, at=AT, actor=f"w{w}", action="a", object_type="t",
                                 object_id=str(i))  # fmt: skip
                    p = store.append(db, records.segment_entry(f"U{w}", i + 1, i + 1, "ab" * 32))
                    assert isinstance(p, store.Pending)  # queued: no log lock held here
                    db.commit()  # ... and sequenced right after
                    idx = store.locate(db, p)
                assert idx is not None
                with lock:
                    got.append(idx)
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert not errors, errors
        assert len(got) == len(set(got)) == 90
        with Session(engine) as db:
            size = store.head(db).size
            assert size == 180 and store.queued(db) == []
            rep = verify_log(db, KEY.verifier)
            # the tree, the head and every node agree; every audit entry has its leaf, once
            assert [f for f in rep.findings if f.part in ("tree", "audit")] == []
            assert rep.checked["audit"] == 90
            leaves = all_leaves(db)
        segments = [e for e in leaves if e.kind is EntryKind.SEGMENT]
        assert len(segments) == len({tuple(e.fields.items()) for e in segments}) == 90
    finally:
        engine.dispose()


def test_the_tlog_bench_still_runs(capsys: pytest.CaptureFixture[str]) -> None:
    path = Path(__file__).resolve().parents[2] / "bench" / "tlog.py"
    spec = importlib.util.spec_from_file_location("bench_tlog_small", path)
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    mod.N, mod.GROUP = 32_768, 256  # the same code on a small tree (its proofs need > 24,690)
    mod.main()
    out = capsys.readouterr().out
    assert "tlog append, groups of 1,000 leaf hashes" in out and "1e9 leaves" in out


def test_log_verify_on_the_command_line(tmp_path: Path) -> None:
    """What the host's administrator runs: clean after the host's own commands write (they log
    through the same listener), and a checkpoint from outside that is not the log's is named."""
    from click.testing import CliRunner

    from server.cli import server as server_cli

    data = ["--data-dir", str(tmp_path / "srv")]
    run = CliRunner().invoke
    assert run(server_cli, ["init", *data]).exit_code == 0
    r = run(server_cli, ["add-person", *data, "--user", "admin.ann", "--name", "Ann Admin",
                         "--role", "admin@*", "--reason", "first administrator"],
            env={"CTGTP_NEW_PASSWORD": "Blue-Harbour-2026!"})  # fmt: skip
    assert r.exit_code == 0, r.output
    r = run(server_cli, ["log", "verify", *data])
    assert r.exit_code == 0, r.output
    assert "log verified: 2 leaves" in r.output and "checked 1 nodes, 0 checkpoints, 2 audit" in r.output
    junk = tmp_path / "junk.checkpoint"
    junk.write_text("not a checkpoint\n")
    r = run(server_cli, ["log", "verify", *data, "--trusted", str(junk)])
    assert r.exit_code == 1
    assert f"FINDING checkpoint: trusted checkpoint {junk}:" in r.output, r.output
    assert "log does NOT verify: 1 finding(s)" in r.output
    # witnessing: reported as unwitnessed, a finding only when required of a configured quorum
    assert "unwitnessed" in run(server_cli, ["log", "verify", *data]).output
    w = UnitSigner.generate("W1")
    vkey = CosignatureVerifier("witness.test/w1", w.public).vkey()
    env = {"CTGTP_SERVER_LOG_WITNESSES": json.dumps([vkey]), "CTGTP_SERVER_LOG_WITNESS_QUORUM": "1"}
    r = run(server_cli, ["log", "verify", *data], env=env)
    assert r.exit_code == 0 and "unwitnessed" in r.output, r.output
    r = run(server_cli, ["log", "verify", *data, "--require-witnessed"], env=env)
    assert r.exit_code == 1 and "FINDING" in r.output, r.output
