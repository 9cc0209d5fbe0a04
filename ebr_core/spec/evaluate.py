"""Evaluate a batch's results against a specification in one jurisdiction.

Results (RESULTS.yaml, or a dict)::

    viability: {value: "92.1", unit: "%", method: flow-7aad}
    sterility: {value: "no growth", method: ph-eur-2.6.27, status: negative-to-date}
    dose: {value: "145000000", unit: "1"}
    patient_weight: {value: "72.5", unit: kg}     # used by a `dose` attribute only

``status`` is ``final`` (default), ``pending`` (no result yet) or ``negative-to-date``.  An
attribute with no entry at all is *missing*; one whose entry is pending is *pending*.

The evaluation's conclusion is a :class:`~ebr_core.vocab.Readiness` (the disposition
*candidate*, under the key ``disposition`` of its JSON): any fail → ``not_releasable``; anything
missing, or pending while due before release → ``incomplete``; only after-release results
pending → ``conditional``; otherwise ``releasable``.  What QA then decides is a
:class:`~ebr_core.vocab.Disposition` (``conditional_release``, …), another vocabulary.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from ebr_core.canonical import canonical
from ebr_core.errors import SpecificationError
from ebr_core.spec.calculators import dose_range
from ebr_core.spec.model import Attribute, Spec
from ebr_core.spec.units import convert
from ebr_core.vocab import Disposition, Readiness, Timing
from ebr_core.vocab import Verdict as V

STATUSES = ("final", "pending", "negative-to-date")


@dataclass(frozen=True)
class Verdict:
    attribute: str
    name: str
    status: str  # pass | fail | pending | missing
    result: str | None
    limit: str
    clause: str
    timing: str
    explanation: str

    def to_json(self) -> dict[str, Any]:
        return {
            "attribute": self.attribute,
            "name": self.name,
            "status": self.status,
            "result": self.result,
            "limit": self.limit,
            "clause": self.clause,
            "timing": self.timing,
            "explanation": self.explanation,
        }


@dataclass(frozen=True)
class Evaluation:
    spec_id: str
    spec_version: str
    jurisdiction: str
    verdicts: tuple[Verdict, ...]
    disposition: str  # a Readiness (the key keeps its name on the wire)

    def to_json(self) -> dict[str, Any]:
        return {
            "spec_id": self.spec_id,
            "spec_version": self.spec_version,
            "jurisdiction": self.jurisdiction,
            "disposition": self.disposition,
            "verdicts": [v.to_json() for v in self.verdicts],
        }

    def hash(self) -> str:
        """SHA-256 of the canonical evaluation: what a QA e-signature binds to (11.70).  Computed
        once per evaluation (it is frozen): a batch view names it for every signature shown."""
        h: str | None = self.__dict__.get("_hash")
        if h is None:
            h = hashlib.sha256(b"ctgtp/evaluation/v1\x00" + canonical(self.to_json())).hexdigest()
            object.__setattr__(self, "_hash", h)
        return h

    def failed(self) -> list[Verdict]:
        return [v for v in self.verdicts if v.status == "fail"]


@dataclass(frozen=True)
class DeviationDraft:
    attribute: str
    reason: str
    clause: str
    severity: str = "major"


@dataclass(frozen=True)
class Alert:
    attribute: str
    message: str


def _verdict(
    a: Attribute, status: str, result: str | None, why: str, limit: str | None = None
) -> Verdict:
    return Verdict(
        a.id,
        a.name,
        status,
        result,
        limit if limit is not None else a.describe_limit(),
        a.clause,
        a.timing,
        why,
    )


def _judge(a: Attribute, r: Any, results: dict[str, Any], spec: Spec, j: str) -> Verdict:
    if r is None:
        return _verdict(a, "missing", None, f"no result for {a.name}")
    if not isinstance(r, dict):
        raise SpecificationError(f"result for {a.id} must be a mapping with value/unit/method")
    status = str(r.get("status", "final"))
    if status not in STATUSES:
        raise SpecificationError(
            f"result for {a.id}: status {status!r} is not one of {', '.join(STATUSES)}"
        )
    method = r.get("method")
    if status == "pending":
        return _verdict(a, "pending", None, f"{a.name}: result pending ({a.timing})")
    if a.methods is not None and method not in a.methods:
        return _verdict(
            a,
            "fail",
            str(r.get("value")),
            f"{a.name}: method {method!r} is not accepted in {j}; accepted: {', '.join(a.methods)}",
        )
    value = r.get("value")
    shown = f"{value} {r.get('unit', '')}".strip()
    if a.kind == "qualitative":
        if str(value) not in a.accepted:
            return _verdict(
                a,
                "fail",
                shown,
                f"{a.name}: {value!r} is not an accepted result ({a.describe_limit()})",
            )
        if status == "negative-to-date":
            return _verdict(
                a,
                "pending",
                f"{value} (to date)",
                f"{a.name}: negative to date; final result due {a.timing}",
            )
        return _verdict(a, "pass", shown, f"{a.name}: {value!r} conforms")
    try:
        v = Decimal(str(value))
    except InvalidOperation as e:
        raise SpecificationError(f"result for {a.id}: {value!r} is not a decimal number") from e
    unit = str(r.get("unit", a.unit))
    try:
        v_conv = convert(v, unit, a.unit if a.kind == "numeric" else "1")
    except SpecificationError as e:
        return _verdict(a, "fail", shown, f"{a.name}: {e}")
    if a.kind == "dose":
        w = results.get("patient_weight")
        if not isinstance(w, dict):
            return _verdict(a, "missing", shown, "the dose needs the patient_weight result")
        weight = convert(Decimal(str(w["value"])), str(w.get("unit", "kg")), "kg")
        lo, hi, band = dose_range(spec.dose_bands, weight)
        limit = f"{lo.normalize():f}–{hi.normalize():f} cells (band {band}, {weight} kg)"
        ok = lo <= v_conv <= hi
        return _verdict(
            a,
            "pass" if ok else "fail",
            shown,
            f"{a.name}: {v_conv.normalize():f} cells {'within' if ok else 'outside'} {limit}",
            limit,
        )
    fails = []
    if a.lower and not (v_conv >= a.lower.value if a.lower.inclusive else v_conv > a.lower.value):
        fails.append(f"not {a.lower.describe(True, a.unit)}")
    if a.upper and not (v_conv <= a.upper.value if a.upper.inclusive else v_conv < a.upper.value):
        fails.append(f"not {a.upper.describe(False, a.unit)}")
    conv = "" if unit == a.unit else f" (= {v_conv.normalize():f} {a.unit})"
    if fails:
        return _verdict(a, "fail", shown, f"{a.name}: {shown}{conv} is {' and '.join(fails)}")
    return _verdict(a, "pass", shown, f"{a.name}: {shown}{conv} meets {a.describe_limit()}")


def evaluate(spec: Spec, results: dict[str, Any], jurisdiction: str) -> Evaluation:
    attrs = spec.for_jurisdiction(jurisdiction)
    verdicts = tuple(
        _judge(attrs[aid], results.get(aid), results, spec, jurisdiction) for aid in sorted(attrs)
    )
    if any(v.status == V.FAIL for v in verdicts):
        disposition = Readiness.NOT_RELEASABLE
    elif any(
        v.status == V.MISSING or (v.status == V.PENDING and v.timing == Timing.BEFORE_RELEASE)
        for v in verdicts
    ):
        disposition = Readiness.INCOMPLETE
    elif any(v.status == V.PENDING for v in verdicts):
        disposition = Readiness.CONDITIONAL
    else:
        disposition = Readiness.RELEASABLE
    return Evaluation(spec.spec_id, spec.version, jurisdiction, verdicts, disposition)


def deviations_for(ev: Evaluation) -> list[DeviationDraft]:
    """Out-of-specification results become deviation drafts (raised by the edge or server)."""
    return [
        DeviationDraft(v.attribute, f"OOS in {ev.jurisdiction}: {v.explanation}", v.clause)
        for v in ev.failed()
    ]


# The dispositions after which the batch may have reached a patient.
RELEASES = frozenset(
    {Disposition.RELEASED, Disposition.CONDITIONAL_RELEASE, Disposition.EXCEPTIONAL_RELEASE}
)


def late_result_alerts(previous_disposition: str, ev: Evaluation) -> list[Alert]:
    """A failing result that arrives after a release (of any kind: ``previous_disposition`` is
    a :class:`~ebr_core.vocab.Disposition`) raises an alert."""
    if previous_disposition not in RELEASES:
        return []
    return [
        Alert(
            v.attribute,
            f"failing result after release in {ev.jurisdiction}: "
            f"{v.explanation}; inform the infusion site",
        )
        for v in ev.failed()
    ]
