"""The FastAPI application factory.

Routes: ``/health``; the admin API (the bootstrap ``admin_token`` or a person with the admin role)
to enrol, rotate and revoke units and read alerts; the unit API (requests signed by the unit key)
to read the stored head, push segments and fetch the site's operators; ``/server-key`` for the
key that signs receipts; and the people and quality-review API of :mod:`server.qa_api`.

Every route has a body-size limit (:class:`BodyLimit`, counting the bytes as they arrive) and
request JSON nested at most :data:`ebr_core.canonical.MAX_DEPTH` levels; a validation error
names the fields and never echoes what was submitted (a password must not come back in a 422).
Unit requests are rate-limited per client address before their signature is checked and per unit
after, so no one without a unit's key can spend that unit's budget; refused signatures and
replays are audited, at most one row per address and kind a minute with the count.
"""

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, MutableMapping
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ebr_core.canonical import MAX_DEPTH, depth
from ebr_core.errors import EbrError
from ebr_core.keys import UnitSigner
from ebr_core.requestsig import RequestSignatureError, parse_headers
from server import audit, errors, qa_api, review, service
from server.db import Alert, EventRow, Person, RoleGrant, Unit, create_schema, make_engine
from server.errors import (
    MEDIA_TYPE,
    Forbidden,
    InvalidSegment,
    NulCharacter,
    Replayed,
    ServerError,
    TooDeep,
    TooLarge,
    Unauthorized,
    Unavailable,
    Unprocessable,
    problem_json,
)
from server.keys import load_server_key
from server.people import Principal
from server.settings import Settings
from server.verifying import Verifier

MIN_ADMIN_TOKEN = 32  # characters: the README's placeholder "..." once worked as a real token
UNIT_API = "/v1/units/"

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class _BodyTooLarge(Exception):
    pass


