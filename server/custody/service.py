"""Custody on the server: the timeline of a COI (edge-recorded events from the units' signed
ledgers merged with events recorded through the API away from any unit), hand-offs, receipt and
infusion recorded through the API with both parties re-authenticating, and transfer licences with
alerts before they expire.

A scan that does not carry the COI stops the hand-off: it is kept as a ``refused`` custody event
with a ``custody.refused`` alert for the sites involved, and the request fails with 409.
"""

from __future__ import annotations

from datetime import date, datetime, timedelta
from typing import Any

import orjson
from sqlalchemy import or_, select, text
from sqlalchemy.orm import Session

from ebr_core.canonical import canonical
from ebr_core.custody import check_custody, signed_content_hash
from ebr_core.errors import IdentifierError
from ebr_core.identifiers import parse_scan
from ebr_core.isbt128 import coi_from_text
from ebr_core.record import Event, decode_record
from server.audit import trail as audit
from server.batches import lock_batch
from server.db import Alert, BatchSummary, CustodyEventRow, EventRow, Licence, LicenceLink
from server.errors import Conflict, NotFound, Unprocessable
from server.people import service as people
from server.people.service import Principal
from server.text import iso, storable

KINDS = ("handoff", "received", "infused")


def coi_from_path(text: str) -> str:
    """A COI in a URL: ``CHA999926ABC123`` (the ``&/`` of the data form cannot travel in a path)
    or the data form URL-encoded; returned in the data form."""
    t = text.strip()
    if t.startswith("CH"):
        t = "&/" + t
    try:
        return coi_from_text(t).data()
    except IdentifierError as e:
        raise Unprocessable(f"{text!r} is not a chain-of-identity identifier: {e}") from e


def batch_for(db: Session, coi: str) -> BatchSummary:
    b = db.scalars(select(BatchSummary).where(BatchSummary.coi == coi)).first()
    if b is None:
        raise NotFound(f"no batch for COI {coi} on this server")
    return b


def _edge_events(db: Session, batch_id: str) -> list[Event]:
    """The batch's start and custody events from the units' ledgers (not its readings)."""
    rows = db.scalars(
        select(EventRow.line)
        .where(
            EventRow.batch_id == batch_id,
            # a literal, so the planner can use the partial index of step events (its WHERE):
            # without it a 1,000,000-reading batch is walked reading by reading
            text("kind <> 'reading.recorded'"),
            or_(EventRow.kind == "batch.started", EventRow.kind.like("custody.%")),
        )
        .order_by(EventRow.unit_id, EventRow.seq)
    )
    return [decode_record(line, Event) for line in rows]


def _server_rows(db: Session, coi: str) -> list[CustodyEventRow]:
    return list(
        db.scalars(
            select(CustodyEventRow).where(CustodyEventRow.coi == coi).order_by(CustodyEventRow.id)
        )
    )


def _parties(db: Session, batch_id: str, *, refused: bool) -> set[str]:
    """Parties and sites custody was handed to: recipients in hand-offs, receipt and infusion
    sites on the units, and recipients of server-recorded events (``refused``: also of stopped
    hand-offs)."""
    out: set[str] = set()
    for e in _edge_events(db, batch_id):
        out.update(v for k in ("to", "site") if isinstance(v := e.payload.get(k), str))
    for r in db.scalars(select(CustodyEventRow).where(CustodyEventRow.batch_id == batch_id)):
        if r.to_party and (refused or r.kind != "refused"):
            out.add(r.to_party)
    return out


def sites_involved(db: Session, coi: str) -> set[str]:
    """The batch's site and every party custody has been handed to (a hospital's staff hold
    their grants at the hospital's site id)."""
    b = batch_for(db, coi)
    return {b.site_id} | _parties(db, b.batch_id, refused=True)


def timeline(db: Session, coi: str) -> dict[str, Any]:
    b = batch_for(db, coi)
    edge = _edge_events(db, b.batch_id)
    items: list[dict[str, Any]] = []
    for e in edge:
        if e.kind == "batch.started":
            continue
        p = e.payload
        items.append(
            {
                "source": f"edge {e.unit_id} seq {e.seq}",
                "kind": e.kind.removeprefix("custody."),
                "at": p.get("at") or e.recorded_at,
                "from": p.get("from"),
                "to": p.get("to") or p.get("site"),
                "place": p.get("place") or p.get("site"),
                "signed_by": [s.get("printed_name") for s in p.get("signatures") or []],
                "detail": p.get("reason"),
            }
        )
    for r in _server_rows(db, coi):
        p = orjson.loads(r.payload)
        items.append(
            {
                "source": f"server #{r.id}",
                "kind": r.kind,
                "at": iso(r.at),
                "from": r.from_party,
                "to": r.to_party,
                "place": r.place,
                "signed_by": [s.get("printed_name") for s in p.get("signatures") or []],
                "detail": p.get("reason"),
            }
        )
    items.sort(key=lambda i: str(i["at"]).replace("Z", "+00:00"))
    moves = [i for i in items if i["kind"] in KINDS]
    holder = next((i["to"] for i in reversed(moves) if i["kind"] == "handoff"), b.site_id)
    return {
        "coi": coi,
        "batch_id": b.batch_id,
        "site_id": b.site_id,
        "holder": holder,
        "closed": any(i["kind"] == "infused" for i in moves),
        "events": items,
        "problems": [{"seq": p.seq, "message": p.message} for p in check_custody(edge)],
    }


