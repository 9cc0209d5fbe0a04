"""``ctgtp server log verify``: recompute the log from the database and name every mismatch.

Two questions, both answered from the tables alone:

* **Is the log the tree it signed?**  Every leaf's hash is recomputed from its bytes and the tree
  rebuilt; the head (size, frontier), every stored interior node (what tiles and proofs are read
  from) and every stored checkpoint (the log's signature, origin, size, root) must agree with it.
  Checkpoints held elsewhere (``--trusted``: a witness's state, a receipt's checkpoint) are
  compared too: a smaller tree than one already published, or another root for a published
  size, is a rewritten log.
* **Does the database still hold what the log says?**  The audit trail is walked (every
  stream's chain and head, :func:`server.audit.trail.check`) and each entry compared with its
  ``audit`` leaf; each ``segment`` leaf's events must still be stored, ending at its head hash;
  each logged row's ``content_hash`` is recomputed (:func:`server.log.records.content_hash`),
  and every logged row must have a leaf.  Leaves still queued for the sequencer
  (``tlog_pending``, PostgreSQL) count as logged for these checks: their records are committed
  and their leaves will be in the tree (``checked["queued"]`` says how many).

A rogue administrator who edits a record and everything that chains it (the audit trail) still
cannot make its leaf agree without rewriting the log, and a rewritten log contradicts every
checkpoint already handed out.

Witnesses: every stored cosignature must verify over its checkpoint under the configured
witness's key (``witnesses``); the latest checkpoint is reported *unwitnessed* when fewer than
``quorum`` configured witnesses cosigned it, a finding only with ``require_witnessed``
(witnessing lags the log).

Over 400 lines: one check per stored structure (head, nodes, checkpoints, cosignatures, audit
leaves, segments, logged rows), each short, all feeding one report; they are kept together so
that what the verifier covers can be read in one place.
"""

from __future__ import annotations

import base64
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ebr_core.tlog.checkpoint import Checkpoint, open_checkpoint
from ebr_core.tlog.cosignature import CosignatureVerifier
from ebr_core.tlog.entries import EntryKind, LogEntry
from ebr_core.tlog.errors import TlogError
from ebr_core.tlog.merkle import HASH_SIZE, MerkleTree, leaf_hash
from ebr_core.tlog.note import Ed25519NoteVerifier, SignedNote
from server.audit import trail
from server.db import EventRow
from server.log.records import BY_TABLE, LOGGED, Logged, content_hash, hex64
from server.log.store import queued, snapshot
from server.log.tables import LogCheckpoint, LogCosignature, LogHead, LogLeaf, LogNode


@dataclass(frozen=True)
class Finding:
    """One mismatch: what part (``tree``, ``checkpoint``, ``audit``, ``segment``, ``row``),
    which leaf and which record if any, and what differs."""

    part: str
    detail: str
    leaf: int | None = None
    record: str | None = None

    def line(self) -> str:
        where = " ".join(
            x for x in (
                f"leaf {self.leaf}" if self.leaf is not None else "",
                self.record or "",
            ) if x
        )  # fmt: skip
        return f"{self.part}: {where + ': ' if where else ''}{self.detail}"


@dataclass
class Report:
    leaves: int = 0
    root: str = ""  # base64, of the tree rebuilt from the leaves
    checkpoint_size: int | None = None  # the latest stored checkpoint's
    checked: dict[str, int] = field(default_factory=dict)
    findings: list[Finding] = field(default_factory=list)
    quorum: int = 0  # witness cosignatures the latest checkpoint needs to be witnessed
    witnessed_by: list[str] = field(default_factory=list)  # of the latest checkpoint, verified

    @property
    def ok(self) -> bool:
        return not self.findings

    @property
    def witnessed(self) -> bool:
        return self.checkpoint_size is not None and len(self.witnessed_by) >= self.quorum

    def witness_line(self) -> str:
        """``witnessed by N (...)`` or ``unwitnessed: K of the Q ...`` for the latest checkpoint."""
        if self.checkpoint_size is None:
            return "no checkpoint signed yet: unwitnessed"
        size = f"latest checkpoint size {self.checkpoint_size}"
        names = ", ".join(self.witnessed_by)
        if not self.witnessed:
            return (
                f"{size} unwitnessed: {len(self.witnessed_by)} of the {self.quorum} witness "
                f"cosignatures required" + (f" ({names})" if names else "")
            )
        return f"{size} witnessed by {len(self.witnessed_by)}" + (f" ({names})" if names else "")

    def add(
        self, part: str, detail: str, leaf: int | None = None, record: str | None = None
    ) -> None:
        self.findings.append(Finding(part, detail, leaf, record))

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "leaves": self.leaves,
            "root": self.root,
            "checkpoint_size": self.checkpoint_size,
            "checked": self.checked,
            "findings": [asdict(f) for f in self.findings],
            "witnessed": self.witnessed,
            "witnessed_by": self.witnessed_by,
            "quorum": self.quorum,
        }


