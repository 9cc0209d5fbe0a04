"""Verified ingest of a unit's segment.

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

Over 400 lines because ingest is one transaction's story, read top to bottom: decode, the lines
already stored, verification, ownership, clocks, the bulk insert and the fork; its parts share
the unit's row lock and the segment's lines.
"""

from __future__ import annotations

import gzip
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from operator import gt, itemgetter
from typing import Any

import orjson
import zstandard
from sqlalchemy import bindparam, func, select
from sqlalchemy.orm import Session

from ebr_core.errors import MalformedRecordError, VerificationError
from ebr_core.keys import UnitSigner
from ebr_core.record import GENESIS_HASH
from ebr_core.requestsig import (
    sign_receipt,
)
from server import projections
from server.audit import trail as audit
from server.db import CheckpointRow, EventRow, Fork, Unit
from server.errors import (
    ForeignBatch,
    HistoryFork,
    InvalidSegment,
    SignatureInvalid,
    TooLarge,
    Unprocessable,
)
from server.log import records
from server.log import store as log
from server.settings import Settings
from server.units.service import SERVER_ONLY_KINDS, alert, key_list_for
from server.verifying import Part, Start, Verifier, with_lines

_SERIAL = Verifier(0, 0)


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
            raise InvalidSegment(f"body is not valid zstd: {e}") from e
        if frame.content_size == zstandard.CONTENTSIZE_UNKNOWN:
            raise InvalidSegment("zstd frame does not declare its content size")
        if frame.content_size > limit:
            raise TooLarge(f"segment exceeds {limit} bytes uncompressed")
        z = zstandard.ZstdDecompressor(max_window_size=_ZSTD_MAX_WINDOW).decompressobj()
        try:
            data = z.decompress(body)
        except zstandard.ZstdError as e:
            raise InvalidSegment(f"body is not valid zstd: {e}") from e
        if not z.eof:
            raise InvalidSegment("body is not valid zstd: the frame ends early")
        if z.unused_data:
            raise InvalidSegment(f"body has {len(z.unused_data)} bytes after its zstd frame")
    elif encoding == "gzip":
        d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        try:
            data = d.decompress(body, limit + 1)
        except zlib.error as e:
            raise InvalidSegment(f"body is not valid gzip: {e}") from e
        if len(data) > limit or d.unconsumed_tail:
            raise TooLarge(f"segment exceeds {limit} bytes uncompressed")
        if not d.eof:
            raise InvalidSegment("body is not valid gzip: the stream ends early")
        if d.unused_data:
            raise InvalidSegment(f"body has {len(d.unused_data)} bytes after its gzip member")
    else:
        raise InvalidSegment(f"Content-Encoding {encoding!r} is not zstd, gzip or identity")
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
    # the segment's leaf: its index (SQLite), or queued for the log's sequencer (PostgreSQL,
    # server.log.store.Pending); None when nothing new was stored
    log_index: int | log.Pending | None = None
    log: dict[str, Any] | None = None  # the receipt's ``log`` member (server.log.receipts)


def ingest(
    db: Session,
    settings: Settings,
    unit: Unit,
    data: bytes,
    verifier: Verifier | None = None,
    *,
    at: datetime,
) -> IngestResult:
    """Verify and store one segment of ``unit``'s ledger (``at``: the server's clock)."""
    if not data.endswith(b"\n"):
        raise InvalidSegment("segment must be JSON Lines, each line ending in a newline")
    lines = data.split(b"\n")[:-1]
    if len(lines) > 2 * settings.max_segment_events + 10:
        raise TooLarge(f"segment holds more than {settings.max_segment_events} events")
    new_from, duplicates = _old_lines(db, unit, lines, data, verifier, at)
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
    try:
        verified = part.finish()
    except VerificationError as e:
        db.rollback()
        line = new_from + (e.index or 0) + 1
        raise refusal(e, f"segment refused, nothing stored: line {line}: {e.reason}") from e
    events, deltas = part.events, part.deltas
    if events:
        _check_kinds(db, unit, events, at)
        clock_alerts = _clock_alerts(db, settings, unit, events, at)
        held = projections.existing(db, deltas)
        heads = projections.upsert_queue_rows(db, unit.unit_id, unit.site_id, deltas)
        _check_owners(db, unit, deltas, held, heads, at)
        projections.advance_all(db, deltas, heads)
        for kind, batch_id, message in clock_alerts:
            alert(db, kind, unit.unit_id, message, batch_id=batch_id, site_id=unit.site_id, at=at)
        for r in events:
            if r[4] == "security.alert":  # the unit caught this server's log misbehaving
                alert(db, "security.unit_log", unit.unit_id, _unit_log_alert(db, unit, r[1]),
                      site_id=unit.site_id, at=at)  # fmt: skip
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
        # The segment's leaf, in this transaction: logged with the events or not at all (on
        # PostgreSQL queued, sequenced right after the commit: no log lock is held here).
        log_index = log.append(
            db,
            records.segment_entry(
                unit.unit_id, unit.head_seq + 1, verified.seq, verified.head_hash
            ),
        )
        unit.head_seq = verified.seq
        unit.head_hash = verified.head_hash
        unit.checkpoint_seq = verified.seq
        return IngestResult(
            len(events), duplicates, unit.head_seq, unit.head_hash, log_index=log_index
        )
    return IngestResult(len(events), duplicates, unit.head_seq, unit.head_hash)


