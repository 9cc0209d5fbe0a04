"""The guided step engine: runs a batch from a signed master batch record over the ledger.

Every operator action becomes an event in the unit's ledger, and the batch state is the shared
fold over those events (:mod:`ebr_core.batch`).  The engine keeps the fold *cached by ledger
head* and advances it by the step events committed since (read through their own index, so the
million readings of a 10-day batch are never read for an operator action); the cache is checked
against the ledger on every use (the event it was folded up to must still carry the hash it
had), and a new engine folds again from the ledger, so nothing the engine holds can drift from
the record.  Telemetry is summarised apart (:meth:`Engine.telemetry`, :mod:`ebr_core.telemetry`),
advanced by the new readings only and kept in the ledger's meta table between runs under a
digest; a snapshot that does not match its digest or the ledger is rebuilt, never trusted.

Rules enforced here:

* every action names a known, active user of the station (``users.yaml``; ``ctgtp edge users``
  lists them): an unknown, inactive or locked id is refused before anything is recorded, so the
  actor of every event is a person the station knows;
* step order (21 CFR 11.10(f)): only the current step accepts scans, values and signatures;
* required scans: patient material and final product must carry the batch's COI (at the final
  product, the bag's own printed GS1 DataMatrix, which has no COI, is recognised by its batch/lot,
  AI 10, being the batch id); the cartridge its GTIN; reagent lots must be in the local materials
  list, of the expected material, released and unexpired; equipment must be known and in
  calibration.  Whatever the role, a date read from the label (GS1 AI 17 expiry, 15 best before,
  12 due date, DD = 00 being the month's last day; the ISBT 128 expiration date) that has passed
  on the unit's clock refuses the scan.  **A mismatch is a hard stop**: a ``scan.rejected``
  event and a ``deviation.raised`` are recorded, the step does not advance;
* in-process limits: a hard or soft breach records the value with its limit status and raises a
  deviation (major / minor);
* e-signatures (21 CFR 11.50, 11.70, 11.200): printed name, time and meaning, bound to the ledger
  head hash at signing; outside a continuous session both components (user id and password) are
  required, inside one the password alone; critical steps need a ``verified`` signature by a
  second, different person.  Failed attempts are recorded; three in a row lock the user locally;
* corrections (21 CFR 11.10(e)) are re-authenticated like signatures and recorded as a new event
  carrying who (the actor and printed name), when (the event's time), why, the old value and the
  new one; the original stays in the record.

Each action returns a typed :class:`Outcome` (what it recorded: step, seq, limit status, the
deviation it raised, the signer...), which the CLI renders as text or JSON and the kiosk as a
screen; ``str()`` of an outcome is the message the action returned before outcomes.  A refusal
raises :class:`EngineRefusal` (or a subclass), having recorded nothing but what it says.

The outcomes are in :mod:`edge.outcomes`.  The module is long on purpose: the rules above share
one cached fold, one refusal vocabulary and one deviation numbering, and are read together when a
rule changes.
"""

from __future__ import annotations

import calendar
import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson

from ebr_core.batch import BatchState, apply, current_values
from ebr_core.errors import EbrError, IdentifierError
from ebr_core.identifiers import ScanData, parse_scan
from ebr_core.limits import check_payload, range_limits, telemetry_limits, value_limits
from ebr_core.mbr import Limit, Mbr, MbrError, ScanSpec, Step, ValueSpec, calculate_dose
from ebr_core.quantity import quantity
from ebr_core.record import Event, format_time, parse_time
from ebr_core.reentry import ReentryVerifiers
from ebr_core.spec import inprocess_check
from ebr_core.spec.model import Bound
from ebr_core.telemetry import Telemetry
from edge.errors import EdgeError
from edge.ledger import Append, Ledger
from edge.materials import Materials
from edge.outcomes import (
    BatchStarted,
    DeviationCommented,
    DeviationLinked,
    DeviationRaised,
    DoseCalculated,
    ScanAccepted,
    Signed,
    ValueCorrected,
    ValueRecorded,
)
from edge.users import SESSION_VERIFIERS, User

SESSION_IDLE = timedelta(minutes=15)
MAX_FAILED_SIGNATURES = 3
MEANINGS = ("performed", "verified")
# A persisted telemetry snapshot is rewritten after this many new readings (one small write).
TELEMETRY_SNAPSHOT_EVERY = 20_000



def _recorded_quantity(spec: ValueSpec, name: str, value: str, unit: str) -> dict[str, str]:
    """``value`` in ``unit`` as the record stores it, refused unless ``unit`` is the one the
    MBR records ``name`` in and ``value`` is a decimal number."""
    if unit != spec.unit:
        raise EngineRefusal(f"{name} is recorded in {spec.unit!r}, got {unit!r}")
    try:
        return quantity(value, unit)
    except EbrError as e:
        raise EngineRefusal(f"{name}: {value!r} is not a decimal number such as 87.5") from e

