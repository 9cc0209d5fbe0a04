"""The FastAPI application factory.

Routes: ``/health``; the admin API (the bootstrap ``admin_token`` or a person with the admin role)
to enrol, rotate and revoke units and read alerts; the unit API (requests signed by the unit key)
to read the stored head, push segments and fetch the site's operators; ``/server-key`` for the
key that signs receipts; and the people and quality-review API of :mod:`server.qa_api`.
"""

import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ebr_core.errors import EbrError
from ebr_core.keys import UnitSigner
from ebr_core.requestsig import RequestSignatureError, parse_headers
from server import qa_api, review, service
from server.db import Alert, EventRow, Person, RoleGrant, Unit, create_schema, make_engine
from server.errors import ServerError, TooLarge, Unauthorized
from server.keys import load_server_key
from server.people import Principal
from server.settings import Settings
from server.verifying import Verifier


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
    """The app; ``clock`` (UTC, aware) is injectable for tests of time-bound rules."""
    settings = settings or Settings()
    clock = clock or service.now
    engine = make_engine(settings.database_url)
    create_schema(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    server_key: UnitSigner = load_server_key(settings.data_dir)
    limiter = service.RateLimiter(settings.rate_per_second, settings.rate_burst)
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

    @app.exception_handler(ServerError)
    async def _server_error(_req: Request, e: ServerError) -> JSONResponse:
        return JSONResponse({"error": type(e).__name__, "detail": e.message}, status_code=e.status)

    def db() -> Iterator[Session]:
        with sessions() as s:
            yield s

    DB = Annotated[Session, Depends(db)]
    access = qa_api.Access(sessions, settings, clock)
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

    async def signed_body(request: Request, unit_id: str) -> tuple[Unit, bytes]:
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
        try:
            h = parse_headers(dict(request.headers))
        except RequestSignatureError as e:
            raise Unauthorized(str(e)) from e
        limiter.take(unit_id, service.rate_clock())

        def auth() -> Unit:
            with sessions() as s:
                u = service.authenticate(
                    s, settings, h, request.method, request.url.path, body, unit_id
                )
                s.commit()
                return u

        return await run_in_threadpool(auth), body

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
        re-authentication at the edge (the hashes never leave the server otherwise)."""
        unit, _ = await signed_body(request, unit_id)

        def read() -> dict[str, Any]:
            with sessions() as s:
                operators = s.scalars(
                    select(Person)
                    .join(RoleGrant, RoleGrant.user_id == Person.user_id)
                    .where(
                        RoleGrant.role == "operator",
                        RoleGrant.site_id.in_((unit.site_id, "*")),
                        Person.status == "active",
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

        def store() -> dict[str, Any]:
            # Decompressed here, in the thread pool: the event loop serves other units meanwhile.
            data = service.read_segment(body, encoding, settings)
            t0 = time.perf_counter()
            with sessions() as s:
                u = s.get(Unit, unit_id, with_for_update=True)
                assert u is not None
                try:
                    r = service.ingest(s, settings, u, data, verifier)
                except EbrError as e:
                    raise ServerError(str(e), status=422) from e
                s.commit()
            # How long this segment took here (lock, verify, store, commit): fleet latency.
            r.ingest_us = int((time.perf_counter() - t0) * 1e6)
            return service.receipt(server_key, unit_id, r)

        return await run_in_threadpool(store)

    return app
