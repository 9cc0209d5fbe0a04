"""``ctgtp demo``: the main job end to end on embedded defaults, printing what happened.

Today it runs the record core: make a unit key, record a short batch on the unit's hash chain with
signed checkpoints, export the ledger in the exchange format, verify it as an auditor would, and
show that a one-byte change is caught.  Output goes to ``demo-output/``.
"""

from __future__ import annotations

import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import click

from ebr_core.chain import ChainBuilder, sign_seal
from ebr_core.keys import UnitSigner
from ebr_core.ledgerfile import encode_record
from ebr_core.quantity import quantity
from ebr_core.record import Checkpoint, Event, Seal


def _say(msg: str) -> None:
    click.echo(msg)


@click.command()
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    default=Path("demo-output"),
    show_default=True,
)
def demo(out_dir: Path) -> None:
    """Run the end-to-end demonstration."""
    out_dir.mkdir(parents=True, exist_ok=True)
    t = [datetime.now(UTC).replace(microsecond=0)]

    def clock() -> datetime:
        t[0] += timedelta(seconds=1)
        return t[0]

    unit = "UNIT-DEMO-01"
    signer = UnitSigner.generate(unit)
    _say(f"1. unit {unit}: new Ed25519 key {signer.key_id}")
    b = ChainBuilder(signer, clock)
    coi = "&/CHA999926ABC123"
    batch = "B-DEMO-0001"
    records: list[Event | Checkpoint | Seal] = []
    script: list[tuple[str, dict[str, Any], str | None]] = [
        ("batch.started", {"coi": coi, "mbr": "CAR-T-COCOON/3"}, "op.alice"),
        ("scan.accepted", {"role": "patient_material", "raw": coi}, "op.alice"),
        (
            "scan.rejected",
            {
                "role": "patient_material",
                "raw": "&/CHA999926ZZZ999",
                "reason": "COI does not match the batch",
            },
            "op.alice",
        ),
        ("reading.recorded", {"channel": "viability", "value": quantity("92.4", "%")}, None),
        ("reading.recorded", {"channel": "temperature", "value": quantity("37.0", "Cel")}, None),
        ("step.completed", {"step": "apheresis-receipt"}, "op.alice"),
    ]
    for kind, payload, actor in script:
        records.append(b.next_event(kind, payload, batch_id=batch, actor=actor))
        records.append(b.checkpoint())
    records.append(sign_seal(signer, 1, b.seq, b.head_hash))
    _say(f"2. recorded {b.seq} events for batch {batch} (COI {coi}), each commit checkpointed")

    ledger = out_dir / "ledger.jsonl"
    pub = out_dir / "unit.pub"
    ledger.write_bytes(b"".join(encode_record(r) for r in records))
    pub.write_bytes(signer.public.to_json())
    _say(f"3. exported {ledger} and {pub}")

    ok = _verify(ledger, pub)
    _say(f"4. auditor: ctgtp verify {ledger} --public-key {pub}\n   {ok.stdout.strip()}")
    tampered = out_dir / "ledger-tampered.jsonl"
    tampered.write_bytes(ledger.read_bytes().replace(b'"value":"92.4"', b'"value":"97.4"'))
    bad = _verify(tampered, pub)
    _say(f"5. one changed digit in a copy: {bad.stderr.strip()}")
    tampered.unlink()
    if ok.returncode != 0 or bad.returncode == 0:
        raise click.ClickException("demo failed: verification did not behave as expected")
    _say("demo finished: the ledger verifies; the altered copy is refused")


def _verify(ledger: Path, pub: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ctgtp", "verify", str(ledger), "--public-key", str(pub)],
        capture_output=True,
        text=True,
        check=False,
    )
