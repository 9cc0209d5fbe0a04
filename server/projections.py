"""Per-batch projections kept current by ingest, so no request reads all of a batch's events.

Two stored projections, both advanced inside the ingest transaction that stores a segment:

* **The queue row** (``batches``): counts, exceptions, status, review state, and the batch's
  *event head*: the number of its events, and the seq and hash of its last one.  Because every
  event of a unit is hash-linked to the one before, that last hash commits to every earlier
  event, readings included; the count pins how many of them are the batch's.
* **The batch projection** (``batch_projections``): the step state (the shared fold of
  :mod:`ebr_core.batch` over the batch's step events), its timeline and failed signatures, the
  telemetry summary (:mod:`ebr_core.telemetry`) and the telemetry limits the batch's
  ``batch.started`` records (:mod:`ebr_core.limits`; :func:`channel_limits` says what applies
  to a chart), stored as JSON with a SHA-256 digest and the seq of the batch's last event it
  reflects.  A projection stored before it kept the limits takes them from the batch's
  ``batch.started`` when read (one indexed row), never from a rebuild.

Ingest tallies each verified run of like events into a :class:`Delta` per batch (in the worker
process too, for the part it verifies): readings go into a partial telemetry summary, which is
merged into the stored one; step events are folded from the rows just stored, read through the
``events_batch_steps`` partial index (a segment of readings reads none).

Reading a projection checks it: the digest must match its body and it must reflect the batch's
current event head; otherwise it is rebuilt from the events (step events by their index, the
readings streamed in windows and summarised), never trusted.

Also here: :func:`window`, one channel's readings between two times at bounded cost (the
console's zoom).  Over 400 lines: the stored projections and the one read that goes past them
to the readings share their queries and their event windows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import select, text
from sqlalchemy.orm import Session

from ebr_core.batch import BatchState, apply, state_from_json, state_to_json
from ebr_core.canonical import canonical
from ebr_core.errors import EbrError
from ebr_core.limits import (
    TELEMETRY_KEY,
    ChannelLimits,
    LimitsError,
    limits_source,
    parse_telemetry_limits,
)
from ebr_core.limits import channel_limits as _applying
from ebr_core.record import Event, decode_record
from ebr_core.telemetry import BASE_WIDTH_S, READING, Telemetry
from ebr_core.vocab import TRAVEL_KINDS
from server.db import BatchSummary

# Event kinds (and value limits) that make a batch an exception for review.
EXCEPTION_KINDS = frozenset(
    {
        "scan.rejected",
        "deviation.raised",
        "alarm.raised",
        "signature.failed",
        "correction.recorded",
        "custody.refused",
    }
)
_WINDOW = 5000  # events read per query when a projection is rebuilt


# -- the deltas of one segment ----------------------------------------------------------------


@dataclass
class Delta:
    """What one segment adds to one batch (picklable: the verify worker makes them too)."""

    events: int = 0
    exceptions: int = 0
    coi: str | None = None
    completed_at: str | None = None
    last_seq: int = 0
    last_hash: str = ""
    step_events: int = 0
    readings: int = 0
    # Events other than travel (ebr_core.vocab.TRAVEL_KINDS): a segment of hand-offs alone
    # after a final decision leaves the batch decided.
    changes: int = 0
    telemetry: Telemetry = field(default_factory=Telemetry)
    # The batch's first event in this segment: what ownership is checked against (a batch no
    # unit holds yet must begin with batch.started).
    first_seq: int = 0
    first_kind: str = ""

    def merge(self, later: Delta) -> None:
        """Add the deltas of the lines that follow (the worker's part) as if tallied in one
        pass."""
        self.events += later.events
        self.exceptions += later.exceptions
        self.step_events += later.step_events
        self.readings += later.readings
        self.changes += later.changes
        if later.coi is not None:
            self.coi = later.coi
        if later.completed_at is not None:
            self.completed_at = later.completed_at
        if later.last_seq:
            self.last_seq, self.last_hash = later.last_seq, later.last_hash
        self.telemetry.merge(later.telemetry)


def tally(out: dict[str, Delta], r: dict[str, Any]) -> None:
    """Count one verified event (parsed record) into the per-batch deltas of its segment."""
    tally_run(
        out, r["batch_id"], r["kind"], (r["payload"],), (r["recorded_at"],), r["seq"], (r["hash"],)
    )


def tally_run(
    out: dict[str, Delta],
    batch_id: str | None,
    kind: str,
    payloads: Sequence[dict[str, Any]],
    recorded_at: Sequence[str],
    first_seq: int,
    hashes: Sequence[str],
) -> None:
    """Count verified events of one batch and kind, in seq order, into the deltas."""
    if batch_id is None:
        return
    d = out.get(batch_id)
    if d is None:
        d = out[batch_id] = Delta(first_seq=first_seq, first_kind=kind)
    n = len(payloads)
    d.events += n
    d.last_seq, d.last_hash = first_seq + n - 1, hashes[-1]
    if kind not in TRAVEL_KINDS:
        d.changes += n
    if kind == READING:
        d.readings += n
        d.telemetry.add_run(payloads, recorded_at, first_seq)
        return
    d.step_events += n
    if kind in EXCEPTION_KINDS:
        d.exceptions += n
    elif kind == "value.recorded":
        d.exceptions += sum(1 for p in payloads if p.get("limit", "ok") != "ok")
    elif kind == "batch.started":
        d.coi = payloads[-1].get("coi")
    elif kind == "batch.completed":
        d.completed_at = recorded_at[-1]


def merge_deltas(a: dict[str, Delta], b: dict[str, Delta]) -> None:
    """Add the later part's deltas ``b`` into ``a`` as if tallied in one pass."""
    for batch, d in b.items():
        x = a.get(batch)
        if x is None:
            a[batch] = d
        else:
            x.merge(d)


# -- the queue row ----------------------------------------------------------------------------

_UPSERT = text(
    """
INSERT INTO batches (batch_id, unit_id, site_id, coi, status, events, exceptions, completed_at,
                     review_state, last_seq, head_hash, readings)
VALUES (:batch_id, :unit_id, :site_id, :coi, :status, :events, :exceptions, :completed_at,
        :review_state, :last_seq, :head_hash, :readings)
ON CONFLICT (batch_id) DO UPDATE SET
  coi = COALESCE(batches.coi, excluded.coi),
  status = CASE WHEN excluded.status = 'completed' THEN 'completed' ELSE batches.status END,
  events = batches.events + excluded.events,
  exceptions = batches.exceptions + excluded.exceptions,
  completed_at = COALESCE(batches.completed_at, excluded.completed_at),
  review_state = CASE
    WHEN batches.review_state = 'open' AND excluded.status = 'completed' THEN 'awaiting_review'
    WHEN batches.review_state = 'decided' AND :changes = 0 THEN 'decided'
    WHEN batches.review_state IN ('in_review', 'decided') THEN 'changed'
    ELSE batches.review_state END,
  last_seq = excluded.last_seq,
  head_hash = excluded.head_hash,
  readings = batches.readings + excluded.readings
WHERE batches.unit_id = excluded.unit_id
"""
)
# The same upsert, one batch at a time, answering the row it wrote (none for a batch another
# unit holds): the queue row's event head, which advance() would otherwise read back.
_UPSERT_RETURNING = text(_UPSERT.text.rstrip() + "\nRETURNING batch_id, unit_id, events, last_seq")

Head = tuple[str, int, int]
"""(unit_id, events, last_seq) of a batch's queue row."""


def upsert_summaries(db: Session, unit_id: str, site_id: str, deltas: dict[str, Delta]) -> None:
    """Advance the queue rows and the batch projections of the batches a segment touched."""
    upsert_queue_rows(db, unit_id, site_id, deltas)
    advance_all(db, deltas)


_EXISTING_PG = text("SELECT batch_id, unit_id FROM batches WHERE batch_id = ANY(:ids)")


def existing(db: Session, batch_ids: Iterable[str]) -> dict[str, str]:
    """batch id -> the unit that holds it, for those of ``batch_ids`` that have a queue row."""
    ids = sorted(batch_ids)
    if not ids:
        return {}
    if db.get_bind().dialect.name == "postgresql":  # one array parameter: no expanding IN
        rows = db.execute(_EXISTING_PG, {"ids": ids})
    else:
        rows = db.execute(select(BatchSummary.batch_id, BatchSummary.unit_id).where(
            BatchSummary.batch_id.in_(ids)
        ))  # fmt: skip
    return {str(b): str(u) for b, u in rows}


def upsert_queue_rows(
    db: Session, unit_id: str, site_id: str, deltas: dict[str, Delta]
) -> dict[str, Head]:
    """Insert or advance the queue rows of the batches a segment touched.  A row another unit
    holds is left alone (the ``WHERE`` of the upsert): batches of two units never merge; the
    caller refuses the segment.  Returns the head of each row written (the unit's own
    batches): a batch missing from it is held by another unit."""
    heads: dict[str, Head] = {}
    for b, d in deltas.items():
        row = db.execute(
            _UPSERT_RETURNING,
            {
                "batch_id": b,
                "unit_id": unit_id,
                "site_id": site_id,
                "coi": d.coi,
                "status": "completed" if d.completed_at else "in_progress",
                "events": d.events,
                "exceptions": d.exceptions,
                "completed_at": d.completed_at,
                "review_state": "awaiting_review" if d.completed_at else "open",
                "last_seq": d.last_seq,
                "head_hash": d.last_hash,
                "readings": d.readings,
                "changes": d.changes,
            },
        ).first()
        if row is not None:
            heads[str(row[0])] = (str(row[1]), int(row[2]), int(row[3]))
    return heads


def advance_all(
    db: Session, deltas: dict[str, Delta], heads: dict[str, Head] | None = None
) -> None:
    """Advance the batch projections of the batches a segment touched (after their queue rows;
    ``heads``: what :func:`upsert_queue_rows` returned, else each head is read back)."""
    for b, d in sorted(deltas.items()):
        advance(db, b, d, None if heads is None else heads.get(b))


# -- the batch projection ---------------------------------------------------------------------


@dataclass
class Projection:
    """A batch's projection: what the batch view, the review queue and an e-signature read."""

    upto_seq: int  # the seq of the batch's last event it reflects
    events: int  # how many of the batch's events it reflects
    state: BatchState | None
    timeline: list[list[Any]]  # [seq, recorded_at, kind, step] of each step event
    failed_signatures: list[dict[str, Any]]
    telemetry: Telemetry
    # What the batch's batch.started records of its telemetry limits: {"seq", "source",
    # "channels" (as recorded, checked when read)}; None when it records none (an older edge).
    limits: dict[str, Any] | None = None
    limits_known: bool = True  # False: stored before projections kept them (see _stored)
    # The digests of the state and the telemetry summary, computed from the JSON this projection
    # was read from (see from_json); dropped by anything that changes either.
    _read_digests: dict[str, str] | None = field(default=None, repr=False, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "upto_seq": self.upto_seq,
            "events": self.events,
            "state": None if self.state is None else state_to_json(self.state),
            "timeline": self.timeline,
            "failed_signatures": self.failed_signatures,
            "telemetry": self.telemetry.to_json(),
            "telemetry_limits": self.limits,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Projection:
        """The projection :meth:`to_json` wrote.  Its state and telemetry digests are taken from
        the JSON as read (``state_to_json`` and ``Telemetry.to_json`` give back what they
        read), so a batch view or an e-signature does not encode them again; the series' buckets
        are decoded only when a plot reads them."""
        limits = d.get("telemetry_limits")
        p = cls(
            int(d["upto_seq"]),
            int(d["events"]),
            None if d["state"] is None else state_from_json(d["state"]),
            list(d["timeline"]),
            list(d["failed_signatures"]),
            Telemetry.from_json(d["telemetry"]),
            dict(limits) if isinstance(limits, dict) else None,
            "telemetry_limits" in d,
        )
        p._read_digests = {
            "state": _state_digest(d["state"]),
            "telemetry": Telemetry.digest_of(d["telemetry"]),
        }
        return p

    def apply(self, ev: Event) -> None:
        """Fold one step event in (readings go through :meth:`merge_telemetry` instead)."""
        self._read_digests = None
        if ev.kind == "batch.started" and self.state is None:
            self.limits = _recorded_limits(ev)
        self.state = apply(self.state, ev)
        self.timeline.append([ev.seq, ev.recorded_at, ev.kind, ev.payload.get("step")])
        if ev.kind == "signature.failed":
            self.failed_signatures.append(
                {"seq": ev.seq, "recorded_at": ev.recorded_at, **ev.payload}
            )

    def merge_telemetry(self, later: Telemetry) -> None:
        self._read_digests = None
        self.telemetry.merge(later)

    def state_digest(self) -> str:
        if self._read_digests is not None:
            return self._read_digests["state"]
        return _state_digest(None if self.state is None else state_to_json(self.state))

    def telemetry_digest(self) -> str:
        if self._read_digests is not None:
            return self._read_digests["telemetry"]
        return self.telemetry.digest()


def _state_digest(state_json: Any) -> str:
    body = {"state": state_json}
    return hashlib.sha256(b"ctgtp/batch-state/v1\x00" + canonical(body)).hexdigest()


def _recorded_limits(ev: Event) -> dict[str, Any] | None:
    """The telemetry limits a ``batch.started`` records (kept as recorded; checked when read)."""
    if TELEMETRY_KEY not in ev.payload:
        return None
    return {
        "seq": ev.seq,
        "source": limits_source(ev.payload),
        "channels": ev.payload[TELEMETRY_KEY],
    }


NOT_RECORDED = (
    "no limits: this batch's record holds none (its batch.started records no telemetry "
    "limits: it was started by an edge that did not write them)"
)


def channel_limits(p: Projection, channel: str, unit: str) -> tuple[ChannelLimits | None, str]:
    """The limits a chart of ``channel`` (in ``unit``) draws, from the record, and a sentence
    saying what they are and where they come from, or why there are none."""
    rec = p.limits
    if rec is None:
        return None, NOT_RECORDED
    source, at = rec.get("source"), f"batch.started at seq {rec.get('seq')}"
    try:
        limits = parse_telemetry_limits(rec.get("channels"), str(source))
    except LimitsError as e:
        return None, f"no limits drawn: the telemetry limits recorded in {at} are unreadable: {e}"
    lim = _applying(limits, channel, unit)
    if lim is not None:
        return lim, f"Limits: {lim.describe()}, recorded in {at}"
    other = limits.get(channel) or limits.get(channel.split(".", 1)[0])
    if other is not None:
        return None, (
            f"no limits in {unit}: {source} sets {other.channel}'s in {other.unit} (recorded in "
            f"{at}; a reading is judged only in its limits' unit)"
        )
    return None, f"no limits: {source} sets none for {channel} (its limits recorded in {at})"


def limits_json(p: Projection, channel: str, unit: str) -> dict[str, Any]:
    """``limits`` and ``limits_note`` of a telemetry window (the zoom route)."""
    lim, note = channel_limits(p, channel, unit)
    if lim is None:
        return {"limits": None, "limits_note": note}
    body: dict[str, Any] = {"unit": lim.unit, "source": lim.source}
    if lim.limit.min is not None:
        body["min"] = str(lim.limit.min)
    if lim.limit.max is not None:
        body["max"] = str(lim.limit.max)
    return {"limits": body, "limits_note": note}


_STARTED = text("SELECT line FROM events WHERE unit_id = :u AND seq = :s")


def _fill_limits(db: Session, batch_id: str, p: Projection) -> None:
    """Give a projection stored before projections kept limits those its batch.started
    records (one row by primary key: its seq from the projection's timeline)."""
    row = db.execute(
        text("SELECT unit_id FROM batches WHERE batch_id = :b"), {"b": batch_id}
    ).first()
    seq = next((int(t[0]) for t in p.timeline if t[2] == "batch.started"), None)
    line = (
        None
        if row is None or seq is None
        else db.execute(_STARTED, {"u": row[0], "s": seq}).scalar_one_or_none()
    )
    p.limits = None if line is None else _recorded_limits(_event(bytes(line)))
    p.limits_known = True


def _digest(body: bytes) -> str:
    return hashlib.sha256(b"ctgtp/batch-projection/v1\x00" + body).hexdigest()


def _event(line: bytes) -> Event:
    return decode_record(line, Event)


def _events(
    db: Session, batch_id: str, unit_id: str, after_seq: int, *, steps: bool
) -> Iterator[Event]:
    """The batch's step events (through their partial index) or readings after ``after_seq``,
    in windows, so a rebuild never holds a batch's events in memory at once."""
    kind = "kind <> 'reading.recorded'" if steps else "kind = 'reading.recorded'"
    sql = text(
        f"SELECT seq, line FROM events WHERE batch_id = :b AND unit_id = :u AND {kind} "  # noqa: S608
        "AND seq > :after ORDER BY seq LIMIT :n"
    )
    after = after_seq
    while True:
        rows = db.execute(sql, {"b": batch_id, "u": unit_id, "after": after, "n": _WINDOW}).all()
        for _seq, line in rows:
            yield _event(bytes(line))
        if len(rows) < _WINDOW:
            return
        after = rows[-1][0]


def _head(db: Session, batch_id: str) -> tuple[str, int, int]:
    """(unit_id, events, last_seq) of the batch's queue row, as this transaction sees it."""
    row = db.execute(
        text("SELECT unit_id, events, last_seq FROM batches WHERE batch_id = :b"), {"b": batch_id}
    ).one()
    return str(row[0]), int(row[1]), int(row[2])


def rebuild(db: Session, batch_id: str) -> Projection:
    """The projection computed from the stored events (the check every stored one must pass);
    it counts the events it read, whatever the queue row says."""
    unit_id, _count, _last = _head(db, batch_id)
    p = Projection(0, 0, None, [], [], Telemetry())
    last = 0
    for ev in _events(db, batch_id, unit_id, 0, steps=True):
        p.apply(ev)
        p.events += 1
        last = max(last, ev.seq)
    for ev in _events(db, batch_id, unit_id, 0, steps=False):
        p.telemetry.add(ev.payload, ev.recorded_at, ev.seq)
        p.events += 1
        last = max(last, ev.seq)
    p.upto_seq = last
    return p


_UPSERT_PROJECTION = text(
    "INSERT INTO batch_projections (batch_id, upto_seq, body, digest) VALUES (:b, :u, :body, :d) "
    "ON CONFLICT (batch_id) DO UPDATE SET upto_seq = excluded.upto_seq, body = excluded.body, "
    "digest = excluded.digest"
)


def _store(db: Session, batch_id: str, p: Projection) -> None:
    body = orjson.dumps(p.to_json())
    db.execute(
        _UPSERT_PROJECTION,
        {"b": batch_id, "u": p.upto_seq, "body": body.decode(), "d": _digest(body)},
    )


def _stored(db: Session, batch_id: str) -> Projection | None:
    """The stored projection if its digest matches its body, else None."""
    row = db.execute(
        text("SELECT upto_seq, body, digest FROM batch_projections WHERE batch_id = :b"),
        {"b": batch_id},
    ).first()
    if row is None:
        return None
    body = str(row[1]).encode()
    if _digest(body) != row[2]:
        return None
    try:
        p = Projection.from_json(orjson.loads(body))
    except (EbrError, KeyError, TypeError, ValueError):
        return None
    if p.upto_seq != row[0]:
        return None
    if not p.limits_known:
        _fill_limits(db, batch_id, p)
    return p


def advance(db: Session, batch_id: str, d: Delta, head: Head | None = None) -> None:
    """Advance the batch's projection by one segment's delta (inside the ingest transaction,
    after the segment's rows and the queue row are written; ``head``: the queue row's, as the
    upsert left it, else read back)."""
    unit_id, events, _last = _head(db, batch_id) if head is None else head
    p = _stored(db, batch_id)
    if p is None or p.events + d.events != events:
        if d.events != events:
            # missing or unsound while the batch has earlier events: from the (stored) events
            _store(db, batch_id, rebuild(db, batch_id))
            return
        p = Projection(0, 0, None, [], [], Telemetry())  # the batch's first segment
    if d.step_events:
        for ev in _events(db, batch_id, unit_id, p.upto_seq, steps=True):
            p.apply(ev)
    p.merge_telemetry(d.telemetry)
    p.upto_seq, p.events = d.last_seq, events
    _store(db, batch_id, p)


def load(db: Session, summ: BatchSummary) -> Projection:
    """The batch's projection, checked: rebuilt (and not stored: a read changes nothing) when
    it is missing, fails its digest or lags the batch's event head."""
    p = _stored(db, summ.batch_id)
    if p is None or (p.upto_seq, p.events) != (summ.last_seq, summ.events):
        p = rebuild(db, summ.batch_id)
    return p


# -- a window of one channel's readings (the console's zoom) ----------------------------------

WINDOW_READINGS = 10_000  # readings read at most for one window; wider: the stored series
_EXCURSIONS_SHOWN = 200
_FIRST_READING_FROM = text(
    "SELECT seq, line FROM events WHERE batch_id = :b AND unit_id = :u "
    "AND kind = 'reading.recorded' AND seq >= :s ORDER BY seq LIMIT 1"
)
_READINGS_BETWEEN = text(
    "SELECT seq, recorded_at, line FROM events WHERE batch_id = :b AND unit_id = :u "
    "AND kind = 'reading.recorded' AND seq >= :a AND seq < :z ORDER BY seq LIMIT :n"
)


def _reading(line: bytes) -> tuple[dict[str, Any], datetime | None]:
    """A stored reading's payload and time as the summary takes it: its device time if that is
    one, else the time it was recorded (:meth:`ebr_core.telemetry.Telemetry.add`); None if
    neither is an ISO 8601 time with its offset.  The line was verified when it was stored; here
    it is only read."""
    d = orjson.loads(line)
    p = d.get("payload") if isinstance(d, dict) else None
    payload = p if isinstance(p, dict) else {}
    for t in (payload.get("device_time"), d.get("recorded_at") if isinstance(d, dict) else None):
        if isinstance(t, str):
            try:
                when = datetime.fromisoformat(t)
            except ValueError:
                continue
            if when.tzinfo is not None:
                return payload, when
    return payload, None


def _first_seq_at(db: Session, summ: BatchSummary, t: float) -> int:
    """The first seq of the batch's readings at or after ``t`` (epoch seconds), found by binary
    search over seq (readings are appended in time order): about log2(events) indexed lookups
    of one row each, whatever the number of readings."""
    lo, hi = 0, summ.last_seq + 1
    args = {"b": summ.batch_id, "u": summ.unit_id}
    while lo < hi:
        mid = (lo + hi) // 2
        row = db.execute(_FIRST_READING_FROM, args | {"s": mid}).first()
        if row is None:
            hi = mid
            continue
        when = _reading(bytes(row[1]))[1]
        if when is None or when.timestamp() >= t:
            hi = mid
        else:
            lo = int(row[0]) + 1
    return lo


@dataclass
class Window:
    """One channel between two times: its min/max buckets from the readings themselves (finer
    than the stored series) when at most :data:`WINDOW_READINGS` readings lie in it, else the
    stored series' buckets within it (``from_readings`` False); and the excursions the unit
    marked in it (from the readings only)."""

    channel: str
    unit: str
    t_from: float
    t_to: float
    from_readings: bool
    readings: int  # readings read (0 when the stored series was used)
    bucket_s: int
    series: list[dict[str, Any]]
    excursions: list[dict[str, Any]]
    excursions_total: int


def window(
    db: Session, summ: BatchSummary, proj: Projection, channel: str, t_from: float, t_to: float
) -> Window:
    """The window ``[t_from, t_to)`` (epoch seconds) of ``channel``.  Bounded cost: the seq
    range is found by binary search, then at most :data:`WINDOW_READINGS` reading rows are
    read in seq order (an indexed range); a window spanning more seqs than that is answered
    from the stored series."""
    stored = proj.telemetry.channels[channel]
    base = channel.split(".", 1)[0]
    a = _first_seq_at(db, summ, t_from)
    z = _first_seq_at(db, summ, t_to)
    # The seq span bounds the readings in it (seqs are the unit's: a span shared with other
    # events counts them too, and is answered from the stored series a little sooner).
    rows = (
        db.execute(
            _READINGS_BETWEEN,
            {"b": summ.batch_id, "u": summ.unit_id, "a": a, "z": z, "n": WINDOW_READINGS},
        ).all()
        if 0 < z - a <= WINDOW_READINGS
        else []
    )
    if z - a > WINDOW_READINGS:
        pts = [p for p in stored.series.points() if t_from <= p["t"] < t_to]
        width = stored.series.width_min() * BASE_WIDTH_S
        return Window(channel, stored.unit, t_from, t_to, False, 0, width, pts, [], 0)
    part = Telemetry()
    marks: list[dict[str, Any]] = []
    total = 0
    lo, hi = datetime.fromtimestamp(t_from, UTC), datetime.fromtimestamp(t_to, UTC)
    kept: list[dict[str, Any]] = []
    kept_at: list[str] = []
    for seq, recorded_at, line in rows:
        payload, when = _reading(bytes(line))
        if when is None or payload.get("channel") != base or not lo <= when < hi:
            continue
        kept.append(payload)
        kept_at.append(str(recorded_at))
        if payload.get("limit") not in ("ok", None):
            total += 1
            if len(marks) < _EXCURSIONS_SHOWN:
                t = when.timestamp()
                v = payload.get("value")
                value = v.get("value") if isinstance(v, dict) else None
                marks.append(
                    {"seq": int(seq), "at": when.isoformat(), "t": t, "limit": payload.get("limit"),
                     "value": value}
                )  # fmt: skip
    part.add_run(kept, kept_at, int(rows[0][0]) if rows else 0)  # the summary's own fold
    c = part.channels.get(channel)
    if c is None:
        return Window(channel, stored.unit, t_from, t_to, True, 0, BASE_WIDTH_S, [], [], 0)
    width = c.series.width_min() * BASE_WIDTH_S
    return Window(channel, c.unit, t_from, t_to, True, c.count, width, c.series.points(),
                  marks, total)  # fmt: skip
