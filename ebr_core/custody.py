"""Chain of custody, labels and shipping temperature: pure rules shared by the edge (recording),
the server (its API and timeline) and the offline auditor (``ctgtp verify``).

Custody event kinds (payload fields):

=====================  =========================================================================
``custody.handoff``    ``coi``, ``from``, ``to`` (party ids), ``place``, ``bag`` and ``shipper``
                       (the scanned identifiers), ``signatures`` (one per party: ``user_id``,
                       ``printed_name``, ``meaning`` = handed_over | received, ``signed_hash``)
``custody.refused``    ``coi`` (expected), ``scanned``, ``role`` (bag | shipper), ``reason``
``custody.received``   ``coi``, ``site``, ``bag``, ``signatures`` (the receiver)
``custody.infused``    ``coi``, ``site``, ``bag``, ``signatures`` (the administering clinician)
``label.printed``      ``label`` (apheresis_bag | product_bag | shipper), ``count``, ``content``
``label.applied``      ``label``, ``count``
``label.destroyed``    ``label``, ``count``, ``reason``
``label.reconciled``   ``counts`` per label, ``balanced``
=====================  =========================================================================
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal, InvalidOperation
from typing import Any

from ebr_core.canonical import canonical
from ebr_core.errors import EbrError
from ebr_core.record import Event

LABELS = ("apheresis_bag", "product_bag", "shipper")
CUSTODY_KINDS = ("custody.handoff", "custody.received", "custody.infused")


class CustodyError(EbrError):
    """Custody data (a logger file, a hand-off) is malformed or breaks a custody rule."""


def signed_content_hash(payload: dict[str, Any]) -> str:
    """What each party of a hand-off signs: the hand-off without the signatures."""
    body = {k: v for k, v in payload.items() if k != "signatures"}
    return hashlib.sha256(b"ctgtp/custody/v1\x00" + canonical(body)).hexdigest()


# -- label reconciliation -------------------------------------------------------------------


@dataclass(frozen=True)
class LabelCount:
    printed: int = 0
    applied: int = 0
    destroyed: int = 0

    @property
    def balanced(self) -> bool:
        return self.printed == self.applied + self.destroyed

    def to_json(self) -> dict[str, Any]:
        return {
            "printed": self.printed,
            "applied": self.applied,
            "destroyed": self.destroyed,
            "balanced": self.balanced,
        }


def label_counts(events: Iterable[Event]) -> dict[str, LabelCount]:
    out: dict[str, LabelCount] = {}
    for e in events:
        if not e.kind.startswith("label.") or e.kind == "label.reconciled":
            continue
        lab = str(e.payload.get("label"))
        c = out.get(lab, LabelCount())
        n = int(e.payload.get("count", 0))
        if e.kind == "label.printed":
            c = LabelCount(c.printed + n, c.applied, c.destroyed)
        elif e.kind == "label.applied":
            c = LabelCount(c.printed, c.applied + n, c.destroyed)
        elif e.kind == "label.destroyed":
            c = LabelCount(c.printed, c.applied, c.destroyed + n)
        out[lab] = c
    return out


# -- shipping temperature ---------------------------------------------------------------------


@dataclass(frozen=True)
class Excursion:
    started_at: datetime
    ended_at: datetime | None  # None: still warm at the last sample
    last_warm_at: datetime
    peak_c: Decimal
    duration: timedelta  # from the first warm sample to the return (or the last sample)

    def describe(self, limit_c: Decimal, allowed: timedelta) -> str:
        end = self.ended_at.isoformat() if self.ended_at else "the end of the log"
        return (
            f"warmer than {limit_c} °C from {self.started_at.isoformat()} to {end} "
            f"({int(self.duration.total_seconds())} s, allowed {int(allowed.total_seconds())} s;"
            f" peak {self.peak_c} °C)"
        )


class ExcursionMonitor:
    """Streaming detection: a run of samples warmer than ``limit_c`` lasting longer than
    ``allowed`` is an excursion.  Reported once, as soon as it is known (the first sample past the
    allowed time, or the return below the limit), so a live MQTT feed and a CSV file agree."""

    def __init__(self, limit_c: Decimal, allowed: timedelta) -> None:
        self.limit_c, self.allowed = limit_c, allowed
        self._start: datetime | None = None
        self._peak = Decimal("-Infinity")
        self._last_warm: datetime | None = None
        self._reported = False
        self._last_t: datetime | None = None

    def feed(self, t: datetime, temp_c: Decimal) -> Excursion | None:
        if self._last_t is not None and t <= self._last_t:
            raise CustodyError(
                f"temperature sample at {t.isoformat()} is not after the previous one "
                f"({self._last_t.isoformat()}): samples must be in time order"
            )
        self._last_t = t
        if temp_c > self.limit_c:
            if self._start is None:
                self._start, self._peak, self._reported = t, temp_c, False
            self._peak = max(self._peak, temp_c)
            self._last_warm = t
            if not self._reported and t - self._start > self.allowed:
                self._reported = True
                return Excursion(self._start, None, t, self._peak, t - self._start)
            return None
        if self._start is None:
            return None
        start, peak, reported, last_warm = self._start, self._peak, self._reported, self._last_warm
        self._start = None
        assert last_warm is not None
        if not reported and t - start > self.allowed:
            return Excursion(start, t, last_warm, peak, t - start)
        return None


def find_excursions(
    samples: Iterable[tuple[datetime, Decimal]], limit_c: Decimal, allowed: timedelta
) -> list[Excursion]:
    m = ExcursionMonitor(limit_c, allowed)
    return [x for t, c in samples if (x := m.feed(t, c)) is not None]


def parse_logger_csv(text: str) -> Iterator[tuple[datetime, Decimal]]:
    """A cryoshipper logger export: a header with ``timestamp`` and ``temperature_c`` columns,
    ISO 8601 times with a zone.  Errors name the line and what was expected."""
    reader = csv.DictReader(io.StringIO(text))
    cols = set(reader.fieldnames or ())
    if not {"timestamp", "temperature_c"} <= cols:
        raise CustodyError(
            f"logger file header has {sorted(cols)}; expected columns timestamp, temperature_c"
        )
    for row in reader:
        line = reader.line_num
        try:
            t = datetime.fromisoformat(str(row["timestamp"]).strip().replace("Z", "+00:00"))
        except ValueError as e:
            raise CustodyError(
                f"line {line}: timestamp {row['timestamp']!r} is not ISO 8601"
            ) from e
        if t.tzinfo is None:
            raise CustodyError(f"line {line}: timestamp {row['timestamp']!r} has no time zone")
        try:
            c = Decimal(str(row["temperature_c"]).strip())
        except InvalidOperation as e:
            raise CustodyError(
                f"line {line}: temperature {row['temperature_c']!r} is not a decimal number"
            ) from e
        if not c.is_finite():
            raise CustodyError(f"line {line}: temperature {row['temperature_c']!r} is not finite")
        yield t, c


# -- the custody chain ------------------------------------------------------------------------


@dataclass(frozen=True)
class CustodyProblem:
    seq: int
    message: str


def check_custody(events: Iterable[Event]) -> list[CustodyProblem]:
    """Check the custody events of one batch (in seq order) against its COI: every scanned bag
    carries the batch's COI, hand-offs are continuous (each starts where the last ended), each is
    signed by both parties over its content, and nothing follows the infusion."""
    problems: list[CustodyProblem] = []
    coi: str | None = None
    holder: str | None = None
    received = infused = False
    for e in events:
        p = e.payload
        if e.kind == "batch.started":
            coi = p.get("coi")
            continue
        if e.kind not in CUSTODY_KINDS:
            continue

        def bad(msg: str, seq: int = e.seq) -> None:
            problems.append(CustodyProblem(seq, msg))

        if infused:
            bad(f"{e.kind} after the infusion closed the chain")
        if p.get("coi") != coi:
            bad(f"{e.kind} names COI {p.get('coi')!r}, the batch's is {coi!r}")
        bag = p.get("bag")
        if bag != coi:
            bad(f"{e.kind}: the scanned bag {bag!r} does not carry the batch's COI {coi!r}")
        sigs = p.get("signatures") or []
        want = signed_content_hash(p)
        for s in sigs:
            if s.get("signed_hash") != want:
                bad(f"{e.kind}: {s.get('user_id')}'s signature is not over this content")
        if e.kind == "custody.handoff":
            parties = {s.get("meaning"): s.get("user_id") for s in sigs}
            if not parties.get("handed_over") or not parties.get("received"):
                bad("hand-off is not signed by both parties (handed_over and received)")
            elif parties["handed_over"] == parties["received"]:
                bad("hand-off signed by the same person on both sides")
            if holder is not None and p.get("from") != holder:
                bad(f"hand-off from {p.get('from')!r} but custody was with {holder!r}")
            holder = p.get("to")
        elif e.kind == "custody.received":
            if not sigs:
                bad("receipt is not signed")
            received = True
        elif e.kind == "custody.infused":
            if not received:
                bad("infusion recorded before receipt at the infusion site")
            if not sigs:
                bad("infusion is not signed")
            infused = True
    return problems
