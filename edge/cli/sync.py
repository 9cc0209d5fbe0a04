"""``ctgtp edge sync``: push the unit's record to the server, once or in the background."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from .options import HOME, JSON
from .render import emit, opened

EXIT_SECURITY_ALERT = 3  # the server's transparency log misbehaved (docs/transparency.md)


@click.command("sync")
@HOME
@click.option("--server", "server_url", default=None, help="e.g. http://127.0.0.1:8000")
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
@click.option(
    "--acknowledge-alert",
    is_flag=True,
    help="Clear the standing security alarm (the server's log did not check out) once it has "
    "been looked into; the alert events stay in the ledger.  Syncs nothing.",
)
@JSON
def sync_cmd(
    home: Path,
    server_url: str | None,
    server_key: Path | None,
    attempts: int,
    watch: float | None,
    quiet: bool,
    lock_wait: float,
    acknowledge_alert: bool,
) -> None:
    """Push every unsynced event to the server (resumes from the server's head).

    Progress goes to stderr while it runs (events sent, rate, time left): one line rewritten in
    place on a terminal, otherwise a line every few seconds.  Exit 75 when the server cannot be
    reached or another sync holds the unit (nothing is lost: the next sync resumes), 1 when the
    server refuses, 3 when the server's transparency log did not check out (a security alert,
    recorded in the ledger; the events were still pushed).
    """
    from ebr_core.keys import PublicKey
    from edge.sync import BackgroundSync, ProgressPrinter, SyncClient, acknowledge_security_alarm

    if acknowledge_alert:
        with opened(home, writer=False) as a:
            message = acknowledge_security_alarm(a.ledger)
        emit(
            f"security alarm acknowledged: {message}" if message else "no security alarm stands",
            {"acknowledged": message},
        )
        return
    if server_url is None:
        raise click.UsageError("Missing option '--server' (e.g. http://127.0.0.1:8000).")
    with opened(home, writer=False) as a:
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
            n = len(bg.reports)
            emit(f"background sync stopped after {n} rounds", {"rounds": n})
            return
        printer = None if quiet else ProgressPrinter(sys.stderr)
        try:
            r = client.sync_once(attempts, progress=printer)
        finally:
            if printer is not None:
                printer.close()
    data: dict[str, object] = {
        "pushed": r.pushed,
        "segments": r.segments,
        "duplicates": r.duplicates,
        "retries": r.retries,
        "server_head": r.server_head,
        "local_head": r.local_head,
    }
    if r.alerts:  # the summary stays what it was while the server's log checks out
        data |= {"log": r.log, "log_size": r.log_size, "alerts": r.alerts}
    emit(
        f"synced: {r.pushed} events pushed in {r.segments} segments "
        f"({r.duplicates} already there, {r.retries} retries); server head "
        f"{r.server_head}, local head {r.local_head}",
        data,
    )
    if r.alerts:
        # The push went through (the unit's events are its own, signed); the server's log did
        # not check out: said on stderr, recorded in the ledger, exit 3 (as the witness does).
        click.echo(r.log, err=True)
        sys.exit(EXIT_SECURITY_ALERT)


COMMANDS = (sync_cmd,)
