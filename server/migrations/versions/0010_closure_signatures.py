"""Deviation closures as e-signatures (issue 22): the ``closure_signatures`` table (one row per
closure: printed name, time, meaning ``closed``, reason, the record hash and the deviation it
covers; append-only), ``deviation_links`` (QA's links between a batch's deviations; append-only),
and ``tokens.not_after``, the absolute end of a session whose expiry
slides with use (the console's idle timeout).

Revision ID: 0010
Revises: 0009
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "closure_signatures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.String(64), nullable=False),
        sa.Column("deviation_id", sa.String(64), nullable=False),
        sa.Column(
            "action_id", sa.Integer, sa.ForeignKey("deviation_actions.id"), nullable=False
        ),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("printed_name", sa.String(200), nullable=False),
        sa.Column("meaning", sa.String(16), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("record_hash", sa.String(64), nullable=False),
        sa.Column("covers", sa.Text, nullable=False),
        sa.Column("signed_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_closure_signatures_batch_id", "closure_signatures", ["batch_id"])
    op.create_index(
        "closure_signatures_action", "closure_signatures", ["action_id"], unique=True
    )
    op.create_table(
        "deviation_links",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("batch_id", sa.String(64), nullable=False),
        sa.Column("deviation_id", sa.String(64), nullable=False),
        sa.Column("linked_to", sa.String(64), nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_index("ix_deviation_links_batch_id", "deviation_links", ["batch_id"])
    with op.batch_alter_table("tokens") as b:
        b.add_column(sa.Column("not_after", sa.DateTime(timezone=True), nullable=True))
    from server.db import APPEND_ONLY_0010, append_only_guards

    for stmt in append_only_guards(op.get_bind().dialect.name, APPEND_ONLY_0010):
        op.execute(sa.text(stmt))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for t in ("closure_signatures", "deviation_links"):
        if dialect == "sqlite":
            for o in ("update", "delete"):
                op.execute(sa.text(f"DROP TRIGGER IF EXISTS {t}_no_{o}"))
        else:
            op.execute(sa.text(f"DROP TRIGGER IF EXISTS {t}_append_only ON {t}"))
    with op.batch_alter_table("tokens") as b:
        b.drop_column("not_after")
    op.drop_index("ix_deviation_links_batch_id", "deviation_links")
    op.drop_table("deviation_links")
    op.drop_index("closure_signatures_action", "closure_signatures")
    op.drop_index("ix_closure_signatures_batch_id", "closure_signatures")
    op.drop_table("closure_signatures")
