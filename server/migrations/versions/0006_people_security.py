"""People: separation of duties and identities (issue 18).

``people.must_change_password``: a password set by someone else (an administrator creating the
account or resetting it) must be changed by its owner before the account can do anything else.
Existing accounts are flagged unless the audit trail shows that their owner changed the password
after it was last set by someone else.

``people.id_skeleton``: the user id's confusable skeleton (see ``server.people.skeleton``), unique,
so that no new id can be confused with an existing one.  Existing ids are never changed here (no
silent lowercasing): an existing id that is not in the canonical form (ASCII ``[a-z0-9._-]``), or
whose skeleton collides with an earlier one, keeps working under its exact spelling, gets no
skeleton when it collides, and is named in a ``people.legacy_id`` alert for an administrator.

Revision ID: 0006
Revises: 0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column(
        "people",
        sa.Column("must_change_password", sa.Boolean, nullable=False, server_default=sa.false()),
    )
    op.add_column("people", sa.Column("id_skeleton", sa.String(128)))
    bind = op.get_bind()
    bind.execute(
        sa.text(
            """
            UPDATE people SET must_change_password = (
              COALESCE((SELECT max(a.seq) FROM audit_trail a
                        WHERE a.object_type = 'person' AND a.object_id = people.user_id
                          AND a.action IN ('person.created', 'person.password_reset')), 0)
              >= COALESCE((SELECT max(a.seq) FROM audit_trail a
                           WHERE a.object_type = 'person' AND a.object_id = people.user_id
                             AND a.action = 'person.password_changed'), 1))
            """
        )
    )
    _skeletons(bind)
    op.create_index("people_id_skeleton", "people", ["id_skeleton"], unique=True)


def _skeletons(bind: sa.engine.Connection) -> None:
    """Give each existing id its skeleton; name the ids that break the rules in one alert."""
    from datetime import UTC, datetime

    from server.people.ids import canonical_user_id_problem, skeleton

    seen: dict[str, str] = {}
    problems: list[str] = []
    rows = bind.execute(sa.text("SELECT user_id FROM people ORDER BY created_at, user_id"))
    for (uid,) in rows.all():
        sk = skeleton(uid)
        why = canonical_user_id_problem(uid)
        if why is not None:
            problems.append(f"{uid!r} ({why})")
        if sk in seen:
            problems.append(f"{uid!r} (confusable with {seen[sk]!r})")
            continue
        seen[sk] = uid
        bind.execute(
            sa.text("UPDATE people SET id_skeleton = :sk WHERE user_id = :u"), {"sk": sk, "u": uid}
        )
    if problems:
        bind.execute(
            sa.text(
                "INSERT INTO alerts (kind, unit_id, message, created_at, site_id, batch_id) "
                "VALUES ('people.legacy_id', NULL, :m, :t, NULL, NULL)"
            ).bindparams(
                # Typed, so SQLAlchemy writes the time as the models do (sqlite3's own datetime
                # adapter is deprecated since Python 3.12).
                sa.bindparam("t", type_=sa.DateTime(timezone=True))
            ),
            {
                "m": "user ids kept as they are but outside the rules (ASCII [a-z0-9._-], "
                "not confusable): " + "; ".join(problems),
                "t": datetime.now(UTC),
            },
        )


def downgrade() -> None:
    op.drop_index("people_id_skeleton", "people")
    with op.batch_alter_table("people") as b:
        b.drop_column("id_skeleton")
        b.drop_column("must_change_password")
