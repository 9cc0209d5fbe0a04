"""Database models (SQLAlchemy 2, typed) and engine setup for SQLite and PostgreSQL.

Events are stored as the exact canonical line the unit signed, plus indexed columns; events,
checkpoints, forks and alerts are append-only (SQLite triggers / PostgreSQL rules refuse UPDATE
and DELETE of events and checkpoints).  Migrating (:func:`migrate`) is a deploy step; a server
refuses a database not at the migrations' head (:func:`require_head`).

Over 400 lines because it is the one declarative registry of every table (the migrations and
the schema test compare against it): a table's columns read best in one place.
"""

from __future__ import annotations

from datetime import date, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
    create_engine,
    event,
    text,
)
from sqlalchemy.engine import Dialect, Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column, relationship

from ebr_core import vocab


class Base(DeclarativeBase):
    pass


class Vocab(TypeDecorator[str]):
    """A status column typed by its vocabulary (a ``StrEnum`` of :mod:`ebr_core.vocab`): an
    ORM write of a word outside it is refused at the flush, before the database sees it, naming
    the words allowed (:func:`_check_vocabularies`); the database's CHECK constraint (migration
    0008) refuses it from any other writer.  A query may compare with any word (an unknown one
    simply matches nothing).  Stored as the word (``VARCHAR(length)``), read back as a plain
    ``str``, so stored records read as before."""

    impl = String
    cache_ok = True

    def __init__(self, words: type[StrEnum], length: int) -> None:
        super().__init__(length)
        self.words = words

    def process_bind_param(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else str(value)

    def process_result_value(self, value: Any, dialect: Dialect) -> str | None:
        return None if value is None else str(value)

    def check(self, column: str, value: Any) -> None:
        if value is None or value in self.words._value2member_map_:
            return
        allowed = ", ".join(w.value for w in self.words)
        raise ValueError(
            f"{column}: {value!r} is not a word of {self.words.__name__}: expected one of {allowed}"
        )


@event.listens_for(Session, "before_flush")
def _check_vocabularies(session: Session, _ctx: Any, _instances: Any) -> None:
    """Every new or changed ORM row's vocabulary columns hold words of their vocabulary."""
    for obj in (*session.new, *session.dirty):
        table = getattr(obj, "__table__", None)
        if table is None:
            continue
        for col in table.columns:
            if isinstance(col.type, Vocab):
                col.type.check(f"{table.name}.{col.name}", getattr(obj, col.key, None))


class Site(Base):
    __tablename__ = "sites"
    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))


class Unit(Base):
    __tablename__ = "units"
    unit_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.site_id"))
    status: Mapped[str] = mapped_column(Vocab(vocab.UnitStatus, 16), default="active")
    head_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    head_hash: Mapped[str] = mapped_column(String(64))
    checkpoint_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    enrolled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UnitKey(Base):
    __tablename__ = "unit_keys"
    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    unit_id: Mapped[str] = mapped_column(ForeignKey("units.unit_id"), index=True)
    public_key: Mapped[str] = mapped_column(String(64))  # base64 of the 32 raw bytes
    status: Mapped[str] = mapped_column(Vocab(vocab.KeyStatus, 16), default="active")
    added_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class EventRow(Base):
    __tablename__ = "events"
    unit_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    hash: Mapped[str] = mapped_column(String(64))
    batch_id: Mapped[str | None] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[str] = mapped_column(String(32))
    line: Mapped[bytes] = mapped_column(LargeBinary)
    __table_args__ = (
        Index("events_batch", "batch_id", "unit_id", "seq"),
        # since 0004: a batch's step events without its telemetry (server.projections)
        Index(
            "events_batch_steps",
            "batch_id",
            "unit_id",
            "seq",
            sqlite_where=text("kind <> 'reading.recorded'"),
            postgresql_where=text("kind <> 'reading.recorded'"),
        ),
    )


class CheckpointRow(Base):
    __tablename__ = "checkpoints"
    unit_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    line: Mapped[bytes] = mapped_column(LargeBinary)


