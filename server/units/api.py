"""The unit administration API (a person with ``units.manage``, or the bootstrap token) and the
unit API (requests signed by the unit's key): the stored head, segments, the site's operators.
Both keep the unit clock (``create_app``'s ``unit_clock``), the one units' times are judged by.

Unit requests are rate-limited per client address before their signature is checked and per
unit after, so no one without a unit's key can spend that unit's budget; refused signatures and
replays are audited, at most one row per address and kind a window, with the count.  The unit
API keeps the real clock: a unit signs its requests with its own real time, and its events are
checked against the same clock (``clock.*`` alerts).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlalchemy.orm import Session, sessionmaker

from ebr_core.errors import EbrError
from ebr_core.keys import UnitSigner
from ebr_core.requestsig import RequestSignatureError, parse_headers
from ebr_core.vocab import PersonStatus, Role, UnitStatus
from server.audit import trail as audit
from server.db import EventRow, Person, RoleGrant, Unit
from server.errors import (
    Forbidden,
    InvalidSegment,
    Replayed,
    TooLarge,
    Unauthorized,
    Unavailable,
)
from server.log.receipts import receipt_log
from server.log.store import LogKey
from server.people.auth import DB, Scope, require
from server.people.service import Principal
from server.schemas import PathId
from server.settings import Settings
from server.units import ingest, service
from server.units.schemas import (
    EnrolBody,
    Head,
    Health,
    KeyBody,
    KeyRotated,
    Operators,
    Receipt,
    RevokeBody,
    UnitInfo,
    UnitOut,
    UnitState,
)
from server.verifying import Verifier

router = APIRouter(tags=["units"])

ManageUnits = Annotated[Principal, Depends(require("units.manage", Scope.ORG))]
ManageUnit = Annotated[Principal, Depends(require("units.manage", Scope.UNIT))]


class UnitGate:
    """What the unit API keeps between requests: the rate limiters, the refusal audit's
    limiters, the verifier's worker and the server's receipt key."""

    def __init__(
        self,
        sessions: sessionmaker[Session],
        settings: Settings,
        server_key: UnitSigner,
        verifier: Verifier,
        clock: Callable[[], datetime],
    ) -> None:
        self.sessions, self.settings, self.server_key = sessions, settings, server_key
        self.verifier, self.clock = verifier, clock
        self.limiter = service.RateLimiter(settings.rate_per_second, settings.rate_burst)
        self.by_address = service.RateLimiter(
            settings.address_rate_per_second, settings.address_rate_burst, "client address"
        )
        self.refusals = audit.RefusalLimiter(window_s=settings.failure_audit_interval_s)
        self.revoked_alerts = audit.RefusalLimiter(window_s=60.0)

    def rate_clock(self) -> float:
        return self.clock().timestamp()

    def refused(self, kind: str, address: str, unit_id: str, reason: str) -> None:
        """Spend from the address's budget and audit a refused unit request: one row per
        address and kind a window, counting.  In its own transaction: kept while the request
        fails."""
        self.by_address.spend(address, self.rate_clock())
        with self.sessions() as s:
            row = audit.append_limited(
                s, at=self.clock(), key=(kind, address), actor=f"address {address}", action=kind,
                object_type="unit", object_id=unit_id, reason=reason, limiter=self.refusals,
            )  # fmt: skip
            if row is not None:
                s.commit()

    async def signed_body(self, request: Request, unit_id: str) -> tuple[Unit, bytes]:
        address = request.client.host if request.client else "unknown"
        settings = self.settings
        # Checked before the signature, spent by refused requests only: a flood of bad ones is
        # stopped before any key is read, and good units behind one address (NAT) never are.
        self.by_address.check(address, self.rate_clock())
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
        unit = await run_in_threadpool(
            self.authenticate,
            dict(request.headers), request.method, request.url.path, body, unit_id, address,
        )  # fmt: skip
        self.limiter.take(unit.unit_id, self.rate_clock())  # signed by the unit: its own budget
        return unit, body

    def authenticate(
        self,
        headers: dict[str, str],
        method: str,
        path: str,
        body: bytes,
        unit_id: str,
        address: str,
    ) -> Unit:
        """The unit that signed this request (in the thread pool), or the audited refusal."""
        try:
            h = parse_headers(headers)
        except RequestSignatureError as e:
            self.refused("unit.signature_refused", address, unit_id, str(e))
            raise Unauthorized(str(e)) from e
        try:
            with self.sessions() as s:
                u = service.authenticate(
                    s, self.settings, h, method, path, body, unit_id,
                    at=self.clock(), revoked_alerts=self.revoked_alerts,
                )  # fmt: skip
                s.commit()
                return u
        except Replayed as e:
            self.refused("unit.request_replayed", address, unit_id, e.message)
            raise
        except (Unauthorized, Forbidden) as e:
            self.refused("unit.signature_refused", address, unit_id, e.message)
            raise


async def gate(request: Request) -> UnitGate:
    g = request.app.state.units
    assert isinstance(g, UnitGate)
    return g


Gate = Annotated[UnitGate, Depends(gate)]


@router.get("/health", response_model=Health)
def health() -> Any:
    return {"status": "ok"}


@router.get(
    "/server-key",
    response_class=Response,
    responses={200: {"content": {"application/json": {}},
                     "description": "the public key that signs receipts (server.pub)"}},
)  # fmt: skip
def server_public_key(g: Gate) -> Response:
    return Response(g.server_key.public.to_json(), media_type="application/json")


# -- administration ---------------------------------------------------------------------------


@router.post("/admin/units", status_code=201, response_model=UnitOut)
def enrol(body: EnrolBody, who: ManageUnits, db: DB, g: Gate) -> Any:
    u = service.enrol(
        db, body.site_id, body.unit_id, body.public_key.encode(), at=g.clock(), actor=who.user_id
    )
    return {"unit_id": u.unit_id, "site_id": u.site_id, "status": u.status}


@router.post("/admin/units/{unit_id}/rotate", response_model=KeyRotated)
def rotate(unit_id: PathId, body: KeyBody, who: ManageUnit, db: DB, g: Gate) -> Any:
    key_id = service.rotate(db, unit_id, body.public_key.encode(), at=g.clock(), actor=who.user_id)
    return {"unit_id": unit_id, "key_id": key_id}


@router.post("/admin/units/{unit_id}/revoke", response_model=UnitState)
def revoke(unit_id: PathId, body: RevokeBody, who: ManageUnit, db: DB, g: Gate) -> Any:
    service.revoke(db, unit_id, body.reason, at=g.clock(), actor=who.user_id)
    return {"unit_id": unit_id, "status": UnitStatus.REVOKED}


@router.get("/admin/units/{unit_id}", response_model=UnitInfo)
def unit_info(unit_id: PathId, who: ManageUnit, db: DB) -> Any:
    u = service.get_unit(db, unit_id)
    n = db.scalar(select(func.count()).select_from(EventRow).where(EventRow.unit_id == unit_id))
    return {
        "unit_id": u.unit_id,
        "status": u.status,
        "head_seq": u.head_seq,
        "head_hash": u.head_hash,
        "events": n,
    }


# -- the unit API (signed by the unit) --------------------------------------------------------


@router.get("/v1/units/{unit_id}/head", response_model=Head)
async def head(unit_id: str, request: Request, g: Gate) -> Any:
    unit, _ = await g.signed_body(request, unit_id)
    return {
        "unit_id": unit.unit_id,
        "head_seq": unit.head_seq,
        "head_hash": unit.head_hash,
        "checkpoint_seq": unit.checkpoint_seq,
    }


@router.get("/v1/units/{unit_id}/operators", response_model=Operators)
async def operators(unit_id: str, request: Request, g: Gate) -> Any:
    """The operators of the unit's site with their argon2id hashes, for offline
    re-authentication at the edge (the hashes never leave the server otherwise).

    Only people whose every role, at every site, is ``operator``: a unit is a device on the
    shop floor, and the hash of someone who also reviews, approves, audits or administers
    would let whoever holds the unit attack a password that signs releases.  Such a person
    signs at the station with a separate operator account.  Nor anyone whose password was
    set by someone else and not yet changed by its owner."""
    unit, _ = await g.signed_body(request, unit_id)

    def read() -> dict[str, Any]:
        with g.sessions() as s:
            other_roles = select(RoleGrant.user_id).where(RoleGrant.role != Role.OPERATOR)
            operators = s.scalars(
                select(Person)
                .join(RoleGrant, RoleGrant.user_id == Person.user_id)
                .where(
                    RoleGrant.role == Role.OPERATOR,
                    RoleGrant.site_id.in_((unit.site_id, "*")),
                    Person.status == PersonStatus.ACTIVE,
                    # a password someone else set is the setter's knowledge until its owner
                    # changes it: it does not reach the stations before then
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
                    "roles": [Role.OPERATOR],
                    "password_hash": p.password_hash,
                }
                for p in operators
            ]
            return {"site_id": unit.site_id, "users": users}

    return await run_in_threadpool(read)


@router.post("/v1/units/{unit_id}/segments", response_model=Receipt)
async def push(unit_id: str, request: Request, g: Gate) -> Any:
    _, body = await g.signed_body(request, unit_id)
    encoding = request.headers.get("content-encoding")
    log_key = request.app.state.log_key
    # Decompressed and stored in the thread pool: the event loop serves other units meanwhile.
    return await run_in_threadpool(store_segment, g, log_key, unit_id, body, encoding)


def store_segment(
    g: UnitGate, log_key: LogKey, unit_id: str, body: bytes, encoding: str | None
) -> dict[str, Any]:
    """Store one segment of an authenticated unit's request body: its signed receipt."""
    settings = g.settings

    def store_once(data: bytes) -> ingest.IngestResult:
        with g.sessions() as s:
            u = s.get(Unit, unit_id, with_for_update=True)
            assert u is not None
            try:
                r = ingest.ingest(s, settings, u, data, g.verifier, at=g.clock())
            except EbrError as e:
                raise InvalidSegment(str(e)) from e
            if r.log_index is not None:
                # The checkpoint and the proof of the segment's leaf, in the same commit.
                r.log = receipt_log(s, log_key, r.log_index, g.clock())
            s.commit()
            return r

    data = ingest.read_segment(body, encoding, settings)
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
                    f"({type(e).__name__}); nothing of this segment was stored, retry"
                ) from e
            time.sleep(0.02 * (attempt + 1))
    # How long this segment took here (lock, verify, store, commit): fleet latency.
    if r.log is None:  # nothing new stored: the latest checkpoint, for the consistency check
        with g.sessions() as s:
            r.log = receipt_log(s, log_key, None, g.clock())
    r.ingest_us = int((time.perf_counter() - t0) * 1e6)
    # The log's proof, under the receipt's signature (docs/transparency.md, "Receipts").
    return ingest.receipt(g.server_key, unit_id, r, at=g.clock())
