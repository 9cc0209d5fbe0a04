"""``ctgtp edge``: the commands an operator uses at the station.

Every refusal prints what was expected and what was given, and exits 1; nothing already recorded
is touched.  Passwords are read from a hidden prompt, or one line of standard input with
``--password-stdin`` (for scripted runs); never from the command line.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson

from ebr_core.document import load_yaml, sign_document
from ebr_core.errors import EbrError
from ebr_core.keys import UnitSigner
from edge.agent import EdgeAgent, init_home, open_agent
from edge.errors import EdgeError
from edge.export import export_ledger


def system_clock() -> datetime:
    return datetime.now(UTC)


HOME = click.option(
    "--home",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="CTGTP_EDGE_HOME",
    default=Path("edge-home"),
    show_default=True,
    help="The unit's state directory (env CTGTP_EDGE_HOME).",
)
BATCH = click.option("--batch", "batch_id", required=True, help="Batch id.")
USER = click.option("--user", "user_id", required=True, help="Your user id.")
PW_STDIN = click.option(
    "--password-stdin", is_flag=True, help="Read the password from one line of standard input."
)


def _password(from_stdin: bool) -> str:
    if from_stdin:
        return sys.stdin.readline().rstrip("\n")
    return str(click.prompt("Password", hide_input=True))


_NEGATIVE_NUMBER = re.compile(r"-(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")


class NumberArguments(click.Command):
    """A command whose arguments may be negative numbers: ``value ... end_temperature -90 Cel``.

    Click takes any word starting with ``-`` for an option, so ``-90`` was refused as an unknown
    option.  Here the words are sorted before Click parses them: options (with the value each
    takes) first, then ``--``, then the arguments in their order, so a negative number is an
    argument and a misspelt option is still refused as one."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        takes_value = {
            opt
            for p in self.get_params(ctx)
            if isinstance(p, click.Option) and not p.is_flag and not p.count
            for opt in (*p.opts, *p.secondary_opts)
        }
        options: list[str] = []
        arguments: list[str] = []
        words = iter(args)
        for word in words:
            if word == "--":
                arguments.extend(words)
                break
            if word.startswith("-") and not _NEGATIVE_NUMBER.fullmatch(word):
                options.append(word)
                value = next(words, None) if word in takes_value else None
                if value is not None:  # the option's value, whatever it looks like
                    options.append(value)
                continue
            arguments.append(word)
        return super().parse_args(ctx, [*options, "--", *arguments])


@contextmanager
def _agent(
    home: Path, clock: Callable[[], datetime] = system_clock, *, writer: bool = True
) -> Iterator[EdgeAgent]:
    try:
        agent = open_agent(home, clock, writer=writer)
    except (EdgeError, EbrError) as e:
        raise click.ClickException(str(e)) from e
    try:
        yield agent
    except (EdgeError, EbrError) as e:
        raise click.ClickException(str(e)) from e
    finally:
        agent.close()


@click.group()
def edge() -> None:
    """The edge agent an operator runs on a production unit."""


