"""``ctgtp edge users`` and ``users-pull``: who may record at this station."""

from __future__ import annotations

from pathlib import Path

import click

from .options import HOME, JSON
from .render import emit, opened


@click.command("users")
@HOME
@JSON
def users_list(home: Path) -> None:
    """List the station's users: only these, when active, can record anything."""
    with opened(home, writer=False) as a:
        rows = []
        for u in sorted(a.engine.users.values(), key=lambda u: u.user_id):
            state = "active" if u.active else "inactive"
            if a.ledger.get_meta(f"locked:{u.user_id}") is not None:
                state = "locked"
            rows.append(
                {"user_id": u.user_id, "printed_name": u.printed_name, "roles": list(u.roles),
                 "state": state}
            )  # fmt: skip
    emit(
        "\n".join(
            f"{r['user_id']}\t{r['printed_name']}\t{', '.join(r['roles']) or 'no roles'}\t"
            f"{r['state']}"
            for r in rows
        ),
        {"users": rows},
    )


@click.command("users-pull")
@HOME
@click.option("--server", "server_url", required=True, help="e.g. http://127.0.0.1:8000")
@JSON
def users_pull(home: Path, server_url: str) -> None:
    """Replace the station's operators with those the server publishes for its site (argon2id
    hashes for offline re-authentication); the change is recorded in the ledger."""
    from edge.sync import SyncClient

    with opened(home) as a:
        users = a.replace_users(SyncClient(a.ledger, server_url).fetch_operators(), server_url)
    ids = sorted(users)
    emit(
        f"{len(users)} operators from the server: {', '.join(ids)}",
        {"source": server_url, "user_ids": ids},
    )


COMMANDS = (users_list, users_pull)
