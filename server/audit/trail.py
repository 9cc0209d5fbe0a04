"""The audit trail: every server write (who, what, when, old and new value, reason) appended to a
hash-chained table that the database refuses to update or delete (21 CFR 11.10(e), Annex 11 §9).

**Streams** (issue 25).  The trail is many chains, one per *stream*, so that writers to different
streams never wait for each other: a unit's enrolment, keys and segments chain in ``unit/<id>``,
a batch's review, results, signatures and deviations in ``batch/<id>``, a person's account in
``person/<id>``, custody in ``coi/<SHA-256 of the COI>``, and so on (:func:`stream_of`, from the
entry's object, so no caller names a stream); rate-limited refusals chain in
``refusals/<action>``.  The entries stored before streams existed form the ``legacy`` chain,
verified as it always was.

Each entry's hash covers its predecessor's hash in the stream and the entry's canonical JSON
(its global id, stream and place included), so a changed, deleted, inserted or reordered entry
breaks its stream at that entry.  :func:`append` only records the entry in the caller's
transaction; the commit chains them (:func:`seal`, a ``before_commit`` listener): it upserts
the ``audit_heads`` rows of every stream the transaction appended to in one statement, in
stream order, then gives the entries their global ids, places and hashes.  The row locks
(PostgreSQL; SQLite's one write lock) serialise appends to a stream only, in the same
transaction as the write they describe, so the entries commit with the change or not at all;
and since a transaction takes all its heads at once, last, in one total order, two
transactions appending to the same streams in any orders never deadlock on them.  A
rolled-back transaction or savepoint drops its entries and takes no id.  The entry's global id
(``seq``, for paging and export) comes from a sequence: an id taken by a transaction that then
fails leaves a gap, which is no finding; a deletion shows as a hole in a stream's
``stream_seq`` or as a stream shorter than its head.

**Paging** (:func:`page`, ``GET /v1/audit``).  Ids are taken before the commit, so on
PostgreSQL seq 11 can be visible while seq 10's writer still runs.  Each entry also records
its writer's transaction id (``xid``, migration 0014) and a page serves entries in
``(xid, seq)`` order, only those whose transaction is below the reader's snapshot horizon
(every older transaction has ended): what a reader has not seen yet can only come after its
cursor.  Entries stored before 0014 (no ``xid``) come first, by ``seq``; on SQLite (one writer
at a time) every entry has none and paging is by ``seq``, as it was.

**Anchors.**  Every entry's hash is also a leaf of the transparency log (``server.log.records``
appends it with the entry), which gives the streams one global order and makes a stream cut
back together with its head, or rewritten from an edited entry on, visible:
:func:`check` compares each entry with its leaf.

Over 400 lines because the append, its paging and its check are one format read together: the
hash, the stream and head rules, the visibility order and every finding of ``ctgtp server
audit verify``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson
from sqlalchemy import (
    BigInteger,
    ColumnClause,
    event,
    func,
    literal,
    literal_column,
    select,
    text,
    tuple_,
)
from sqlalchemy.orm import Session, SessionTransaction

from ebr_core.canonical import canonical
from server.db import AuditEntry, AuditHead

GENESIS = "0" * 64
LEGACY = "legacy"  # the chain of the entries stored before streams (migration 0012)
_TAG = b"ctgtp/audit/v1\x00"  # legacy entries
_TAG_STREAM = b"ctgtp/audit/v2\x00"  # entries of a stream
MAX_STREAM = 200  # audit_heads.stream


def _json(v: Any) -> str | None:
    return None if v is None else canonical(v).decode()


def stream_of(object_type: str, object_id: str) -> str:
    """The stream an entry about ``object_type``/``object_id`` is chained in: one per object, a
    deviation in its batch's, a COI by its SHA-256 (a stream's name never names a patient)."""
    if object_type == "deviation":
        return "batch/" + object_id.split("/", 1)[0]
    if object_type == "coi":
        return "coi/" + hashlib.sha256(object_id.encode()).hexdigest()
    return f"{object_type}/{object_id}"[:MAX_STREAM]


def entry_hash(prev_hash: str, e: _Entry | AuditEntry) -> str:
    body: dict[str, Any] = {
        "seq": e.seq,
        "at": e.at,
        "actor": e.actor,
        "action": e.action,
        "object_type": e.object_type,
        "object_id": e.object_id,
        "old": e.old,
        "new": e.new,
        "reason": e.reason,
    }
    if e.stream is None:  # the legacy chain: the format it was written in
        return hashlib.sha256(_TAG + prev_hash.encode() + canonical(body)).hexdigest()
    body |= {"stream": e.stream, "stream_seq": e.stream_seq}
    return hashlib.sha256(_TAG_STREAM + prev_hash.encode() + canonical(body)).hexdigest()


@dataclass
class _Pending:
    """The entries a session's transaction has appended and not yet chained: each with the
    (innermost) transaction it was appended in, so that a savepoint rolled back drops its own."""

    root: SessionTransaction
    entries: list[tuple[SessionTransaction, AuditEntry]] = field(default_factory=list)
    committing: bool = False  # the heads are taken: a later append is chained at once


_PENDING = "ctgtp.audit.pending"  # Session.info key


def _pending(db: Session) -> _Pending | None:
    p = db.info.get(_PENDING)
    if p is None or p.root is not db.get_transaction():
        return None  # none, or left by a transaction that has ended
    return p if isinstance(p, _Pending) else None


def append(
    db: Session,
    *,
    at: datetime,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    old: Any = None,
    new: Any = None,
    reason: str | None = None,
    stream: str | None = None,
) -> AuditEntry:
    """Append one entry in the caller's transaction (old/new: JSON values without floats), to
    ``stream`` (default: :func:`stream_of` the object).  The entry is chained when the
    transaction commits (:func:`seal`): until then its ``seq``, place and hashes are None."""
    db.connection()  # in a transaction (begun now if need be): the entry belongs to it
    e = AuditEntry(
        at=at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        old=_json(old),
        new=_json(new),
        reason=reason,
        stream=stream or stream_of(object_type, object_id),
    )
    root = db.get_transaction()
    assert root is not None  # db.connection() began it
    p = _pending(db)
    if p is None:
        p = db.info[_PENDING] = _Pending(root)
    p.entries.append((db.get_nested_transaction() or root, e))
    if p.committing:  # appended while the commit flushes (by a flush hook): chained now
        seal(db)
    return e


_HEADS_PG = (  # one statement, the rows in stream order: locks are taken in that order
    "INSERT INTO audit_heads (stream, seq, hash) "
    "SELECT s, n, :g FROM unnest(CAST(:s AS text[]), CAST(:n AS bigint[])) AS t(s, n) "
    "ORDER BY s "
    "ON CONFLICT (stream) DO UPDATE SET seq = audit_heads.seq + excluded.seq "
    "RETURNING stream, seq, hash"
)
_HEAD_SQLITE = (
    "INSERT INTO audit_heads (stream, seq, hash) VALUES (:s, :n, :g) "
    "ON CONFLICT (stream) DO UPDATE SET seq = audit_heads.seq + excluded.seq RETURNING seq, hash"
)
_IDS_PG = (  # the global ids, and the writing transaction (server.audit.trail.page)
    "SELECT nextval('audit_trail_seq'), CAST(CAST(pg_current_xact_id() AS text) AS bigint) "
    "FROM generate_series(1, :n)"
)


def _take_heads(db: Session, counts: Mapping[str, int]) -> dict[str, tuple[int, str]]:
    """Advance each stream's head by its count, locking (or making) the heads in stream order;
    each stream's (last place, last hash) before."""
    streams = sorted(counts)
    if db.get_bind().dialect.name == "postgresql":
        rows = db.execute(
            text(_HEADS_PG), {"s": streams, "n": [counts[s] for s in streams], "g": GENESIS}
        ).all()
        return {str(s): (int(n) - counts[s], str(h)) for s, n, h in rows}
    out = {}
    for s in streams:  # SQLite: the first write took the database's one write lock
        n, h = db.execute(text(_HEAD_SQLITE), {"s": s, "n": counts[s], "g": GENESIS}).one()
        out[s] = (int(n) - counts[s], str(h))
    return out