def refusal(e: VerificationError, message: str) -> Unprocessable:
    """The problem a verification failure is answered with: a malformed line (not a record of
    the chain's form) and a record that does not verify (signature, hash, link, sequence) are
    different problem types, so a unit can tell a bug in its encoder from tampering."""
    if isinstance(e, MalformedRecordError):
        return InvalidSegment(message)
    return SignatureInvalid(message)


# -- lines at or below the stored head --------------------------------------------------------


def _old_lines(
    db: Session,
    unit: Unit,
    lines: list[bytes],
    data: bytes,
    verifier: Verifier | None,
    at: datetime,
) -> tuple[int, int]:
    """(index of the first new line, duplicate events) for the lines at or below the stored
    head.  The same bytes as stored are a retry (idempotent).  Anything else is either junk
    (refused 422, no fork recorded) or the unit's own signed, divergent history: a fork."""
    new_from = 0
    differs: tuple[dict[str, Any], EventRow | None] | None = None
    junk = False
    held: list[tuple[dict[str, Any], bytes]] = []  # the events at or below the head
    for i, line in enumerate(lines):
        try:
            rec = orjson.loads(line)
        except orjson.JSONDecodeError as e:
            raise InvalidSegment(f"line {i + 1}: not valid JSON ({e})") from e
        if not isinstance(rec, dict) or type(rec.get("seq")) is not int:
            raise InvalidSegment(f"line {i + 1}: not an event or checkpoint record")
        t = rec.get("type")
        if rec["seq"] > unit.head_seq or (t == "checkpoint" and rec["seq"] > unit.checkpoint_seq):
            break
        new_from = i + 1
        if t == "event":
            held.append((rec, line))
        elif t == "checkpoint":
            cp = db.get(CheckpointRow, (unit.unit_id, rec["seq"]))
            junk = junk or cp is None or bytes(cp.line) != line
        else:
            junk = True
    if held:  # one ranged read of what is stored (a retried segment: not a query per line)
        seqs = [int(rec["seq"]) for rec, _ in held]
        stored_lines = {
            int(q): bytes(b)
            for q, b in db.execute(
                select(EventRow.seq, EventRow.line).where(
                    EventRow.unit_id == unit.unit_id,
                    EventRow.seq >= min(seqs),
                    EventRow.seq <= max(seqs),
                )
            )
        }
        for rec, line in held:
            if stored_lines.get(int(rec["seq"])) != line:
                differs = (rec, db.get(EventRow, (unit.unit_id, rec["seq"])))
                break
    if differs is not None or junk:
        _check_signed(db, unit, lines, verifier)
        if differs is not None:  # the unit's own signed history, not what the server holds
            _fork(db, unit, differs[0], differs[1], data, at)
        # Only a checkpoint re-signed over the same events: nothing differs that matters.
    return new_from, len(held)


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
            raise InvalidSegment(f"line 1: seq {first_seq} does not follow a stored event")
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
    try:
        part.finish()
    except VerificationError as e:
        raise refusal(e, f"line {(e.index or 0) + 1}: {e.reason} ({expected})") from e
    if part.end is None:
        raise InvalidSegment(
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
    written: dict[str, projections.Head],
    at: datetime,
) -> None:
    """Each batch the segment touches must be this unit's: held by it before (``held``: the
    owners before the upsert), or started in this segment by its ``batch.started`` (the batch's
    first event here).  Called after the queue rows are upserted (the upsert never merges another
    unit's batch; ``written``: the rows it wrote, so the unit's): that also settles two units
    starting one batch id at once (the second one's upsert waits for the first and finds the
    row taken).  The owner of a batch the upsert left alone is read back."""
    owners = dict.fromkeys(written, unit.unit_id)
    if len(owners) < len(deltas):
        owners |= projections.existing(db, [b for b in deltas if b not in written])
    for batch_id, d in sorted(deltas.items(), key=lambda kv: kv[1].first_seq):
        owner = owners.get(batch_id)
        site = None
        if owner is not None and owner != unit.unit_id:
            o = db.get(Unit, owner)
            site = o.site_id if o is not None else "?"
            why = (
                f"batch {batch_id} belongs to unit {owner} at site {site}, which started it; "
                f"seq {d.first_seq} ({d.first_kind}) would write into it"
                + (" (a batch id is used once: start this batch under a new id)"
                   if d.first_kind == "batch.started" else "")
            )  # fmt: skip
        elif batch_id not in held and d.first_kind != "batch.started":
            why = (
                f"batch {batch_id} was never started: its first event, seq {d.first_seq}, "
                f"is {d.first_kind}, not batch.started (a batch belongs to the unit whose "
                "ledger started it)"
            )
        else:
            continue
        _refuse(db, unit, at, batch_id=batch_id, seq=d.first_seq, why=why, owner_site=site)


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


