"""Who is calling and what they may do, as FastAPI dependencies.

A route states its permission once, in its signature::

    who: Annotated[Principal, Depends(require("batch.read", Scope.BATCH))]

:func:`require` makes the dependency: it resolves the caller (a person's bearer token, or the
bootstrap admin token), refuses a session whose password someone else set (except on the
self-service routes), and checks the permission at the object's site, before the body is read.
Each dependency carries its :class:`Requirement`, so the authorization-matrix test enumerates
the routes' permissions from ``app.routes`` (no separate table).

Scopes: ``batch`` = the batch's site, ``oos`` = the site of the case's batch, ``coi`` = a site
involved in the chain of identity, ``unit`` = the unit's site, ``org`` = every site (``*``),
``sites`` = results filtered to the sites where the permission holds (refused when there are
none), ``self`` = any authenticated person.

Also here: :data:`DB`, the request's one session (committed when the route returns, rolled back
when it raises, before the response is sent), :data:`Now`, the app's injected clock, and
:class:`Access`, which runs password checks through the bounded :class:`PasswordGate` outside any
database transaction and audits refusals.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Annotated, Any

from fastapi import Depends, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.security import HTTPBearer
from sqlalchemy import text
from sqlalchemy.orm import Session, sessionmaker

from server.audit import trail as audit
from server.batches import summary
from server.custody.service import coi_from_path, sites_involved
from server.db import Person, Token
from server.errors import Forbidden, Unauthorized, Unprocessable
from server.people import passwords
from server.people import service as people
from server.people.service import Principal
from server.quality.oos import case_site
from server.schemas import MAX_ID, PathCoi, PathId
from server.settings import Settings
from server.units.service import get_unit

Clock = Callable[[], datetime]

# A session's expiry slides with use: each request by a valid token moves it to ``token_ttl_s``
# (the idle timeout, default 15 minutes) after that request, never beyond SESSION_MAX_S after
# sign-in (21 CFR 11.300: a session left idle ends; a session in use does not end in the middle
# of a review, but not forever either).  The renewal is written at most once a RENEW_EVERY_S.
SESSION_MAX_S = 12 * 3600
RENEW_EVERY_S = 60

# Declares the bearer scheme in the OpenAPI document (the Authorize button of /docs); the token
# itself is read from the header as it always was.
BEARER = HTTPBearer(auto_error=False, description="a session token (POST /v1/auth/token) or "
                    "the bootstrap admin token")  # fmt: skip


class Scope(StrEnum):
    SELF = "self"
    ORG = "org"
    SITES = "sites"
    BATCH = "batch"
    OOS = "oos"
    COI = "coi"
    UNIT = "unit"


@dataclass(frozen=True)
class Requirement:
    """What a route needs: a permission (None: any authenticated person) at a scope, and
    whether a session that must first change its password may use it."""

    permission: str | None
    scope: Scope
    self_service: bool = False


def _address(request: Request) -> str:
    return request.client.host if request.client else "(unknown)"


def bearer(request: Request) -> str:
    return (request.headers.get("authorization") or "").removeprefix("Bearer ").strip()


class Access:
    """Resolves the caller, runs password checks outside any database transaction (at most
    ``password_checks_max`` at once), and audits refusals (rate-limited per kind and principal
    or address)."""

    def __init__(self, sessions: sessionmaker[Session], settings: Settings, clock: Clock) -> None:
        self.sessions, self.settings, self.clock = sessions, settings, clock
        self.gate = passwords.PasswordGate(settings.password_checks_max)
        self.refusals = audit.RefusalLimiter()
        self.session_max_s = SESSION_MAX_S

    def principal(self, db: Session, token: str, address: str) -> Principal:
        admin = self.settings.admin_token
        if admin and hmac.compare_digest(token.encode(), admin.encode()):
            return people.SYSTEM
        if not token:
            raise Unauthorized("a bearer token is required: POST /v1/auth/token")
        try:
            who = people.principal_for_token(db, token, at=self.clock())
        except Unauthorized as e:
            self.audit_refusal("token.refused", address, e.message)
            raise
        self.renew(db, token)
        return who

    def renew(self, db: Session, token: str) -> None:
        """Slide a valid session's expiry (the idle timeout): ``token_ttl_s`` from now, never
        beyond its absolute end (``session_max_s`` after sign-in, fixed at its first renewal
        from its first expiry).  Written in its own short transaction, at most once a minute per
        session; the caller has just found the token valid (in ``db``, read only here)."""
        digest = hashlib.sha256(token.encode()).hexdigest()
        t = db.get(Token, digest)
        if t is None:
            return
        now = self.clock()
        idle = timedelta(seconds=self.settings.token_ttl_s)
        expires = _aware(t.expires_at, now)
        if expires - now > idle - timedelta(seconds=RENEW_EVERY_S):
            return  # renewed less than a minute ago
        with self.sessions() as s:
            if s.get_bind().dialect.name == "postgresql":
                # A renewal lost in a crash only ends the session up to a minute early (fail
                # closed), so its commit does not wait for the WAL flush: a read request is never
                # held up by an fsync queued behind a checkpoint after a bulk ingest.
                s.execute(text("SET LOCAL synchronous_commit TO OFF"))
            row = s.get(Token, digest, with_for_update=True)
            if row is None or row.revoked:
                return
            end = row.not_after
            if end is None:  # issued at its first expiry minus the idle timeout
                end = _aware(row.expires_at, now) - idle + timedelta(seconds=self.session_max_s)
                row.not_after = end
            new = min(now + idle, _aware(end, now))
            if new > _aware(row.expires_at, now):
                row.expires_at = new
            s.commit()

    def audit_refusal(self, kind: str, who: str, reason: str, object_id: str = "") -> None:
        """One audit row per kind and principal (or address) per minute, with a count.  In its
        own transaction: the refusal is kept while the request fails."""
        at = self.clock()
        with self.sessions() as s:
            row = audit.append_limited(
                s, at=at, key=(kind, who), actor=who, action=kind, object_type="access",
                object_id=object_id or who, reason=reason, limiter=self.refusals,
            )  # fmt: skip
            if row is not None:
                s.commit()

    async def audit_forbidden(self, request: Request, e: Forbidden) -> None:
        """Every refused authorization is audited (rate-limited), then answered as usual."""
        who = getattr(request.state, "principal", None)
        name = who.user_id if isinstance(who, Principal) else _address(request)
        route = f"{request.method} {request.url.path}"[:128]
        await run_in_threadpool(self.audit_refusal, "authz.refused", name, e.message, route)

    def check_password(
        self, user_id: str, password: str, *, purpose: str, reserved: bool = False
    ) -> Person:
        """Check a password: a slot taken in one short transaction, argon2 outside any (at most
        ``password_checks_max`` at once, else 503 at once), the outcome in another.
        ``reserved``: the caller already took a gate slot (:meth:`passwords.PasswordGate.acquire`),
        released here."""
        mx = self.settings.max_failed_logins
        with self.gate.held() if reserved else self.gate.slot():
            password = passwords.password_argument("password", password)
            with self.sessions() as s:
                a = passwords.begin_attempt(s, user_id=user_id, max_failures=mx)
                s.commit()
            ok = passwords.check_attempt(a, password)
        with self.sessions() as s:
            try:
                return passwords.finish_attempt(
                    s, a, ok, at=self.clock(), purpose=purpose, max_failures=mx,
                    limiter=self.refusals,
                )  # fmt: skip
            finally:
                s.commit()  # a failed attempt is counted even though the request fails

    def new_hash(self, user_id: str, password: str, *, other_than: str | None = None) -> str:
        """The hash of a new password after the policy, computed outside any transaction;
        ``other_than``: the current hash, which the new password must not match."""
        passwords.check_policy(user_id, password)
        with self.gate.slot():
            if other_than is not None and passwords.check_password_hash(other_than, password):
                raise Unprocessable(
                    "password policy: the new password must differ from the current one"
                )
            return passwords.hash_password(password)


def _aware(t: datetime, ref: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=ref.tzinfo)


# Trivial dependencies are async: they run in the event loop, not a worker thread (a thread hop
# per dependency per request adds up over the authorization matrix's thousand requests).
async def access(request: Request) -> Access:
    a = request.app.state.access
    assert isinstance(a, Access)
    return a


def session(request: Request) -> Iterator[Session]:
    """The request's one session: committed when the route returns, rolled back if it raises.
    A rule that must keep a record while the request fails (a counted password failure, an
    audited refusal) commits it itself before raising."""
    with request.app.state.sessions() as s:
        try:
            yield s
        except BaseException:
            s.rollback()
            raise
        s.commit()


async def clock(request: Request) -> Clock:
    c: Clock = request.app.state.clock
    return c


AccessDep = Annotated[Access, Depends(access)]
DB = Annotated[Session, Depends(session, scope="function")]
Now = Annotated[Clock, Depends(clock)]
Bearer = Annotated[Any, Depends(BEARER)]


def _caller(a: Access, db: Session, request: Request, req: Requirement) -> Principal:
    who = a.principal(db, bearer(request), _address(request))
    if who.password_change_required and not req.self_service:
        raise Forbidden(
            f"the password of {who.user_id} was set by an administrator: change it first "
            "(POST /v1/me/password); until then this session may only change it"
        )
    request.state.principal = who
    return who


def _read(db: Session, who: Principal) -> Principal:
    """End the guard's read transaction: a route that checks a password runs argon2 in none."""
    db.rollback()
    return who