def _ids(db: Session, n: int) -> tuple[list[int], int | None]:
    """``n`` new global ids, ascending, and the writing transaction's id (None on SQLite)."""
    if db.get_bind().dialect.name == "postgresql":
        rows = db.execute(text(_IDS_PG), {"n": n}).all()
        return sorted(int(r[0]) for r in rows), int(rows[0][1])
    # SQLite: the write lock is held (the heads were written), so the largest id is the last
    # one; entries chained in this transaction and not yet flushed count too
    top = db.execute(text("SELECT coalesce(max(seq), 0) FROM audit_trail")).scalar_one()
    mine = [o.seq for o in db.new if isinstance(o, AuditEntry) and o.seq is not None]
    first = max([int(top), *mine]) + 1
    return list(range(first, first + n)), None


def seal(db: Session) -> None:
    """Chain the entries the transaction has appended: take the heads of all their streams at
    once, in stream order (:data:`_HEADS_PG`: one statement), then give each entry, in the
    order appended, its global id, place, previous hash and hash, and add it to the session.

    Called by the session's commit (a ``before_commit`` listener, :func:`install`), so a
    transaction takes its audit heads last, all together and in one total order: two
    transactions appending to the same streams in opposite orders (a unit and a batch, two
    licences) cannot deadlock on them, and a head is held only from the commit's start to its
    end.  Call it directly only to read an entry's id or hash before the commit."""
    p = _pending(db)
    if p is None or not p.entries:
        return
    entries = [e for _, e in p.entries]
    p.entries = []
    counts: dict[str, int] = {}
    for e in entries:
        assert e.stream is not None
        counts[e.stream] = counts.get(e.stream, 0) + 1
    heads = _take_heads(db, counts)
    seqs, xid = _ids(db, len(entries))
    for e, seq in zip(entries, seqs, strict=True):
        assert e.stream is not None
        place, prev = heads[e.stream]
        e.seq, e.stream_seq, e.prev_hash, e.xid = seq, place + 1, prev, xid
        e.hash = entry_hash(prev, e)
        heads[e.stream] = (place + 1, e.hash)
    db.execute(
        text("UPDATE audit_heads SET hash = :h WHERE stream = :s"),
        [{"s": s, "h": h} for s, (_, h) in sorted(heads.items())],
    )
    db.add_all(entries)