def _leaves(db: Session, batch: int = 5000) -> Iterator[tuple[int, bytes, bytes]]:
    last = -1
    while True:
        rows = db.execute(
            select(LogLeaf.idx, LogLeaf.leaf, LogLeaf.leaf_hash)
            .where(LogLeaf.idx > last)
            .order_by(LogLeaf.idx)
            .limit(batch)
        ).all()
        if not rows:
            return
        for idx, leaf, lh in rows:
            yield int(idx), bytes(leaf), bytes(lh)
        last = int(rows[-1][0])


def audit_anchors(db: Session) -> trail.Anchors:
    """The log's ``audit`` leaves, in the tree and queued (index None), by entry id: what
    ``ctgtp server audit verify`` compares the trail with."""
    marker = b'"kind":"audit"'

    def fields() -> Iterator[tuple[int | None, dict[str, str | int]]]:
        for idx, leaf, _ in _leaves(db):
            if marker in leaf:
                try:
                    e = LogEntry.parse(leaf)
                except TlogError:
                    continue  # not an entry: `server log verify` names it
                if e.kind is EntryKind.AUDIT:
                    yield idx, dict(e.fields)
        for leaf in queued(db):
            if marker in leaf:
                try:
                    e = LogEntry.parse(leaf)
                except TlogError:
                    continue
                if e.kind is EntryKind.AUDIT:
                    yield None, dict(e.fields)

    return trail.anchors_of(fields())


def verify_log(
    db: Session,
    log: Ed25519NoteVerifier,
    trusted: Sequence[tuple[str, bytes]] = (),
    witnesses: Sequence[CosignatureVerifier] = (),
    quorum: int = 0,
    require_witnessed: bool = False,
) -> Report:
    """Check the log and the records it binds; ``trusted``: (name, signed checkpoint) pairs
    held outside the database; ``witnesses``, ``quorum``: the configured witnesses and how many
    must cosign the latest checkpoint (a finding only with ``require_witnessed``)."""
    rep = Report(quorum=quorum)
    snapshot(db)
    tree = MerkleTree()
    entries: list[tuple[int | None, LogEntry]] = []
    expected = 0
    for idx, leaf, stored_hash in _leaves(db):
        if idx != expected:
            rep.add("tree", f"leaves {expected}-{idx - 1} are missing (deleted from the log)", idx)
            expected = idx
        lh = leaf_hash(leaf)
        if stored_hash != lh:
            rep.add("tree", "stored leaf hash does not match the leaf's bytes", idx)
        try:
            entries.append((idx, LogEntry.parse(leaf)))
        except TlogError as e:
            rep.add("tree", f"not a log entry: {e}", idx)
        tree.append(lh)
        expected += 1
    n = tree.size()
    rep.leaves, rep.root = n, base64.b64encode(tree.root()).decode("ascii")
    waiting = queued(db)
    for leaf in waiting:
        try:
            entries.append((None, LogEntry.parse(leaf)))
        except TlogError as e:
            rep.add("tree", f"a leaf queued for the log is not a log entry: {e}")
    _check_head(db, tree, rep)
    _check_nodes(db, tree, rep)
    _check_checkpoints(db, log, tree, trusted, rep)
    _check_audit(db, entries, rep)
    _check_segments(db, entries, rep)
    _check_rows(db, entries, rep)
    _check_cosignatures(db, witnesses, rep)
    rep.checked["queued"] = len(waiting)  # leaves of committed records, not yet in the tree
    if require_witnessed and not rep.witnessed:
        rep.add("witness", rep.witness_line())
    return rep


def _check_head(db: Session, tree: MerkleTree, rep: Report) -> None:
    head = db.get(LogHead, 1)
    if head is None:
        rep.add("tree", "the log's head row is gone")
        return
    raw = bytes(head.peaks)
    peaks = tuple(raw[i : i + HASH_SIZE] for i in range(0, len(raw), HASH_SIZE))
    if head.size != tree.size():
        rep.add("tree", f"the head says {head.size} leaves, the table holds {tree.size()}")
    elif peaks != tree.frontier().peaks:
        rep.add("tree", "the head's frontier does not match the leaves (next appends would fork)")


