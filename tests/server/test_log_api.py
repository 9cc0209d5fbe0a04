"""The transparency log through the real server: receipts carry an inclusion proof and a signed
checkpoint, the consistency and inclusion proofs verify, tiles serve the same tree, refusals
name the sizes, and a leaf never outlives the transaction that wrote it."""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from pathlib import Path

import httpx
import pytest
from sqlalchemy.orm import Session

from ebr_core.keys import UnitSigner
from ebr_core.requestsig import verify_receipt
from ebr_core.tlog.checkpoint import open_checkpoint
from ebr_core.tlog.entries import EntryKind, LogEntry
from ebr_core.tlog.merkle import leaf_hash
from ebr_core.tlog.monitor import check_extends
from ebr_core.tlog.note import Ed25519NoteVerifier, SignedNote
from ebr_core.tlog.proof import verify_consistency, verify_inclusion
from ebr_core.tlog.tiles import TileReader
from ebr_core.tlog.tlogproof import TlogProof
from server.audit import trail
from server.db import make_engine
from server.errors import PROBLEM_BASE
from server.log import records, store
from server.log.tables import LogLeaf

from .conftest import Server, make_ledger
from .test_ingest import lines, post_segment


def _vkey(server: Server) -> Ed25519NoteVerifier:
    return Ed25519NoteVerifier.from_vkey(httpx.get(server.url + "/v1/log/vkey").text)


def _b(items: list[str]) -> list[bytes]:
    return [base64.b64decode(x) for x in items]


def test_receipts_prove_each_segment_is_in_the_log(server: Server, tmp_path: Path) -> None:
    log = _vkey(server)
    assert log.name == server.settings.log_origin
    unit = UnitSigner.generate("UNIT-L1")
    server.enrol(unit)
    led = make_ledger(tmp_path / "e.db", unit, groups=2, per_group=5)
    ls = lines(led)
    cps = [i for i, ln in enumerate(ls) if b'"type":"checkpoint"' in ln]
    half = cps[1] + 1  # a segment ends with a checkpoint covering its events
    first = post_segment(server, unit, b"".join(ls[:half])).json()
    second = post_segment(server, unit, b"".join(ls)).json()
    again = post_segment(server, unit, b"".join(ls)).json()
    seen = []
    for rec in (first, second, again):
        assert verify_receipt(server.key, rec), rec  # the log member is signed with the rest
        lg = rec["log"]
        cp = open_checkpoint(lg["checkpoint"].encode(), log).checkpoint
        assert cp.size == lg["tree_size"]
        seen.append(cp)
        if lg["index"] is None:
            continue
        # The segment's leaf, rebuilt from what the unit knows, is leaf `index` of the tree.
        leaf = LogEntry(EntryKind.SEGMENT, {
            "unit_id": "UNIT-L1", "first_seq": rec["head_seq"] - rec["stored"] + 1,
            "last_seq": rec["head_seq"], "head_hash": rec["head_hash"],
        }).to_bytes()  # fmt: skip
        verify_inclusion(lg["index"], cp.size, leaf_hash(leaf), _b(lg["inclusion"]), cp.root)
    assert first["log"]["index"] is not None and second["log"]["index"] > first["log"]["index"]
    # Nothing new: no leaf, no proof, but the latest checkpoint for the unit's consistency check.
    assert again["stored"] == 0 and again["log"]["index"] is None and again["log"]["inclusion"] == []
    assert again["log"]["tree_size"] >= second["log"]["tree_size"]
    # What the unit does at its next sync: a consistency proof from its stored size.
    old, new = seen[0], seen[2]
    r = httpx.get(server.url + "/v1/log/proof/consistency",
                  params={"old": old.size, "new": new.size})  # fmt: skip
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["old"], body["new"]) == (old.size, new.size)
    check_extends(old, new, _b(body["proof"]))
    verify_consistency(old.size, new.size, old.root, new.root, _b(body["proof"]))


