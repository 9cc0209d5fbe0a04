"""What a segment receipt carries of the transparency log (the unit checks it: edge/logwatch.py)."""

from __future__ import annotations

import base64
from typing import Any

from pydantic import BaseModel
from sqlalchemy.orm import Session

from ebr_core.tlog.merkle import inclusion_proof
from server.log import store
from server.log.store import LogKey


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


def receipt_log(db: Session, key: LogKey, index: int | None, at: Any) -> dict[str, Any]:
    """The ``log`` member of a segment receipt (:class:`ReceiptLog`).  With the segment's leaf
    ``index``: in the ingest's transaction, before its commit, so the checkpoint (signed now)
    commits with the leaf in one commit.  Without (nothing new stored): the latest checkpoint,
    signed first if the tree grew."""
    if index is None:
        cp = store.current_checkpoint(db, key, at)
    else:
        cp = store.checkpoint_in_transaction(db, key, at)
    proof = (
        []
        if index is None
        else store.with_store(db, cp.size, lambda s: inclusion_proof(s, index, cp.size))
    )
    note = store.served_note(db, cp)  # with the witnesses' cosignatures collected so far
    return {"index": index, "tree_size": cp.size, "inclusion": b64(proof), "checkpoint": note}
