"""A batch's row on the server (``batches``): read it, lock it, and scope queries to the sites a
caller may see.  Shared by quality, custody and the access checks; imports none of them."""

from __future__ import annotations

from typing import Any, TypeVar

from sqlalchemy import Select, select, text
from sqlalchemy.orm import InstrumentedAttribute, Session

from server.db import BatchSummary
from server.errors import NotFound

Q = TypeVar("Q", bound=Select[*tuple[Any, ...]])


def at_sites(q: Q, site: InstrumentedAttribute[Any], sites: set[str] | None) -> Q:
    """``q`` filtered to the caller's sites (``sites`` None: every site).  Every list a person
    reads through the API is scoped here, once."""
    return q if sites is None else q.where(site.in_(sorted(sites)))


def summary(db: Session, batch_id: str) -> BatchSummary:
    b = db.get(BatchSummary, batch_id)
    if b is None:
        raise NotFound(f"batch {batch_id} has no events on this server")
    return b


def lock_batch(db: Session, batch_id: str) -> BatchSummary:
    """Take the batch's row lock until the transaction ends and return its row as stored now.

    Every review and custody write on a batch calls this before it reads the state it checks
    (dispositions, signatures, cases, custody steps), so two requests on one batch are decided
    one after the other, each on the state the other left: one decision per state.  PostgreSQL
    locks the ``batches`` row (``SELECT ... FOR UPDATE``); SQLite has one writer at a time, so a
    no-op UPDATE of the row takes the database's write lock (waiting up to the busy timeout) and
    every read after it sees the latest commit.  Ingest's upsert of the same row waits too.
    """
    if db.get_bind().dialect.name == "sqlite":
        db.execute(
            text("UPDATE batches SET review_state = review_state WHERE batch_id = :b"),
            {"b": batch_id},
        )
        q = select(BatchSummary).where(BatchSummary.batch_id == batch_id)
    else:
        q = select(BatchSummary).where(BatchSummary.batch_id == batch_id).with_for_update()
    b = db.scalars(q.execution_options(populate_existing=True)).first()
    if b is None:
        raise NotFound(f"batch {batch_id} has no events on this server")
    return b
