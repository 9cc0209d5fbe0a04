"""The kiosk's sessions: one per browser, kept in memory by the kiosk process.

A session starts anonymous (it carries the CSRF token the sign-in form needs) and becomes an
operator's when they sign in: the session id is then replaced, so an id seen before sign-in is
worth nothing after it.  A signed-in session ends after the engine's idle time (15 minutes, the
continuous-session rule of 21 CFR 11.200) without a request from its browser; the operator signs
in again.  Nothing here is recorded in the ledger: the engine records what people do.
"""

from __future__ import annotations

import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

MAX_SESSIONS = 256  # a touchscreen has one or two browsers; the oldest are dropped beyond this


@dataclass
class Session:
    sid: str
    csrf: str
    last_seen: float
    user_id: str | None = None
    printed_name: str | None = None
    pending_user: str | None = None  # the user id given at sign-in, before the password
    expired: bool = False  # set once when an idle signed-in session was ended
    batch: str | None = None  # the batch this operator last opened
    # value name -> the first entry of an out-of-limit value, awaiting its second entry
    reentry: dict[str, str] = field(default_factory=dict)


class Sessions:
    def __init__(self, idle_s: float, now: Callable[[], float] = time.monotonic) -> None:
        self.idle_s = idle_s
        self.now = now
        self._lock = threading.Lock()
        self._by_id: dict[str, Session] = {}

    def new(self) -> Session:
        s = Session(secrets.token_urlsafe(32), secrets.token_urlsafe(32), self.now())
        with self._lock:
            self._by_id[s.sid] = s
            if len(self._by_id) > MAX_SESSIONS:
                oldest = min(self._by_id.values(), key=lambda x: x.last_seen)
                del self._by_id[oldest.sid]
        return s

    def get(self, sid: str | None, *, touch: bool = True) -> Session | None:
        """The session ``sid``; a signed-in one idle too long is signed out (``expired`` set)."""
        if not sid:
            return None
        with self._lock:
            s = self._by_id.get(sid)
            if s is None:
                return None
            now = self.now()
            if s.user_id is not None and now - s.last_seen > self.idle_s:
                self._sign_out(s)
                s.expired = True
            if touch:
                s.last_seen = now
            return s

    def sign_in(self, old: Session, user_id: str, printed_name: str) -> Session:
        """A new session id for the signed-in operator (the old id is dropped)."""
        s = Session(
            secrets.token_urlsafe(32),
            secrets.token_urlsafe(32),
            self.now(),
            user_id=user_id,
            printed_name=printed_name,
        )
        with self._lock:
            self._by_id.pop(old.sid, None)
            self._by_id[s.sid] = s
        return s

    def sign_out(self, s: Session) -> None:
        with self._lock:
            self._sign_out(s)

    @staticmethod
    def _sign_out(s: Session) -> None:
        s.user_id = s.printed_name = s.pending_user = s.batch = None
        s.reentry.clear()

    def live(self, sid: str, *, touch: bool = False) -> Session | None:
        """The session if it is signed in and not idle too long; ``touch`` when the operator
        acted (a scan taken by their step), not for what the kiosk pushes on its own."""
        with self._lock:
            s = self._by_id.get(sid)
            now = self.now()
            if s is None or s.user_id is None or now - s.last_seen > self.idle_s:
                return None
            if touch:
                s.last_seen = now
            return s