class Nonce(Base):
    __tablename__ = "nonces"
    unit_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    nonce: Mapped[str] = mapped_column(String(32), primary_key=True)
    seen_at: Mapped[int] = mapped_column(BigInteger, index=True)


class Fork(Base):
    """Evidence of a refused fork: the offered segment is kept, never applied."""

    __tablename__ = "forks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    unit_id: Mapped[str] = mapped_column(String(64), index=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    stored_hash: Mapped[str] = mapped_column(String(64))
    offered_hash: Mapped[str] = mapped_column(String(64))
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    evidence: Mapped[bytes] = mapped_column(LargeBinary)


class Alert(Base):
    """A raised alert.  Append-only (since 0007): nothing ever marks one as handled in place;
    acknowledging it adds an :class:`AlertAck` (server.alerts)."""

    __tablename__ = "alerts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    unit_id: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    site_id: Mapped[str | None] = mapped_column(String(64), index=True)  # since 0002
    batch_id: Mapped[str | None] = mapped_column(String(64), index=True)  # indexed since 0007
    acks: Mapped[list[AlertAck]] = relationship(lazy="selectin", order_by="AlertAck.id")


class AlertAck(Base):
    """Someone took note of an alert: who, when, and what they noted (migration 0007).
    Append-only; one per alert."""

    __tablename__ = "alert_acks"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("alerts.id"))
    user_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    note: Mapped[str] = mapped_column(Text)
    __table_args__ = (Index("alert_acks_alert", "alert_id", unique=True),)


# -- people, quality review and the audit trail (migration 0002) -------------------------------


class Person(Base):
    __tablename__ = "people"
    user_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    printed_name: Mapped[str] = mapped_column(String(200))
    password_hash: Mapped[str] = mapped_column(String(200))
    status: Mapped[str] = mapped_column(Vocab(vocab.PersonStatus, 16), default="active")
    failed_logins: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    # since 0006: a password set by someone else (creation, reset) must be changed by its owner
    # before the account does anything else; the id's confusable skeleton is unique
    must_change_password: Mapped[bool] = mapped_column(Boolean, default=False)
    id_skeleton: Mapped[str | None] = mapped_column(String(128))
    __table_args__ = (Index("people_id_skeleton", "id_skeleton", unique=True),)


class RoleGrant(Base):
    __tablename__ = "role_grants"
    user_id: Mapped[str] = mapped_column(ForeignKey("people.user_id"), primary_key=True)
    role: Mapped[str] = mapped_column(Vocab(vocab.Role, 32), primary_key=True)
    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)  # "*": every site


class Token(Base):
    __tablename__ = "tokens"
    token_hash: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(ForeignKey("people.user_id"), index=True)
    expires_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    revoked: Mapped[bool] = mapped_column(Boolean, default=False)
    # since 0010: the absolute end of a session whose expiry slides with use (server.people.auth);
    # None until its first renewal
    not_after: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))


class SpecRow(Base):
    __tablename__ = "specs"
    spec_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    version: Mapped[str] = mapped_column(String(32), primary_key=True)
    content: Mapped[str] = mapped_column(Text)  # canonical JSON
    content_hash: Mapped[str] = mapped_column(String(64))
    published_by: Mapped[str] = mapped_column(String(64))
    published_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class BatchSummary(Base):
    """The review queue's projection, kept current by ingest (one upsert per batch a segment
    touches) and by review actions; with the batch's event head (count, last seq and hash) that
    signatures bind (see server.projections)."""

    __tablename__ = "batches"
    batch_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    unit_id: Mapped[str] = mapped_column(String(64))
    site_id: Mapped[str] = mapped_column(String(64))
    coi: Mapped[str | None] = mapped_column(String(64), index=True)
    status: Mapped[str] = mapped_column(Vocab(vocab.BatchStatus, 16))
    events: Mapped[int] = mapped_column(BigInteger)
    exceptions: Mapped[int] = mapped_column(Integer)
    completed_at: Mapped[str | None] = mapped_column(String(32))
    review_state: Mapped[str] = mapped_column(Vocab(vocab.ReviewState, 24))
    # since 0004: the batch's last event (seq, hash) and its telemetry count
    last_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    head_hash: Mapped[str] = mapped_column(String(64), default="")
    readings: Mapped[int] = mapped_column(BigInteger, default=0)
    __table_args__ = (Index("batches_queue", "review_state", "site_id", "completed_at"),)


