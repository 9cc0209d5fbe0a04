"""The people and quality-review API (bearer tokens of people; see :mod:`server.people`).

Every route names the permission it needs and checks it against the object's site; the
authorization-matrix test walks every route in :data:`ROUTES` for every role and site.
"""

import hmac
from collections.abc import Callable, Iterator
from datetime import UTC, date, datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from server import audit, people, projections, reports, review, text
from server.db import Alert, AuditEntry, BatchSummary, OosCase, Person, SpecRow
from server.errors import Forbidden, ServerError, Unauthorized, Unprocessable
from server.people import Principal
from server.quality import release
from server.settings import Settings

# (method, path, permission, scope): scope "batch" = the batch's site, "oos" = the site of the
# case's batch, "unit" = the unit's site, "org" = every site (*), "sites" = results filtered to the
# sites where the permission holds (refused when there are none), "self" = any authenticated
# person.  Checked in a dependency, before the body is read.
ROUTES: list[tuple[str, str, str, str]] = [
    ("GET", "/v1/me", "-", "self"),
    ("POST", "/v1/auth/logout", "-", "self"),
    ("POST", "/v1/me/password", "-", "self"),
    ("GET", "/v1/people", "people.manage", "org"),
    ("POST", "/v1/people/{user_id}/password", "people.manage", "org"),
    ("POST", "/v1/people", "people.manage", "org"),
    ("POST", "/v1/people/{user_id}/roles", "people.manage", "org"),
    ("POST", "/v1/people/{user_id}/roles/revoke", "people.manage", "org"),
    ("POST", "/v1/people/{user_id}/status", "people.manage", "org"),
    ("GET", "/v1/specs", "-", "self"),
    ("POST", "/v1/specs", "spec.publish", "org"),
    ("GET", "/v1/review/queue", "queue.read", "sites"),
    ("GET", "/v1/batches/{batch_id}", "batch.read", "batch"),
    ("GET", "/v1/batches/{batch_id}/telemetry", "batch.read", "batch"),
    ("POST", "/v1/batches/{batch_id}/results", "results.write", "batch"),
    (
        "POST",
        "/v1/batches/{batch_id}/deviations/{deviation_id}/comments",
        "deviation.review",
        "batch",
    ),
    ("POST", "/v1/batches/{batch_id}/deviations/{deviation_id}/close", "deviation.review", "batch"),
    ("POST", "/v1/batches/{batch_id}/signatures", "sign.review", "batch"),
    ("POST", "/v1/batches/{batch_id}/oos", "release", "batch"),
    ("POST", "/v1/oos/{case_id}/{step}", "release", "oos"),
    ("GET", "/v1/oos", "queue.read", "sites"),
    ("GET", "/v1/batches/{batch_id}/report.pdf", "report.read", "batch"),
    ("GET", "/v1/batches/{batch_id}/coa.pdf", "report.read", "batch"),
    ("GET", "/v1/batches/{batch_id}/fhir", "report.read", "batch"),
    ("GET", "/v1/audit", "audit.read", "org"),
    ("GET", "/v1/alerts", "alerts.read", "sites"),
    ("GET", "/v1/custody/{coi}", "custody.read", "coi"),
    ("POST", "/v1/custody/{coi}/events", "custody.record", "coi"),
    ("GET", "/v1/licences", "alerts.read", "sites"),
    ("POST", "/v1/licences", "licence.manage", "org"),
    ("POST", "/v1/licences/check", "licence.manage", "org"),
    ("POST", "/admin/units", "units.manage", "org"),
    ("POST", "/admin/units/{unit_id}/rotate", "units.manage", "unit"),
    ("POST", "/admin/units/{unit_id}/revoke", "units.manage", "unit"),
    ("GET", "/admin/units/{unit_id}", "units.manage", "unit"),
    ("GET", "/admin/alerts", "alerts.read", "org"),
    ("POST", "/v1/alerts/acknowledgements", "deviation.review", "sites"),
]
MAX_ID = 2**62  # ids and sequence numbers fit a signed 64-bit column
_INDEX = {(m, p): (perm, scope) for m, p, perm, scope in ROUTES}