def test_proofs_tiles_and_proof_files_agree(server: Server, tmp_path: Path) -> None:
    log = _vkey(server)
    unit = UnitSigner.generate("UNIT-L2")
    server.enrol(unit)
    r = post_segment(server, unit, b"".join(lines(make_ledger(tmp_path / "f.db", unit, 1, 3))))
    assert r.status_code == 200, r.text
    note = httpx.get(server.url + "/v1/log/checkpoint")
    assert note.status_code == 200 and note.headers["content-type"].startswith("text/plain")
    cp = open_checkpoint(note.content, log).checkpoint
    assert cp.size >= 3  # enrolment's audit entry, the segment, its audit entry
    # Same size twice: the same signed note (a new one only when the tree grew).
    assert httpx.get(server.url + "/v1/log/checkpoint").content == note.content

    def fetch(path: str) -> bytes | None:
        r = httpx.get(f"{server.url}/v1/log/{path}")
        return r.content if r.status_code == 200 else None

    reader = TileReader(fetch, cp.size)
    from ebr_core.tlog.merkle import root_hash

    assert root_hash(reader, cp.size) == cp.root
    for i in range(cp.size):
        r = httpx.get(server.url + "/v1/log/proof/inclusion", params={"index": i, "size": cp.size})
        assert r.status_code == 200, r.text
        body = r.json()
        leaf = base64.b64decode(body["leaf"])
        LogEntry.parse(leaf)  # every leaf is a well-formed entry
        assert reader.leaf_hash(i) == leaf_hash(leaf)
        verify_inclusion(i, cp.size, leaf_hash(leaf), _b(body["proof"]), cp.root)
        f = httpx.get(f"{server.url}/v1/log/proof/{i}.tlog-proof")
        assert f.status_code == 200
        TlogProof.parse(f.content).verify(leaf, log)
    kinds = [LogEntry.parse(base64.b64decode(httpx.get(
        server.url + "/v1/log/proof/inclusion", params={"index": i, "size": cp.size}
    ).json()["leaf"])).kind for i in range(cp.size)]  # fmt: skip
    assert EntryKind.SEGMENT in kinds and EntryKind.AUDIT in kinds
    assert SignedNote.parse(note.content).text.startswith(server.settings.log_origin + "\n")


@pytest.mark.parametrize(
    ("route", "params", "words"),
    [
        ("consistency", {"old": 5, "new": 2}, "from size 5 to size 2: needs old <= new"),
        ("consistency", {"old": 1, "new": 10_000}, "from size 1 to size 10000"),
        ("inclusion", {"index": 3, "size": 3}, "leaf 3 in a tree of size 3"),
        ("inclusion", {"index": 0, "size": 10_000}, "leaf 0 in a tree of size 10000"),
    ],
)
def test_proofs_outside_the_tree_are_refused_naming_the_sizes(
    server: Server, route: str, params: dict[str, int], words: str
) -> None:
    r = httpx.get(f"{server.url}/v1/log/proof/{route}", params=params)
    assert r.status_code == 422, r.text
    p = r.json()
    assert p["type"] == PROBLEM_BASE + "log-range" and words in p["detail"], p
    assert r.headers["content-type"] == "application/problem+json"
    for bad in ("tile/0/x01/002", "tile/0/000.p/0", "tile/9/000", "tile/entries/000"):
        r = httpx.get(f"{server.url}/v1/log/{bad}")
        assert r.status_code == 404 and r.json()["type"] == PROBLEM_BASE + "not-found", bad


def test_a_rolled_back_append_leaves_no_leaf(server: Server) -> None:
    """A leaf is written in the caller's transaction (into the tree on SQLite, into the queue
    for the sequencer on PostgreSQL): an audit entry flushed and then rolled back leaves no
    leaf, the next one commits with its leaf (written by the listener), sequenced at once."""
    engine = make_engine(server.settings.database_url)
    at = datetime.now(UTC)
    try:
        with Session(engine) as db:
            before = store.head(db).size
            e = trail.append(db, at=at, actor="t", action="x", object_type="t", object_id="1")
            trail.seal(db)  # chained now, as a commit would
            db.flush()  # the listener writes the entry's leaf
            leaf = records.audit_entry(e.seq, e.hash).to_bytes()
            queued = store.queues(db)
            if queued:
                assert store.head(db).size == before and store.queued(db) == [leaf]
            else:
                assert store.head(db).size == before + 1
                assert store.leaves(db, before, before + 1) == [leaf]
            p = store.append(db, records.segment_entry("U", 1, 2, "ab" * 32))
            assert isinstance(p, store.Pending) == queued
            assert len(store.queued(db)) == (2 if queued else 0)
            assert store.head(db).size == before + (0 if queued else 2)
            db.rollback()
        with Session(engine) as db:
            assert store.head(db).size == before
            assert len(store.leaves(db, 0, before)) == before
            assert db.query(LogLeaf).count() == before  # no orphan leaf past the head
            assert store.queued(db) == []
            e = trail.append(db, at=at, actor="t", action="y", object_type="t", object_id="2")
            db.commit()
            # the index the rolled-back entry had is the next one's
            assert store.head(db).size == before + 1
            assert store.leaves(db, before, before + 1) == [
                records.audit_entry(e.seq, e.hash).to_bytes()
            ]
    finally:
        engine.dispose()
