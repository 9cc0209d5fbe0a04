"""The project's vocabularies: one ``StrEnum`` per closed set of words, one meaning per word.

A member compares equal to its string (``Verdict.PASS == "pass"``) and serialises as it, so
values already stored in databases, ledgers and JSON documents read back unchanged, and code
can adopt a vocabulary one comparison at a time.

Two vocabularies are easy to confuse, and are kept apart on purpose:

- :class:`Readiness` is what an *evaluation* of results against a specification concludes
  (the disposition *candidate*, carried under the key ``disposition`` of an evaluation's JSON):
  ``conditional`` means "only after-release results are pending, so it can be released on that
  condition".
- :class:`Disposition` is what *QA signed* and the server stores: ``conditional_release`` means
  "released while after-release results are pending".

So ``conditional`` is only ever a readiness and ``conditional_release`` only ever a disposition.

This module owns the words, not the rules that move between them (those live with the code
that applies them: the fold in :mod:`ebr_core.batch`, the evaluation in
:mod:`ebr_core.spec.evaluate`, the release rules on the server).
"""

from __future__ import annotations

from enum import StrEnum


class Verdict(StrEnum):
    """One attribute's result judged against its limit."""

    PASS = "pass"  # noqa: S105 (a verdict, not a password)
    FAIL = "fail"
    PENDING = "pending"  # the result is not in yet
    MISSING = "missing"  # no entry at all for the attribute


class ResultStatus(StrEnum):
    """The status a laboratory gives a result."""

    FINAL = "final"
    PENDING = "pending"
    NEGATIVE_TO_DATE = "negative-to-date"  # e.g. sterility: no growth so far


class Timing(StrEnum):
    """When an attribute's result is due, relative to release."""

    BEFORE_RELEASE = "before_release"
    AFTER_RELEASE = "after_release"


class Readiness(StrEnum):
    """What an evaluation concludes about releasing a batch in one jurisdiction."""

    RELEASABLE = "releasable"
    CONDITIONAL = "conditional"  # only after-release results pending
    INCOMPLETE = "incomplete"  # something missing, or pending while due before release
    NOT_RELEASABLE = "not_releasable"  # a result fails


class Disposition(StrEnum):
    """The decision QA signed for a batch in one jurisdiction (stored in ``dispositions``)."""

    RELEASED = "released"
    CONDITIONAL_RELEASE = "conditional_release"
    EXCEPTIONAL_RELEASE = "exceptional_release"  # out of specification, after the OOS workflow
    REJECTED = "rejected"


# A final disposition is not signed again (a conditional release can still become a release).
FINAL_DISPOSITIONS = frozenset(
    {Disposition.RELEASED, Disposition.EXCEPTIONAL_RELEASE, Disposition.REJECTED}
)


class Meaning(StrEnum):
    """The meaning of a QA e-signature (21 CFR 11.50: the meaning is part of the signature)."""

    REVIEWED = "reviewed"
    APPROVED = "approved"
    RELEASED = "released"
    REJECTED = "rejected"


class ReviewState(StrEnum):
    """A batch's place in the QA review queue."""

    OPEN = "open"  # still running on its unit
    AWAITING_REVIEW = "awaiting_review"  # completed, nobody has looked yet
    IN_REVIEW = "in_review"
    DECIDED = "decided"
    CHANGED = "changed"  # something arrived after review began or after the decision


class BatchStatus(StrEnum):
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


class OosState(StrEnum):
    """The out-of-specification exceptional-release workflow, in order."""

    REQUESTED = "requested"
    EVALUATED = "evaluated"
    ACCEPTED = "accepted"
    RELEASED = "released"
    NOTIFIED = "notified"


class Role(StrEnum):
    OPERATOR = "operator"
    QA_REVIEWER = "qa_reviewer"
    QA_APPROVER = "qa_approver"
    ADMIN = "admin"
    AUDITOR = "auditor"


class PersonStatus(StrEnum):
    ACTIVE = "active"
    LOCKED = "locked"
    DISABLED = "disabled"


class UnitStatus(StrEnum):
    ACTIVE = "active"
    REVOKED = "revoked"


class KeyStatus(StrEnum):
    """A server signing key's status."""

    ACTIVE = "active"
    RETIRED = "retired"
    REVOKED = "revoked"


class CustodyStep(StrEnum):
    """A chain-of-identity step the server records (``custody_events.kind``)."""

    HANDOFF = "handoff"
    RECEIVED = "received"
    INFUSED = "infused"
    REFUSED = "refused"


class DeviationActionKind(StrEnum):
    """What QA does to a deviation on the server."""

    COMMENT = "comment"
    CLOSE = "close"


class EventKind(StrEnum):
    """The kinds of events a ledger carries today (dotted lower-case words).

    The record format accepts any dotted lower-case kind (:mod:`ebr_core.record`), so a unit
    newer than this list is not refused for a kind it does not name; these are the kinds the
    code in this repository writes and reads.
    """

    BATCH_STARTED = "batch.started"
    BATCH_COMPLETED = "batch.completed"
    STEP_COMPLETED = "step.completed"
    SCAN_ACCEPTED = "scan.accepted"
    SCAN_REJECTED = "scan.rejected"
    VALUE_RECORDED = "value.recorded"
    READING_RECORDED = "reading.recorded"
    READING_REFUSED = "reading.refused"
    SIGNATURE_APPLIED = "signature.applied"
    SIGNATURE_FAILED = "signature.failed"
    DEVIATION_RAISED = "deviation.raised"
    DEVIATION_COMMENTED = "deviation.commented"
    DEVIATION_LINKED = "deviation.linked"
    DEVIATION_CLOSED = "deviation.closed"  # server-side only
    ALARM_RAISED = "alarm.raised"
    CORRECTION_RECORDED = "correction.recorded"
    CLOCK_JUMPED = "clock.jumped"
    CUSTODY_TRANSFERRED = "custody.transferred"
    CUSTODY_HANDOFF = "custody.handoff"
    CUSTODY_RECEIVED = "custody.received"
    CUSTODY_INFUSED = "custody.infused"
    CUSTODY_REFUSED = "custody.refused"
    SHIPPING_LOG = "shipping.log"
    LABEL_PRINTED = "label.printed"
    LABEL_APPLIED = "label.applied"
    LABEL_DESTROYED = "label.destroyed"
    LABEL_RECONCILED = "label.reconciled"
    # The unit caught the server's transparency log misbehaving (a rewound or forked log, a
    # proof that fails or is refused): ``failure``, the trusted and offered tree sizes and
    # roots, the offending signed checkpoint as ``evidence`` (edge.logwatch).  A unit kind.
    SECURITY_ALERT = "security.alert"


TRAVEL_KINDS = frozenset(
    {
        EventKind.CUSTODY_TRANSFERRED,
        EventKind.CUSTODY_HANDOFF,
        EventKind.CUSTODY_RECEIVED,
        EventKind.CUSTODY_INFUSED,
        EventKind.SHIPPING_LOG,
    }
)
"""The kinds that record where a product went, not what it is: hand-offs, receipt, infusion
and the shipper's temperature log.  Recorded after a release (the product travels once it is
released), they leave the QA decision standing: a signature still applies to the record it
signed when only these followed it.  A refused hand-off (``custody.refused``) and a shipping
excursion (a ``deviation.raised``) are not travel: they change the record QA must see."""
