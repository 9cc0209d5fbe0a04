"""The read model of quality review: the batch view, the review queue, telemetry, cases and
alerts as JSON documents (their shapes: :mod:`server.quality.schemas`).  Reads only."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from ebr_core.telemetry import BASE_WIDTH_S, Telemetry
from ebr_core.vocab import ReviewState
from server import projections
from server.audit.alerts import alert_json
from server.batches import at_sites
from server.db import (
    Alert,
    BatchSummary,
    Disposition,
    OosCase,
    QaSignature,
)
from server.errors import Conflict, NotFound, Unprocessable
from server.quality.record import CLOCK_ALERTS, Review, labels
from server.quality.signatures import signature_json, signed_records, since_signature
from server.text import aware, iso


def batch_view(db: Session, r: Review, now: datetime) -> dict[str, Any]:
    st = r.state
    sigs = list(
        db.scalars(
            select(QaSignature).where(QaSignature.batch_id == st.batch_id).order_by(QaSignature.id)
        )
    )
    disps = list(
        db.scalars(
            select(Disposition).where(Disposition.batch_id == st.batch_id).order_by(Disposition.id)
        )
    )
    by_id = {s.id: s for s in sigs}
    signed = signed_records(db, st.batch_id) if sigs else {}
    cases = list(
        db.scalars(select(OosCase).where(OosCase.batch_id == st.batch_id).order_by(OosCase.id))
    )
    devs = r.deviations()
    failed_sigs = r.projection.failed_signatures
    # Excursions as recorded (a correction does not undo what was seen at the station).
    excursions = {k: v for k, v in st.values.items() if v.get("limit", "ok") != "ok"}
    values, corrections = r.corrections()
    failing = {j: [v.attribute for v in ev.failed()] for j, ev in r.evaluations.items()}
    label_rec = labels(db, r.summary, r.projection)
    return {
        "batch_id": st.batch_id,
        "unit_id": st.unit_id,
        "site_id": r.summary.site_id,
        "coi": st.coi,
        "status": st.status,
        "mbr": f"{st.mbr_id} v{st.mbr_version}",
        "started_at": st.started_at,
        "events": r.summary.events,
        "review_state": r.summary.review_state,
        "record_hash": r.record_hash,
        "exceptions": {
            "rejected_scans": len(st.scans_rejected),
            "open_deviations": sum(1 for d in devs if d["open"]),
            "alarms": len(st.alarms),
            "failed_signatures": len(failed_sigs),
            "limit_excursions": len(excursions),
            "corrections": len(st.corrections),
            "clock_alerts": len(r.clock_alerts),
            "failing_attributes": failing,
        },
        "timeline": [
            {"seq": seq, "recorded_at": at, "kind": kind, "step": step}
            for seq, at, kind, step in r.projection.timeline
        ],
        "readings": r.summary.readings,
        "telemetry": telemetry_json(r.projection.telemetry, series=False),
        "values": values,
        "limit_excursions": excursions,
        "rejected_scans": [dict(x) for x in st.scans_rejected],
        "alarms": [dict(x) for x in st.alarms],
        "corrections": corrections,
        "clock_alerts": [alert_json(a) for a in r.clock_alerts],
        "deviations": devs,
        "edge_signatures": [
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
        "failed_signatures": [dict(x) for x in failed_sigs],
        "results": None
        if r.results is None
        else {
            "id": r.results.id,
            "spec_id": r.results.spec_id,
            "spec_version": r.results.spec_version,
            "entered_by": r.results.entered_by,
            "entered_at": iso(r.results.entered_at),
            "results": orjson.loads(r.results.results),
        },
        "cqa": {
            j: {**ev.to_json(), "evaluation_hash": ev.hash()} for j, ev in r.evaluations.items()
        },
        "qa_signatures": [signature_json(s, r, signed) for s in sigs],
        "dispositions": [
            {
                "jurisdiction": d.jurisdiction,
                "disposition": d.disposition,
                "pending": orjson.loads(d.pending),
                "decided_at": iso(d.decided_at),
                "signature": signature_json(by_id[d.signature_id], r, signed),
            }
            for d in disps
        ],
        "oos_cases": [case_json(c, now) for c in cases],
        "since_signature": since_signature(db, r, sigs[-1], signed) if sigs else None,
        # label reconciliation from the label events (the report prints the same counts)
        "labels": label_rec["counts"],
        "labels_reconciled": label_rec["reconciled"],
    }


def telemetry_json(t: Telemetry, *, series: bool) -> dict[str, Any]:
    """The telemetry summary per channel; with ``series``, each channel's min/max buckets."""
    out: dict[str, Any] = {}
    for name, c in sorted(t.channels.items()):
        d = c.to_json()
        del d["series"]
        if series:
            d["bucket_s"] = c.series.width_min() * BASE_WIDTH_S
            d["series"] = c.series.points()
        out[name] = d
    return out


def cqa_panel(view: dict[str, Any], jurisdiction: str) -> dict[str, Any]:
    """The CQA panel of one jurisdiction from a batch view, or the error a report should give."""
    cqa = view["cqa"].get(jurisdiction)
    if cqa is not None:
        return dict(cqa)
    if not view["cqa"]:
        raise Conflict(f"batch {view['batch_id']} has no results entered: nothing to report")
    raise Unprocessable(
        f"jurisdiction {jurisdiction!r}: the batch was evaluated for "
        f"{', '.join(sorted(view['cqa']))}"
    )


