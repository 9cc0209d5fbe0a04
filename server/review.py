"""Quality review on the server: the batch view (from the batch's projection, the same fold the
edge runs, kept by ingest: :mod:`server.projections`), results and their evaluation per
jurisdiction, review by exception, QA e-signatures bound to the exact record state and evaluation
(21 CFR 11.70), dispositions, and the out-of-specification exceptional-release workflow.

The *record hash* covers everything a reviewer judges: every event of the batch, through its
event head (the number of its events and the seq and hash of the last one, which is hash-linked
to every earlier event of its unit, readings included), the digests of the derived step state
and telemetry summary, the current result set, and the server-side deviation actions.  No
request reads the batch's events to compute it.  A signature records the record hash and the
evaluation hash it was given on; when either changes, the signature is shown as no longer
applying and cannot support a release.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import func, or_, select, text
from sqlalchemy.orm import Session

from ebr_core.batch import BatchState, current_values
from ebr_core.canonical import canonical
from ebr_core.errors import EbrError
from ebr_core.spec import evaluate, parse_spec
from ebr_core.spec.evaluate import Evaluation, late_result_alerts
from ebr_core.spec.model import Spec
from ebr_core.telemetry import BASE_WIDTH_S, Telemetry
from ebr_core.vocab import Meaning, OosState, Readiness
from server import audit, people, projections
from server.db import (
    Alert,
    BatchSummary,
    DeviationAction,
    Disposition,
    OosCase,
    QaSignature,
    ResultSet,
    SpecRow,
)
from server.errors import Conflict, NotFound, Unprocessable
from server.people import Principal
from server.projections import Projection
from server.quality import release
from server.text import iso, need_reason, storable

Clock = Callable[[], datetime]

NOTIFICATION_WINDOW = timedelta(hours=48)


# -- reading a batch --------------------------------------------------------------------------


def summary(db: Session, batch_id: str) -> BatchSummary:
    b = db.get(BatchSummary, batch_id)
    if b is None:
        raise NotFound(f"batch {batch_id} has no events on this server")
    return b


def lock_batch(db: Session, batch_id: str) -> BatchSummary:
    """Take the batch's row lock until the transaction ends and return its row as stored now.

    Every review and custody write on a batch calls this before it reads the state it checks
    (dispositions, signatures, cases, custody steps), so two requests on one batch are decided
    one after the other, each on the state the other left: one decision per state.  PostgreSQL
    locks the ``batches`` row (``SELECT ... FOR UPDATE``); SQLite has one writer at a time, so a
    no-op UPDATE of the row takes the database's write lock (waiting up to the busy timeout) and
    every read after it sees the latest commit.  Ingest's upsert of the same row waits too.
    """
    if db.get_bind().dialect.name == "sqlite":
        db.execute(
            text("UPDATE batches SET review_state = review_state WHERE batch_id = :b"),
            {"b": batch_id},
        )
        q = select(BatchSummary).where(BatchSummary.batch_id == batch_id)
    else:
        q = select(BatchSummary).where(BatchSummary.batch_id == batch_id).with_for_update()
    b = db.scalars(q.execution_options(populate_existing=True)).first()
    if b is None:
        raise NotFound(f"batch {batch_id} has no events on this server")
    return b


_SPECS: dict[tuple[str, str, str], Spec] = {}


def load_spec(db: Session, spec_id: str, version: str) -> tuple[SpecRow, Spec]:
    row = db.get(SpecRow, (spec_id, version))
    if row is None:
        raise NotFound(f"specification {spec_id} v{version} is not published on this server")
    key = (spec_id, version, row.content_hash)
    spec = _SPECS.get(key)
    if spec is None:
        spec = _SPECS[key] = parse_spec(orjson.loads(row.content))
    return row, spec


def latest_results(db: Session, batch_id: str) -> ResultSet | None:
    return db.scalars(
        select(ResultSet).where(ResultSet.batch_id == batch_id).order_by(ResultSet.id.desc())
    ).first()


def _actions(db: Session, batch_id: str) -> list[DeviationAction]:
    return list(
        db.scalars(
            select(DeviationAction)
            .where(DeviationAction.batch_id == batch_id)
            .order_by(DeviationAction.id)
        )
    )


def record_hash(
    summ: BatchSummary, proj: Projection, rs: ResultSet | None, actions: list[DeviationAction]
) -> str:
    body = {
        "batch_id": summ.batch_id,
        "unit_id": summ.unit_id,
        "events": summ.events,
        "last_seq": summ.last_seq,
        "head_hash": summ.head_hash,
        "state": proj.state_digest(),
        "telemetry": proj.telemetry.digest(),
        "results": None
        if rs is None
        else {
            "id": rs.id,
            "spec": f"{rs.spec_id} v{rs.spec_version}",
            "sha256": hashlib.sha256(rs.results.encode()).hexdigest(),
        },
        "deviation_actions": [a.id for a in actions],
    }
    return hashlib.sha256(b"ctgtp/record-state/v2\x00" + canonical(body)).hexdigest()


@dataclass
class Review:
    """Everything a reviewer sees of one batch, computed once per request."""

    summary: BatchSummary
    projection: Projection
    state: BatchState
    results: ResultSet | None
    spec: Spec | None
    evaluations: dict[str, Evaluation]
    actions: list[DeviationAction]
    record_hash: str
    notes: dict[int, EdgeNote] = field(default_factory=dict)
    clock_alerts: list[Alert] = field(default_factory=list)

    @property
    def operators(self) -> set[str]:
        return {s.user_id for s in self.state.signatures}

    def _by(self, seq: int | None) -> str:
        """Who recorded an edge event: its actor, or the unit when no person did."""
        n = self.notes.get(seq) if seq is not None else None
        if n is not None and n.actor:
            return n.actor
        return f"unit {self.state.unit_id}"

    def deviations(self) -> list[dict[str, Any]]:
        out = []
        for d in self.state.deviations.values():
            seqs = [
                seq
                for seq, n in sorted(self.notes.items())
                if n.deviation_id == d.deviation_id and n.kind == "deviation.commented"
            ]
            closes = [
                seq
                for seq, n in sorted(self.notes.items())
                if n.deviation_id == d.deviation_id and n.kind == "deviation.closed"
            ]
            comments: list[dict[str, Any]] = [
                {
                    "by": self._by(seq),
                    "text": c,
                    "at": self.notes[seq].at if seq is not None else None,
                    "seq": seq,
                    "source": "edge",
                }
                for c, seq in zip(d.comments, _pad(seqs, len(d.comments)), strict=True)
            ]
            last_close = closes[-1] if closes else None
            closed: dict[str, Any] | None = (
                None
                if d.open
                else {
                    "by": self._by(last_close),
                    "reason": d.closed_reason,
                    "at": self.notes[last_close].at if last_close is not None else None,
                    "seq": last_close,
                    "source": "edge",
                }
            )
            for a in self.actions:
                if a.deviation_id != d.deviation_id:
                    continue
                if a.action == "comment":
                    comments.append(
                        {"by": a.user_id, "text": a.text, "at": iso(a.at), "source": "server"}
                    )
                elif closed is None:
                    closed = {
                        "by": a.user_id,
                        "reason": a.text,
                        "at": iso(a.at),
                        "source": "server",
                    }
            out.append(
                {
                    "deviation_id": d.deviation_id,
                    "step": d.step,
                    "category": d.category,
                    "severity": d.severity,
                    "reason": d.reason,
                    "raised_seq": d.raised_seq,
                    "links": list(d.links),
                    "comments": comments,
                    "open": closed is None,
                    "closed": closed,
                }
            )
        return out

    def corrections(self) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
        """The batch's current values (corrections applied) and its corrections: the old
        value, the new value, who, when and why.  A correction is applied only if the event it
        names (``corrects``) is the recording of the value it corrects in this batch; one that
        is not is listed with the problem and changes nothing."""
        recorded = {seq: (kind, step) for seq, _at, kind, step in self.projection.timeline}
        problems: dict[int, str] = {}
        for c in self.state.corrections:
            if recorded.get(c.get("corrects")) != ("value.recorded", c.get("step")):
                problems[int(c["seq"])] = (
                    f"names seq {c.get('corrects')!r}, which is not the recording of "
                    f"{c.get('step')}:{c.get('name')} in this batch: not applied"
                )
        sound = [c for c in self.state.corrections if int(c["seq"]) not in problems]
        values, applied = current_values(self.state.values, sound)
        by_seq = {int(a["seq"]): a for a in applied}
        return values, [self._correction(c, by_seq, problems) for c in self.state.corrections]

    def _correction(
        self, c: dict[str, Any], applied: dict[int, dict[str, Any]], problems: dict[int, str]
    ) -> dict[str, Any]:
        seq = int(c["seq"])
        claimed = c.get("old_value", c.get("old"))
        a = applied.get(seq)
        problem = problems.get(seq)
        if a is not None and a["key"] is None:
            problem = f"names {c.get('step')}:{c.get('name')}, which was never recorded"
        elif a is not None and claimed is not None and claimed != a["old_value"]:
            problem = (
                f"says the old value was {_quantity(claimed)}; the record shows "
                f"{_quantity(a['old_value'])}"
            )
        note = self.notes.get(seq)
        return {
            "seq": seq,
            "corrects": c.get("corrects"),
            "step": c.get("step"),
            "name": c.get("name"),
            "old_value": claimed if a is None or a["key"] is None else a["old_value"],
            "new_value": c.get("value"),
            "reason": c.get("reason"),
            "by": self._by(seq),
            "at": note.at if note is not None else None,
            "applied": a is not None and a["key"] is not None,
            "problem": problem,
        }


@dataclass(frozen=True)
class EdgeNote:
    """Who recorded an edge event the fold keeps without its author (comments, closures,
    corrections), and when."""

    kind: str
    actor: str | None
    at: str | None
    deviation_id: str | None


_NOTES = text(
    "SELECT seq, line FROM events WHERE batch_id = :b AND unit_id = :u "
    "AND kind <> 'reading.recorded' "  # the partial index of step events (projections)
    "AND kind IN ('deviation.commented', 'deviation.closed', 'correction.recorded') ORDER BY seq"
)


def _notes(db: Session, summ: BatchSummary) -> dict[int, EdgeNote]:
    out = {}
    for seq, line in db.execute(_NOTES, {"b": summ.batch_id, "u": summ.unit_id}).all():
        d = orjson.loads(bytes(line))
        p = d.get("payload") if isinstance(d.get("payload"), dict) else {}
        actor, at, dev = d.get("actor"), d.get("recorded_at"), p.get("deviation_id")
        out[int(seq)] = EdgeNote(
            str(d.get("kind")),
            actor if isinstance(actor, str) else None,
            at if isinstance(at, str) else None,
            None if dev is None else str(dev),
        )
    return out


def _pad(seqs: list[int], n: int) -> list[int | None]:
    """The comment events' seqs, one per comment the fold kept (None if the events disagree)."""
    return list(seqs) if len(seqs) == n else [None] * n


