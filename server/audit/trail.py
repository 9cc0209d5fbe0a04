"""The audit trail: every server write (who, what, when, old and new value, reason) appended to a
hash-chained table that the database refuses to update or delete (21 CFR 11.10(e), Annex 11 §9).

Each entry's hash covers the previous entry's hash and the entry's canonical JSON, so a changed,
deleted, inserted or reordered row breaks the chain at that row.  Appends are serialised by
updating the single ``audit_head`` row first (a row lock on PostgreSQL, the write lock on SQLite),
in the same transaction as the write they describe: the entry commits with the change or not at
all.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Hashable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from ebr_core.canonical import canonical
from server.db import AuditEntry, AuditHead

GENESIS = "0" * 64
_TAG = b"ctgtp/audit/v1\x00"


class AuditChainError(Exception):
    """The audit trail does not verify; names the first bad entry."""

    def __init__(self, seq: int, reason: str) -> None:
        super().__init__(f"audit entry {seq}: {reason}")
        self.seq, self.reason = seq, reason


def _json(v: Any) -> str | None:
    return None if v is None else canonical(v).decode()


def entry_hash(prev_hash: str, e: AuditEntry) -> str:
    body = {
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
    return hashlib.sha256(_TAG + prev_hash.encode() + canonical(body)).hexdigest()


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
) -> AuditEntry:
    """Append one entry in the caller's transaction (old/new: JSON values without floats)."""
    seq, prev = db.execute(
        text("UPDATE audit_head SET seq = seq + 1 WHERE id = 1 RETURNING seq, hash")
    ).one()
    e = AuditEntry(
        seq=int(seq),
        at=at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=object_id,
        old=_json(old),
        new=_json(new),
        reason=reason,
        prev_hash=str(prev),
    )
    e.hash = entry_hash(str(prev), e)
    db.add(e)
    db.execute(text("UPDATE audit_head SET hash = :h WHERE id = 1"), {"h": e.hash})
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
    says how many refusals it stands for.  None when this one is only counted."""
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
    )


@dataclass(frozen=True)
class AuditVerified:
    entries: int
    head_seq: int
    head_hash: str


def verify(db: Session, *, batch_size: int = 5000) -> AuditVerified:
    """Walk the whole trail; raise :class:`AuditChainError` at the first entry that does not
    follow from its predecessor, or when the stored head does not match the last entry."""
    prev, expected, n = GENESIS, 1, 0
    for e in _iter(db, batch_size):
        if e.seq != expected:
            raise AuditChainError(e.seq, f"expected entry {expected}: entries are missing")
        if e.prev_hash != prev:
            raise AuditChainError(e.seq, "does not link to the previous entry's hash")
        if entry_hash(prev, e) != e.hash:
            raise AuditChainError(e.seq, "content does not match its hash (altered)")
        prev, expected, n = e.hash, expected + 1, n + 1
    head = db.get(AuditHead, 1)
    if head is None or head.seq != n or head.hash != prev:
        raise AuditChainError(
            n + 1,
            f"the trail ends at entry {n} but its head says {head.seq if head else '?'} "
            "(entries were deleted at the end)",
        )
    return AuditVerified(n, n, prev)


def _iter(db: Session, batch_size: int) -> Iterator[AuditEntry]:
    last = 0
    while True:
        rows = db.scalars(
            select(AuditEntry)
            .where(AuditEntry.seq > last)
            .order_by(AuditEntry.seq)
            .limit(batch_size)
        ).all()
        if not rows:
            return
        yield from rows
        last = rows[-1].seq


def to_json(e: AuditEntry) -> dict[str, Any]:
    return {
        "seq": e.seq,
        "at": e.at,
        "actor": e.actor,
        "action": e.action,
        "object_type": e.object_type,
        "object_id": e.object_id,
        "old": None if e.old is None else orjson.loads(e.old),
        "new": None if e.new is None else orjson.loads(e.new),
        "reason": e.reason,
        "hash": e.hash,
    }
