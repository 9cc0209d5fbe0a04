"""The out-of-specification exceptional release: a case opened on the treating physician's
written request, its risk evaluation, the physician's acceptance, the release (signed through
:func:`server.quality.review.sign`) and the notification due within 48 hours."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from server.audit import trail as audit
from server.batches import lock_batch, summary
from server.db import (
    OosCase,
)
from server.errors import Conflict, NotFound, Unprocessable
from server.people.service import Principal
from server.quality.record import load_review
from server.text import storable

# -- the out-of-specification exceptional release -------------------------------------------


def open_oos(
    db: Session,
    actor: Principal,
    *,
    at: datetime,
    batch_id: str,
    jurisdiction: str,
    physician: str,
    request_text: str,
) -> OosCase:
    summ = lock_batch(db, batch_id)
    actor.require("release", summ.site_id)
    r = load_review(db, batch_id)
    ev = r.evaluations.get(jurisdiction)
    if ev is None or ev.disposition != "not_releasable":
        raise Conflict(
            f"batch {batch_id} is not out of specification in {jurisdiction}: no exceptional "
            "release is needed"
        )
    if not physician.strip() or not request_text.strip():
        raise Unprocessable("the treating physician's name and written request are required")
    storable("physician", physician)
    storable("request", request_text)
    if db.scalars(
        select(OosCase).where(
            OosCase.batch_id == batch_id,
            OosCase.jurisdiction == jurisdiction,
            OosCase.state.in_(("requested", "evaluated", "accepted")),
        )
    ).first():
        raise Conflict(f"an exceptional-release case for {batch_id} {jurisdiction} is open")
    c = OosCase(
        batch_id=batch_id,
        jurisdiction=jurisdiction,
        state="requested",
        physician=physician,
        request_text=request_text,
        requested_by=actor.user_id,
        requested_at=at,
    )
    db.add(c)
    db.flush()
    audit.append(
        db,
        at=at,
        actor=actor.user_id,
        action="oos.requested",
        object_type="oos_case",
        object_id=str(c.id),
        new={
            "batch_id": batch_id,
            "jurisdiction": jurisdiction,
            "physician": physician,
            "failing": [v.attribute for v in ev.failed()],
        },
        reason=request_text,
    )
    return c


def case_site(db: Session, case_id: int) -> str:
    c = db.get(OosCase, case_id)
    if c is None:
        raise NotFound(f"exceptional-release case {case_id} does not exist")
    return summary(db, c.batch_id).site_id


_OOS_STEPS = {
    "risk-evaluation": ("requested", "evaluated"),
    "physician-acceptance": ("evaluated", "accepted"),
    "notification": ("released", "notified"),
}


def oos_step(
    db: Session, actor: Principal, *, at: datetime, case_id: int, step: str, text_: str
) -> OosCase:
    c = db.get(OosCase, case_id)
    if c is None:
        raise NotFound(f"exceptional-release case {case_id} does not exist")
    actor.require("release", lock_batch(db, c.batch_id).site_id)
    db.refresh(c)  # the case as the lock holder left it
    if step not in _OOS_STEPS:
        raise NotFound(f"unknown step {step!r}; steps: {', '.join(_OOS_STEPS)}")
    before, after = _OOS_STEPS[step]
    if c.state != before:
        raise Conflict(f"case {case_id} is {c.state}; {step} needs it to be {before}")
    if not text_.strip():
        raise Unprocessable(f"{step}: the text (evaluation, acceptance or reference) is required")
    storable(f"{step} text", text_)
    if step == "risk-evaluation":
        c.risk_evaluation, c.evaluated_by, c.evaluated_at = text_, actor.user_id, at
    elif step == "physician-acceptance":
        c.acceptance_text, c.accepted_at = text_, at
    else:
        c.notification_reference, c.notified_at = text_, at
    c.state = after
    audit.append(
        db,
        at=at,
        actor=actor.user_id,
        action=f"oos.{after}",
        object_type="oos_case",
        object_id=str(case_id),
        old={"state": before},
        new={"state": after, "text": text_},
        reason=text_,
    )
    return c
