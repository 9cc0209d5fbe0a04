"""``ctgtp scan``: the technician's tool to check what a scanner sends, and COI / DIN helpers."""

from __future__ import annotations

import os
import sys

import click
import orjson

from ebr_core.errors import IdentifierError
from ebr_core.identifiers import parse_scan
from ebr_core.isbt128 import mod37_2, new_coi, parse_din


def _fail(msg: str) -> None:
    click.echo(f"error: {msg}", err=True)
    sys.exit(1)


@click.group()
def scan() -> None:
    """Parse and check barcode data (GS1, ISBT 128)."""


@scan.command("parse")
@click.argument("raw")
@click.option(
    "--gs-substitute",
    "gs_substitutes",
    default="",
    help="Character(s) this scanner sends for FNC1/GS, e.g. '|'. A real GS (0x1D) always works; "
    "the two characters \\x1d in RAW are read as GS too.",
)
def parse(raw: str, gs_substitutes: str) -> None:
    """Print the identifiers in RAW as JSON; exit 1 with the reason for a bad scan."""
    raw = raw.replace("\\x1d", "\x1d").replace("<GS>", "\x1d")
    try:
        data = parse_scan(raw, gs_substitutes=gs_substitutes)
    except IdentifierError as e:
        _fail(str(e))
        return
    click.echo(orjson.dumps(data.to_json(), option=orjson.OPT_INDENT_2).decode())


@scan.command("coi-new")
@click.option("--facility", required=True, help="ISBT 128 facility id, α + 4 digits (A9999).")
@click.option("--year", required=True, type=int, help="Year, two or four digits.")
def coi_new(facility: str, year: int) -> None:
    """Print a new chain-of-identity identifier with its keyboard check character."""
    try:
        coi = new_coi(facility, year, os.urandom)
    except IdentifierError as e:
        _fail(str(e))
        return
    click.echo(
        orjson.dumps(
            {"coi": coi.data(), "check": coi.check, "eye_readable": coi.eye_readable()},
            option=orjson.OPT_INDENT_2,
        ).decode()
    )


@scan.command("din-check")
@click.argument("din13")
def din_check(din13: str) -> None:
    """Print the keyboard check character K of a 13-character DIN."""
    try:
        d = parse_din(din13)
    except IdentifierError as e:
        _fail(str(e))
        return
    click.echo(mod37_2(d.din))
