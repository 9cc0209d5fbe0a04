"""QA links between a batch's deviations (the issue's "comment, link, and close"): one deviation
named as related to another, with a reason; recorded (``deviation_links``, append-only) and
audited, and covered by the record hash once a batch has one (:mod:`server.quality.record`)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from server.audit import trail as audit
from server.batches import lock_batch
from server.db import DeviationLink
from server.errors import Conflict, NotFound, Unprocessable
from server.people.service import Principal
from server.quality.record import load_review
from server.text import need_reason


def link_deviations(
    db: Session,
    actor: Principal,
    *,
    at: datetime,
    batch_id: str,
    deviation_id: str,
    linked_to: str,
    reason: str,
) -> DeviationLink:
    """Link ``deviation_id`` to ``linked_to`` (both of this batch, not the same, not linked
    already in either direction, by the unit or by QA)."""
    summ = lock_batch(db, batch_id)
    actor.require("deviation.review", summ.site_id)
    need_reason(reason)
    devs = {d["deviation_id"]: d for d in load_review(db, batch_id).deviations()}
    missing = [d for d in (deviation_id, linked_to) if d not in devs]
    if missing:
        raise NotFound(f"batch {batch_id} has no deviation {', '.join(missing)}")
    if deviation_id == linked_to:
        raise Unprocessable(f"deviation {deviation_id} cannot be linked to itself")
    if linked_to in devs[deviation_id]["links"] or deviation_id in devs[linked_to]["links"]:
        raise Conflict(f"deviations {deviation_id} and {linked_to} are already linked")
    known = db.scalar(
        select(DeviationLink.id).where(
            DeviationLink.batch_id == batch_id,
            or_(
                (DeviationLink.deviation_id == deviation_id)
                & (DeviationLink.linked_to == linked_to),
                (DeviationLink.deviation_id == linked_to)
                & (DeviationLink.linked_to == deviation_id),
            ),
        )
    )
    if known is not None:
        raise Conflict(f"deviations {deviation_id} and {linked_to} are already linked")
    link = DeviationLink(batch_id=batch_id, deviation_id=deviation_id, linked_to=linked_to,
                         reason=reason, user_id=actor.user_id, at=at)  # fmt: skip
    db.add(link)
    db.flush()
    audit.append(
        db,
        at=at,
        actor=actor.user_id,
        action="deviation.linked",
        object_type="deviation",
        object_id=f"{batch_id}/{deviation_id}",
        new={"link": link.id, "linked_to": linked_to},
        reason=reason,
    )
    return link
