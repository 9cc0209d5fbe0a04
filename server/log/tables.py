"""The transparency log's tables (migration 0009), on :class:`server.db.Base`.

* ``tlog_leaves``: one row per leaf, its bytes and leaf hash, written in the transaction of the
  record it logs (append-only);
* ``tlog_nodes``: every complete subtree of level >= 1 as the frontier makes it (append-only):
  a proof or a tile is a few reads of it;
* ``tlog_head``: the one row holding the tree size and its frontier (the right edge's
  perfect-subtree roots); an append updates it under its row lock;
* ``tlog_checkpoints``: one signed checkpoint (a C2SP signed note) per size signed
  (append-only);
* ``tlog_cosignatures`` (migration 0011): witness cosignature lines pushed for a stored
  checkpoint, each verified under a configured witness key before it is kept (append-only);
* ``tlog_pending`` (migration 0012): leaves written by a writer's transaction and not yet in
  the tree (PostgreSQL): the sequencer (:func:`server.log.store.sequence`) moves them into
  ``tlog_leaves`` in its own short transaction and deletes them here.  A queue, not a record:
  its rows live for milliseconds.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, DateTime, Integer, LargeBinary, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from server.db import Base

APPEND_ONLY_0009 = ("tlog_leaves", "tlog_nodes", "tlog_checkpoints")
APPEND_ONLY_0011 = ("tlog_cosignatures",)


class LogLeaf(Base):
    __tablename__ = "tlog_leaves"
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    leaf: Mapped[bytes] = mapped_column(LargeBinary)
    leaf_hash: Mapped[bytes] = mapped_column(LargeBinary)


class LogNode(Base):
    __tablename__ = "tlog_nodes"
    level: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    idx: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    hash: Mapped[bytes] = mapped_column(LargeBinary)


class LogHead(Base):
    __tablename__ = "tlog_head"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=False)
    size: Mapped[int] = mapped_column(BigInteger)
    peaks: Mapped[bytes] = mapped_column(LargeBinary)  # the frontier's peaks, 32 bytes each


class LogCheckpoint(Base):
    __tablename__ = "tlog_checkpoints"
    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    note: Mapped[str] = mapped_column(Text)
    signed_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class LogPending(Base):
    """A leaf committed by its writer and waiting for the sequencer (``id``: queue order)."""

    __tablename__ = "tlog_pending"
    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer, "sqlite"), primary_key=True, autoincrement=True
    )
    leaf: Mapped[bytes] = mapped_column(LargeBinary)


class LogCosignature(Base):
    """One witness's cosignature line (``— <name> <base64>``, no newline) of the checkpoint of
    ``size``; the same line twice is one row."""

    __tablename__ = "tlog_cosignatures"
    size: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=False)
    witness_name: Mapped[str] = mapped_column(String(200), primary_key=True)
    line: Mapped[str] = mapped_column(Text, primary_key=True)
    received_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