def _unit_log_alert(db: Session, unit: Unit, seq: int) -> str:
    """The server's own alert for a unit's ``security.alert``: QA and the administrators see at
    once that a unit found the transparency log rewound, forked or unprovable (edge/logwatch.py);
    the unit's event, with its evidence, stays in the record."""
    stored = db.get(EventRow, (unit.unit_id, seq))  # inserted above, in this transaction
    try:
        p = orjson.loads(stored.line).get("payload", {}) if stored is not None else {}
    except (orjson.JSONDecodeError, AttributeError):
        p = {}
    what = f"{p.get('failure', '?')}: {p.get('message', '')}" if isinstance(p, dict) else "?"
    return (
        f"unit {unit.unit_id} reports that this server's transparency log failed its check "
        f"(seq {seq}): {str(what)[:300]}; its evidence is in the unit's event"
    )


_RECORDED_AT = select(EventRow.recorded_at).where(
    EventRow.unit_id == bindparam("u"), EventRow.seq == bindparam("s")
)


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
    prev = (
        db.execute(_RECORDED_AT, {"u": unit.unit_id, "s": unit.head_seq}).scalar()
        if unit.head_seq
        else None
    )
    chain = ([prev] if prev is not None else []) + times
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
    db: Session,
    unit: Unit,
    rec: dict[str, Any],
    stored: EventRow | None,
    data: bytes,
    at: datetime,
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
            received_at=at,
            evidence=gzip.compress(data),
        )
    )
    audit.append(
        db,
        at=at,
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
        at=at,
    )
    db.commit()
    raise HistoryFork(
        f"fork: seq {rec['seq']} differs from the stored event (hash "
        f"{stored_hash[:16]}…); segment refused, kept as evidence, alert raised"
    )


def receipt(
    server_key: UnitSigner,
    unit_id: str,
    r: IngestResult,
    *,
    at: datetime,
) -> dict[str, Any]:
    """The signed receipt.  ``r.log`` (:func:`server.log.api.receipt_log`): the segment's leaf
    index, the tree size, the inclusion proof and the signed checkpoint, covered by the
    receipt's signature; for a segment that stored nothing new, ``index`` is None and
    ``inclusion`` empty (the latest checkpoint still comes, for the unit's consistency check)."""
    body: dict[str, object] = {
        "unit_id": unit_id,
        "head_seq": r.head_seq,
        "head_hash": r.head_hash,
        "stored": r.stored,
        "duplicates": r.duplicates,
        "ingest_us": r.ingest_us,
        "received_at": at.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "server_key_id": server_key.key_id,
    }
    if r.log is not None:
        body["log"] = r.log
    return sign_receipt(server_key, body)
