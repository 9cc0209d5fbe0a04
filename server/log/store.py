"""Appending to the log, reading it as a :class:`~ebr_core.tlog.merkle.HashStore`, and signing
its checkpoints.

**Writers never hold the log's head** (issue 25).  A record's leaf is written in the record's
own transaction, so it commits with the record or not at all: :func:`enqueue` (and
:func:`append`).  On PostgreSQL it goes to ``tlog_pending``, which takes no lock anyone else
waits for; :func:`sequence` then moves every queued leaf into the tree in its own short
transaction under the ``tlog_head`` row lock: one lock for all the leaves committed meanwhile
(group commit), held for a few inserts and one commit, never through a writer's transaction.
The session that queued leaves has it run right after its commit (:func:`install_sequencing`),
so a request's leaves are in the tree before it answers (a segment's receipt carries its
proof): by itself, or, when a sequencing is already under way in the process, by the next
one, which it waits for (:class:`GroupCommit`).  Each API worker runs it at start and every
second too (:class:`Sequencer`), so a leaf whose writer died between its commit and the
sequencing is integrated by the next one.  On SQLite every writer holds the database's one
write lock anyway: the leaves go straight into the tree in the writer's transaction.

The head holds the frontier, so integrating costs O(log n) whatever the size of the log; each
integration writes its leaves and the complete subtrees they made, from which every proof and
every tile is a few indexed reads.

Over 400 lines because the tree's one write path (queue, sequencer, frontier) and its reads
(proofs, tiles, checkpoints, cosignatures) share the tables' invariants.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TypeVar

from sqlalchemy import Connection, Engine, event, func, insert, select, text, tuple_
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.exc import IntegrityError, OperationalError, SQLAlchemyError
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
from server.log.tables import (
    LogCheckpoint,
    LogCosignature,
    LogHead,
    LogLeaf,
    LogNode,
    LogPending,
)

T = TypeVar("T")
_log = logging.getLogger("ctgtp.server.log")


def _conn(db: Session | Connection) -> Connection:
    return db.connection() if isinstance(db, Session) else db


def _peaks(raw: bytes) -> list[bytes]:
    return [raw[i : i + HASH_SIZE] for i in range(0, len(raw), HASH_SIZE)]


def _lock_head(conn: Connection) -> tuple[int, bytes]:
    """The head (size, peaks), locked until the caller's transaction ends: an UPDATE takes the
    lock at once (SQLite's write lock, PostgreSQL's row lock) and reads the head as the last
    committed writer left it."""
    size, raw = conn.execute(
        text("UPDATE tlog_head SET size = size WHERE id = 1 RETURNING size, peaks")
    ).one()
    return int(size), bytes(raw)


@dataclass
class Integrated:
    """What a sequencing on this connection wrote, once committed: each leaf's index and every
    node hash it wrote or grew from (the old peaks), so the receipts served right after it
    need not read them back.  The tree is append-only: a committed node never changes."""

    leaves: dict[bytes, int] = field(default_factory=dict)
    nodes: dict[tuple[int, int], bytes] = field(default_factory=dict)

    def merge(self, other: Integrated) -> None:
        for leaf, idx in other.leaves.items():
            self.leaves.setdefault(leaf, idx)
        self.nodes.update(other.nodes)


_KNOWN = "tlog_integrated"  # Connection.info: the Integrated of the sequencing just committed


def _known(db: Session | Connection) -> Integrated | None:
    got = _conn(db).info.get(_KNOWN)
    return got if isinstance(got, Integrated) else None


def _grow(
    conn: Connection,
    size: int,
    raw: bytes,
    leaves: Sequence[bytes],
    wrote: Integrated | None = None,
) -> Frontier:
    """Append ``leaves`` to the tree whose locked head is (``size``, ``raw``); the new
    frontier (their indexes: ``size`` on).  ``wrote``: filled with what it wrote."""
    frontier = Frontier(size, _peaks(raw))
    if wrote is not None:  # the old peaks: the left siblings of the new leaves' proofs
        start = 0
        for level, peak in zip(
            (lv for lv in range(size.bit_length() - 1, -1, -1) if size >> lv & 1),
            frontier.peaks,
            strict=True,
        ):
            wrote.nodes[(level, start >> level)] = peak
            start += 1 << level
    leaf_rows, node_rows = [], []
    for leaf in leaves:
        lh = leaf_hash(leaf)
        for level, idx, h in frontier.append(lh):
            if level == 0:
                leaf_rows.append({"idx": idx, "leaf": leaf, "leaf_hash": h})
                if wrote is not None:
                    wrote.leaves.setdefault(leaf, idx)
            else:
                node_rows.append({"level": level, "idx": idx, "hash": h})
            if wrote is not None:
                wrote.nodes[(level, idx)] = h
    conn.execute(insert(LogLeaf), leaf_rows)
    if node_rows:
        conn.execute(insert(LogNode), node_rows)
    conn.execute(
        text("UPDATE tlog_head SET size = :n, peaks = :p WHERE id = 1"),
        {"n": frontier.size, "p": b"".join(frontier.peaks)},
    )
    return frontier


def append_leaves(db: Session | Connection, leaves: Sequence[bytes]) -> list[int]:
    """Append ``leaves`` to the tree in the caller's transaction, which holds the head's lock
    from here to its end (migrations, the rogue-administrator tests; SQLite's writers): their
    indexes.  A PostgreSQL writer queues instead (:func:`enqueue`)."""
    if not leaves:
        return []
    conn = _conn(db)
    size, raw = _lock_head(conn)
    _grow(conn, size, raw, leaves)
    return list(range(size, size + len(leaves)))


QUEUED = "tlog_queued"  # Session.info: ids of the leaves this transaction queued
AFTER = "tlog_after_sequencing"  # Session.info: callbacks once its leaves are sequenced
SIGN = "tlog_sign"  # Session.info: (key, time) to sign the checkpoint of what it sequences


def queues(db: Session | Connection) -> bool:
    """Whether leaves written on ``db`` wait in the queue (PostgreSQL) rather than go straight
    into the tree (SQLite: its one write lock serialises every writer anyway)."""
    return _conn(db).dialect.name == "postgresql"


@dataclass(frozen=True)
class Pending:
    """A leaf queued by its writer: in the tree once sequenced, at index ``floor`` or later
    (``floor``: the tree's size before the writer committed)."""

    leaf: bytes
    floor: int


def _queued_by(db: Session | Connection, ids: Sequence[int]) -> None:
    if isinstance(db, Session):
        db.info.setdefault(QUEUED, []).extend(ids)


def enqueue(db: Session | Connection, leaves: Sequence[bytes]) -> list[int] | None:
    """Log ``leaves`` with the caller's transaction: their indexes where they go straight into
    the tree (SQLite), None where they are queued for the sequencer (PostgreSQL; with a
    Session, it sequences them right after its commit)."""
    if not leaves:
        return []
    conn = _conn(db)
    if not queues(conn):
        size, raw = _lock_head(conn)
        _grow(conn, size, raw, leaves)
        return list(range(size, size + len(leaves)))
    got = conn.execute(
        insert(LogPending).returning(LogPending.id, sort_by_parameter_order=True),
        [{"leaf": leaf} for leaf in leaves],
    )
    _queued_by(db, [int(i) for i in got.scalars()])
    return None


def append(db: Session | Connection, entry: LogEntry) -> int | Pending:
    """Log one entry with the caller's transaction: its index, or where it is queued, a
    :class:`Pending` that :func:`locate` finds once it is sequenced."""
    leaf = entry.to_bytes()
    conn = _conn(db)
    if not queues(conn):
        size, raw = _lock_head(conn)
        _grow(conn, size, raw, [leaf])
        return size
    # The tree's size as committed now: the leaf, committed later, cannot be below it.
    pid, floor = conn.execute(
        text("INSERT INTO tlog_pending (leaf) VALUES (:l) "
             "RETURNING id, (SELECT size FROM tlog_head WHERE id = 1)"),
        {"l": leaf},
    ).one()  # fmt: skip
    _queued_by(db, [int(pid)])
    return Pending(leaf, int(floor))


def after_sequencing(
    db: Session,
    fn: Callable[[Connection], None],
    sign: tuple[LogKey, datetime] | None = None,
) -> None:
    """Call ``fn(conn)`` once the leaves ``db``'s transaction queued are sequenced, right after
    its commit (not at all if it rolls back), on the connection that sequenced them (no
    transaction open); with ``sign``, the sequencing signs the checkpoint of the tree it
    leaves, in its own transaction (so ``fn`` finds one)."""
    db.info.setdefault(AFTER, []).append(fn)
    if sign is not None:
        db.info[SIGN] = sign


def integrate_pending(
    conn: Connection,
    limit: int,
    sign: tuple[LogKey, datetime] | None = None,
    wrote: Integrated | None = None,
) -> int:
    """In the caller's transaction: at most ``limit`` queued leaves, in queue order, into the
    tree (under the head's lock, taken first), out of the queue, and with ``sign`` the
    checkpoint of the new tree signed; how many."""
    size, raw = _lock_head(conn)
    # queued leaves seen from here on are this caller's: taken out of the queue and read at once
    rows = sorted(conn.execute(
        text("DELETE FROM tlog_pending WHERE id IN (SELECT id FROM tlog_pending ORDER BY id "
             "LIMIT :n) RETURNING id, leaf"),
        {"n": limit},
    ).all(), key=lambda r: int(r[0]))  # fmt: skip
    if not rows:
        return 0
    frontier = _grow(conn, size, raw, [bytes(r[1]) for r in rows], wrote)
    if sign is not None:
        key, at = sign
        note = sign_checkpoint(Checkpoint(key.origin, frontier.size, frontier.root()), key.signer)
        values = {"size": frontier.size, "note": note.to_bytes().decode(), "signed_at": at}
        ins = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
        conn.execute(ins(LogCheckpoint).values(**values).on_conflict_do_nothing())
    return len(rows)


def sequence_on(
    conn: Connection,
    *,
    limit: int = 2000,
    sign: tuple[LogKey, datetime] | None = None,
    look_first: bool = True,
    known: Integrated | None = None,
) -> int:
    """Integrate everything queued, ``limit`` leaves at a time, each lot in its own short
    transaction on ``conn`` (which has none open, and is left with none); how many.  Anyone may
    call it at any moment: a leaf is integrated once, and a caller that finds the queue empty
    takes no lock (``look_first=False``: a caller that knows leaves were queued goes straight
    to the head).  ``known``: filled with what each lot wrote, once that lot has committed."""
    if look_first:
        try:
            first = conn.execute(select(LogPending.id).order_by(LogPending.id).limit(1)).first()
        finally:
            conn.rollback()
        if first is None:
            return 0
    total = 0
    while True:
        wrote = None if known is None else Integrated()
        with conn.begin():
            n = integrate_pending(conn, limit, sign, wrote)
        if known is not None and wrote is not None:  # committed: facts of the tree from now on
            known.merge(wrote)
        total += n
        if n < limit:
            return total


class GroupCommit:
    """Group commit of the log in one process: one sequencing at a time, and every writer that
    committed before a sequencing started is served by it.

    A writer that has just committed needs a sequencing that starts after its commit.  If none
    is running it becomes the leader and runs one (:func:`sequence_on`, which takes the head's
    lock: the leaders of the other API workers are the only other contenders); otherwise it
    waits (a condition variable, no database work) for the next one to finish, which takes its
    leaves with everyone else's.  So the head's lock sees one request per process at a time,
    whatever the number of writers, and each sequencing integrates what they all committed."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._started = 0  # sequencings started in this process
        self._done = 0  # the last one finished (they run one at a time)
        self._running = False

    def sync(
        self,
        conn: Connection,
        sign: tuple[LogKey, datetime] | None = None,
        known: Integrated | None = None,
    ) -> None:
        """Return once a sequencing that started after this call has finished (run by this
        caller on ``conn``, or by another thread); ``known``: filled with what it wrote, if this
        caller ran it."""
        with self._cond:
            need = self._started + 1  # one in progress may have started before the commit
            mine = 0
            while self._done < need:
                if not self._running:
                    self._running, self._started = True, self._started + 1
                    mine = self._started
                    break
                self._cond.wait()
            else:
                return
        try:
            sequence_on(conn, sign=sign, look_first=False, known=known)  # it queued leaves
        finally:
            with self._cond:
                self._running, self._done = False, mine
                self._cond.notify_all()


GROUP = GroupCommit()


def sequence(
    engine: Engine, *, limit: int = 2000, sign: tuple[LogKey, datetime] | None = None
) -> int:
    """:func:`sequence_on` a connection of ``engine``'s pool."""
    with engine.connect() as conn:
        return sequence_on(conn, limit=limit, sign=sign)


def snapshot(db: Session) -> None:
    """Make ``db``'s next transaction read one snapshot (PostgreSQL's REPEATABLE READ), so a
    check sees every leaf once, in the tree or in the queue, while the sequencer moves them: a
    no-op on a session already in a transaction, and on SQLite."""
    if not db.in_transaction() and db.get_bind().dialect.name == "postgresql":
        db.connection(execution_options={"isolation_level": "REPEATABLE READ"})


def queued(db: Session | Connection) -> list[bytes]:
    """The leaves waiting for the sequencer, in queue order."""
    q = select(LogPending.leaf).order_by(LogPending.id)
    return [bytes(x) for x in _conn(db).execute(q).scalars()]


def locate(db: Session | Connection, p: Pending) -> int | None:
    """The index of a queued leaf once sequenced (None while still queued)."""
    known = _known(db)
    if known is not None and p.leaf in known.leaves:  # sequenced by this connection, committed
        return known.leaves[p.leaf]
    size = int(_conn(db).execute(_HEAD_SIZE).scalar_one())
    got = _conn(db).execute(
        select(LogLeaf.idx)
        .where(LogLeaf.idx >= p.floor, LogLeaf.idx < size, LogLeaf.leaf == p.leaf)
        .order_by(LogLeaf.idx)
        .limit(1)
    ).scalar()
    return None if got is None else int(got)


class Sequencer:
    """:func:`sequence` at start and every ``interval_s`` in a daemon thread: one per API worker,
    so a leaf whose writer stopped between its commit and the sequencing waits at most that;
    with ``key``, each lot it integrates gets its checkpoint signed."""

    def __init__(self, engine: Engine, interval_s: float = 1.0, key: LogKey | None = None) -> None:
        self.engine, self.interval_s, self.key = engine, interval_s, key
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> int:
        sign = None if self.key is None else (self.key, datetime.now(UTC))
        try:
            return sequence(self.engine, sign=sign)
        except SQLAlchemyError as e:  # the database away or a lock timeout: next time
            _log.warning("log sequencer: %s", e)
            return 0

    def start(self) -> None:
        self.run_once()

        def loop() -> None:
            while not self._stop.wait(self.interval_s):
                self.run_once()

        self._thread = threading.Thread(target=loop, name="tlog-sequencer", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)


def _after_commit(session: Session) -> None:
    if session.in_nested_transaction():  # a savepoint released: the transaction goes on
        return
    queued = session.info.pop(QUEUED, None)
    callbacks = session.info.pop(AFTER, [])
    sign = session.info.pop(SIGN, None)
    bind = session.get_bind()
    if not queued or not isinstance(bind, Engine):  # bound to its caller's connection: later
        return
    with bind.connect() as conn:  # one connection for the sequencing and what waits for it
        known = Integrated()
        try:
            GROUP.sync(conn, sign, known)
        except SQLAlchemyError as e:  # still queued: the next writer or the Sequencer takes them
            _log.warning("log sequencer after a commit: %s", e)
            conn.rollback()
        # What this sequencing committed, for the receipts' proofs (locate, DbStore), only while
        # its callbacks run: the connection goes back to the pool with nothing of it.
        conn.info[_KNOWN] = known
        try:
            for fn in callbacks:
                fn(conn)
        finally:
            conn.info.pop(_KNOWN, None)


def _after_rollback(session: Session) -> None:
    if session.in_nested_transaction():  # back to a savepoint: what came before it stays
        return
    for k in (QUEUED, AFTER, SIGN):
        session.info.pop(k, None)


def install_sequencing() -> None:
    """Sequence what a session queued right after its commit (idempotent)."""
    if not event.contains(Session, "after_commit", _after_commit):
        event.listen(Session, "after_commit", _after_commit)
        event.listen(Session, "after_rollback", _after_rollback)


@dataclass(frozen=True)
class Head:
    size: int
    root: bytes


_HEAD_SIZE = select(LogHead.size).where(LogHead.id == 1)


def head(db: Session | Connection) -> Head:
    size, raw = _conn(db).execute(select(LogHead.size, LogHead.peaks).where(LogHead.id == 1)).one()
    return Head(int(size), Frontier(int(size), _peaks(bytes(raw))).root())


_PG_LEAF_HASHES = "SELECT idx, leaf_hash FROM tlog_leaves WHERE idx = ANY(%(i)s::bigint[])"
_PG_NODE_HASHES = (
    "SELECT n.level, n.idx, n.hash FROM tlog_nodes n "
    "JOIN unnest(%(l)s::int[], %(i)s::bigint[]) AS w(level, idx) "
    "ON n.level = w.level AND n.idx = w.idx"
)


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
        known = _known(self._conn)
        if known is not None:  # what the sequencing on this connection just committed
            for n in nodes:
                h = known.nodes.get(n)
                if h is not None:
                    self._cache[n] = h
            nodes = [n for n in nodes if n not in self._cache]
        leaves_ = sorted({i for lv, i in nodes if lv == 0})
        inner = sorted({(lv, i) for lv, i in nodes if lv > 0})
        if self._conn.dialect.name == "postgresql":
            # Each segment's receipt proves its leaf: two statements as the driver takes them,
            # arrays for the lists (SQLAlchemy's expanding IN of pairs cost more than the rest
            # of the receipt's reads together).
            if leaves_:
                for i, h in self._conn.exec_driver_sql(_PG_LEAF_HASHES, {"i": leaves_}):
                    self._cache[(0, int(i))] = bytes(h)
            if inner:
                levels, idxs = [lv for lv, _ in inner], [i for _, i in inner]
                for lv, i, h in self._conn.exec_driver_sql(
                    _PG_NODE_HASHES, {"l": levels, "i": idxs}
                ):
                    self._cache[(int(lv), int(i))] = bytes(h)
            return
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
