"""Custody events recorded through the server API; transfer licences and their links.

Revision ID: 0003
Revises: 0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    s64 = sa.String(64)
    op.create_table(
        "custody_events",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("coi", s64, nullable=False),
        sa.Column("batch_id", s64, nullable=False),
        sa.Column("kind", sa.String(32), nullable=False),
        sa.Column("from_party", s64),
        sa.Column("to_party", s64),
        sa.Column("place", sa.String(200), nullable=False),
        sa.Column("payload", sa.Text, nullable=False),
        sa.Column("recorded_by", s64, nullable=False),
        sa.Column("at", tz, nullable=False),
    )
    op.create_index("ix_custody_events_coi", "custody_events", ["coi"])
    op.create_table(
        "licences",
        sa.Column("licence_id", s64, primary_key=True),
        sa.Column("classification", s64, nullable=False),
        sa.Column("authority", sa.String(120), nullable=False),
        sa.Column("holder", sa.String(200), nullable=False),
        sa.Column("valid_until", sa.Date, nullable=False),
        sa.Column("alerted", sa.String(16), nullable=False),
        sa.Column("created_by", s64, nullable=False),
        sa.Column("created_at", tz, nullable=False),
    )
    op.create_table(
        "licence_links",
        sa.Column("licence_id", s64, sa.ForeignKey("licences.licence_id"), primary_key=True),
        sa.Column("object_type", sa.String(16), primary_key=True),
        sa.Column("object_id", sa.String(128), primary_key=True),
    )
    op.create_index("ix_licence_links_object_id", "licence_links", ["object_id"])
    from server.db import APPEND_ONLY_0003, append_only_guards

    for stmt in append_only_guards(op.get_bind().dialect.name, APPEND_ONLY_0003):
        op.execute(sa.text(stmt))


def downgrade() -> None:
    for t in ("licence_links", "licences", "custody_events"):
        op.drop_table(t)