def _check_nodes(db: Session, tree: MerkleTree, rep: Report) -> None:
    n = tree.size()
    counts: dict[int, int] = {}
    bad = 0
    for level, idx, h in db.execute(select(LogNode.level, LogNode.idx, LogNode.hash)):
        counts[level] = counts.get(level, 0) + 1
        if level < 1 or (idx + 1) << level > n:
            rep.add("tree", f"interior node ({level}, {idx}) is beyond a tree of {n} leaves")
        elif tree.node_hash(level, idx) != bytes(h):
            bad += 1
            if bad <= 20:
                rep.add("tree", f"interior node ({level}, {idx}) does not match the leaves "
                        "(tiles and proofs served from it show another tree)")  # fmt: skip
    if bad > 20:
        rep.add("tree", f"{bad - 20} more interior nodes do not match the leaves")
    for level in range(1, n.bit_length()):
        if counts.get(level, 0) < n >> level:
            rep.add("tree", f"level {level} holds {counts.get(level, 0)} interior nodes, "
                    f"a tree of {n} leaves has {n >> level}")  # fmt: skip
    rep.checked["nodes"] = sum(counts.values())


def _compare(cp: Checkpoint, tree: MerkleTree, rep: Report, what: str) -> None:
    n = tree.size()
    if cp.size > n:
        rep.add("checkpoint", f"{what} is of size {cp.size}, the log holds {n} leaves: "
                f"{cp.size - n} were removed (rewound)")  # fmt: skip
    elif tree.root(cp.size) != cp.root:
        signed = base64.b64encode(cp.root).decode()
        now = base64.b64encode(tree.root(cp.size)).decode()
        rep.add("checkpoint", f"{what} (size {cp.size}) has root {signed}; the leaves give "
                f"{now} (the log was rewritten: a fork)")  # fmt: skip


def _check_checkpoints(
    db: Session,
    log: Ed25519NoteVerifier,
    tree: MerkleTree,
    trusted: Sequence[tuple[str, bytes]],
    rep: Report,
) -> None:
    rows = db.scalars(select(LogCheckpoint).order_by(LogCheckpoint.size)).all()
    for row in rows:
        what = f"stored checkpoint {row.size}"
        try:
            cp = open_checkpoint(row.note.encode(), log).checkpoint
        except TlogError as e:
            rep.add("checkpoint", f"{what}: {e}")
            continue
        if cp.origin != log.name:
            rep.add("checkpoint", f"{what} names origin {cp.origin!r}, the log is {log.name!r}")
        if cp.size != row.size:
            rep.add("checkpoint", f"{what} is filed under the wrong size: its note says {cp.size}")
        _compare(cp, tree, rep, what)
    # (leaves appended since the last signature are signed at the next read of the checkpoint)
    rep.checkpoint_size = rows[-1].size if rows else None
    for name, data in trusted:
        what = f"trusted checkpoint {name}"
        try:
            cp = open_checkpoint(data, log).checkpoint
        except TlogError as e:
            rep.add("checkpoint", f"{what}: {e}")
            continue
        if cp.origin != log.name:
            rep.add("checkpoint", f"{what} names origin {cp.origin!r}, the log is {log.name!r}")
            continue
        _compare(cp, tree, rep, what)
    rep.checked["checkpoints"] = len(rows) + len(trusted)


def _check_cosignatures(
    db: Session, witnesses: Sequence[CosignatureVerifier], rep: Report
) -> None:
    """Every stored cosignature verifies over its checkpoint under its configured witness's
    key (one of a witness no longer configured is not counted); the latest's cosigners."""
    known = {(w.name, w.key_id): w for w in witnesses}
    texts: dict[int, str | None] = {}
    latest: set[str] = set()
    n = 0
    for row in db.scalars(select(LogCosignature).order_by(LogCosignature.size)):
        n += 1
        what = f"cosignature by {row.witness_name} of checkpoint {row.size}"
        if row.size not in texts:
            cp = db.get(LogCheckpoint, row.size)
            texts[row.size] = None if cp is None else SignedNote.parse(cp.note.encode()).text
        text = texts[row.size]
        if text is None:
            rep.add("witness", f"{what}: the log holds no checkpoint of that size")
            continue
        try:
            sig = SignedNote.parse((text + "\n" + row.line + "\n").encode()).signatures[0]
        except TlogError as e:
            rep.add("witness", f"{what}: not a cosignature line: {e}")
            continue
        w = known.get((sig.name, sig.key_id))
        if w is None:
            continue
        if sig.name != row.witness_name or not w.verify(text.encode(), sig.signature):
            rep.add("witness", f"{what} does not verify under the witness's key")
        elif row.size == rep.checkpoint_size:
            latest.add(sig.name)
    rep.witnessed_by = sorted(latest)
    rep.checked["cosignatures"] = n


