"""People, roles and sessions: argon2id password hashes, the password policy, lockout after
repeated failures (with an immediate security alert, 21 CFR 11.300(d)), short-lived bearer tokens,
and the one place that decides who may do what at which site.

A role is granted at a site, or at ``*`` (every site).  Permissions are named actions; each lists
the roles that hold it.  Batch-scoped actions need a grant at the batch's site (or ``*``);
organisation-wide actions (people, specifications, the audit trail) need a grant at ``*``.

Security rules kept here (issue 18):

- **Password attempts** take a slot first, with one atomic statement (``UPDATE ... SET
  failed_logins = failed_logins + 1 WHERE failed_logins < max RETURNING``), and only an attempt
  that holds a slot has its password checked: however many guesses arrive in parallel, at most
  ``max_failures`` are checked before the account locks.  The argon2 check runs outside any
  database transaction (:func:`begin_attempt`, :func:`check_attempt`, :func:`finish_attempt`),
  with bounded concurrency (:class:`PasswordGate`).
- **Unknown ids** are checked against a dummy hash with the same parameters and answered with
  the same message as a wrong password or a locked account, in the same time.
- **User ids** are ASCII ``[a-z0-9._-]``, stored lower case, and refused when their
  :func:`skeleton` equals an existing one's.
- **Separation of duties**: no one grants, revokes or changes their own roles, status or (through
  the administrator's route) password; a password set by someone else must be changed by its owner
  before the account does anything else; whoever administered anyone's access during a batch's
  review window, and any account whose password someone else set during it, cannot sign that
  batch (:func:`signing_barred`).
"""

from __future__ import annotations

import hashlib
import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import case, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ebr_core.vocab import Role
from server.audit import trail as audit
from server.db import Alert, AuditEntry, Person, RoleGrant, Token
from server.errors import (
    Busy,
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
    Unprocessable,
)

ROLES = tuple(Role)  # ebr_core.vocab: the one list of roles
ALL_SITES = "*"

PERMISSIONS: dict[str, frozenset[str]] = {
    "batch.read": frozenset({"operator", "qa_reviewer", "qa_approver", "auditor", "admin"}),
    "queue.read": frozenset({"qa_reviewer", "qa_approver", "auditor"}),
    "results.write": frozenset({"qa_reviewer", "qa_approver"}),
    "deviation.review": frozenset({"qa_reviewer", "qa_approver"}),
    "sign.review": frozenset({"qa_reviewer", "qa_approver"}),
    "release": frozenset({"qa_approver"}),
    "report.read": frozenset({"qa_reviewer", "qa_approver", "auditor"}),
    "alerts.read": frozenset({"operator", "qa_reviewer", "qa_approver", "auditor", "admin"}),
    "audit.read": frozenset({"auditor", "admin"}),
    "people.manage": frozenset({"admin"}),
    "units.manage": frozenset({"admin"}),
    "spec.publish": frozenset({"qa_approver"}),
    "custody.record": frozenset({"operator"}),
    "custody.read": frozenset({"operator", "qa_reviewer", "qa_approver", "auditor"}),
    "licence.manage": frozenset({"qa_approver", "admin"}),
}

_HASHER = PasswordHasher()  # argon2id, the library's current parameters
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


# -- user ids ----------------------------------------------------------------------------------

MAX_USER_ID = 64
_USER_ID = re.compile(r"[a-z0-9](?:[a-z0-9._-]*[a-z0-9])?")
RESERVED_IDS = frozenset({"system", "edge", "anonymous"})
_SKELETON_PAIRS = (("m", "rn"), ("w", "vv"), ("0", "o"), ("1", "l"), ("i", "l"))
_SEPARATORS = re.compile(r"[._-]+")


def skeleton(user_id: str) -> str:
    """The form two ids share when a reader could take one for the other: lower case; ``0`` as
    ``o``; ``1``, ``i`` and ``l`` as ``l``; ``m`` as ``rn`` and ``w`` as ``vv`` (expanded, so
    that no order of replacements matters); every run of ``.``, ``_`` and ``-`` as one ``.``.
    Two ids with the same skeleton cannot both exist.  At most twice the id's length."""
    s = user_id.lower()
    for a, b in _SKELETON_PAIRS:
        s = s.replace(a, b)
    return _SEPARATORS.sub(".", s)


