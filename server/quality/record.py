"""A batch as a reviewer judges it (:class:`Review`), computed once per request from its
projection (:mod:`server.projections`, kept by ingest), its latest results and their evaluation
per jurisdiction, and the server-side deviation actions; and the *record hash* over all of it.

The record hash covers everything a reviewer judges: every event of the batch, through its
event head (the number of its events and the seq and hash of the last one, which is hash-linked
to every earlier event of its unit, readings included), the digests of the derived step state
and telemetry summary, the current result set, and the server-side deviation actions.  No
request reads the batch's events to compute it.  A signature records the record hash and the
evaluation hash it was given on; when either changes, the signature is shown as no longer
applying and cannot support a release.

Over 400 lines: the reviewer's reading of a batch (deviations with their comments, closures and
links, corrections, edge notes, labels) is one model, and its parts refer to each other.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import orjson
from sqlalchemy import or_, select
from sqlalchemy.orm import Session

from ebr_core.batch import BatchState, current_values
from ebr_core.canonical import canonical
from ebr_core.custody import label_counts
from ebr_core.record import Event, decode_record
from ebr_core.spec import evaluate, parse_spec
from ebr_core.spec.evaluate import Evaluation
from ebr_core.spec.model import Spec
from server import projections
from server.batches import summary
from server.db import (
    Alert,
    BatchSummary,
    ClosureSignature,
    DeviationAction,
    DeviationLink,
    EventRow,
    ResultSet,
    SpecRow,
)
from server.errors import NotFound
from server.projections import Projection
from server.text import iso

# -- reading a batch --------------------------------------------------------------------------


_SPECS: dict[tuple[str, str, str], Spec] = {}


def load_spec(db: Session, spec_id: str, version: str) -> tuple[SpecRow, Spec]:
    row = db.get(SpecRow, (spec_id, version))
    if row is None:
        raise NotFound(f"specification {spec_id} v{version} is not published on this server")
    key = (spec_id, version, row.content_hash)
    spec = _SPECS.get(key)
    if spec is None:
        spec = _SPECS[key] = parse_spec(orjson.loads(row.content))
    return row, spec


def latest_results(db: Session, batch_id: str) -> ResultSet | None:
    return db.scalars(
        select(ResultSet).where(ResultSet.batch_id == batch_id).order_by(ResultSet.id.desc())
    ).first()


def _actions(db: Session, batch_id: str) -> list[DeviationAction]:
    return list(
        db.scalars(
            select(DeviationAction)
            .where(DeviationAction.batch_id == batch_id)
            .order_by(DeviationAction.id)
        )
    )


def record_hash(
    summ: BatchSummary,
    proj: Projection,
    rs: ResultSet | None,
    actions: list[DeviationAction],
    links: list[DeviationLink] | None = None,
) -> str:
    body = {
        "batch_id": summ.batch_id,
        "unit_id": summ.unit_id,
        "events": summ.events,
        "last_seq": summ.last_seq,
        "head_hash": summ.head_hash,
        "state": proj.state_digest(),
        "telemetry": proj.telemetry_digest(),
        "results": None
        if rs is None
        else {
            "id": rs.id,
            "spec": f"{rs.spec_id} v{rs.spec_version}",
            "sha256": hashlib.sha256(rs.results.encode()).hexdigest(),
        },
        "deviation_actions": [a.id for a in actions],
    }
    if links:  # since 0010; absent while a batch has none, so earlier hashes stay as they were
        body["deviation_links"] = [x.id for x in links]
    return hashlib.sha256(b"ctgtp/record-state/v2\x00" + canonical(body)).hexdigest()


@dataclass
class Review:
    """Everything a reviewer sees of one batch, computed once per request."""

    summary: BatchSummary
    projection: Projection
    state: BatchState
    results: ResultSet | None
    spec: Spec | None
    evaluations: dict[str, Evaluation]
    actions: list[DeviationAction]
    record_hash: str
    notes: dict[int, EdgeNote] = field(default_factory=dict)
    clock_alerts: list[Alert] = field(default_factory=list)
    closures: dict[int, ClosureSignature] = field(default_factory=dict)  # by deviation action
    links: list[DeviationLink] = field(default_factory=list)  # QA's (the unit's: in the state)

    @property
    def operators(self) -> set[str]:
        return {s.user_id for s in self.state.signatures}

    def _by(self, seq: int | None) -> str:
        """Who recorded an edge event: its actor, or the unit when no person did."""
        n = self.notes.get(seq) if seq is not None else None
        if n is not None and n.actor:
            return n.actor
        return f"unit {self.state.unit_id}"

    def deviations(self) -> list[dict[str, Any]]:
        out = []
        for d in self.state.deviations.values():
            seqs = [
                seq
                for seq, n in sorted(self.notes.items())
                if n.deviation_id == d.deviation_id and n.kind == "deviation.commented"
            ]
            closes = [
                seq
                for seq, n in sorted(self.notes.items())
                if n.deviation_id == d.deviation_id and n.kind == "deviation.closed"
            ]
            comments: list[dict[str, Any]] = [
                {
                    "by": self._by(seq),
                    "text": c,
                    "at": self.notes[seq].at if seq is not None else None,
                    "seq": seq,
                    "source": "edge",
                }
                for c, seq in zip(d.comments, _pad(seqs, len(d.comments)), strict=True)
            ]
            last_close = closes[-1] if closes else None
            closed: dict[str, Any] | None = (
                None
                if d.open
                else {
                    "by": self._by(last_close),
                    "reason": d.closed_reason,
                    "at": self.notes[last_close].at if last_close is not None else None,
                    "seq": last_close,
                    "source": "edge",
                }
            )
            for a in self.actions:
                if a.deviation_id != d.deviation_id:
                    continue
                if a.action == "comment":
                    comments.append(
                        {"by": a.user_id, "text": a.text, "at": iso(a.at), "source": "server"}
                    )
                elif closed is None:
                    closed = {
                        "by": a.user_id,
                        "reason": a.text,
                        "at": iso(a.at),
                        "source": "server",
                    }
                    sig = self.closures.get(a.id)
                    if sig is not None:  # the e-signature that closed it (since 0010)
                        closed |= {
                            "signature": sig.id,
                            "printed_name": sig.printed_name,
                            "meaning": sig.meaning,
                        }
            related = [
                {"deviation_id": x, "by": self._by(None), "source": "edge"} for x in d.links
            ] + [
                {"deviation_id": x.linked_to if x.deviation_id == d.deviation_id
                 else x.deviation_id, "by": x.user_id, "at": iso(x.at), "reason": x.reason,
                 "source": "server"}
                for x in self.links
                if d.deviation_id in (x.deviation_id, x.linked_to)
            ]  # fmt: skip
            related += [  # linked from another deviation by the unit
                {"deviation_id": o.deviation_id, "by": self._by(None), "source": "edge"}
                for o in self.state.deviations.values()
                if d.deviation_id in o.links and o.deviation_id not in d.links
            ]
            out.append(
                {
                    "deviation_id": d.deviation_id,
                    "step": d.step,
                    "category": d.category,
                    "severity": d.severity,
                    "reason": d.reason,
                    "raised_seq": d.raised_seq,
                    "links": list(d.links),
                    "related": related,
                    "comments": comments,
                    "open": closed is None,
                    "closed": closed,
                }
            )
        return out

    def corrections(self) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
        """The batch's current values (corrections applied) and its corrections: the old
        value, the new value, who, when and why.  A correction is applied only if the event it
        names (``corrects``) is the recording of the value it corrects in this batch; one that
        is not is listed with the problem and changes nothing."""
        recorded = {seq: (kind, step) for seq, _at, kind, step in self.projection.timeline}
        problems: dict[int, str] = {}
        for c in self.state.corrections:
            if recorded.get(c.get("corrects")) != ("value.recorded", c.get("step")):
                problems[int(c["seq"])] = (
                    f"names seq {c.get('corrects')!r}, which is not the recording of "
                    f"{c.get('step')}:{c.get('name')} in this batch: not applied"
                )
        sound = [c for c in self.state.corrections if int(c["seq"]) not in problems]
        values, applied = current_values(self.state.values, sound)
        by_seq = {int(a["seq"]): a for a in applied}
        return values, [self._correction(c, by_seq, problems) for c in self.state.corrections]

    def _correction(
        self, c: dict[str, Any], applied: dict[int, dict[str, Any]], problems: dict[int, str]
    ) -> dict[str, Any]:
        seq = int(c["seq"])
        claimed = c.get("old_value", c.get("old"))
        a = applied.get(seq)
        problem = problems.get(seq)
        if a is not None and a["key"] is None:
            problem = f"names {c.get('step')}:{c.get('name')}, which was never recorded"
        elif a is not None and claimed is not None and claimed != a["old_value"]:
            problem = (
                f"says the old value was {_quantity(claimed)}; the record shows "
                f"{_quantity(a['old_value'])}"
            )
        note = self.notes.get(seq)
        return {
            "seq": seq,
            "corrects": c.get("corrects"),
            "step": c.get("step"),
            "name": c.get("name"),
            "old_value": claimed if a is None or a["key"] is None else a["old_value"],
            "new_value": c.get("value"),
            "reason": c.get("reason"),
            "by": self._by(seq),
            "at": note.at if note is not None else None,
            "applied": a is not None and a["key"] is not None,
            "problem": problem,
        }


@dataclass(frozen=True)
class EdgeNote:
    """Who recorded an edge event the fold keeps without its author (comments, closures,
    corrections), and when."""

    kind: str
    actor: str | None
    at: str | None
    deviation_id: str | None


_NOTE_KINDS = frozenset({"deviation.commented", "deviation.closed", "correction.recorded"})


def event_lines(
    db: Session, summ: BatchSummary, proj: Projection, wanted: Callable[[str], bool]
) -> list[tuple[int, bytes]]:
    """The stored lines of the batch's step events whose kind is ``wanted``, in seq order.

    Their seqs come from the projection's timeline, so they are read by primary key: a plan
    that cannot go wrong.  A query by batch and kind was planned on statistics from before a
    bulk sync (a unit back with a million readings) and read the whole batch through the wrong
    index, 0.5 s a query, until autovacuum's next ANALYZE."""
    seqs = [int(seq) for seq, _at, kind, _step in proj.timeline if wanted(str(kind))]
    out: list[tuple[int, bytes]] = []
    for i in range(0, len(seqs), 500):
        q = select(EventRow.seq, EventRow.line).where(
            EventRow.unit_id == summ.unit_id, EventRow.seq.in_(seqs[i : i + 500])
        )
        out += [(int(seq), bytes(line)) for seq, line in db.execute(q).all()]
    return sorted(out)


