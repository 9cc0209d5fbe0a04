"""Database models (SQLAlchemy 2, typed) and engine setup for SQLite and PostgreSQL.

Events are stored as the exact canonical line the unit signed, plus indexed columns; events,
checkpoints, forks and alerts are append-only (SQLite triggers / PostgreSQL rules refuse UPDATE
and DELETE of events and checkpoints).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

from sqlalchemy import (
    BigInteger,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    create_engine,
    event,
)
from sqlalchemy.engine import Engine
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class Base(DeclarativeBase):
    pass


class Site(Base):
    __tablename__ = "sites"
    site_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))


class Unit(Base):
    __tablename__ = "units"
    unit_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    site_id: Mapped[str] = mapped_column(ForeignKey("sites.site_id"))
    status: Mapped[str] = mapped_column(String(16), default="active")  # active | revoked
    head_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    head_hash: Mapped[str] = mapped_column(String(64))
    checkpoint_seq: Mapped[int] = mapped_column(BigInteger, default=0)
    enrolled_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class UnitKey(Base):
    __tablename__ = "unit_keys"
    key_id: Mapped[str] = mapped_column(String(16), primary_key=True)
    unit_id: Mapped[str] = mapped_column(ForeignKey("units.unit_id"), index=True)
    public_key: Mapped[str] = mapped_column(String(64))  # base64 of the 32 raw bytes
    status: Mapped[str] = mapped_column(String(16), default="active")  # active|retired|revoked
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
    __table_args__ = (Index("events_batch", "batch_id", "unit_id", "seq"),)


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
    __tablename__ = "alerts"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    kind: Mapped[str] = mapped_column(String(64))
    unit_id: Mapped[str | None] = mapped_column(String(64))
    message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


_SQLITE_GUARDS = [
    f"CREATE TRIGGER IF NOT EXISTS {t}_no_{op.lower()} BEFORE {op} ON {t} "
    f"BEGIN SELECT RAISE(ABORT, '{t} are append-only: {op} refused'); END"
    for t in ("events", "checkpoints", "forks")
    for op in ("UPDATE", "DELETE")
]
_PG_GUARDS = [
    (
        "CREATE OR REPLACE FUNCTION ctgtp_append_only() RETURNS trigger AS $$ BEGIN RAISE "
        "EXCEPTION '% are append-only: % refused', TG_TABLE_NAME, TG_OP; END $$ LANGUAGE plpgsql"
    ),
    *[
        f"DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_trigger WHERE tgname = '{t}_append_only') "  # noqa: S608 - fixed table names
        f"THEN CREATE TRIGGER {t}_append_only BEFORE UPDATE OR DELETE ON {t} FOR EACH ROW "
        f"EXECUTE FUNCTION ctgtp_append_only(); END IF; END $$"
        for t in ("events", "checkpoints", "forks")
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


def append_only_guards(dialect: str) -> list[str]:
    return _SQLITE_GUARDS if dialect == "sqlite" else _PG_GUARDS


def create_schema(engine: Engine) -> None:
    """Bring the database to the current schema with the Alembic migrations."""
    from alembic import command
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(Path(__file__).with_name("migrations")))
    cfg.set_main_option("sqlalchemy.url", engine.url.render_as_string(hide_password=False))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
