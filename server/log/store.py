"""Appending to the log, reading it as a :class:`~ebr_core.tlog.merkle.HashStore`, and signing
its checkpoints.

An append runs in the caller's transaction on the caller's connection: the leaf commits with
the record it logs or not at all.  Appends are serialised by the ``tlog_head`` row (a row lock
on PostgreSQL, the write lock on SQLite), taken after ``audit_head`` on PostgreSQL so that every
writer takes the two in one order (an audit entry is itself logged when its row is flushed).
The head holds the frontier, so an append costs O(log n) whatever the size of the log; each
append writes its leaf and the complete subtrees it made, from which every proof and every tile
is a few indexed reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TypeVar

from sqlalchemy import Connection, func, insert, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session

from ebr_core.keys import PublicKey, UnitSigner
from ebr_core.tlog.checkpoint import Checkpoint, sign_checkpoint
from ebr_core.tlog.entries import LogEntry
from ebr_core.tlog.errors import TreeError
from ebr_core.tlog.merkle import HASH_SIZE, Frontier, HashStore, leaf_hash
from ebr_core.tlog.note import (
    Ed25519NoteSigner,
    Ed25519NoteVerifier,
    NoteSignature,
    check_key_name,
)
from ebr_core.tlog.tiles import TILE_HEIGHT, Tile
from server.log.tables import LogCheckpoint, LogCosignature, LogHead, LogLeaf, LogNode

T = TypeVar("T")


def _conn(db: Session | Connection) -> Connection:
    return db.connection() if isinstance(db, Session) else db


def _peaks(raw: bytes) -> list[bytes]:
    return [raw[i : i + HASH_SIZE] for i in range(0, len(raw), HASH_SIZE)]


def append_leaves(db: Session | Connection, leaves: Sequence[bytes]) -> list[int]:
    """Append ``leaves`` (leaf bytes) in the caller's transaction; their indexes."""
    if not leaves:
        return []
    conn = _conn(db)
    if conn.dialect.name == "postgresql":
        # Lock order: audit_head, then tlog_head (audit.append takes audit_head before the
        # audit entry's leaf is appended at the flush); never the other way round.
        conn.execute(text("SELECT 1 FROM audit_head WHERE id = 1 FOR UPDATE"))
    # An UPDATE takes the lock at once (SQLite's write lock; PostgreSQL's row lock) and reads
    # the head as the last committed writer left it.
    size, raw = conn.execute(
        text("UPDATE tlog_head SET size = size WHERE id = 1 RETURNING size, peaks")
    ).one()
    frontier = Frontier(int(size), _peaks(bytes(raw)))
    leaf_rows, node_rows, first = [], [], int(size)
    for leaf in leaves:
        lh = leaf_hash(leaf)
        for level, idx, h in frontier.append(lh):
            if level == 0:
                leaf_rows.append({"idx": idx, "leaf": leaf, "leaf_hash": h})
            else:
                node_rows.append({"level": level, "idx": idx, "hash": h})
    conn.execute(insert(LogLeaf), leaf_rows)
    if node_rows:
        conn.execute(insert(LogNode), node_rows)
    conn.execute(
        text("UPDATE tlog_head SET size = :n, peaks = :p WHERE id = 1"),
        {"n": frontier.size, "p": b"".join(frontier.peaks)},
    )
    return list(range(first, first + len(leaves)))


def append(db: Session | Connection, entry: LogEntry) -> int:
    """Append one entry in the caller's transaction; its index in the log."""
    return append_leaves(db, [entry.to_bytes()])[0]


@dataclass(frozen=True)
class Head:
    size: int
    root: bytes


def head(db: Session | Connection) -> Head:
    size, raw = _conn(db).execute(select(LogHead.size, LogHead.peaks).where(LogHead.id == 1)).one()
    return Head(int(size), Frontier(int(size), _peaks(bytes(raw))).root())


