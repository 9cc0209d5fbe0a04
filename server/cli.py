"""``ctgtp server``: init, migrate, run, and the host's administration commands (enrol,
add-person, audit verify, log verify, licences-check), with direct database access.

Migrating is a deploy step: ``init`` and ``migrate`` bring the database to the migrations'
head; ``run`` and the administration commands refuse a database that is not at head and name
the command to run (several workers migrating as they start would race)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from server.settings import Settings


def _now() -> datetime:
    return datetime.now(UTC)


CLOCK: Callable[[], datetime] = _now  # the host's real clock, the commands' one time source

DATA = click.option(
    "--data-dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=None,
    help="Server data directory (env CTGTP_SERVER_DATA_DIR).",
)
DB = click.option(
    "--database-url",
    default=None,
    help="SQLAlchemy URL (env CTGTP_SERVER_DATABASE_URL); SQLite by default.",
)


def _settings(data_dir: Path | None, database_url: str | None) -> Settings:
    kw: dict[str, object] = {}
    if data_dir is not None:
        kw["data_dir"] = data_dir
        kw.setdefault("database_url", f"sqlite:///{data_dir / 'server.db'}")
    if database_url is not None:
        kw["database_url"] = database_url
    return Settings(**kw)  # type: ignore[arg-type]


@click.group()
def server() -> None:
    """The control-site server."""


@server.command()
@DATA
@DB
def init(data_dir: Path | None, database_url: str | None) -> None:
    """Create the database (migrated to head) and the server's signing key."""
    from server.db import make_engine, migrate
    from server.keys import load_server_key

    s = _settings(data_dir, database_url)
    s.data_dir.mkdir(parents=True, exist_ok=True)
    migrate(make_engine(s.database_url))
    key = load_server_key(s.data_dir)
    click.echo(
        f"server ready: database {s.database_url.split('@')[-1]}, receipt key "
        f"{key.key_id} ({s.data_dir / 'server.pub'})"
    )


@server.command("migrate")
@DATA
@DB
def migrate_(data_dir: Path | None, database_url: str | None) -> None:
    """Bring the database to the current schema (a deploy step, before `run`)."""
    from server.db import make_engine, migrate, revisions

    s = _settings(data_dir, database_url)
    if s.database_url.startswith("sqlite:///"):
        s.data_dir.mkdir(parents=True, exist_ok=True)
    engine = make_engine(s.database_url)
    before, head = revisions(engine)
    migrate(engine)
    where = s.database_url.split("@")[-1]
    if before == head:
        click.echo(f"database {where} already at schema revision {head}")
    else:
        click.echo(f"database {where} migrated from {before or '(empty)'} to {head}")


def _engine_at_head(s: Settings) -> Any:
    import server.log.records  # noqa: F401 - the listener that logs what these commands write
    from server.db import SchemaNotAtHead, make_engine, require_head

    engine = make_engine(s.database_url)
    try:
        require_head(engine)
    except SchemaNotAtHead as e:
        raise click.ClickException(str(e)) from e
    return engine


@server.command()
@DATA
@DB
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option(
    "--workers",
    default=1,
    show_default=True,
    type=click.IntRange(1, 64),
    help="API worker processes on the one database (PostgreSQL for more than one; docs/region.md)",
)
def run(
    data_dir: Path | None, database_url: str | None, host: str, port: int, workers: int
) -> None:
    """Serve the API (uvicorn); the database must be at head (`ctgtp server migrate`)."""
    from server.workers import serve

    s = _settings(data_dir, database_url)
    _engine_at_head(s).dispose()
    # one worker too: its pool sized to its threads and the admission lanes that keep the audit
    # head's holder from waiting for a thread (docs/region.md)
    serve(s, host, port, workers)


