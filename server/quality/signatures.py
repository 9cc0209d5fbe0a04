"""What a batch's QA signatures cover: whether each still applies to the batch as it is
(:func:`server.quality.release.still_applies` over what the batch gained since), and what
reached the record after the last one (:func:`since_signature`).  Reads only; part of the batch
view (:mod:`server.quality.views`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ebr_core.vocab import Meaning
from server.audit.trail import stream_of
from server.db import AuditEntry, DeviationAction, QaSignature, ResultSet
from server.quality import release
from server.quality.record import Review
from server.text import aware, iso


def signed_records(db: Session, batch_id: str) -> dict[int, tuple[int | None, int | None]]:
    """signature id -> the last event seq and the readings of the record it signed, from the
    signatures' audit entries (recorded since this server version; an older signature is
    absent).  One query: the batch's stream, signature actions only."""
    q = select(AuditEntry.new).where(
        AuditEntry.stream == stream_of("batch", batch_id),
        AuditEntry.action.in_([f"signature.{m}" for m in Meaning]),
    )
    out: dict[int, tuple[int | None, int | None]] = {}
    for new in db.scalars(q):
        d = orjson.loads(new) if new else None
        if isinstance(d, dict) and isinstance(d.get("signature"), int):
            n, k = d.get("last_seq"), d.get("readings")
            out[d["signature"]] = (
                (n if isinstance(n, int) else None),
                (k if isinstance(k, int) else None),
            )
    return out


def since_signature(
    db: Session,
    r: Review,
    sig: QaSignature,
    signed: dict[int, tuple[int | None, int | None]] | None = None,
) -> dict[str, Any]:
    """What reached the record after the last QA signature: the events the unit sent since the
    record it signed (by kind: count and seqs; readings counted from the summary, without
    seqs), results entered, deviation comments and closures.  Why a batch is ``changed``, so
    a reviewer sees it at once (e.g. the hand-offs and the infusion synced after a release).
    ``known`` is False for a signature made before the server recorded the seq it covered:
    then only the server-side changes are listed."""
    summ, at = r.summary, sig.signed_at
    if signed is None:
        signed = signed_records(db, summ.batch_id)
    n, readings = signed.get(sig.id, (None, None))
    kinds: dict[str, list[int]] = {}  # the step events after it, from the timeline (no query)
    for seq, _at, kind, _step in r.projection.timeline:
        if n is not None and int(seq) > n:
            kinds.setdefault(str(kind), []).append(int(seq))
    events: list[dict[str, Any]] = [
        {"kind": k, "count": len(v), "first_seq": min(v), "last_seq": max(v)}
        for k, v in sorted(kinds.items(), key=lambda kv: min(kv[1]))
    ]
    if n is not None and readings is not None and summ.readings > readings:
        # counted from the batch's summary, not read: a million readings cost nothing here
        events.append({"kind": "reading.recorded", "count": summ.readings - readings,
                       "first_seq": None, "last_seq": None})  # fmt: skip
    results = db.scalars(
        select(ResultSet)
        .where(ResultSet.batch_id == summ.batch_id, ResultSet.entered_at > at)
        .order_by(ResultSet.id)
    )
    acts = dict(
        db.execute(
            select(DeviationAction.action, func.count())
            .where(DeviationAction.batch_id == summ.batch_id, DeviationAction.at > at)
            .group_by(DeviationAction.action)
        ).all()
    )
    return {
        "signature": {
            "id": sig.id,
            "user_id": sig.user_id,
            "printed_name": sig.printed_name,
            "meaning": sig.meaning,
            "jurisdiction": sig.jurisdiction,
            "signed_at": iso(sig.signed_at),
        },
        "known": n is not None,
        "signed_last_seq": n,
        "events": events,
        "results_entered": [
            {"id": x.id, "entered_by": x.entered_by, "entered_at": iso(x.entered_at)}
            for x in results
        ],
        "deviation_comments": int(acts.get("comment", 0)),
        "deviation_closures": int(acts.get("close", 0)),
    }


def _since(
    r: Review, s: QaSignature, signed: dict[int, tuple[int | None, int | None]]
) -> release.Since:
    """What the batch gained after the record ``s`` signed (from the projection and the rows
    the review already holds: no query)."""
    n, readings = signed.get(s.id, (None, None))
    at = aware(s.signed_at)

    def since_then(t: datetime | None) -> bool:
        return t is not None and aware(t) >= at

    after = [] if n is None else [str(t[2]) for t in r.projection.timeline if int(t[0]) > n]
    return release.Since(
        last_seq=n,
        readings=readings,
        after=after,
        readings_now=r.summary.readings,
        qa_changes=since_then(None if r.results is None else r.results.entered_at)
        or any(since_then(a.at) for a in r.actions)
        or any(since_then(x.at) for x in r.links),
    )


def signature_json(
    s: QaSignature, r: Review, signed: dict[int, tuple[int | None, int | None]]
) -> dict[str, Any]:
    ev = r.evaluations.get(s.jurisdiction)
    travel = release.still_applies(
        s.record_hash,
        s.evaluation_hash,
        r.record_hash,
        None if ev is None else ev.hash(),
        _since(r, s, signed),
    )
    return {
        "id": s.id,
        "jurisdiction": s.jurisdiction,
        "user_id": s.user_id,
        "printed_name": s.printed_name,
        "meaning": s.meaning,
        "reason": s.reason,
        "signed_at": iso(s.signed_at),
        "record_hash": s.record_hash,
        "evaluation_hash": s.evaluation_hash,
        "applies": travel is not None,
        # travel events (hand-offs, receipt, infusion, shipper's log) recorded after the record
        # it signed: the decision stands for that record; 0 when it signed the record as it is
        "travel_since": travel,
    }