def _quantity(v: Any) -> str:
    if isinstance(v, dict):
        return f"{v.get('value')} {v.get('unit', '')}".strip()
    return str(v)


CLOCK_ALERTS = "clock.%"  # clock.ahead, clock.before_enrolment, clock.backwards (ingest)


def clock_alerts(db: Session, summ: BatchSummary) -> list[Alert]:
    """The batch's clock alerts: exceptions for review, acknowledged or not."""
    return list(
        db.scalars(
            select(Alert)
            .where(
                Alert.batch_id == summ.batch_id,
                Alert.kind.like(CLOCK_ALERTS),
                or_(Alert.site_id == summ.site_id, Alert.site_id.is_(None)),
            )
            .order_by(Alert.id)
        )
    )


def load_review(db: Session, batch_id: str) -> Review:
    summ = summary(db, batch_id)
    proj = projections.load(db, summ)
    if proj.state is None:
        raise NotFound(f"batch {batch_id} has no batch.started event on this server")
    st = proj.state
    rs = latest_results(db, batch_id)
    spec = None
    evaluations: dict[str, Evaluation] = {}
    if rs is not None:
        _, spec = load_spec(db, rs.spec_id, rs.spec_version)
        results = orjson.loads(rs.results)
        evaluations = {j: evaluate(spec, results, j) for j in sorted(spec.overlays)}
    actions = _actions(db, batch_id)
    return Review(
        summ,
        proj,
        st,
        rs,
        spec,
        evaluations,
        actions,
        record_hash(summ, proj, rs, actions),
        _notes(db, summ),
        clock_alerts(db, summ),
    )


