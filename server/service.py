"""Units (enrolment, rotation, revocation), request authentication, and verified ingest.

Ingest verifies with the one verifier (:class:`ebr_core.verify.ChainVerifier`) continuing from
the unit's stored head, stores idempotently keyed by ``(unit, seq, hash)``, and refuses a fork
(same seq, different hash) with 409 while keeping the offered segment as evidence and raising a
security alert.  Nothing of a refused segment is stored.
"""

from __future__ import annotations

import base64
import gzip
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson
import zstandard
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from ebr_core.errors import EbrError
from ebr_core.keys import PublicKey, UnitSigner
from ebr_core.record import GENESIS_HASH
from ebr_core.requestsig import (
    RequestSignatureError,
    SignedHeaders,
    sign_receipt,
    verify_request,
)
from server import audit, projections
from server.db import Alert, EventRow, Fork, Nonce, Site, Unit, UnitKey
from server.errors import (
    Conflict,
    Forbidden,
    NotFound,
    Replayed,
    TooLarge,
    TooManyRequests,
    Unauthorized,
    Unprocessable,
)
from server.settings import Settings
from server.verifying import Part, Start, Verifier, with_lines

_SERIAL = Verifier(0, 0)


def now() -> datetime:
    return datetime.now(UTC)


def alert(db: Session, kind: str, unit_id: str | None, message: str) -> None:
    db.add(Alert(kind=kind, unit_id=unit_id, message=message, created_at=now()))


# -- units -------------------------------------------------------------------------------------


def _read_key(public_key_json: bytes) -> PublicKey:
    try:
        return PublicKey.from_bytes(public_key_json)
    except EbrError as e:
        raise Unprocessable(f"public key: {e}") from e


def _add_key(db: Session, unit_id: str, key: PublicKey) -> None:
    db.add(
        UnitKey(
            key_id=key.key_id,
            unit_id=unit_id,
            public_key=base64.b64encode(key.raw).decode(),
            status="active",
            added_at=now(),
        )
    )


def enrol(
    db: Session, site_id: str, unit_id: str, public_key_json: bytes, *, actor: str = "system"
) -> Unit:
    key = _read_key(public_key_json)
    if key.unit_id not in (None, unit_id):
        raise Unprocessable(f"the key is bound to unit {key.unit_id!r}, not {unit_id!r}")
    if db.get(Unit, unit_id) is not None:
        raise Conflict(f"unit {unit_id} is already enrolled (rotate its key instead)")
    if db.get(UnitKey, key.key_id) is not None:
        raise Conflict(f"key {key.key_id} is already enrolled for another unit")
    if db.get(Site, site_id) is None:
        db.add(Site(site_id=site_id, name=site_id))
    unit = Unit(
        unit_id=unit_id,
        site_id=site_id,
        status="active",
        head_seq=0,
        head_hash=GENESIS_HASH,
        checkpoint_seq=0,
        enrolled_at=now(),
    )
    db.add(unit)
    db.flush()
    _add_key(db, unit_id, key)
    audit.append(
        db,
        at=now(),
        actor=actor,
        action="unit.enrolled",
        object_type="unit",
        object_id=unit_id,
        new={"site_id": site_id, "key_id": key.key_id},
    )
    return unit


def rotate(db: Session, unit_id: str, public_key_json: bytes, *, actor: str = "system") -> str:
    unit = _unit(db, unit_id)
    key = _read_key(public_key_json)
    if db.get(UnitKey, key.key_id) is not None:
        raise Conflict(f"key {key.key_id} is already enrolled")
    retired = []
    for k in db.scalars(
        select(UnitKey).where(UnitKey.unit_id == unit.unit_id, UnitKey.status == "active")
    ):
        k.status = "retired"  # still verifies the history it signed; signs no new request
        retired.append(k.key_id)
    _add_key(db, unit_id, key)
    audit.append(
        db,
        at=now(),
        actor=actor,
        action="unit.key_rotated",
        object_type="unit",
        object_id=unit_id,
        old={"active_keys": retired},
        new={"active_keys": [key.key_id]},
    )
    return key.key_id


