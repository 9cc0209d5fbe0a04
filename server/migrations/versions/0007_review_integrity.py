"""Review integrity (issue 18): alerts become append-only, acknowledging one is a new row in
``alert_acks`` (one per alert), and alerts are indexed by batch (a batch's clock alerts count as
exceptions in its review).

Revision ID: 0007
Revises: 0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "alert_acks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("alert_id", sa.Integer, sa.ForeignKey("alerts.id"), nullable=False),
        sa.Column("user_id", sa.String(64), nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("note", sa.Text, nullable=False),
    )
    op.create_index("alert_acks_alert", "alert_acks", ["alert_id"], unique=True)
    op.create_index("ix_alerts_batch_id", "alerts", ["batch_id"])
    from server.db import APPEND_ONLY_0007, append_only_guards

    for stmt in append_only_guards(op.get_bind().dialect.name, APPEND_ONLY_0007):
        op.execute(sa.text(stmt))


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    for t in ("alerts", "alert_acks"):
        if dialect == "sqlite":
            for o in ("update", "delete"):
                op.execute(sa.text(f"DROP TRIGGER IF EXISTS {t}_no_{o}"))
        else:
            op.execute(sa.text(f"DROP TRIGGER IF EXISTS {t}_append_only ON {t}"))
    op.drop_index("ix_alerts_batch_id", "alerts")
    op.drop_table("alert_acks")