def _aware(t: datetime, ref: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=ref.tzinfo or UTC)


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
    cases = list(
        db.scalars(select(OosCase).where(OosCase.batch_id == st.batch_id).order_by(OosCase.id))
    )
    devs = r.deviations()
    failed_sigs = r.projection.failed_signatures
    # Excursions as recorded (a correction does not undo what was seen at the station).
    excursions = {k: v for k, v in st.values.items() if v.get("limit", "ok") != "ok"}
    values, corrections = r.corrections()
    failing = {j: [v.attribute for v in ev.failed()] for j, ev in r.evaluations.items()}
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
        "qa_signatures": [_sig_json(s, r) for s in sigs],
        "dispositions": [
            {
                "jurisdiction": d.jurisdiction,
                "disposition": d.disposition,
                "pending": orjson.loads(d.pending),
                "decided_at": iso(d.decided_at),
                "signature": _sig_json(by_id[d.signature_id], r),
            }
            for d in disps
        ],
        "oos_cases": [case_json(c, now) for c in cases],
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


def alert_json(a: Alert) -> dict[str, Any]:
    return {
        "id": a.id,
        "kind": a.kind,
        "site_id": a.site_id,
        "batch_id": a.batch_id,
        "unit_id": a.unit_id,
        "message": a.message,
        "created_at": iso(a.created_at),
        "acknowledged": None
        if not a.acks
        else {"by": a.acks[0].user_id, "at": iso(a.acks[0].at), "note": a.acks[0].note},
    }


