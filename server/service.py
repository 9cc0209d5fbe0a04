"""Units (enrolment, rotation, revocation), request authentication, and verified ingest.

Ingest verifies with the one verifier (:class:`ebr_core.verify.ChainVerifier`) continuing from
the unit's stored head, stores idempotently keyed by ``(unit, seq, hash)``, and refuses a fork
(same seq, different hash) with 409 while keeping the offered segment as evidence and raising a
security alert.  Nothing of a refused segment is stored.

Lines at or below the stored head that differ from what is stored are a fork only if they are
the unit's signed events (they verify as a chain from the stored event before them, under a
checkpoint signed by the unit's key); anything else is refused with 422 and raises no fork alert.

**A batch belongs to the unit whose ledger started it** (its ``batch.started``, and so to that
unit's site): events for it from any other unit are refused (403, audited, alerted), and so is
a ``batch.started`` for a batch id another unit already holds, so two batches never merge; no
unit may write the event kinds only the server writes (:data:`SERVER_ONLY_KINDS`).  Custody at
another site does not need another unit to write into the batch: the edge records receipt and
infusion only for batches started on the same unit (``edge.engine.Engine.state``), and a
receiving site away from that unit records them through the server's custody API.

Clocks are checked, not trusted: events dated more than ``clock_skew_s`` ahead of the server's
clock, before the unit's enrolment, or earlier than the event before them raise one alert per
segment and kind (``clock.ahead``, ``clock.before_enrolment``, ``clock.backwards``), with the
event's batch; the events are stored (they are what the unit signed).
"""

from __future__ import annotations

import base64
import gzip
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import gt, itemgetter
from typing import Any

import orjson
import zstandard
from sqlalchemy import delete, func, select, text
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
from server.db import Alert, CheckpointRow, EventRow, Fork, Nonce, Unit, UnitKey
from server.errors import (
    ClockSkew,
    Conflict,
    Forbidden,
    ForeignBatch,
    HistoryFork,
    NotFound,
    Replayed,
    TooLarge,
    TooManyRequests,
    Unauthorized,
    UnitRevoked,
    Unprocessable,
)
from server.settings import Settings
from server.verifying import Part, Start, Verifier, with_lines

_SERIAL = Verifier(0, 0)


def now() -> datetime:
    return datetime.now(UTC)


# Event kinds only the server writes: no unit's ledger holds them (the edge never closes a
# deviation; QA closes it on the server, server.review).  A segment carrying one is refused.
SERVER_ONLY_KINDS = frozenset({"deviation.closed"})


def alert(
    db: Session,
    kind: str,
    unit_id: str | None,
    message: str,
    *,
    batch_id: str | None = None,
    site_id: str | None = None,
    at: datetime | None = None,
) -> None:
    db.add(
        Alert(
            kind=kind,
            unit_id=unit_id,
            message=message,
            created_at=at or now(),
            batch_id=batch_id,
            site_id=site_id,
        )
    )


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


_SITE_INSERT = text(
    "INSERT INTO sites (site_id, name) VALUES (:s, :s) ON CONFLICT (site_id) DO NOTHING"
)


def enrol(
    db: Session,
    site_id: str,
    unit_id: str,
    public_key_json: bytes,
    *,
    actor: str = "system",
    at: datetime | None = None,
) -> Unit:
    """Enrol a unit (and its site, if new).  Idempotent for the site: two units of a new site
    enrolled at once both succeed (insert-or-ignore; PostgreSQL makes the second insert wait for
    the first and then do nothing, SQLite serialises writers).  The same unit or key enrolled
    twice at once: the second gets 409, never 500."""
    key = _read_key(public_key_json)
    if key.unit_id not in (None, unit_id):
        raise Unprocessable(f"the key is bound to unit {key.unit_id!r}, not {unit_id!r}")
    if db.get(Unit, unit_id) is not None:
        raise Conflict(f"unit {unit_id} is already enrolled (rotate its key instead)")
    if db.get(UnitKey, key.key_id) is not None:
        raise Conflict(f"key {key.key_id} is already enrolled for another unit")
    try:
        return _enrol(db, site_id, unit_id, key, actor, at or now())
    except IntegrityError as e:
        db.rollback()
        raise Conflict(
            f"unit {unit_id} or key {key.key_id} was enrolled at the same moment by another request"
        ) from e


