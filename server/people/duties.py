"""Separation of duties in time: whoever administered anyone's access during a batch's review
window, and any account whose password someone else set during it, cannot sign that batch
(:func:`signing_barred`), read from the hash-chained audit trail."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.db import AuditEntry
from server.people.service import SYSTEM

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