def _sig_json(s: QaSignature, r: Review) -> dict[str, Any]:
    ev = r.evaluations.get(s.jurisdiction)
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
        "applies": s.record_hash == r.record_hash
        and ev is not None
        and s.evaluation_hash == ev.hash(),
    }


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
        "notification_overdue": due is not None
        and c.notified_at is None
        and _aware(due, now) < now,
    }


def queue(db: Session, sites: set[str] | None, *, limit: int, offset: int) -> dict[str, Any]:
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
        .where(BatchSummary.review_state.in_(("awaiting_review", "in_review", "changed")))
    )
    n = (
        select(func.count())
        .select_from(BatchSummary)
        .where(BatchSummary.review_state.in_(("awaiting_review", "in_review", "changed")))
    )
    if sites is not None:
        q = q.where(BatchSummary.site_id.in_(sorted(sites)))
        n = n.where(BatchSummary.site_id.in_(sorted(sites)))
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


# -- writes -----------------------------------------------------------------------------------


def publish_spec(
    db: Session, actor: Principal, *, at: datetime, content: Any, reason: str
) -> tuple[SpecRow, bool]:
    storable("reason", reason)
    if not isinstance(content, dict):
        raise Unprocessable("specification content must be a JSON object")
    try:
        body = canonical(content)
        spec = parse_spec(orjson.loads(body))
    except EbrError as e:
        raise Unprocessable(f"specification refused: {e}") from e
    digest = hashlib.sha256(body).hexdigest()
    row = db.get(SpecRow, (spec.spec_id, spec.version))
    if row is not None:
        if row.content_hash == digest:
            return row, False
        raise Conflict(
            f"specification {spec.spec_id} v{spec.version} is already published with different "
            "content; a published version never changes: publish a new version"
        )
    row = SpecRow(
        spec_id=spec.spec_id,
        version=spec.version,
        content=body.decode(),
        content_hash=digest,
        published_by=actor.user_id,
        published_at=at,
    )
    db.add(row)
    audit.append(
        db,
        at=at,
        actor=actor.user_id,
        action="spec.published",
        object_type="spec",
        object_id=f"{spec.spec_id}@{spec.version}",
        new={"sha256": digest, "jurisdictions": sorted(spec.overlays)},
        reason=reason,
    )
    return row, True