def _before_commit(session: Session) -> None:
    seal(session)
    p = _pending(session)
    if p is not None and session.get_nested_transaction() is None:
        p.committing = True  # the root's commit: what is appended from now is chained at once


def _within(t: SessionTransaction | None, ancestor: SessionTransaction) -> bool:
    while t is not None:
        if t is ancestor:
            return True
        t = t.parent
    return False


def _after_soft_rollback(session: Session, previous: SessionTransaction) -> None:
    """A rolled-back transaction or savepoint drops the entries appended in it."""
    p = session.info.get(_PENDING)
    if not isinstance(p, _Pending):
        return
    if _within(p.root, previous):
        del session.info[_PENDING]
    else:
        p.entries = [(t, e) for t, e in p.entries if not _within(t, previous)]


def install() -> None:
    """Register the listeners on every Session (idempotent; done on import)."""
    for name, fn in (("before_commit", _before_commit), ("after_soft_rollback",
                                                         _after_soft_rollback)):  # fmt: skip
        if not event.contains(Session, name, fn):
            event.listen(Session, name, fn)


install()


@dataclass
class _Window:
    start: float  # seconds since the epoch of the row that opened the window
    count: int = 0  # refusals since that row, not yet written


@dataclass
class RefusalLimiter:
    """Decides which refusals (bad tokens, 403s, logins for unknown or locked accounts) get an
    audit row: the first of a key (kind, principal or address) in each window does, carrying how
    many refusals of that key came since the key's previous row.  A flood therefore writes at most
    one row per key per window, in this process, and costs no database work in between.  Keys are
    bounded: beyond ``max_keys`` live keys, refusals share one overflow key."""

    window_s: float = 60.0
    max_keys: int = 10_000
    _keys: dict[Hashable, _Window] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def take(self, key: Hashable, now: float) -> int:
        """0: do not write; n > 0: write one row standing for n refusals (this one included)."""
        with self._lock:
            w = self._keys.get(key)
            if w is None:
                if len(self._keys) >= self.max_keys:
                    self._prune(now)
                if len(self._keys) >= self.max_keys:
                    key = ("(overflow)",)
                    w = self._keys.get(key)
                if w is None:
                    self._keys[key] = _Window(now)
                    return 1
            w.count += 1
            if now - w.start < self.window_s:
                return 0
            n, w.start, w.count = w.count, now, 0
            return n

    def _prune(self, now: float) -> None:
        """Forget keys idle for a window: what they held is lost only if they had unwritten
        refusals, which are then counted nowhere (bounded memory wins over an exact count)."""
        for k in [k for k, w in self._keys.items() if now - w.start >= self.window_s]:
            del self._keys[k]


