"""Batch state as a pure fold over events: ``state = reduce(apply, events)``.

The edge (to know the current step) and the server (its batch and deviation projections) run this
same function, so they can never disagree about what happened.  Event kinds and the payload
fields the fold reads:

=====================  =========================================================================
``batch.started``      ``coi``, ``mbr_id``, ``mbr_version``, ``mbr_hash``, ``product``
                       (``telemetry_limits``: not folded; :mod:`ebr_core.limits`)
``scan.accepted``      ``step``, ``role``, ``raw``, ``identifiers``
``scan.rejected``      ``step``, ``role``, ``raw``, ``expected``, ``reason``
``value.recorded``     ``step``, ``name``, ``value`` (quantity), ``limit`` (ok | soft | hard),
                       ``limits`` (what it was judged against; kept with the value)
``reading.recorded``   telemetry: **not folded here** (see below)
``signature.applied``  ``step``, ``user_id``, ``printed_name``, ``meaning``, ``signed_hash``
``signature.failed``   ``step``, ``user_id``, ``reason`` (a failed re-authentication)
``step.completed``     ``step``
``deviation.raised``   ``deviation_id``, ``step``, ``category``, ``reason``, ``severity``
``deviation.commented`` ``deviation_id``, ``comment``
``deviation.linked``   ``deviation_id``, ``linked_to``
``deviation.closed``   ``deviation_id``, ``reason``
``alarm.raised``       ``source``, ``code``, ``message``
``correction.recorded`` ``corrects`` (seq of the corrected event), ``reason``, ``value``,
                       ``limit`` and ``limits`` (the new value's judgement)
``custody.handoff``    ``coi``, ``from``, ``to``, ``place``, ``bag``, ``shipper``, ``signatures``
``custody.received``   ``coi``, ``site``, ``bag``, ``signatures`` (and ``custody.infused``)
``custody.refused``    ``coi``, ``scanned``, ``role``, ``reason`` (a rejected scan at a hand-off)
``label.*``            ``label``, ``count`` (printed, applied, destroyed; see ebr_core.custody)
``batch.completed``    ``{}``
=====================  =========================================================================

Events of other kinds are counted and otherwise ignored, so a newer edge never breaks an older
fold.

Telemetry (``reading.recorded``, :data:`TELEMETRY_KINDS`) does not enter this fold: a 10-day batch
holds up to a million readings and no step rule depends on one.  :func:`apply` returns the state
unchanged for them (so folding a batch's events with or without its readings gives the same
state), and :mod:`ebr_core.telemetry` summarises them instead.  ``events``, ``last_seq`` and
``head_hash`` therefore count and name the step events the state was folded from; what binds a
signature to *every* event of a batch is the batch's event head (see ``docs/architecture.md``).

The state is folded incrementally: ``apply(state, ev)`` for each new event gives the same state
as folding everything again (a law test cuts the events at every point), so callers cache it by
the head they folded up to and advance it by the new events only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any

from ebr_core.errors import BatchStateError
from ebr_core.record import Event

TELEMETRY_KINDS = frozenset({"reading.recorded"})


@dataclass(frozen=True)
class Deviation:
    deviation_id: str
    step: str | None
    category: str
    reason: str
    severity: str
    raised_seq: int
    comments: tuple[str, ...] = ()
    links: tuple[str, ...] = ()
    closed_reason: str | None = None

    @property
    def open(self) -> bool:
        return self.closed_reason is None


@dataclass(frozen=True)
class Signature:
    step: str
    user_id: str
    printed_name: str
    meaning: str
    signed_hash: str
    recorded_at: str
    seq: int


@dataclass(frozen=True)
class BatchState:
    batch_id: str
    unit_id: str
    coi: str | None = None
    mbr_id: str | None = None
    mbr_version: str | None = None
    mbr_hash: str | None = None
    status: str = "in_progress"  # in_progress | completed
    started_at: str | None = None
    completed_steps: tuple[str, ...] = ()
    scans_accepted: tuple[dict[str, Any], ...] = ()
    scans_rejected: tuple[dict[str, Any], ...] = ()
    values: dict[str, dict[str, Any]] = field(default_factory=dict)  # "step:name" -> payload
    signatures: tuple[Signature, ...] = ()
    deviations: dict[str, Deviation] = field(default_factory=dict)
    alarms: tuple[dict[str, Any], ...] = ()
    custody: tuple[dict[str, Any], ...] = ()
    corrections: tuple[dict[str, Any], ...] = ()
    events: int = 0
    first_seq: int = 0
    last_seq: int = 0
    head_hash: str = ""

    def step_signatures(self, step: str) -> tuple[Signature, ...]:
        return tuple(s for s in self.signatures if s.step == step)

    def open_deviations(self) -> list[Deviation]:
        return [d for d in self.deviations.values() if d.open]

    def step_scans(self, step: str) -> list[dict[str, Any]]:
        return [s for s in self.scans_accepted if s.get("step") == step]


def apply(state: BatchState | None, ev: Event) -> BatchState:
    """The state after ``ev``.  ``state`` is None for the batch's first event."""
    if ev.batch_id is None:
        raise BatchStateError(f"event {ev.seq} ({ev.kind}) belongs to no batch")
    if state is None:
        if ev.kind != "batch.started":
            raise BatchStateError(
                f"batch {ev.batch_id}: first event is {ev.kind} (seq {ev.seq}), expected "
                "batch.started"
            )
        state = BatchState(batch_id=ev.batch_id, unit_id=ev.unit_id, first_seq=ev.seq)
    elif ev.batch_id != state.batch_id:
        raise BatchStateError(f"event {ev.seq} is for batch {ev.batch_id}, not {state.batch_id}")
    k = ev.kind
    if k in TELEMETRY_KINDS:
        return state  # summarised by ebr_core.telemetry, never folded (see the module docstring)
    p = ev.payload
    s = replace(state, events=state.events + 1, last_seq=ev.seq, head_hash=ev.hash)
    if k == "batch.started":
        if state.coi is not None:
            raise BatchStateError(f"batch {ev.batch_id} started twice (seq {ev.seq})")
        return replace(
            s,
            coi=p.get("coi"),
            mbr_id=p.get("mbr_id"),
            mbr_version=p.get("mbr_version"),
            mbr_hash=p.get("mbr_hash"),
            started_at=ev.recorded_at,
        )
    if k == "scan.accepted":
        return replace(s, scans_accepted=(*s.scans_accepted, {**p, "seq": ev.seq}))
    if k == "scan.rejected":
        return replace(s, scans_rejected=(*s.scans_rejected, {**p, "seq": ev.seq}))
    if k == "value.recorded":
        return replace(s, values={**s.values, f"{p.get('step')}:{p.get('name')}": p})
    if k == "signature.applied":
        sig = Signature(
            step=str(p["step"]),
            user_id=str(p["user_id"]),
            printed_name=str(p["printed_name"]),
            meaning=str(p["meaning"]),
            signed_hash=str(p["signed_hash"]),
            recorded_at=ev.recorded_at,
            seq=ev.seq,
        )
        return replace(s, signatures=(*s.signatures, sig))
    if k == "step.completed":
        return replace(s, completed_steps=(*s.completed_steps, str(p["step"])))
    if k == "deviation.raised":
        d = Deviation(
            deviation_id=str(p["deviation_id"]),
            step=p.get("step"),
            category=str(p.get("category", "other")),
            reason=str(p.get("reason", "")),
            severity=str(p.get("severity", "minor")),
            raised_seq=ev.seq,
        )
        return replace(s, deviations={**s.deviations, d.deviation_id: d})
    if k in ("deviation.commented", "deviation.linked", "deviation.closed"):
        did = str(p.get("deviation_id"))
        if did not in s.deviations:
            raise BatchStateError(f"seq {ev.seq}: deviation {did} was never raised")
        d = s.deviations[did]
        if k == "deviation.commented":
            d = replace(d, comments=(*d.comments, str(p.get("comment", ""))))
        elif k == "deviation.linked":
            d = replace(d, links=(*d.links, str(p.get("linked_to"))))
        else:
            d = replace(d, closed_reason=str(p.get("reason", "")))
        return replace(s, deviations={**s.deviations, did: d})
    if k == "alarm.raised":
        return replace(s, alarms=(*s.alarms, {**p, "seq": ev.seq}))
    if k in ("custody.transferred", "custody.handoff", "custody.received", "custody.infused"):
        return replace(s, custody=(*s.custody, {**p, "kind": k, "seq": ev.seq}))
    if k == "custody.refused":
        rejected = {**p, "step": "custody", "expected": p.get("coi"), "seq": ev.seq}
        return replace(s, scans_rejected=(*s.scans_rejected, rejected))
    if k == "correction.recorded":
        return replace(s, corrections=(*s.corrections, {**p, "seq": ev.seq}))
    if k == "batch.completed":
        return replace(s, status="completed")
    return s


