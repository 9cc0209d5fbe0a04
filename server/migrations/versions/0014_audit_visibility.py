"""Reserved: audit trail paging by a visibility high-water mark (issue 25).

Placeholder revision so the numbering is reserved while the work is in progress; it changes no
schema yet.

Revision ID: 0014
Revises: 0013
"""

from __future__ import annotations

revision = "0014"
down_revision = "0013"
branch_labels = None
depends_on = None


def upgrade() -> None:
    pass


def downgrade() -> None:
    pass
