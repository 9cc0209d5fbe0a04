"""Passwords: argon2id hashes, the policy, the bounded gate for argon2 work, and attempts.

A password attempt takes a slot first, with one atomic statement (``UPDATE ... SET
failed_logins = failed_logins + 1 WHERE failed_logins < max RETURNING``), and only an attempt that
holds a slot has its password checked: however many guesses arrive in parallel, at most
``max_failures`` are checked before the account locks (21 CFR 11.300(d), with an immediate
security alert).  The argon2 check runs outside any database transaction (:func:`begin_attempt`,
:func:`check_attempt`, :func:`finish_attempt`), with bounded concurrency (:class:`PasswordGate`).
Unknown ids are checked against a dummy hash with the same parameters and answered with the same
message as a wrong password or a locked account, in the same time.

A person's re-entry of the password they last succeeded with, within :data:`REENTRY_IDLE`, is
checked in memory (:mod:`ebr_core.reentry`) instead of by argon2id: the e-signatures of one
review session cost a MAC, not 0.15 s each.  The slot, the count and the outcome are the same
either way; a failure forgets the person's entry.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import case, select, update
from sqlalchemy.orm import Session

from ebr_core.reentry import ReentryVerifiers
from server.audit import trail as audit
from server.db import Alert, Person, Token
from server.errors import (
    Busy,
    Forbidden,
    Unauthorized,
    Unprocessable,
)
from server.people.ids import MAX_USER_ID, audit_person, find_person

_HASHER = PasswordHasher()  # argon2id, the library's current parameters
# In this process's memory only (each API worker has its own; a miss is a full check).
REENTRY = ReentryVerifiers()
REENTRY_IDLE = timedelta(minutes=15)
MIN_PASSWORD_LENGTH = 12
MAX_PASSWORD_LENGTH = 1024
_COMMON = {"password", "123456", "qwerty", "letmein", "welcome", "admin", "changeme"}

# One message for every failed attempt to log in (unknown id, wrong password, locked or disabled
# account, no attempt left): the answer never tells whether an id exists.  A signature is given
# in a session, whose person is known: it is told what went wrong.
WRONG = (
    "user id or password is wrong, or the account is locked or disabled "
    "(an administrator unlocks it)"
)


ANONYMOUS_PURPOSES = ("login", "password_change")


def _refused(purpose: str, specific: str) -> Unauthorized:
    return Unauthorized(WRONG if purpose in ANONYMOUS_PURPOSES else specific)


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def check_password_hash(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


_dummy: list[str] = []
_dummy_lock = threading.Lock()


def dummy_hash() -> str:
    """A hash of a random secret with the same parameters as every real hash: an unknown id is
    checked against it, so that it costs the same time as a known one."""
    with _dummy_lock:
        if not _dummy:
            _dummy.append(hash_password(secrets.token_urlsafe(24)))
        return _dummy[0]


def password_argument(name: str, password: str) -> str:
    """Refuse an over-long password without echoing it (argon2 of megabytes costs the server)."""
    if len(password) > MAX_PASSWORD_LENGTH:
        raise Unprocessable(f"{name}: at most {MAX_PASSWORD_LENGTH} characters")
    return password


def check_policy(user_id: str, password: str) -> None:
    """Refuse a password that does not meet the policy, saying which rule it breaks (never
    repeating the password)."""
    password_argument("password", password)
    problems = []
    if len(password) < MIN_PASSWORD_LENGTH:
        problems.append(f"at least {MIN_PASSWORD_LENGTH} characters")
    classes = sum(
        [
            any(c.islower() for c in password),
            any(c.isupper() for c in password),
            any(c.isdigit() for c in password),
            any(not c.isalnum() for c in password),
        ]
    )
    if classes < 3:
        problems.append("three of: lower case, upper case, digit, symbol")
    low = password.lower()
    if user_id.lower() in low:
        problems.append("must not contain the user id")
    if any(w in low for w in _COMMON):
        problems.append("must not contain a common password")
    if problems:
        raise Unprocessable("password policy: " + "; ".join(problems))


# -- bounded password work -----------------------------------------------------------------


class PasswordGate:
    """Bounds how many argon2 computations run at once (each takes tens of MiB and a core for a
    tenth of a second).  A request that finds every slot taken is refused at once with
    :class:`Busy`: it neither queues nor holds a database connection, so a flood of logins cannot
    starve anyone else's requests."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("the password gate needs at least one slot")
        self.size = size
        self._sem = threading.BoundedSemaphore(size)

    def acquire(self) -> None:
        """Take a slot now or raise :class:`Busy`; may be released from another thread (an
        async route takes it in the event loop, so a busy answer costs no worker thread)."""
        if not self._sem.acquire(blocking=False):
            raise Busy(
                f"the server is checking {self.size} passwords already; try again in "
                f"{Busy.retry_after_s} s"
            )

    def release(self) -> None:
        self._sem.release()

    @contextmanager
    def held(self) -> Iterator[None]:
        """Release a slot taken with :meth:`acquire` when the block ends, however it ends."""
        try:
            yield
        finally:
            self._sem.release()

    @contextmanager
    def slot(self) -> Iterator[None]:
        self.acquire()
        with self.held():
            yield


# -- password attempts ---------------------------------------------------------------------


@dataclass(frozen=True)
class Attempt:
    """One password attempt between its slot and its outcome.  ``slot`` is the failure count
    including this attempt (0: no slot, the password is not checked); ``refusal`` says why."""

    given: str
    user_id: str | None
    password_hash: str
    slot: int
    refusal: str | None


