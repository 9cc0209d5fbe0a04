"""``ctgtp edge labels …``, ``handoff``, ``receive``, ``infuse`` and ``shipper-log``: custody at
the station.  Two-person commands read two passwords (two prompts, or two lines of standard input
with ``--password-stdin``: the giver's first)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click

from ebr_core.custody import LABELS, parse_logger_csv
from edge.custody import Custody, CustodyRecorded, Party

from .options import BATCH, HOME, JSON, PW_STDIN, on_batch, password
from .render import emit, emit_outcome, opened

LABEL = click.option("--label", type=click.Choice(LABELS), required=True)
COUNT = click.option("--count", type=click.IntRange(1, 50), default=1, show_default=True)


@click.group()
def labels() -> None:
    """Print, apply, destroy and reconcile labels."""


@labels.command("print")
@on_batch
@LABEL
@COUNT
@click.option("--din", default=None, help="ISBT 128 DIN as data, e.g. =A99992612345600")
@click.option("--gtin", default=None, help="the product bag's GTIN, or a shipper's own")
@click.option("--sscc", default=None, help="the shipper's SSCC (18 digits, GS1 AI 00)")
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
    expiry: datetime | None,
    serial: str | None,
    product: str,
    out: Path,
    sscc: str | None,
) -> None:
    """Make the label (PNG and PDF) for the batch's COI and record how many were printed."""
    from edge.labels import LabelData, pdf, png

    with opened(home) as a:
        a.engine.actor(user_id)  # before any file is written
        st = a.engine.state(batch_id)
        assert st.coi is not None
        exp: date | None = expiry.date() if expiry is not None else None
        data = LabelData(label, st.coi, din, gtin, lot, exp, serial, product, sscc=sscc)
        data.validate(trade_items=a.engine.materials.trade_items())
        image = png(data)  # validates before anything is recorded
        out.mkdir(parents=True, exist_ok=True)
        (out / f"{batch_id}-{label}.png").write_bytes(image)
        (out / f"{batch_id}-{label}.pdf").write_bytes(pdf([data] * count))
        printed = Custody(a.engine).labels_printed(
            batch_id,
            label,
            count,
            user_id,
            {"coi": st.coi, "din": din, "gtin": gtin, "sscc": sscc, "lot": lot,
             "serial": serial, "expiry": exp.isoformat() if exp else None},
        )  # fmt: skip
    emit_outcome(printed, text=f"{printed} to {out}", out=str(out))


@labels.command("apply")
@on_batch
@LABEL
@COUNT
@click.option(
    "--scan",
    "scanned",
    help="the applied label read back from the item (one label): checked against the batch's COI",
)
def labels_apply(
    home: Path, batch_id: str, user_id: str, label: str, count: int, scanned: str | None
) -> None:
    """Record labels applied to the bags or the shipper."""
    with opened(home) as a:
        c = Custody(a.engine)
        emit_outcome(c.labels_applied(batch_id, label, count, user_id, scanned=scanned))


@labels.command("destroy")
@on_batch
@LABEL
@COUNT
@click.option("--reason", required=True)
def labels_destroy(
    home: Path, batch_id: str, user_id: str, label: str, count: int, reason: str
) -> None:
    """Record labels destroyed, and why."""
    with opened(home) as a:
        emit_outcome(Custody(a.engine).labels_destroyed(batch_id, label, count, reason, user_id))


@labels.command("reconcile")
@on_batch
def labels_reconcile(home: Path, batch_id: str, user_id: str) -> None:
    """Printed = applied + destroyed per label kind; a mismatch raises a deviation (exit 1)."""
    with opened(home) as a:
        r = Custody(a.engine).reconcile_labels(batch_id, user_id)
    emit_outcome(r)
    if not r.balanced:
        raise click.ClickException("labels do not reconcile: recorded with a deviation")


@click.command()
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
@JSON
def handoff(
    home: Path, batch_id: str, giver: str, receiver: str, password_stdin: bool, **where: Any
) -> None:
    """Hand the material over: both scans must carry the batch's COI; both people sign."""
    # where: --from, --to, --place and the scans, passed to Custody.handoff as they are
    pw1, pw2 = password(password_stdin), password(password_stdin)
    with opened(home) as a:
        r = Custody(a.engine).handoff(
            batch_id, giver=(giver, pw1), receiver=(receiver, pw2), **where
        )
    emit_outcome(r)


SiteAction = Callable[[Custody, str, str, str, Party], CustodyRecorded]


def _at_the_site(name: str, help_text: str, action: SiteAction) -> click.Command:
    """``receive`` and ``infuse``: one person at the treating site, verified by a bag scan."""

    @click.command(name, help=help_text)
    @on_batch
    @click.option("--site", required=True)
    @click.option("--bag-scan", required=True)
    @PW_STDIN
    def command(
        home: Path, batch_id: str, user_id: str, site: str, bag_scan: str, password_stdin: bool
    ) -> None:
        party = (user_id, password(password_stdin))
        with opened(home) as a:
            recorded = action(Custody(a.engine), batch_id, site, bag_scan, party)
        emit_outcome(recorded)

    return command


receive = _at_the_site(
    "receive",
    "Receipt at the infusion site, verified by a scan of the bag.",
    lambda c, batch_id, site, scan, party: c.receive(
        batch_id, site=site, bag_scan=scan, receiver=party
    ),
)
infuse = _at_the_site(
    "infuse",
    "Infusion confirmed at the bedside: closes the custody chain.",
    lambda c, batch_id, site, scan, party: c.infuse(
        batch_id, site=site, bag_scan=scan, clinician=party
    ),
)


@click.command("shipper-log")
@on_batch
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
    allowed = timedelta(seconds=allowed_seconds)
    with opened(home) as a:
        found = Custody(a.engine).shipper_log(
            batch_id, list(parse_logger_csv(csv_file.read_text())), shipper=shipper,
            limit_c=limit, allowed=allowed, user_id=user_id,
        )  # fmt: skip
    lines = [f"EXCURSION: {x.describe(limit, allowed)}" for x in found]
    if not found:
        lines.append(f"shipper {shipper}: no excursion (limit {limit} °C, {allowed_seconds} s)")
    emit(
        "\n".join(lines),
        {"outcome": "shipper_logged", "batch_id": batch_id, "shipper": shipper,
         "limit_c": str(limit), "allowed_s": allowed_seconds,
         "excursions": [x.describe(limit, allowed) for x in found]},
    )  # fmt: skip
    if found:
        raise click.ClickException(f"{len(found)} temperature excursion(s): deviations raised")


COMMANDS = (labels, handoff, receive, infuse, shipper_log)
