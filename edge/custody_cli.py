"""``ctgtp edge labels …``, ``handoff``, ``receive``, ``infuse`` and ``shipper-log``: custody at
the station.  Two-person commands read two passwords (two prompts, or two lines of standard input
with ``--password-stdin``: the giver's first)."""

from __future__ import annotations

from datetime import date, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path

import click

from ebr_core.custody import LABELS, parse_logger_csv
from edge.cli import BATCH, HOME, PW_STDIN, USER, _agent, _password, edge
from edge.custody import Custody


@edge.group()
def labels() -> None:
    """Print, apply, destroy and reconcile labels."""


@labels.command("print")
@HOME
@BATCH
@USER
@click.option("--label", type=click.Choice(LABELS), required=True)
@click.option("--count", type=click.IntRange(1, 50), default=1, show_default=True)
@click.option("--din", default=None, help="ISBT 128 DIN as data, e.g. =A99992612345600")
@click.option("--gtin", default=None)
@click.option("--lot", default=None, help="GS1 batch/lot (product bag)")
@click.option("--expiry", type=click.DateTime(["%Y-%m-%d"]), default=None)
@click.option("--serial", default=None)
@click.option("--product", default="", help="Product name printed on the label")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), required=True)
def labels_print(
    home: Path,
    batch_id: str,
    user_id: str,
    label: str,
    count: int,
    din: str | None,
    gtin: str | None,
    lot: str | None,
    expiry: object,
    serial: str | None,
    product: str,
    out: Path,
) -> None:
    """Make the label (PNG and PDF) for the batch's COI and record how many were printed."""
    from edge.labels import LabelData, pdf, png

    with _agent(home) as a:
        a.engine.actor(user_id)  # before any file is written
        st = a.engine.state(batch_id)
        assert st.coi is not None
        exp: date | None = expiry.date() if expiry is not None else None  # type: ignore[attr-defined]
        data = LabelData(label, st.coi, din, gtin, lot, exp, serial, product)
        image = png(data)  # validates before anything is recorded
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{batch_id}-{label}.png").write_bytes(image)
        (out / f"{batch_id}-{label}.pdf").write_bytes(pdf([data] * count))
        Custody(a.engine).labels_printed(
            batch_id,
            label,
            count,
            user_id,
            {"coi": st.coi, "din": din, "gtin": gtin, "lot": lot, "serial": serial,
             "expiry": exp.isoformat() if exp else None},
        )  # fmt: skip
        click.echo(f"printed {count} {label} label(s) for {st.coi} to {out}")


@labels.command("apply")
@HOME
@BATCH
@USER
@click.option("--label", type=click.Choice(LABELS), required=True)
@click.option("--count", type=click.IntRange(1, 50), default=1, show_default=True)
def labels_apply(home: Path, batch_id: str, user_id: str, label: str, count: int) -> None:
    with _agent(home) as a:
        Custody(a.engine).labels_applied(batch_id, label, count, user_id)
        click.echo(f"{count} {label} label(s) applied")


@labels.command("destroy")
@HOME
@BATCH
@USER
@click.option("--label", type=click.Choice(LABELS), required=True)
@click.option("--count", type=click.IntRange(1, 50), default=1, show_default=True)
@click.option("--reason", required=True)
def labels_destroy(
    home: Path, batch_id: str, user_id: str, label: str, count: int, reason: str
) -> None:
    with _agent(home) as a:
        Custody(a.engine).labels_destroyed(batch_id, label, count, reason, user_id)
        click.echo(f"{count} {label} label(s) destroyed: {reason}")


@labels.command("reconcile")
@HOME
@BATCH
@USER
def labels_reconcile(home: Path, batch_id: str, user_id: str) -> None:
    """Printed = applied + destroyed per label kind; a mismatch raises a deviation (exit 1)."""
    with _agent(home) as a:
        r = Custody(a.engine).reconcile_labels(batch_id, user_id)
    click.echo(r)
    if not r.balanced:
        raise click.ClickException("labels do not reconcile: recorded with a deviation")


