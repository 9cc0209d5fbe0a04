"""Audit trail paging by visibility (issue 25): ``audit_trail.xid``, the writing transaction.

Global ids (``seq``) come from a sequence, taken before the writer commits: with several
writers, seq 11 can commit before seq 10, and a reader paging by ``seq`` would pass 10 for good.
Each entry now records its writer's transaction id (``xid``: ``pg_current_xact_id()``, xid8,
as a bigint), and ``GET /v1/audit`` serves only entries whose transaction ended before the
oldest one still running (the reader's snapshot ``xmin``), in ``(xid, seq)`` order
(``server.audit.trail.page``): every transaction below that horizon has committed or rolled
back, so nothing can appear behind a page already served.

* ``audit_trail`` gains ``xid`` (nullable).  The entries stored before keep every value they
  had (a column added; no stored value rewritten; their hashes and chains unchanged) and have
  no ``xid``: they are served first, by ``seq``, as before;
* on PostgreSQL the column's default is the writing transaction's id, so that any writer
  (an older server during a rolling deploy included) stamps its rows; set after the column is
  added, so the stored rows stay NULL (a volatile default given with ADD COLUMN would rewrite
  them);
* an index on ``(xid, seq)``, the paging order.

On SQLite (one writer at a time, ids taken under its write lock) ``xid`` stays NULL and paging
is by ``seq``, as before.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None

XID_DEFAULT = "CAST(CAST(pg_current_xact_id() AS text) AS bigint)"


def upgrade() -> None:
    # ALTER TABLE ... ADD COLUMN on both databases (not a batch copy on SQLite: the guards stay)
    op.add_column("audit_trail", sa.Column("xid", sa.BigInteger))
    if op.get_bind().dialect.name == "postgresql":
        op.execute(sa.text(f"ALTER TABLE audit_trail ALTER COLUMN xid SET DEFAULT {XID_DEFAULT}"))
    op.create_index("audit_visible", "audit_trail", ["xid", "seq"])


def downgrade() -> None:
    """The column goes (paging by ``seq`` again); no other stored value changes."""
    op.drop_index("audit_visible", "audit_trail")
    # a plain DROP COLUMN (SQLite 3.35+), not a batch copy of the table: the guards stay
    op.execute(sa.text("ALTER TABLE audit_trail DROP COLUMN xid"))