def _notes(db: Session, summ: BatchSummary, proj: Projection) -> dict[int, EdgeNote]:
    out = {}
    for seq, line in event_lines(db, summ, proj, _NOTE_KINDS.__contains__):
        d = orjson.loads(bytes(line))
        p = d.get("payload") if isinstance(d.get("payload"), dict) else {}
        actor, at, dev = d.get("actor"), d.get("recorded_at"), p.get("deviation_id")
        out[int(seq)] = EdgeNote(
            str(d.get("kind")),
            actor if isinstance(actor, str) else None,
            at if isinstance(at, str) else None,
            None if dev is None else str(dev),
        )
    return out


def _pad(seqs: list[int], n: int) -> list[int | None]:
    """The comment events' seqs, one per comment the fold kept (None if the events disagree)."""
    return list(seqs) if len(seqs) == n else [None] * n


def _quantity(v: Any) -> str:
    if isinstance(v, dict):
        return f"{v.get('value')} {v.get('unit', '')}".strip()
    return str(v)


CLOCK_ALERTS = "clock.%"  # clock.ahead, clock.before_enrolment, clock.backwards (ingest)


def clock_alerts(db: Session, summ: BatchSummary) -> list[Alert]:
    """The batch's clock alerts: exceptions for review, acknowledged or not."""
    return list(
        db.scalars(
            select(Alert)
            .where(
                Alert.batch_id == summ.batch_id,
                Alert.kind.like(CLOCK_ALERTS),
                or_(Alert.site_id == summ.site_id, Alert.site_id.is_(None)),
            )
            .order_by(Alert.id)
        )
    )


