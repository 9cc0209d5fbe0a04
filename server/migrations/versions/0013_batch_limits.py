"""Batch limits: no schema change (kept as a revision so the numbering stays as reserved).

The limits a batch was judged against travel in its own events (``limits`` on judged values,
``telemetry_limits`` on ``batch.started``, ``ebr_core/limits.py``), and the batch projection
keeps the telemetry limits inside its JSON body (``batch_projections.body``, digest-checked,
``server/projections.py``).  A body stored before has no ``telemetry_limits`` key: it is read
with the limits of the batch's ``batch.started`` (one indexed row) and the next ingest stores
them, so no data migration is needed and nothing recorded changes.

Revision ID: 0013
Revises: 0012
"""

from __future__ import annotations

revision = "0013"
down_revision = "0012"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
