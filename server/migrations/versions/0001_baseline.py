"""Baseline schema of 0.1.0: sites, units, keys, events, checkpoints, nonces, forks, alerts, with
append-only guards on events, checkpoints and forks.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    op.create_table(
        "sites",
        sa.Column("site_id", sa.String(64), primary_key=True),
        sa.Column("name", sa.String(200), nullable=False),
    )
    op.create_table(
        "units",
        sa.Column("unit_id", sa.String(64), primary_key=True),
        sa.Column("site_id", sa.String(64), sa.ForeignKey("sites.site_id"), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("head_seq", sa.BigInteger, nullable=False),
        sa.Column("head_hash", sa.String(64), nullable=False),
        sa.Column("checkpoint_seq", sa.BigInteger, nullable=False),
        sa.Column("enrolled_at", tz, nullable=False),
    )
    op.create_table(
        "unit_keys",
        sa.Column("key_id", sa.String(16), primary_key=True),
        sa.Column("unit_id", sa.String(64), sa.ForeignKey("units.unit_id"), nullable=False),
        sa.Column("public_key", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("added_at", tz, nullable=False),
    )
    op.create_index("ix_unit_keys_unit_id", "unit_keys", ["unit_id"])
    op.create_table(
        "events",
        sa.Column("unit_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("hash", sa.String(64), nullable=False),
        sa.Column("batch_id", sa.String(64)),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("recorded_at", sa.String(32), nullable=False),
        sa.Column("line", sa.LargeBinary, nullable=False),
    )
    op.create_index("events_batch", "events", ["batch_id", "unit_id", "seq"])
    op.create_table(
        "checkpoints",
        sa.Column("unit_id", sa.String(64), primary_key=True),
        sa.Column("seq", sa.BigInteger, primary_key=True),
        sa.Column("line", sa.LargeBinary, nullable=False),
    )
    op.create_table(
        "nonces",
        sa.Column("unit_id", sa.String(64), primary_key=True),
        sa.Column("nonce", sa.String(32), primary_key=True),
        sa.Column("seen_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_nonces_seen_at", "nonces", ["seen_at"])
    op.create_table(
        "forks",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("unit_id", sa.String(64), nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("stored_hash", sa.String(64), nullable=False),
        sa.Column("offered_hash", sa.String(64), nullable=False),
        sa.Column("received_at", tz, nullable=False),
        sa.Column("evidence", sa.LargeBinary, nullable=False),
    )
    op.create_index("ix_forks_unit_id", "forks", ["unit_id"])
    op.create_table(
        "alerts",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("kind", sa.String(64), nullable=False),
        sa.Column("unit_id", sa.String(64)),
        sa.Column("message", sa.Text, nullable=False),
        sa.Column("created_at", tz, nullable=False),
    )
    from server.db import append_only_guards

    for stmt in append_only_guards(op.get_bind().dialect.name):
        op.execute(sa.text(stmt))


def downgrade() -> None:
    for t in ("alerts", "forks", "nonces", "checkpoints", "events", "unit_keys", "units", "sites"):
        op.drop_table(t)
