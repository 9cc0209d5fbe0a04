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
breaks its stream at that entry.  An append upserts its stream's row of ``audit_heads`` first:
the row lock (PostgreSQL; SQLite's one write lock) serialises appends to that stream only, in
the same transaction as the write they describe, so the entry commits with the change or not at
all.  The entry's global id (``seq``, for paging and export) comes from a sequence: a
rolled-back append leaves a gap, which is no finding; a deletion shows as a hole in a stream's
``stream_seq`` or as a stream shorter than its head.

**Anchors.**  Every entry's hash is also a leaf of the transparency log (``server.log.records``
appends it with the entry), which gives the streams one global order and makes a stream cut
back together with its head, or rewritten from an edited entry on, visible:
:func:`check` compares each entry with its leaf.

Over 400 lines because the append and its check are one format read together: the hash, the
stream and head rules and every finding of ``ctgtp server audit verify``.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Hashable, Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson
from sqlalchemy import literal, select, text, tuple_
from sqlalchemy.orm import Session

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


_ADVANCE = (
    "INSERT INTO audit_heads (stream, seq, hash) VALUES (:s, 1, :g) "
    "ON CONFLICT (stream) DO UPDATE SET seq = audit_heads.seq + 1 RETURNING seq, hash"
)


def _advance(db: Session, stream: str) -> tuple[int, str, int]:
    """(place in the stream, previous hash, global id) of a new entry of ``stream``, the
    stream's head row locked (and made, for a new stream) until the transaction ends."""
    if db.get_bind().dialect.name == "postgresql":
        n, prev, seq = db.execute(
            text(_ADVANCE + ", nextval('audit_trail_seq')"), {"s": stream, "g": GENESIS}
        ).one()
        return int(n), str(prev), int(seq)
    # SQLite: the upsert took the database's write lock, so the largest id is the last one;
    # entries appended in this session and not yet flushed count too
    n, prev = db.execute(text(_ADVANCE), {"s": stream, "g": GENESIS}).one()
    top = db.execute(text("SELECT coalesce(max(seq), 0) FROM audit_trail")).scalar_one()
    mine = [o.seq for o in db.new if isinstance(o, AuditEntry)]
    return int(n), str(prev), max([int(top), *mine]) + 1


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
    ``stream`` (default: :func:`stream_of` the object)."""
    stream = stream or stream_of(object_type, object_id)
    n, prev, seq = _advance(db, stream)
    e = AuditEntry(
        seq=seq,
        at=at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        old=_json(old),
        new=_json(new),
        reason=reason,
        prev_hash=prev,
        stream=stream,
        stream_seq=n,
    )
    e.hash = entry_hash(prev, e)
    db.add(e)
    db.execute(
        text("UPDATE audit_heads SET hash = :h WHERE stream = :s"), {"h": e.hash, "s": stream}
    )
    return e


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