def _enrol(
    db: Session, site_id: str, unit_id: str, key: PublicKey, actor: str, at: datetime
) -> Unit:
    db.execute(_SITE_INSERT, {"s": site_id})
    unit = Unit(
        unit_id=unit_id,
        site_id=site_id,
        status="active",
        head_seq=0,
        head_hash=GENESIS_HASH,
        checkpoint_seq=0,
        enrolled_at=at,
    )
    db.add(unit)
    db.flush()
    _add_key(db, unit_id, key)
    db.flush()
    audit.append(
        db,
        at=at,
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
    """Token buckets by key (in memory: per API worker): per client address before a request's
    signature is checked, per unit after (so no one without the unit's key can spend the unit's
    budget).  At most ``max_keys`` buckets: full ones are forgotten first."""

    def __init__(
        self, rate: float, burst: int, what: str = "unit", max_keys: int = 100_000
    ) -> None:
        self.rate, self.burst, self.what, self.max_keys = rate, burst, what, max_keys
        self._state: dict[str, tuple[float, float]] = {}

    def check(self, key: str, t: float) -> None:
        """Refuse (429) if ``key``'s bucket is empty, without spending from it."""
        tokens, last = self._state.get(key, (float(self.burst), t))
        if min(self.burst, tokens + (t - last) * self.rate) < 1:
            raise TooManyRequests(
                f"{self.what} {key} sends more than {self.rate:g} refused requests/s; retry later"
            )

    def spend(self, key: str, t: float) -> None:
        """Spend one token from ``key``'s bucket, never below empty (a refused request)."""
        tokens, last = self._state.get(key, (float(self.burst), t))
        tokens = min(self.burst, tokens + (t - last) * self.rate)
        if key not in self._state and len(self._state) >= self.max_keys:
            self._prune(t)
        self._state[key] = (max(0.0, tokens - 1), t)

    def take(self, key: str, t: float) -> None:
        tokens, last = self._state.get(key, (float(self.burst), t))
        tokens = min(self.burst, tokens + (t - last) * self.rate)
        if tokens < 1:
            raise TooManyRequests(
                f"{self.what} {key} sends more than {self.rate:g} requests/s; retry later"
            )
        if key not in self._state and len(self._state) >= self.max_keys:
            self._prune(t)
        self._state[key] = (tokens - 1, t)

    def _prune(self, t: float) -> None:
        """Forget buckets that have refilled (forgetting them changes nothing)."""
        full = [
            k for k, (n, last) in self._state.items() if n + (t - last) * self.rate >= self.burst
        ]
        for k in full:
            del self._state[k]
        if len(self._state) >= self.max_keys:  # a flood of distinct keys: start again
            self._state.clear()


def authenticate(
    db: Session,
    settings: Settings,
    h: SignedHeaders,
    method: str,
    path: str,
    body: bytes,
    path_unit: str,
    at: datetime | None = None,
    revoked_alerts: audit.RefusalLimiter | None = None,
) -> Unit:
    """The unit that signed this request, or the refusal (401 bad or unknown signature, 403
    revoked or signed for another unit's path, 409 replayed nonce); ``at`` is the server's
    clock; ``revoked_alerts`` limits the alerts for requests of a revoked unit (one per unit a
    minute without it)."""
    if h.unit_id != path_unit:
        raise Forbidden(f"request signed by unit {h.unit_id} for the path of unit {path_unit}")
    unit = db.get(Unit, h.unit_id)
    key_row = db.get(UnitKey, h.key_id)
    if unit is None or key_row is None or key_row.unit_id != h.unit_id:
        raise Unauthorized(f"unit {h.unit_id} with key {h.key_id} is not enrolled")
    revoked = unit.status == "revoked" or key_row.status == "revoked"
    if not revoked and key_row.status != "active":
        raise Unauthorized(f"key {h.key_id} was rotated out; sign with the unit's current key")
    t = int((at or now()).timestamp())
    if abs(t - h.timestamp) > settings.clock_window_s:
        # the same check verify_request makes first, typed so that a unit can tell it apart
        raise ClockSkew(
            f"request time {h.timestamp} is {abs(t - h.timestamp)} s from the server's clock "
            f"(at most {settings.clock_window_s} s allowed)"
        )
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
    if revoked:
        # Alerted only once the revoked key's own signature verifies (anyone can name a revoked
        # key), and at most once a minute per unit, counting: a flood raises no alert flood.
        n = (revoked_alerts or audit.RefusalLimiter()).take(h.unit_id, float(t))
        if n:
            alert(db, "unit.revoked_request", h.unit_id,
                  f"{n} request(s) from revoked unit {h.unit_id} (key {h.key_id})")  # fmt: skip
            db.commit()
        raise UnitRevoked(f"unit {h.unit_id} (key {h.key_id}) is revoked")
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
    db: Session,
    settings: Settings,
    unit: Unit,
    data: bytes,
    verifier: Verifier | None = None,
    *,
    at: datetime | None = None,
) -> IngestResult:
    """Verify and store one segment of ``unit``'s ledger (``at``: the server's clock)."""
    at = at or now()
    if not data.endswith(b"\n"):
        raise Unprocessable("segment must be JSON Lines, each line ending in a newline")
    lines = data.split(b"\n")[:-1]
    if len(lines) > 2 * settings.max_segment_events + 10:
        raise TooLarge(f"segment holds more than {settings.max_segment_events} events")
    new_from, duplicates = _old_lines(db, unit, lines, data, verifier)
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
        _check_kinds(db, unit, events, at)
        clock_alerts = _clock_alerts(db, settings, unit, events, at)
        held = projections.existing(db, deltas)
        projections.upsert_queue_rows(db, unit.unit_id, unit.site_id, deltas)
        _check_owners(db, unit, deltas, held, at)
        projections.advance_all(db, deltas)
        for kind, batch_id, message in clock_alerts:
            alert(db, kind, unit.unit_id, message, batch_id=batch_id, site_id=unit.site_id, at=at)
        audit.append(
            db,
            at=at,
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


# -- lines at or below the stored head --------------------------------------------------------


def _old_lines(
    db: Session, unit: Unit, lines: list[bytes], data: bytes, verifier: Verifier | None
) -> tuple[int, int]:
    """(index of the first new line, duplicate events) for the lines at or below the stored
    head.  The same bytes as stored are a retry (idempotent).  Anything else is either junk
    (refused 422, no fork recorded) or the unit's own signed, divergent history: a fork."""
    new_from = duplicates = 0
    differs: tuple[dict[str, Any], EventRow | None] | None = None
    junk = False
    for i, line in enumerate(lines):
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise Unprocessable(f"line {i + 1}: not valid JSON ({e})") from e
        if not isinstance(rec, dict) or type(rec.get("seq")) is not int:
            raise Unprocessable(f"line {i + 1}: not an event or checkpoint record")
        t = rec.get("type")
        if rec["seq"] > unit.head_seq or (t == "checkpoint" and rec["seq"] > unit.checkpoint_seq):
            break
        new_from = i + 1
        if t == "event":
            stored = db.get(EventRow, (unit.unit_id, rec["seq"]))
            if stored is None or bytes(stored.line) != line:
                differs = differs or (rec, stored)
            duplicates += 1
        elif t == "checkpoint":
            cp = db.get(CheckpointRow, (unit.unit_id, rec["seq"]))
            junk = junk or cp is None or bytes(cp.line) != line
        else:
            junk = True
    if differs is not None or junk:
        _check_signed(db, unit, lines, verifier)
        if differs is not None:  # the unit's own signed history, not what the server holds
            _fork(db, unit, differs[0], differs[1], data)
        # Only a checkpoint re-signed over the same events: nothing differs that matters.
    return new_from, duplicates


def _check_signed(db: Session, unit: Unit, lines: list[bytes], verifier: Verifier | None) -> None:
    """Refuse (422) a segment whose lines are not this unit's signed chain, verified from the
    stored event before its first line: only a segment that passes can be evidence of a fork."""
    first = orjson.loads(lines[0])
    first_seq = int(first["seq"])
    start_seq = first_seq - 1 if first.get("type") == "event" else first_seq
    if start_seq <= 0:
        start_seq, start_hash = 0, GENESIS_HASH
    else:
        before = db.get(EventRow, (unit.unit_id, start_seq))
        if before is None:
            raise Unprocessable(f"line 1: seq {first_seq} does not follow a stored event")
        start_hash = before.hash
    cp = db.scalar(
        select(func.max(CheckpointRow.seq)).where(
            CheckpointRow.unit_id == unit.unit_id, CheckpointRow.seq < first_seq
        )
    )
    part = (verifier or _SERIAL).verify(
        key_list_for(db, unit.unit_id), unit.unit_id, Start(start_seq, start_hash, cp or 0), lines
    )
    expected = (
        f"lines at or below the stored head (seq {unit.head_seq}) must be this unit's signed "
        "events; segment refused, nothing stored, no fork recorded"
    )
    if part.error is not None:
        reason, index = part.error
        raise Unprocessable(f"line {index + 1}: {reason} ({expected})")
    if part.seal_at is not None:
        raise Unprocessable(f"line {part.seal_at + 1}: a segment carries no seal ({expected})")
    if part.end is None or part.end.checkpoint_seq != part.end.seq:
        raise Unprocessable(
            f"line {len(lines)}: the segment's events are not covered by a checkpoint ({expected})"
        )


# -- batch ownership and server-only kinds ----------------------------------------------------


def _check_kinds(db: Session, unit: Unit, events: list[tuple[Any, ...]], at: datetime) -> None:
    """Refuse a segment carrying an event kind only the server writes."""
    if SERVER_ONLY_KINDS.isdisjoint(map(itemgetter(4), events)):
        return
    row = next(r for r in events if r[4] in SERVER_ONLY_KINDS)
    batch = row[3]
    owner = projections.existing(db, [batch]).get(batch, unit.unit_id) if batch else None
    where = f"batch {batch} (held by unit {owner}): " if batch else ""
    _refuse(
        db,
        unit,
        at,
        batch_id=batch,
        seq=row[1],
        why=(
            f"{where}seq {row[1]} is a {row[4]} event, which only the server records "
            "(deviations are closed by QA on the server)"
        ),
    )


def _check_owners(
    db: Session,
    unit: Unit,
    deltas: dict[str, projections.Delta],
    held: dict[str, str],
    at: datetime,
) -> None:
    """Each batch the segment touches must be this unit's: held by it before (``held``: the
    owners before the upsert), or started in this segment by its ``batch.started`` (the batch's
    first event here).  Called after the queue rows are upserted (the upsert never merges another
    unit's batch): reading the owners back then also settles two units starting one batch id at
    once (the second one's upsert waits for the first and finds the row taken)."""
    owners = projections.existing(db, deltas)
    for batch_id, d in sorted(deltas.items(), key=lambda kv: kv[1].first_seq):
        owner = owners.get(batch_id)
        if owner is not None and owner != unit.unit_id:
            o = db.get(Unit, owner)
            site = o.site_id if o is not None else "?"
            _refuse(
                db,
                unit,
                at,
                batch_id=batch_id,
                seq=d.first_seq,
                why=(
                    f"batch {batch_id} belongs to unit {owner} at site {site}, which started it; "
                    f"seq {d.first_seq} ({d.first_kind}) would write into it"
                    + (" (a batch id is used once: start this batch under a new id)"
                       if d.first_kind == "batch.started" else "")
                ),
                owner_site=site,
            )  # fmt: skip
        if batch_id not in held and d.first_kind != "batch.started":
            _refuse(
                db,
                unit,
                at,
                batch_id=batch_id,
                seq=d.first_seq,
                why=(
                    f"batch {batch_id} was never started: its first event, seq {d.first_seq}, "
                    f"is {d.first_kind}, not batch.started (a batch belongs to the unit whose "
                    "ledger started it)"
                ),
            )


def _refuse(
    db: Session,
    unit: Unit,
    at: datetime,
    *,
    batch_id: str | None,
    seq: int,
    why: str,
    owner_site: str | None = None,
) -> None:
    """Roll the segment back, audit and alert the refusal, and raise 403."""
    db.rollback()
    message = f"segment from unit {unit.unit_id} (site {unit.site_id}) refused: {why}"
    audit.append(
        db,
        at=at,
        actor=unit.unit_id,
        action="segment.refused",
        object_type="batch" if batch_id else "unit",
        object_id=batch_id or unit.unit_id,
        new={"unit_id": unit.unit_id, "site_id": unit.site_id, "seq": seq, "batch_id": batch_id},
        reason=why,
    )
    sites = {unit.site_id} | ({owner_site} if owner_site and owner_site != "?" else set())
    for site in sorted(sites):
        alert(
            db, "security.foreign_batch", unit.unit_id, message, batch_id=batch_id, site_id=site,
            at=at,
        )  # fmt: skip
    db.commit()
    raise ForeignBatch(f"{why}; segment refused, nothing stored")


# -- clocks -----------------------------------------------------------------------------------


def _iso(t: datetime) -> str:
    if t.tzinfo is None:  # SQLite hands back naive UTC
        t = t.replace(tzinfo=UTC)
    return t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _clock_alerts(
    db: Session, settings: Settings, unit: Unit, events: list[tuple[Any, ...]], at: datetime
) -> list[tuple[str, str | None, str]]:
    """(kind, batch_id, message) of the clock alerts this segment raises: at most one per kind.
    Timestamps of one format compare as strings, so the checks are C-speed over the segment."""
    out: list[tuple[str, str | None, str]] = []
    times = list(map(itemgetter(5), events))
    ahead = _iso(at + timedelta(seconds=settings.clock_skew_s))
    if max(times) > ahead:
        r = next(r for r in events if r[5] > ahead)
        out.append(("clock.ahead", r[3], (
            f"unit {unit.unit_id}: seq {r[1]} is dated {r[5]}, more than "
            f"{settings.clock_skew_s} s ahead of the server's clock ({_iso(at)}); "
            f"{sum(1 for t in times if t > ahead)} event(s) of this segment"
        )))  # fmt: skip
    enrolled = _iso(unit.enrolled_at)
    if min(times) < enrolled:
        r = next(r for r in events if r[5] < enrolled)
        out.append(("clock.before_enrolment", r[3], (
            f"unit {unit.unit_id}: seq {r[1]} is dated {r[5]}, before the unit was enrolled "
            f"({enrolled}); {sum(1 for t in times if t < enrolled)} event(s) of this segment"
        )))  # fmt: skip
    prev = db.get(EventRow, (unit.unit_id, unit.head_seq)) if unit.head_seq else None
    chain = ([prev.recorded_at] if prev is not None else []) + times
    if any(map(gt, chain, chain[1:])):
        k = next(i for i in range(1, len(chain)) if chain[i - 1] > chain[i])
        r = events[k - (len(chain) - len(times))]
        out.append(("clock.backwards", r[3], (
            f"unit {unit.unit_id}: seq {r[1]} is dated {r[5]}, earlier than seq {r[1] - 1} "
            f"({chain[k - 1]}): the unit's clock went backwards"
        )))  # fmt: skip
    return out


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
    raise HistoryFork(
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