class EngineRefusal(EdgeError):
    """The engine refused an action; the message says what was expected and what was given."""


class UnknownUser(EngineRefusal):
    """The user id given for an action is not a known, active user of this station."""


class ScanRejected(EngineRefusal):
    """A scan did not match: recorded as scan.rejected with a deviation (hard stop)."""


@dataclass(frozen=True)
class _Folded:
    """A cached result, valid for the ledger up to ``upto`` whose event has ``upto_hash``."""

    upto: int
    upto_hash: str
    state: BatchState | None


@dataclass
class _Summarised:
    upto: int
    upto_hash: str
    telemetry: Telemetry
    saved_readings: int  # readings in the persisted snapshot


@dataclass(frozen=True)
class Expectation:
    step: Step | None
    scans: tuple[ScanSpec, ...]
    values: tuple[str, ...]
    calculation: str | None
    signatures: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        step = self.step
        specs = [step.value(v) if step else None for v in self.values]
        return {
            "step": None if step is None else {"id": step.id, "name": step.name},
            "scans": [{"role": s.role, "material": s.material} for s in self.scans],
            "values": [
                {"name": v, "unit": spec.unit if spec else None}
                for v, spec in zip(self.values, specs, strict=True)
            ],
            "calculation": self.calculation,
            "signatures": list(self.signatures),
        }