def canonical_user_id_problem(user_id: str) -> str | None:
    """Why ``user_id`` is not a canonical id (None if it is)."""
    if not user_id or len(user_id) > MAX_USER_ID:
        return f"1-{MAX_USER_ID} characters"
    bad = sorted({c for c in user_id if not (c.isascii() and (c.isalnum() or c in "._-"))})
    if bad:
        shown = ", ".join(f"U+{ord(c):04X}" for c in bad[:5])
        return f"only ASCII letters, digits, '.', '_' and '-' (not {shown})"
    if user_id != user_id.lower():
        return "lower case only"
    if not _USER_ID.fullmatch(user_id):
        return "must start and end with a letter or digit"
    return None


def new_user_id(user_id: str) -> str:
    """The stored form of a new id (ASCII lower case), or a refusal saying what is expected."""
    folded = user_id.lower() if user_id.isascii() else user_id
    why = canonical_user_id_problem(folded)
    if why is not None:
        raise Unprocessable(
            f"user id: {why}; expected 1-{MAX_USER_ID} of a-z, 0-9, '.', '_', '-' "
            "(stored in lower case)"
        )
    if folded in RESERVED_IDS:
        raise Unprocessable(f"user id {folded!r} is reserved")
    return folded


def find_person(db: Session, given: str) -> Person | None:
    """The person a typed id names: the id in lower case (ids are stored so), else, for an id
    kept from before the rules (migration 0006), its exact spelling."""
    if not given or len(given) > MAX_USER_ID:
        return None
    p = db.get(Person, given.lower()) if given.isascii() else None
    if p is None and given != given.lower():
        p = db.get(Person, given)
    return p


@dataclass(frozen=True)
class Principal:
    """Who is calling: a person with their grants, or the bootstrap ``system`` admin.  A person
    whose password someone else set may only change it (``password_change_required``)."""

    user_id: str
    printed_name: str
    grants: frozenset[tuple[str, str]]  # (role, site)
    password_change_required: bool = False

    def roles(self) -> set[str]:
        return {r for r, _ in self.grants}

    def can(self, permission: str, site_id: str | None) -> bool:
        """``site_id`` None: an organisation-wide action (needs a grant at ``*``)."""
        allowed = PERMISSIONS[permission]
        for role, site in self.grants:
            if role in allowed and (site == ALL_SITES or (site_id is not None and site == site_id)):
                return True
        return False

    def sites(self, permission: str) -> set[str] | None:
        """Sites where the permission holds; None means every site."""
        out: set[str] = set()
        for role, site in self.grants:
            if role in PERMISSIONS[permission]:
                if site == ALL_SITES:
                    return None
                out.add(site)
        return out

    def require(self, permission: str, site_id: str | None) -> None:
        if not self.can(permission, site_id):
            where = f"site {site_id}" if site_id is not None else "every site (*)"
            need = ", ".join(sorted(PERMISSIONS[permission]))
            raise Forbidden(
                f"{self.user_id} may not {permission} at {where}: needs one of the roles {need}"
            )


SYSTEM = Principal("system", "System administrator (bootstrap token)", frozenset({("admin", "*")}))


def grants_of(db: Session, user_id: str) -> frozenset[tuple[str, str]]:
    return frozenset(
        (g.role, g.site_id)
        for g in db.scalars(select(RoleGrant).where(RoleGrant.user_id == user_id))
    )


def person(db: Session, user_id: str) -> Person:
    p = find_person(db, user_id)
    if p is None:
        raise NotFound(f"person {user_id[:MAX_USER_ID]!r} does not exist")
    return p


def _not_self(actor: Principal, target: str, what: str) -> None:
    """Separation of duties: no one administers their own access."""
    if actor.user_id == target:
        raise Forbidden(
            f"{actor.user_id} may not {what} their own account: another administrator must "
            "(separation of duties)"
        )