def current_values(
    values: dict[str, dict[str, Any]], corrections: Iterable[dict[str, Any]]
) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The values as they stand after ``corrections`` (in seq order), and each correction with
    the value it replaced.

    The fold keeps ``values`` as recorded (a correction is a new event; nothing is edited), so
    whoever shows or uses a value asks this for the current one.  A corrected entry keeps its
    recorded payload with ``value`` replaced, plus ``recorded_value`` (the value first recorded)
    and ``corrected_by`` (the seq of its last correction); a correction that records the limits
    it was judged against (``limits``) also replaces ``limit`` and ``limits`` with its own.
    Each correction comes back with ``key`` (``step:name``, None if it names no recorded value:
    then nothing is applied) and ``old_value``: the value it replaced, taken from the record,
    not from the correction's own claim (``old_value`` or, from older edges, ``old``), which is
    kept as ``claimed_old_value``.
    """
    out = dict(values)
    applied: list[dict[str, Any]] = []
    for c in corrections:
        key = f"{c.get('step')}:{c.get('name')}"
        claimed = c.get("old_value", c.get("old"))
        entry = out.get(key)
        if entry is None or not isinstance(c.get("value"), dict):
            applied.append({**c, "key": None, "old_value": claimed, "claimed_old_value": claimed})
            continue
        judged: dict[str, Any] = {k: c[k] for k in ("limit", "limits") if "limits" in c and k in c}
        out[key] = {
            **entry,
            **judged,
            "value": c["value"],
            "recorded_value": values[key].get("value"),
            "corrected_by": c.get("seq"),
        }
        applied.append(
            {**c, "key": key, "old_value": entry.get("value"), "claimed_old_value": claimed}
        )
    return out, applied


def fold(events: list[Event] | Any) -> dict[str, BatchState]:
    """Fold a unit's events (in seq order) into the state of each batch they mention."""
    out: dict[str, BatchState] = {}
    for ev in events:
        if ev.batch_id is None:
            continue
        out[ev.batch_id] = apply(out.get(ev.batch_id), ev)
    return out


