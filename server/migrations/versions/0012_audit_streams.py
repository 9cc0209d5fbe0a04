"""Audit streams and the log's queue (issue 25): no global serialisation point.

* ``audit_trail`` gains ``stream`` and ``stream_seq`` (nullable: every entry stored before stays
  as it is, in the legacy chain, and still verifies) and a unique index on them;
* ``audit_heads``: one row per stream (its last place and hash), replacing the single
  ``audit_head`` row, whose head becomes the row of stream ``legacy`` (when the trail holds
  entries);
* on PostgreSQL, the sequence ``audit_trail_seq`` hands out the global ids, from the next one
  after the stored entries;
* ``tlog_pending``: leaves committed by their writers, waiting for the log's sequencer.

Nothing stored is rewritten: columns are added (no stored row changes), the append-only guards
stay, and the entries' hashes, chain and leaves in the log are the ones they had.

Revision ID: 0012
Revises: 0011
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None

LEGACY = "legacy"


def upgrade() -> None:
    conn = op.get_bind()
    # ALTER TABLE ... ADD COLUMN on both databases (SQLite too, not a batch copy of the table:
    # the guards stay, and no stored row is touched)
    op.add_column("audit_trail", sa.Column("stream", sa.String(200)))
    op.add_column("audit_trail", sa.Column("stream_seq", sa.BigInteger))
    op.create_index("audit_stream", "audit_trail", ["stream", "stream_seq"], unique=True)
    heads = op.create_table(
        "audit_heads",
        sa.Column("stream", sa.String(200), primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    seq, head_hash = conn.execute(sa.text("SELECT seq, hash FROM audit_head WHERE id = 1")).one()
    if int(seq) > 0:
        op.bulk_insert(heads, [{"stream": LEGACY, "seq": int(seq), "hash": str(head_hash)}])
    op.drop_table("audit_head")
    if conn.dialect.name == "postgresql":
        top = conn.execute(sa.text("SELECT coalesce(max(seq), 0) FROM audit_trail")).scalar()
        op.execute(
            sa.text(
                f"CREATE SEQUENCE audit_trail_seq START WITH {int(top or 0) + 1} "
                "OWNED BY audit_trail.seq"
            )
        )
    op.create_table(
        "tlog_pending",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer, "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("leaf", sa.LargeBinary, nullable=False),
    )


def downgrade() -> None:
    """Only a trail with no streamed entry and a log with nothing queued can go back."""
    conn = op.get_bind()
    if conn.execute(sa.text("SELECT count(*) FROM audit_trail WHERE stream IS NOT NULL")).scalar():
        raise RuntimeError("0012: the audit trail holds streamed entries; they cannot be undone")
    if conn.execute(sa.text("SELECT count(*) FROM tlog_pending")).scalar():
        raise RuntimeError("0012: leaves are queued for the log; run the server to sequence them")
    op.drop_table("tlog_pending")
    if conn.dialect.name == "postgresql":
        op.execute(sa.text("DROP SEQUENCE audit_trail_seq"))
    row = conn.execute(
        sa.text("SELECT seq, hash FROM audit_heads WHERE stream = :s"), {"s": LEGACY}
    ).one_or_none()
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", sa.String(64), nullable=False),
    )
    seq, h = (0, "0" * 64) if row is None else (int(row[0]), str(row[1]))
    op.bulk_insert(head, [{"id": 1, "seq": seq, "hash": h}])
    op.drop_table("audit_heads")
    op.drop_index("audit_stream", "audit_trail")
    with op.batch_alter_table("audit_trail") as b:  # SQLite: a copy of the table...
        b.drop_column("stream_seq")
        b.drop_column("stream")
    from server.db import append_only_guards

    for stmt in append_only_guards(conn.dialect.name, ("audit_trail",)):  # ...without its guards
        op.execute(sa.text(stmt))
