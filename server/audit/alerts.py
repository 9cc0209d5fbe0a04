"""Acknowledging alerts without changing them.

Alerts are append-only (migration 0007: triggers refuse UPDATE and DELETE), so an alert that was
raised stays exactly as raised.  Taking note of one adds a row to ``alert_acks``: who, when, and
what they noted.  An alert is acknowledged once (a unique index decides between two people who
acknowledge it at the same moment); acknowledging hides nothing: a batch's clock alerts count as
exceptions in its review whether or not someone acknowledged them.

Acknowledging is a quality act: it needs ``deviation.review`` (QA reviewers and approvers) at the
alert's site, or at every site (``*``) for an alert that belongs to no site (security, licences).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from server.audit import trail as audit
from server.db import Alert, AlertAck
from server.errors import Conflict, NotFound, Unprocessable
from server.people.service import Principal
from server.text import iso, storable

PERMISSION = "deviation.review"
MAX_NOTE = 2000


def _note(note: str) -> str:
    n = note.strip()
    if not n:
        raise Unprocessable("an acknowledgement needs a note: what was checked or done")
    if len(n) > MAX_NOTE:
        raise Unprocessable(f"the note is {len(n)} characters; at most {MAX_NOTE} are kept")
    return storable("note", n)


def acknowledge(
    db: Session, actor: Principal, *, at: datetime, alert_id: int, note: str
) -> AlertAck:
    """Record that ``actor`` took note of the alert (the alert itself is never changed)."""
    a = db.get(Alert, alert_id)
    if a is None:
        raise NotFound(f"alert {alert_id} does not exist")
    actor.require(PERMISSION, a.site_id)
    text_ = _note(note)
    if a.acks:
        raise Conflict(_already(a.acks[0]))
    ack = AlertAck(alert_id=alert_id, user_id=actor.user_id, at=at, note=text_)
    try:
        with db.begin_nested():
            db.add(ack)
    except IntegrityError as e:  # someone acknowledged it at the same moment
        db.expire(a)
        raise Conflict(
            _already(a.acks[0]) if a.acks else f"alert {alert_id} was acknowledged"
        ) from e
    audit.append(
        db,
        at=at,
        actor=actor.user_id,
        action="alert.acknowledged",
        object_type="alert",
        object_id=str(alert_id),
        new={"kind": a.kind, "batch_id": a.batch_id, "note": text_},
        reason=text_,
    )
    return ack


def _already(ack: AlertAck) -> str:
    return (
        f"alert {ack.alert_id} was already acknowledged by {ack.user_id} at {iso(ack.at)}: "
        f"{ack.note}"
    )


def ack_json(ack: AlertAck) -> dict[str, object]:
    return {"alert_id": ack.alert_id, "by": ack.user_id, "at": iso(ack.at), "note": ack.note}


def alert_json(a: Alert) -> dict[str, Any]:
    return {
        "id": a.id,
        "kind": a.kind,
        "site_id": a.site_id,
        "batch_id": a.batch_id,
        "unit_id": a.unit_id,
        "message": a.message,
        "created_at": iso(a.created_at),
        "acknowledged": None
        if not a.acks
        else {"by": a.acks[0].user_id, "at": iso(a.acks[0].at), "note": a.acks[0].note},
    }
