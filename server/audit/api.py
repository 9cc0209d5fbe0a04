"""The audit trail and alerts API (alerts are append-only: an acknowledgement is a new row)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query
from sqlalchemy import select

from server.audit import alerts
from server.audit import trail as audit
from server.audit.schemas import AckBody, AckOut, AlertOut, AuditPage
from server.batches import at_sites
from server.db import Alert, AuditEntry
from server.people.auth import DB, Now, Scope, require
from server.people.service import Principal
from server.schemas import ID, MAX_ID

router = APIRouter(tags=["audit and alerts"])

ReadAudit = Annotated[Principal, Depends(require("audit.read", Scope.ORG))]
ReadAlerts = Annotated[Principal, Depends(require("alerts.read", Scope.SITES))]
ReadAllAlerts = Annotated[Principal, Depends(require("alerts.read", Scope.ORG))]
Acknowledge = Annotated[Principal, Depends(require("deviation.review", Scope.SITES))]


@router.get("/v1/audit", response_model=AuditPage)
def audit_query(
    who: ReadAudit,
    db: DB,
    object_type: Annotated[str | None, Query(max_length=32)] = None,
    object_id: Annotated[str | None, Query(max_length=128)] = None,
    actor: Annotated[str | None, Query(max_length=ID)] = None,
    stream: Annotated[str | None, Query(max_length=200)] = None,
    after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> Any:
    """The trail, filtered, in the order entries became visible (:func:`audit.page`: gap-free
    on PostgreSQL with several writers).  ``after``: the ``seq`` of the last entry already
    read (``next_after`` of the previous page; 0: from the start); the page holds what comes
    after that entry, which may include entries with a lower ``seq`` that committed later."""
    where: list[Any] = []
    if object_type:
        where.append(AuditEntry.object_type == object_type)
    if object_id:
        where.append(AuditEntry.object_id == object_id)
    if actor:
        where.append(AuditEntry.actor == actor)
    if stream:
        where.append(
            AuditEntry.stream == stream if stream != audit.LEGACY else AuditEntry.stream.is_(None)
        )
    rows = audit.page(db, after=after, limit=limit, where=where)
    return {
        "entries": [audit.to_json(e) for e in rows],
        "next_after": rows[-1].seq if rows else after,
    }


@router.get("/v1/alerts", response_model=list[AlertOut])
def list_alerts(who: ReadAlerts, db: DB) -> Any:
    q = at_sites(select(Alert), Alert.site_id, who.sites("alerts.read"))
    return [alerts.alert_json(a) for a in db.scalars(q.order_by(Alert.id))]


@router.get("/admin/alerts", response_model=list[AlertOut])
def all_alerts(who: ReadAllAlerts, db: DB) -> Any:
    return [alerts.alert_json(a) for a in db.scalars(select(Alert).order_by(Alert.id))]


@router.post("/v1/alerts/acknowledgements", status_code=201, response_model=AckOut)
def acknowledge_alert(body: AckBody, who: Acknowledge, db: DB, now: Now) -> Any:
    ack = alerts.acknowledge(db, who, at=now(), alert_id=body.alert_id, note=body.note)
    return alerts.ack_json(ack)