class DbStore:
    """A :class:`~ebr_core.tlog.merkle.HashStore` over the tables, for a tree of ``size``
    (at most the log's size): one indexed read per subtree, so a proof is O(log n) reads."""

    def __init__(self, db: Session | Connection, size: int) -> None:
        self._conn = _conn(db)
        self._size = size
        self._cache: dict[tuple[int, int], bytes] = {}

    def size(self) -> int:
        return self._size

    def prefetch(self, nodes: Sequence[tuple[int, int]]) -> None:
        """Read ``nodes`` in two queries (leaf hashes, interior nodes) into the cache."""
        leaves_ = sorted({i for lv, i in nodes if lv == 0})
        inner = sorted({(lv, i) for lv, i in nodes if lv > 0})
        if leaves_:
            q = select(LogLeaf.idx, LogLeaf.leaf_hash).where(LogLeaf.idx.in_(leaves_))
            for i, h in self._conn.execute(q):
                self._cache[(0, int(i))] = bytes(h)
        if inner:
            q2 = select(LogNode.level, LogNode.idx, LogNode.hash).where(
                tuple_(LogNode.level, LogNode.idx).in_(inner)
            )
            for lv, i, h in self._conn.execute(q2):
                self._cache[(int(lv), int(i))] = bytes(h)

    def node_hash(self, level: int, index: int) -> bytes:
        if level < 0 or index < 0 or (index + 1) << level > self._size:
            raise TreeError(
                f"node ({level}, {index}) is not a complete subtree of a tree of size {self._size}"
            )
        got = self._cache.get((level, index))
        if got is not None:
            return got
        if level == 0:
            q = select(LogLeaf.leaf_hash).where(LogLeaf.idx == index)
        else:
            q = select(LogNode.hash).where(LogNode.level == level, LogNode.idx == index)
        h = self._conn.execute(q).scalar_one_or_none()
        if h is None:
            raise TreeError(f"the log's tables have no node ({level}, {index})")
        return bytes(h)

    def leaf(self, index: int) -> bytes:
        if not 0 <= index < self._size:
            raise TreeError(f"leaf {index} is not in a tree of size {self._size}")
        got = self._conn.execute(select(LogLeaf.leaf).where(LogLeaf.idx == index)).scalar()
        if got is None:
            raise TreeError(f"the log's tables have no leaf {index}")
        return bytes(got)


class _Asked:
    """A store that answers any node with zeros and remembers which were asked: a proof's shape
    (which nodes it reads) does not depend on the hashes."""

    def __init__(self, size: int) -> None:
        self._size = size
        self.asked: list[tuple[int, int]] = []

    def size(self) -> int:
        return self._size

    def node_hash(self, level: int, index: int) -> bytes:
        self.asked.append((level, index))
        return bytes(HASH_SIZE)


def with_store(db: Session | Connection, size: int, build: Callable[[HashStore], T]) -> T:
    """``build(store)`` over the tables for a tree of ``size``, its nodes read in two queries:
    ``build`` runs once on a recording store to learn which nodes it reads."""
    asked = _Asked(size)
    build(asked)
    s = DbStore(db, size)
    s.prefetch(asked.asked)
    return build(s)


def tile_data(db: Session | Connection, tile: Tile, size: int) -> bytes | None:
    """A tile's bytes (hashes, or an entry bundle's entries without their length prefixes
    joined by the caller) for a tree of ``size``; None if the tree does not have it."""
    conn = _conn(db)
    level = 0 if tile.level is None else TILE_HEIGHT * tile.level
    have = size >> level
    start = tile.index << TILE_HEIGHT
    if start + tile.width > have:
        return None
    end = start + tile.width
    if tile.level is None:
        raise ValueError("entry bundles: use tile_entries")
    if level == 0:
        q = (
            select(LogLeaf.leaf_hash)
            .where(LogLeaf.idx >= start, LogLeaf.idx < end)
            .order_by(LogLeaf.idx)
        )
    else:
        q = (
            select(LogNode.hash)
            .where(LogNode.level == level, LogNode.idx >= start, LogNode.idx < end)
            .order_by(LogNode.idx)
        )
    hashes = [bytes(h) for h in conn.execute(q).scalars()]
    if len(hashes) != tile.width:
        raise TreeError(f"the log's tables hold {len(hashes)} hashes of {tile.path()}")
    return b"".join(hashes)


def leaves(db: Session | Connection, start: int, end: int) -> list[bytes]:
    rows = _conn(db).execute(
        select(LogLeaf.leaf).where(LogLeaf.idx >= start, LogLeaf.idx < end).order_by(LogLeaf.idx)
    )
    out = [bytes(r) for r in rows.scalars()]
    if len(out) != end - start:
        raise TreeError(f"the log's tables hold {len(out)} of leaves {start}-{end - 1}")
    return out


# -- checkpoints --------------------------------------------------------------------------------


class LogKey:
    """The log's note key: the server's Ed25519 key under the log's origin as key name."""

    def __init__(self, origin: str, signer: UnitSigner) -> None:
        check_key_name(origin)
        self.origin = origin
        self.signer = Ed25519NoteSigner(origin, signer)

    @property
    def verifier(self) -> Ed25519NoteVerifier:
        return self.signer.verifier


def log_verifier(origin: str, public: PublicKey) -> Ed25519NoteVerifier:
    return Ed25519NoteVerifier(origin, public)


def latest_checkpoint(db: Session) -> LogCheckpoint | None:
    return db.scalars(select(LogCheckpoint).order_by(LogCheckpoint.size.desc()).limit(1)).first()


def checkpoint_of(db: Session, size: int) -> LogCheckpoint | None:
    """The stored checkpoint of ``size``, if the server signed one."""
    return db.get(LogCheckpoint, size)


