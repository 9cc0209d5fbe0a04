"""Batch ownership (issue 18): from here on a batch belongs to the unit whose ledger started it,
and ingest refuses any other unit's events for it (server.service).  No column is needed: the
queue row (``batches.unit_id``) already names that unit.

Batches stored before this revision may mix two units' events (any unit could write into any
batch, and two sites could use one batch id).  Nothing stored is changed (events are
append-only and each is what its unit signed); each such batch gets a ``security.foreign_batch``
alert at its site, naming how many units wrote into it, so it is reviewed before any decision.

Revision ID: 0005
Revises: 0004
"""

from __future__ import annotations

from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        INSERT INTO alerts (kind, unit_id, message, created_at, site_id, batch_id)
        SELECT 'security.foreign_batch', MIN(e.unit_id),
               'batch ' || e.batch_id || ' holds events of ' || COUNT(DISTINCT e.unit_id)
               || ' units (' || MIN(e.unit_id) || ' .. ' || MAX(e.unit_id) || '), stored before'
               || ' batch ownership was enforced: its record mixes ledgers; investigate before'
               || ' any decision',
               CURRENT_TIMESTAMP, MIN(b.site_id), e.batch_id
        FROM events e LEFT JOIN batches b ON b.batch_id = e.batch_id
        WHERE e.batch_id IS NOT NULL
        GROUP BY e.batch_id
        HAVING COUNT(DISTINCT e.unit_id) > 1
        """
    )


def downgrade() -> None:
    pass  # the alerts stay: alerts are append-only