def revoke(db: Session, unit_id: str, reason: str, *, actor: str = "system") -> None:
    unit = _unit(db, unit_id)
    audit.append(
        db,
        at=now(),
        actor=actor,
        action="unit.revoked",
        object_type="unit",
        object_id=unit_id,
        old={"status": unit.status},
        new={"status": "revoked"},
        reason=reason,
    )
    unit.status = "revoked"
    for k in db.scalars(select(UnitKey).where(UnitKey.unit_id == unit_id)):
        k.status = "revoked"
    alert(db, "unit.revoked", unit_id, f"unit {unit_id} revoked: {reason}")


def _unit(db: Session, unit_id: str) -> Unit:
    unit = db.get(Unit, unit_id)
    if unit is None:
        raise NotFound(f"unit {unit_id} is not enrolled")
    return unit


def key_list_for(db: Session, unit_id: str) -> list[tuple[bytes, str | None]]:
    """Keys that verify this unit's checkpoints (active and retired, not revoked), as bytes:
    they may go to a worker process."""
    return [
        (base64.b64decode(k), unit_id)
        for k in db.scalars(
            select(UnitKey.public_key).where(
                UnitKey.unit_id == unit_id, UnitKey.status != "revoked"
            )
        )
    ]


# -- request authentication -------------------------------------------------------------------


class RateLimiter:
    """Per-unit token bucket (in memory: per API worker)."""

    def __init__(self, rate: float, burst: int) -> None:
        self.rate, self.burst = rate, burst
        self._state: dict[str, tuple[float, float]] = {}

    def take(self, unit_id: str, t: float) -> None:
        tokens, last = self._state.get(unit_id, (float(self.burst), t))
        tokens = min(self.burst, tokens + (t - last) * self.rate)
        if tokens < 1:
            raise TooManyRequests(
                f"unit {unit_id} sends more than {self.rate:g} requests/s; retry later"
            )
        self._state[unit_id] = (tokens - 1, t)


def authenticate(
    db: Session,
    settings: Settings,
    h: SignedHeaders,
    method: str,
    path: str,
    body: bytes,
    path_unit: str,
) -> Unit:
    if h.unit_id != path_unit:
        raise Forbidden(f"request signed by unit {h.unit_id} for the path of unit {path_unit}")
    unit = db.get(Unit, h.unit_id)
    key_row = db.get(UnitKey, h.key_id)
    if unit is None or key_row is None or key_row.unit_id != h.unit_id:
        raise Unauthorized(f"unit {h.unit_id} with key {h.key_id} is not enrolled")
    if unit.status == "revoked" or key_row.status == "revoked":
        alert(db, "unit.revoked_request", h.unit_id, f"request from revoked unit/key {h.key_id}")
        db.commit()
        raise Forbidden(f"unit {h.unit_id} (key {h.key_id}) is revoked")
    if key_row.status != "active":
        raise Unauthorized(f"key {h.key_id} was rotated out; sign with the unit's current key")
    t = int(now().timestamp())
    try:
        verify_request(
            PublicKey(base64.b64decode(key_row.public_key), h.unit_id),
            h,
            method,
            path,
            body,
            now=t,
            window=settings.clock_window_s,
        )
    except RequestSignatureError as e:
        raise Unauthorized(str(e)) from e
    db.execute(delete(Nonce).where(Nonce.seen_at < t - 2 * settings.clock_window_s))
    db.add(Nonce(unit_id=h.unit_id, nonce=h.nonce, seen_at=t))
    try:
        db.flush()
    except IntegrityError as e:
        db.rollback()
        raise Replayed(f"replayed request: nonce {h.nonce} was already used") from e
    return unit


# -- ingest -----------------------------------------------------------------------------------


# A zstd frame names the window its decoder needs: more than this is refused before anything is
# allocated (the edge compresses at level 1, a 512 KiB window).
_ZSTD_MAX_WINDOW = 8 << 20


