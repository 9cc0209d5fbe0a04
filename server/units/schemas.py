"""Request and response bodies of the unit administration and unit API."""

from __future__ import annotations

from pydantic import BaseModel

from ebr_core.vocab import Role, UnitStatus
from server.log.receipts import ReceiptLog
from server.schemas import Document


class EnrolBody(BaseModel):
    site_id: str
    unit_id: str
    public_key: str  # the unit's public key file (JSON document or PEM)


class KeyBody(BaseModel):
    public_key: str


class RevokeBody(BaseModel):
    reason: str


class UnitOut(BaseModel):
    unit_id: str
    site_id: str
    status: UnitStatus


class KeyRotated(BaseModel):
    unit_id: str
    key_id: str


class UnitState(BaseModel):
    unit_id: str
    status: UnitStatus


class UnitInfo(BaseModel):
    unit_id: str
    status: UnitStatus
    head_seq: int
    head_hash: str
    events: int


class Head(BaseModel):
    unit_id: str
    head_seq: int
    head_hash: str
    checkpoint_seq: int


class Operator(BaseModel):
    user_id: str
    printed_name: str
    roles: list[Role]
    password_hash: str


class Operators(BaseModel):
    site_id: str
    users: list[Operator]


class Receipt(Document):
    """What the server stored of a segment, signed by the server's key (``server.pub``)."""

    unit_id: str
    head_seq: int
    head_hash: str
    stored: int
    duplicates: int
    received_at: str
    server_key_id: str
    # The transparency log: the segment's leaf, its inclusion proof and the signed checkpoint
    # (index None and no proof when nothing new was stored).
    log: ReceiptLog
    signature: str


class Health(BaseModel):
    status: str