def create_person(
    db: Session,
    actor: Principal,
    *,
    at: datetime,
    user_id: str,
    printed_name: str,
    password: str,
    grants: list[tuple[str, str]],
    reason: str,
    password_hash: str | None = None,
) -> Person:
    """A new person with a password set by ``actor``: they must change it before anything else.
    ``password_hash``: the hash of ``password`` computed by the caller outside the transaction."""
    uid = new_user_id(user_id)
    if find_person(db, uid) is not None:
        raise Conflict(f"person {uid} already exists")
    sk = skeleton(uid)
    twin = db.scalar(select(Person.user_id).where(Person.id_skeleton == sk))
    if twin is not None:
        raise Conflict(
            f"user id {uid!r} is too easily confused with the existing {twin!r} "
            "(0/o, 1/i/l, rn/m, vv/w and '.', '_', '-' read alike): choose another"
        )
    name = printed_name.strip()
    if not name:
        raise Unprocessable("printed name is required (it appears on every signature)")
    check_policy(uid, password)
    p = Person(
        user_id=uid,
        printed_name=name,
        password_hash=password_hash or hash_password(password),
        status="active",
        failed_logins=0,
        created_at=at,
        must_change_password=True,
        id_skeleton=sk,
    )
    db.add(p)
    try:
        db.flush()
    except IntegrityError as e:  # a parallel creation of the same or a confusable id
        db.rollback()
        raise Conflict(f"person {uid} (or an id confusable with it) was just created") from e
    audit.append(
        db,
        at=at,
        actor=actor.user_id,
        action="person.created",
        object_type="person",
        object_id=uid,
        new={"printed_name": p.printed_name, "status": "active"},
        reason=reason,
    )
    for role, site in grants:
        grant(db, actor, at=at, user_id=uid, role=role, site_id=site, reason=reason)
    return p


def grant(
    db: Session,
    actor: Principal,
    *,
    at: datetime,
    user_id: str,
    role: str,
    site_id: str,
    reason: str,
) -> None:
    p = person(db, user_id)
    _not_self(actor, p.user_id, "grant roles to")
    if role not in ROLES:
        raise Unprocessable(f"role {role[:40]!r} is not one of {', '.join(ROLES)}")
    if not site_id:
        raise Unprocessable("site_id is required ('*' grants the role at every site)")
    if db.get(RoleGrant, (p.user_id, role, site_id)) is not None:
        raise Conflict(f"{p.user_id} already holds {role} at {site_id}")
    db.add(RoleGrant(user_id=p.user_id, role=role, site_id=site_id))
    audit.append(
        db,
        at=at,
        actor=actor.user_id,
        action="role.granted",
        object_type="person",
        object_id=p.user_id,
        new={"role": role, "site_id": site_id},
        reason=reason,
    )


def revoke_grant(
    db: Session,
    actor: Principal,
    *,
    at: datetime,
    user_id: str,
    role: str,
    site_id: str,
    reason: str,
) -> None:
    p = person(db, user_id)
    _not_self(actor, p.user_id, "revoke roles of")
    g = db.get(RoleGrant, (p.user_id, role, site_id))
    if g is None:
        raise NotFound(f"{p.user_id} does not hold {role[:40]} at {site_id}")
    db.delete(g)
    audit.append(
        db,
        at=at,
        actor=actor.user_id,
        action="role.revoked",
        object_type="person",
        object_id=p.user_id,
        old={"role": role, "site_id": site_id},
        reason=reason,
    )


def set_status(
    db: Session, actor: Principal, *, at: datetime, user_id: str, status: str, reason: str
) -> None:
    p = person(db, user_id)
    _not_self(actor, p.user_id, "change the status of")
    old = p.status
    if old == status:
        raise Conflict(f"{p.user_id} is already {status}")
    p.status = status
    p.failed_logins = 0
    if status != "active":
        _revoke_tokens(db, p.user_id)
    audit.append(
        db,
        at=at,
        actor=actor.user_id,
        action=f"person.{'unlocked' if status == 'active' else status}",
        object_type="person",
        object_id=p.user_id,
        old={"status": old},
        new={"status": status},
        reason=reason,
    )


def current_hash(db: Session, user_id: str) -> tuple[str, str]:
    """(stored id, password hash) of a person, read before checking a new password against the
    current one outside the transaction."""
    p = person(db, user_id)
    return p.user_id, p.password_hash


def reset_password(
    db: Session,
    actor: Principal,
    *,
    at: datetime,
    user_id: str,
    password_hash: str,
    reason: str,
) -> None:
    """An administrator sets someone else's password (hashed by the caller outside the
    transaction, after :func:`check_policy`): every session of the person ends and the owner must
    change it before the account does anything else."""
    p = person(db, user_id)
    _not_self(actor, p.user_id, "reset the password of (use POST /v1/me/password)")
    _store_password(db, p, password_hash, must_change=True)
    audit.append(
        db,
        at=at,
        actor=actor.user_id,
        action="person.password_reset",
        object_type="person",
        object_id=p.user_id,
        reason=reason,
    )