def record(
    db: Session,
    actor: Principal,
    *,
    at: datetime,
    coi: str,
    kind: str,
    from_party: str | None,
    to_party: str,
    place: str,
    bag_scan: str,
    shipper_scan: str | None,
    parties: list[tuple[str, str, str]],  # (user id, password, meaning)
    licence_id: str | None,
    max_failures: int,
) -> CustodyEventRow:
    """Record a hand-off, receipt or infusion (the caller commits, also when this raises).

    The parties' passwords are checked first, each in its own short transaction (kept whatever
    follows), while this session holds no lock: SQLite has one writer, and a password check
    waiting for this request's own lock would wait forever.  Then the custody state (holder,
    receipt, infusion) is read and extended under the batch's row lock
    (:func:`server.batches.lock_batch`): two hand-offs of one bag at once are decided one after
    the other, and the second finds the bag already handed over."""
    if kind not in KINDS:
        raise Unprocessable(f"kind {kind!r} is not one of {', '.join(KINDS)}")
    _check_parties(kind, parties)
    for field_, value in (("place", place), ("to_party", to_party), ("from_party", from_party)):
        if value is not None:
            storable(field_, value)
    b = batch_for(db, coi)
    allowed_sites = actor.sites("custody.record")
    if (
        allowed_sites is not None
        and to_party not in allowed_sites
        and b.site_id not in allowed_sites
    ):
        mine = ", ".join(sorted(allowed_sites))
        raise Conflict(f"{actor.user_id} records custody only for their sites ({mine})")
    signers = _authenticate(db, parties, at=at, max_failures=max_failures)
    lock_batch(db, b.batch_id)
    tl = timeline(db, coi)
    if tl["closed"]:
        raise Conflict(f"COI {coi} was infused: its custody chain is closed")
    if kind == "handoff" and from_party != tl["holder"]:
        raise Conflict(f"custody of {coi} is with {tl['holder']!r}, not {from_party!r}")
    if kind == "infused" and not any(i["kind"] == "received" for i in tl["events"]):
        raise Conflict(f"COI {coi} was not received at the infusion site")
    if licence_id is not None:
        lic = db.get(Licence, licence_id)
        if lic is None:
            raise NotFound(f"licence {licence_id} is not registered")
        if lic.valid_until < at.date():
            raise Conflict(f"licence {licence_id} expired on {lic.valid_until}: transfer refused")
    # The scans: every one must carry this COI, or the hand-off stops and is recorded as such.
    for role, raw in (("bag", bag_scan), ("shipper", shipper_scan)):
        if raw is None:
            continue
        try:
            got = parse_scan(raw).coi
            problem = None if got == coi else f"it carries {got or 'no COI'}"
        except IdentifierError as e:
            problem = f"it does not parse: {e}"
        if problem is not None:
            reason = f"{role} scan does not match COI {coi}: {problem}"
            row = CustodyEventRow(
                coi=coi, batch_id=tl["batch_id"], kind="refused", from_party=from_party,
                to_party=to_party, place=place,
                payload=canonical({"role": role, "scanned": raw, "reason": reason}).decode(),
                recorded_by=actor.user_id, at=at,
            )  # fmt: skip
            db.add(row)
            for site in {tl["site_id"], to_party}:
                db.add(
                    Alert(kind="custody.refused", unit_id=None, site_id=site,
                          batch_id=tl["batch_id"], message=f"STOP at {place}: {reason}",
                          created_at=at)
                )  # fmt: skip
            audit.append(
                db, at=at, actor=actor.user_id, action="custody.refused", object_type="coi",
                object_id=coi, new={"scanned": raw, "role": role}, reason=reason,
            )  # fmt: skip
            raise Conflict(f"STOP: {reason}; nothing was handed over, recorded and alerted")
    payload: dict[str, Any] = {
        "coi": coi, "from": from_party, "to": to_party, "place": place, "bag": coi,
        "shipper": coi if shipper_scan else None, "licence": licence_id, "at": iso(at),
    }  # fmt: skip
    h = signed_content_hash(payload)
    payload["signatures"] = [{**s, "signed_hash": h} for s in signers]
    row = CustodyEventRow(
        coi=coi, batch_id=tl["batch_id"], kind=kind, from_party=from_party, to_party=to_party,
        place=place, payload=canonical(payload).decode(), recorded_by=actor.user_id, at=at,
    )  # fmt: skip
    db.add(row)
    db.flush()
    audit.append(
        db, at=at, actor=actor.user_id, action=f"custody.{kind}", object_type="coi",
        object_id=coi, new={"event": row.id, "from": from_party, "to": to_party, "place": place,
                            "signed_by": [s["user_id"] for s in signers]},
    )  # fmt: skip
    return row


