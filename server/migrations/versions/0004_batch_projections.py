"""Batch projections: the batch's event head on its queue row, the stored step state and
telemetry summary, and a partial index over each batch's step events.

Existing batches get their event head from their events here; their projections are built by
the next ingest that touches them (and, until then, computed on read).

Revision ID: 0004
Revises: 0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "batches", sa.Column("last_seq", sa.BigInteger, nullable=False, server_default="0")
    )
    op.add_column(
        "batches", sa.Column("head_hash", sa.String(64), nullable=False, server_default="")
    )
    op.add_column(
        "batches", sa.Column("readings", sa.BigInteger, nullable=False, server_default="0")
    )
    op.create_table(
        "batch_projections",
        sa.Column("batch_id", sa.String(64), primary_key=True),
        sa.Column("upto_seq", sa.BigInteger, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("digest", sa.String(64), nullable=False),
    )
    # The step events of a batch without its telemetry: what the projections fold.
    op.create_index(
        "events_batch_steps",
        "events",
        ["batch_id", "unit_id", "seq"],
        sqlite_where=sa.text("kind <> 'reading.recorded'"),
        postgresql_where=sa.text("kind <> 'reading.recorded'"),
    )
    op.execute(
        """
        UPDATE batches SET
          last_seq = COALESCE((SELECT max(e.seq) FROM events e
                               WHERE e.batch_id = batches.batch_id
                                 AND e.unit_id = batches.unit_id), 0),
          readings = (SELECT count(*) FROM events e
                      WHERE e.batch_id = batches.batch_id AND e.unit_id = batches.unit_id
                        AND e.kind = 'reading.recorded')
        """
    )
    op.execute(
        """
        UPDATE batches SET head_hash = COALESCE((SELECT e.hash FROM events e
            WHERE e.batch_id = batches.batch_id AND e.unit_id = batches.unit_id
              AND e.seq = batches.last_seq), '')
        """
    )


def downgrade() -> None:
    op.drop_index("events_batch_steps", table_name="events")
    op.drop_table("batch_projections")
    op.drop_column("batches", "readings")
    op.drop_column("batches", "head_hash")
    op.drop_column("batches", "last_seq")