@edge.command()
@HOME
@BATCH
@click.option("--from", "from_party", required=True, help="Who hands over (site or courier id)")
@click.option("--to", "to_party", required=True, help="Who receives")
@click.option("--place", required=True)
@click.option("--bag-scan", required=True, help="The scan of the bag label")
@click.option("--shipper-scan", default=None, help="The scan of the shipper label")
@click.option("--giver", required=True, help="User id of the person handing over")
@click.option("--receiver", required=True, help="User id of the person receiving")
@PW_STDIN
def handoff(
    home: Path,
    batch_id: str,
    from_party: str,
    to_party: str,
    place: str,
    bag_scan: str,
    shipper_scan: str | None,
    giver: str,
    receiver: str,
    password_stdin: bool,
) -> None:
    """Hand the material over: both scans must carry the batch's COI; both people sign."""
    pw1, pw2 = _password(password_stdin), _password(password_stdin)
    with _agent(home) as a:
        r = Custody(a.engine).handoff(
            batch_id, from_party=from_party, to_party=to_party, place=place, bag_scan=bag_scan,
            shipper_scan=shipper_scan, giver=(giver, pw1), receiver=(receiver, pw2),
        )  # fmt: skip
    click.echo(r)


@edge.command()
@HOME
@BATCH
@USER
@click.option("--site", required=True)
@click.option("--bag-scan", required=True)
@PW_STDIN
def receive(
    home: Path, batch_id: str, user_id: str, site: str, bag_scan: str, password_stdin: bool
) -> None:
    """Receipt at the infusion site, verified by a scan of the bag."""
    pw = _password(password_stdin)
    with _agent(home) as a:
        r = Custody(a.engine).receive(
            batch_id, site=site, bag_scan=bag_scan, receiver=(user_id, pw)
        )
    click.echo(r)


@edge.command()
@HOME
@BATCH
@USER
@click.option("--site", required=True)
@click.option("--bag-scan", required=True)
@PW_STDIN
def infuse(
    home: Path, batch_id: str, user_id: str, site: str, bag_scan: str, password_stdin: bool
) -> None:
    """Infusion confirmed at the bedside: closes the custody chain."""
    pw = _password(password_stdin)
    with _agent(home) as a:
        r = Custody(a.engine).infuse(
            batch_id, site=site, bag_scan=bag_scan, clinician=(user_id, pw)
        )
    click.echo(r)


@edge.command("shipper-log")
@HOME
@BATCH
@USER
@click.option("--shipper", required=True, help="Shipper id")
@click.option("--csv", "csv_file", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              required=True)  # fmt: skip
@click.option("--limit", "limit_c", default="-150", show_default=True, help="°C")
@click.option("--allowed-seconds", default=300, show_default=True, type=click.IntRange(0))
def shipper_log(
    home: Path,
    batch_id: str,
    user_id: str,
    shipper: str,
    csv_file: Path,
    limit_c: str,
    allowed_seconds: int,
) -> None:
    """Ingest a cryoshipper logger export; each excursion becomes a deviation (exit 1)."""
    try:
        limit = Decimal(limit_c)
    except InvalidOperation as e:
        raise click.BadParameter(f"--limit {limit_c!r} is not a number of °C") from e
    with _agent(home) as a:
        found = Custody(a.engine).shipper_log(
            batch_id, list(parse_logger_csv(csv_file.read_text())), shipper=shipper,
            limit_c=limit, allowed=timedelta(seconds=allowed_seconds), user_id=user_id,
        )  # fmt: skip
    for x in found:
        click.echo(f"EXCURSION: {x.describe(limit, timedelta(seconds=allowed_seconds))}")
    if found:
        raise click.ClickException(f"{len(found)} temperature excursion(s): deviations raised")
    click.echo(f"shipper {shipper}: no excursion (limit {limit} °C, {allowed_seconds} s)")