def enter_results(
    db: Session,
    actor: Principal,
    *,
    at: datetime,
    batch_id: str,
    spec_id: str,
    spec_version: str,
    results: Any,
    reason: str,
) -> ResultSet:
    summ = lock_batch(db, batch_id)
    actor.require("results.write", summ.site_id)
    need_reason(reason)
    _, spec = load_spec(db, spec_id, spec_version)
    if not isinstance(results, dict) or not results:
        raise Unprocessable("results must be a non-empty object: attribute -> {value, unit, ...}")
    try:
        body = canonical(results).decode()
        parsed = orjson.loads(body)
        evals = {j: evaluate(spec, parsed, j) for j in sorted(spec.overlays)}
    except EbrError as e:
        raise Unprocessable(f"results refused: {e}") from e
    unknown = (
        set(parsed)
        - set().union(*(spec.for_jurisdiction(j) for j in spec.overlays))
        - {"patient_weight"}
    )
    if unknown:
        raise Unprocessable(
            f"results name attributes the specification does not have: {', '.join(sorted(unknown))}"
        )
    prev = latest_results(db, batch_id)
    rs = ResultSet(
        batch_id=batch_id,
        spec_id=spec_id,
        spec_version=spec_version,
        results=body,
        entered_by=actor.user_id,
        entered_at=at,
        reason=reason,
    )
    db.add(rs)
    db.flush()
    audit.append(
        db,
        at=at,
        actor=actor.user_id,
        action="results.entered",
        object_type="batch",
        object_id=batch_id,
        old=None
        if prev is None
        else {"result_set": prev.id, "results": orjson.loads(prev.results)},
        new={"result_set": rs.id, "spec": f"{spec_id}@{spec_version}", "results": parsed},
        reason=reason,
    )
    # A result that fails after a (conditional or exceptional) release reaches the site at once.
    latest = _latest_dispositions(db, batch_id)
    from server.custody import receiving_sites

    sites = {summ.site_id} | receiving_sites(db, batch_id) if latest else set()
    for j, d in latest.items():
        if d.disposition == "rejected" or j not in evals:
            continue
        for a in late_result_alerts("released", evals[j]):
            for site in sorted(sites):  # the manufacturing site and every receiving site
                db.add(
                    Alert(
                        kind="quality.late_failure",
                        unit_id=summ.unit_id,
                        site_id=site,
                        batch_id=batch_id,
                        message=f"batch {batch_id} (COI {summ.coi}): {a.message}",
                        created_at=at,
                    )
                )
    if summ.review_state == "decided" or latest:
        _set_state(db, summ, "changed", actor, at)
    return rs


def _set_state(db: Session, summ: BatchSummary, state: str, actor: Principal, at: datetime) -> None:
    if summ.review_state == state:
        return
    old = summ.review_state
    summ.review_state = state
    audit.append(
        db,
        at=at,
        actor=actor.user_id,
        action="batch.review_state",
        object_type="batch",
        object_id=summ.batch_id,
        old={"review_state": old},
        new={"review_state": state},
    )


def deviation_action(
    db: Session,
    actor: Principal,
    *,
    at: datetime,
    batch_id: str,
    deviation_id: str,
    action: str,
    text_: str,
) -> DeviationAction:
    summ = lock_batch(db, batch_id)
    actor.require("deviation.review", summ.site_id)
    r = load_review(db, batch_id)
    dev = {d["deviation_id"]: d for d in r.deviations()}.get(deviation_id)
    if dev is None:
        raise NotFound(f"batch {batch_id} has no deviation {deviation_id}")
    if not text_.strip():
        raise Unprocessable(f"a {'reason' if action == 'close' else 'comment'} is required")
    storable("reason" if action == "close" else "comment", text_)
    if action == "close" and not dev["open"]:
        raise Conflict(f"deviation {deviation_id} is already closed")
    a = DeviationAction(
        batch_id=batch_id,
        deviation_id=deviation_id,
        action=action,
        text=text_,
        user_id=actor.user_id,
        at=at,
    )
    db.add(a)
    db.flush()
    audit.append(
        db,
        at=at,
        actor=actor.user_id,
        action=f"deviation.{'commented' if action == 'comment' else 'closed'}",
        object_type="deviation",
        object_id=f"{batch_id}/{deviation_id}",
        old={"open": dev["open"]},
        new={"open": dev["open"] and action != "close", "text": text_},
        reason=text_ if action == "close" else None,
    )
    return a


def _latest_dispositions(db: Session, batch_id: str) -> dict[str, Disposition]:
    out: dict[str, Disposition] = {}
    for d in db.scalars(
        select(Disposition).where(Disposition.batch_id == batch_id).order_by(Disposition.id)
    ):
        out[d.jurisdiction] = d
    return out


def _event_times(r: Review) -> list[tuple[str, object]]:
    """(what, recorded time) of the batch's step events and of its first and last reading per
    channel, from the projection (no event is read)."""
    out: list[tuple[str, object]] = [
        (f"event seq {seq} ({kind})", at) for seq, at, kind, _step in r.projection.timeline
    ]
    for name, c in r.projection.telemetry.channels.items():
        out += [(f"first {name} reading", c.first_at), (f"last {name} reading", c.last_at)]
    return [(w, t) for w, t in out if t is not None]