class Engine:
    def __init__(
        self,
        ledger: Ledger,
        mbr: Mbr,
        mbr_hash: str,
        users: dict[str, User],
        materials: Materials,
        clock: Callable[[], datetime],
        session_idle: timedelta = SESSION_IDLE,
        verifiers: ReentryVerifiers | None = None,
    ) -> None:
        self.ledger = ledger
        self.mbr = mbr
        self.mbr_hash = mbr_hash
        self.users = users
        self.materials = materials
        self.clock = clock
        self.session_idle = session_idle
        self.verifiers = verifiers if verifiers is not None else SESSION_VERIFIERS
        # Instrument threads ask for the running step while the operator acts: one lock for
        # the caches.
        self._cache_lock = threading.RLock()
        self._folds: dict[str, _Folded] = {}
        self._telemetry: dict[str, _Summarised] = {}

    # -- state ----------------------------------------------------------------------------

    def _still_valid(self, upto: int, upto_hash: str) -> bool:
        return upto == 0 or self.ledger.hash_at(upto) == upto_hash

    def state(self, batch_id: str) -> BatchState:
        """The batch's state: the cached fold advanced by the step events committed since."""
        with self._cache_lock:
            seq, head = self.ledger.head
            f = self._folds.get(batch_id)
            if f is None or not self._still_valid(f.upto, f.upto_hash):
                f = _Folded(0, "", None)  # fold again from the ledger
            if f.upto != seq:
                st = f.state
                for ev in self.ledger.batch_events(batch_id, f.upto, seq, telemetry=False):
                    st = apply(st, ev)
                f = _Folded(seq, head, st)
                self._folds[batch_id] = f
        if f.state is None:
            raise EngineRefusal(f"batch {batch_id} has not been started on this unit")
        return f.state

    def full_state(self, batch_id: str) -> BatchState | None:
        """The batch's state folded from every one of its events, readings included, with no
        cache: what :meth:`state` must always equal (the self-check and the law tests)."""
        st: BatchState | None = None
        for ev in self.ledger.batch_events(batch_id):
            st = apply(st, ev)
        return st

    def telemetry(self, batch_id: str) -> Telemetry:
        """The batch's telemetry summary, advanced by the readings committed since the last
        call (the first call after a start restores the persisted snapshot, if it is sound)."""
        with self._cache_lock:
            seq, head = self.ledger.head
            s = self._telemetry.get(batch_id)
            if s is None or not self._still_valid(s.upto, s.upto_hash):
                s = self._restore_telemetry(batch_id)
            if s.upto != seq:
                t = s.telemetry
                for ev in self.ledger.batch_events(batch_id, s.upto, seq, telemetry=True):
                    t.add(ev.payload, ev.recorded_at, ev.seq)
                s.upto, s.upto_hash = seq, head
                if t.readings - s.saved_readings >= TELEMETRY_SNAPSHOT_EVERY and self.ledger.writer:
                    self._save_telemetry(batch_id, s)
            self._telemetry[batch_id] = s
            return Telemetry.from_json(s.telemetry.to_json())  # the caller's own copy

    def _save_telemetry(self, batch_id: str, s: _Summarised) -> None:
        body = orjson.dumps(
            {"upto": s.upto, "upto_hash": s.upto_hash, "telemetry": s.telemetry.to_json()}
        )
        digest = hashlib.sha256(body).hexdigest()
        self.ledger.set_meta(f"telemetry:{batch_id}", f"{digest} {body.decode()}")
        s.saved_readings = s.telemetry.readings

    def _restore_telemetry(self, batch_id: str) -> _Summarised:
        """The persisted snapshot if its digest and the ledger confirm it, else an empty one
        (so every reading is summarised again): a cache is never trusted on its word."""
        raw = self.ledger.get_meta(f"telemetry:{batch_id}")
        if raw is not None:
            digest, _, body = raw.partition(" ")
            try:
                if hashlib.sha256(body.encode()).hexdigest() != digest:
                    raise ValueError("digest mismatch")
                d = orjson.loads(body)
                upto, upto_hash = int(d["upto"]), str(d["upto_hash"])
                t = Telemetry.from_json(d["telemetry"])
                if upto <= self.ledger.head[0] and self._still_valid(upto, upto_hash):
                    return _Summarised(upto, upto_hash, t, t.readings)
            except (ValueError, KeyError, TypeError, orjson.JSONDecodeError):
                pass  # corrupt: rebuilt below
        return _Summarised(0, "", Telemetry(), 0)

    def current_step(self, st: BatchState) -> Step | None:
        done = set(st.completed_steps)
        return next((s for s in self.mbr.steps if s.id not in done), None)

    def expectation(self, batch_id: str) -> Expectation:
        st = self.state(batch_id)
        step = self.current_step(st)
        if step is None:
            return Expectation(None, (), (), None, ())
        scanned = st.step_scans(step.id)
        scans = step.scans[len(scanned) :]
        values = tuple(v.name for v in step.values if f"{step.id}:{v.name}" not in st.values)
        calc = (
            step.calculation if (step.calculation and f"{step.id}:dose" not in st.values) else None
        )
        sigs = {s.meaning for s in st.step_signatures(step.id)}
        need = tuple(
            m for m in (step.signature, *(("verified",) if step.critical else ())) if m not in sigs
        )
        return Expectation(step, scans, values, calc, need)

    def running(self, batch_id: str) -> tuple[str | None, str | None]:
        """(batch, current step) for binding instrument readings; (None, None) once completed."""
        st = self.state(batch_id)
        step = self.current_step(st)
        if st.status == "completed" or step is None:
            return None, None
        return batch_id, step.id

    def _active(self, batch_id: str) -> tuple[BatchState, Step]:
        st = self.state(batch_id)
        if st.status == "completed":
            raise EngineRefusal(f"batch {batch_id} is completed; nothing more can be recorded")
        step = self.current_step(st)
        assert step is not None
        return st, step

    def actor(self, user_id: str) -> User:
        """The known, active, unlocked station user ``user_id``, or a refusal naming the id and
        how to list the station's users.  Called before an action records anything."""
        user = self.users.get(user_id)
        listing = (
            "the station's users are listed by 'ctgtp edge users' (users.yaml, published by the "
            "server with 'ctgtp edge users-pull')"
        )
        if user is None:
            raise UnknownUser(f"user {user_id!r} is not a user of this station; {listing}")
        if not user.active:
            raise UnknownUser(
                f"user {user_id!r} is not active on this station and can record nothing; {listing}"
            )
        if self.ledger.get_meta(f"locked:{user_id}") is not None:
            raise UnknownUser(
                f"user {user_id} is locked after {MAX_FAILED_SIGNATURES} failed "
                "attempts; an administrator must unlock the account"
            )
        return user

    # -- batch ----------------------------------------------------------------------------

    def start_batch(self, batch_id: str, coi: str, user_id: str, password: str) -> BatchStarted:
        user = self.authenticate(user_id, password, batch_id=batch_id, step=None)
        if self.ledger.has_batch(batch_id):
            raise EngineRefusal(f"batch {batch_id} already exists on this unit")
        try:
            scan = parse_scan(coi)
        except IdentifierError as e:
            raise EngineRefusal(
                f"COI {coi!r} is not a valid chain-of-identity identifier: {e}"
            ) from e
        if scan.coi is None:
            raise EngineRefusal(f"{coi!r} is not a chain-of-identity identifier (&/CH…)")
        ev = self.ledger.append(
            "batch.started",
            {
                "coi": scan.coi,
                "mbr_id": self.mbr.mbr_id,
                "mbr_version": self.mbr.version,
                "mbr_hash": self.mbr_hash,
                "product": self.mbr.product,
                # the MBR's telemetry limits, so every reader of the record can draw them
                "telemetry_limits": telemetry_limits(self.mbr),
            },
            batch_id=batch_id,
            actor=user.user_id,
        )
        return BatchStarted(batch_id, ev.seq, scan.coi, self.mbr.mbr_id, self.mbr.version)

    # -- scans ----------------------------------------------------------------------------

    def scan(
        self, batch_id: str, raw: str, user_id: str, *, gs_substitutes: str = ""
    ) -> ScanAccepted:
        self.actor(user_id)
        st, step = self._active(batch_id)
        exp = self.expectation(batch_id)
        if not exp.scans:
            raise EngineRefusal(
                f"step {step.id} ({step.name}) expects no scan now; it expects "
                f"{self._describe(exp)}"
            )
        spec = exp.scans[0]
        try:
            data = parse_scan(raw, gs_substitutes=gs_substitutes)
            accepted = self._check_scan(st, spec, data)
        except (IdentifierError, ScanRejected) as e:
            reason = str(e)
            self._reject(st, step, spec, raw, user_id, reason)
            raise ScanRejected(
                f"scan refused for {spec.role.replace('_', ' ')}: {reason}. Recorded as a "
                "rejected scan with a deviation; the step does not advance."
            ) from e
        ev = self.ledger.append(
            "scan.accepted",
            {
                "step": step.id,
                "role": spec.role,
                "raw": raw,
                "identifiers": accepted,
            },
            batch_id=batch_id,
            actor=user_id,
        )
        return ScanAccepted(batch_id, ev.seq, step.id, spec.role, accepted)

    def _reject(
        self, st: BatchState, step: Step, spec: ScanSpec, raw: str, user_id: str, reason: str
    ) -> None:
        expected = spec.material or (
            st.coi if spec.role in ("patient_material", "final_product") else spec.role
        )
        did = self.next_deviation_id(st)
        self.ledger.append_many(
            [
                Append(
                    "scan.rejected",
                    {
                        "step": step.id,
                        "role": spec.role,
                        "raw": raw,
                        "expected": expected,
                        "reason": reason,
                    },
                    st.batch_id,
                    user_id,
                ),
                Append(
                    "deviation.raised",
                    {
                        "deviation_id": did,
                        "step": step.id,
                        "category": "scan_mismatch",
                        "reason": reason,
                        "severity": "major",
                    },
                    st.batch_id,
                    user_id,
                ),
            ]
        )

    def _check_scan(self, st: BatchState, spec: ScanSpec, d: ScanData) -> dict[str, Any]:
        now = self.clock()
        ids = self._check_identity(st, spec, d, now.date())
        self._check_dates(d, now)  # every role: an expired item is a hard stop
        return ids

    def _check_identity(
        self, st: BatchState, spec: ScanSpec, d: ScanData, today: date
    ) -> dict[str, Any]:
        """Is this the item the step expects (the right patient, cartridge, lot, equipment)?"""
        ids = d.to_json()
        if spec.role == "final_product" and d.patient_ref is None and d.standard == "gs1":
            # The bag's own printed GS1 DataMatrix (edge.labels: GTIN, expiry, batch, serial)
            # carries no COI: it is this batch's bag when its batch/lot (AI 10) is the batch id.
            if d.batch != st.batch_id:
                raise ScanRejected(
                    f"the label carries no COI and its batch/lot (AI 10) is "
                    f"{d.batch or '(none)'}; expected COI {st.coi} or this batch's own product "
                    f"bag label (batch/lot {st.batch_id})"
                )
            return ids
        if spec.role in ("patient_material", "final_product"):
            ref = d.patient_ref
            if ref is None:
                raise ScanRejected(f"the label carries no COI; expected {st.coi}")
            if ref != st.coi:
                raise ScanRejected(
                    f"COI {ref} does not match this batch's COI {st.coi} (wrong patient)"
                )
            return ids
        if spec.role == "cartridge":
            if d.gtin != self.mbr.cartridge_gtin:
                raise ScanRejected(
                    f"cartridge GTIN is {d.gtin}, expected {self.mbr.cartridge_gtin}"
                )
            if d.serial is None:
                raise ScanRejected("cartridge label has no serial number (AI 21)")
            return ids
        if spec.role == "reagent":
            if d.gtin is None or d.batch is None:
                raise ScanRejected("a reagent label needs a GTIN (AI 01) and a lot (AI 10)")
            lot = self.materials.lots.get((d.gtin, d.batch))
            if lot is None:
                raise ScanRejected(
                    f"lot {d.batch} of GTIN {d.gtin} is not in the local materials list"
                )
            if lot.material != spec.material:
                raise ScanRejected(f"lot {d.batch} is {lot.material}, expected {spec.material}")
            if lot.status != "released":
                raise ScanRejected(f"lot {d.batch} is {lot.status}; expected a released lot")
            if lot.expiry < today:  # the label's own dates: _check_dates
                raise ScanRejected(
                    f"lot {d.batch} expired on {lot.expiry.isoformat()} (materials list); the "
                    f"unit's date is {today.isoformat()}"
                )
            return ids | {"material": lot.material}
        # equipment: GS1 GIAI (AI 8004) names the asset
        asset = d.elements.get("8004")
        eq = self.materials.equipment.get(asset or "")
        if eq is None:
            raise ScanRejected(
                f"equipment {asset or '(no GIAI, AI 8004)'} is not in the local equipment list"
            )
        if eq.calibration_due < today:
            raise ScanRejected(
                f"equipment {eq.id} ({eq.name}) calibration is overdue since "
                f"{eq.calibration_due.isoformat()}"
            )
        return ids | {"equipment": eq.id}

    @staticmethod
    def _check_dates(d: ScanData, now: datetime) -> None:
        """Expiry and use-by dates read from the label against the unit's clock: GS1 AI 17
        (expiry), 15 (best before) and 12 (due date), and the ISBT 128 expiration date.  The item
        may be used on the date itself; the day after, it is refused."""
        today = now.date()
        for ai, what in GS1_DATES:
            raw = d.elements.get(ai) if d.standard == "gs1" else None
            if raw is None:
                continue
            when = gs1_date(raw, today)
            if when is None:
                raise ScanRejected(f"{what} (AI {ai}) {raw!r} is not a date (YYMMDD)")
            if when < today:
                raise ScanRejected(
                    f"{what} (AI {ai}) {raw} is {when.isoformat()}, which has passed; the "
                    f"unit's date is {today.isoformat()}"
                )
        if d.expiry is None or (d.standard == "gs1" and "17" in d.elements):
            return
        label = "ISBT 128 expiration date" if d.standard == "isbt128" else "expiry date"
        if d.expiry < today:
            raise ScanRejected(
                f"{label} {d.expiry.isoformat()} has passed; the unit's date is {today.isoformat()}"
            )
        t = d.expiry_time
        if t is not None and d.expiry == today:
            local = now.replace(tzinfo=None) if t.tzinfo is None else now
            if t < local:
                raise ScanRejected(
                    f"{label} and time {t.isoformat(timespec='minutes')} has passed; the "
                    f"unit's time is {local.isoformat(timespec='minutes')}"
                )

    # -- values ---------------------------------------------------------------------------

    def record_value(
        self, batch_id: str, name: str, value: str, unit: str, user_id: str
    ) -> ValueRecorded:
        self.actor(user_id)
        st, step = self._active(batch_id)
        exp = self.expectation(batch_id)
        if exp.scans:
            raise EngineRefusal(f"step {step.id} first expects {self._describe(exp)}")
        spec = step.value(name)
        if spec is None:
            names = ", ".join(v.name for v in step.values) or "none"
            raise EngineRefusal(
                f"step {step.id} ({step.name}) records no value {name!r}; it records: {names}"
            )
        if f"{step.id}:{name}" in st.values:
            raise EngineRefusal(
                f"{name} is already recorded for step {step.id}; a change is a correction "
                "(nothing is edited in place)"
            )
        q = _recorded_quantity(spec, name, value, unit)
        status = self.limit_status(spec, value)
        items = [
            Append(
                "value.recorded",
                _judged(
                    "value.recorded",
                    {"step": step.id, "name": name, "value": q, "limit": status},
                    spec,
                ),
                batch_id,
                user_id,
            )
        ]
        if status != "ok":
            items.append(self._limit_deviation(st, step.id, spec, q, status, user_id))
        events = self.ledger.append_many(items)
        return ValueRecorded(
            batch_id, events[0].seq, step.id, name, value, unit, limit=status,
            deviation_id=_raised(events),
        )  # fmt: skip

    def correct_value(
        self,
        batch_id: str,
        step_id: str,
        name: str,
        value: str,
        unit: str,
        reason: str,
        user_id: str,
        password: str,
    ) -> ValueCorrected:
        """Record a correction: a new event naming the corrected event (nothing is edited).

        21 CFR 11.10(e) and 11.200: the corrector re-authenticates with their password, as for a
        signature (a failed attempt is recorded and counts towards the lock); the event carries
        who (actor, ``user_id``, ``printed_name``), when (its own time), why (``reason``), the
        value it replaces (``old_value``: the original, or the latest correction of it) and the
        new one, judged against the step's limits like a recorded value (a breach raises a
        deviation).  ``corrects`` is the seq of the ``value.recorded`` event being corrected.
        """
        self.actor(user_id)
        st = self.state(batch_id)
        if f"{step_id}:{name}" not in st.values:
            raise EngineRefusal(f"no value {name!r} was recorded for step {step_id}")
        try:
            spec = self.mbr.step(step_id).value(name)
        except MbrError as e:
            raise EngineRefusal(str(e)) from e
        if spec is None:
            raise EngineRefusal(
                f"{name} of step {step_id} is calculated, not recorded: it cannot be corrected "
                "by hand (raise a deviation)"
            )
        if not reason.strip():
            raise EngineRefusal("a correction needs a reason")
        q = _recorded_quantity(spec, name, value, unit)
        old = self._current_value(st, step_id, name)
        if Decimal(old["value"]) == Decimal(q["value"]):
            raise EngineRefusal(f"{name} is already {old['value']} {unit}: nothing to correct")
        user = self.authenticate(user_id, password, batch_id=batch_id, step=step_id)
        corrected = next(
            e.seq
            for e in self.ledger.batch_events(batch_id, telemetry=False)
            if e.kind == "value.recorded"
            and e.payload.get("step") == step_id
            and e.payload.get("name") == name
        )
        status = self.limit_status(spec, q["value"])
        items = [
            Append(
                "correction.recorded",
                _judged(
                    "correction.recorded",
                    {
                        "corrects": corrected,
                        "step": step_id,
                        "name": name,
                        "old_value": old,
                        "value": q,
                        "limit": status,
                        "reason": reason,
                        "user_id": user.user_id,
                        "printed_name": user.printed_name,
                    },
                    spec,
                ),
                batch_id,
                user.user_id,
            )
        ]
        if status != "ok":
            items.append(self._limit_deviation(st, step_id, spec, q, status, user.user_id))
        events = self.ledger.append_many(items)
        return ValueCorrected(
            batch_id, events[0].seq, step_id, name, old["value"], q["value"], unit, reason,
            user.user_id, user.printed_name, corrected, limit=status,
            deviation_id=_raised(events),
        )  # fmt: skip

    @staticmethod
    def _current_value(st: BatchState, step_id: str, name: str) -> dict[str, str]:
        """The value in force: the latest correction of ``step_id:name``, else the original
        (one rule for the station, the batch view and the report: ``current_values``)."""
        values, _ = current_values(st.values, st.corrections)
        return dict(values[f"{step_id}:{name}"]["value"])

    @staticmethod
    def limit_status(spec: ValueSpec, value: str) -> str:
        """``"hard"``, ``"soft"`` or ``"ok"``: where ``value`` lies against the value's limits
        (the kiosk asks before recording, so an out-of-limit value is entered twice)."""
        if spec.hard and _breached(spec.hard, value):
            return "hard"
        if spec.soft and _breached(spec.soft, value):
            return "soft"
        return "ok"

    def _limit_deviation(
        self,
        st: BatchState,
        step_id: str,
        spec: ValueSpec,
        q: dict[str, str],
        status: str,
        user_id: str,
    ) -> Append:
        lim = spec.hard if status == "hard" else spec.soft
        assert lim is not None
        unit = q["unit"]
        return Append(
            "deviation.raised",
            {
                "deviation_id": self.next_deviation_id(st),
                "step": step_id,
                "category": "limit_breach",
                "reason": f"{spec.name} {q['value']} {unit} is outside the {status} limit "
                f"{lim.describe()} {unit}",
                "severity": "major" if status == "hard" else "minor",
            },
            st.batch_id,
            user_id,
        )

    def calculate(self, batch_id: str, user_id: str) -> DoseCalculated:
        self.actor(user_id)
        st, step = self._active(batch_id)
        if step.calculation != "dose" or self.mbr.dosing is None:
            raise EngineRefusal(f"step {step.id} has no calculation")
        if f"{step.id}:dose" in st.values:
            raise EngineRefusal("the dose is already calculated for this batch")

        values, _ = current_values(st.values, st.corrections)  # corrected values, not as recorded

        def val(name: str) -> Decimal:
            for key, p in values.items():
                if key.endswith(f":{name}"):
                    return Decimal(p["value"]["value"])
            raise EngineRefusal(f"the dose needs {name}, which has not been recorded")

        try:
            dose = calculate_dose(
                self.mbr.dosing,
                viable_per_ml=val("viable_per_ml"),
                volume_ml=val("harvest_volume"),
                car_percent=val("car_percent"),
                weight_kg=val("patient_weight"),
            )
        except MbrError as e:
            raise EngineRefusal(str(e)) from e
        figures = {
            "cells_to_infuse": str(dose.cells_to_infuse),
            "per_kg": str(dose.per_kg),
            "volume_to_infuse_ml": str(dose.volume_to_infuse_ml),
            "total_viable_car_cells": str(dose.total_viable_car_cells),
        }
        items = [
            Append(
                "value.recorded",
                {
                    "step": step.id,
                    "name": "dose",
                    "calculated": True,
                    "value": quantity(figures["per_kg"], "/kg"),
                    "detail": figures,
                    "limit": "ok" if dose.within_range else "hard",
                    "limits": range_limits(
                        "/kg", Limit(self.mbr.dosing.min_per_kg, self.mbr.dosing.max_per_kg)
                    ),
                },
                batch_id,
                user_id,
            )
        ]
        if not dose.within_range:
            items.append(
                Append(
                    "deviation.raised",
                    {
                        "deviation_id": self.next_deviation_id(st),
                        "step": step.id,
                        "category": "limit_breach",
                        "severity": "major",
                        "reason": f"dose {dose.per_kg} cells/kg is outside "
                        f"{self.mbr.dosing.min_per_kg}–{self.mbr.dosing.max_per_kg}",
                    },
                    batch_id,
                    user_id,
                )
            )
        events = self.ledger.append_many(items)
        return DoseCalculated(
            batch_id,
            events[0].seq,
            step.id,
            **figures,
            within_range=dose.within_range,
            deviation_id=_raised(events),
        )

    # -- signatures -----------------------------------------------------------------------

    def sign(
        self, batch_id: str, password: str, meaning: str, user_id: str | None = None
    ) -> Signed:
        st, step = self._active(batch_id)
        if meaning not in MEANINGS:
            raise EngineRefusal(f"meaning {meaning!r} is not one of {', '.join(MEANINGS)}")
        if user_id is None:
            user_id = self._continuous_session_user()
            if user_id is None:
                raise EngineRefusal(
                    "the session is not continuous: enter your user id and password "
                    "(21 CFR 11.200(a)(1)(ii))"
                )
        user = self.authenticate(user_id, password, batch_id=batch_id, step=step.id)
        exp = self.expectation(batch_id)
        if exp.scans or exp.values or exp.calculation:
            raise EngineRefusal(f"step {step.id} is not finished: it expects {self._describe(exp)}")
        if meaning not in exp.signatures:
            raise EngineRefusal(
                f"step {step.id} needs no {meaning!r} signature now; it needs "
                f"{', '.join(exp.signatures) or 'nothing'}"
            )
        if meaning == "verified":
            performers = {
                s.user_id for s in st.step_signatures(step.id) if s.meaning == step.signature
            }
            if not performers:
                raise EngineRefusal(f"step {step.id} must be signed {step.signature!r} first")
            if user.user_id in performers:
                raise EngineRefusal(
                    f"{user.user_id} performed step {step.id}; a second, different person must "
                    "verify it"
                )
        signed_at, signed_hash = format_time(self.clock()), self.ledger.head[1]
        items = [
            Append(
                "signature.applied",
                {
                    "step": step.id,
                    "user_id": user.user_id,
                    "printed_name": user.printed_name,
                    "meaning": meaning,
                    "signed_hash": signed_hash,
                    "signed_at": signed_at,
                },
                batch_id,
                user.user_id,
            )
        ]
        if len(exp.signatures) == 1:
            items.append(Append("step.completed", {"step": step.id}, batch_id, user.user_id))
            if step is self.mbr.steps[-1]:
                items.append(Append("batch.completed", {}, batch_id, user.user_id))
        events = self.ledger.append_many(items)
        return Signed(
            batch_id,
            events[0].seq,
            step.id,
            meaning,
            user.user_id,
            user.printed_name,
            signed_at,
            signed_hash,
            step_completed=len(items) > 1,
            batch_completed=len(items) > 2,
        )

    def _continuous_session_user(self) -> str | None:
        raw = self.ledger.get_meta("session")
        if raw is None:
            return None
        user_id, _, last = raw.partition("@")
        if self.clock() - parse_time(last) > self.session_idle:
            return None
        return user_id

    def authenticate(
        self, user_id: str, password: str, *, batch_id: str | None, step: str | None
    ) -> User:
        """Re-authenticate ``user_id`` (a signature, a correction, a custody party): a wrong
        password is counted (recorded as ``signature.failed`` in a started batch) and the third
        in a row locks the user; a success starts the continuous session (21 CFR 11.200)."""
        user = self.actor(user_id)  # unknown, inactive, locked: refused, nothing recorded
        now = self.clock()
        if self.verifiers.matches(user_id, user.password_hash, password, now, self.session_idle):
            pass  # this person's password of their last success, within the session
        elif user.check_password(password):
            self.verifiers.remember(user_id, user.password_hash, password, now)
        else:
            self.verifiers.forget(user_id)
            fails = int(self.ledger.get_meta(f"fails:{user_id}") or "0") + 1
            self.ledger.set_meta(f"fails:{user_id}", str(fails))
            reason = f"wrong password for user {user_id}"
            if batch_id is not None and self.ledger.has_batch(batch_id):
                self.ledger.append(
                    "signature.failed",
                    {"step": step, "user_id": user_id, "reason": reason},
                    batch_id=batch_id,
                )
            if fails >= MAX_FAILED_SIGNATURES:
                self.ledger.set_meta(f"locked:{user_id}", format_time(self.clock()))
                raise EngineRefusal(f"{reason}; user {user_id} is now locked")
            raise EngineRefusal(reason)
        if self.ledger.get_meta(f"fails:{user_id}") not in (None, "0"):
            self.ledger.set_meta(f"fails:{user_id}", "0")
        self.ledger.set_meta("session", f"{user_id}@{format_time(now)}")
        return user

    # -- deviations -----------------------------------------------------------------------

    def raise_deviation(
        self, batch_id: str, reason: str, user_id: str, category: str = "operator"
    ) -> DeviationRaised:
        self.actor(user_id)
        st = self.state(batch_id)
        if not reason.strip():
            raise EngineRefusal("a deviation needs a reason")
        did = self.next_deviation_id(st)
        step = self.current_step(st)
        step_id = step.id if step else None
        ev = self.ledger.append(
            "deviation.raised",
            {
                "deviation_id": did,
                "step": step_id,
                "category": category,
                "reason": reason,
                "severity": "minor",
            },
            batch_id=batch_id,
            actor=user_id,
        )
        return DeviationRaised(batch_id, ev.seq, did, step_id, reason)

    def comment_deviation(
        self, batch_id: str, deviation_id: str, comment: str, user_id: str
    ) -> DeviationCommented:
        if not comment.strip():
            self.actor(user_id)
            raise EngineRefusal("a comment needs text")
        seq = self._on_deviations(
            batch_id, "deviation.commented", user_id, (deviation_id,), comment=comment
        )
        return DeviationCommented(batch_id, seq, deviation_id, comment)

    def link_deviation(
        self, batch_id: str, deviation_id: str, other: str, user_id: str
    ) -> DeviationLinked:
        seq = self._on_deviations(
            batch_id, "deviation.linked", user_id, (deviation_id, other), linked_to=other
        )
        return DeviationLinked(batch_id, seq, deviation_id, other)

    def _on_deviations(
        self, batch_id: str, kind: str, user_id: str, ids: tuple[str, ...], **payload: str
    ) -> int:
        """Record ``kind`` about ``ids[0]`` once every deviation in ``ids`` exists."""
        self.actor(user_id)
        st = self.state(batch_id)
        for d in ids:
            if d not in st.deviations:
                raise EngineRefusal(f"deviation {d} does not exist in batch {batch_id}")
        ev = self.ledger.append(
            kind, {"deviation_id": ids[0], **payload}, batch_id=batch_id, actor=user_id
        )
        return ev.seq

    @staticmethod
    def next_deviation_id(st: BatchState, offset: int = 0) -> str:
        """The id of the next deviation (``offset``: more raised in the same commit group)."""
        return f"DEV-{st.batch_id}-{len(st.deviations) + 1 + offset:03d}"

    @staticmethod
    def _describe(exp: Expectation) -> str:
        parts = []
        if exp.scans:
            s = exp.scans[0]
            parts.append(f"a scan of {s.material or s.role.replace('_', ' ')}")
        if exp.values:
            parts.append("values " + ", ".join(exp.values))
        if exp.calculation:
            parts.append(f"the {exp.calculation} calculation")
        if exp.signatures:
            parts.append("signatures " + ", ".join(exp.signatures))
        return "; ".join(parts) or "nothing"


