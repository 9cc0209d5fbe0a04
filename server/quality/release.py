"""The release rules, pure: what a QA e-signature may decide on a batch, given what is known.

:func:`decide` takes the batch as reviewed (its record hash, its evaluations, its open
deviations, its operators and event times), the dispositions and signatures already recorded,
the signer and the signing request, and returns a :class:`Decision` or raises the refusal
(:class:`~server.errors.Forbidden`, :class:`~server.errors.Conflict`,
:class:`~server.errors.Unprocessable`) with the message the client sees.  No database, no clock,
no password: the caller (:func:`server.quality.review.sign`) gathers the inputs under the
batch's lock, checks the signer's permission at the batch's site, and records what this decides.

The rules, in the order they are applied (the first that fails is the one reported):

1. the meaning is one of :class:`~ebr_core.vocab.Meaning`; the reason is not blank;
2. an administrator does not approve, release or reject (separation of duties);
3. no one who signed steps of the batch as an operator signs its review or disposition;
4. no one who administered people's access since the batch began signs it;
5. a signature is never dated before an event it signs, and every event time must be real;
6. there are results, the jurisdiction is one the specification covers, and the record and
   evaluation are the ones the signer reviewed (their hashes);
7. a final disposition (released, exceptional release, rejected) is not signed again;
8. approval and release need every deviation closed and a review signature by another person
   on the current record and evaluation;
9. release: releasable → released; conditional → conditional release (not twice), with the
   pending attributes; incomplete → refused, naming what is due; not releasable → exceptional
   release only with an accepted out-of-specification case; rejection → rejected.

:func:`still_applies` says whether a signature made earlier applies to the batch as it is: on
the record it signed, or on an older record followed only by travel (hand-offs, receipt,
infusion, the shipper's log), which leaves the decision standing.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from ebr_core.spec.evaluate import Evaluation
from ebr_core.vocab import (
    FINAL_DISPOSITIONS,
    TRAVEL_KINDS,
    Disposition,
    Meaning,
    Readiness,
    ReviewState,
    Timing,
)
from ebr_core.vocab import Verdict as V
from server.errors import Conflict, Forbidden, NotFound, Unprocessable
from server.text import aware, iso, need_reason


@dataclass(frozen=True)
class Signing:
    """What the signer asks for."""

    meaning: str
    reason: str
    jurisdiction: str
    record_hash: str
    evaluation_hash: str
    at: datetime  # the server's time of the signature


@dataclass(frozen=True)
class Signer:
    user_id: str
    roles: frozenset[str]  # every role held, at any site
    administered_access: bool  # set a password, granted, revoked or changed a status since
    batch_began: datetime  # the start of the batch's review window (for the message)


@dataclass(frozen=True)
class Batch:
    """The batch as the signer reviewed it (from its projection and results)."""

    batch_id: str
    record_hash: str
    has_results: bool
    evaluations: Mapping[str, Evaluation]  # per jurisdiction
    open_deviations: Sequence[str]
    operators: Collection[str]  # user ids that signed its steps
    event_times: Sequence[tuple[str, object]]  # (what, recorded time as stored)
    review_state: str


@dataclass(frozen=True)
class PriorSignature:
    user_id: str
    jurisdiction: str
    meaning: str
    record_hash: str
    evaluation_hash: str


@dataclass(frozen=True)
class Decision:
    """What the signature records: the disposition (None for a review signature or an approval),
    the attributes still pending for a conditional release, whether it releases the accepted
    out-of-specification case, and the batch's new review state (None: unchanged)."""

    evaluation_hash: str
    disposition: Disposition | None
    pending: tuple[str, ...]
    releases_case: bool
    review_state: ReviewState | None


def check_request(meaning: str, reason: str) -> Meaning:
    """Rule 1, applied before anything is read."""
    try:
        m = Meaning(meaning)
    except ValueError:
        raise Unprocessable(f"meaning {meaning!r} is not one of {', '.join(Meaning)}") from None
    need_reason(reason, "signature reason")
    return m


