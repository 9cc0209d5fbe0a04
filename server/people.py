"""People, roles and sessions: argon2id password hashes, the password policy, lockout after
repeated failures (with an immediate security alert, 21 CFR 11.300(d)), short-lived bearer tokens,
and the one place that decides who may do what at which site.

A role is granted at a site, or at ``*`` (every site).  Permissions are named actions; each lists
the roles that hold it.  Batch-scoped actions need a grant at the batch's site (or ``*``);
organisation-wide actions (people, specifications, the audit trail) need a grant at ``*``.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from server import audit
from server.db import Alert, AuditEntry, Person, RoleGrant, Token
from server.errors import Conflict, Forbidden, NotFound, Unauthorized, Unprocessable

ROLES = ("operator", "qa_reviewer", "qa_approver", "admin", "auditor")
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
_COMMON = {"password", "123456", "qwerty", "letmein", "welcome", "admin", "changeme"}


def hash_password(password: str) -> str:
    return _HASHER.hash(password)


def check_password_hash(password_hash: str, password: str) -> bool:
    try:
        return _HASHER.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def check_policy(user_id: str, password: str) -> None:
    """Refuse a password that does not meet the policy, saying which rule it breaks."""
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


@dataclass(frozen=True)
class Principal:
    """Who is calling: a person with their grants, or the bootstrap ``system`` admin."""

    user_id: str
    printed_name: str
    grants: frozenset[tuple[str, str]]  # (role, site)

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
    p = db.get(Person, user_id)
    if p is None:
        raise NotFound(f"person {user_id} does not exist")
    return p


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
) -> Person:
    if not user_id or len(user_id) > 64 or not all(c.isalnum() or c in "._-" for c in user_id):
        raise Unprocessable(
            f"user id {user_id!r}: 1-64 characters of letters, digits, '.', '_' or '-'"
        )
    if db.get(Person, user_id) is not None:
        raise Conflict(f"person {user_id} already exists")
    if not printed_name.strip():
        raise Unprocessable("printed name is required (it appears on every signature)")
    check_policy(user_id, password)
    p = Person(
        user_id=user_id,
        printed_name=printed_name.strip(),
        password_hash=hash_password(password),
        status="active",
        failed_logins=0,
        created_at=at,
    )
    db.add(p)
    db.flush()
    audit.append(
        db,
        at=at,
        actor=actor.user_id,
        action="person.created",
        object_type="person",
        object_id=user_id,
        new={"printed_name": p.printed_name, "status": "active"},
        reason=reason,
    )
    for role, site in grants:
        grant(db, actor, at=at, user_id=user_id, role=role, site_id=site, reason=reason)
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
    person(db, user_id)
    if role not in ROLES:
        raise Unprocessable(f"role {role!r} is not one of {', '.join(ROLES)}")
    if not site_id:
        raise Unprocessable("site_id is required ('*' grants the role at every site)")
    if db.get(RoleGrant, (user_id, role, site_id)) is not None:
        raise Conflict(f"{user_id} already holds {role} at {site_id}")
    db.add(RoleGrant(user_id=user_id, role=role, site_id=site_id))
    audit.append(
        db,
        at=at,
        actor=actor.user_id,
        action="role.granted",
        object_type="person",
        object_id=user_id,
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
    g = db.get(RoleGrant, (user_id, role, site_id))
    if g is None:
        raise NotFound(f"{user_id} does not hold {role} at {site_id}")
    db.delete(g)
    audit.append(
        db,
        at=at,
        actor=actor.user_id,
        action="role.revoked",
        object_type="person",
        object_id=user_id,
        old={"role": role, "site_id": site_id},
        reason=reason,
    )


def set_status(
    db: Session, actor: Principal, *, at: datetime, user_id: str, status: str, reason: str
) -> None:
    p = person(db, user_id)
    old = p.status
    if old == status:
        raise Conflict(f"{user_id} is already {status}")
    p.status = status
    p.failed_logins = 0
    if status != "active":
        _revoke_tokens(db, user_id)
    audit.append(
        db,
        at=at,
        actor=actor.user_id,
        action=f"person.{'unlocked' if status == 'active' else status}",
        object_type="person",
        object_id=user_id,
        old={"status": old},
        new={"status": status},
        reason=reason,
    )


def set_password(
    db: Session,
    actor: Principal,
    *,
    at: datetime,
    user_id: str,
    password: str,
    reason: str,
    keep_token: str | None = None,
) -> None:
    """A new password under the policy; every other session of the person ends.  The audit
    entry records that it changed and why, never a hash."""
    p = person(db, user_id)
    check_policy(user_id, password)
    if check_password_hash(p.password_hash, password):
        raise Unprocessable("password policy: the new password must differ from the current one")
    p.password_hash = hash_password(password)
    p.failed_logins = 0
    _revoke_tokens(db, user_id, keep=_digest(keep_token) if keep_token else None)
    audit.append(
        db,
        at=at,
        actor=actor.user_id,
        action="person.password_changed" if actor.user_id == user_id else "person.password_reset",
        object_type="person",
        object_id=user_id,
        reason=reason,
    )


def _revoke_tokens(db: Session, user_id: str, keep: str | None = None) -> None:
    """End the person's sessions (all but the one whose token digest is ``keep``)."""
    for t in db.scalars(select(Token).where(Token.user_id == user_id, Token.revoked.is_(False))):
        if t.token_hash != keep:
            t.revoked = True