def load_review(db: Session, batch_id: str) -> Review:
    summ = summary(db, batch_id)
    proj = projections.load(db, summ)
    if proj.state is None:
        raise NotFound(f"batch {batch_id} has no batch.started event on this server")
    st = proj.state
    rs = latest_results(db, batch_id)
    spec = None
    evaluations: dict[str, Evaluation] = {}
    if rs is not None:
        _, spec = load_spec(db, rs.spec_id, rs.spec_version)
        results = orjson.loads(rs.results)
        evaluations = {j: evaluate(spec, results, j) for j in sorted(spec.overlays)}
    actions = _actions(db, batch_id)
    links = list(
        db.scalars(
            select(DeviationLink)
            .where(DeviationLink.batch_id == batch_id)
            .order_by(DeviationLink.id)
        )
    )
    return Review(
        summ,
        proj,
        st,
        rs,
        spec,
        evaluations,
        actions,
        record_hash(summ, proj, rs, actions, links),
        _notes(db, summ, proj),
        clock_alerts(db, summ),
        {
            c.action_id: c
            for c in db.scalars(
                select(ClosureSignature).where(ClosureSignature.batch_id == batch_id)
            )
        },
        links,
    )


def labels(db: Session, summ: BatchSummary, proj: Projection) -> dict[str, Any]:
    """The batch's label reconciliation from its label events, as the unit recorded them:
    printed, applied and destroyed (voided) per label, balanced when printed = applied +
    destroyed (:func:`ebr_core.custody.label_counts`, the report's rule), and each
    ``label.reconciled`` the unit recorded, with whether its counts agree with the events."""
    events = [
        decode_record(bytes(line), Event)
        for _seq, line in event_lines(db, summ, proj, lambda k: k.startswith("label."))
    ]
    counts = {k: c.to_json() for k, c in sorted(label_counts(events).items())}
    claims = []
    for i, e in enumerate(events):
        if e.kind != "label.reconciled":
            continue
        claimed = e.payload.get("counts")
        then = {k: c.to_json() for k, c in label_counts(events[:i]).items()}  # at that point
        agrees = isinstance(claimed, dict) and set(claimed) == set(then) and all(
            isinstance(claimed[k], dict)
            and all(claimed[k].get(f) == c[f] for f in ("printed", "applied", "destroyed"))
            for k, c in then.items()
        )
        claims.append({"seq": e.seq, "recorded_at": e.recorded_at, "by": e.actor,
                       "balanced": e.payload.get("balanced"), "agrees": agrees})  # fmt: skip
    return {"counts": counts, "reconciled": claims}
