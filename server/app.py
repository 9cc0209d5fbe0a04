"""The FastAPI application factory.

Routes: ``/health``; the admin API (bearer ``admin_token``) to enrol, rotate and revoke units and
read alerts and batches; the unit API (requests signed by the unit key) to read the stored head
and to push segments; ``/server-key`` for the key that signs receipts.
"""

import hmac
from collections.abc import Iterator
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from ebr_core.batch import fold
from ebr_core.errors import EbrError
from ebr_core.keys import UnitSigner
from ebr_core.requestsig import RequestSignatureError, parse_headers
from server import service
from server.db import Alert, EventRow, Unit, create_schema, make_engine
from server.errors import ServerError, TooLarge, Unauthorized
from server.keys import load_server_key
from server.settings import Settings


class EnrolBody(BaseModel):
    site_id: str
    unit_id: str
    public_key: str  # the unit's public key file (JSON document or PEM)


class KeyBody(BaseModel):
    public_key: str


class RevokeBody(BaseModel):
    reason: str


def project_batch(s: Session, batch_id: str) -> dict[str, Any]:
    """The batch projection, built by the same fold the edge runs."""
    import orjson

    from ebr_core.record import Event

    rows = s.scalars(
        select(EventRow)
        .where(EventRow.batch_id == batch_id)
        .order_by(EventRow.unit_id, EventRow.seq)
    ).all()
    if not rows:
        from server.errors import NotFound

        raise NotFound(f"batch {batch_id} has no events on this server")
    events = []
    for r in rows:
        d = orjson.loads(r.line)
        del d["type"]
        events.append(Event(**d))
    st = fold(events)[batch_id]
    return {
        "batch_id": st.batch_id,
        "unit_id": st.unit_id,
        "coi": st.coi,
        "status": st.status,
        "mbr": f"{st.mbr_id} v{st.mbr_version}",
        "events": st.events,
        "completed_steps": list(st.completed_steps),
        "rejected_scans": [dict(x) for x in st.scans_rejected],
        "deviations": {
            d.deviation_id: {
                "reason": d.reason,
                "severity": d.severity,
                "open": d.open,
                "comments": list(d.comments),
            }
            for d in st.deviations.values()
        },
        "signatures": [
            {
                "step": g.step,
                "user_id": g.user_id,
                "printed_name": g.printed_name,
                "meaning": g.meaning,
                "signed_hash": g.signed_hash,
                "recorded_at": g.recorded_at,
            }
            for g in st.signatures
        ],
        "values": st.values,
    }


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    engine = make_engine(settings.database_url)
    create_schema(engine)
    sessions = sessionmaker(engine, expire_on_commit=False)
    server_key: UnitSigner = load_server_key(settings.data_dir)
    limiter = service.RateLimiter(settings.rate_per_second, settings.rate_burst)
    app = FastAPI(title="CTGTP batch record server", version="0.1.0")
    app.state.settings = settings
    app.state.engine = engine

    @app.exception_handler(ServerError)
    async def _server_error(_req: Request, e: ServerError) -> JSONResponse:
        return JSONResponse({"error": type(e).__name__, "detail": e.message}, status_code=e.status)

    def db() -> Iterator[Session]:
        with sessions() as s:
            yield s

    DB = Annotated[Session, Depends(db)]

    def admin(authorization: Annotated[str | None, Header()] = None) -> None:
        token = settings.admin_token
        given = (authorization or "").removeprefix("Bearer ").strip()
        if not token or not hmac.compare_digest(given.encode(), token.encode()):
            raise Unauthorized("admin API: a valid bearer token is required")

    Admin = Depends(admin)

    @app.get("/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/server-key")
    def server_public_key() -> Response:
        return Response(server_key.public.to_json(), media_type="application/json")

    @app.post("/admin/units", dependencies=[Admin], status_code=201)
    def enrol(body: EnrolBody, s: DB) -> dict[str, Any]:
        u = service.enrol(s, body.site_id, body.unit_id, body.public_key.encode())
        s.commit()
        return {"unit_id": u.unit_id, "site_id": u.site_id, "status": u.status}

    @app.post("/admin/units/{unit_id}/rotate", dependencies=[Admin])
    def rotate(unit_id: str, body: KeyBody, s: DB) -> dict[str, str]:
        key_id = service.rotate(s, unit_id, body.public_key.encode())
        s.commit()
        return {"unit_id": unit_id, "key_id": key_id}

    @app.post("/admin/units/{unit_id}/revoke", dependencies=[Admin])
    def revoke(unit_id: str, body: RevokeBody, s: DB) -> dict[str, str]:
        service.revoke(s, unit_id, body.reason)
        s.commit()
        return {"unit_id": unit_id, "status": "revoked"}

    @app.get("/admin/alerts", dependencies=[Admin])
    def alerts(s: DB) -> list[dict[str, Any]]:
        return [
            {
                "id": a.id,
                "kind": a.kind,
                "unit_id": a.unit_id,
                "message": a.message,
                "created_at": a.created_at.isoformat(),
            }
            for a in s.scalars(select(Alert).order_by(Alert.id))
        ]

    @app.get("/admin/units/{unit_id}", dependencies=[Admin])
    def unit_info(unit_id: str, s: DB) -> dict[str, Any]:
        u = service._unit(s, unit_id)
        n = s.scalar(select(func.count()).select_from(EventRow).where(EventRow.unit_id == unit_id))
        return {
            "unit_id": u.unit_id,
            "status": u.status,
            "head_seq": u.head_seq,
            "head_hash": u.head_hash,
            "events": n,
        }

    @app.get("/v1/batches/{batch_id}", dependencies=[Admin])
    def batch(batch_id: str, s: DB) -> dict[str, Any]:
        return project_batch(s, batch_id)

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

    @app.post("/v1/units/{unit_id}/segments")
    async def push(unit_id: str, request: Request) -> dict[str, Any]:
        _, body = await signed_body(request, unit_id)
        data = service.read_segment(body, request.headers.get("content-encoding"), settings)

        def store() -> dict[str, Any]:
            with sessions() as s:
                u = s.get(Unit, unit_id, with_for_update=True)
                assert u is not None
                try:
                    r = service.ingest(s, settings, u, data)
                except EbrError as e:
                    raise ServerError(str(e), status=422) from e
                s.commit()
                return service.receipt(server_key, unit_id, r)

        return await run_in_threadpool(store)

    return app