def checkpoint_in_transaction(db: Session, key: LogKey, at: datetime) -> LogCheckpoint:
    """The checkpoint of the tree as the caller's transaction sees it, signed and added to that
    transaction (it commits with the leaves it covers, in the same commit).  For a caller that
    appended: it holds the head's lock, so no other writer can grow the tree meanwhile.  A row
    already stored for this size is returned as it is."""
    h = head(db)
    got = db.get(LogCheckpoint, h.size)
    if got is not None:
        return got
    note = sign_checkpoint(Checkpoint(key.origin, h.size, h.root), key.signer)
    row = LogCheckpoint(size=h.size, note=note.to_bytes().decode(), signed_at=at)
    db.add(row)
    return row


def current_checkpoint(db: Session, key: LogKey, at: datetime) -> LogCheckpoint:
    """The latest checkpoint, signing (and committing) one for the current size first if the
    tree grew since the last one stored.  Ed25519 signatures are deterministic: two requests
    signing the same size at once make the same note, and the second insert is dropped."""
    for attempt in range(5):
        h = head(db)
        last = latest_checkpoint(db)
        if last is not None and last.size >= h.size:
            return last
        note = sign_checkpoint(Checkpoint(key.origin, h.size, h.root), key.signer)
        values = {"size": h.size, "note": note.to_bytes().decode(), "signed_at": at}
        insert = pg_insert if db.get_bind().dialect.name == "postgresql" else sqlite_insert
        try:
            # another worker signing the same size at once made the same note: keep its row
            db.execute(insert(LogCheckpoint).values(**values).on_conflict_do_nothing())
            db.commit()
        except OperationalError:
            # SQLite's snapshot moved on (a writer committed meanwhile): again
            db.rollback()
            if attempt == 4:
                raise
            time.sleep(0.01 * (attempt + 1))
            continue
        row = db.get(LogCheckpoint, h.size, populate_existing=True)
        assert row is not None
        return row
    raise AssertionError("unreachable")


# -- witness cosignatures -------------------------------------------------------------------------


def cosignature_lines(db: Session, size: int) -> list[str]:
    """The cosignature lines collected for the checkpoint of ``size``: one per witness (the one
    received last), by witness name; each ends in a newline."""
    rows = db.execute(
        select(LogCosignature.witness_name, LogCosignature.line)
        .where(LogCosignature.size == size)
        .order_by(LogCosignature.witness_name, LogCosignature.received_at)
    ).all()
    last: dict[str, str] = {}
    for name, line in rows:
        last[str(name)] = str(line)
    return [line + "\n" for line in last.values()]


def served_note(db: Session, cp: LogCheckpoint) -> str:
    """The checkpoint ``cp`` as served: the log's signed note and the witnesses' cosignature
    lines collected for it (none yet for a new checkpoint)."""
    return cp.note + "".join(cosignature_lines(db, cp.size))


def store_cosignatures(
    db: Session, size: int, sigs: Sequence[NoteSignature], at: datetime
) -> list[str]:
    """Keep verified cosignatures of the checkpoint of ``size`` (committed here); the names of
    the witnesses whose line was new.  The same line twice is kept once."""
    new: list[str] = []
    for sig in sigs:
        line = sig.line().rstrip("\n")
        got = db.get(LogCosignature, (size, sig.name, line))
        if got is None:
            db.add(LogCosignature(size=size, witness_name=sig.name, line=line, received_at=at))
            new.append(sig.name)
    try:
        db.commit()
    except IntegrityError:
        # the same line pushed twice at once: the other request kept it
        db.rollback()
        return store_cosignatures(db, size, sigs, at)
    return new


@dataclass(frozen=True)
class Witnessed:
    """The latest checkpoint size cosigned by at least ``quorum`` of the configured witnesses
    (None if none is), who cosigned it, and the latest checkpoint's size and cosigners."""

    quorum: int
    size: int | None
    witnesses: list[str]
    latest_size: int | None
    latest_witnesses: list[str]


def witnessed(db: Session, names: Sequence[str], quorum: int) -> Witnessed:
    """Which checkpoint is witnessed: only the configured witnesses ``names`` count."""

    def cosigners(size: int) -> list[str]:
        q = (
            select(LogCosignature.witness_name)
            .where(LogCosignature.size == size, LogCosignature.witness_name.in_(names))
            .distinct()
            .order_by(LogCosignature.witness_name)
        )
        return [str(n) for n in db.scalars(q)]

    last = latest_checkpoint(db)
    latest_size = None if last is None else last.size
    if latest_size is None:
        return Witnessed(quorum, None, [], None, [])
    if quorum <= 0:
        size: int | None = latest_size
    else:
        size = db.scalar(
            select(func.max(LogCosignature.size)).where(
                LogCosignature.size.in_(
                    select(LogCosignature.size)
                    .where(LogCosignature.witness_name.in_(names))
                    .group_by(LogCosignature.size)
                    .having(func.count(func.distinct(LogCosignature.witness_name)) >= quorum)
                )
            )
        )
    return Witnessed(
        quorum,
        None if size is None else int(size),
        [] if size is None else cosigners(int(size)),
        latest_size,
        cosigners(latest_size),
    )
