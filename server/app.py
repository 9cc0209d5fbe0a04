"""The composition root: :func:`create_app` builds the app from its parts and includes one
router per domain.

- :mod:`server.units` — unit administration, the unit API (signed requests) and ingest;
- :mod:`server.people` — sign-in, sessions, people and the access checks;
- :mod:`server.quality` — specifications, results, review, release, out-of-specification cases;
- :mod:`server.custody` — the chain of identity and transfer licences;
- :mod:`server.audit` — the audit trail and alerts;
- :mod:`server.log` — the transparency log (public read: checkpoint, tiles, proofs).

Every request passes the door first (:class:`server.door.BodyLimit`); every refusal leaves as an
RFC 9457 problem document (:mod:`server.errors`).  The database must be at the migrations' head
(``ctgtp server migrate``): :func:`create_app` does not migrate.
"""

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from sqlalchemy.orm import sessionmaker

from server import console, errors
from server.audit.api import router as audit_router
from server.custody.api import router as custody_router
from server.db import make_engine, require_head
from server.door import BodyLimit
from server.keys import load_server_key
from server.log.api import router as log_router
from server.log.store import LogKey
from server.people.api import router as people_router
from server.people.auth import Access
from server.quality.api import router as quality_router
from server.settings import Settings
from server.units import service as units
from server.units.api import UnitGate
from server.units.api import router as units_router
from server.verifying import Verifier

MIN_ADMIN_TOKEN = 32  # characters: the README's placeholder "..." once worked as a real token
ROUTERS = (
    units_router, people_router, quality_router, custody_router, audit_router, log_router
)  # fmt: skip


def create_app(
    settings: Settings | None = None,
    clock: Callable[[], datetime] | None = None,
    *,
    unit_clock: Callable[[], datetime] | None = None,
) -> FastAPI:
    """The app.  ``clock`` (UTC, aware) is injectable for tests of time-bound rules (people,
    review, custody).  ``unit_clock`` is the unit API's: real time by default, because a unit
    signs its requests with its own real time and its events are checked against the same
    clock (``clock.*`` alerts)."""
    settings = settings or Settings()
    if settings.admin_token and len(settings.admin_token) < MIN_ADMIN_TOKEN:
        raise ValueError(
            f"admin_token (CTGTP_SERVER_ADMIN_TOKEN) has {len(settings.admin_token)} characters; "
            f"at least {MIN_ADMIN_TOKEN} are required (e.g. python -c 'import secrets; "
            "print(secrets.token_urlsafe(32))'), or leave it empty to turn the admin token off"
        )
    clock = clock or units.now
    engine = make_engine(settings.database_url)
    require_head(engine)  # migrating is a deploy step: `ctgtp server migrate`
    sessions = sessionmaker(engine, expire_on_commit=False)
    verifier = Verifier(
        settings.verify_workers, settings.parallel_verify_min_lines, settings.verify_worker_share
    )

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        try:
            yield
        finally:
            verifier.close()

    app = FastAPI(
        title="CTGTP batch record server",
        version="0.1.0",
        lifespan=lifespan,
        responses=errors.ERROR_RESPONSES,
    )
    app.state.settings = settings
    app.state.engine = engine
    app.state.sessions = sessions
    app.state.clock = clock
    app.state.verifier = verifier
    app.state.access = access = Access(sessions, settings, clock)
    server_key = load_server_key(settings.data_dir)
    app.state.units = UnitGate(sessions, settings, server_key, verifier, unit_clock or units.now)
    # The transparency log signs its checkpoints with the same key, under its origin.
    app.state.log_key = LogKey(settings.log_origin, server_key)
    app.add_middleware(BodyLimit, settings=settings)
    errors.install(app, access.audit_forbidden)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(console.router)  # the QA console's pages (HTML, outside the OpenAPI)
    app.openapi = lambda: _openapi(app)  # type: ignore[method-assign]
    return app


def _openapi(app: FastAPI) -> dict[str, Any]:
    """The OpenAPI document, with every error answered as ``application/problem+json``."""
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
        for item in doc.get("paths", {}).values():
            for op in item.values():
                for status, resp in op.get("responses", {}).items():
                    content = resp.get("content", {})
                    if status[:1] in "45" and "application/json" in content:
                        resp["content"] = {errors.MEDIA_TYPE: content["application/json"]}
        app.openapi_schema = doc
    return app.openapi_schema