class BatchProjection(Base):
    """A batch's step state, timeline and telemetry summary as JSON, with its digest, kept by
    ingest (server.projections); checked on every read and rebuilt from the events if unsound."""

    __tablename__ = "batch_projections"
    batch_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    upto_seq: Mapped[int] = mapped_column(BigInteger)
    body: Mapped[str] = mapped_column(Text)
    digest: Mapped[str] = mapped_column(String(64))


class ResultSet(Base):
    __tablename__ = "result_sets"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(64), index=True)
    spec_id: Mapped[str] = mapped_column(String(64))
    spec_version: Mapped[str] = mapped_column(String(32))
    results: Mapped[str] = mapped_column(Text)  # canonical JSON
    entered_by: Mapped[str] = mapped_column(String(64))
    entered_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    reason: Mapped[str] = mapped_column(Text)


class DeviationAction(Base):
    __tablename__ = "deviation_actions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(64), index=True)
    deviation_id: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(Vocab(vocab.DeviationActionKind, 16))
    text: Mapped[str] = mapped_column(Text)
    user_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class ClosureSignature(Base):
    """The e-signature that closed one deviation (migration 0010): who (printed name), when,
    the meaning (``closed``), the reason, and what it covers (the deviation as it was, and the
    record hash it was signed on).  One per closure, also when several deviations are closed
    with one password; append-only."""

    __tablename__ = "closure_signatures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(64), index=True)
    deviation_id: Mapped[str] = mapped_column(String(64))
    action_id: Mapped[int] = mapped_column(ForeignKey("deviation_actions.id"))
    user_id: Mapped[str] = mapped_column(String(64))
    printed_name: Mapped[str] = mapped_column(String(200))
    meaning: Mapped[str] = mapped_column(String(16))  # closed
    reason: Mapped[str] = mapped_column(Text)
    record_hash: Mapped[str] = mapped_column(String(64))
    covers: Mapped[str] = mapped_column(Text)  # canonical JSON: the deviation as signed
    signed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    __table_args__ = (Index("closure_signatures_action", "action_id", unique=True),)


class DeviationLink(Base):
    """QA linked a deviation to a related one (migration 0010): who, when, why.  Append-only;
    the unit's own links (``deviation.linked`` events) stay in the events."""

    __tablename__ = "deviation_links"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(64), index=True)
    deviation_id: Mapped[str] = mapped_column(String(64))
    linked_to: Mapped[str] = mapped_column(String(64))
    reason: Mapped[str] = mapped_column(Text)
    user_id: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class QaSignature(Base):
    __tablename__ = "qa_signatures"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(64), index=True)
    jurisdiction: Mapped[str] = mapped_column(String(16))
    user_id: Mapped[str] = mapped_column(String(64))
    printed_name: Mapped[str] = mapped_column(String(200))
    meaning: Mapped[str] = mapped_column(Vocab(vocab.Meaning, 16))
    reason: Mapped[str] = mapped_column(Text)
    record_hash: Mapped[str] = mapped_column(String(64))
    evaluation_hash: Mapped[str] = mapped_column(String(64))
    signed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Disposition(Base):
    __tablename__ = "dispositions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(64), index=True)
    jurisdiction: Mapped[str] = mapped_column(String(16))
    # released | conditional_release | exceptional_release | rejected
    disposition: Mapped[str] = mapped_column(Vocab(vocab.Disposition, 24))
    signature_id: Mapped[int] = mapped_column(ForeignKey("qa_signatures.id"))
    pending: Mapped[str] = mapped_column(Text)  # JSON list of attributes still pending
    decided_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class OosCase(Base):
    """The out-of-specification exceptional release workflow for one batch and jurisdiction."""

    __tablename__ = "oos_cases"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    batch_id: Mapped[str] = mapped_column(String(64), index=True)
    jurisdiction: Mapped[str] = mapped_column(String(16))
    # requested | evaluated | accepted | released | notified
    state: Mapped[str] = mapped_column(Vocab(vocab.OosState, 16))
    physician: Mapped[str] = mapped_column(String(200))
    request_text: Mapped[str] = mapped_column(Text)
    requested_by: Mapped[str] = mapped_column(String(64))
    requested_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    risk_evaluation: Mapped[str | None] = mapped_column(Text)
    evaluated_by: Mapped[str | None] = mapped_column(String(64))
    evaluated_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    acceptance_text: Mapped[str | None] = mapped_column(Text)
    accepted_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    released_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    notification_due_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    notified_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True))
    notification_reference: Mapped[str | None] = mapped_column(Text)


