"""What a sequencing committed is used by the receipts served right after it (issue 25's CPU
cut): each leaf's index and the node hashes it wrote or grew from.  The index and the inclusion
proof must be exactly those read from the tables, for leaves of every shape of tree."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from sqlalchemy import Connection, Engine, event
from sqlalchemy.orm import Session

from ebr_core.tlog.merkle import inclusion_proof
from server.db import make_engine, migrate
from server.log import records, store
from server.pgcluster import PgCluster

pytestmark = pytest.mark.postgres

records.install()


@pytest.fixture
def engine(pg: PgCluster) -> Iterator[Engine]:
    e = make_engine(pg.create_db(f"known_{uuid.uuid4().hex[:16]}"))
    migrate(e)
    try:
        yield e
    finally:
        e.dispose()


def _from_tables(conn: Connection, p: store.Pending, size: int) -> tuple[int | None, list[bytes]]:
    """The leaf's index and proof with nothing known: read from the tables only."""
    known = conn.info.pop(store._KNOWN, None)
    try:
        with Session(bind=conn) as db:
            index = store.locate(db, p)
            assert index is not None
            return index, store.with_store(db, size, lambda s: inclusion_proof(s, index, size))
    finally:
        if known is not None:
            conn.info[store._KNOWN] = known


@pytest.mark.parametrize("before, group", [(0, 1), (1, 1), (5, 3), (6, 2), (7, 9), (16, 5)])
def test_receipt_proofs_from_what_the_sequencing_wrote_equal_the_tables(
    engine: Engine, before: int, group: int
) -> None:
    for i in range(before):  # an earlier tree: its peaks are the new leaves' left siblings
        with Session(engine) as db:
            store.append(db, records.segment_entry(f"OLD-{i}", 1, 1, "a" * 64))
            db.commit()
    seen: list[tuple[bool, int | None, list[bytes], int | None, list[bytes]]] = []
    with Session(engine) as db:
        pendings = [
            store.append(db, records.segment_entry(f"U-{i}", 1, 5, f"{i:064x}"))
            for i in range(group)
        ]

        def check(conn: Connection) -> None:
            size = before + group
            for p in pendings:
                assert isinstance(p, store.Pending)
                known = store._known(conn)
                reads: list[str] = []
                listen = lambda *a: reads.append(a[2])  # noqa: E731 - the statement's text
                event.listen(engine, "before_cursor_execute", listen)
                try:
                    with Session(bind=conn) as s:
                        index = store.locate(s, p)
                        assert index is not None
                        proof = store.with_store(
                            s, size, lambda st: inclusion_proof(st, index, size)
                        )
                finally:
                    event.remove(engine, "before_cursor_execute", listen)
                # the tree is what this sequencing wrote and grew from: nothing read back
                assert [r for r in reads if "tlog_nodes" in r or "tlog_leaves" in r] == []
                seen.append((known is not None and p.leaf in known.leaves, index, proof,
                             *_from_tables(conn, p, size)))  # fmt: skip

        store.after_sequencing(db, check)
        db.commit()
    assert len(seen) == group
    for from_known, index, proof, t_index, t_proof in seen:
        assert from_known  # this connection sequenced them: nothing read back
        assert (index, proof) == (t_index, t_proof)


def test_nothing_known_outlives_the_receipts_callbacks(engine: Engine) -> None:
    with Session(engine) as db:
        store.append(db, records.segment_entry("U-0", 1, 1, "b" * 64))
        infos: list[dict[object, object]] = []
        during: list[bool] = []

        def keep(conn: Connection) -> None:
            infos.append(conn.info)  # the pooled connection's own, kept across checkouts
            during.append(store._known(conn) is not None)

        store.after_sequencing(db, keep)
        db.commit()
    assert during == [True]
    assert store._KNOWN not in infos[0]