def _raised(events: list[Event]) -> str | None:
    """The id of the deviation a commit group raised along with its main event, if any."""
    return next(
        (str(e.payload["deviation_id"]) for e in events if e.kind == "deviation.raised"), None
    )


GS1_DATES = (("17", "expiry date"), ("15", "best-before date"), ("12", "due date"))


def gs1_date(raw: str, today: date) -> date | None:
    """A GS1 YYMMDD date (GS1 General Specifications 7.12): the century is the one that puts the
    year within 49 years back and 50 years ahead of ``today``'s; DD = 00 is the last day of the
    month.  None when it is not a date."""
    if len(raw) != 6 or not raw.isdigit():
        return None
    yy, mm, dd = int(raw[:2]), int(raw[2:4]), int(raw[4:])
    diff = yy - today.year % 100
    century = today.year // 100 + (1 if diff <= -50 else -1 if diff >= 51 else 0)
    year = century * 100 + yy
    if not 1 <= mm <= 12:
        return None
    if dd == 0:
        dd = calendar.monthrange(year, mm)[1]
    try:
        return date(year, mm, dd)
    except ValueError:
        return None


def _judged(kind: str, payload: dict[str, Any], spec: ValueSpec) -> dict[str, Any]:
    """A judged value's payload with the limits it was judged against (none when the MBR sets
    none), checked as every reader checks them."""
    lim = value_limits(spec)
    if lim is not None:
        payload["limits"] = lim
    check_payload(kind, payload)
    return payload


def _breached(limit: Limit, value: str) -> bool:
    """The same in-process check the specification module runs over telemetry."""
    lower = Bound(limit.min, True) if limit.min is not None else None
    upper = Bound(limit.max, True) if limit.max is not None else None
    return inprocess_check([value], lower, upper).first_breach is not None