LIMITER = RefusalLimiter()


def append_limited(
    db: Session,
    *,
    at: datetime,
    key: Hashable,
    actor: str,
    action: str,
    object_type: str,
    object_id: str,
    reason: str | None = None,
    limiter: RefusalLimiter | None = None,
) -> AuditEntry | None:
    """Append a refusal, rate-limited by ``key`` (see :class:`RefusalLimiter`): the row's ``new``
    says how many refusals it stands for.  None when this one is only counted.  Refusals chain
    in ``refusals/<action>`` (a refused request names whatever object it likes)."""
    n = (limiter or LIMITER).take(key, at.timestamp())
    if n == 0:
        return None
    return append(
        db,
        at=at,
        actor=actor[:64],
        action=action[:64],
        object_type=object_type[:32],
        object_id=object_id[:128],
        new={"refusals": n, "window_s": int((limiter or LIMITER).window_s)},
        reason=None if reason is None else reason[:2000],
        stream=f"refusals/{action[:64]}",
    )


# -- verification -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One thing wrong with the trail: the stream (None: the entry is gone from the trail, only
    the log still names it), the entry (global id ``seq``; ``place``: its place in the stream, or
    the place of an entry that is missing), the log's leaf if one is concerned, and what."""

    stream: str | None
    detail: str
    seq: int | None = None
    place: int | None = None
    leaf: int | None = None

    def record(self) -> str | None:
        return None if self.seq is None else f"audit entry {self.seq}"

    def line(self) -> str:
        where = [f"stream {self.stream}" if self.stream else "stream unknown"]
        if self.seq is not None:
            at = f" (#{self.place} of the stream)" if self.place is not None else ""
            where.append(f"audit entry {self.seq}{at}")
        elif self.place is not None:
            where.append(f"entry #{self.place} of the stream")
        return ": ".join([*where, self.detail])


# global id -> [(leaf index, or None while queued for the log; the hash the leaf carries)]
Anchors = Mapping[int, list[tuple[int | None, str]]]


class _Entry(Protocol):
    """An entry as read for checking (a row of ``audit_trail``)."""

    seq: int
    at: str
    actor: str
    action: str
    object_type: str
    object_id: str
    old: str | None
    new: str | None
    reason: str | None
    prev_hash: str
    hash: str
    stream: str | None
    stream_seq: int | None


def _entries(db: Session, batch: int) -> Iterator[_Entry]:
    """The legacy chain by id, then every stream by name and place (the unique index's order),
    as plain rows (nothing kept in the session).  A row with a stream and no place (put there
    by hand) is in neither: :func:`check` names those apart."""
    t = AuditEntry.__table__
    last = 0
    while rows := db.execute(
        select(t).where(t.c.stream.is_(None), t.c.seq > last).order_by(t.c.seq).limit(batch)
    ).all():
        yield from rows
        last = rows[-1].seq
    name, place = "", -1
    key = tuple_(t.c.stream, t.c.stream_seq)
    while rows := db.execute(
        select(t)
        .where(t.c.stream_seq.is_not(None), key > tuple_(literal(name), literal(place)))
        .order_by(t.c.stream, t.c.stream_seq)
        .limit(batch)
    ).all():
        yield from rows
        name, place = rows[-1].stream, rows[-1].stream_seq


@dataclass
class _Stream:
    name: str
    place: int = 0  # the last place seen
    hash: str = GENESIS  # the last entry's hash
    entries: int = 0