def _check_audit(db: Session, entries: list[tuple[int | None, LogEntry]], rep: Report) -> None:
    anchors = trail.anchors_of((idx, e.fields) for idx, e in entries if e.kind is EntryKind.AUDIT)
    got = trail.check(db, anchors)
    for f in got.findings:
        rep.add("audit", f"stream {f.stream or 'unknown'}: {f.detail}", f.leaf, f.record())
    rep.checked["audit"] = got.entries


def _check_segments(
    db: Session, entries: list[tuple[int | None, LogEntry]], rep: Report
) -> None:
    n = 0
    for idx, e in entries:
        if e.kind is not EntryKind.SEGMENT:
            continue
        n += 1
        f = e.fields
        unit, first, last = str(f["unit_id"]), int(f["first_seq"]), int(f["last_seq"])
        rec = f"unit {unit} events {first}-{last}"
        stored = db.scalar(
            select(func.count()).select_from(EventRow).where(
                EventRow.unit_id == unit, EventRow.seq >= first, EventRow.seq <= last
            )
        )
        if stored != last - first + 1:
            rep.add("segment", f"{last - first + 1 - int(stored or 0)} of its {last - first + 1} "
                    "events are no longer stored", idx, rec)  # fmt: skip
        head = db.get(EventRow, (unit, last))
        if head is None:
            rep.add("segment", f"its last event {last} is gone", idx, rec)
        elif hex64(head.hash) != f["head_hash"]:
            rep.add("segment", f"event {last} has hash {head.hash}, the log holds "
                    f"{f['head_hash']} (replaced)", idx, rec)  # fmt: skip
    rep.checked["segments"] = n


def _field_diffs(e: LogEntry, now: dict[str, str | int]) -> list[str]:
    """The leaf's fields that name the row's columns, where the row now says otherwise."""
    out = []
    for k, v in e.fields.items():
        if k in now and now[k] != v:
            said = f"the log says {v!r}, the row says {now[k]!r}"
            out.append(f"{k}: {'its SHA-256 differs' if k == 'coi' else said}")
    return out


def _check_rows(db: Session, entries: list[tuple[int | None, LogEntry]], rep: Report) -> None:
    latest: dict[tuple[str, str], tuple[int | None, LogEntry]] = {}
    for idx, e in entries:
        table = e.fields.get("table")
        if e.kind in (EntryKind.AUDIT, EntryKind.SEGMENT) or not isinstance(table, str):
            continue
        if table not in BY_TABLE:
            rep.add("row", f"names table {table!r}, which is not logged", idx)
            continue
        latest[(table, str(e.fields.get("key")))] = (idx, e)
    n = 0
    for lg in LOGGED:
        n += _check_table(db, lg, latest, rep)
    order = {id(e): i for i, (_, e) in enumerate(entries)}  # queued leaves come last
    for (table, key), (idx, _) in sorted(latest.items(), key=lambda kv: order[id(kv[1][1])]):
        rep.add("row", "the row is gone (deleted)", idx, f"{table} {key}")
    rep.checked["rows"] = n


def _check_table(
    db: Session,
    lg: Logged,
    latest: dict[tuple[str, str], tuple[int | None, LogEntry]],
    rep: Report,
) -> int:
    t = lg.table
    name = str(t.name)
    n = 0
    for row in db.execute(select(t).order_by(*t.primary_key.columns)).mappings():
        if lg.fields(row) is None:  # not a logged row (a deviation comment)
            got = latest.pop((name, lg.key(row)), None)
            if got is not None:
                rep.add("row", "was logged as a closure but the row no longer is one",
                        got[0], f"{name} {lg.key(row)}")  # fmt: skip
            continue
        n += 1
        key = lg.key(row)
        rec = f"{name} {key}"
        got = latest.pop((name, key), None)
        if got is None:
            rep.add("row", "is in the database but not in the log (added behind its back)",
                    record=rec)  # fmt: skip
            continue
        idx, e = got
        h = content_hash(name, row)
        if e.fields["content_hash"] != h:
            diffs = _field_diffs(e, lg.fields(row) or {})
            rep.add("row", "content differs from its leaf (content_hash "
                    f"{e.fields['content_hash']} logged, {h} now)"
                    + ("; " + "; ".join(diffs) if diffs else ""), idx, rec)  # fmt: skip
    return n
