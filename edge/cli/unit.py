"""``ctgtp edge mbr-publish``, ``init``, ``status`` and ``export``: the unit's set-up, its state
and its record."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from ebr_core.document import load_yaml, sign_document
from ebr_core.keys import UnitSigner
from edge.agent import EdgeAgent, init_home
from edge.export import export_ledger

from .options import HOME, JSON
from .render import emit, json_wanted, opened, system_clock


@click.command("mbr-publish")
@click.argument("mbr_yaml", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--key", "key_path", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path)
)
@click.option("--signer", required=True, help="Publisher id (the key's owner).")
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@JSON
def mbr_publish(mbr_yaml: Path, key_path: Path, signer: str, out: Path) -> None:
    """Sign a master batch record for use on the units."""
    from ebr_core.mbr import parse_mbr

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
    out.write_bytes(doc.to_bytes())
    emit(
        f"published {mbr.mbr_id} v{mbr.version} ({len(mbr.steps)} steps) signed by {signer}: "
        f"{out}",
        {"mbr_id": mbr.mbr_id, "version": mbr.version, "steps": len(mbr.steps),
         "signer": signer, "out": str(out)},
    )  # fmt: skip


@click.command()
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
@JSON
def init(
    home: Path, unit_id: str, mbr: Path, publisher_key: Path, users: Path, materials: Path
) -> None:
    """Set up this unit's state directory."""
    init_home(
        home,
        unit_id=unit_id,
        mbr=mbr,
        publisher_key=publisher_key,
        users=users,
        materials=materials,
    )
    emit(f"unit {unit_id} ready in {home}", {"unit_id": unit_id, "home": str(home)})


@click.command()
@HOME
@click.option("--batch", "batch_id", default=None)
@JSON
@click.option(
    "--check",
    is_flag=True,
    help="Also fold every event of the batch, readings included, with no cache, and compare.",
)
def status(home: Path, batch_id: str | None, check: bool) -> None:
    """The unit's ledger head, its alarms (refused instrument messages, sync, clock) and a
    batch's state and telemetry.  Reads the ledger read-only: it works where the ledger cannot
    be written (a read-only file system, another user's files)."""
    with opened(home, writer=False, readonly=True) as a:
        out = _status(a, batch_id, check)
    if json_wanted():
        emit("", out)
        return
    seq, head, lag = out["events"], out["head"], out["sync_lag"]
    click.echo(f"unit {out['unit_id']}: {seq} events, head {head[:16]}…, not yet synced: {lag}")
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


def _status(a: EdgeAgent, batch_id: str | None, check: bool) -> dict[str, Any]:
    from edge.sync import ACKED, sync_alarm
    from edge.transports.mqtt import refused_counts

    seq, head = a.ledger.head
    synced = int(a.ledger.get_meta(ACKED) or 0)
    out: dict[str, Any] = {
        "unit_id": a.unit_id,
        "events": seq,
        "head": head,
        "synced_seq": synced,
        "sync_lag": seq - synced,
        "sync_alarm": sync_alarm(a.ledger),
        "refused_messages": refused_counts(a.ledger),
        "clock_jumps": [
            {k: e.payload.get(k) for k in ("old_time", "new_time", "delta_s")} | {"seq": e.seq}
            for e in a.ledger.events_of_kind("clock.jumped")
        ],
    }
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
    return out


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


@click.command()
@HOME
@click.option("--out", "out", required=True, type=click.Path(dir_okay=False, path_type=Path))
@JSON
def export(home: Path, out: Path) -> None:
    """Export the ledger (JSON Lines with seal) and the unit's public key beside it.  Reads the
    ledger read-only; the file appears whole or not at all."""
    with opened(home, writer=False, readonly=True) as a:
        v = export_ledger(a.ledger, out)
    pub = out.with_name("unit.pub")
    emit(
        f"exported {v.event_count} events (seq {v.first_seq}..{v.head_seq}) to {out}; "
        f"verified; public key {pub}",
        {"events": v.event_count, "first_seq": v.first_seq, "head_seq": v.head_seq,
         "out": str(out), "public_key": str(pub), "verified": True},
    )  # fmt: skip


COMMANDS = (mbr_publish, init, status, export)