def _check_parties(kind: str, parties: list[tuple[str, str, str]]) -> None:
    if kind == "handoff":
        meanings = sorted(m for _, _, m in parties)
        if meanings != ["handed_over", "received"] or parties[0][0] == parties[1][0]:
            raise Unprocessable(
                "a hand-off is signed by two different people: one 'handed_over', one 'received'"
            )
    elif len(parties) != 1:
        raise Unprocessable(f"a {kind} event is signed by one person")


def _authenticate(
    db: Session, parties: list[tuple[str, str, str]], *, at: datetime, max_failures: int
) -> list[dict[str, str]]:
    """Each party re-authenticates by password, each in a transaction of its own that is
    committed whatever the outcome (a failure counts towards the lockout even when the hand-off
    is refused later); the first refusal is raised."""
    signers = []
    for user_id, password, meaning in parties:
        with Session(db.get_bind()) as own:
            try:
                p = people.authenticate_password(
                    own, at=at, user_id=user_id, password=password, max_failures=max_failures,
                    purpose="custody",
                )  # fmt: skip
                signers.append(
                    {"user_id": p.user_id, "printed_name": p.printed_name, "meaning": meaning}
                )
            finally:
                own.commit()
    return signers


# -- transfer licences ----------------------------------------------------------------------


def add_licence(
    db: Session,
    actor: Principal,
    *,
    at: datetime,
    licence_id: str,
    classification: str,
    authority: str,
    holder: str,
    valid_until: date,
    links: list[tuple[str, str]],
    reason: str,
) -> Licence:
    if db.get(Licence, licence_id) is not None:
        raise Conflict(f"licence {licence_id} is already registered")
    for t, _ in links:
        if t not in ("material", "shipment"):
            raise Unprocessable(f"a licence links to a material or a shipment, not {t!r}")
    lic = Licence(
        licence_id=licence_id, classification=classification, authority=authority,
        holder=holder, valid_until=valid_until, alerted="", created_by=actor.user_id,
        created_at=at,
    )  # fmt: skip
    db.add(lic)
    db.flush()
    for t, o in links:
        db.add(LicenceLink(licence_id=licence_id, object_type=t, object_id=o))
    audit.append(
        db, at=at, actor=actor.user_id, action="licence.registered", object_type="licence",
        object_id=licence_id,
        new={"classification": classification, "authority": authority, "holder": holder,
             "valid_until": valid_until.isoformat(), "links": [list(x) for x in links]},
        reason=reason,
    )  # fmt: skip
    return lic


def licence_json(db: Session, lic: Licence, today: date) -> dict[str, Any]:
    links = db.scalars(select(LicenceLink).where(LicenceLink.licence_id == lic.licence_id))
    return {
        "licence_id": lic.licence_id,
        "classification": lic.classification,
        "authority": lic.authority,
        "holder": lic.holder,
        "valid_until": lic.valid_until.isoformat(),
        "days_left": (lic.valid_until - today).days,
        "links": [{"object_type": x.object_type, "object_id": x.object_id} for x in links],
    }


def check_licences(db: Session, *, at: datetime, warn_days: int) -> list[Alert]:
    """Alert once when a licence comes within ``warn_days`` of expiry, and once when it expires."""
    out = []
    today = at.date()
    for lic in db.scalars(select(Licence).order_by(Licence.valid_until)):
        state = (
            "expired"
            if lic.valid_until < today
            else "expiring"
            if lic.valid_until <= today + timedelta(days=warn_days)
            else ""
        )
        if not state or lic.alerted == state:
            continue
        links = ", ".join(
            f"{x.object_type} {x.object_id}"
            for x in db.scalars(select(LicenceLink).where(LicenceLink.licence_id == lic.licence_id))
        )
        a = Alert(
            kind=f"transfer.licence_{state}",
            unit_id=None,
            message=(
                f"licence {lic.licence_id} ({lic.classification}, {lic.authority}) "
                f"{'expired' if state == 'expired' else 'expires'} on {lic.valid_until}"
                f"{'; covers ' + links if links else ''}"
            ),
            created_at=at,
        )
        db.add(a)
        old, lic.alerted = lic.alerted, state
        audit.append(
            db, at=at, actor="system", action=f"licence.{state}", object_type="licence",
            object_id=lic.licence_id, old={"alerted": old}, new={"alerted": state},
        )  # fmt: skip
        out.append(a)
    return out


def receiving_sites(db: Session, batch_id: str) -> set[str]:
    """Where the product went (for late-result alerts): hand-off recipients and receipt sites."""
    return _parties(db, batch_id, refused=False)
