"""Quality review writes: publishing a specification, entering results (and alerting a failure
after a release), QA actions on deviations, and QA e-signatures with their dispositions
(21 CFR 11.70), decided by the pure rules of :mod:`server.quality.release`.

Over 400 lines: every write here takes the batch's row lock, re-reads the record it signs and
appends its audit entry the same way; they are read and changed together."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from ebr_core.canonical import canonical
from ebr_core.errors import EbrError
from ebr_core.spec import evaluate, parse_spec
from ebr_core.spec.evaluate import late_result_alerts
from ebr_core.vocab import Meaning, OosState, Readiness
from server.audit import trail as audit
from server.batches import lock_batch
from server.custody.service import receiving_sites
from server.db import (
    Alert,
    BatchSummary,
    ClosureSignature,
    DeviationAction,
    Disposition,
    OosCase,
    QaSignature,
    ResultSet,
    SpecRow,
)
from server.errors import Conflict, NotFound, Unprocessable
from server.people import duties
from server.people.service import Principal
from server.quality import release
from server.quality.record import Review, latest_results, load_review, load_spec
from server.text import need_reason, storable

NOTIFICATION_WINDOW = timedelta(hours=48)


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
    sites = {summ.site_id} | receiving_sites(db, batch_id) if latest else set()
    for j, d in latest.items():
        if d.disposition == "rejected" or j not in evals:
            continue
        for a in late_result_alerts(d.disposition, evals[j]):
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
    """A comment on a deviation.  A closure is an e-signature: :func:`close_deviations`."""
    if action != "comment":
        raise Unprocessable(
            f"action {action[:16]!r}: a deviation is commented here; a closure is an "
            "e-signature (user id, password, meaning 'closed', reason)"
        )
    summ = lock_batch(db, batch_id)
    actor.require("deviation.review", summ.site_id)
    r = load_review(db, batch_id)
    dev = {d["deviation_id"]: d for d in r.deviations()}.get(deviation_id)
    if dev is None:
        raise NotFound(f"batch {batch_id} has no deviation {deviation_id}")
    if not text_.strip():
        raise Unprocessable("a comment is required")
    storable("comment", text_)
    a = DeviationAction(
        batch_id=batch_id, deviation_id=deviation_id, action="comment", text=text_,
        user_id=actor.user_id, at=at,
    )  # fmt: skip
    db.add(a)
    db.flush()
    audit.append(
        db,
        at=at,
        actor=actor.user_id,
        action="deviation.commented",
        object_type="deviation",
        object_id=f"{batch_id}/{deviation_id}",
        old={"open": dev["open"]},
        new={"open": dev["open"], "text": text_},
    )
    return a


def close_deviations(
    db: Session, actor: Principal, *, batch_id: str, req: release.Closing
) -> list[tuple[DeviationAction, ClosureSignature]]:
    """Close deviations with one e-signature (the caller has re-authenticated ``actor`` by
    password and checked :func:`duties.signing_barred`): :func:`release.decide_closing`
    decides; each closure is recorded on its own (a deviation action, its signature record and
    its audit entry), all or none."""
    release.check_closing_request(req.meaning, req.reason, req.deviation_ids)
    summ = lock_batch(db, batch_id)
    actor.require("deviation.review", summ.site_id)
    r = load_review(db, batch_id)
    devs = {d["deviation_id"]: d for d in r.deviations()}
    since = batch_start(r)
    who = release.Signer(
        user_id=actor.user_id,
        roles=frozenset(actor.roles()),
        administered_access=duties.administered_access(db, actor.user_id, since),
        batch_began=since,
    )
    release.decide_closing(batch_id, devs, r.operators, who, req)
    out = []
    for dev_id in req.deviation_ids:
        dev = devs[dev_id]
        covers = {
            "batch_id": batch_id,
            "deviation_id": dev_id,
            "step": dev["step"],
            "category": dev["category"],
            "severity": dev["severity"],
            "reason": dev["reason"],
            "raised_seq": dev["raised_seq"],
            "record_hash": r.record_hash,
        }
        a = DeviationAction(
            batch_id=batch_id, deviation_id=dev_id, action="close", text=req.reason,
            user_id=actor.user_id, at=req.at,
        )  # fmt: skip
        db.add(a)
        db.flush()
        sig = ClosureSignature(
            batch_id=batch_id, deviation_id=dev_id, action_id=a.id, user_id=actor.user_id,
            printed_name=actor.printed_name, meaning=release.CLOSED, reason=req.reason,
            record_hash=r.record_hash, covers=canonical(covers).decode(), signed_at=req.at,
        )  # fmt: skip
        db.add(sig)
        db.flush()
        audit.append(
            db,
            at=req.at,
            actor=actor.user_id,
            action="deviation.closed",
            object_type="deviation",
            object_id=f"{batch_id}/{dev_id}",
            old={"open": True},
            new={
                "open": False,
                "text": req.reason,
                "signature": sig.id,
                "printed_name": actor.printed_name,
                "meaning": release.CLOSED,
                "record_hash": r.record_hash,
                "together_with": [d for d in req.deviation_ids if d != dev_id],
            },
            reason=req.reason,
        )
        out.append((a, sig))
    return out


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
        administered_access=duties.administered_access(db, actor.user_id, since),
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
            # the record it covers, for what changed since (signatures.since_signature)
            "last_seq": r.summary.last_seq,
            "readings": r.summary.readings,
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
