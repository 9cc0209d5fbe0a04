"""The quality API: specifications, the review queue and batch view, results, deviations, QA
e-signatures and dispositions, out-of-specification cases, and the batch's reports (PDF and
FHIR, documented non-JSON responses)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response
from sqlalchemy import select

from ebr_core.errors import SpecificationError
from server import fhir as fhir_export
from server import projections, text
from server.batches import at_sites, summary
from server.db import BatchSummary, OosCase, SpecRow
from server.errors import Forbidden, Unprocessable
from server.people import duties
from server.people.auth import DB, Access, AccessDep, Now, Scope, require
from server.people.service import Principal
from server.quality import documents, links, oos, release, views
from server.quality import review as service
from server.quality.record import load_review, load_spec
from server.quality.schemas import (
    BatchView,
    BulkCloseBody,
    BulkClosed,
    Case,
    CloseBody,
    Closed,
    CommentBody,
    Commented,
    LinkBody,
    Linked,
    OosBody,
    Queue,
    ResultsBody,
    ResultsEntered,
    SignBody,
    Signed,
    SpecBody,
    SpecOut,
    SpecPublished,
    StepBody,
    Telemetry,
    TelemetryWindow,
)
from server.schemas import MAX_ID, PathId

router = APIRouter(tags=["quality"])

AnyPerson = Annotated[Principal, Depends(require(None, Scope.SELF))]
PublishSpec = Annotated[Principal, Depends(require("spec.publish", Scope.ORG))]
ReadQueue = Annotated[Principal, Depends(require("queue.read", Scope.SITES))]
ReadBatch = Annotated[Principal, Depends(require("batch.read", Scope.BATCH))]
WriteResults = Annotated[Principal, Depends(require("results.write", Scope.BATCH))]
ReviewDeviation = Annotated[Principal, Depends(require("deviation.review", Scope.BATCH))]
SignReview = Annotated[Principal, Depends(require("sign.review", Scope.BATCH))]
ReleaseBatch = Annotated[Principal, Depends(require("release", Scope.BATCH))]
ReleaseCase = Annotated[Principal, Depends(require("release", Scope.OOS))]
ReadReport = Annotated[Principal, Depends(require("report.read", Scope.BATCH))]

Jurisdiction = Annotated[str, Query(max_length=16)]


def _document(media_type: str, what: str) -> dict[int | str, dict[str, Any]]:
    return {200: {"content": {media_type: {}}, "description": what}}


# -- specifications ---------------------------------------------------------------------------


@router.get("/v1/specs", response_model=list[SpecOut])
def list_specs(who: AnyPerson, db: DB) -> Any:
    return [
        {
            "spec_id": r.spec_id,
            "version": r.version,
            "sha256": r.content_hash,
            "published_by": r.published_by,
            "published_at": text.iso(r.published_at),
        }
        for r in db.scalars(select(SpecRow).order_by(SpecRow.spec_id, SpecRow.version))
    ]


@router.post("/v1/specs", status_code=201, response_model=SpecPublished)
def publish_spec(body: SpecBody, who: PublishSpec, db: DB, now: Now) -> Any:
    row, new = service.publish_spec(db, who, at=now(), content=body.content, reason=body.reason)
    return {"spec_id": row.spec_id, "version": row.version, "sha256": row.content_hash, "new": new}


# -- review -----------------------------------------------------------------------------------


@router.get("/v1/review/queue", response_model=Queue)
def review_queue(
    who: ReadQueue,
    db: DB,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
    offset: Annotated[int, Query(ge=0, le=MAX_ID)] = 0,
) -> Any:
    return views.queue(db, who.sites("queue.read"), limit=limit, offset=offset)


@router.get("/v1/batches/{batch_id}", response_model=BatchView)
def batch_view(batch_id: PathId, who: ReadBatch, db: DB, now: Now) -> Any:
    return views.batch_view(db, load_review(db, batch_id), now())


@router.get("/v1/batches/{batch_id}/telemetry", response_model=Telemetry)
def batch_telemetry(batch_id: PathId, who: ReadBatch, db: DB) -> Any:
    """Each channel's summary and its min/max series for plots (from the projection), with the
    limits the record holds for it (``limits``; None, and ``limits_note`` says why)."""
    summ = summary(db, batch_id)
    proj = projections.load(db, summ)
    channels = views.telemetry_json(proj.telemetry, series=True)
    for name, ch in channels.items():
        ch.update(projections.limits_json(proj, name, ch["unit"]))
    return {"batch_id": batch_id, "readings": summ.readings, "channels": channels}


@router.get(
    "/v1/batches/{batch_id}/telemetry/{channel}",
    response_model=TelemetryWindow,
    response_model_by_alias=True,
)
def telemetry_window(
    batch_id: PathId,
    channel: Annotated[str, Path(min_length=1, max_length=128)],
    who: ReadBatch,
    db: DB,
    from_: Annotated[str, Query(alias="from", max_length=views.MAX_TIME)],
    to: Annotated[str, Query(max_length=views.MAX_TIME)],
) -> Any:
    """One channel between two times (ISO 8601; UTC without an offset) at the finest resolution
    the window allows: from the readings when at most 10,000 lie in it, else the stored series."""
    t_from, t_to = views.window_time(from_, "from"), views.window_time(to, "to")
    summ = summary(db, batch_id)
    proj = projections.load(db, summ)
    w = views.telemetry_window(db, summ, channel, t_from, t_to, proj)
    return w | projections.limits_json(proj, channel, w["unit"])  # the limits the record holds


@router.post("/v1/batches/{batch_id}/results", status_code=201, response_model=ResultsEntered)
def enter_results(batch_id: PathId, body: ResultsBody, who: WriteResults, db: DB, now: Now) -> Any:
    rs = service.enter_results(
        db, who, at=now(), batch_id=batch_id, spec_id=body.spec_id,
        spec_version=body.spec_version, results=body.results, reason=body.reason,
    )  # fmt: skip
    return {"batch_id": batch_id, "result_set": rs.id}


@router.post(
    "/v1/batches/{batch_id}/deviations/{deviation_id}/comments",
    status_code=201,
    response_model=Commented,
)
def comment(
    batch_id: PathId,
    deviation_id: PathId,
    body: CommentBody,
    who: ReviewDeviation,
    db: DB,
    now: Now,
) -> Any:
    a = service.deviation_action(
        db, who, at=now(), batch_id=batch_id, deviation_id=deviation_id, action="comment",
        text_=body.comment,
    )  # fmt: skip
    return {"deviation_id": deviation_id, "action": a.id}


@router.post(
    "/v1/batches/{batch_id}/deviations/{deviation_id}/links",
    status_code=201,
    response_model=Linked,
)
def link(
    batch_id: PathId,
    deviation_id: PathId,
    body: LinkBody,
    who: ReviewDeviation,
    db: DB,
    now: Now,
) -> Any:
    """Link a deviation to a related one of the same batch, with a reason."""
    x = links.link_deviations(
        db, who, at=now(), batch_id=batch_id, deviation_id=deviation_id,
        linked_to=body.linked_to, reason=body.reason,
    )  # fmt: skip
    return {"deviation_id": deviation_id, "linked_to": x.linked_to, "link": x.id}


def close_signed(
    a: Access,
    who: Principal,
    *,
    batch_id: str,
    deviation_ids: list[str],
    user_id: str,
    password: str,
    meaning: str,
    reason: str,
) -> list[dict[str, Any]]:
    """Close deviations with one e-signature, as the API and the console do it: the signed-in
    person's own user id, the request's words checked, the permission at the batch's site and
    the batch's existence before a password is read; the password again
    (:meth:`Access.check_password`, purpose ``signature``: attempt slots, lockout, audit);
    separation of duties (:func:`duties.signing_barred`); then :func:`service.close_deviations`
    records each closure, all or none, in one transaction."""
    if user_id.lower() != who.user_id.lower():
        raise Forbidden(
            f"signed in as {who.user_id}: an e-signature is given by the signed-in person "
            "with their own user id and password"
        )
    release.check_closing_request(meaning, reason, deviation_ids)
    with a.sessions() as s:  # what the request gets wrong is refused before a password is read
        who.require("deviation.review", summary(s, batch_id).site_id)
        since = documents.batch_start(s, batch_id)
        devs = {d["deviation_id"]: d for d in load_review(s, batch_id).deviations()}
        release.check_deviations(batch_id, devs, deviation_ids)
    a.check_password(who.user_id, password, purpose="signature")
    with a.sessions() as s:
        at = a.clock()
        if since is not None and (why := duties.signing_barred(s, who.user_id, since)):
            raise Forbidden(why)
        req = release.Closing(meaning, reason, tuple(deviation_ids), at=at)
        done = service.close_deviations(s, who, batch_id=batch_id, req=req)
        out = [
            {"deviation_id": act.deviation_id, "closed": True, "action": act.id,
             "signature": sig.id, "printed_name": sig.printed_name, "meaning": sig.meaning,
             "signed_at": text.iso(sig.signed_at), "record_hash": sig.record_hash}
            for act, sig in done
        ]  # fmt: skip
        s.commit()
    return out


@router.post("/v1/batches/{batch_id}/deviations/{deviation_id}/close", response_model=Closed)
def close(
    batch_id: PathId, deviation_id: PathId, body: CloseBody, who: ReviewDeviation, a: AccessDep
) -> Any:
    """Close one deviation with an e-signature (meaning ``closed``, a reason, the password)."""
    (out,) = close_signed(
        a, who, batch_id=batch_id, deviation_ids=[deviation_id], user_id=body.user_id,
        password=body.password, meaning=body.meaning, reason=body.reason,
    )  # fmt: skip
    return out


@router.post("/v1/batches/{batch_id}/deviations/close", response_model=BulkClosed)
def close_many(batch_id: PathId, body: BulkCloseBody, who: ReviewDeviation, a: AccessDep) -> Any:
    """Close several deviations with one e-signature, refused unless every one is minor; each
    closure is recorded on its own (its action, its signature record, its audit entry)."""
    closures = close_signed(
        a, who, batch_id=batch_id, deviation_ids=list(body.deviations), user_id=body.user_id,
        password=body.password, meaning=body.meaning, reason=body.reason,
    )  # fmt: skip
    return {"batch_id": batch_id, "closures": closures}


@router.post("/v1/batches/{batch_id}/signatures", status_code=201, response_model=Signed)
def sign(batch_id: PathId, body: SignBody, who: SignReview, db: DB, a: AccessDep, now: Now) -> Any:
    if body.user_id.lower() != who.user_id.lower():
        raise Forbidden(
            f"signed in as {who.user_id}: an e-signature is given by the signed-in person "
            "with their own user id and password"
        )
    since = documents.batch_start(db, batch_id)  # 404 before counting a password attempt
    db.rollback()  # argon2 runs in no transaction
    a.check_password(who.user_id, body.password, purpose="signature")
    at = now()
    if since is not None:
        why = duties.signing_barred(db, who.user_id, since)
        if why is not None:
            raise Forbidden(why)
    req = release.Signing(
        body.meaning, body.reason, body.jurisdiction, body.record_hash, body.evaluation_hash,
        at=at,
    )  # fmt: skip
    sig, disp = service.sign(db, who, batch_id=batch_id, req=req)
    return {
        "signature": sig.id,
        "printed_name": sig.printed_name,
        "meaning": sig.meaning,
        "signed_at": sig.signed_at.isoformat(),
        "jurisdiction": sig.jurisdiction,
        "disposition": None if disp is None else disp.disposition,
    }


# -- out-of-specification exceptional release -------------------------------------------------


@router.post("/v1/batches/{batch_id}/oos", status_code=201, response_model=Case)
def open_oos(batch_id: PathId, body: OosBody, who: ReleaseBatch, db: DB, now: Now) -> Any:
    c = oos.open_oos(
        db, who, at=now(), batch_id=batch_id, jurisdiction=body.jurisdiction,
        physician=body.physician, request_text=body.request,
    )  # fmt: skip
    return views.case_json(c, now())


@router.post("/v1/oos/{case_id}/{step}", response_model=Case)
def oos_step(
    case_id: Annotated[int, Path(ge=1, le=MAX_ID)],
    step: Annotated[str, Path(max_length=32)],
    body: StepBody,
    who: ReleaseCase,
    db: DB,
    now: Now,
) -> Any:
    c = oos.oos_step(db, who, at=now(), case_id=case_id, step=step, text_=body.text)
    return views.case_json(c, now())


@router.get("/v1/oos", response_model=list[Case])
def list_oos(who: ReadQueue, db: DB, now: Now, overdue: bool = False) -> Any:
    q = select(OosCase).join(BatchSummary, BatchSummary.batch_id == OosCase.batch_id)
    q = at_sites(q, BatchSummary.site_id, who.sites("queue.read"))
    cases = [views.case_json(c, now()) for c in db.scalars(q.order_by(OosCase.id))]
    return [c for c in cases if not overdue or c["notification_overdue"]]


# -- reports ----------------------------------------------------------------------------------


@router.get(
    "/v1/batches/{batch_id}/report.pdf",
    response_class=Response,
    responses=_document("application/pdf", "the batch report (PDF)"),
)
def report_pdf(batch_id: PathId, who: ReadReport, db: DB, now: Now) -> Response:
    return Response(documents.report_pdf(db, batch_id, now()), media_type="application/pdf")


@router.get(
    "/v1/batches/{batch_id}/coa.pdf",
    response_class=Response,
    responses=_document("application/pdf", "the certificate of analysis (PDF)"),
)
def coa_pdf(
    batch_id: PathId, jurisdiction: Jurisdiction, who: ReadReport, db: DB, now: Now
) -> Response:
    body = documents.coa_pdf(db, batch_id, jurisdiction, now())
    return Response(body, media_type="application/pdf")


@router.get(
    "/v1/batches/{batch_id}/fhir",
    response_class=Response,
    responses=_document("application/fhir+json", "the batch as a FHIR R5 Bundle"),
)
def fhir(
    batch_id: PathId, jurisdiction: Jurisdiction, who: ReadReport, db: DB, now: Now
) -> Response:
    body = documents.fhir_json(db, batch_id, jurisdiction, now())
    return Response(body, media_type="application/fhir+json")


@router.get(
    "/v1/specs/{spec_id}/{version}/fhir",
    response_class=Response,
    responses=_document(
        "application/fhir+json",
        "the specification as an HL7 PQ specification (PlanDefinition with ObservationDefinitions)",
    ),
)
def spec_fhir(
    spec_id: PathId,
    version: Annotated[str, Path(min_length=1, max_length=32)],
    who: AnyPerson,
    db: DB,
    now: Now,
    jurisdiction: Annotated[list[str] | None, Query(max_length=16)] = None,
) -> Response:
    _, spec = load_spec(db, spec_id, version)
    try:
        body = fhir_export.spec_bundle_json(spec, now=now(), jurisdictions=jurisdiction or None)
    except SpecificationError as e:
        raise Unprocessable(str(e)) from e
    return Response(body, media_type="application/fhir+json")