def decide(
    batch: Batch,
    prior: Mapping[str, str],
    signatures: Sequence[PriorSignature],
    who: Signer,
    req: Signing,
    *,
    accepted_case: bool,
) -> Decision:
    """The decision of one QA e-signature, or the refusal.  ``prior``: the latest disposition
    per jurisdiction; ``signatures``: the batch's signatures so far; ``accepted_case``: an
    out-of-specification case for this batch and jurisdiction is accepted."""
    meaning = check_request(req.meaning, req.reason)
    decides = meaning != Meaning.REVIEWED
    if decides and "admin" in who.roles:
        raise Forbidden(
            f"{who.user_id} holds the admin role: an administrator cannot approve, release or "
            "reject a batch (separation of duties)"
        )
    if who.user_id in batch.operators:
        raise Forbidden(
            f"{who.user_id} signed steps of batch {batch.batch_id} as an operator and cannot "
            "sign its QA review or disposition (separation of duties)"
        )
    if who.administered_access:
        raise Forbidden(
            f"{who.user_id} administered people's access (a password, a role grant or revoke, "
            f"or a status change) since {who.batch_began.isoformat()}, when batch "
            f"{batch.batch_id} began, and cannot sign it (separation of duties: whoever "
            "administers access during a batch's review window does not sign that batch)"
        )
    not_before_events(batch.batch_id, batch.event_times, req.at)
    if not batch.has_results:
        raise Conflict(f"batch {batch.batch_id} has no results entered yet: nothing to evaluate")
    ev = batch.evaluations.get(req.jurisdiction)
    if ev is None:
        raise Unprocessable(
            f"jurisdiction {req.jurisdiction!r} is not covered by the specification; it covers "
            f"{', '.join(sorted(batch.evaluations))}"
        )
    ev_hash = ev.hash()
    if req.record_hash != batch.record_hash or req.evaluation_hash != ev_hash:
        raise Conflict(
            "the record or its evaluation changed since it was reviewed: reload the batch and "
            f"sign the current state (record {batch.record_hash}, evaluation {ev_hash})"
        )
    prev = prior.get(req.jurisdiction)
    if decides and prev is not None and prev in FINAL_DISPOSITIONS:
        raise Conflict(
            f"batch {batch.batch_id} is already {prev} for {req.jurisdiction}; a final "
            "disposition is not signed again"
        )
    if meaning in (Meaning.RELEASED, Meaning.APPROVED):
        if batch.open_deviations:
            raise Conflict(
                f"open deviations must be closed first: {', '.join(batch.open_deviations)}"
            )
        reviewers = {
            s.user_id
            for s in signatures
            if s.jurisdiction == req.jurisdiction
            and s.meaning == Meaning.REVIEWED
            and s.record_hash == batch.record_hash
            and s.evaluation_hash == ev_hash
        } - {who.user_id}
        if not reviewers:
            raise Conflict(
                f"a QA review signature by another person on the current record is required "
                f"before {meaning} ({req.jurisdiction})"
            )
    disposition, pending = _disposition(batch.batch_id, meaning, ev, prev, accepted_case)
    return Decision(
        evaluation_hash=ev_hash,
        disposition=disposition,
        pending=pending,
        releases_case=disposition == Disposition.EXCEPTIONAL_RELEASE,
        review_state=_review_state(batch, prior, req.jurisdiction, disposition),
    )