def case_json(c: OosCase, now: datetime) -> dict[str, Any]:
    due = c.notification_due_at
    return {
        "id": c.id,
        "batch_id": c.batch_id,
        "jurisdiction": c.jurisdiction,
        "state": c.state,
        "physician": c.physician,
        "request": c.request_text,
        "requested_by": c.requested_by,
        "requested_at": iso(c.requested_at),
        "risk_evaluation": c.risk_evaluation,
        "evaluated_by": c.evaluated_by,
        "evaluated_at": iso(c.evaluated_at),
        "physician_acceptance": c.acceptance_text,
        "accepted_at": iso(c.accepted_at),
        "released_at": iso(c.released_at),
        "notification_due_at": iso(due),
        "notified_at": iso(c.notified_at),
        "notification_reference": c.notification_reference,
        "notification_overdue": due is not None and c.notified_at is None and aware(due) < now,
    }


QUEUED = (ReviewState.AWAITING_REVIEW, ReviewState.IN_REVIEW, ReviewState.CHANGED)


def queue_counts(db: Session, sites: set[str] | None) -> dict[str, int]:
    """How many batches of the queue are in each state, at ``sites`` (None: every site)."""
    q = (
        select(BatchSummary.review_state, func.count())
        .where(BatchSummary.review_state.in_(QUEUED))
        .group_by(BatchSummary.review_state)
    )
    found = {str(st): int(n) for st, n in db.execute(at_sites(q, BatchSummary.site_id, sites))}
    return {st.value: found.get(st.value, 0) for st in QUEUED}


def queue(
    db: Session,
    sites: set[str] | None,
    *,
    limit: int,
    offset: int,
    state: str | None = None,
    completed_before: str | None = None,
) -> dict[str, Any]:
    """The review queue, most exceptions first; ``state``: only batches in it;
    ``completed_before``: only batches completed before that time (ISO 8601, UTC)."""
    # Review by exception: a batch's clock alerts (raised by ingest) count with its exceptions.
    clock = (
        select(Alert.batch_id, func.count().label("n"))
        .where(Alert.batch_id.is_not(None), Alert.kind.like(CLOCK_ALERTS))
        .group_by(Alert.batch_id)
        .subquery()
    )
    exceptions = BatchSummary.exceptions + func.coalesce(clock.c.n, 0)
    q = (
        select(BatchSummary, exceptions)
        .outerjoin(clock, clock.c.batch_id == BatchSummary.batch_id)
        .where(BatchSummary.review_state.in_(QUEUED))
    )
    n = select(func.count()).select_from(BatchSummary).where(BatchSummary.review_state.in_(QUEUED))
    if state is not None:
        q = q.where(BatchSummary.review_state == state)
        n = n.where(BatchSummary.review_state == state)
    if completed_before is not None:
        q = q.where(BatchSummary.completed_at <= completed_before)
        n = n.where(BatchSummary.completed_at <= completed_before)
    q, n = at_sites(q, BatchSummary.site_id, sites), at_sites(n, BatchSummary.site_id, sites)
    rows = db.execute(
        q.order_by(exceptions.desc(), BatchSummary.completed_at, BatchSummary.batch_id)
        .limit(limit)
        .offset(offset)
    ).all()
    return {
        "total": db.scalar(n),
        "batches": [
            {
                "batch_id": b.batch_id,
                "site_id": b.site_id,
                "unit_id": b.unit_id,
                "coi": b.coi,
                "completed_at": b.completed_at,
                "events": b.events,
                "exceptions": int(n),
                "review_state": b.review_state,
            }
            for b, n in rows
        ],
    }


NO_LIMITS = (
    "no limits: the server holds no MBR or instrument profile for this batch (the MBR's "
    "limits stay on the unit, which marks each reading it judged)"
)
MAX_TIME = 40  # characters of a window's bound


def window_time(text: str, what: str) -> float:
    """A window bound: ISO 8601, UTC when no offset is given (a browser's datetime-local)."""
    if not text or len(text) > MAX_TIME:
        raise Unprocessable(f"{what}: expected an ISO 8601 time such as 2026-11-30T08:00")
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise Unprocessable(
            f"{what} {text!r}: expected an ISO 8601 time such as 2026-11-30T08:00"
        ) from None
    return (t if t.tzinfo else t.replace(tzinfo=UTC)).timestamp()


def telemetry_window(
    db: Session,
    summ: BatchSummary,
    channel: str,
    t_from: float,
    t_to: float,
    proj: projections.Projection | None = None,
) -> dict[str, Any]:
    """One channel between two times at the finest resolution the window allows
    (:func:`server.projections.window`), with the channel's limits (none held: said so);
    ``proj``: the batch's projection if the caller has loaded it."""
    if not t_from < t_to:
        raise Unprocessable("the window's start must be before its end")
    proj = proj or projections.load(db, summ)
    if channel not in proj.telemetry.channels:
        names = ", ".join(sorted(proj.telemetry.channels)) or "none"
        raise NotFound(f"batch {summ.batch_id} has no telemetry channel {channel!r} ({names})")
    w = projections.window(db, summ, proj, channel, t_from, t_to)
    return {
        "batch_id": summ.batch_id,
        "channel": w.channel,
        "unit": w.unit,
        "from": datetime.fromtimestamp(w.t_from, UTC).isoformat(),
        "to": datetime.fromtimestamp(w.t_to, UTC).isoformat(),
        "resolution": "readings" if w.from_readings else "stored",
        "readings": w.readings,
        "bucket_s": w.bucket_s,
        "series": w.series,
        "excursions": w.excursions,
        "excursions_total": w.excursions_total,
        "limits": None,
        "limits_note": NO_LIMITS,
    }
