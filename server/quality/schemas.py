"""Request and response bodies of the quality API (specifications, results, review, release,
out-of-specification cases)."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from ebr_core.vocab import Disposition, Meaning, OosState, ReviewState
from server.schemas import HASH, ID, NAME, Document, Ident, Reason


class SpecBody(BaseModel):
    content: dict[str, Any]
    reason: Reason


class ResultsBody(BaseModel):
    spec_id: Ident
    spec_version: str = Field(min_length=1, max_length=32)
    results: dict[str, Any]
    reason: Reason


class CommentBody(BaseModel):
    comment: Reason


class LinkBody(BaseModel):
    linked_to: Ident
    reason: Reason


class Linked(BaseModel):
    deviation_id: str
    linked_to: str
    link: int


class CloseBody(BaseModel):
    """A deviation closure is an e-signature: the signer's user id and password again, the
    meaning (``closed``) and the reason."""

    user_id: str = Field(max_length=ID)
    password: str
    # checked by the closure rules (server.quality.release), which name the allowed word
    meaning: str = Field(max_length=32)
    reason: Reason


class BulkCloseBody(CloseBody):
    """Several minor deviations closed with one e-signature (each closure recorded on its own)."""

    deviations: list[Ident] = Field(min_length=1, max_length=100)


class SignBody(BaseModel):
    user_id: str = Field(max_length=ID)
    password: str
    # checked against ebr_core.vocab.Meaning by the release rules, which name the allowed words
    meaning: str = Field(max_length=32)
    reason: Reason
    jurisdiction: str = Field(max_length=16)
    record_hash: str = Field(max_length=HASH)
    evaluation_hash: str = Field(max_length=HASH)


class OosBody(BaseModel):
    jurisdiction: str = Field(max_length=16)
    physician: str = Field(min_length=1, max_length=NAME)
    request: Reason


class StepBody(BaseModel):
    text: Reason


class SpecOut(BaseModel):
    spec_id: str
    version: str
    sha256: str
    published_by: str
    published_at: str | None


class SpecPublished(BaseModel):
    spec_id: str
    version: str
    sha256: str
    new: bool


class QueueItem(BaseModel):
    batch_id: str
    site_id: str
    unit_id: str
    coi: str | None
    completed_at: str | None
    events: int
    exceptions: int
    review_state: ReviewState


class Queue(BaseModel):
    total: int
    batches: list[QueueItem]


class BatchView(Document):
    """Everything a reviewer sees of one batch (:func:`server.quality.views.batch_view`)."""

    batch_id: str
    unit_id: str
    site_id: str
    review_state: ReviewState
    record_hash: str
    exceptions: dict[str, Any]
    timeline: list[dict[str, Any]]
    deviations: list[dict[str, Any]]
    cqa: dict[str, Any]
    qa_signatures: list[dict[str, Any]]
    dispositions: list[dict[str, Any]]
    oos_cases: list[dict[str, Any]]
    # what reached the record after the last QA signature (None: never signed)
    since_signature: dict[str, Any] | None = None


class Telemetry(BaseModel):
    batch_id: str
    readings: int
    channels: dict[str, Any]


class TelemetryWindow(BaseModel):
    """One channel between two times (the console's zoom): min/max buckets from the readings
    (``resolution`` ``readings``) or, for a window too wide to read, from the stored series
    (``stored``); the excursions the unit marked in it; the limits (None: the server holds none,
    ``limits_note`` says why)."""

    batch_id: str
    channel: str
    unit: str
    from_: str = Field(alias="from")
    to: str
    resolution: str
    readings: int
    bucket_s: int
    series: list[dict[str, Any]]
    excursions: list[dict[str, Any]]
    excursions_total: int
    limits: dict[str, Any] | None
    limits_note: str


class ResultsEntered(BaseModel):
    batch_id: str
    result_set: int


class Commented(BaseModel):
    deviation_id: str
    action: int


class Closed(BaseModel):
    deviation_id: str
    closed: bool
    action: int
    signature: int
    printed_name: str
    meaning: str
    signed_at: str
    record_hash: str


class BulkClosed(BaseModel):
    batch_id: str
    closures: list[Closed]


class Signed(BaseModel):
    signature: int
    printed_name: str
    meaning: Meaning
    signed_at: str
    jurisdiction: str
    disposition: Disposition | None


class Case(BaseModel):
    """An out-of-specification exceptional-release case."""

    id: int
    batch_id: str
    jurisdiction: str
    state: OosState
    physician: str
    request: str
    requested_by: str
    requested_at: str | None
    risk_evaluation: str | None
    evaluated_by: str | None
    evaluated_at: str | None
    physician_acceptance: str | None
    accepted_at: str | None
    released_at: str | None
    notification_due_at: str | None
    notified_at: str | None
    notification_reference: str | None
    notification_overdue: bool