def _disposition(
    batch_id: str, meaning: Meaning, ev: Evaluation, prev: str | None, accepted_case: bool
) -> tuple[Disposition | None, tuple[str, ...]]:
    j = ev.jurisdiction
    if meaning == Meaning.REJECTED:
        return Disposition.REJECTED, ()
    if meaning != Meaning.RELEASED:
        return None, ()
    if ev.disposition == Readiness.RELEASABLE:
        return Disposition.RELEASED, ()
    if ev.disposition == Readiness.CONDITIONAL:
        if prev == Disposition.CONDITIONAL_RELEASE:
            raise Conflict(
                f"batch {batch_id} is already conditionally released for {j}; "
                "the final release is signed when the pending results are final"
            )
        pending = tuple(v.attribute for v in ev.verdicts if v.status == V.PENDING)
        return Disposition.CONDITIONAL_RELEASE, pending
    if ev.disposition == Readiness.INCOMPLETE:
        missing = [
            v.attribute
            for v in ev.verdicts
            if v.status == V.MISSING
            or (v.status == V.PENDING and v.timing == Timing.BEFORE_RELEASE)
        ]
        raise Conflict(
            f"cannot release in {j}: results due before release are missing "
            f"or pending: {', '.join(missing)}"
        )
    if not accepted_case:
        raise Conflict(
            f"batch {batch_id} is out of specification in {j} "
            f"({', '.join(v.attribute for v in ev.failed())}): release needs the "
            "exceptional-release workflow (physician request, risk evaluation, physician "
            "acceptance) first"
        )
    return Disposition.EXCEPTIONAL_RELEASE, ()


def _review_state(
    batch: Batch, prior: Mapping[str, str], jurisdiction: str, disposition: Disposition | None
) -> ReviewState | None:
    if disposition is not None:
        decided = set(prior) | {jurisdiction}
        return ReviewState.DECIDED if decided >= set(batch.evaluations) else ReviewState.IN_REVIEW
    if batch.review_state == ReviewState.CHANGED and all(
        prior.get(j) in FINAL_DISPOSITIONS for j in batch.evaluations
    ):
        # Changed after every jurisdiction's final disposition (the hand-offs and the infusion
        # synced after the release): nothing is left to decide, so the review that has seen
        # the change takes the batch out of the queue instead of leaving it in review forever.
        return ReviewState.DECIDED
    if batch.review_state in (ReviewState.AWAITING_REVIEW, ReviewState.CHANGED):
        return ReviewState.IN_REVIEW
    return None


def recorded_time(t: object) -> datetime | None:
    """A recorded time (ISO 8601) as an aware datetime, or None if it is not a real time."""
    if not isinstance(t, str):
        return None
    try:
        d = datetime.fromisoformat(t)
    except ValueError:
        return None
    return d if d.tzinfo else d.replace(tzinfo=UTC)


def not_before_events(
    batch_id: str, event_times: Sequence[tuple[str, object]], at: datetime
) -> None:
    """Refuse a signature dated before an event it signs (the unit's clock ahead of the
    server's): a signature can never precede what it signs."""
    latest: tuple[datetime, str] | None = None
    for what, raw in event_times:
        t = recorded_time(raw)
        if t is None:
            raise Conflict(
                f"batch {batch_id}: the {what} has no valid recorded time ({raw!r}); a "
                "signature cannot be shown to follow it: investigate the unit's clock and record"
            )
        if latest is None or t > latest[0]:
            latest = (t, what)
    if latest is not None and aware(at) < latest[0]:
        raise Conflict(
            f"cannot sign batch {batch_id} at {iso(at)}: its {latest[1]} is recorded at "
            f"{latest[0].isoformat()}, later than this signature. The unit's clock is ahead of "
            "the server's; a signature can never be earlier than the events it signs: correct "
            "the unit's clock, investigate, and sign after the batch's last event time"
        )


# -- deviation closures -------------------------------------------------------------------------

CLOSED = "closed"  # the meaning of a deviation closure's e-signature (21 CFR 11.50)
BULK_MAX = 100  # deviations closed with one signature


@dataclass(frozen=True)
class Closing:
    """What a QA person asks for when closing deviations with one e-signature."""

    meaning: str
    reason: str
    deviation_ids: tuple[str, ...]
    at: datetime  # the server's time of the signature