class AuditEntry(Base):
    """One server write: who, what, when, old and new value, reason; hash-chained in its stream
    (server.audit.trail).  ``seq`` is the global id, for paging and export: assigned in append
    order (a PostgreSQL sequence since 0012, so a rolled-back append leaves a gap), never a
    chain position.  ``stream`` and ``stream_seq`` (since 0012): the stream the entry is chained
    in and its place there, 1, 2, 3, ...; NULL in both for the entries of the legacy chain,
    chained by ``seq`` before streams existed.  ``xid`` (since 0014, PostgreSQL only): the
    writing transaction's id, for paging without gaps (``server.audit.trail.page``); not
    covered by the hash; NULL for the entries stored before 0014 and on SQLite."""

    __tablename__ = "audit_trail"
    seq: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    at: Mapped[str] = mapped_column(String(32))
    actor: Mapped[str] = mapped_column(String(64), index=True)
    action: Mapped[str] = mapped_column(String(64))
    object_type: Mapped[str] = mapped_column(String(32))
    object_id: Mapped[str] = mapped_column(String(128))
    old: Mapped[str | None] = mapped_column(Text)  # canonical JSON
    new: Mapped[str | None] = mapped_column(Text)
    reason: Mapped[str | None] = mapped_column(Text)
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))
    stream: Mapped[str | None] = mapped_column(String(200))
    stream_seq: Mapped[int | None] = mapped_column(BigInteger)
    xid: Mapped[int | None] = mapped_column(BigInteger)
    __table_args__ = (
        Index("audit_object", "object_type", "object_id"),
        Index("audit_stream", "stream", "stream_seq", unique=True),
        Index("audit_visible", "xid", "seq"),
    )


class AuditHead(Base):
    """One row per audit stream (migration 0012): its last entry's place and hash.  An append
    updates its stream's row first, so appends to one stream are serialised by that row's lock
    and appends to different streams never wait for each other.  The legacy chain's head is
    the row of stream ``legacy``."""

    __tablename__ = "audit_heads"
    stream: Mapped[str] = mapped_column(String(200), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))


# -- custody and transfer documentation (migration 0003) --------------------------------------


class CustodyEventRow(Base):
    """A custody event recorded through the server API (away from any unit: courier, infusion
    site); edge-recorded custody events stay in ``events``.  Append-only."""

    __tablename__ = "custody_events"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    coi: Mapped[str] = mapped_column(String(64), index=True)
    batch_id: Mapped[str] = mapped_column(String(64))
    kind: Mapped[str] = mapped_column(Vocab(vocab.CustodyStep, 32))
    from_party: Mapped[str | None] = mapped_column(String(64))
    to_party: Mapped[str | None] = mapped_column(String(64))  # the receiving party or site
    place: Mapped[str] = mapped_column(String(200))
    payload: Mapped[str] = mapped_column(Text)  # canonical JSON with scans and signatures
    recorded_by: Mapped[str] = mapped_column(String(64))
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class Licence(Base):
    """An export/transfer licence and its classification; materials and shipments link to it."""

    __tablename__ = "licences"
    licence_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    classification: Mapped[str] = mapped_column(String(64))  # e.g. EAR99, ECCN 1C991
    authority: Mapped[str] = mapped_column(String(120))
    holder: Mapped[str] = mapped_column(String(200))
    valid_until: Mapped[date] = mapped_column(Date)
    alerted: Mapped[str] = mapped_column(String(16), default="")  # ""|expiring|expired
    created_by: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LicenceLink(Base):
    __tablename__ = "licence_links"
    licence_id: Mapped[str] = mapped_column(ForeignKey("licences.licence_id"), primary_key=True)
    object_type: Mapped[str] = mapped_column(String(16), primary_key=True)  # material|shipment
    object_id: Mapped[str] = mapped_column(String(128), primary_key=True, index=True)