@dataclass(frozen=True)
class _Head:
    seq: int
    hash: str


def _chain(e: _Entry, s: _Stream) -> Iterator[Finding]:
    """What is wrong with ``e`` as the entry after ``s``'s last one."""
    legacy = e.stream is None
    place = e.seq if legacy else int(e.stream_seq or 0)
    if place > s.place + 1:
        gap = f"{s.place + 1}" + (f"-{place - 1}" if place - 1 > s.place + 1 else "")
        what = f"entries {gap}" if legacy else f"entries #{gap} of the stream"
        yield Finding(s.name, f"{what} before it are missing (deleted)", e.seq, place)
    elif place <= s.place:
        yield Finding(s.name, f"is at place {place} again, after {s.place} (inserted or "
                      "reordered)", e.seq, place)  # fmt: skip
    if e.prev_hash != s.hash:
        yield Finding(s.name, "does not link to the previous entry's hash", e.seq, place)
    if entry_hash(e.prev_hash, e) != e.hash:
        yield Finding(s.name, "content does not match its hash (altered)", e.seq, place)


def _head(s: _Stream, head: _Head | None) -> Iterator[Finding]:
    """The stream's head row against its last entry."""
    if head is None:
        if s.entries:
            yield Finding(s.name, f"holds {s.entries} entries but has no head (deleted)")
        return
    if head.seq > s.place:
        missing = f"#{s.place + 1}" + (f"-{head.seq}" if head.seq > s.place + 1 else "")
        yield Finding(s.name, f"its head says {head.seq} entries, the stream ends at "
                      f"{s.place}: entries {missing} are missing at the end (deleted)",
                      place=s.place + 1)  # fmt: skip
    elif head.seq < s.place:
        yield Finding(s.name, f"its head says {head.seq} entries, the stream holds {s.place} "
                      "(the head was rolled back, or entries were added after it)",
                      place=head.seq + 1)  # fmt: skip
    elif head.hash != s.hash:
        yield Finding(s.name, "its head's hash is not its last entry's (the head was "
                      "rewritten)", place=s.place)  # fmt: skip


def hex64(v: str) -> str:
    """An entry's hash as its leaf carries it (server.log.records.hex64)."""
    if len(v) == 64 and all(c in "0123456789abcdef" for c in v):
        return v
    return hashlib.sha256(v.encode()).hexdigest()


def _order(f: Finding) -> int:
    return f.place if f.place is not None else f.seq or 0


@dataclass
class Report:
    entries: int = 0
    streams: int = 0
    anchored: int = 0  # entries whose leaf is in the log
    queued: int = 0  # of those, leaves still queued for the log's sequencer
    anchors_checked: bool = True
    findings: list[Finding] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.findings

    def first_by_stream(self) -> dict[str, tuple[Finding, int]]:
        """Each bad stream's first bad entry (by place) and how many findings it has."""
        out: dict[str, tuple[Finding, int]] = {}
        for f in self.findings:
            if f.stream is None:
                continue
            got = out.get(f.stream)
            if got is None:
                out[f.stream] = (f, 1)
            else:
                out[f.stream] = (f if _order(f) < _order(got[0]) else got[0], got[1] + 1)
        return out

    def gone(self) -> list[Finding]:
        """Entries the log holds and the trail does not (no stream to name)."""
        return [f for f in self.findings if f.stream is None]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "entries": self.entries,
            "streams": self.streams,
            "anchored": self.anchored,
            "queued": self.queued,
            "anchors_checked": self.anchors_checked,
            "bad_streams": [
                {"stream": s, "findings": n, "first": asdict(f)}
                for s, (f, n) in sorted(self.first_by_stream().items())
            ],
            "gone": [asdict(f) for f in self.gone()],
            "findings": [asdict(f) for f in self.findings],
        }