def state_to_json(st: BatchState) -> dict[str, Any]:
    """The state as plain JSON (what a projection stores); :func:`state_from_json` inverts it."""
    return {
        **{f.name: getattr(st, f.name) for f in fields(st)},
        "completed_steps": list(st.completed_steps),
        "scans_accepted": list(st.scans_accepted),
        "scans_rejected": list(st.scans_rejected),
        "signatures": [asdict(s) for s in st.signatures],
        "deviations": {k: asdict(d) for k, d in st.deviations.items()},
        "alarms": list(st.alarms),
        "custody": list(st.custody),
        "corrections": list(st.corrections),
    }


def state_from_json(d: dict[str, Any]) -> BatchState:
    names = {f.name for f in fields(BatchState)}
    if set(d) != names:
        raise BatchStateError(
            f"a stored batch state has fields {sorted(set(d) ^ names)} it should not have or lacks"
        )
    devs = {
        k: Deviation(**{**v, "comments": tuple(v["comments"]), "links": tuple(v["links"])})
        for k, v in d["deviations"].items()
    }
    return BatchState(
        **{
            **d,
            "completed_steps": tuple(d["completed_steps"]),
            "scans_accepted": tuple(d["scans_accepted"]),
            "scans_rejected": tuple(d["scans_rejected"]),
            "signatures": tuple(Signature(**s) for s in d["signatures"]),
            "deviations": devs,
            "alarms": tuple(d["alarms"]),
            "custody": tuple(d["custody"]),
            "corrections": tuple(d["corrections"]),
        }
    )