# Text bounds (issue 18): a reason, comment or other free text is at most TEXT characters, a
# name NAME, an identifier ID; over them a 422 names the field and the bound.  Passwords are
# plain strings checked in code (people.password_argument), so that no error repeats them.
TEXT = 2000
NAME = 200
ID = 64
HASH = 64
Reason = Annotated[str, Field(min_length=1, max_length=TEXT)]
Ident = Annotated[str, Field(min_length=1, max_length=ID)]


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


class SpecBody(BaseModel):
    content: dict[str, Any]
    reason: Reason


class ResultsBody(BaseModel):
    spec_id: Ident
    spec_version: str = Field(min_length=1, max_length=32)
    results: dict[str, Any]
    reason: Reason


class CommentBody(BaseModel):
    comment: Reason


class CloseBody(BaseModel):
    reason: Reason


class SignBody(BaseModel):
    user_id: str = Field(max_length=ID)
    password: str
    meaning: str = Field(max_length=32)
    reason: Reason
    jurisdiction: str = Field(max_length=16)
    record_hash: str = Field(max_length=HASH)
    evaluation_hash: str = Field(max_length=HASH)


class OosBody(BaseModel):
    jurisdiction: str = Field(max_length=16)
    physician: str = Field(min_length=1, max_length=NAME)
    request: Reason


class StepBody(BaseModel):
    text: Reason


class PartyBody(BaseModel):
    user_id: str = Field(max_length=ID)
    password: str
    meaning: str = Field(pattern="^(handed_over|received|administered)$")


class CustodyBody(BaseModel):
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


# What a session whose password someone else set may still do: change it, see who it is, leave.
SELF_SERVICE = {("POST", "/v1/me/password"), ("GET", "/v1/me"), ("POST", "/v1/auth/logout")}
PathId = Annotated[str, Path(max_length=ID)]
PathCoi = Annotated[str, Path(max_length=128)]


def _address(request: Request) -> str:
    return request.client.host if request.client else "(unknown)"