def read_segment(body: bytes, encoding: str | None, settings: Settings) -> bytes:
    """The segment's JSON Lines from a request body (zstd, gzip or identity).  Memory stays
    bounded by ``max_segment_bytes`` whatever the body claims: a zstd frame declaring more is
    refused before decompressing, gzip decompression stops one byte past the limit."""
    limit = settings.max_segment_bytes
    if encoding is None or encoding == "identity":
        data = body
    elif encoding == "zstd":
        # One frame that declares its size (the edge's compressor writes it): a size over the
        # limit is refused before anything is decompressed, and libzstd stops a frame whose
        # blocks outgrow its declared size, so memory stays bounded by the limit.
        try:
            frame = zstandard.get_frame_parameters(body)
        except zstandard.ZstdError as e:
            raise Unprocessable(f"body is not valid zstd: {e}") from e
        if frame.content_size == zstandard.CONTENTSIZE_UNKNOWN:
            raise Unprocessable("zstd frame does not declare its content size")
        if frame.content_size > limit:
            raise TooLarge(f"segment exceeds {limit} bytes uncompressed")
        z = zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW).decompressobj()
        try:
            data = z.decompress(body)
        except zstandard.ZstdError as e:
            raise Unprocessable(f"body is not valid zstd: {e}") from e
        if not z.eof:
            raise Unprocessable("body is not valid zstd: the frame ends early")
        if z.unused_data:
            raise Unprocessable(f"body has {len(z.unused_data)} bytes after its zstd frame")
    elif encoding == "gzip":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = d.decompress(body, limit + 1)
        except zlib.error as e:
            raise Unprocessable(f"body is not valid gzip: {e}") from e
        if len(data) > limit or d.unconsumed_tail:
            raise TooLarge(f"segment exceeds {limit} bytes uncompressed")
        if not d.eof:
            raise Unprocessable("body is not valid gzip: the stream ends early")
        if d.unused_data:
            raise Unprocessable(f"body has {len(d.unused_data)} bytes after its gzip member")
    else:
        raise Unprocessable(f"Content-Encoding {encoding!r} is not zstd, gzip or identity")
    if len(data) > limit:
        raise TooLarge(f"segment exceeds {limit} bytes")
    return data


@dataclass
class IngestResult:
    stored: int
    duplicates: int
    head_seq: int
    head_hash: str
    ingest_us: int = 0


def ingest(
    db: Session, settings: Settings, unit: Unit, data: bytes, verifier: Verifier | None = None
) -> IngestResult:
    if not data.endswith(b"\n"):
        raise Unprocessable("segment must be JSON Lines, each line ending in a newline")
    lines = data.split(b"\n")[:-1]
    if len(lines) > 2 * settings.max_segment_events + 10:
        raise TooLarge(f"segment holds more than {settings.max_segment_events} events")
    # Lines at or below the stored head: the same bytes are a retry (idempotent), different ones
    # are a fork.
    new_from = 0
    duplicates = 0
    for i, line in enumerate(lines):
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise Unprocessable(f"line {i + 1}: not valid JSON ({e})") from e
        if not isinstance(rec, dict) or not isinstance(rec.get("seq"), int):
            raise Unprocessable(f"line {i + 1}: not an event or checkpoint record")
        if rec["seq"] > unit.head_seq or (
            rec.get("type") == "checkpoint" and rec["seq"] > unit.checkpoint_seq
        ):
            break
        new_from = i + 1
        if rec.get("type") == "event":
            stored = db.get(EventRow, (unit.unit_id, rec["seq"]))
            if stored is None or bytes(stored.line) != line:
                _fork(db, unit, rec, stored, data)
            duplicates += 1
    new = lines[new_from:]

    def store(p: Part, plines: list[bytes]) -> None:
        # Each verified part is written at once (the first while the worker still verifies the
        # second); a later refusal rolls the whole transaction back.
        if p.events:
            _bulk_insert(db, with_lines(p, plines), p.checkpoints)

    part = (verifier or _SERIAL).verify(
        key_list_for(db, unit.unit_id),
        unit.unit_id,
        Start(unit.head_seq, unit.head_hash, unit.checkpoint_seq),
        new,
        on_part=store,
    )
    if part.error is not None:
        reason, index = part.error
        db.rollback()
        raise Unprocessable(
            f"segment refused, nothing stored: line {new_from + index + 1}: {reason}"
        )
    if part.seal_at is not None:
        db.rollback()
        raise Unprocessable(f"line {new_from + part.seal_at + 1}: a segment carries no seal")
    events, deltas = part.events, part.deltas
    if events:
        assert part.end is not None
        verified = part.end
        if verified.checkpoint_seq != verified.seq:
            db.rollback()
            raise Unprocessable(
                f"segment refused, nothing stored: line {new_from + len(new) + 1}: events "
                f"{verified.checkpoint_seq + 1}..{verified.seq} are not covered by a checkpoint "
                "(the final checkpoint is missing)"
            )
    if events:
        projections.upsert_summaries(db, unit.unit_id, unit.site_id, deltas)
        audit.append(
            db,
            at=now(),
            actor=unit.unit_id,
            action="segment.stored",
            object_type="unit",
            object_id=unit.unit_id,
            old={"head_seq": unit.head_seq},
            new={
                "head_seq": verified.seq,
                "head_hash": verified.head_hash,
                "events": len(events),
                "batches": sorted(deltas),
            },
        )
        unit.head_seq = verified.seq
        unit.head_hash = verified.head_hash
        unit.checkpoint_seq = verified.seq
    return IngestResult(len(events), duplicates, unit.head_seq, unit.head_hash)