def change_own_password(
    db: Session,
    who: Principal | Person,
    *,
    at: datetime,
    password_hash: str,
    keep_token: str | None,
) -> None:
    """The owner sets their own password (already re-authenticated with the current one; hashed
    by the caller); their other sessions end.  The audit entry never holds a hash."""
    p = person(db, who.user_id)
    _store_password(db, p, password_hash, must_change=False)
    _revoke_tokens(db, p.user_id, keep=_digest(keep_token) if keep_token else None)
    audit.append(
        db,
        at=at,
        actor=p.user_id,
        action="person.password_changed",
        object_type="person",
        object_id=p.user_id,
        reason="changed by the person",
    )


def _store_password(db: Session, p: Person, password_hash: str, *, must_change: bool) -> None:
    p.password_hash = password_hash
    p.failed_logins = 0
    p.must_change_password = must_change
    if must_change:
        _revoke_tokens(db, p.user_id)


def _revoke_tokens(db: Session, user_id: str, keep: str | None = None) -> None:
    """End the person's sessions (all but the one whose token digest is ``keep``)."""
    for t in db.scalars(select(Token).where(Token.user_id == user_id, Token.revoked.is_(False))):
        if t.token_hash != keep:
            t.revoked = True


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
    ok = check_password_hash(a.password_hash, password)
    return ok and a.slot > 0


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
        audit.append(
            db,
            at=at,
            actor=a.user_id,
            action=f"{purpose}.refused",
            object_type="person",
            object_id=a.user_id,
            reason="the account was locked, disabled or its password changed during the check",
        )
        raise _refused(purpose, f"account {a.user_id} was locked or changed during the check")
    p = db.get(Person, a.user_id, populate_existing=True)
    assert p is not None
    if p.must_change_password and purpose not in ("login", "password_change"):
        audit.append(
            db,
            at=at,
            actor=p.user_id,
            action=f"{purpose}.refused",
            object_type="person",
            object_id=p.user_id,
            reason="password set by someone else, not yet changed by its owner",
        )
        raise Forbidden(
            f"the password of {p.user_id} was set by an administrator: its owner must change it "
            f"(POST /v1/me/password) before it can be used for {purpose}"
        )
    return p


def _failed(db: Session, a: Attempt, *, at: datetime, purpose: str, max_failures: int) -> Person:
    assert a.user_id is not None
    audit.append(
        db,
        at=at,
        actor=a.user_id,
        action=f"{purpose}.failed",
        object_type="person",
        object_id=a.user_id,
        new={"failed_logins": a.slot},
        reason="wrong password",
    )
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
        _revoke_tokens(db, a.user_id)
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
        audit.append(
            db,
            at=at,
            actor="system",
            action="person.locked",
            object_type="person",
            object_id=a.user_id,
            old={"status": "active"},
            new={"status": "locked"},
            reason=f"{locked[0]} consecutive failed attempts",
        )
        raise _refused(purpose, f"user id or password is wrong; account {a.user_id} is now locked")
    raise _refused(purpose, "user id or password is wrong")


def authenticate_password(
    db: Session, *, at: datetime, user_id: str, password: str, max_failures: int, purpose: str
) -> Person:
    """Check a user id and password (an e-signature in a session, e.g. custody) within the
    caller's transaction; the caller must commit even when this raises, so the failure is kept.
    The attempt slot is taken atomically before the check, so parallel attempts never share one;
    the ``max_failures``-th consecutive failure locks the account and raises a security alert.
    The argon2 check runs inside the caller's transaction, holding its row lock (PostgreSQL) or
    the write lock (SQLite): routes use :func:`begin_attempt`, :func:`check_attempt` and
    :func:`finish_attempt` with a :class:`PasswordGate` instead (``qa_api.Access``)."""
    password = password_argument("password", password)
    a = begin_attempt(db, user_id=user_id, max_failures=max_failures)
    ok = check_attempt(a, password)
    return finish_attempt(db, a, ok, at=at, purpose=purpose, max_failures=max_failures)


