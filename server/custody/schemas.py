"""Request and response bodies of the custody (chain of identity) and transfer-licence API."""

from __future__ import annotations

from datetime import date
from typing import Any

from pydantic import BaseModel, Field

from ebr_core.vocab import CustodyStep
from server.schemas import ID, NAME, Document, Reason


class PartyBody(BaseModel):
    user_id: str = Field(max_length=ID)
    password: str
    meaning: str = Field(pattern="^(handed_over|received|administered)$")


class CustodyBody(BaseModel):
    # a step a person records (ebr_core.vocab.CustodyStep; "refused" is the server's own)
    kind: str = Field(pattern="^(handoff|received|infused)$")
    from_party: str | None = Field(default=None, max_length=ID)
    to_party: str = Field(min_length=1, max_length=ID)
    place: str = Field(min_length=1, max_length=NAME)
    bag_scan: str = Field(min_length=1, max_length=NAME)
    shipper_scan: str | None = Field(default=None, max_length=NAME)
    parties: list[PartyBody] = Field(min_length=1, max_length=2)
    licence_id: str | None = Field(default=None, max_length=ID)


class LinkBody(BaseModel):
    object_type: str = Field(max_length=16)
    object_id: str = Field(min_length=1, max_length=128)


class LicenceBody(BaseModel):
    licence_id: str = Field(min_length=1, max_length=ID)
    classification: str = Field(min_length=1, max_length=ID)
    authority: str = Field(min_length=1, max_length=120)
    holder: str = Field(min_length=1, max_length=NAME)
    valid_until: date
    links: list[LinkBody] = Field(default=[], max_length=100)
    reason: Reason


class Timeline(Document):
    """A chain of identity's steps, from the units' ledgers and the server's own records."""

    coi: str
    batch_id: str
    site_id: str
    holder: str | None
    closed: bool
    events: list[dict[str, Any]]
    problems: list[dict[str, Any]]


class StepRecorded(BaseModel):
    event: int
    kind: CustodyStep
    coi: str


class Link(BaseModel):
    object_type: str
    object_id: str


class LicenceOut(BaseModel):
    licence_id: str
    classification: str
    authority: str
    holder: str
    valid_until: str
    days_left: int
    links: list[Link]


class LicenceCheck(BaseModel):
    alerts: list[str]
