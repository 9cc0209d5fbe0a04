"""People, roles and sessions: accounts and their role grants, the one place that decides who
may do what at which site (:class:`Principal`), password changes and resets, short-lived bearer
tokens.  Passwords (hashing, policy, attempts, lockout) are :mod:`server.people.passwords`, user
ids :mod:`server.people.ids`, separation of duties in time :mod:`server.people.duties`.

A role is granted at a site, or at ``*`` (every site).  Permissions are named actions; each lists
the roles that hold it.  Batch-scoped actions need a grant at the batch's site (or ``*``);
organisation-wide actions (people, specifications, the audit trail) need a grant at ``*``.

Separation of duties (issue 18): no one grants, revokes or changes their own roles, status or
(through the administrator's route) password; a password set by someone else must be changed by
its owner before the account does anything else.

Over 400 lines: people, roles, tokens and the duties rules change together (issue 18's separation
of duties).
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ebr_core.vocab import Role
from server.db import Person, RoleGrant, Token
from server.errors import (
    Conflict,
    Forbidden,
    NotFound,
    Unauthorized,
    Unprocessable,
)
from server.people.ids import MAX_USER_ID, audit_person, find_person, new_user_id, skeleton
from server.people.passwords import (
    begin_attempt,
    check_attempt,
    check_policy,
    finish_attempt,
    hash_password,
    password_argument,
    revoke_tokens,
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
    new = {"printed_name": p.printed_name, "status": "active"}
    audit_person(db, at, actor.user_id, "person.created", uid, new=new, reason=reason)
    for role, site in grants:
        grant(db, actor, at=at, user_id=uid, role=role, site_id=site, reason=reason)
    return p


def _change_grant(
    db: Session,
    actor: Principal,
    *,
    at: datetime,
    user_id: str,
    role: str,
    site_id: str,
    reason: str,
    granted: bool,
) -> None:
    p = person(db, user_id)
    _not_self(actor, p.user_id, "grant roles to" if granted else "revoke roles of")
    if granted and role not in ROLES:
        raise Unprocessable(f"role {role[:40]!r} is not one of {', '.join(ROLES)}")
    if granted and not site_id:
        raise Unprocessable("site_id is required ('*' grants the role at every site)")
    held = db.get(RoleGrant, (p.user_id, role, site_id))
    if granted and held is not None:
        raise Conflict(f"{p.user_id} already holds {role} at {site_id}")
    if not granted and held is None:
        raise NotFound(f"{p.user_id} does not hold {role[:40]} at {site_id}")
    if granted:
        db.add(RoleGrant(user_id=p.user_id, role=role, site_id=site_id))
    else:
        db.delete(held)
    change = {"role": role, "site_id": site_id}
    old, new = (None, change) if granted else (change, None)
    action = "role.granted" if granted else "role.revoked"
    audit_person(db, at, actor.user_id, action, p.user_id, old=old, new=new, reason=reason)


# Grant ``role`` at ``site_id`` (``*``: every site) to someone else, or revoke such a grant.
grant = partial(_change_grant, granted=True)
revoke_grant = partial(_change_grant, granted=False)


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
        revoke_tokens(db, p.user_id)
    action = f"person.{'unlocked' if status == 'active' else status}"
    audit_person(db, at, actor.user_id, action, p.user_id,
                 old={"status": old}, new={"status": status}, reason=reason)  # fmt: skip


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
    audit_person(db, at, actor.user_id, "person.password_reset", p.user_id, reason=reason)


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
    revoke_tokens(db, p.user_id, keep=_digest(keep_token) if keep_token else None)
    audit_person(
        db, at, p.user_id, "person.password_changed", p.user_id, reason="changed by the person"
    )


def _store_password(db: Session, p: Person, password_hash: str, *, must_change: bool) -> None:
    p.password_hash = password_hash
    p.failed_logins = 0
    p.must_change_password = must_change
    if must_change:
        revoke_tokens(db, p.user_id)


# -- sessions ---------------------------------------------------------------------------------


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
    audit_person(
        db, at, p.user_id, "session.opened", p.user_id, new={"expires_at": expires.isoformat()}
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


def end_session(db: Session, token: str, *, at: datetime) -> None:
    t = db.get(Token, _digest(token))
    if t is None or t.revoked:
        return
    t.revoked = True
    audit_person(db, at, t.user_id, "session.closed", t.user_id)