def _site_of_case(db: Session, case_id: int) -> str:
    return case_site(db, case_id)


def _sites_of_coi(db: Session, coi: str) -> set[str]:
    return sites_involved(db, coi_from_path(coi))


def _site_of_unit(db: Session, unit_id: str) -> str:
    return get_unit(db, unit_id).site_id


def require(
    permission: str | None, scope: Scope, *, self_service: bool = False
) -> Callable[..., Principal]:
    """The dependency that admits a caller holding ``permission`` at ``scope`` (see the module
    docstring), with its :class:`Requirement` attached as ``.requirement``."""
    req = Requirement(permission, scope, self_service)
    perm = permission or ""
    dep: Callable[..., Principal]

    if scope == Scope.BATCH:

        def by_batch(
            batch_id: PathId, request: Request, a: AccessDep, db: DB, _: Bearer
        ) -> Principal:
            who = _caller(a, db, request, req)
            who.require(perm, summary(db, batch_id).site_id)
            return _read(db, who)

        dep = by_batch
    elif scope == Scope.OOS:

        def by_case(
            case_id: Annotated[int, Path(ge=1, le=MAX_ID)],
            request: Request,
            a: AccessDep,
            db: DB,
            _: Bearer,
        ) -> Principal:
            who = _caller(a, db, request, req)
            who.require(perm, _site_of_case(db, case_id))
            return _read(db, who)

        dep = by_case
    elif scope == Scope.COI:

        def by_coi(coi: PathCoi, request: Request, a: AccessDep, db: DB, _: Bearer) -> Principal:
            who = _caller(a, db, request, req)
            sites = _sites_of_coi(db, coi)
            if not any(who.can(perm, site) for site in sites):
                who.require(perm, sorted(sites)[0])
            return _read(db, who)

        dep = by_coi
    elif scope == Scope.UNIT:

        def by_unit(
            unit_id: PathId, request: Request, a: AccessDep, db: DB, _: Bearer
        ) -> Principal:
            who = _caller(a, db, request, req)
            who.require(perm, _site_of_unit(db, unit_id))
            return _read(db, who)

        dep = by_unit
    else:

        def general(request: Request, a: AccessDep, db: DB, _: Bearer) -> Principal:
            who = _caller(a, db, request, req)
            if scope == Scope.ORG or (scope == Scope.SITES and who.sites(perm) == set()):
                who.require(perm, None)
            return _read(db, who)

        dep = general
    setattr(dep, "requirement", req)  # noqa: B010 (read back by requirement_of)
    return dep


def requirement_of(dependency: Any) -> Requirement | None:
    r = getattr(dependency, "requirement", None)
    return r if isinstance(r, Requirement) else None


# The permissions of the API, one alias each (polar's ``auth.MeterRead`` style).
Self = Annotated[Principal, Depends(require(None, Scope.SELF, self_service=True))]
