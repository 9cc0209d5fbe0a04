"""Response and request bodies of the audit-trail and alerts API."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from server.schemas import TEXT


class AuditEntryOut(BaseModel):
    seq: int  # the global id (the paging cursor)
    stream: str  # the chain it is in ("legacy": stored before streams)
    stream_seq: int  # its place there
    at: str
    actor: str
    action: str
    object_type: str
    object_id: str
    old: Any
    new: Any
    reason: str | None
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    """A page of ``GET /v1/audit``: entries in the order they became visible (not always by
    ``seq`` on PostgreSQL: see ``server.audit.trail.page``)."""

    entries: list[AuditEntryOut]
    next_after: int  # the last entry's seq (``after`` when none): pass it as the next ``after``


class Acknowledgement(BaseModel):
    by: str
    at: str | None
    note: str


class AlertOut(BaseModel):
    id: int
    kind: str
    site_id: str | None
    batch_id: str | None
    unit_id: str | None
    message: str
    created_at: str | None
    acknowledged: Acknowledgement | None


class AckBody(BaseModel):
    alert_id: int = Field(ge=1, le=2**31 - 1)  # alerts.id is a 32-bit column
    note: str = Field(min_length=1, max_length=TEXT)


class AckOut(BaseModel):
    alert_id: int
    by: str
    at: str | None
    note: str