def begin_attempt(db: Session, *, user_id: str, max_failures: int) -> Attempt:
    """Take an attempt slot with one atomic statement (the caller commits before checking the
    password): the count goes up before the check, so parallel guesses cannot share a slot."""
    p = find_person(db, user_id)
    if p is None:
        return Attempt(user_id, None, dummy_hash(), 0, "unknown user id")
    row = db.execute(
        update(Person)
        .where(
            Person.user_id == p.user_id,
            Person.status == "active",
            Person.failed_logins < max_failures,
        )
        .values(failed_logins=Person.failed_logins + 1)
        .returning(Person.failed_logins, Person.password_hash)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if row is None:
        why = (
            f"account is {p.status}"
            if p.status != "active"
            else f"{max_failures} attempts already counted"
        )
        return Attempt(user_id, p.user_id, dummy_hash(), 0, why)
    return Attempt(user_id, p.user_id, str(row[1]), int(row[0]), None)


def check_attempt(a: Attempt, password: str) -> bool:
    """The argon2 check, outside any transaction.  An attempt without a slot is checked against
    the dummy hash (the same time) and fails."""
    if a.slot <= 0 or a.user_id is None:
        check_password_hash(a.password_hash, password)  # the same time as a real check
        return False
    now = datetime.now(UTC)  # only how fast: the outcome never depends on it
    if REENTRY.matches(a.user_id, a.password_hash, password, now, REENTRY_IDLE):
        return True
    if check_password_hash(a.password_hash, password):
        REENTRY.remember(a.user_id, a.password_hash, password, now)
        return True
    REENTRY.forget(a.user_id)
    return False


def finish_attempt(
    db: Session,
    a: Attempt,
    ok: bool,
    *,
    at: datetime,
    purpose: str,
    max_failures: int,
    limiter: audit.RefusalLimiter | None = None,
) -> Person:
    """Record the outcome (the caller commits, also when this raises).  A success clears the
    failures counted up to its slot; the failure that finds ``max_failures`` counted locks the
    account and raises a security alert.  Every refusal says :data:`WRONG`."""
    if a.refusal is not None or a.user_id is None:
        audit.append_limited(
            db,
            at=at,
            key=(f"{purpose}.refused", a.user_id or "(unknown)"),
            actor=(a.user_id or "(unknown)")[:MAX_USER_ID],
            action=f"{purpose}.refused" if a.user_id else f"{purpose}.failed",
            object_type="person",
            object_id=(a.user_id or a.given[:MAX_USER_ID] or "(empty)"),
            reason=a.refusal,
            limiter=limiter,
        )
        if a.user_id is not None and a.refusal and a.refusal.startswith("account is"):
            raise _refused(
                purpose,
                f"account {a.user_id} is locked or disabled; an administrator must unlock it",
            )
        raise _refused(purpose, "user id or password is wrong")
    if not ok:
        return _failed(db, a, at=at, purpose=purpose, max_failures=max_failures)
    row = db.execute(
        update(Person)
        .where(
            Person.user_id == a.user_id,
            Person.status == "active",
            Person.password_hash == a.password_hash,
        )
        .values(
            failed_logins=case(
                (Person.failed_logins >= a.slot, Person.failed_logins - a.slot), else_=0
            )
        )
        .returning(Person.user_id)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if row is None:
        why = "the account was locked, disabled or its password changed during the check"
        audit_person(db, at, a.user_id, f"{purpose}.refused", a.user_id, reason=why)
        raise _refused(purpose, f"account {a.user_id} was locked or changed during the check")
    p = db.get(Person, a.user_id, populate_existing=True)
    assert p is not None
    if p.must_change_password and purpose not in ("login", "password_change"):
        why = "password set by someone else, not yet changed by its owner"
        audit_person(db, at, p.user_id, f"{purpose}.refused", p.user_id, reason=why)
        raise Forbidden(
            f"the password of {p.user_id} was set by an administrator: its owner must change it "
            f"(POST /v1/me/password) before it can be used for {purpose}"
        )
    return p


def _failed(db: Session, a: Attempt, *, at: datetime, purpose: str, max_failures: int) -> Person:
    assert a.user_id is not None
    audit_person(db, at, a.user_id, f"{purpose}.failed", a.user_id,
                 new={"failed_logins": a.slot}, reason="wrong password")  # fmt: skip
    locked = db.execute(
        update(Person)
        .where(
            Person.user_id == a.user_id,
            Person.status == "active",
            Person.failed_logins >= max_failures,
        )
        .values(status="locked")
        .returning(Person.failed_logins)
        .execution_options(synchronize_session=False)
    ).one_or_none()
    if locked is not None:
        revoke_tokens(db, a.user_id)
        db.add(
            Alert(
                kind="security.lockout",
                unit_id=None,
                message=(
                    f"account {a.user_id} locked after {locked[0]} failed attempts ({purpose})"
                ),
                created_at=at,
            )
        )
        why = f"{locked[0]} consecutive failed attempts"
        audit_person(db, at, "system", "person.locked", a.user_id,
                     old={"status": "active"}, new={"status": "locked"}, reason=why)  # fmt: skip
        raise _refused(purpose, f"user id or password is wrong; account {a.user_id} is now locked")
    raise _refused(purpose, "user id or password is wrong")


def revoke_tokens(db: Session, user_id: str, keep: str | None = None) -> None:
    """End the person's sessions (all but the one whose token digest is ``keep``)."""
    for t in db.scalars(select(Token).where(Token.user_id == user_id, Token.revoked.is_(False))):
        if t.token_hash != keep:
            t.revoked = True