def authenticate_password(
    db: Session, *, at: datetime, user_id: str, password: str, max_failures: int, purpose: str
) -> Person:
    """Check a user id and password (login or e-signature).  A failure is counted and audited;
    the ``max_failures``-th consecutive failure locks the account and raises a security alert.
    The caller must commit even when this raises, so the failure is kept."""
    p = db.get(Person, user_id)
    if p is None:
        audit.append(
            db,
            at=at,
            actor=user_id[:64] or "(empty)",
            action=f"{purpose}.failed",
            object_type="person",
            object_id=user_id[:128] or "(empty)",
            reason="unknown user id",
        )
        raise Unauthorized("user id or password is wrong")
    if p.status != "active":
        audit.append(
            db,
            at=at,
            actor=user_id,
            action=f"{purpose}.refused",
            object_type="person",
            object_id=user_id,
            reason=f"account is {p.status}",
        )
        raise Unauthorized(f"account {user_id} is {p.status}; an administrator must unlock it")
    if not check_password_hash(p.password_hash, password):
        p.failed_logins += 1
        audit.append(
            db,
            at=at,
            actor=user_id,
            action=f"{purpose}.failed",
            object_type="person",
            object_id=user_id,
            new={"failed_logins": p.failed_logins},
            reason="wrong password",
        )
        if p.failed_logins >= max_failures:
            p.status = "locked"
            _revoke_tokens(db, user_id)
            db.add(
                Alert(
                    kind="security.lockout",
                    unit_id=None,
                    message=(
                        f"account {user_id} locked after {p.failed_logins} failed attempts "
                        f"({purpose})"
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
                object_id=user_id,
                old={"status": "active"},
                new={"status": "locked"},
                reason=f"{p.failed_logins} consecutive failed attempts",
            )
            raise Unauthorized(f"user id or password is wrong; account {user_id} is now locked")
        raise Unauthorized("user id or password is wrong")
    if p.failed_logins:
        p.failed_logins = 0
    return p


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
    t = db.get(Token, _digest(token))
    if t is None or t.revoked:
        raise Unauthorized("the token is not valid; log in again")
    expires = t.expires_at if t.expires_at.tzinfo else t.expires_at.replace(tzinfo=at.tzinfo)
    if expires <= at:
        raise Unauthorized("the token has expired; log in again")
    p = db.get(Person, t.user_id)
    if p is None or p.status != "active":
        raise Unauthorized(f"account {t.user_id} is not active")
    return Principal(p.user_id, p.printed_name, grants_of(db, p.user_id))


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


def _audit_time(t: datetime) -> str:
    """The audit trail's own time format (UTC, fixed width), so strings compare as times."""
    from datetime import UTC

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
