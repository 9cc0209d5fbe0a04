"""What a segment receipt carries of the transparency log (the unit checks it: edge/logwatch.py)."""

from __future__ import annotations

import base64
import logging
from typing import Any

from pydantic import BaseModel
from sqlalchemy import Connection
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session

from ebr_core.tlog.merkle import inclusion_proof
from server.log import store
from server.log.store import LogKey, Pending
from server.log.tables import LogCheckpoint

_log = logging.getLogger("ctgtp.server.log")


class ReceiptLog(BaseModel):
    """What a segment receipt carries of the log: the segment's leaf ``index`` (None when the
    segment stored nothing new), the checkpointed ``tree_size``, the ``inclusion`` proof (base64
    hashes; empty without an index) and the signed ``checkpoint`` note, with the witness
    cosignatures collected for it (none yet for a checkpoint signed by this ingest)."""

    index: int | None
    tree_size: int
    inclusion: list[str]
    checkpoint: str


def b64(hs: list[bytes]) -> list[str]:
    return [base64.b64encode(h).decode("ascii") for h in hs]


def receipt_log(db: Session, key: LogKey, index: int | Pending | None, at: Any) -> dict[str, Any]:
    """The ``log`` member of a segment receipt (:class:`ReceiptLog`).

    * With the segment's leaf ``index`` (SQLite: the leaf went into the tree in the ingest's
      transaction): called in that transaction, before its commit, so the checkpoint (signed
      now) commits with the leaf in one commit.
    * With a :class:`~server.log.store.Pending` leaf (PostgreSQL: queued by the ingest's
      transaction): the member is filled in right after that transaction commits, once the
      leaf is sequenced (:func:`server.log.store.after_sequencing`): the dict returned here is
      empty until then, and complete when the commit returns.
    * Without (nothing new stored): the latest checkpoint, signed first if the tree grew."""
    if isinstance(index, Pending):
        out: dict[str, Any] = {}
        store.after_sequencing(
            db, lambda bind: out.update(_sequenced(bind, key, index, at)), sign=(key, at)
        )
        return out
    if index is None:
        cp = store.current_checkpoint(db, key, at)
    else:
        cp = store.checkpoint_in_transaction(db, key, at)
    return _member(db, cp, index)


def _member(db: Session, cp: LogCheckpoint, index: int | None) -> dict[str, Any]:
    proof = (
        []
        if index is None
        else store.with_store(db, cp.size, lambda s: inclusion_proof(s, index, cp.size))
    )
    note = store.served_note(db, cp)  # with the witnesses' cosignatures collected so far
    return {"index": index, "tree_size": cp.size, "inclusion": b64(proof), "checkpoint": note}


def _sequenced(conn: Connection, key: LogKey, p: Pending, at: Any) -> dict[str, Any]:
    """The member for a queued leaf, after its transaction committed (on the connection that
    sequenced it): its index (sequenced by this request's commit or by another writer's that
    came first), the checkpoint covering it and the proof.  Should the sequencing fail (the
    database away, a lock timeout), the leaf stays queued for the next sequencer and the
    receipt carries the latest checkpoint without an index, as for a segment stored before:
    the unit checks the checkpoint's consistency, raises no alert, and the segment's leaf is
    proved by ``server log verify``."""
    with Session(bind=conn) as db:
        index = store.locate(db, p)
        if index is not None:
            return _member(db, _covering(db, key, index, at), index)
    # the sequencing after the commit failed: once more, here
    try:
        store.sequence_on(conn, sign=(key, at))
    except SQLAlchemyError as e:
        _log.warning("log sequencer for a receipt: %s", e)
        conn.rollback()
    with Session(bind=conn) as db:
        index = store.locate(db, p)
        cp = _covering(db, key, index, at)
        return _member(db, cp, None if index is None or index >= cp.size else index)


def _covering(db: Session, key: LogKey, index: int | None, at: Any) -> LogCheckpoint:
    """The checkpoint the sequencing signed, or a later one (signed here if none covers
    ``index``)."""
    cp = store.latest_checkpoint(db)
    if cp is None or index is None or cp.size <= index:
        cp = store.current_checkpoint(db, key, at)
    return cp
