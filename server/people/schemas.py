"""Request and response bodies of the people and sign-in API."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ebr_core.vocab import PersonStatus, Role
from server.schemas import ID, NAME, Ident, Reason


class TokenBody(BaseModel):
    user_id: str = Field(max_length=ID)
    password: str


class FirstPasswordBody(BaseModel):
    user_id: str = Field(max_length=ID)
    current_password: str
    new_password: str


class GrantBody(BaseModel):
    role: str = Field(max_length=32)
    site_id: Ident


class PersonBody(BaseModel):
    user_id: str = Field(max_length=ID)
    printed_name: str = Field(max_length=NAME)
    password: str
    roles: list[GrantBody] = Field(default=[], max_length=50)
    reason: Reason


class GrantChange(GrantBody):
    reason: Reason


class OwnPasswordBody(BaseModel):
    current_password: str
    new_password: str


class ResetBody(BaseModel):
    password: str
    reason: Reason


class StatusBody(BaseModel):
    status: str = Field(pattern="^(active|disabled)$")
    reason: Reason


class Session(BaseModel):
    token: str
    expires_at: str
    user_id: str
    password_change_required: bool


class PasswordChanged(BaseModel):
    """After a change of one's own password; with a new session when none was kept."""

    user_id: str
    status: str
    token: str | None = None
    expires_at: str | None = None
    password_change_required: bool | None = None


class UserStatus(BaseModel):
    user_id: str
    status: str


class Grant(BaseModel):
    role: Role
    site_id: str


class Me(BaseModel):
    user_id: str
    printed_name: str
    roles: list[Grant]
    password_change_required: bool


class PersonOut(BaseModel):
    user_id: str
    printed_name: str
    status: PersonStatus
    password_change_required: bool
    roles: list[Grant]


class PersonCreated(BaseModel):
    user_id: str
    status: str
    password_change_required: bool


class Granted(BaseModel):
    user_id: str
    role: str
    site_id: str


class Revoked(BaseModel):
    user_id: str
    revoked: str
    site_id: str