class Access:
    """Resolves the caller (bearer token of a person, or the bootstrap admin token), makes the
    per-route guards from :data:`ROUTES`, runs password checks through the bounded
    :class:`people.PasswordGate` outside any database transaction, and audits refusals
    (rate-limited per kind and principal or address)."""

    def __init__(
        self, sessions: sessionmaker[Session], settings: Settings, clock: Callable[[], datetime]
    ) -> None:
        self.sessions, self.settings, self.clock = sessions, settings, clock
        self.gate = people.PasswordGate(settings.password_checks_max)
        self.refusals = audit.RefusalLimiter()

    def principal(self, authorization: str | None, request: Request | None = None) -> Principal:
        given = (authorization or "").removeprefix("Bearer ").strip()
        token = self.settings.admin_token
        if token and hmac.compare_digest(given.encode(), token.encode()):
            return people.SYSTEM
        if not given:
            raise Unauthorized("a bearer token is required: POST /v1/auth/token")
        try:
            with self.sessions() as s:
                return people.principal_for_token(s, given, at=self.clock())
        except Unauthorized as e:
            self.audit_refusal(
                "token.refused", _address(request) if request else "(unknown)", e.message
            )
            raise

    def audit_refusal(self, kind: str, who: str, reason: str, object_id: str = "") -> None:
        """One audit row per kind and principal (or address) per minute, with a count."""
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
        ``reserved``: the caller already took a gate slot (:meth:`people.PasswordGate.acquire`),
        released here."""
        mx = self.settings.max_failed_logins
        with self.gate.held() if reserved else self.gate.slot():
            password = people.password_argument("password", password)
            with self.sessions() as s:
                a = people.begin_attempt(s, user_id=user_id, max_failures=mx)
                s.commit()
            ok = people.check_attempt(a, password)
        with self.sessions() as s:
            try:
                return people.finish_attempt(
                    s, a, ok, at=self.clock(), purpose=purpose, max_failures=mx,
                    limiter=self.refusals,
                )  # fmt: skip
            finally:
                s.commit()

    def new_hash(self, user_id: str, password: str, *, other_than: str | None = None) -> str:
        """The hash of a new password after the policy, computed outside any transaction;
        ``other_than``: the current hash, which the new password must not match."""
        people.check_policy(user_id, password)
        with self.gate.slot():
            if other_than is not None and people.check_password_hash(other_than, password):
                raise Unprocessable(
                    "password policy: the new password must differ from the current one"
                )
            return people.hash_password(password)

    def guard(self, method: str, path: str) -> Callable[..., Principal]:
        perm, scope = _INDEX[(method, path)]
        self_service = (method, path) in SELF_SERVICE

        def caller(authorization: str | None, request: Request) -> Principal:
            who = self.principal(authorization, request)
            if who.password_change_required and not self_service:
                raise Forbidden(
                    f"the password of {who.user_id} was set by an administrator: change it first "
                    "(POST /v1/me/password); until then this session may only change it"
                )
            request.state.principal = who
            return who

        def site_of(fn: Callable[[Session], str]) -> str:
            with self.sessions() as s:
                return fn(s)

        if scope == "batch":

            def by_batch(
                batch_id: PathId,
                request: Request,
                authorization: Annotated[str | None, Header()] = None,
            ) -> Principal:
                who = caller(authorization, request)
                who.require(perm, site_of(lambda s: review.summary(s, batch_id).site_id))
                return who

            return by_batch
        if scope == "oos":

            def by_case(
                case_id: Annotated[int, Path(ge=1, le=MAX_ID)],
                request: Request,
                authorization: Annotated[str | None, Header()] = None,
            ) -> Principal:
                who = caller(authorization, request)
                who.require(perm, site_of(lambda s: review.case_site(s, case_id)))
                return who

            return by_case
        if scope == "coi":

            def by_coi(
                coi: PathCoi,
                request: Request,
                authorization: Annotated[str | None, Header()] = None,
            ) -> Principal:
                from server import custody

                who = caller(authorization, request)
                with self.sessions() as s:
                    sites = custody.sites_involved(s, custody.coi_from_path(coi))
                if not any(who.can(perm, site) for site in sites):
                    who.require(perm, sorted(sites)[0])
                return who

            return by_coi
        if scope == "unit":

            def by_unit(
                unit_id: PathId,
                request: Request,
                authorization: Annotated[str | None, Header()] = None,
            ) -> Principal:
                from server.service import _unit

                who = caller(authorization, request)
                who.require(perm, site_of(lambda s: _unit(s, unit_id).site_id))
                return who

            return by_unit

        def general(
            request: Request, authorization: Annotated[str | None, Header()] = None
        ) -> Principal:
            who = caller(authorization, request)
            if scope == "org" or (scope == "sites" and who.sites(perm) == set()):
                who.require(perm, None)
            return who

        return general


def batch_start(db: Session, batch_id: str) -> datetime | None:
    """When the batch began (its ``batch.started`` event): the start of its review window for
    the separation-of-duties rules.  Raises 404 for an unknown batch."""
    summ = review.summary(db, batch_id)
    state = projections.load(db, summ).state
    if state is None or not state.started_at:
        return None
    try:
        t = datetime.fromisoformat(state.started_at.replace("Z", "+00:00"))
    except ValueError:  # unreadable: the window is taken as all time (fail closed)
        return datetime.min.replace(tzinfo=UTC)
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def add_routes(app: FastAPI, access: Access) -> None:
    sessions, settings, clock = access.sessions, access.settings, access.clock

    def db() -> Iterator[Session]:
        with sessions() as s:
            yield s

    DB = Annotated[Session, Depends(db)]

    def bearer(authorization: str | None) -> str:
        return (authorization or "").removeprefix("Bearer ").strip()

    g = access.guard

    def committed(s: Session, fn: Callable[[], Any]) -> Any:
        """Run a write; keep what it recorded about a refusal (failed logins) and re-raise."""
        try:
            out = fn()
        except ServerError:
            s.commit()
            raise
        s.commit()
        return out

    def login_result(p: Person) -> dict[str, Any]:
        at = clock()
        with sessions() as s:
            tok, exp = people.issue_token(s, p, at=at, ttl_s=settings.token_ttl_s)
            s.commit()
        return {
            "token": tok,
            "expires_at": exp.isoformat(),
            "user_id": p.user_id,
            "password_change_required": bool(p.must_change_password),
        }

    async def gated(fn: Callable[[], dict[str, Any]]) -> dict[str, Any]:
        """Take a password-gate slot here, in the event loop, so that a flood answered 503
        occupies no worker thread; ``fn`` releases it (``check_password(reserved=True)``), or
        this does if ``fn`` never started."""
        access.gate.acquire()
        started = False

        def run() -> dict[str, Any]:
            nonlocal started
            started = True
            return fn()

        try:
            return await run_in_threadpool(run)
        finally:
            if not started:
                access.gate.release()

    @app.post("/v1/auth/token")
    async def login(body: TokenBody) -> dict[str, Any]:
        """A session token.  The password is checked outside any database transaction; an
        account whose password someone else set gets a session that may only change it."""

        def go() -> dict[str, Any]:
            p = access.check_password(body.user_id, body.password, purpose="login", reserved=True)
            return login_result(p)

        return await gated(go)

    @app.post("/v1/auth/password")
    async def change_password_at_login(body: FirstPasswordBody) -> dict[str, Any]:
        """Change one's password with the current one, without a session first (the usual step
        after an administrator set it); answers with a session token."""

        def go() -> dict[str, Any]:
            p = access.check_password(
                body.user_id, body.current_password, purpose="password_change", reserved=True
            )
            return own_password(p.user_id, body.current_password, body.new_password, keep=None)

        return await gated(go)

    def own_password(user_id: str, current: str, new: str, keep: str | None) -> dict[str, Any]:
        new = people.password_argument("new_password", new)
        if new == current:
            raise Unprocessable(
                "password policy: the new password must differ from the current one"
            )
        h = access.new_hash(user_id, new)
        with sessions() as s:
            people.change_own_password(
                s, Principal(user_id, "", frozenset()), at=clock(), password_hash=h,
                keep_token=keep,
            )  # fmt: skip
            s.commit()
            p = people.person(s, user_id)
        out: dict[str, Any] = {
            "user_id": user_id,
            "status": "password changed; other sessions ended",
        }
        if keep is None:
            out |= login_result(p)
        return out

    @app.post("/v1/auth/logout")
    def logout(
        who: Annotated[Principal, Depends(g("POST", "/v1/auth/logout"))],
        s: DB,
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, str]:
        people.end_session(s, bearer(authorization), at=clock())
        s.commit()
        return {"user_id": who.user_id, "status": "logged out"}

    @app.get("/v1/me")
    def me(who: Annotated[Principal, Depends(g("GET", "/v1/me"))]) -> dict[str, Any]:
        return {
            "user_id": who.user_id,
            "printed_name": who.printed_name,
            "roles": [{"role": r, "site_id": st} for r, st in sorted(who.grants)],
            "password_change_required": who.password_change_required,
        }

    @app.post("/v1/me/password")
    def change_own_password(
        body: OwnPasswordBody,
        who: Annotated[Principal, Depends(g("POST", "/v1/me/password"))],
        authorization: Annotated[str | None, Header()] = None,
    ) -> dict[str, Any]:
        if who is people.SYSTEM:
            raise Forbidden("the bootstrap token has no password to change")
        access.check_password(who.user_id, body.current_password, purpose="password_change")
        return own_password(
            who.user_id, body.current_password, body.new_password, keep=bearer(authorization)
        )

    # -- people ---------------------------------------------------------------------------

    @app.post("/v1/people/{user_id}/password")
    def reset_password(
        user_id: PathId,
        body: ResetBody,
        who: Annotated[Principal, Depends(g("POST", "/v1/people/{user_id}/password"))],
    ) -> dict[str, str]:
        with sessions() as s:
            uid, current = people.current_hash(s, user_id)
        if uid == who.user_id:
            raise Forbidden(
                f"{who.user_id} may not reset their own password through the administrator's "
                "route: use POST /v1/me/password with the current one (separation of duties)"
            )
        h = access.new_hash(uid, people.password_argument("password", body.password),
                            other_than=current)  # fmt: skip
        with sessions() as s:
            people.reset_password(s, who, at=clock(), user_id=uid, password_hash=h,
                                  reason=body.reason)  # fmt: skip
            s.commit()
        return {"user_id": uid, "status": "password reset; sessions ended; owner must change it"}

    @app.get("/v1/people")
    def list_people(
        who: Annotated[Principal, Depends(g("GET", "/v1/people"))], s: DB
    ) -> list[dict[str, Any]]:
        return [
            {
                "user_id": p.user_id,
                "printed_name": p.printed_name,
                "status": p.status,
                "password_change_required": bool(p.must_change_password),
                "roles": [
                    {"role": r, "site_id": st} for r, st in sorted(people.grants_of(s, p.user_id))
                ],
            }
            for p in s.scalars(select(Person).order_by(Person.user_id))
        ]

    @app.post("/v1/people", status_code=201)
    def create_person(
        body: PersonBody, who: Annotated[Principal, Depends(g("POST", "/v1/people"))]
    ) -> dict[str, Any]:
        uid = people.new_user_id(body.user_id)
        h = access.new_hash(uid, people.password_argument("password", body.password))
        with sessions() as s:
            p = people.create_person(
                s, who, at=clock(), user_id=uid, printed_name=body.printed_name,
                password=body.password, password_hash=h,
                grants=[(g.role, g.site_id) for g in body.roles], reason=body.reason,
            )  # fmt: skip
            s.commit()
        return {"user_id": p.user_id, "status": p.status, "password_change_required": True}

    @app.post("/v1/people/{user_id}/roles")
    def grant_role(
        user_id: PathId,
        body: GrantChange,
        who: Annotated[Principal, Depends(g("POST", "/v1/people/{user_id}/roles"))],
        s: DB,
    ) -> dict[str, str]:
        people.grant(
            s,
            who,
            at=clock(),
            user_id=user_id,
            role=body.role,
            site_id=body.site_id,
            reason=body.reason,
        )
        s.commit()
        return {"user_id": user_id, "role": body.role, "site_id": body.site_id}

    @app.post("/v1/people/{user_id}/roles/revoke")
    def revoke_role(
        user_id: PathId,
        body: GrantChange,
        who: Annotated[Principal, Depends(g("POST", "/v1/people/{user_id}/roles/revoke"))],
        s: DB,
    ) -> dict[str, str]:
        people.revoke_grant(
            s,
            who,
            at=clock(),
            user_id=user_id,
            role=body.role,
            site_id=body.site_id,
            reason=body.reason,
        )
        s.commit()
        return {"user_id": user_id, "revoked": body.role, "site_id": body.site_id}

    @app.post("/v1/people/{user_id}/status")
    def set_status(
        user_id: PathId,
        body: StatusBody,
        who: Annotated[Principal, Depends(g("POST", "/v1/people/{user_id}/status"))],
        s: DB,
    ) -> dict[str, str]:
        people.set_status(
            s, who, at=clock(), user_id=user_id, status=body.status, reason=body.reason
        )
        s.commit()
        return {"user_id": user_id, "status": body.status}

    # -- specifications ---------------------------------------------------------------------

    @app.get("/v1/specs")
    def list_specs(
        who: Annotated[Principal, Depends(g("GET", "/v1/specs"))], s: DB
    ) -> list[dict[str, Any]]:
        return [
            {
                "spec_id": r.spec_id,
                "version": r.version,
                "sha256": r.content_hash,
                "published_by": r.published_by,
                "published_at": text.iso(r.published_at),
            }
            for r in s.scalars(select(SpecRow).order_by(SpecRow.spec_id, SpecRow.version))
        ]

    @app.post("/v1/specs", status_code=201)
    def publish_spec(
        body: SpecBody, who: Annotated[Principal, Depends(g("POST", "/v1/specs"))], s: DB
    ) -> dict[str, Any]:
        row, new = review.publish_spec(s, who, at=clock(), content=body.content, reason=body.reason)
        s.commit()
        return {
            "spec_id": row.spec_id,
            "version": row.version,
            "sha256": row.content_hash,
            "new": new,
        }

    # -- review -----------------------------------------------------------------------------

    @app.get("/v1/review/queue")
    def review_queue(
        who: Annotated[Principal, Depends(g("GET", "/v1/review/queue"))],
        s: DB,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
        offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
    ) -> dict[str, Any]:
        sites = who.sites("queue.read")
        return review.queue(s, sites, limit=limit, offset=offset)

    @app.get("/v1/batches/{batch_id}")
    def batch_view(
        batch_id: PathId,
        who: Annotated[Principal, Depends(g("GET", "/v1/batches/{batch_id}"))],
        s: DB,
    ) -> dict[str, Any]:
        r = review.load_review(s, batch_id)  # the guard checked
        return review.batch_view(s, r, clock())

    @app.get("/v1/batches/{batch_id}/telemetry")
    def batch_telemetry(
        batch_id: PathId,
        who: Annotated[Principal, Depends(g("GET", "/v1/batches/{batch_id}/telemetry"))],
        s: DB,
    ) -> dict[str, Any]:
        """Each channel's summary and its min/max series for plots (from the projection)."""
        summ = review.summary(s, batch_id)  # the guard checked
        proj = projections.load(s, summ)
        return {
            "batch_id": batch_id,
            "readings": summ.readings,
            "channels": review.telemetry_json(proj.telemetry, series=True),
        }

    @app.post("/v1/batches/{batch_id}/results", status_code=201)
    def enter_results(
        batch_id: PathId,
        body: ResultsBody,
        who: Annotated[Principal, Depends(g("POST", "/v1/batches/{batch_id}/results"))],
        s: DB,
    ) -> dict[str, Any]:
        rs = review.enter_results(
            s,
            who,
            at=clock(),
            batch_id=batch_id,
            spec_id=body.spec_id,
            spec_version=body.spec_version,
            results=body.results,
            reason=body.reason,
        )
        s.commit()
        return {"batch_id": batch_id, "result_set": rs.id}

    @app.post("/v1/batches/{batch_id}/deviations/{deviation_id}/comments", status_code=201)
    def comment(
        batch_id: PathId,
        deviation_id: PathId,
        body: CommentBody,
        who: Annotated[
            Principal,
            Depends(g("POST", "/v1/batches/{batch_id}/deviations/{deviation_id}/comments")),
        ],
        s: DB,
    ) -> dict[str, Any]:
        a = review.deviation_action(
            s,
            who,
            at=clock(),
            batch_id=batch_id,
            deviation_id=deviation_id,
            action="comment",
            text_=body.comment,
        )
        s.commit()
        return {"deviation_id": deviation_id, "action": a.id}

    @app.post("/v1/batches/{batch_id}/deviations/{deviation_id}/close")
    def close(
        batch_id: PathId,
        deviation_id: PathId,
        body: CloseBody,
        who: Annotated[
            Principal, Depends(g("POST", "/v1/batches/{batch_id}/deviations/{deviation_id}/close"))
        ],
        s: DB,
    ) -> dict[str, Any]:
        a = review.deviation_action(
            s,
            who,
            at=clock(),
            batch_id=batch_id,
            deviation_id=deviation_id,
            action="close",
            text_=body.reason,
        )
        s.commit()
        return {"deviation_id": deviation_id, "closed": True, "action": a.id}

    @app.post("/v1/batches/{batch_id}/signatures", status_code=201)
    def sign(
        batch_id: PathId,
        body: SignBody,
        who: Annotated[Principal, Depends(g("POST", "/v1/batches/{batch_id}/signatures"))],
        s: DB,
    ) -> dict[str, Any]:
        if body.user_id.lower() != who.user_id.lower():
            raise Forbidden(
                f"signed in as {who.user_id}: an e-signature is given by the signed-in person "
                "with their own user id and password"
            )
        with sessions() as s0:
            since = batch_start(s0, batch_id)  # 404 before counting a password attempt
        access.check_password(who.user_id, body.password, purpose="signature")
        at = clock()
        if since is not None:
            why = people.signing_barred(s, who.user_id, since)
            if why is not None:
                raise Forbidden(why)
        req = release.Signing(
            body.meaning, body.reason, body.jurisdiction, body.record_hash, body.evaluation_hash,
            at=at,
        )  # fmt: skip
        sig, disp = review.sign(s, who, batch_id=batch_id, req=req)
        s.commit()
        return {
            "signature": sig.id,
            "printed_name": sig.printed_name,
            "meaning": sig.meaning,
            "signed_at": sig.signed_at.isoformat(),
            "jurisdiction": sig.jurisdiction,
            "disposition": None if disp is None else disp.disposition,
        }

    @app.post("/v1/batches/{batch_id}/oos", status_code=201)
    def open_oos(
        batch_id: PathId,
        body: OosBody,
        who: Annotated[Principal, Depends(g("POST", "/v1/batches/{batch_id}/oos"))],
        s: DB,
    ) -> dict[str, Any]:
        c = review.open_oos(
            s,
            who,
            at=clock(),
            batch_id=batch_id,
            jurisdiction=body.jurisdiction,
            physician=body.physician,
            request_text=body.request,
        )
        s.commit()
        return review.case_json(c, clock())

    @app.post("/v1/oos/{case_id}/{step}")
    def oos_step(
        case_id: Annotated[int, Path(ge=1, le=MAX_ID)],
        step: Annotated[str, Path(max_length=32)],
        body: StepBody,
        who: Annotated[Principal, Depends(g("POST", "/v1/oos/{case_id}/{step}"))],
        s: DB,
    ) -> dict[str, Any]:
        c = review.oos_step(s, who, at=clock(), case_id=case_id, step=step, text_=body.text)
        s.commit()
        return review.case_json(c, clock())

    @app.get("/v1/oos")
    def list_oos(
        who: Annotated[Principal, Depends(g("GET", "/v1/oos"))], s: DB, overdue: bool = False
    ) -> list[dict[str, Any]]:
        sites = who.sites("queue.read")
        now = clock()
        out = []
        q = select(OosCase).order_by(OosCase.id)
        if sites is not None:
            q = q.join(BatchSummary, BatchSummary.batch_id == OosCase.batch_id).where(
                BatchSummary.site_id.in_(sorted(sites))
            )
        for c in s.scalars(q):
            j = review.case_json(c, now)
            if overdue and not j["notification_overdue"]:
                continue
            out.append(j)
        return out

    # -- reports ----------------------------------------------------------------------------

    @app.get("/v1/batches/{batch_id}/report.pdf")
    def report_pdf(
        batch_id: PathId,
        who: Annotated[Principal, Depends(g("GET", "/v1/batches/{batch_id}/report.pdf"))],
        s: DB,
    ) -> Response:
        r = review.load_review(s, batch_id)  # the guard checked
        view = review.batch_view(s, r, clock())
        return Response(reports.batch_report_pdf(view), media_type="application/pdf")

    @app.get("/v1/batches/{batch_id}/coa.pdf")
    def coa_pdf(
        batch_id: PathId,
        jurisdiction: Annotated[str, Query(max_length=16)],
        who: Annotated[Principal, Depends(g("GET", "/v1/batches/{batch_id}/coa.pdf"))],
        s: DB,
    ) -> Response:
        r = review.load_review(s, batch_id)  # the guard checked
        view = review.batch_view(s, r, clock())
        return Response(reports.coa_pdf(view, jurisdiction), media_type="application/pdf")

    @app.get("/v1/batches/{batch_id}/fhir")
    def fhir(
        batch_id: PathId,
        jurisdiction: Annotated[str, Query(max_length=16)],
        who: Annotated[Principal, Depends(g("GET", "/v1/batches/{batch_id}/fhir"))],
        s: DB,
    ) -> Response:
        from server import fhir as fhir_export

        r = review.load_review(s, batch_id)  # the guard checked
        view = review.batch_view(s, r, clock())
        return Response(
            fhir_export.batch_bundle_json(view, jurisdiction), media_type="application/fhir+json"
        )

    # -- custody and transfer licences -------------------------------------------------------

    @app.get("/v1/custody/{coi}")
    def custody_timeline(
        coi: PathCoi, who: Annotated[Principal, Depends(g("GET", "/v1/custody/{coi}"))], s: DB
    ) -> dict[str, Any]:
        from server import custody

        return custody.timeline(s, custody.coi_from_path(coi))

    @app.post("/v1/custody/{coi}/events", status_code=201)
    def custody_event(
        coi: PathCoi,
        body: CustodyBody,
        who: Annotated[Principal, Depends(g("POST", "/v1/custody/{coi}/events"))],
        s: DB,
    ) -> dict[str, Any]:
        from server import custody

        def go() -> dict[str, Any]:
            row = custody.record(
                s, who, at=clock(), coi=custody.coi_from_path(coi), kind=body.kind,
                from_party=body.from_party, to_party=body.to_party, place=body.place,
                bag_scan=body.bag_scan, shipper_scan=body.shipper_scan,
                parties=[(p.user_id, p.password, p.meaning) for p in body.parties],
                licence_id=body.licence_id, max_failures=settings.max_failed_logins,
            )  # fmt: skip
            return {"event": row.id, "kind": row.kind, "coi": row.coi}

        return committed(s, go)  # type: ignore[no-any-return]

    @app.get("/v1/licences")
    def licences(
        who: Annotated[Principal, Depends(g("GET", "/v1/licences"))],
        s: DB,
        expiring_within_days: Annotated[int | None, Query(ge=0, le=3650)] = None,
    ) -> list[dict[str, Any]]:
        from server import custody
        from server.db import Licence

        today = clock().date()
        out = [custody.licence_json(s, x, today) for x in s.scalars(select(Licence))]
        if expiring_within_days is not None:
            out = [x for x in out if x["days_left"] <= expiring_within_days]
        return sorted(out, key=lambda x: x["valid_until"])

    @app.post("/v1/licences", status_code=201)
    def add_licence(
        body: LicenceBody,
        who: Annotated[Principal, Depends(g("POST", "/v1/licences"))],
        s: DB,
    ) -> dict[str, Any]:
        from server import custody

        lic = custody.add_licence(
            s, who, at=clock(), licence_id=body.licence_id, classification=body.classification,
            authority=body.authority, holder=body.holder, valid_until=body.valid_until,
            links=[(x.object_type, x.object_id) for x in body.links], reason=body.reason,
        )  # fmt: skip
        s.commit()
        return custody.licence_json(s, lic, clock().date())

    @app.post("/v1/licences/check")
    def check_licences(
        who: Annotated[Principal, Depends(g("POST", "/v1/licences/check"))], s: DB
    ) -> dict[str, Any]:
        from server import custody

        alerts = custody.check_licences(s, at=clock(), warn_days=settings.licence_warning_days)
        s.commit()
        return {"alerts": [a.message for a in alerts]}

    # -- audit trail and alerts ---------------------------------------------------------------

    @app.get("/v1/audit")
    def audit_query(
        who: Annotated[Principal, Depends(g("GET", "/v1/audit"))],
        s: DB,
        object_type: Annotated[str | None, Query(max_length=32)] = None,
        object_id: Annotated[str | None, Query(max_length=128)] = None,
        actor: Annotated[str | None, Query(max_length=ID)] = None,
        after: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> dict[str, Any]:
        q = select(AuditEntry).where(AuditEntry.seq > after)
        if object_type:
            q = q.where(AuditEntry.object_type == object_type)
        if object_id:
            q = q.where(AuditEntry.object_id == object_id)
        if actor:
            q = q.where(AuditEntry.actor == actor)
        rows = list(s.scalars(q.order_by(AuditEntry.seq).limit(limit)))
        return {
            "entries": [audit.to_json(e) for e in rows],
            "next_after": rows[-1].seq if rows else after,
        }

    @app.get("/v1/alerts")
    def list_alerts(
        who: Annotated[Principal, Depends(g("GET", "/v1/alerts"))], s: DB
    ) -> list[dict[str, Any]]:
        sites = who.sites("alerts.read")
        q = select(Alert).order_by(Alert.id)
        if sites is not None:
            q = q.where(Alert.site_id.in_(sorted(sites)))
        return [review.alert_json(a) for a in s.scalars(q)]

    # -- acknowledging an alert (a new row; alerts are append-only: server.alerts) -------------

    class AckBody(BaseModel):
        alert_id: int = Field(ge=1, le=2**31 - 1)  # alerts.id is a 32-bit column
        note: str = Field(min_length=1, max_length=TEXT)

    @app.post("/v1/alerts/acknowledgements", status_code=201)
    def acknowledge_alert(
        body: AckBody,
        who: Annotated[Principal, Depends(g("POST", "/v1/alerts/acknowledgements"))],
        s: DB,
    ) -> dict[str, object]:
        from server import alerts

        ack = alerts.acknowledge(s, who, at=clock(), alert_id=body.alert_id, note=body.note)
        s.commit()
        return alerts.ack_json(ack)