def check(db: Session, anchors: Anchors | None, *, batch: int = 5000) -> Report:
    """Walk every stream (and the legacy chain), compare each head with its stream's end and,
    with ``anchors`` (the log's audit leaves), each entry with its leaf.  Every finding, not
    only the first: :meth:`Report.first_by_stream` names each bad stream's first bad entry."""
    rep = Report(anchors_checked=anchors is not None)
    heads = {h.stream: _Head(h.seq, h.hash) for h in db.execute(select(AuditHead.__table__))}
    left = {k: list(v) for k, v in (anchors or {}).items()}
    cur: _Stream | None = None

    def close(s: _Stream) -> None:
        rep.findings.extend(_head(s, heads.pop(s.name, None)))
        rep.streams += 1

    for e in _entries(db, batch):
        name = LEGACY if e.stream is None else e.stream
        if cur is None or cur.name != name:
            if cur is not None:
                close(cur)
            cur = _Stream(name)
        rep.findings.extend(_chain(e, cur))
        place = e.seq if e.stream is None else e.stream_seq
        cur.place = max(cur.place, place or 0)
        cur.hash, cur.entries = e.hash, cur.entries + 1
        rep.entries += 1
        if anchors is not None:
            rep.findings.extend(_anchor(e, name, place, left.pop(e.seq, []), rep))
    if cur is not None:
        close(cur)
    t = AuditEntry.__table__
    for e in db.execute(select(t).where(t.c.stream.is_not(None), t.c.stream_seq.is_(None))):
        rep.entries += 1
        rep.findings.append(Finding(e.stream, "has a stream but no place in it (inserted)", e.seq))
        left.pop(e.seq, None)
    for name, h in sorted(heads.items()):
        if h.seq > 0:
            rep.findings.append(Finding(name, f"has no entries but its head says {h.seq} "
                                        "(deleted)", place=1))  # fmt: skip
    for seq, got in sorted(left.items()):
        for idx, logged in got:
            where = "queued for the log" if idx is None else "in the log"
            rep.findings.append(Finding(None, f"is {where} (hash {logged}) but not in the trail "
                                        "(deleted)", seq, leaf=idx))  # fmt: skip
    return rep


def _anchor(
    e: _Entry, stream: str, place: int | None, got: list[tuple[int | None, str]], rep: Report
) -> Iterator[Finding]:
    if not got:
        yield Finding(stream, "is in the trail but not in the log (added behind its back)",
                      e.seq, place)  # fmt: skip
        return
    rep.anchored += 1
    rep.queued += got[0][0] is None
    if len(got) > 1:
        yield Finding(stream, f"is logged {len(got)} times (leaves "
                      f"{', '.join(str(i) for i, _ in got)})", e.seq, place, got[1][0])  # fmt: skip
    idx, h = got[0]
    if h != hex64(e.hash):
        yield Finding(stream, f"the log holds hash {h}, the trail's entry has {e.hash} (the "
                      "entry was changed and the chain recomputed)", e.seq, place, idx)  # fmt: skip


def anchors_of(
    leaves: Iterable[tuple[int | None, Mapping[str, Any]]],
) -> dict[int, list[tuple[int | None, str]]]:
    """:data:`Anchors` from the fields of the log's ``audit`` leaves (index; None: queued)."""
    out: dict[int, list[tuple[int | None, str]]] = {}
    for idx, f in leaves:
        out.setdefault(int(f["seq"]), []).append((idx, str(f["hash"])))
    return out


# -- paging -------------------------------------------------------------------------------------

# Every transaction below it has ended: the oldest transaction running when the statement's
# snapshot was taken (its own, if it has one), as a bigint like ``audit_trail.xid``.
_HORIZON = "CAST(CAST(pg_snapshot_xmin(pg_current_snapshot()) AS text) AS bigint)"


