"""``ctgtp witness``: run a witness against a tiled log, print its cosignature key.

Exit status of ``run``: 0 when every look ended in a cosignature; 3 on an alert (split view,
rewound or forked log: nothing is cosigned, the alert is printed on stderr and recorded in the
state directory); 1 when the log could not be read or checked (``--once``; a running witness
says so and tries again at the next interval) or the keys or state cannot be used.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import click
import httpx

from ebr_core.errors import EbrError
from ebr_core.keys import PublicKey, UnitSigner
from ebr_core.tlog import Cosigner, Ed25519NoteVerifier, SignedNote
from witness.core import Witness
from witness.errors import (
    ConfigError,
    FetchError,
    PushError,
    UncheckableError,
    WitnessError,
)
from witness.http import LogClient
from witness.state import StateDir

EXIT_ALERT = 3
EXIT_UNCHECKED = 1


def load_log_key(path: Path, origin: str | None) -> Ed25519NoteVerifier:
    """The log's key: a note verifier key (``name+id+key``), or a ctgtp public key file (JSON
    or PEM), whose note key name is then ``--origin``."""
    data = path.read_bytes()
    text = data.strip()
    try:
        if text.startswith((b"{", b"-----BEGIN")):
            if not origin:
                raise ConfigError(
                    f"{path} is a public key file without a key name: give the log's --origin"
                )
            return Ed25519NoteVerifier(origin, PublicKey.from_bytes(data))
        return Ed25519NoteVerifier.from_vkey(text.decode("utf-8"))
    except (EbrError, UnicodeDecodeError) as e:
        raise ConfigError(
            f"{path}: not a log key (a verifier key or a public key file): {e}"
        ) from e


def load_cosigner(path: Path, name: str | None) -> Cosigner:
    try:
        signer = UnitSigner.from_pem(path.read_bytes(), name or "witness")
        return Cosigner(name or f"ctgtp-witness/{signer.key_id}", signer)
    except EbrError as e:
        raise ConfigError(f"{path}: not a witness key: {e}") from e


def _own_lines(note: SignedNote, log: Ed25519NoteVerifier, cosigner: Cosigner) -> SignedNote:
    """The cosigned note with the log's signature and this witness's cosignature only (not
    other witnesses' lines the log already served)."""
    mine = {(log.name, log.key_id), (cosigner.name, cosigner.verifier.key_id)}
    return SignedNote(note.text, tuple(s for s in note.signatures if (s.name, s.key_id) in mine))


@click.group()
def witness() -> None:
    """Witness a transparency log: check each checkpoint extends the last one cosigned, and
    cosign it."""


@witness.command("vkey")
@click.option("--key", "key_file", required=True, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--name", default=None, help="The witness's key name (default ctgtp-witness/<id>).")
def vkey(key_file: Path, name: str | None) -> None:
    """Print the witness's cosignature verifier key, for the log's and clients' configuration."""
    try:
        click.echo(load_cosigner(key_file, name).verifier.vkey())
    except WitnessError as e:
        raise click.ClickException(str(e)) from e


@witness.command("run")
@click.option("--log", "log_url", required=True, help="The log's tile prefix URL.")
@click.option(
    "--log-key",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The log's verifier key (name+id+key), or its public key file with --origin.",
)
@click.option("--origin", default=None, help="The log's origin (default: its key's name).")
@click.option(
    "--key",
    "key_file",
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The witness's private key (PEM, from `ctgtp keys new`).",
)
@click.option("--name", default=None, help="The witness's key name (default ctgtp-witness/<id>).")
@click.option(
    "--state",
    "state_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The witness's state directory (last cosigned checkpoint, alerts, evidence).",
)
@click.option("--interval", default=60.0, show_default=True, help="Seconds between looks.")
@click.option("--once", is_flag=True, help="Look once and exit.")
@click.option("--timeout", default=10.0, show_default=True, help="HTTP timeout, seconds.")
@click.option(
    "--push",
    is_flag=True,
    help="After cosigning, POST the cosigned checkpoint to LOG/cosignatures (a ctgtp server "
    "collects its witnesses' cosignatures and serves them with the checkpoint).",
)
def run(
    log_url: str,
    log_key: Path,
    origin: str | None,
    key_file: Path,
    name: str | None,
    state_dir: Path,
    interval: float,
    once: bool,
    timeout: float,
    push: bool,
) -> None:
    """Fetch LOG/checkpoint, check it against the last cosigned one through the log's tiles,
    cosign it; refuse and alert on a split view, a rewound or a forked log."""
    try:
        log = load_log_key(log_key, origin)
        cosigner = load_cosigner(key_file, name)
        w = Witness(log, cosigner, StateDir(state_dir), lambda: int(time.time()), origin)
    except WitnessError as e:
        raise click.ClickException(str(e)) from e
    with httpx.Client(timeout=timeout, follow_redirects=False) as http:
        client = LogClient(log_url, http)
        while True:
            try:
                outcome = w.witness(client.checkpoint(), client.tile)
            except (FetchError, UncheckableError) as e:
                click.echo(f"not cosigned: {e}", err=True)
                if once:
                    sys.exit(EXIT_UNCHECKED)
            except WitnessError as e:
                raise click.ClickException(str(e)) from e
            else:
                if outcome.alert is not None:
                    click.echo(outcome.line(), err=True)
                    click.echo(f"evidence kept in {state_dir}", err=True)
                    sys.exit(EXIT_ALERT)
                click.echo(outcome.line())
                if push and outcome.note is not None:
                    try:
                        client.push(_own_lines(outcome.note, log, cosigner).to_bytes())
                        click.echo(f"pushed the cosignature of size {outcome.checkpoint.size} "
                                   f"to {client.prefix}/cosignatures")  # fmt: skip
                    except PushError as e:
                        click.echo(f"not pushed: {e}", err=True)
                        if once:
                            sys.exit(EXIT_UNCHECKED)
            if once:
                return
            time.sleep(interval)
