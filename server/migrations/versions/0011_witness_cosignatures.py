"""Witness cosignatures of the transparency log's checkpoints (issue 24): ``tlog_cosignatures``,
one row per cosignature line a configured witness pushed (``POST /v1/log/cosignatures``) for a
stored checkpoint, verified before it is kept; append-only like the log's other tables.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tlog_cosignatures",
        sa.Column("size", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("witness_name", sa.String(200), primary_key=True),
        sa.Column("line", sa.Text, primary_key=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=False),
    )
    from server.db import append_only_guards
    from server.log.tables import APPEND_ONLY_0011

    for stmt in append_only_guards(op.get_bind().dialect.name, APPEND_ONLY_0011):
        op.execute(sa.text(stmt))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for o in ("update", "delete"):
            op.execute(sa.text(f"DROP TRIGGER IF EXISTS tlog_cosignatures_no_{o}"))
    op.drop_table("tlog_cosignatures")
