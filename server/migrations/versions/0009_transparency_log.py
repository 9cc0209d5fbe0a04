"""The transparency log's tables (issue 24): leaves, interior nodes, the head, checkpoints.

``tlog_leaves``, ``tlog_nodes`` and ``tlog_checkpoints`` refuse UPDATE and DELETE (the same
guards as the audit trail); ``tlog_head`` holds the tree size and its frontier (one row, updated
under its lock by every append).  A database that already holds records gets them logged here,
once, in this order: its audit entries, every logged row (``server.log.records``), one segment
per unit up to its stored head; so ``ctgtp server log verify`` passes on it from the start.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tlog_leaves",
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("leaf", sa.LargeBinary, nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "tlog_nodes",
        sa.Column("level", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("idx", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("hash", sa.LargeBinary, nullable=False),
    )
    head = op.create_table(
        "tlog_head",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("peaks", sa.LargeBinary, nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "size": 0, "peaks": b""}])
    op.create_table(
        "tlog_checkpoints",
        sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
    )
    from server.db import append_only_guards
    from server.log.records import existing_records
    from server.log.store import append_leaves
    from server.log.tables import APPEND_ONLY_0009

    conn = op.get_bind()
    for stmt in append_only_guards(conn.dialect.name, APPEND_ONLY_0009):
        op.execute(sa.text(stmt))
    append_leaves(conn, list(existing_records(conn)))


def downgrade() -> None:
    for t in ("tlog_checkpoints", "tlog_head", "tlog_nodes", "tlog_leaves"):
        op.drop_table(t)