def check_closing_request(meaning: str, reason: str, deviation_ids: Sequence[str]) -> None:
    """What is refused before anything is read: the meaning, the reason, the list."""
    if meaning != CLOSED:
        raise Unprocessable(f"meaning {meaning[:32]!r}: a deviation closure is signed {CLOSED!r}")
    need_reason(reason, "closure reason")
    if not deviation_ids:
        raise Unprocessable("deviations: name at least one deviation to close")
    if len(deviation_ids) > BULK_MAX:
        raise Unprocessable(f"deviations: at most {BULK_MAX} closed with one signature")
    if len(set(deviation_ids)) != len(deviation_ids):
        raise Unprocessable("deviations: a deviation is named more than once")


def decide_closing(
    batch_id: str,
    deviations: Mapping[str, Mapping[str, object]],
    operators: Collection[str],
    who: Signer,
    req: Closing,
) -> None:
    """Refuse the closure, or return: the signer's duties (rules 3 and 4 of the signatures),
    then :func:`check_deviations`.  ``deviations``: the batch's deviations by id, each with
    ``open`` and ``severity``."""
    check_closing_request(req.meaning, req.reason, req.deviation_ids)
    if who.user_id in operators:
        raise Forbidden(
            f"{who.user_id} signed steps of batch {batch_id} as an operator and cannot close "
            "its deviations (separation of duties)"
        )
    if who.administered_access:
        raise Forbidden(
            f"{who.user_id} administered people's access since {who.batch_began.isoformat()}, "
            f"when batch {batch_id} began, and cannot sign its deviations' closure "
            "(separation of duties)"
        )
    check_deviations(batch_id, deviations, req.deviation_ids)


def check_deviations(
    batch_id: str, deviations: Mapping[str, Mapping[str, object]], ids: Sequence[str]
) -> None:
    """Each deviation known and open, and several together only if every one is minor (a major
    or critical deviation is assessed, and signed, on its own)."""
    unknown = [d for d in ids if d not in deviations]
    if unknown:
        raise NotFound(f"batch {batch_id} has no deviation {', '.join(unknown)}")
    shut = [d for d in ids if not deviations[d].get("open")]
    if shut:
        raise Conflict(f"deviation {', '.join(shut)} is already closed")
    if len(ids) > 1:
        not_minor = [
            f"{d} ({deviations[d].get('severity') or 'no severity'})"
            for d in ids
            if deviations[d].get("severity") != "minor"
        ]
        if not_minor:
            raise Unprocessable(
                "only minor deviations are closed together with one signature; "
                f"{', '.join(not_minor)} must be closed on its own"
            )


# -- whether a signature still applies --------------------------------------------------------


@dataclass(frozen=True)
class Since:
    """What a batch's record gained after the record a signature covered.

    ``last_seq`` and ``readings`` are the signed record's event head and readings (None for a
    signature made before the server recorded them); ``after`` is the kind of each step event
    the batch holds after ``last_seq``; ``readings_now`` counts the batch's readings today;
    ``qa_changes`` says whether results, deviation actions or links were recorded at or after
    the signature's time (server-side changes the record hash covers)."""

    last_seq: int | None
    readings: int | None
    after: Sequence[str]
    readings_now: int
    qa_changes: bool


def still_applies(
    signed_record: str,
    signed_evaluation: str,
    record_hash: str,
    evaluation_hash: str | None,
    since: Since,
) -> int | None:
    """Whether a QA signature applies to the batch as it is: ``0`` when the record and
    evaluation are the ones it signed; ``n > 0`` when the evaluation is unchanged and the record
    gained only ``n`` travel events (:data:`~ebr_core.vocab.TRAVEL_KINDS`: hand-offs, receipt,
    infusion, the shipper's log) after the record it signed, so the decision stands for the
    record it covered; ``None`` when it no longer applies (anything else was added, or what it
    covered is not known).  The record hash binds every event: this never claims a signature
    covers the travel events, only that nothing QA judged has changed since."""
    if evaluation_hash is None or signed_evaluation != evaluation_hash:
        return None
    if signed_record == record_hash:
        return 0
    if since.last_seq is None or since.readings is None or since.qa_changes:
        return None
    if since.readings_now != since.readings or not since.after:
        return None
    if any(k not in TRAVEL_KINDS for k in since.after):
        return None
    return len(since.after)
