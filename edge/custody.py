"""Custody at the station: labels (printed, applied, destroyed, reconciled), hand-offs signed by
both parties with scans of the bag and the shipper, receipt and infusion at the treating site,
and the shipper's temperature log.

**A scan that does not carry the batch's COI stops the hand-off**: a ``custody.refused`` event and
a major deviation are recorded and nothing is handed over.  Every party re-authenticates with user
id and password (the station's users, published by the server) and signs the hand-off's content
hash (:func:`ebr_core.custody.signed_content_hash`).  Every action, labels and shipper logs
included, names a known, active station user (:meth:`edge.engine.Engine.actor`), checked before
anything is recorded.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from ebr_core.batch import BatchState
from ebr_core.custody import (
    LABELS,
    Excursion,
    ExcursionMonitor,
    label_counts,
    signed_content_hash,
)
from ebr_core.errors import IdentifierError
from ebr_core.identifiers import parse_scan
from ebr_core.record import format_time
from edge.engine import Engine, EngineRefusal
from edge.ledger import Append
from edge.outcomes import Outcome


class CustodyRefused(EngineRefusal):
    """A hand-off, receipt or infusion stopped: the scan does not match the batch's COI."""


Party = tuple[str, str]  # (user id, password)


# -- outcomes (str() is the line the command printed before outcomes) --------------------------


@dataclass(frozen=True)
class LabelsRecorded(Outcome):
    label: str
    count: int


@dataclass(frozen=True)
class LabelsPrinted(
    LabelsRecorded, kind="labels_printed", template="printed {count} {label} label(s) for {coi}"
):
    """Labels of a kind printed for the batch's COI."""

    coi: str


@dataclass(frozen=True)
class LabelsApplied(
    LabelsRecorded, kind="labels_applied", template="{count} {label} label(s) applied"
):
    """Labels of a kind applied (to bags, shippers...)."""


@dataclass(frozen=True)
class LabelsDestroyed(
    LabelsRecorded, kind="labels_destroyed", template="{count} {label} label(s) destroyed: {reason}"
):
    """Labels of a kind destroyed (spoiled, surplus), with the reason."""

    reason: str


@dataclass(frozen=True)
class LabelsReconciled(Outcome, kind="labels_reconciled"):
    """Recorded whether or not the counts balance; an imbalance also raised ``deviation_id``."""

    balanced: bool
    counts: dict[str, dict[str, Any]]  # label kind -> printed, applied, destroyed, balanced
    deviation_id: str | None

    @property
    def message(self) -> str:
        return "\n".join(
            f"{k}: printed {c['printed']}, applied {c['applied']}, destroyed {c['destroyed']}"
            + ("" if c["balanced"] else "  MISMATCH")
            for k, c in self.counts.items()
        )


@dataclass(frozen=True)
class CustodyRecorded(Outcome):
    """A signed custody event; ``record`` is its payload (parties' signatures included)."""

    coi: str
    record: dict[str, Any]


@dataclass(frozen=True)
class HandedOver(
    CustodyRecorded,
    kind="handed_over",
    template="handed over {coi} from {record[from]} to {record[to]} at {record[place]}",
):
    """The product passed from one party to another, both signing."""


@dataclass(frozen=True)
class Received(CustodyRecorded, kind="received", template="{coi} received at {record[site]}"):
    """The product received at a site."""


@dataclass(frozen=True)
class Infused(
    CustodyRecorded,
    kind="infused",
    template="{coi} infused at {record[site]}: custody chain closed",
):
    """The product infused into the patient: the chain of custody closes."""


