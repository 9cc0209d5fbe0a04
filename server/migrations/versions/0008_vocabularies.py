"""Typed vocabularies (issue 20): CHECK constraints on the status columns.

Each column that holds a word of a closed vocabulary (:mod:`ebr_core.vocab`) gets a CHECK
constraint naming the allowed words, so a value outside them is refused by the database, whoever
writes it.  The words are written out here, as they were when this migration was made (a
migration does not change when the code does; ``tests/server/test_vocabulary_checks.py`` keeps
them in step with the vocabularies).  Every word the server ever stored is among them, so a
database from before passes.

SQLite cannot add a constraint to a table: Alembic's batch mode copies the table into a new one
with the constraint (its rows, indexes and columns as they were).  The copy has none of the old
table's triggers, so the append-only guards of the copied tables are created again.

Revision ID: 0008
Revises: 0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

ROLES = ("operator", "qa_reviewer", "qa_approver", "admin", "auditor")
# (table, column, allowed words)
CHECKS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("units", "status", ("active", "revoked")),
    ("unit_keys", "status", ("active", "retired", "revoked")),
    ("people", "status", ("active", "locked", "disabled")),
    ("role_grants", "role", ROLES),
    ("batches", "status", ("in_progress", "completed")),
    (
        "batches",
        "review_state",
        ("open", "awaiting_review", "in_review", "decided", "changed"),
    ),
    ("deviation_actions", "action", ("comment", "close")),
    ("qa_signatures", "meaning", ("reviewed", "approved", "released", "rejected")),
    (
        "dispositions",
        "disposition",
        ("released", "conditional_release", "exceptional_release", "rejected"),
    ),
    ("oos_cases", "state", ("requested", "evaluated", "accepted", "released", "notified")),
    ("custody_events", "kind", ("handoff", "received", "infused", "refused")),
    ("licences", "alerted", ("", "expiring", "expired")),
)
APPEND_ONLY = ("deviation_actions", "qa_signatures", "dispositions", "custody_events")


def name(table: str, column: str) -> str:
    return f"ck_{table}_{column}"


def _condition(column: str, words: tuple[str, ...]) -> str:
    listed = ", ".join("'" + w.replace("'", "''") + "'" for w in words)
    return f"{column} IN ({listed})"


def _tables() -> dict[str, list[tuple[str, tuple[str, ...]]]]:
    out: dict[str, list[tuple[str, tuple[str, ...]]]] = {}
    for table, column, words in CHECKS:
        out.setdefault(table, []).append((column, words))
    return out


def upgrade() -> None:
    from server.db import append_only_guards

    dialect = op.get_bind().dialect.name
    for table, columns in _tables().items():
        with op.batch_alter_table(table, recreate="auto") as b:
            for column, words in columns:
                b.create_check_constraint(name(table, column), _condition(column, words))
    if dialect == "sqlite":  # the copies have no triggers: the guards again
        for stmt in append_only_guards(dialect, APPEND_ONLY):
            op.execute(sa.text(stmt))


def downgrade() -> None:
    from server.db import append_only_guards

    dialect = op.get_bind().dialect.name
    for table, columns in _tables().items():
        with op.batch_alter_table(table, recreate="auto") as b:
            for column, _ in columns:
                b.drop_constraint(name(table, column), type_="check")
    if dialect == "sqlite":
        for stmt in append_only_guards(dialect, APPEND_ONLY):
            op.execute(sa.text(stmt))