def issue_token(db: Session, p: Person, *, at: datetime, ttl_s: int) -> tuple[str, datetime]:
    token = secrets.token_urlsafe(32)
    expires = at + timedelta(seconds=ttl_s)
    db.add(Token(token_hash=_digest(token), user_id=p.user_id, expires_at=expires, revoked=False))
    audit.append(
        db,
        at=at,
        actor=p.user_id,
        action="session.opened",
        object_type="person",
        object_id=p.user_id,
        new={"expires_at": expires.isoformat()},
    )
    return token, expires


def _digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def principal_for_token(db: Session, token: str, *, at: datetime) -> Principal:
    if len(token) > 256:
        raise Unauthorized("the token is not valid; log in again")
    t = db.get(Token, _digest(token))
    if t is None or t.revoked:
        raise Unauthorized("the token is not valid; log in again")
    expires = t.expires_at if t.expires_at.tzinfo else t.expires_at.replace(tzinfo=at.tzinfo)
    if expires <= at:
        raise Unauthorized("the token has expired; log in again")
    p = db.get(Person, t.user_id)
    if p is None or p.status != "active":
        raise Unauthorized(f"account {t.user_id} is not active")
    return Principal(
        p.user_id, p.printed_name, grants_of(db, p.user_id), bool(p.must_change_password)
    )


# -- separation of duties ----------------------------------------------------------------------

# Audit actions by which a person administers someone's access (password, roles, status).
ACCESS_ACTIONS = (
    "person.created",
    "person.password_reset",
    "role.granted",
    "role.revoked",
    "person.disabled",
    "person.unlocked",
    "person.locked",
)
PASSWORD_SET_ACTIONS = ("person.created", "person.password_reset")


def _audit_time(t: datetime) -> str:
    """The audit trail's own time format (UTC, fixed width), so strings compare as times."""
    t = t.astimezone(UTC) if t.tzinfo else t
    return t.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def administered_access(db: Session, user_id: str, since: datetime) -> bool:
    """True if ``user_id`` set anyone's password (creation or reset), granted or revoked anyone's
    role, or changed anyone's status at or after ``since``.  Read from the hash-chained audit
    trail, which no one can edit: whoever administered access during a batch's review window
    could have given themselves, or an account they control, the means to sign it, so they may
    not sign that batch (separation of duties, issue 18).  The bootstrap ``system`` actor and
    the automatic lockout (actor ``system``) are never a signer."""
    hit = db.scalar(
        select(AuditEntry.seq)
        .where(
            AuditEntry.actor == user_id,
            AuditEntry.action.in_(ACCESS_ACTIONS),
            AuditEntry.at >= _audit_time(since),
        )
        .limit(1)
    )
    return hit is not None


def password_set_by_other(db: Session, user_id: str, since: datetime) -> str | None:
    """Which person other than ``user_id`` set their password (creation or reset) at or after
    ``since``, if any.  That person knew the password: even after the owner changed it (with the
    password they were given), the server cannot tell the owner from whoever set it, so the
    account does not sign a batch whose review window saw it.  The bootstrap token (``system``)
    is the installation itself, not a person who could sign, and is not counted."""
    return db.scalar(
        select(AuditEntry.actor)
        .where(
            AuditEntry.object_type == "person",
            AuditEntry.object_id == user_id,
            AuditEntry.action.in_(PASSWORD_SET_ACTIONS),
            AuditEntry.actor.notin_((user_id, SYSTEM.user_id)),
            AuditEntry.at >= _audit_time(since),
        )
        .order_by(AuditEntry.seq)
        .limit(1)
    )


def signing_barred(db: Session, user_id: str, since: datetime) -> str | None:
    """Why ``user_id`` may not sign a batch whose review window began at ``since`` (None: not
    barred by these rules)."""
    if administered_access(db, user_id, since):
        return (
            f"{user_id} administered people's access (passwords, roles or status) since "
            f"{_audit_time(since)}, when this batch began, and cannot sign it "
            "(separation of duties)"
        )
    setter = password_set_by_other(db, user_id, since)
    if setter is not None:
        return (
            f"the password of {user_id} was set by {setter} since {_audit_time(since)}, when this "
            "batch began: this account cannot sign it (separation of duties)"
        )
    return None


def end_session(db: Session, token: str, *, at: datetime) -> None:
    t = db.get(Token, _digest(token))
    if t is None or t.revoked:
        return
    t.revoked = True
    audit.append(
        db,
        at=at,
        actor=t.user_id,
        action="session.closed",
        object_type="person",
        object_id=t.user_id,
    )
