"""Re-entered passwords within a continuous session, checked in microseconds.

An e-signature re-authenticates with the password every time (21 CFR 11.200(a)(1)); the full
check of a stored argon2id hash takes about 0.15 s by design, which alone breaks an operator
action's 50 ms budget.  After a full check succeeds, :meth:`ReentryVerifiers.remember` keeps,
**in this process's memory only**, a keyed MAC of (stored hash, password) under a key drawn at
start.  A re-entry by the same person within ``idle`` of their last success is checked against
it (:meth:`ReentryVerifiers.matches`).  Anything else goes to the full check: no entry, an entry
gone idle, a clock that went back, a stored hash that changed since (a new password, a reset),
or a password that does not match; so a wrong password costs what it always did and is counted
the same way by the caller, which also forgets the entry on any failure.

Nothing of it reaches a disk, a ledger or a database, and no password is kept; a restart, an
idle period, a sign-out or a failure forgets it.  What it trades: someone who can read the
process's memory gets, for as long as an entry lives, a verifier that is fast to attack
(HMAC-SHA-256, not argon2id), where they could as well read the password as it is typed.
Used by the edge engine (``edge.engine.Engine.authenticate``) and the server's password check
(``server.people.passwords.check_attempt``).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
from dataclasses import dataclass, field
from datetime import datetime, timedelta


@dataclass
class ReentryVerifiers:
    """Per person: (stored hash, MAC, time of the last success)."""

    max_entries: int = 10_000
    _key: bytes = field(default_factory=lambda: secrets.token_bytes(32), repr=False)
    _entries: dict[str, tuple[str, bytes, datetime]] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def _mac(self, stored_hash: str, password: str) -> bytes:
        msg = stored_hash.encode() + b"\x00" + password.encode("utf-8", "surrogatepass")
        return hmac.new(self._key, msg, hashlib.sha256).digest()

    def matches(
        self, user_id: str, stored_hash: str, password: str, now: datetime, idle: timedelta
    ) -> bool:
        """True when ``password`` is the one ``user_id`` last succeeded with, against the same
        ``stored_hash``, within ``idle`` of that success (whose time then moves to ``now``)."""
        with self._lock:
            entry = self._entries.get(user_id)
        if entry is None:
            return False
        kept_hash, mac, last = entry
        if kept_hash != stored_hash or now < last or now - last > idle:
            return False
        if not hmac.compare_digest(mac, self._mac(stored_hash, password)):
            return False
        with self._lock:
            if self._entries.get(user_id) == entry:
                self._entries[user_id] = (kept_hash, mac, now)
        return True

    def remember(self, user_id: str, stored_hash: str, password: str, now: datetime) -> None:
        """After a full check of ``password`` against ``stored_hash`` succeeded."""
        mac = self._mac(stored_hash, password)
        with self._lock:
            if user_id not in self._entries and len(self._entries) >= self.max_entries:
                oldest = min(self._entries, key=lambda k: self._entries[k][2])
                del self._entries[oldest]
            self._entries[user_id] = (stored_hash, mac, now)

    def forget(self, user_id: str) -> None:
        with self._lock:
            self._entries.pop(user_id, None)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