@edge.command("mbr-publish")
@click.argument("mbr_yaml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--key", "key_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--signer", required=True, help="Publisher id (the key's owner).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def mbr_publish(mbr_yaml: Path, key_path: Path, signer: str, out: Path) -> None:
    """Sign a master batch record for use on the units."""
    from ebr_core.mbr import parse_mbr

    try:
        content = load_yaml(mbr_yaml.read_text())
        mbr = parse_mbr(content, mbr_yaml.name)
        key = UnitSigner.from_pem(key_path.read_bytes(), signer)
        doc = sign_document(
            content,
            doc_type="mbr",
            doc_id=mbr.mbr_id,
            version=mbr.version,
            signer=key,
            signed_at=system_clock(),
        )
    except EbrError as e:
        raise click.ClickException(str(e)) from e
    out.write_bytes(doc.to_bytes())
    click.echo(
        f"published {mbr.mbr_id} v{mbr.version} ({len(mbr.steps)} steps) signed by {signer}: {out}"
    )


@edge.command()
@HOME
@click.option("--unit", "unit_id", required=True)
@click.option(
    "--mbr",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    required=True,
    help="Signed MBR (from mbr-publish).",
)
@click.option(
    "--publisher-key", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
@click.option(
    "--users", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
@click.option(
    "--materials", type=click.Path(exists=True, dir_okay=False, path_type=Path), required=True
)
def init(
    home: Path, unit_id: str, mbr: Path, publisher_key: Path, users: Path, materials: Path
) -> None:
    """Set up this unit's state directory."""
    try:
        init_home(
            home,
            unit_id=unit_id,
            mbr=mbr,
            publisher_key=publisher_key,
            users=users,
            materials=materials,
        )
    except (EdgeError, EbrError) as e:
        raise click.ClickException(str(e)) from e
    click.echo(f"unit {unit_id} ready in {home}")


@edge.command()
@HOME
@BATCH
@click.option("--coi", required=True, help="The patient's chain-of-identity identifier.")
@USER
@PW_STDIN
def start(home: Path, batch_id: str, coi: str, user_id: str, password_stdin: bool) -> None:
    """Start a batch for a COI (you re-authenticate)."""
    pw = _password(password_stdin)
    with _agent(home) as a:
        st = a.engine.start_batch(batch_id, coi, user_id, pw)
        click.echo(
            f"batch {batch_id} started for COI {st.coi} on MBR {st.mbr_id} v{st.mbr_version}"
        )
        _show(a, batch_id)


def _show(a: EdgeAgent, batch_id: str) -> None:
    exp = a.engine.expectation(batch_id)
    if exp.step is None:
        click.echo("all steps completed")
        return
    click.echo(f"current step: {exp.step.id}: {exp.step.name}")
    for s in exp.scans:
        click.echo(f"  expects scan: {s.material or s.role.replace('_', ' ')}")
    for v in exp.values:
        spec = exp.step.value(v)
        click.echo(f"  expects value: {v} [{spec.unit if spec else ''}]")
    if exp.calculation:
        click.echo(f"  expects calculation: {exp.calculation}")
    for m in exp.signatures:
        click.echo(f"  expects signature: {m}")


@edge.command()
@HOME
@BATCH
def show(home: Path, batch_id: str) -> None:
    """Show the current step and what it expects."""
    with _agent(home) as a:
        _show(a, batch_id)


@edge.command()
@HOME
@BATCH
@USER
@click.option("--gs-substitute", "gs", default="", help="Character this scanner sends for GS.")
@click.argument("raw")
def scan(home: Path, batch_id: str, user_id: str, gs: str, raw: str) -> None:
    """Enter a scan for the current step."""
    raw = raw.replace("\\x1d", "\x1d").replace("<GS>", "\x1d")
    with _agent(home) as a:
        click.echo(a.engine.scan(batch_id, raw, user_id, gs_substitutes=gs))
        _show(a, batch_id)


@edge.command(cls=NumberArguments)
@HOME
@BATCH
@USER
@click.argument("name")
@click.argument("value")
@click.argument("unit")
def value(home: Path, batch_id: str, user_id: str, name: str, value: str, unit: str) -> None:
    """Record a value (NAME VALUE UNIT) for the current step; VALUE may be negative (-90)."""
    with _agent(home) as a:
        click.echo(a.engine.record_value(batch_id, name, value, unit, user_id))


@edge.command(cls=NumberArguments)
@HOME
@BATCH
@USER
@click.option("--step", "step_id", required=True, help="The step whose value is corrected.")
@click.option("--reason", required=True, help="Why the value is corrected.")
@PW_STDIN
@click.argument("name")
@click.argument("value")
@click.argument("unit")
def correct(
    home: Path,
    batch_id: str,
    user_id: str,
    step_id: str,
    reason: str,
    password_stdin: bool,
    name: str,
    value: str,
    unit: str,
) -> None:
    """Correct a recorded value (a new event; the original stays in the record).  You
    re-authenticate with your password, as for a signature."""
    pw = _password(password_stdin)
    with _agent(home) as a:
        click.echo(
            a.engine.correct_value(batch_id, step_id, name, value, unit, reason, user_id, pw)
        )


@edge.command()
@HOME
@BATCH
@USER
def calc(home: Path, batch_id: str, user_id: str) -> None:
    """Run the current step's calculation (the dose)."""
    with _agent(home) as a:
        click.echo(a.engine.calculate(batch_id, user_id))


@edge.command()
@HOME
@BATCH
@click.option(
    "--user",
    "user_id",
    default=None,
    help="Your user id (required unless you are in a continuous session).",
)
@click.option("--meaning", type=click.Choice(["performed", "verified"]), required=True)
@PW_STDIN
def sign(
    home: Path, batch_id: str, user_id: str | None, meaning: str, password_stdin: bool
) -> None:
    """E-sign the current step (printed name, time and meaning are recorded)."""
    pw = _password(password_stdin)
    with _agent(home) as a:
        click.echo(a.engine.sign(batch_id, pw, meaning, user_id))
        _show(a, batch_id)


@edge.group()
def deviation() -> None:
    """Raise, comment and link deviations (nothing is edited in place)."""


@deviation.command("raise")
@HOME
@BATCH
@USER
@click.argument("reason")
def deviation_raise(home: Path, batch_id: str, user_id: str, reason: str) -> None:
    with _agent(home) as a:
        click.echo(f"deviation {a.engine.raise_deviation(batch_id, reason, user_id)} raised")


@deviation.command("comment")
@HOME
@BATCH
@USER
@click.argument("deviation_id")
@click.argument("comment")
def deviation_comment(
    home: Path, batch_id: str, user_id: str, deviation_id: str, comment: str
) -> None:
    with _agent(home) as a:
        a.engine.comment_deviation(batch_id, deviation_id, comment, user_id)
        click.echo(f"comment added to {deviation_id}")


@deviation.command("link")
@HOME
@BATCH
@USER
@click.argument("deviation_id")
@click.argument("other")
def deviation_link(home: Path, batch_id: str, user_id: str, deviation_id: str, other: str) -> None:
    with _agent(home) as a:
        a.engine.link_deviation(batch_id, deviation_id, other, user_id)
        click.echo(f"{deviation_id} linked to {other}")


@edge.command()
@HOME
@click.option("--batch", "batch_id", default=None)
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--check",
    is_flag=True,
    help="Also fold every event of the batch, readings included, with no cache, and compare.",
)
def status(home: Path, batch_id: str | None, as_json: bool, check: bool) -> None:
    """The unit's ledger head, its alarms (refused instrument messages, sync, clock) and a
    batch's state and telemetry.  Reads the ledger read-only: it works where the ledger cannot
    be written (a read-only file system, another user's files)."""
    from edge.sync import sync_alarm
    from edge.transports.mqtt import refused_counts

    with _reading_agent(home) as a:
        seq, head = a.ledger.head
        out: dict[str, Any] = {
            "unit_id": a.unit_id,
            "events": seq,
            "head": head,
            "synced_seq": int(a.ledger.get_meta("sync.acked_seq") or 0),
        }
        out["sync_lag"] = seq - out["synced_seq"]
        out["sync_alarm"] = sync_alarm(a.ledger)
        out["refused_messages"] = refused_counts(a.ledger)
        out["clock_jumps"] = [
            {k: e.payload.get(k) for k in ("old_time", "new_time", "delta_s")} | {"seq": e.seq}
            for e in a.ledger.events_of_kind("clock.jumped")
        ]
        if batch_id:
            st = a.engine.state(batch_id)
            exp = a.engine.expectation(batch_id)
            out["batch"] = {
                "batch_id": st.batch_id,
                "coi": st.coi,
                "status": st.status,
                "current_step": exp.step.id if exp.step else None,
                "completed_steps": len(st.completed_steps),
                "deviations": {d.deviation_id: d.reason for d in st.deviations.values()},
                "rejected_scans": len(st.scans_rejected),
                "signatures": len(st.signatures),
                "readings": a.engine.telemetry(batch_id).readings,
            }
            if check:
                out["check"] = _check_batch(a, batch_id)
        if as_json:
            click.echo(orjson.dumps(out, option=orjson.OPT_INDENT_2).decode())
            return
        click.echo(
            f"unit {a.unit_id}: {seq} events, head {head[:16]}…, not yet synced: {out['sync_lag']}"
        )
        _show_alarms(out)
        if batch_id:
            b = out["batch"]
            click.echo(
                f"batch {b['batch_id']} (COI {b['coi']}): {b['status']}, step "
                f"{b['current_step']}, {b['completed_steps']} steps done, "
                f"{len(b['deviations'])} deviations, {b['rejected_scans']} rejected scans, "
                f"{b['readings']} instrument readings"
            )
            if check:
                click.echo(f"check: {out['check']}")


@contextmanager
def _reading_agent(home: Path) -> Iterator[EdgeAgent]:
    """The agent opened read-only (status, export): nothing is written, not even a lock file."""
    try:
        agent = open_agent(home, system_clock, writer=False, readonly=True)
    except (EdgeError, EbrError) as e:
        raise click.ClickException(str(e)) from e
    try:
        yield agent
    except (EdgeError, EbrError) as e:
        raise click.ClickException(str(e)) from e
    finally:
        agent.close()


def _show_alarms(out: dict[str, Any]) -> None:
    """The unit's standing alarms, one line each (status)."""
    alarm = out["sync_alarm"]
    if alarm is not None:
        kind = {"clock_skew": "CLOCK SKEW", "stopped": "SYNC STOPPED"}.get(alarm["kind"], "SYNC")
        click.echo(f"alarm: {kind}: {alarm['message']}")
    for topic, n in sorted(out["refused_messages"].items()):
        click.echo(f"alarm: {n} instrument message(s) refused on {topic} (reading.refused)")
    for j in out["clock_jumps"]:
        click.echo(
            f"alarm: the clock jumped from {j['old_time']} to {j['new_time']} "
            f"(event {j['seq']}): deviations raised on the batches then running"
        )


def _check_batch(a: EdgeAgent, batch_id: str) -> str:
    """The engine's cached state and telemetry summary against a full fold of the batch."""
    from ebr_core.telemetry import summarise

    full = a.engine.full_state(batch_id)
    if full != a.engine.state(batch_id):
        raise click.ClickException(
            f"batch {batch_id}: the cached state differs from a full fold of its events; "
            "nothing is wrong with the record (the cache is rebuilt on the next command): "
            "report this as a defect"
        )
    summary = summarise(a.ledger.batch_events(batch_id, telemetry=True))
    if summary.to_json() != a.engine.telemetry(batch_id).to_json():
        raise click.ClickException(
            f"batch {batch_id}: the telemetry summary differs from one recomputed from its "
            f"{summary.readings} readings; report this as a defect"
        )
    return f"state and telemetry summary match a full fold of {summary.readings} readings"


@edge.command()
@HOME
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
def export(home: Path, out: Path) -> None:
    """Export the ledger (JSON Lines with seal) and the unit's public key beside it.  Reads the
    ledger read-only; the file appears whole or not at all."""
    with _reading_agent(home) as a:
        v = export_ledger(a.ledger, out)
        click.echo(
            f"exported {v.event_count} events (seq {v.first_seq}..{v.head_seq}) to {out}; "
            f"verified; public key {out.with_name('unit.pub')}"
        )


@edge.command("users")
@HOME
def users_list(home: Path) -> None:
    """List the station's users: only these, when active, can record anything."""
    with _agent(home, writer=False) as a:
        for u in sorted(a.engine.users.values(), key=lambda u: u.user_id):
            state = "active" if u.active else "inactive"
            if a.ledger.get_meta(f"locked:{u.user_id}") is not None:
                state = "locked"
            roles = ", ".join(u.roles) or "no roles"
            click.echo(f"{u.user_id}\t{u.printed_name}\t{roles}\t{state}")


@edge.command("users-pull")
@HOME
@click.option("--server", "server_url", required=True, help="e.g. http://127.0.0.1:8000")
def users_pull(home: Path, server_url: str) -> None:
    """Replace the station's operators with those the server publishes for its site (argon2id
    hashes for offline re-authentication); the change is recorded in the ledger."""
    import hashlib
    import os

    from edge.sync import SyncClient
    from edge.users import load_users, users_yaml

    with _agent(home) as a:
        client = SyncClient(a.ledger, server_url)
        try:
            text = users_yaml(client.fetch_operators())
        except KeyError as e:
            raise click.ClickException(f"server published an operator without {e}") from e
        users = load_users(text)
        target = home / "users.yaml"
        tmp = target.with_suffix(".tmp")
        tmp.write_text(text)
        with tmp.open("rb") as f:
            os.fsync(f.fileno())
        a.ledger.append(
            "users.updated",
            {
                "source": server_url,
                "user_ids": sorted(users),
                "sha256": hashlib.sha256(text.encode()).hexdigest(),
            },
            actor="system",
        )
        tmp.replace(target)
        click.echo(f"{len(users)} operators from the server: {', '.join(sorted(users))}")


@edge.command("sync")
@HOME
@click.option("--server", "server_url", required=True, help="e.g. http://127.0.0.1:8000")
@click.option(
    "--server-key",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="The server's receipt key (server.pub); receipts are checked.",
)
@click.option("--attempts", default=8, show_default=True)
@click.option(
    "--watch",
    type=float,
    default=None,
    help="Keep syncing every N seconds (background mode) until interrupted.",
)
@click.option(
    "--quiet", "-q", is_flag=True, help="No progress on stderr (the summary is still printed)."
)
@click.option(
    "--lock-wait",
    type=click.FloatRange(min=0),
    default=60.0,
    show_default=True,
    help="Seconds to wait for another sync of this unit to finish (one sync at a time).",
)
def sync_cmd(
    home: Path,
    server_url: str,
    server_key: Path | None,
    attempts: int,
    watch: float | None,
    quiet: bool,
    lock_wait: float,
) -> None:
    """Push every unsynced event to the server (resumes from the server's head).

    Progress goes to stderr while it runs (events sent, rate, time left): one line rewritten in
    place on a terminal, otherwise a line every few seconds.
    """
    from ebr_core.keys import PublicKey
    from edge.sync import BackgroundSync, ProgressPrinter, SyncClient

    with _agent(home, writer=False) as a:
        key = PublicKey.from_bytes(server_key.read_bytes()) if server_key else None
        client = SyncClient(a.ledger, server_url, server_key=key, lock_wait=lock_wait)
        if watch is not None:
            # Each round takes the sync lock without waiting (a manual sync may hold it); a
            # refusal backs off and shows as an alarm in status; only a fork or a revoked key
            # ends the loop.
            bg = BackgroundSync(client, watch).start()
            try:
                shown: str | None = None
                while bg.wait(1):
                    if bg.alarm != shown:  # the alarm on stderr as it comes and goes
                        shown = bg.alarm
                        click.echo(f"alarm: {shown}" if shown else "sync resumed", err=True)
            except KeyboardInterrupt:
                bg.stop()
            if bg.error:
                raise click.ClickException(bg.error)
            click.echo(f"background sync stopped after {len(bg.reports)} rounds")
            return
        printer = None if quiet else ProgressPrinter(sys.stderr)
        try:
            r = client.sync_once(attempts, progress=printer)
        finally:
            if printer is not None:
                printer.close()
        click.echo(
            f"synced: {r.pushed} events pushed in {r.segments} segments "
            f"({r.duplicates} already there, {r.retries} retries); server head "
            f"{r.server_head}, local head {r.local_head}"
        )


from edge import custody_cli as _custody_cli  # noqa: E402  (registers the custody commands)

__all__ = ["_custody_cli", "edge"]

from edge.station.cli import run as _run  # noqa: E402
from edge.station.cli import station_check as _station_check  # noqa: E402

edge.add_command(_run)
edge.add_command(_station_check)
