"""What the log holds of the server's own records, and the one listener that appends it.

Every new row of a logged table (QA signatures, dispositions, deviation closures, custody events
recorded through the server, licences and their links, audit entries), and every change of a
licence, becomes a typed leaf (:mod:`ebr_core.tlog.entries`) written by one SQLAlchemy
``after_flush`` listener on :class:`~sqlalchemy.orm.Session`, through the session's connection,
in the flush's transaction (:func:`server.log.store.enqueue`: queued on PostgreSQL and sequenced
right after the commit, into the tree at once on SQLite): the leaf commits with the row or not
at all, and no domain module knows the log exists.  Segments are logged by ingest (they are
written through the driver's bulk path, not the ORM).

A row is bound by ``content_hash``: the SHA-256 of the canonical JSON of every column of the row
as the database holds it (read back after the flush), with the table's name.  ``server log
verify`` recomputes it from the row (:func:`content_hash` is the one function both use).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

import orjson
from sqlalchemy import Connection, MetaData, Table, and_, event, inspect, select
from sqlalchemy.orm import Session, UOWTransaction

from ebr_core.canonical import canonical
from ebr_core.tlog.entries import EntryKind, LogEntry, coi_digest
from server.db import (
    AuditEntry,
    ClosureSignature,
    CustodyEventRow,
    DeviationAction,
    DeviationLink,
    Disposition,
    Licence,
    LicenceLink,
    QaSignature,
    Unit,
)
from server.log.store import enqueue, install_sequencing

ROW_TAG = b"ctgtp/tlog-row/v1\x00"

Fields = dict[str, str | int]


def _norm(v: Any) -> Any:
    if isinstance(v, datetime):
        if v.tzinfo is None:  # SQLite hands back naive UTC
            v = v.replace(tzinfo=UTC)
        return v.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    if isinstance(v, date):
        return v.isoformat()
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v).hex()
    if isinstance(v, float):
        return repr(v)
    return v


def content_hash(table: str, row: Mapping[Any, Any]) -> str:
    """SHA-256 (hex) of the row's canonical content: its table and every column's value.
    NULL columns are left out, so a nullable column added by a later migration does not
    change the hash of the rows logged before it."""
    body = {"table": table, "row": {str(k): _norm(v) for k, v in row.items() if v is not None}}
    return hashlib.sha256(ROW_TAG + canonical(body)).hexdigest()


@dataclass(frozen=True)
class Logged:
    """A logged table: the entry kind, the fields its leaf carries of the row (None: this row is
    not logged, e.g. a deviation comment), whether a change is logged too, and whether the row's
    key is written hashed (a key that could name a patient or a shipment)."""

    model: type[Any]
    kind: EntryKind
    fields: Callable[[Mapping[Any, Any]], Fields | None]
    on_update: bool = False
    hashed_key: bool = False

    @property
    def table(self) -> Table:
        t = self.model.__table__
        assert isinstance(t, Table)
        return t

    def key(self, row: Mapping[Any, Any]) -> str:
        pk = [_norm(row[c.name]) for c in self.table.primary_key.columns]
        text = orjson.dumps(pk).decode()
        return hashlib.sha256(text.encode()).hexdigest() if self.hashed_key else text

    def entry(self, row: Mapping[Any, Any]) -> LogEntry | None:
        f = self.fields(row)
        if f is None:
            return None
        name = str(self.table.name)
        return LogEntry(
            self.kind,
            {**f, "content_hash": content_hash(name, row), "table": name, "key": self.key(row)},
        )


def _closure(r: Mapping[Any, Any]) -> Fields | None:
    if r["action"] != "close":
        return None
    return {"batch_id": r["batch_id"], "deviation_id": r["deviation_id"]}


def hex64(v: Any) -> str:
    """A hash column as a leaf carries it; a value that is not 64 lowercase hex digits (a
    record from before the column's rule) is carried as its SHA-256."""
    s = str(v)
    if len(s) == 64 and all(c in "0123456789abcdef" for c in s):
        return s
    return hashlib.sha256(s.encode()).hexdigest()


LOGGED: tuple[Logged, ...] = (
    Logged(
        QaSignature,
        EntryKind.QA_SIGNATURE,
        lambda r: {"batch_id": r["batch_id"], "record_hash": hex64(r["record_hash"])},
    ),
    Logged(
        Disposition,
        EntryKind.DISPOSITION,
        lambda r: {"batch_id": r["batch_id"], "disposition": r["disposition"]},
    ),
    Logged(DeviationAction, EntryKind.DEVIATION_CLOSURE, _closure),
    # the closure's e-signature (migration 0010): who, when, why, on which record
    Logged(
        ClosureSignature,
        EntryKind.DEVIATION_CLOSURE,
        lambda r: {
            "batch_id": r["batch_id"],
            "deviation_id": r["deviation_id"],
            "record_hash": hex64(r["record_hash"]),
        },
    ),
    Logged(
        DeviationLink,
        EntryKind.DEVIATION_LINK,
        lambda r: {"batch_id": r["batch_id"], "deviation_id": r["deviation_id"]},
    ),
    Logged(
        CustodyEventRow,
        EntryKind.CUSTODY,
        lambda r: {"coi": coi_digest(r["coi"]), "batch_id": r["batch_id"]},
    ),
    Logged(Licence, EntryKind.LICENCE, lambda r: {"licence_id": r["licence_id"]}, on_update=True),
    Logged(
        LicenceLink,
        EntryKind.LICENCE,
        lambda r: {"licence_id": r["licence_id"]},
        hashed_key=True,
    ),
)
BY_MODEL: dict[type[Any], Logged] = {lg.model: lg for lg in LOGGED}
BY_TABLE: dict[str, Logged] = {str(lg.table.name): lg for lg in LOGGED}


def audit_entry(seq: int, hash_: str) -> LogEntry:
    return LogEntry(EntryKind.AUDIT, {"seq": seq, "hash": hash_})


def segment_entry(unit_id: str, first_seq: int, last_seq: int, head_hash: str) -> LogEntry:
    return LogEntry(
        EntryKind.SEGMENT,
        {"unit_id": unit_id, "first_seq": first_seq, "last_seq": last_seq, "head_hash": head_hash},
    )


def read_row(conn: Connection, lg: Logged, pk: tuple[Any, ...]) -> Mapping[Any, Any] | None:
    t = lg.table
    cond = and_(*[c == v for c, v in zip(t.primary_key.columns, pk, strict=True)])
    return conn.execute(select(t).where(cond)).mappings().one_or_none()


def _pk(o: Any) -> tuple[Any, ...]:
    # the primary key from the attributes (autoincrement ids are set by the INSERT just made)
    return tuple(inspect(o).mapper.primary_key_from_instance(o))


def _after_flush(session: Session, _ctx: UOWTransaction) -> None:
    audits: list[AuditEntry] = []
    rows: list[tuple[Logged, tuple[Any, ...]]] = []
    for o in session.new:
        if isinstance(o, AuditEntry):
            audits.append(o)
        elif (lg := BY_MODEL.get(type(o))) is not None:
            rows.append((lg, _pk(o)))
    for o in session.dirty:
        lg = BY_MODEL.get(type(o))
        if lg is not None and lg.on_update and session.is_modified(o):
            rows.append((lg, _pk(o)))
    if not audits and not rows:
        return
    conn = session.connection()
    entries = [audit_entry(a.seq, hex64(a.hash)) for a in sorted(audits, key=lambda a: a.seq)]
    for lg, pk in sorted(rows, key=lambda x: (x[0].table.name, repr(x[1]))):
        row = read_row(conn, lg, pk)
        if row is not None:
            e = lg.entry(row)
            if e is not None:
                entries.append(e)
    enqueue(session, [e.to_bytes() for e in entries])


def install() -> None:
    """Register the listeners on every Session (idempotent): this one, and the sequencing of
    what a session queued right after its commit."""
    if not event.contains(Session, "after_flush", _after_flush):
        event.listen(Session, "after_flush", _after_flush)
    install_sequencing()


install()


def existing_records(conn: Connection) -> Iterator[bytes]:
    """The leaves of what a database held before it had a log (migration 0009): its audit
    entries, every logged row, and one segment per unit up to its stored head."""
    for seq, h in conn.execute(select(AuditEntry.seq, AuditEntry.hash).order_by(AuditEntry.seq)):
        yield audit_entry(int(seq), hex64(h)).to_bytes()
    for lg in LOGGED:
        if not inspect(conn).has_table(lg.table.name):
            continue  # made by a later migration: nothing to log yet
        # the table as this database has it (a later model may have more columns)
        t = Table(lg.table.name, MetaData(), autoload_with=conn)
        for row in conn.execute(select(t).order_by(*t.primary_key.columns)).mappings():
            e = lg.entry(row)
            if e is not None:
                yield e.to_bytes()
    units = select(Unit.unit_id, Unit.head_seq, Unit.head_hash).order_by(Unit.unit_id)
    for unit_id, head_seq, head_hash in conn.execute(units):
        if head_seq > 0:
            yield segment_entry(str(unit_id), 1, int(head_seq), hex64(head_hash)).to_bytes()
