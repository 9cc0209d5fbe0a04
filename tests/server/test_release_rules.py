"""The release rules as a table: every rule :func:`server.quality.release.decide` applies, one
row each (plain values: no HTTP, no database, no argon2).  The HTTP tests keep one path per
outcome; the rules themselves are here."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ebr_core.spec.evaluate import Evaluation, Verdict
from ebr_core.vocab import (
    FINAL_DISPOSITIONS,
    TRAVEL_KINDS,
    Disposition,
    Meaning,
    Readiness,
    ReviewState,
)
from server.errors import Conflict, Forbidden, ServerError, Unprocessable
from server.quality.release import (
    Batch,
    Decision,
    PriorSignature,
    Signer,
    Signing,
    Since,
    decide,
    still_applies,
)

T0 = datetime(2026, 5, 1, 12, 0, tzinfo=UTC)
REC = "r" * 64


def verdict(attr: str, status: str, timing: str = "before_release") -> Verdict:
    return Verdict(attr, attr.title(), status, "1", "≥ 1", "3.2.P.5", timing, f"{attr}: {status}")


def evaluation(j: str, readiness: Readiness) -> Evaluation:
    verdicts = {
        Readiness.RELEASABLE: (verdict("viability", "pass"),),
        Readiness.CONDITIONAL: (
            verdict("viability", "pass"),
            verdict("sterility", "pending", "after_release"),
        ),
        Readiness.INCOMPLETE: (
            verdict("viability", "missing"),
            verdict("endotoxin", "pending", "before_release"),
            verdict("sterility", "pending", "after_release"),
        ),
        Readiness.NOT_RELEASABLE: (verdict("viability", "fail"),),
    }[readiness]
    return Evaluation("SPEC", "1", j, verdicts, readiness)


def batch(**kw: Any) -> Batch:
    base: dict[str, Any] = {
        "batch_id": "B-1",
        "record_hash": REC,
        "has_results": True,
        "evaluations": {
            "EU": evaluation("EU", Readiness.RELEASABLE),
            "US": evaluation("US", Readiness.RELEASABLE),
        },
        "open_deviations": [],
        "operators": {"op.alice"},
        "event_times": [("event seq 1 (batch.started)", (T0 - timedelta(hours=2)).isoformat())],
        "review_state": ReviewState.AWAITING_REVIEW,
    }
    return Batch(**(base | kw))


def signer(user_id: str = "appr.a", **kw: Any) -> Signer:
    base: dict[str, Any] = {
        "user_id": user_id,
        "roles": frozenset({"qa_approver"}),
        "administered_access": False,
        "batch_began": T0 - timedelta(hours=2),
    }
    return Signer(**(base | kw))


def signing(b: Batch, meaning: str = "released", j: str = "EU", **kw: Any) -> Signing:
    ev = b.evaluations.get(j)
    base: dict[str, Any] = {
        "meaning": meaning,
        "reason": "QA decision",
        "jurisdiction": j,
        "record_hash": b.record_hash,
        "evaluation_hash": ev.hash() if ev is not None else "e" * 64,
        "at": T0,
    }
    return Signing(**(base | kw))


def reviewed(b: Batch, j: str = "EU", by: str = "rev.a", **kw: Any) -> PriorSignature:
    base = {
        "user_id": by,
        "jurisdiction": j,
        "meaning": "reviewed",
        "record_hash": b.record_hash,
        "evaluation_hash": b.evaluations[j].hash(),
    }
    return PriorSignature(**(base | kw))


def run(
    b: Batch,
    *,
    meaning: str = "released",
    j: str = "EU",
    prior: dict[str, str] | None = None,
    sigs: list[PriorSignature] | None = None,
    who: Signer | None = None,
    case: bool = False,
    **req: Any,
) -> Decision:
    if sigs is None:
        sigs = [reviewed(b, j)] if j in b.evaluations else []
    return decide(
        b, prior or {}, sigs, who or signer(), signing(b, meaning, j, **req), accepted_case=case
    )


B = batch()
COND = batch(evaluations={"EU": evaluation("EU", Readiness.CONDITIONAL)})
INCOMPLETE = batch(evaluations={"EU": evaluation("EU", Readiness.INCOMPLETE)})
OOS = batch(evaluations={"EU": evaluation("EU", Readiness.NOT_RELEASABLE)})

# (rule, call, the error type, words of its message)
REFUSALS: list[tuple[str, Any, type[ServerError], str]] = [
    ("meaning is a known word", lambda: run(B, meaning="approve"), Unprocessable,
     "meaning 'approve' is not one of reviewed, approved, released, rejected"),
    ("a reason is required", lambda: run(B, reason="  "), Unprocessable, "a reason is required"),
    ("a reason holds no NUL", lambda: run(B, reason="ok\x00"), Unprocessable,
     "the signature reason contains a NUL character"),
    ("an admin does not release", lambda: run(B, who=signer(roles=frozenset({"admin",
     "qa_approver"}))), Forbidden, "holds the admin role: an administrator cannot approve"),
    ("an admin does not approve", lambda: run(B, meaning="approved", who=signer(
     roles=frozenset({"admin", "qa_approver"}))), Forbidden, "an administrator cannot"),
    ("an admin does not reject", lambda: run(B, meaning="rejected", who=signer(
     roles=frozenset({"admin", "qa_approver"}))), Forbidden, "an administrator cannot"),
    ("the batch's operator does not review it", lambda: run(B, meaning="reviewed",
     who=signer("op.alice", roles=frozenset({"qa_reviewer"}))), Forbidden,
     "op.alice signed steps of batch B-1 as an operator and cannot sign its QA review"),
    ("the batch's operator does not release it", lambda: run(B, who=signer("op.alice")),
     Forbidden, "(separation of duties)"),
    ("who administered access since the batch began does not sign", lambda: run(
     B, meaning="reviewed", who=signer(administered_access=True)), Forbidden,
     "appr.a administered people's access (a password, a role grant or revoke, or a status "
     "change) since 2026-05-01T10:00:00+00:00, when batch B-1 began"),
    ("no signature before the batch's last event", lambda: run(batch(event_times=[
     ("event seq 9 (step.completed)", (T0 + timedelta(minutes=5)).isoformat())])), Conflict,
     "cannot sign batch B-1 at 2026-05-01T12:00:00+00:00: its event seq 9 (step.completed) is "
     "recorded at 2026-05-01T12:05:00+00:00, later than this signature"),
    ("no signature after an event with no real time", lambda: run(batch(event_times=[
     ("last temp reading", "yesterday")])), Conflict,
     "batch B-1: the last temp reading has no valid recorded time ('yesterday')"),
    ("results are entered", lambda: run(batch(has_results=False)), Conflict,
     "batch B-1 has no results entered yet: nothing to evaluate"),
    ("the jurisdiction is covered", lambda: run(B, j="JP", sigs=[]), Unprocessable,
     "jurisdiction 'JP' is not covered by the specification; it covers EU, US"),
    ("the record is the one reviewed", lambda: run(B, record_hash="0" * 64), Conflict,
     "the record or its evaluation changed since it was reviewed"),
    ("the evaluation is the one reviewed", lambda: run(B, evaluation_hash="0" * 64), Conflict,
     "the record or its evaluation changed since it was reviewed"),
    ("a release is final", lambda: run(B, prior={"EU": "released"}), Conflict,
     "batch B-1 is already released for EU; a final disposition is not signed again"),
    ("a rejection is final", lambda: run(B, meaning="rejected", prior={"EU": "rejected"}),
     Conflict, "already rejected for EU"),
    ("an exceptional release is final", lambda: run(B, meaning="approved",
     prior={"EU": "exceptional_release"}), Conflict, "already exceptional_release for EU"),
    ("deviations are closed before release", lambda: run(batch(open_deviations=["DEV-1",
     "DEV-2"])), Conflict, "open deviations must be closed first: DEV-1, DEV-2"),
    ("deviations are closed before approval", lambda: run(batch(open_deviations=["DEV-1"]),
     meaning="approved"), Conflict, "open deviations must be closed first: DEV-1"),
    ("release needs a review signature", lambda: run(B, sigs=[]), Conflict,
     "a QA review signature by another person on the current record is required before "
     "released (EU)"),
    ("... by another person", lambda: run(B, sigs=[reviewed(B, by="appr.a")]), Conflict,
     "by another person"),
    ("... on the current record", lambda: run(B, sigs=[reviewed(B, record_hash="0" * 64)]),
     Conflict, "on the current record"),
    ("... on the current evaluation", lambda: run(B, sigs=[reviewed(B, evaluation_hash="0" *
     64)]), Conflict, "on the current record"),
    ("... in this jurisdiction", lambda: run(B, sigs=[reviewed(B, "US")]), Conflict,
     "before released (EU)"),
    ("... meaning a review", lambda: run(B, sigs=[reviewed(B, meaning="approved")]), Conflict,
     "a QA review signature"),
    ("approval needs a review signature", lambda: run(B, meaning="approved", sigs=[]),
     Conflict, "required before approved (EU)"),
    ("a conditional release is not signed twice", lambda: run(COND,
     prior={"EU": "conditional_release"}), Conflict,
     "batch B-1 is already conditionally released for EU; the final release is signed when "
     "the pending results are final"),
    ("an incomplete batch is not released", lambda: run(INCOMPLETE), Conflict,
     "cannot release in EU: results due before release are missing or pending: viability, "
     "endotoxin"),
    ("out of specification needs the exceptional-release workflow", lambda: run(OOS), Conflict,
     "batch B-1 is out of specification in EU (viability): release needs the "
     "exceptional-release workflow"),
]  # fmt: skip


@pytest.mark.parametrize(("rule", "call", "error", "message"), REFUSALS,
                         ids=[r[0] for r in REFUSALS])  # fmt: skip
def test_refusals(rule: str, call: Any, error: type[ServerError], message: str) -> None:
    with pytest.raises(error) as e:
        call()
    assert type(e.value) is error, rule
    assert message in e.value.message, (rule, e.value.message)


def D(
    disposition: Disposition | None,
    state: ReviewState | None,
    pending: tuple[str, ...] = (),
    case: bool = False,
) -> tuple[Disposition | None, tuple[str, ...], bool, ReviewState | None]:
    return disposition, pending, case, state  # fmt: skip


# (case, call, (disposition, pending, releases the case, new review state))
DECISIONS: list[tuple[str, Any, Any]] = [
    ("a review signature decides nothing and starts the review", lambda: run(B,
     meaning="reviewed", who=signer("rev.a"), sigs=[]), D(None, ReviewState.IN_REVIEW)),
    ("a review after a change starts it again", lambda: run(batch(review_state="changed"),
     meaning="reviewed", sigs=[]), D(None, ReviewState.IN_REVIEW)),
    ("a review while in review leaves the state", lambda: run(batch(review_state="in_review"),
     meaning="reviewed", sigs=[]), D(None, None)),
    ("a review of an open batch leaves the state", lambda: run(batch(review_state="open"),
     meaning="reviewed", sigs=[]), D(None, None)),
    ("a second review by the same person is allowed", lambda: run(B, meaning="reviewed",
     who=signer("rev.a")), D(None, ReviewState.IN_REVIEW)),
    ("a review after a final disposition is allowed", lambda: run(batch(review_state="decided"),
     meaning="reviewed", prior={"EU": "released"}), D(None, None)),
    ("a review of a change after every final disposition decides the batch again", lambda: run(
     batch(review_state="changed"), meaning="reviewed", prior={"EU": "released",
     "US": "rejected"}), D(None, ReviewState.DECIDED)),
    ("... but not while a jurisdiction is undecided", lambda: run(batch(review_state="changed"),
     meaning="reviewed", prior={"EU": "released"}), D(None, ReviewState.IN_REVIEW)),
    ("... nor while a release is conditional", lambda: run(batch(review_state="changed"),
     meaning="reviewed", prior={"EU": "released", "US": "conditional_release"}),
     D(None, ReviewState.IN_REVIEW)),
    ("an approval decides nothing", lambda: run(B, meaning="approved"),
     D(None, ReviewState.IN_REVIEW)),
    ("releasable: released, one of two jurisdictions", lambda: run(B),
     D(Disposition.RELEASED, ReviewState.IN_REVIEW)),
    ("releasable: released, the last jurisdiction decides the batch", lambda: run(B,
     prior={"US": "rejected"}), D(Disposition.RELEASED, ReviewState.DECIDED)),
    ("conditional: a conditional release naming what is pending", lambda: run(COND),
     D(Disposition.CONDITIONAL_RELEASE, ReviewState.DECIDED, ("sterility",))),
    ("releasable after a conditional release: released", lambda: run(B,
     prior={"EU": "conditional_release"}), D(Disposition.RELEASED, ReviewState.IN_REVIEW)),
    ("not releasable with an accepted case: exceptional release", lambda: run(OOS, case=True),
     D(Disposition.EXCEPTIONAL_RELEASE, ReviewState.DECIDED, case=True)),
    ("a rejection needs no review signature nor closed deviations", lambda: run(batch(
     open_deviations=["DEV-1"]), meaning="rejected", sigs=[]),
     D(Disposition.REJECTED, ReviewState.IN_REVIEW)),
    ("an out-of-specification batch can be rejected", lambda: run(OOS, meaning="rejected"),
     D(Disposition.REJECTED, ReviewState.DECIDED)),
    ("an incomplete batch can be rejected", lambda: run(INCOMPLETE, meaning="rejected"),
     D(Disposition.REJECTED, ReviewState.DECIDED)),
    ("a conditional release can be rejected", lambda: run(COND, meaning="rejected",
     prior={"EU": "conditional_release"}), D(Disposition.REJECTED, ReviewState.DECIDED)),
    ("a signature at the last event's time is allowed", lambda: run(batch(event_times=[
     ("event seq 9 (step.completed)", T0.isoformat())])), D(Disposition.RELEASED,
     ReviewState.IN_REVIEW)),
    ("a naive recorded time is UTC", lambda: run(batch(event_times=[
     ("first temp reading", "2026-05-01T11:00:00")])), D(Disposition.RELEASED,
     ReviewState.IN_REVIEW)),
]  # fmt: skip


@pytest.mark.parametrize(("case", "call", "expected"), DECISIONS, ids=[d[0] for d in DECISIONS])
def test_decisions(case: str, call: Any, expected: Any) -> None:
    d = call()
    assert (d.disposition, d.pending, d.releases_case, d.review_state) == expected, case


def test_the_decision_binds_the_evaluation_hash() -> None:
    assert run(B).evaluation_hash == B.evaluations["EU"].hash()


@given(
    meaning=st.sampled_from(list(Meaning)),
    readiness=st.sampled_from(list(Readiness)),
    prior=st.sampled_from([None, *Disposition]),
    case=st.booleans(),
)
def test_a_disposition_follows_from_readiness(
    meaning: Meaning, readiness: Readiness, prior: Disposition | None, case: bool
) -> None:
    """Laws: only a release or a rejection records a disposition; a release records the one
    its readiness allows; a final disposition is never followed by another."""
    b = batch(evaluations={"EU": evaluation("EU", readiness)})
    try:
        d = run(b, meaning=meaning, prior={} if prior is None else {"EU": prior}, case=case)
    except ServerError:
        return
    if prior in FINAL_DISPOSITIONS:
        assert d.disposition is None
    if meaning in (Meaning.REVIEWED, Meaning.APPROVED):
        assert d.disposition is None
    elif meaning == Meaning.REJECTED:
        assert d.disposition == Disposition.REJECTED
    else:
        assert readiness != Readiness.INCOMPLETE
        assert (
            d.disposition
            == {
                Readiness.RELEASABLE: Disposition.RELEASED,
                Readiness.CONDITIONAL: Disposition.CONDITIONAL_RELEASE,
                Readiness.NOT_RELEASABLE: Disposition.EXCEPTIONAL_RELEASE,
            }[readiness]
        )
        assert case or readiness != Readiness.NOT_RELEASABLE


def test_unchanged_inputs_are_not_mutated() -> None:
    b = replace(B, open_deviations=())
    before = repr(b)
    run(b)
    assert repr(b) == before


# -- whether a signature still applies (release.still_applies) --------------------------------

EVH = "e" * 64
TRAVEL = ("custody.handoff", "shipping.log", "custody.handoff", "custody.received")


def since(**kw: Any) -> Since:
    base: dict[str, Any] = {
        "last_seq": 40,
        "readings": 1000,
        "after": TRAVEL,
        "readings_now": 1000,
        "qa_changes": False,
    }
    return Since(**(base | kw))


APPLIES = [
    ("the record and evaluation it signed", (REC, EVH, REC, EVH, since(after=())), 0),
    ("... whatever the seqs say (an old signature)", (REC, EVH, REC, EVH, since(last_seq=None)), 0),
    ("only travel after it: stands for what it signed", (REC, EVH, "x" * 64, EVH, since()), 4),
    ("the infusion alone", (REC, EVH, "x" * 64, EVH, since(after=("custody.infused",))), 1),
    ("the evaluation changed", (REC, EVH, REC, "f" * 64, since(after=())), None),
    ("the jurisdiction is no longer evaluated", (REC, EVH, REC, None, since()), None),
    ("a reading after it", (REC, EVH, "x" * 64, EVH, since(readings_now=1001)), None),
    ("a refused hand-off after it",
     (REC, EVH, "x" * 64, EVH, since(after=(*TRAVEL, "custody.refused"))), None),
    ("a shipping excursion's deviation",
     (REC, EVH, "x" * 64, EVH, since(after=("shipping.log", "deviation.raised"))), None),
    ("results, a deviation action or a link since",
     (REC, EVH, "x" * 64, EVH, since(qa_changes=True)), None),
    ("what it covered is not known (signed before the seq was recorded)",
     (REC, EVH, "x" * 64, EVH, since(last_seq=None)), None),
    ("... nor its readings", (REC, EVH, "x" * 64, EVH, since(readings=None)), None),
    ("changed with no event after it (a server-side change)",
     (REC, EVH, "x" * 64, EVH, since(after=())), None),
]  # fmt: skip


@pytest.mark.parametrize(
    ("args", "expected"), [a[1:] for a in APPLIES], ids=[a[0] for a in APPLIES]
)
def test_still_applies(args: tuple[Any, ...], expected: int | None) -> None:
    assert still_applies(*args) == expected


@given(
    st.lists(
        st.sampled_from(
            [*sorted(TRAVEL_KINDS), "value.recorded", "alarm.raised", "custody.refused"]
        )
    )
)
def test_a_signature_stands_past_travel_only(after: list[str]) -> None:
    """Law: with the evaluation unchanged, a signature on an older record applies exactly when
    everything after it is travel, and then counts it."""
    got = still_applies(REC, EVH, "x" * 64, EVH, since(after=tuple(after)))
    if after and all(k in TRAVEL_KINDS for k in after):
        assert got == len(after)
    else:
        assert got is None
