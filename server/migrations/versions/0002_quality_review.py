"""Quality review: people, roles and tokens; specifications; the review queue's batch summaries;
result sets, deviation actions, QA signatures and dispositions; the OOS exceptional-release
workflow; the hash-chained audit trail; alerts gain a site and a batch.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

GENESIS = "0" * 64


def upgrade() -> None:
    tz = sa.DateTime(timezone=True)
    s64, text = sa.String(64), sa.Text
    op.create_table(
        "people",
        sa.Column("user_id", s64, primary_key=True),
        sa.Column("printed_name", sa.String(200), nullable=False),
        sa.Column("password_hash", sa.String(200), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("failed_logins", sa.Integer, nullable=False),
        sa.Column("created_at", tz, nullable=False),
    )
    op.create_table(
        "role_grants",
        sa.Column("user_id", s64, sa.ForeignKey("people.user_id"), primary_key=True),
        sa.Column("role", sa.String(32), primary_key=True),
        sa.Column("site_id", s64, primary_key=True),
    )
    op.create_table(
        "tokens",
        sa.Column("token_hash", s64, primary_key=True),
        sa.Column("user_id", s64, sa.ForeignKey("people.user_id"), nullable=False),
        sa.Column("expires_at", tz, nullable=False),
        sa.Column("revoked", sa.Boolean, nullable=False),
    )
    op.create_index("ix_tokens_user_id", "tokens", ["user_id"])
    op.create_table(
        "specs",
        sa.Column("spec_id", s64, primary_key=True),
        sa.Column("version", sa.String(32), primary_key=True),
        sa.Column("content", text, nullable=False),
        sa.Column("content_hash", s64, nullable=False),
        sa.Column("published_by", s64, nullable=False),
        sa.Column("published_at", tz, nullable=False),
    )
    op.create_table(
        "batches",
        sa.Column("batch_id", s64, primary_key=True),
        sa.Column("unit_id", s64, nullable=False),
        sa.Column("site_id", s64, nullable=False),
        sa.Column("coi", s64),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("events", sa.BigInteger, nullable=False),
        sa.Column("exceptions", sa.Integer, nullable=False),
        sa.Column("completed_at", sa.String(32)),
        sa.Column("review_state", sa.String(24), nullable=False),
    )
    op.create_index("ix_batches_coi", "batches", ["coi"])
    op.create_index("batches_queue", "batches", ["review_state", "site_id", "completed_at"])
    op.create_table(
        "result_sets",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("batch_id", s64, nullable=False),
        sa.Column("spec_id", s64, nullable=False),
        sa.Column("spec_version", sa.String(32), nullable=False),
        sa.Column("results", text, nullable=False),
        sa.Column("entered_by", s64, nullable=False),
        sa.Column("entered_at", tz, nullable=False),
        sa.Column("reason", text, nullable=False),
    )
    op.create_index("ix_result_sets_batch_id", "result_sets", ["batch_id"])
    op.create_table(
        "deviation_actions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("batch_id", s64, nullable=False),
        sa.Column("deviation_id", s64, nullable=False),
        sa.Column("action", sa.String(16), nullable=False),
        sa.Column("text", text, nullable=False),
        sa.Column("user_id", s64, nullable=False),
        sa.Column("at", tz, nullable=False),
    )
    op.create_index("ix_deviation_actions_batch_id", "deviation_actions", ["batch_id"])
    op.create_table(
        "qa_signatures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("batch_id", s64, nullable=False),
        sa.Column("jurisdiction", sa.String(16), nullable=False),
        sa.Column("user_id", s64, nullable=False),
        sa.Column("printed_name", sa.String(200), nullable=False),
        sa.Column("meaning", sa.String(16), nullable=False),
        sa.Column("reason", text, nullable=False),
        sa.Column("record_hash", s64, nullable=False),
        sa.Column("evaluation_hash", s64, nullable=False),
        sa.Column("signed_at", tz, nullable=False),
    )
    op.create_index("ix_qa_signatures_batch_id", "qa_signatures", ["batch_id"])
    op.create_table(
        "dispositions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("batch_id", s64, nullable=False),
        sa.Column("jurisdiction", sa.String(16), nullable=False),
        sa.Column("disposition", sa.String(24), nullable=False),
        sa.Column("signature_id", sa.Integer, sa.ForeignKey("qa_signatures.id"), nullable=False),
        sa.Column("pending", text, nullable=False),
        sa.Column("decided_at", tz, nullable=False),
    )
    op.create_index("ix_dispositions_batch_id", "dispositions", ["batch_id"])
    op.create_table(
        "oos_cases",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("batch_id", s64, nullable=False),
        sa.Column("jurisdiction", sa.String(16), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("physician", sa.String(200), nullable=False),
        sa.Column("request_text", text, nullable=False),
        sa.Column("requested_by", s64, nullable=False),
        sa.Column("requested_at", tz, nullable=False),
        sa.Column("risk_evaluation", text),
        sa.Column("evaluated_by", s64),
        sa.Column("evaluated_at", tz),
        sa.Column("acceptance_text", text),
        sa.Column("accepted_at", tz),
        sa.Column("released_at", tz),
        sa.Column("notification_due_at", tz),
        sa.Column("notified_at", tz),
        sa.Column("notification_reference", text),
    )
    op.create_index("ix_oos_cases_batch_id", "oos_cases", ["batch_id"])
    op.create_table(
        "audit_trail",
        sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
        sa.Column("at", sa.String(32), nullable=False),
        sa.Column("actor", s64, nullable=False),
        sa.Column("action", s64, nullable=False),
        sa.Column("object_type", sa.String(32), nullable=False),
        sa.Column("object_id", sa.String(128), nullable=False),
        sa.Column("old", text),
        sa.Column("new", text),
        sa.Column("reason", text),
        sa.Column("prev_hash", s64, nullable=False),
        sa.Column("hash", s64, nullable=False),
    )
    op.create_index("ix_audit_trail_actor", "audit_trail", ["actor"])
    op.create_index("audit_object", "audit_trail", ["object_type", "object_id"])
    head = op.create_table(
        "audit_head",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("seq", sa.BigInteger, nullable=False),
        sa.Column("hash", s64, nullable=False),
    )
    op.bulk_insert(head, [{"id": 1, "seq": 0, "hash": GENESIS}])
    with op.batch_alter_table("alerts") as b:
        b.add_column(sa.Column("site_id", s64))
        b.add_column(sa.Column("batch_id", s64))
    op.create_index("ix_alerts_site_id", "alerts", ["site_id"])
    from server.db import APPEND_ONLY_0002, append_only_guards

    for stmt in append_only_guards(op.get_bind().dialect.name, APPEND_ONLY_0002):
        op.execute(sa.text(stmt))


def downgrade() -> None:
    op.drop_index("ix_alerts_site_id", "alerts")
    with op.batch_alter_table("alerts") as b:
        b.drop_column("batch_id")
        b.drop_column("site_id")
    for t in (
        "audit_head",
        "audit_trail",
        "oos_cases",
        "dispositions",
        "qa_signatures",
        "deviation_actions",
        "result_sets",
        "batches",
        "specs",
        "tokens",
        "role_grants",
        "people",
    ):
        op.drop_table(t)