def batch_start(r: Review) -> datetime:
    """When the batch began: its ``batch.started`` time or its earliest event time, whichever
    is earlier (a unit's clock may run ahead).  If no time of the batch is a real time, the
    earliest possible time, so that a rule "since the batch began" errs on the strict side."""
    times = [t for _, raw in _event_times(r) if (t := release.recorded_time(raw)) is not None]
    start = release.recorded_time(r.state.started_at)
    if start is not None:
        times.append(start)
    return min(times, default=datetime.min.replace(tzinfo=UTC))


def sign(
    db: Session, actor: Principal, *, batch_id: str, req: release.Signing
) -> tuple[QaSignature, Disposition | None]:
    """Apply a QA e-signature (the caller has re-authenticated ``actor`` by password): gather
    what the release rules need under the batch's lock, let :func:`release.decide` decide, and
    record the signature, the disposition, the released case and the review state."""
    meaning = release.check_request(req.meaning, req.reason)
    summ = lock_batch(db, batch_id)
    decides = meaning != Meaning.REVIEWED
    actor.require("release" if decides else "sign.review", summ.site_id)
    r = load_review(db, batch_id)
    since = batch_start(r)
    latest = _latest_dispositions(db, batch_id)
    ev = r.evaluations.get(req.jurisdiction)
    batch = release.Batch(
        batch_id=batch_id,
        record_hash=r.record_hash,
        has_results=r.results is not None,
        evaluations=r.evaluations,
        open_deviations=[d["deviation_id"] for d in r.deviations() if d["open"]],
        operators=r.operators,
        event_times=_event_times(r),
        review_state=summ.review_state,
    )
    signatures = [
        release.PriorSignature(
            s.user_id, s.jurisdiction, s.meaning, s.record_hash, s.evaluation_hash
        )
        for s in db.scalars(
            select(QaSignature).where(
                QaSignature.batch_id == batch_id, QaSignature.jurisdiction == req.jurisdiction
            )
        )
    ]
    case = None
    if ev is not None and ev.disposition == Readiness.NOT_RELEASABLE:
        case = db.scalars(
            select(OosCase).where(
                OosCase.batch_id == batch_id,
                OosCase.jurisdiction == req.jurisdiction,
                OosCase.state == OosState.ACCEPTED,
            )
        ).first()
    who = release.Signer(
        user_id=actor.user_id,
        roles=frozenset(actor.roles()),
        administered_access=people.administered_access(db, actor.user_id, since),
        batch_began=since,
    )
    d = release.decide(
        batch, {j: x.disposition for j, x in latest.items()}, signatures, who, req,
        accepted_case=case is not None,
    )  # fmt: skip
    return _record_signature(db, actor, summ, r, req, d, latest.get(req.jurisdiction), case)


def _record_signature(
    db: Session,
    actor: Principal,
    summ: BatchSummary,
    r: Review,
    req: release.Signing,
    d: release.Decision,
    prev: Disposition | None,
    case: OosCase | None,
) -> tuple[QaSignature, Disposition | None]:
    batch_id, at = summ.batch_id, req.at
    sig = QaSignature(
        batch_id=batch_id,
        jurisdiction=req.jurisdiction,
        user_id=actor.user_id,
        printed_name=actor.printed_name,
        meaning=req.meaning,
        reason=req.reason,
        record_hash=r.record_hash,
        evaluation_hash=d.evaluation_hash,
        signed_at=at,
    )
    db.add(sig)
    db.flush()
    audit.append(
        db,
        at=at,
        actor=actor.user_id,
        action=f"signature.{req.meaning}",
        object_type="batch",
        object_id=batch_id,
        new={
            "signature": sig.id,
            "printed_name": actor.printed_name,
            "meaning": req.meaning,
            "jurisdiction": req.jurisdiction,
            "record_hash": r.record_hash,
            "evaluation_hash": d.evaluation_hash,
        },
        reason=req.reason,
    )
    disp = None
    if d.disposition is not None:
        pending = list(d.pending)
        disp = Disposition(
            batch_id=batch_id,
            jurisdiction=req.jurisdiction,
            disposition=d.disposition,
            signature_id=sig.id,
            pending=orjson.dumps(pending).decode(),
            decided_at=at,
        )
        db.add(disp)
        if d.releases_case and case is not None:
            case.state = OosState.RELEASED
            case.released_at = at
            case.notification_due_at = at + NOTIFICATION_WINDOW
        audit.append(
            db,
            at=at,
            actor=actor.user_id,
            action="batch.disposition",
            object_type="batch",
            object_id=batch_id,
            old=None if prev is None else {req.jurisdiction: prev.disposition},
            new={req.jurisdiction: d.disposition, "pending": pending},
            reason=req.reason,
        )
    if d.review_state is not None:
        _set_state(db, summ, d.review_state, actor, at)
    return sig, disp