_EVENT_COPY_TYPES = ["varchar", "int8", "varchar", "varchar", "varchar", "varchar", "bytea"]
_CHECKPOINT_COPY_TYPES = ["varchar", "int8", "bytea"]


def _bulk_insert(
    db: Session, events: list[tuple[Any, ...]], checkpoints: list[tuple[Any, ...]]
) -> None:
    """The hot path of ingest: the driver's bulk path (COPY on PostgreSQL, executemany on
    SQLite) inside the session's transaction; ORM objects would cost more than verifying."""
    conn = db.connection()
    raw = conn.connection.dbapi_connection
    if conn.dialect.name == "postgresql":
        # Binary COPY: the lines go in as they are (text COPY writes bytea as hex, twice the
        # bytes, and formats every field), about twice the rows a second.
        with raw.cursor() as cur:  # type: ignore[union-attr]
            with cur.copy(
                "COPY events (unit_id, seq, hash, batch_id, kind, recorded_at, line) "
                "FROM STDIN (FORMAT BINARY)"
            ) as cp:
                cp.set_types(_EVENT_COPY_TYPES)
                for row in events:
                    cp.write_row(row)
            with cur.copy("COPY checkpoints (unit_id, seq, line) FROM STDIN (FORMAT BINARY)") as cp:
                cp.set_types(_CHECKPOINT_COPY_TYPES)
                for row in checkpoints:
                    cp.write_row(row)
        return
    conn.exec_driver_sql(
        "INSERT INTO events (unit_id, seq, hash, batch_id, kind, recorded_at, line) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)",
        events,
    )
    if checkpoints:
        conn.exec_driver_sql(
            "INSERT INTO checkpoints (unit_id, seq, line) VALUES (?, ?, ?)", checkpoints
        )


def _fork(
    db: Session, unit: Unit, rec: dict[str, Any], stored: EventRow | None, data: bytes
) -> None:
    stored_hash = stored.hash if stored else "(none)"
    offered = str(rec.get("hash"))
    db.rollback()
    db.add(
        Fork(
            unit_id=unit.unit_id,
            seq=int(rec["seq"]),
            stored_hash=stored_hash,
            offered_hash=offered[:64],
            received_at=now(),
            evidence=gzip.compress(data),
        )
    )
    audit.append(
        db,
        at=now(),
        actor=unit.unit_id,
        action="segment.fork_refused",
        object_type="unit",
        object_id=unit.unit_id,
        new={"seq": int(rec["seq"]), "stored_hash": stored_hash, "offered_hash": offered[:64]},
        reason="same seq, different hash: history rewritten",
    )
    alert(
        db,
        "security.fork",
        unit.unit_id,
        f"unit {unit.unit_id} offered seq {rec['seq']} with hash {offered[:16]}… but the "
        f"server holds {stored_hash[:16]}…: history was rewritten; segment refused and kept "
        "as evidence",
    )
    db.commit()
    raise Conflict(
        f"fork: seq {rec['seq']} differs from the stored event (hash "
        f"{stored_hash[:16]}…); segment refused, kept as evidence, alert raised"
    )


def receipt(server_key: UnitSigner, unit_id: str, r: IngestResult) -> dict[str, Any]:
    body: dict[str, object] = {
        "unit_id": unit_id,
        "head_seq": r.head_seq,
        "head_hash": r.head_hash,
        "stored": r.stored,
        "duplicates": r.duplicates,
        "ingest_us": r.ingest_us,
        "received_at": now().strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "server_key_id": server_key.key_id,
    }
    return sign_receipt(server_key, body)


def rate_clock() -> float:
    return now().timestamp()