async def _answer(send: Send, e: ServerError) -> None:
    """Answer at the door with the same problem document the app's handler gives."""
    body = problem_json(e)
    await send(
        {
            "type": "http.response.start",
            "status": e.status,
            "headers": [
                (b"content-type", MEDIA_TYPE.encode()),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


class BodyLimit:
    """ASGI middleware: a request body over the route's limit is answered 413 before the app
    parses it (a 200 MiB login body was once parsed).  ``Content-Length`` is checked first, but
    the bytes are counted as they arrive, so a chunked or lying body is stopped too.  Bodies of
    routes other than the unit API (which streams its own, up to ``max_body_bytes``) are read
    here, and JSON nested deeper than :data:`MAX_DEPTH` is answered 422 before any parser
    recurses into it."""

    def __init__(self, app: ASGIApp, settings: Settings) -> None:
        self.app, self.settings = app, settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        unit_api = str(scope.get("path", "")).startswith(UNIT_API)
        limit = self.settings.max_body_bytes if unit_api else self.settings.max_api_body_bytes
        too_large = f"request body over {limit} bytes (the limit of this route)"
        headers = dict(scope.get("headers") or [])
        length = headers.get(b"content-length")
        if length is not None and (not length.isdigit() or len(length) > 18):
            await _answer(send, ServerError("Content-Length is not a byte count"))
            return
        if length is not None and int(length) > limit:
            await _answer(send, TooLarge(too_large))
            return
        if unit_api:
            await self._counted(scope, receive, send, limit, too_large)
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # disconnected: nothing to limit
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                await _answer(send, TooLarge(too_large))
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if body and b"json" in headers.get(b"content-type", b""):
            problem = _json_problem(body)
            if problem is not None:
                await _answer(send, problem)
                return
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _counted(
        self, scope: Scope, receive: Receive, send: Send, limit: int, too_large: str
    ) -> None:
        size, started = 0, False

        async def counting() -> Message:
            nonlocal size
            message = await receive()
            if message["type"] == "http.request":
                size += len(message.get("body", b""))
                if size > limit:
                    raise _BodyTooLarge
            return message

        async def watching(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, counting, watching)
        except _BodyTooLarge:
            if not started:
                await _answer(send, TooLarge(too_large))


def _json_problem(body: bytes) -> Unprocessable | None:
    """Why a JSON body is refused before parsing (nesting), or None: invalid JSON is left to the
    route's own validation, which names the problem."""
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError as e:
        if "recursion" in str(e).lower() or "depth" in str(e).lower():
            return TooDeep(f"JSON nested deeper than {MAX_DEPTH} levels")
        return None
    if depth(value) > MAX_DEPTH:
        return TooDeep(f"JSON nested deeper than {MAX_DEPTH} levels")
    where = _nul_at(value, "body")
    if where is not None:
        return NulCharacter(
            f"{where} contains a NUL character (\\u0000), which no record can hold "
            "(PostgreSQL text refuses it); send the text without it"
        )
    return None


def _nul_at(value: Any, path: str) -> str | None:
    """Where the first NUL character is in a parsed JSON value (a key or a string), or None.
    Any route's text may end up in a record or the audit trail, so it is refused at the door."""
    if isinstance(value, str):
        return path if "\x00" in value else None
    if isinstance(value, dict):
        for k, v in value.items():
            if "\x00" in k:
                return f"a key of {path}"
            found = _nul_at(v, f"{path}.{k}")
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found = _nul_at(v, f"{path}[{i}]")
            if found is not None:
                return found
    return None


class EnrolBody(BaseModel):
    site_id: str
    unit_id: str
    public_key: str  # the unit's public key file (JSON document or PEM)


class KeyBody(BaseModel):
    public_key: str


class RevokeBody(BaseModel):
    reason: str


def create_app(
    settings: Settings | None = None, clock: Callable[[], datetime] | None = None
) -> FastAPI:
    """The app; ``clock`` (UTC, aware) is injectable for tests of time-bound rules (people,
    review, custody).  The unit API keeps the real clock: a unit signs its requests with its own
    real time, and its events are checked against the same clock (``clock.*`` alerts)."""
    settings = settings or Settings()
    if settings.admin_token and len(settings.admin_token) < MIN_ADMIN_TOKEN:
        raise ValueError(
            f"admin_token (CTGTP_SERVER_ADMIN_TOKEN) has {len(settings.admin_token)} characters; "
            f"at least {MIN_ADMIN_TOKEN} are required (e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'), or leave it empty to turn the admin token off"
        )
    clock = clock or service.now
    engine = make_engine(settings.database_url)
    create_schema(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    server_key: UnitSigner = load_server_key(settings.data_dir)
    limiter = service.RateLimiter(settings.rate_per_second, settings.rate_burst)
    by_address = service.RateLimiter(
        settings.address_rate_per_second, settings.address_rate_burst, "client address"
    )
    refusals = audit.RefusalLimiter(window_s=settings.failure_audit_interval_s)
    revoked_alerts = audit.RefusalLimiter(window_s=60.0)
    verifier = Verifier(
        settings.verify_workers, settings.parallel_verify_min_lines, settings.verify_worker_share
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            verifier.close()

    app = FastAPI(title="CTGTP batch record server", version="0.1.0", lifespan=lifespan)
    app.state.settings = settings
    app.state.engine = engine
    app.state.verifier = verifier
    app.add_middleware(BodyLimit, settings=settings)

    def db() -> Iterator[Session]:
        with sessions() as s:
            yield s

    DB = Annotated[Session, Depends(db)]
    access = qa_api.Access(sessions, settings, clock)
    errors.install(app, access.audit_forbidden)
    qa_api.add_routes(app, access)
    g = access.guard

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/server-key")
    def server_public_key() -> Response:
        return Response(server_key.public.to_json(), media_type="application/json")

    @app.post("/admin/units", status_code=201)
    def enrol(
        body: EnrolBody, who: Annotated[Principal, Depends(g("POST", "/admin/units"))], s: DB
    ) -> dict[str, Any]:
        u = service.enrol(
            s, body.site_id, body.unit_id, body.public_key.encode(), actor=who.user_id
        )
        s.commit()
        return {"unit_id": u.unit_id, "site_id": u.site_id, "status": u.status}

    @app.post("/admin/units/{unit_id}/rotate")
    def rotate(
        unit_id: str,
        body: KeyBody,
        who: Annotated[Principal, Depends(g("POST", "/admin/units/{unit_id}/rotate"))],
        s: DB,
    ) -> dict[str, str]:
        key_id = service.rotate(s, unit_id, body.public_key.encode(), actor=who.user_id)
        s.commit()
        return {"unit_id": unit_id, "key_id": key_id}

    @app.post("/admin/units/{unit_id}/revoke")
    def revoke(
        unit_id: str,
        body: RevokeBody,
        who: Annotated[Principal, Depends(g("POST", "/admin/units/{unit_id}/revoke"))],
        s: DB,
    ) -> dict[str, str]:
        service.revoke(s, unit_id, body.reason, actor=who.user_id)
        s.commit()
        return {"unit_id": unit_id, "status": "revoked"}

    @app.get("/admin/alerts")
    def alerts(
        who: Annotated[Principal, Depends(g("GET", "/admin/alerts"))], s: DB
    ) -> list[dict[str, Any]]:
        return [review.alert_json(a) for a in s.scalars(select(Alert).order_by(Alert.id))]

    @app.get("/admin/units/{unit_id}")
    def unit_info(
        unit_id: str, who: Annotated[Principal, Depends(g("GET", "/admin/units/{unit_id}"))], s: DB
    ) -> dict[str, Any]:
        u = service._unit(s, unit_id)
        n = s.scalar(select(func.count()).select_from(EventRow).where(EventRow.unit_id == unit_id))
        return {
            "unit_id": u.unit_id,
            "status": u.status,
            "head_seq": u.head_seq,
            "head_hash": u.head_hash,
            "events": n,
        }

    def refused(kind: str, address: str, unit_id: str, reason: str) -> None:
        """Spend from the address's budget and audit a refused unit request: one row per address
        and kind a window, counting."""
        by_address.spend(address, service.rate_clock())
        with sessions() as s:
            row = audit.append_limited(
                s,
                at=service.now(),
                key=(kind, address),
                actor=f"address {address}",
                action=kind,
                object_type="unit",
                object_id=unit_id,
                reason=reason,
                limiter=refusals,
            )
            if row is not None:
                s.commit()

    async def signed_body(request: Request, unit_id: str) -> tuple[Unit, bytes]:
        address = request.client.host if request.client else "unknown"
        # Checked before the signature, spent by refused requests only: a flood of bad ones is
        # stopped before any key is read, and good units behind one address (NAT) never are.
        by_address.check(address, service.rate_clock())
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > settings.max_body_bytes:
            raise TooLarge(f"request body over {settings.max_body_bytes} bytes")
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > settings.max_body_bytes:
                raise TooLarge(f"request body over {settings.max_body_bytes} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)

        def auth() -> Unit:
            try:
                h = parse_headers(dict(request.headers))
            except RequestSignatureError as e:
                refused("unit.signature_refused", address, unit_id, str(e))
                raise Unauthorized(str(e)) from e
            try:
                with sessions() as s:
                    u = service.authenticate(
                        s,
                        settings,
                        h,
                        request.method,
                        request.url.path,
                        body,
                        unit_id,
                        revoked_alerts=revoked_alerts,
                    )
                    s.commit()
                    return u
            except Replayed as e:
                refused("unit.request_replayed", address, unit_id, e.message)
                raise
            except (Unauthorized, Forbidden) as e:
                refused("unit.signature_refused", address, unit_id, e.message)
                raise

        unit = await run_in_threadpool(auth)
        limiter.take(unit.unit_id, service.rate_clock())  # signed by the unit: its own budget
        return unit, body

    @app.get("/v1/units/{unit_id}/head")
    async def head(unit_id: str, request: Request) -> dict[str, Any]:
        unit, _ = await signed_body(request, unit_id)
        return {
            "unit_id": unit.unit_id,
            "head_seq": unit.head_seq,
            "head_hash": unit.head_hash,
            "checkpoint_seq": unit.checkpoint_seq,
        }

    @app.get("/v1/units/{unit_id}/operators")
    async def operators(unit_id: str, request: Request) -> dict[str, Any]:
        """The operators of the unit's site with their argon2id hashes, for offline
        re-authentication at the edge (the hashes never leave the server otherwise).

        Only people whose every role, at every site, is ``operator``: a unit is a device on the
        shop floor, and the hash of someone who also reviews, approves, audits or administers
        would let whoever holds the unit attack a password that signs releases.  Such a person
        signs at the station with a separate operator account.  Nor anyone whose password was
        set by someone else and not yet changed by its owner."""
        unit, _ = await signed_body(request, unit_id)

        def read() -> dict[str, Any]:
            with sessions() as s:
                other_roles = select(RoleGrant.user_id).where(RoleGrant.role != "operator")
                operators = s.scalars(
                    select(Person)
                    .join(RoleGrant, RoleGrant.user_id == Person.user_id)
                    .where(
                        RoleGrant.role == "operator",
                        RoleGrant.site_id.in_((unit.site_id, "*")),
                        Person.status == "active",
                        # a password someone else set is the setter's knowledge until its
                        # owner changes it: it does not reach the stations before then
                        Person.must_change_password.is_(False),
                        Person.user_id.not_in(other_roles),
                    )
                    .distinct()
                    .order_by(Person.user_id)
                )
                users = [
                    {
                        "user_id": p.user_id,
                        "printed_name": p.printed_name,
                        "roles": ["operator"],
                        "password_hash": p.password_hash,
                    }
                    for p in operators
                ]
                return {"site_id": unit.site_id, "users": users}

        return await run_in_threadpool(read)

    @app.post("/v1/units/{unit_id}/segments")
    async def push(unit_id: str, request: Request) -> dict[str, Any]:
        _, body = await signed_body(request, unit_id)
        encoding = request.headers.get("content-encoding")

        def store_once(data: bytes) -> service.IngestResult:
            with sessions() as s:
                u = s.get(Unit, unit_id, with_for_update=True)
                assert u is not None
                try:
                    r = service.ingest(s, settings, u, data, verifier)
                except EbrError as e:
                    raise InvalidSegment(str(e)) from e
                s.commit()
                return r

        def store() -> dict[str, Any]:
            # Decompressed here, in the thread pool: the event loop serves other units meanwhile.
            data = service.read_segment(body, encoding, settings)
            t0 = time.perf_counter()
            # The same segment pushed twice at once: on SQLite both read the head before either
            # writes, and the second insert collides.  Again from the head, it is a retry.
            for attempt in range(3):
                try:
                    r = store_once(data)
                    break
                except (IntegrityError, OperationalError) as e:
                    if attempt == 2:
                        raise Unavailable(
                            f"unit {unit_id}: another request stored events at the same moment "
                            f"({type(e).__name__}); nothing of this segment was stored, retry",
                        ) from e
                    time.sleep(0.02 * (attempt + 1))
            # How long this segment took here (lock, verify, store, commit): fleet latency.
            r.ingest_us = int((time.perf_counter() - t0) * 1e6)
            return service.receipt(server_key, unit_id, r)

        return await run_in_threadpool(store)

    return app