APPEND_ONLY_0001 = ("events", "checkpoints", "forks")
APPEND_ONLY_0002 = (
    "audit_trail",
    "result_sets",
    "deviation_actions",
    "qa_signatures",
    "dispositions",
)
APPEND_ONLY_0003 = ("custody_events",)
APPEND_ONLY_0007 = ("alerts", "alert_acks")
APPEND_ONLY_0010 = ("closure_signatures", "deviation_links")


def _sqlite_guards(tables: tuple[str, ...]) -> list[str]:
    return [
        f"CREATE TRIGGER IF NOT EXISTS {t}_no_{op.lower()} BEFORE {op} ON {t} "
        f"BEGIN SELECT RAISE(ABORT, '{t} are append-only: {op} refused'); END"
        for t in tables
        for op in ("UPDATE", "DELETE")
    ]


def _pg_guards(tables: tuple[str, ...]) -> list[str]:
    return [
        (
            "CREATE OR REPLACE FUNCTION ctgtp_append_only() RETURNS trigger AS $$ BEGIN RAISE "
            "EXCEPTION '% are append-only: % refused', TG_TABLE_NAME, TG_OP; END $$ "
            "LANGUAGE plpgsql"
        ),
        *[
            "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_trigger "  # noqa: S608 - fixed table names
            f"WHERE tgname = '{t}_append_only') THEN CREATE TRIGGER {t}_append_only "
            f"BEFORE UPDATE OR DELETE ON {t} FOR EACH ROW "
            f"EXECUTE FUNCTION ctgtp_append_only(); END IF; END $$"
            for t in tables
        ],
    ]


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        path = url.split(":///", 1)[-1]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        eng = create_engine(url, connect_args={"check_same_thread": False})

        @event.listens_for(eng, "connect")
        def _pragmas(conn: object, _rec: object) -> None:
            cur = conn.cursor()  # type: ignore[attr-defined]
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=FULL")  # a receipt means the segment is on disk
            cur.execute("PRAGMA busy_timeout=10000")
            cur.close()

        return eng
    return create_engine(url, pool_pre_ping=True)


def append_only_guards(dialect: str, tables: tuple[str, ...] = APPEND_ONLY_0001) -> list[str]:
    """Statements that make ``tables`` refuse UPDATE and DELETE (triggers on both databases)."""
    return _sqlite_guards(tables) if dialect == "sqlite" else _pg_guards(tables)


class SchemaNotAtHead(RuntimeError):
    """The database is not at the migrations' head: the server does not start on it."""


def _alembic(engine: Engine) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    return cfg


def migrate(engine: Engine) -> None:
    """Bring the database to the current schema with the Alembic migrations: a deploy step
    (``ctgtp server migrate``), run once, never by a starting server (several workers starting
    at once would race)."""
    from alembic import command

    cfg = _alembic(engine)
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


def revisions(engine: Engine) -> tuple[str | None, str | None]:
    """(the database's revision, the migrations' head); None: no revision (an empty database)."""
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    head = ScriptDirectory.from_config(_alembic(engine)).get_current_head()
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision(), head


def require_head(engine: Engine) -> None:
    """Raise :class:`SchemaNotAtHead`, naming the command that fixes it, unless the database is
    at the migrations' head."""
    current, head = revisions(engine)
    if current != head:
        where = engine.url.render_as_string(hide_password=True)
        raise SchemaNotAtHead(
            f"the database {where} is at schema revision {current or '(none: empty)'}, this "
            f"server needs {head}: run `ctgtp server migrate` (with the same --data-dir or "
            "--database-url) first"
        )
