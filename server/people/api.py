"""The sign-in and people API: sessions, one's own password, and the administration of people
(:mod:`server.people.service` holds the rules).

Routes that check a password (sign-in, password changes) manage their own short transactions:
argon2 runs outside any (:class:`server.people.auth.Access`); the others use the request's
session (:data:`server.people.auth.DB`).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from sqlalchemy import select

from server.db import Person
from server.errors import Forbidden, Unprocessable
from server.people import passwords
from server.people import service as people
from server.people.auth import DB, Access, AccessDep, Now, Scope, Self, bearer, require
from server.people.ids import new_user_id
from server.people.schemas import (
    FirstPasswordBody,
    GrantChange,
    Granted,
    Me,
    OwnPasswordBody,
    PasswordChanged,
    PersonBody,
    PersonCreated,
    PersonOut,
    ResetBody,
    Revoked,
    Session,
    StatusBody,
    TokenBody,
    UserStatus,
)
from server.people.service import Principal
from server.schemas import PathId

router = APIRouter(tags=["people"])
ManagePeople = Annotated[Principal, Depends(require("people.manage", Scope.ORG))]
T = TypeVar("T")


def _session_for(a: Access, p: Person) -> dict[str, Any]:
    with a.sessions() as s:
        tok, exp = people.issue_token(s, p, at=a.clock(), ttl_s=a.settings.token_ttl_s)
        s.commit()
    return {
        "token": tok,
        "expires_at": exp.isoformat(),
        "user_id": p.user_id,
        "password_change_required": bool(p.must_change_password),
    }


async def _gated(a: Access, fn: Callable[[], T]) -> T:
    """Take a password-gate slot here, in the event loop, so that a flood answered 503
    occupies no worker thread; ``fn`` releases it (``check_password(reserved=True)``), or
    this does if ``fn`` never started."""
    a.gate.acquire()
    started = False

    def run() -> T:
        nonlocal started
        started = True
        return fn()

    try:
        return await run_in_threadpool(run)
    finally:
        if not started:
            a.gate.release()


def _own_password(a: Access, user_id: str, current: str, new: str, keep: str | None) -> Any:
    new = passwords.password_argument("new_password", new)
    if new == current:
        raise Unprocessable("password policy: the new password must differ from the current one")
    h = a.new_hash(user_id, new)
    with a.sessions() as s:
        people.change_own_password(
            s, Principal(user_id, "", frozenset()), at=a.clock(), password_hash=h, keep_token=keep
        )
        s.commit()
        p = people.person(s, user_id)
    out: dict[str, Any] = {"user_id": user_id, "status": "password changed; other sessions ended"}
    if keep is None:
        out |= _session_for(a, p)
    return out


@router.post("/v1/auth/token", response_model=Session)
async def login(body: TokenBody, a: AccessDep) -> Any:
    """A session token.  The password is checked outside any database transaction; an
    account whose password someone else set gets a session that may only change it."""

    def go() -> dict[str, Any]:
        p = a.check_password(body.user_id, body.password, purpose="login", reserved=True)
        return _session_for(a, p)

    return await _gated(a, go)


@router.post("/v1/auth/password", response_model=PasswordChanged, response_model_exclude_unset=True)
async def change_password_at_login(body: FirstPasswordBody, a: AccessDep) -> Any:
    """Change one's password with the current one, without a session first (the usual step
    after an administrator set it); answers with a session token."""

    def go() -> Any:
        p = a.check_password(
            body.user_id, body.current_password, purpose="password_change", reserved=True
        )
        return _own_password(a, p.user_id, body.current_password, body.new_password, keep=None)

    return await _gated(a, go)


@router.post("/v1/auth/logout", response_model=UserStatus)
def logout(who: Self, request: Request, db: DB, now: Now) -> Any:
    people.end_session(db, bearer(request), at=now())
    return {"user_id": who.user_id, "status": "logged out"}


@router.get("/v1/me", response_model=Me)
def me(who: Self) -> Any:
    return {
        "user_id": who.user_id,
        "printed_name": who.printed_name,
        "roles": [{"role": r, "site_id": st} for r, st in sorted(who.grants)],
        "password_change_required": who.password_change_required,
    }


@router.post("/v1/me/password", response_model=PasswordChanged, response_model_exclude_unset=True)
def change_own_password(body: OwnPasswordBody, who: Self, request: Request, a: AccessDep) -> Any:
    if who is people.SYSTEM:
        raise Forbidden("the bootstrap token has no password to change")
    a.check_password(who.user_id, body.current_password, purpose="password_change")
    return _own_password(
        a, who.user_id, body.current_password, body.new_password, keep=bearer(request)
    )


# -- people -----------------------------------------------------------------------------------


@router.post("/v1/people/{user_id}/password", response_model=UserStatus)
def reset_password(user_id: PathId, body: ResetBody, who: ManagePeople, a: AccessDep) -> Any:
    with a.sessions() as s:
        uid, current = people.current_hash(s, user_id)
    if uid == who.user_id:
        raise Forbidden(
            f"{who.user_id} may not reset their own password through the administrator's "
            "route: use POST /v1/me/password with the current one (separation of duties)"
        )
    h = a.new_hash(uid, passwords.password_argument("password", body.password), other_than=current)
    with a.sessions() as s:
        people.reset_password(
            s, who, at=a.clock(), user_id=uid, password_hash=h, reason=body.reason
        )
        s.commit()
    return {"user_id": uid, "status": "password reset; sessions ended; owner must change it"}


@router.get("/v1/people", response_model=list[PersonOut])
def list_people(who: ManagePeople, db: DB) -> Any:
    return [
        {
            "user_id": p.user_id,
            "printed_name": p.printed_name,
            "status": p.status,
            "password_change_required": bool(p.must_change_password),
            "roles": [
                {"role": r, "site_id": st} for r, st in sorted(people.grants_of(db, p.user_id))
            ],
        }
        for p in db.scalars(select(Person).order_by(Person.user_id))
    ]


@router.post("/v1/people", status_code=201, response_model=PersonCreated)
def create_person(body: PersonBody, who: ManagePeople, a: AccessDep) -> Any:
    uid = new_user_id(body.user_id)
    h = a.new_hash(uid, passwords.password_argument("password", body.password))
    with a.sessions() as s:
        p = people.create_person(
            s, who, at=a.clock(), user_id=uid, printed_name=body.printed_name,
            password=body.password, password_hash=h,
            grants=[(g.role, g.site_id) for g in body.roles], reason=body.reason,
        )  # fmt: skip
        s.commit()
    return {"user_id": p.user_id, "status": p.status, "password_change_required": True}


def _change_grant(
    db: DB, who: Principal, at: datetime, user_id: str, body: GrantChange, *, granted: bool
) -> dict[str, Any]:
    change = people.grant if granted else people.revoke_grant
    change(
        db, who, at=at, user_id=user_id, role=body.role, site_id=body.site_id, reason=body.reason
    )
    return {
        "user_id": user_id,
        "role" if granted else "revoked": body.role,
        "site_id": body.site_id,
    }


@router.post("/v1/people/{user_id}/roles", response_model=Granted)
def grant_role(user_id: PathId, body: GrantChange, who: ManagePeople, db: DB, now: Now) -> Any:
    return _change_grant(db, who, now(), user_id, body, granted=True)


@router.post("/v1/people/{user_id}/roles/revoke", response_model=Revoked)
def revoke_role(user_id: PathId, body: GrantChange, who: ManagePeople, db: DB, now: Now) -> Any:
    return _change_grant(db, who, now(), user_id, body, granted=False)


@router.post("/v1/people/{user_id}/status", response_model=UserStatus)
def set_status(user_id: PathId, body: StatusBody, who: ManagePeople, db: DB, now: Now) -> Any:
    people.set_status(db, who, at=now(), user_id=user_id, status=body.status, reason=body.reason)
    return {"user_id": user_id, "status": body.status}