# -- the out-of-specification exceptional release -------------------------------------------


def open_oos(
    db: Session,
    actor: Principal,
    *,
    at: datetime,
    batch_id: str,
    jurisdiction: str,
    physician: str,
    request_text: str,
) -> OosCase:
    summ = lock_batch(db, batch_id)
    actor.require("release", summ.site_id)
    r = load_review(db, batch_id)
    ev = r.evaluations.get(jurisdiction)
    if ev is None or ev.disposition != "not_releasable":
        raise Conflict(
            f"batch {batch_id} is not out of specification in {jurisdiction}: no exceptional "
            "release is needed"
        )
    if not physician.strip() or not request_text.strip():
        raise Unprocessable("the treating physician's name and written request are required")
    storable("physician", physician)
    storable("request", request_text)
    if db.scalars(
        select(OosCase).where(
            OosCase.batch_id == batch_id,
            OosCase.jurisdiction == jurisdiction,
            OosCase.state.in_(("requested", "evaluated", "accepted")),
        )
    ).first():
        raise Conflict(f"an exceptional-release case for {batch_id} {jurisdiction} is open")
    c = OosCase(
        batch_id=batch_id,
        jurisdiction=jurisdiction,
        state="requested",
        physician=physician,
        request_text=request_text,
        requested_by=actor.user_id,
        requested_at=at,
    )
    db.add(c)
    db.flush()
    audit.append(
        db,
        at=at,
        actor=actor.user_id,
        action="oos.requested",
        object_type="oos_case",
        object_id=str(c.id),
        new={
            "batch_id": batch_id,
            "jurisdiction": jurisdiction,
            "physician": physician,
            "failing": [v.attribute for v in ev.failed()],
        },
        reason=request_text,
    )
    return c


def case_site(db: Session, case_id: int) -> str:
    c = db.get(OosCase, case_id)
    if c is None:
        raise NotFound(f"exceptional-release case {case_id} does not exist")
    return summary(db, c.batch_id).site_id


_OOS_STEPS = {
    "risk-evaluation": ("requested", "evaluated"),
    "physician-acceptance": ("evaluated", "accepted"),
    "notification": ("released", "notified"),
}


def oos_step(
    db: Session, actor: Principal, *, at: datetime, case_id: int, step: str, text_: str
) -> OosCase:
    c = db.get(OosCase, case_id)
    if c is None:
        raise NotFound(f"exceptional-release case {case_id} does not exist")
    actor.require("release", lock_batch(db, c.batch_id).site_id)
    db.refresh(c)  # the case as the lock holder left it
    if step not in _OOS_STEPS:
        raise NotFound(f"unknown step {step!r}; steps: {', '.join(_OOS_STEPS)}")
    before, after = _OOS_STEPS[step]
    if c.state != before:
        raise Conflict(f"case {case_id} is {c.state}; {step} needs it to be {before}")
    if not text_.strip():
        raise Unprocessable(f"{step}: the text (evaluation, acceptance or reference) is required")
    storable(f"{step} text", text_)
    if step == "risk-evaluation":
        c.risk_evaluation, c.evaluated_by, c.evaluated_at = text_, actor.user_id, at
    elif step == "physician-acceptance":
        c.acceptance_text, c.accepted_at = text_, at
    else:
        c.notification_reference, c.notified_at = text_, at
    c.state = after
    audit.append(
        db,
        at=at,
        actor=actor.user_id,
        action=f"oos.{after}",
        object_type="oos_case",
        object_id=str(case_id),
        old={"state": before},
        new={"state": after, "text": text_},
        reason=text_,
    )
    return c