class Custody:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.ledger = engine.ledger

    def _state(self, batch_id: str) -> tuple[BatchState, str]:
        st = self.engine.state(batch_id)
        if st.coi is None:
            raise EngineRefusal(f"batch {batch_id} has no COI")
        return st, st.coi

    # -- labels -----------------------------------------------------------------------------

    def _label_event(
        self, kind: str, batch_id: str, label: str, count: int, user_id: str, **extra: Any
    ) -> tuple[int, str]:
        """Record a label event; return its seq and the batch's COI."""
        self.engine.actor(user_id)
        _, coi = self._state(batch_id)
        if label not in LABELS:
            raise EngineRefusal(f"label {label!r} is not one of {', '.join(LABELS)}")
        if count < 1:
            raise EngineRefusal(f"label count must be 1 or more, got {count}")
        ev = self.ledger.append(
            kind, {"label": label, "count": count, **extra}, batch_id=batch_id, actor=user_id
        )
        return ev.seq, coi

    def labels_printed(
        self, batch_id: str, label: str, count: int, user_id: str, content: dict[str, Any]
    ) -> LabelsPrinted:
        seq, coi = self._label_event(
            "label.printed", batch_id, label, count, user_id, content=content
        )
        return LabelsPrinted(batch_id, seq, label, count, coi)

    def labels_applied(
        self, batch_id: str, label: str, count: int, user_id: str, scanned: str | None = None
    ) -> LabelsApplied:
        """``scanned``: the applied label as read back from the item (one label).  A label that
        cannot be read is refused with nothing recorded; one that carries another COI, or
        none, stops: ``custody.refused`` and a major deviation are recorded, no label applied."""
        if scanned is not None:
            self.engine.actor(user_id)
            st, coi = self._state(batch_id)
            if count != 1:
                raise EngineRefusal(f"one scanned label is one label applied, not {count}")
            try:
                got = parse_scan(scanned).coi
            except IdentifierError as e:
                raise EngineRefusal(
                    f"the scanned label cannot be read: {e}. Nothing was recorded."
                ) from e
            if got != coi:
                self._check_scan(st, scanned, f"applied {label} label", user_id, "applied")
        seq, _ = self._label_event("label.applied", batch_id, label, count, user_id)
        return LabelsApplied(batch_id, seq, label, count)

    def labels_destroyed(
        self, batch_id: str, label: str, count: int, reason: str, user_id: str
    ) -> LabelsDestroyed:
        if not reason.strip():
            raise EngineRefusal("destroying labels needs a reason")
        seq, _ = self._label_event(
            "label.destroyed", batch_id, label, count, user_id, reason=reason
        )
        return LabelsDestroyed(batch_id, seq, label, count, reason)

    def reconcile_labels(self, batch_id: str, user_id: str) -> LabelsReconciled:
        """Printed = applied + destroyed for every label kind; a mismatch is a deviation."""
        self.engine.actor(user_id)
        st, _ = self._state(batch_id)
        counts = label_counts(self.ledger.batch_events(batch_id, telemetry=False))
        if not counts:
            raise EngineRefusal(f"batch {batch_id} has printed no labels: nothing to reconcile")
        balanced = all(c.balanced for c in counts.values())
        table = {k: c.to_json() for k, c in counts.items()}
        items = [
            Append(
                "label.reconciled",
                {"counts": table, "balanced": balanced},
                batch_id,
                user_id,
            )
        ]
        if not balanced:
            off = ", ".join(
                f"{k}: printed {c.printed}, applied {c.applied}, destroyed {c.destroyed}"
                for k, c in counts.items()
                if not c.balanced
            )
            items.append(self._deviation(st, "labeling", f"label reconciliation: {off}", user_id))
        events = self.ledger.append_many(items)
        raised = events[1].payload["deviation_id"] if len(events) > 1 else None
        return LabelsReconciled(batch_id, events[0].seq, balanced, table, raised)

    def _deviation(
        self, st: BatchState, category: str, reason: str, user_id: str, offset: int = 0
    ) -> Append:
        """A major deviation; ``offset`` counts others raised in the same commit group."""
        return Append(
            "deviation.raised",
            {
                "deviation_id": self.engine.next_deviation_id(st, offset),
                "step": None,
                "category": category,
                "reason": reason,
                "severity": "major",
            },
            st.batch_id,
            user_id,
        )

    # -- hand-offs ----------------------------------------------------------------------------

    def _check_scan(
        self, st: BatchState, raw: str, role: str, user_id: str, undone: str = "handed over"
    ) -> str:
        try:
            coi = parse_scan(raw).coi
            problem = None if coi == st.coi else f"it carries {coi or 'no COI'}"
        except IdentifierError as e:
            coi, problem = None, f"it does not parse: {e}"
        if problem is None:
            assert coi is not None
            return coi
        reason = f"{role} scan does not match the batch's COI {st.coi}: {problem}"
        self.ledger.append_many(
            [
                Append(
                    "custody.refused",
                    {"coi": st.coi, "scanned": raw, "role": role, "reason": reason},
                    st.batch_id,
                    user_id,
                ),
                self._deviation(st, "chain_of_identity", f"custody stopped: {reason}", user_id),
            ]
        )
        raise CustodyRefused(f"STOP: {reason}. Nothing was {undone}; recorded with a deviation.")

    def _sign(self, batch_id: str, parties: list[tuple[Party, str]]) -> list[dict[str, Any]]:
        out = []
        for (user_id, password), meaning in parties:
            u = self.engine.authenticate(user_id, password, batch_id=batch_id, step="custody")
            out.append({"user_id": u.user_id, "printed_name": u.printed_name, "meaning": meaning})
        return out

    def _record(
        self, kind: str, batch_id: str, payload: dict[str, Any], sigs: list[dict[str, Any]]
    ) -> tuple[int, dict[str, Any]]:
        payload["at"] = format_time(self.engine.clock())
        h = signed_content_hash(payload)
        payload["signatures"] = [{**s, "signed_hash": h} for s in sigs]
        ev = self.ledger.append(kind, payload, batch_id=batch_id, actor=sigs[-1]["user_id"])
        return ev.seq, payload

    def _custody(self, st: BatchState) -> tuple[dict[str, Any], ...]:
        if any(c.get("kind") == "custody.infused" for c in st.custody):
            raise EngineRefusal(f"batch {st.batch_id} was infused: its custody chain is closed")
        return st.custody

    def handoff(
        self,
        batch_id: str,
        *,
        from_party: str,
        to_party: str,
        place: str,
        bag_scan: str,
        shipper_scan: str | None,
        giver: Party,
        receiver: Party,
    ) -> HandedOver:
        self.engine.actor(giver[0])
        self.engine.actor(receiver[0])
        st, coi = self._state(batch_id)
        chain = self._custody(st)
        holder = next(
            (c["to"] for c in reversed(chain) if c.get("kind") == "custody.handoff"), None
        )
        if holder is not None and holder != from_party:
            raise EngineRefusal(f"custody is with {holder!r}, not {from_party!r}")
        if giver[0] == receiver[0]:
            raise EngineRefusal("a hand-off needs two different people")
        if not place.strip():
            raise EngineRefusal("a hand-off needs the place where it happens")
        bag = self._check_scan(st, bag_scan, "bag", giver[0])
        shipper = self._check_scan(st, shipper_scan, "shipper", giver[0]) if shipper_scan else None
        sigs = self._sign(batch_id, [(giver, "handed_over"), (receiver, "received")])
        seq, record = self._record(
            "custody.handoff",
            batch_id,
            {"coi": coi, "from": from_party, "to": to_party, "place": place, "bag": bag,
             "shipper": shipper},
            sigs,
        )  # fmt: skip
        return HandedOver(batch_id, seq, coi, record)

    def receive(self, batch_id: str, *, site: str, bag_scan: str, receiver: Party) -> Received:
        self.engine.actor(receiver[0])
        st, coi = self._state(batch_id)
        self._custody(st)
        bag = self._check_scan(st, bag_scan, "bag", receiver[0])
        sigs = self._sign(batch_id, [(receiver, "received")])
        seq, record = self._record(
            "custody.received", batch_id, {"coi": coi, "site": site, "bag": bag}, sigs
        )
        return Received(batch_id, seq, coi, record)

    def infuse(self, batch_id: str, *, site: str, bag_scan: str, clinician: Party) -> Infused:
        self.engine.actor(clinician[0])
        st, coi = self._state(batch_id)
        chain = self._custody(st)
        if not any(c.get("kind") == "custody.received" for c in chain):
            raise EngineRefusal(f"batch {batch_id} was not received at the infusion site")
        bag = self._check_scan(st, bag_scan, "bag", clinician[0])
        sigs = self._sign(batch_id, [(clinician, "administered")])
        seq, record = self._record(
            "custody.infused", batch_id, {"coi": coi, "site": site, "bag": bag}, sigs
        )
        return Infused(batch_id, seq, coi, record)

    # -- shipping temperature -----------------------------------------------------------------

    def shipper_log(
        self,
        batch_id: str,
        samples: Iterable[tuple[datetime, Decimal]],
        *,
        shipper: str,
        limit_c: Decimal,
        allowed: timedelta,
        user_id: str,
    ) -> list[Excursion]:
        """Record a logger's samples as a summary; each excursion becomes a major deviation."""
        self.engine.actor(user_id)
        st, _ = self._state(batch_id)
        monitor = ExcursionMonitor(limit_c, allowed)
        found: list[Excursion] = []
        n, first, last, warmest = 0, None, None, None
        for t, c in samples:
            x = monitor.feed(t, c)
            if x is not None:
                found.append(x)
            n += 1
            first = first or t
            last = t
            warmest = c if warmest is None else max(warmest, c)
        if n == 0:
            raise EngineRefusal("the temperature log has no samples")
        items = [
            Append(
                "shipping.log",
                {
                    "shipper": shipper,
                    "samples": n,
                    "from": format_time(first) if first else None,
                    "to": format_time(last) if last else None,
                    "warmest": {"value": str(warmest), "unit": "Cel"},
                    "limit": {"value": str(limit_c), "unit": "Cel"},
                    "allowed_s": int(allowed.total_seconds()),
                    "excursions": len(found),
                },
                batch_id,
                user_id,
            )
        ]
        items += [
            self._deviation(
                st,
                "shipping_temperature",
                f"shipper {shipper}: {x.describe(limit_c, allowed)}",
                user_id,
                offset=i,
            )
            for i, x in enumerate(found)
        ]
        self.ledger.append_many(items)
        return found
