"""The batch's documents, built one way for the API and the console: the batch report and the
certificate of analysis (PDF/A-2b, :mod:`server.reports`) and the FHIR batch-analysis bundle
(:mod:`server.fhir`), each from the batch's review record at one moment of the injected clock,
with the specification it was evaluated against and (for the report) the telemetry series."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy.orm import Session

from server import fhir, projections
from server.batches import summary
from server.quality import views
from server.quality.record import load_review


def report_pdf(db: Session, batch_id: str, at: datetime) -> bytes:
    r = load_review(db, batch_id)
    view = views.batch_view(db, r, at)
    channels = views.telemetry_json(r.projection.telemetry, series=True)
    limits = {
        n: projections.channel_limits(r.projection, n, c["unit"]) for n, c in channels.items()
    }
    from server import reports  # reportlab: only a PDF loads it (server start-up is shorter)

    return reports.batch_report_pdf(view, now=at, telemetry={"channels": channels}, limits=limits)


def coa_pdf(db: Session, batch_id: str, jurisdiction: str, at: datetime) -> bytes:
    from server import reports

    r = load_review(db, batch_id)
    return reports.coa_pdf(views.batch_view(db, r, at), jurisdiction, now=at, spec=r.spec)


def fhir_json(db: Session, batch_id: str, jurisdiction: str, at: datetime) -> bytes:
    r = load_review(db, batch_id)
    view = views.batch_view(db, r, at)
    return fhir.batch_bundle_json(view, jurisdiction, spec=r.spec, now=at)


def batch_start(db: Session, batch_id: str) -> datetime | None:
    """When the batch began (its ``batch.started`` event): the start of its review window for
    the separation-of-duties rules.  Raises 404 for an unknown batch."""
    state = projections.load(db, summary(db, batch_id)).state
    if state is None or not state.started_at:
        return None
    try:
        t = datetime.fromisoformat(state.started_at.replace("Z", "+00:00"))
    except ValueError:  # unreadable: the window is taken as all time (fail closed)
        return datetime.min.replace(tzinfo=UTC)
    return t if t.tzinfo else t.replace(tzinfo=UTC)