def page(
    db: Session, *, after: int = 0, limit: int = 100, where: Iterable[Any] = ()
) -> list[AuditEntry]:
    """Up to ``limit`` entries matching ``where`` (SQLAlchemy conditions on :class:`AuditEntry`)
    that come after the entry whose global id is ``after`` (0: from the start), in the order
    in which they became visible.  Gap-free: an entry not served yet is never placed before
    an entry served already, so a reader continuing from the last ``seq`` it got
    (``next_after``) misses nothing.

    Why not by ``seq``: ids come from a sequence before the writer commits, so on PostgreSQL
    seq 11 can commit while seq 10's transaction runs; a page by ``seq`` would serve 11, and
    10 later appears behind the reader's position.  The order used (the transactional outbox):

    * first the entries without ``xid`` (stored before migration 0014; every entry on SQLite,
      whose one writer at a time takes ids under its write lock, so ``seq`` is commit order),
      by ``seq``;
    * then, on PostgreSQL, the entries by ``(xid, seq)``, ``xid`` being the writer's
      transaction id, and only those whose transaction is below the reader's horizon (the
      oldest transaction still running: ``pg_snapshot_xmin(pg_current_snapshot())``).  Every
      transaction below it has committed or rolled back, and any later writer's id is at or
      above it, so the served set only grows at its end.

    An entry is therefore served once every transaction that began writing before its writer
    has ended, in any database of the cluster (prepared transactions too): a fraction of a
    second under load, longer while a long transaction runs (``idle_in_transaction_session_
    timeout`` bounds idle ones; ``transaction_timeout`` from PostgreSQL 17 any).

    Why not the transparency log's leaf index, also assigned in commit order: an entry would
    wait for the sequencer (up to a second) before any reader could see it, the entries
    logged by migration 0009 are leaves in ``seq`` order, not commit order, and the index of
    an entry's leaf is found only by reading the log's leaves; ``xid`` is one column written
    with the entry.  ``xid`` is not covered by the entry's hash (it orders reading, it is no
    record content) and, like every column, the append-only guards keep it.  It is the
    cluster's 64-bit transaction counter: kept by physical backups, replicas and
    ``pg_upgrade``; a logical dump restored into a new cluster restarts it, and the stored
    entries would be held back (their ``xid`` above the new horizon) and sort after new ones:
    restore into a cluster whose counter is past the largest stored ``xid``
    (``pg_resetwal --epoch`` / ``--next-transaction-id``).

    ``after`` naming no entry (a rolled-back id, or an id from outside this trail) continues
    from just before the first entry, in this order, with a greater ``seq`` than it: no entry
    with a greater ``seq`` is skipped, some before it may be served again.  A client paging
    by ``seq`` as before (``after=`` the last ``seq`` it got) keeps working: the cursor is
    still the last entry's ``seq``, only the order behind it changed."""
    t = AuditEntry
    conds = list(where)
    pg = db.get_bind().dialect.name == "postgresql"
    horizon: ColumnClause[int] = literal_column(_HORIZON, BigInteger())
    legacy_after: int | None = 0  # continue among the entries without xid after this seq
    key: tuple[int, int] | None = None  # ...or among the others after this (xid, seq)
    if after > 0:
        found = db.execute(select(t.xid).where(t.seq == after)).one_or_none()
        if found is not None:
            legacy_after, key = (after, None) if found.xid is None else (None, (found.xid, after))
        elif not pg or db.scalar(select(t.seq).where(t.xid.is_(None), t.seq > after).limit(1)):
            legacy_after = after
        else:  # just before the first entry with a greater seq (one still unseen: horizon)
            h = int(db.execute(select(horizon)).scalar_one())
            first = db.scalar(select(func.min(t.xid)).where(t.seq > after))
            legacy_after, key = None, (h if first is None else min(int(first), h), after)
    rows: list[AuditEntry] = []
    if legacy_after is not None:
        rows = list(db.scalars(
            select(t).where(t.xid.is_(None), t.seq > legacy_after, *conds)
            .order_by(t.seq).limit(limit)
        ))  # fmt: skip
    if pg and len(rows) < limit:
        q = select(t).where(t.xid.is_not(None), t.xid < horizon, *conds)
        if key is not None:
            q = q.where(tuple_(t.xid, t.seq) > tuple_(literal(key[0]), literal(key[1])))
        rows += db.scalars(q.order_by(t.xid, t.seq).limit(limit - len(rows)))
    return rows


def to_json(e: AuditEntry) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "stream": LEGACY if e.stream is None else e.stream,
        "stream_seq": e.seq if e.stream is None else (e.stream_seq or 0),
        "at": e.at,
        "actor": e.actor,
        "action": e.action,
        "object_type": e.object_type,
        "object_id": e.object_id,
        "old": None if e.old is None else orjson.loads(e.old),
        "new": None if e.new is None else orjson.loads(e.new),
        "reason": e.reason,
        "prev_hash": e.prev_hash,
        "hash": e.hash,
    }