@server.command()
@DATA
@DB
@click.option("--site", "site_id", required=True)
@click.option("--unit", "unit_id", required=True)
@click.option(
    "--public-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
def enrol(
    data_dir: Path | None, database_url: str | None, site_id: str, unit_id: str, public_key: Path
) -> None:
    """Enrol a unit's public key for a site."""
    from sqlalchemy.orm import Session

    from server.errors import ServerError
    from server.units import service

    engine = _engine_at_head(_settings(data_dir, database_url))
    with Session(engine) as db:
        try:
            service.enrol(db, site_id, unit_id, public_key.read_bytes(), at=CLOCK())
        except ServerError as e:
            raise click.ClickException(e.message) from e
        db.commit()
    click.echo(f"unit {unit_id} enrolled for site {site_id}")


@server.group()
def audit() -> None:
    """The audit trail."""


@audit.command("verify")
@DATA
@DB
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def audit_verify(data_dir: Path | None, database_url: str | None, as_json: bool) -> None:
    """Walk every stream of the hash-chained audit trail (and the legacy chain) against its
    head, and compare each entry with its leaf in the transparency log (its anchor).  Exit 0
    when all agree, 1 naming each bad stream's first bad entry."""
    import orjson
    from sqlalchemy.orm import Session

    from server.audit import trail
    from server.log.store import snapshot
    from server.log.verify import audit_anchors

    engine = _engine_at_head(_settings(data_dir, database_url))
    try:
        with Session(engine) as db:
            snapshot(db)  # the leaves once each, in the tree or queued, while the server runs
            rep = trail.check(db, audit_anchors(db))
    finally:
        engine.dispose()
    if as_json:
        click.echo(orjson.dumps(rep.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        bad = rep.first_by_stream()
        for _, (f, n) in sorted(bad.items()):
            more = f" (and {n - 1} more finding(s) in this stream)" if n > 1 else ""
            click.echo(f"FINDING {f.line()}{more}")
        for f in rep.gone():
            click.echo(f"FINDING {f.line()}")
        queued = f", {rep.queued} of them still queued for it" if rep.queued else ""
        if rep.ok:
            click.echo(f"audit trail verified: {rep.entries} entries in {rep.streams} streams, "
                       f"each anchored in the transparency log{queued}")  # fmt: skip
        else:
            click.echo(f"audit trail does NOT verify: {len(bad)} bad stream(s), "
                       f"{len(rep.gone())} entries gone from the trail; {rep.entries} entries "
                       f"in {rep.streams} streams")  # fmt: skip
    if not rep.ok:
        raise SystemExit(1)


@server.command("add-person")
@DATA
@DB
@click.option("--user", "user_id", required=True)
@click.option("--name", "printed_name", required=True)
@click.option("--role", "roles", multiple=True, required=True, help="ROLE@SITE, e.g. admin@*")
@click.option("--reason", required=True)
@click.password_option(envvar="CTGTP_NEW_PASSWORD")
def add_person(
    data_dir: Path | None,
    database_url: str | None,
    user_id: str,
    printed_name: str,
    roles: tuple[str, ...],
    reason: str,
    password: str,
) -> None:
    """Create a person on the server host (the first administrator, for instance)."""
    from sqlalchemy.orm import Session

    from server.errors import ServerError
    from server.people import service as people

    grants = []
    for r in roles:
        role, sep, site = r.partition("@")
        if not sep or not site:
            raise click.BadParameter(f"{r!r}: expected ROLE@SITE (site '*' for every site)")
        grants.append((role, site))
    engine = _engine_at_head(_settings(data_dir, database_url))
    with Session(engine) as db:
        try:
            people.create_person(
                db,
                people.SYSTEM,
                at=CLOCK(),
                user_id=user_id,
                printed_name=printed_name,
                password=password,
                grants=grants,
                reason=reason,
            )
        except ServerError as e:
            raise click.ClickException(e.message) from e
        db.commit()
    click.echo(f"{user_id} ({printed_name}) created with {', '.join(roles)}")


@server.command("licences-check")
@DATA
@DB
def licences_check(data_dir: Path | None, database_url: str | None) -> None:
    """Raise the transfer-licence alerts that are due (run it daily, e.g. from cron)."""
    from sqlalchemy.orm import Session

    from server.custody import service as custody

    s = _settings(data_dir, database_url)
    engine = _engine_at_head(s)
    with Session(engine) as db:
        alerts = custody.check_licences(db, at=CLOCK(), warn_days=s.licence_warning_days)
        lines = [f"ALERT {a.kind}: {a.message}" for a in alerts]
        db.commit()
    for line in lines:
        click.echo(line)
    click.echo(f"{len(lines)} licence alert(s) raised")


@server.group("log")
def log_group() -> None:
    """The transparency log (docs/transparency.md)."""


@log_group.command("verify")
@DATA
@DB
@click.option(
    "--trusted",
    "trusted",
    multiple=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A signed checkpoint held outside this database (a witness's state file, a receipt's "
    "checkpoint): the log must still extend it.  Repeatable.",
)
@click.option(
    "--require-witnessed",
    is_flag=True,
    help="A latest checkpoint cosigned by fewer than log_witness_quorum configured witnesses is a "
    "finding (without it, it is reported as unwitnessed).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def log_verify(
    data_dir: Path | None,
    database_url: str | None,
    trusted: tuple[Path, ...],
    require_witnessed: bool,
    as_json: bool,
) -> None:
    """Recompute the log from its leaves and every leaf's record from the database; compare
    with the signed checkpoints.  Exit 0 when everything agrees, 1 naming each mismatch."""
    import orjson
    from sqlalchemy.orm import Session

    from ebr_core.keys import PublicKey
    from ebr_core.tlog.cosignature import CosignatureVerifier
    from server.log.store import log_verifier
    from server.log.verify import verify_log

    s = _settings(data_dir, database_url)
    pub = s.data_dir / "server.pub"
    if not pub.exists():
        raise click.ClickException(f"no server public key at {pub}: is --data-dir right?")
    log = log_verifier(s.log_origin, PublicKey.from_bytes(pub.read_bytes()))
    engine = _engine_at_head(s)
    try:
        with Session(engine) as db:
            rep = verify_log(
                db,
                log,
                [(str(p), p.read_bytes()) for p in trusted],
                witnesses=[CosignatureVerifier.from_vkey(k) for k in s.log_witnesses],
                quorum=s.log_witness_quorum,
                require_witnessed=require_witnessed,
            )
    finally:
        engine.dispose()
    if as_json:
        click.echo(orjson.dumps(rep.to_json(), option=orjson.OPT_INDENT_2).decode())
    else:
        for f in rep.findings:
            click.echo("FINDING " + f.line())
        checked = ", ".join(f"{v} {k}" for k, v in rep.checked.items())
        state = "verified" if rep.ok else f"does NOT verify: {len(rep.findings)} finding(s)"
        click.echo(
            f"log {state}: {rep.leaves} leaves, root {rep.root}, latest checkpoint size "
            f"{rep.checkpoint_size}; checked {checked}"
        )
        click.echo(rep.witness_line())
    if not rep.ok:
        raise SystemExit(1)
