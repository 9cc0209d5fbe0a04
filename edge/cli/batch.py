"""``ctgtp edge start``, ``show``, ``scan``, ``value``, ``correct``, ``calc``, ``sign`` and
``deviation``: the steps of a batch, each the engine's action rendered as text or JSON."""

from __future__ import annotations

from pathlib import Path

import click

from .options import BATCH, HOME, JSON, PW_STDIN, USER, NumberArguments, on_batch, password
from .render import emit, emit_outcome, expectation_lines, opened


@click.command()
@HOME
@BATCH
@click.option("--coi", required=True, help="The patient's chain-of-identity identifier.")
@USER
@PW_STDIN
@JSON
def start(home: Path, batch_id: str, coi: str, user_id: str, password_stdin: bool) -> None:
    """Start a batch for a COI (you re-authenticate)."""
    pw = password(password_stdin)
    with opened(home) as a:
        started = a.engine.start_batch(batch_id, coi, user_id, pw)
        emit_outcome(started, a.engine.expectation(batch_id))


@click.command()
@HOME
@BATCH
@JSON
def show(home: Path, batch_id: str) -> None:
    """Show the current step and what it expects."""
    with opened(home) as a:
        exp = a.engine.expectation(batch_id)
        emit("\n".join(expectation_lines(exp)), {"batch_id": batch_id, **exp.to_json()})


@click.command()
@on_batch
@click.option("--gs-substitute", "gs", default="", help="Character this scanner sends for GS.")
@click.argument("raw")
def scan(home: Path, batch_id: str, user_id: str, gs: str, raw: str) -> None:
    """Enter a scan for the current step."""
    raw = raw.replace("\\x1d", "\x1d").replace("<GS>", "\x1d")
    with opened(home) as a:
        accepted = a.engine.scan(batch_id, raw, user_id, gs_substitutes=gs)
        emit_outcome(accepted, a.engine.expectation(batch_id))


@click.command(cls=NumberArguments)
@on_batch
@click.argument("name")
@click.argument("value")
@click.argument("unit")
def value(home: Path, batch_id: str, user_id: str, name: str, value: str, unit: str) -> None:
    """Record a value (NAME VALUE UNIT) for the current step; VALUE may be negative (-90)."""
    with opened(home) as a:
        emit_outcome(a.engine.record_value(batch_id, name, value, unit, user_id))


@click.command(cls=NumberArguments)
@on_batch
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
    pw = password(password_stdin)
    with opened(home) as a:
        emit_outcome(
            a.engine.correct_value(batch_id, step_id, name, value, unit, reason, user_id, pw)
        )


@click.command()
@on_batch
def calc(home: Path, batch_id: str, user_id: str) -> None:
    """Run the current step's calculation (the dose)."""
    with opened(home) as a:
        emit_outcome(a.engine.calculate(batch_id, user_id))


@click.command()
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
@JSON
def sign(
    home: Path, batch_id: str, user_id: str | None, meaning: str, password_stdin: bool
) -> None:
    """E-sign the current step (printed name, time and meaning are recorded)."""
    pw = password(password_stdin)
    with opened(home) as a:
        signed = a.engine.sign(batch_id, pw, meaning, user_id)
        emit_outcome(signed, a.engine.expectation(batch_id))


@click.group()
def deviation() -> None:
    """Raise, comment and link deviations (nothing is edited in place)."""


@deviation.command("raise")
@on_batch
@click.argument("reason")
def deviation_raise(home: Path, batch_id: str, user_id: str, reason: str) -> None:
    """Raise a deviation on the batch (at its current step)."""
    with opened(home) as a:
        emit_outcome(a.engine.raise_deviation(batch_id, reason, user_id))


@deviation.command("comment")
@on_batch
@click.argument("deviation_id")
@click.argument("comment")
def deviation_comment(
    home: Path, batch_id: str, user_id: str, deviation_id: str, comment: str
) -> None:
    """Comment on a deviation."""
    with opened(home) as a:
        emit_outcome(a.engine.comment_deviation(batch_id, deviation_id, comment, user_id))


@deviation.command("link")
@on_batch
@click.argument("deviation_id")
@click.argument("other")
def deviation_link(home: Path, batch_id: str, user_id: str, deviation_id: str, other: str) -> None:
    """Link a deviation to another of the same batch."""
    with opened(home) as a:
        emit_outcome(a.engine.link_deviation(batch_id, deviation_id, other, user_id))


COMMANDS = (start, show, scan, value, correct, calc, sign, deviation)
