"""Shell for ebr_core: ``ctgtp verify``, ``ctgtp scan``, ``ctgtp keys``.

Errors from ebr_core are turned into one-line messages and a non-zero exit; never a traceback.
"""

from __future__ import annotations

import sys
from pathlib import Path

import click
import orjson

from ebr_core.custody import CUSTODY_KINDS, CustodyProblem, check_custody
from ebr_core.errors import EbrError, VerificationError
from ebr_core.keys import Keyring, PublicKey, UnitSigner
from ebr_core.ledgerfile import verify_ledger_chunks
from ebr_core.record import Event, decode_record

CHUNK = 1 << 20


@click.command()
@click.argument("ledger", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    required=True,
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A unit public key file trusted to sign this ledger (repeat for rotated keys).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(ledger: Path, public_keys: tuple[Path, ...], as_json: bool) -> None:
    """Verify LEDGER.jsonl: every hash, link, checkpoint signature and the final seal, then
    the chain-of-custody rules of every batch with custody events.

    Exits 0 and prints the event count and head for a valid ledger; exits 1 naming the first bad
    line otherwise.
    """
    try:
        keyring = Keyring([PublicKey.from_bytes(p.read_bytes()) for p in public_keys])
    except EbrError as e:
        raise click.ClickException(f"public key: {e}") from e

    def chunks() -> object:
        with ledger.open("rb") as f:
            while block := f.read(CHUNK):
                yield block

    try:
        result = verify_ledger_chunks(chunks(), keyring)  # type: ignore[arg-type]
    except VerificationError as e:
        where = f"line {e.index + 1}" if e.index is not None else "file"
        seq = f" (seq {e.seq})" if e.seq is not None else ""
        msg = f"INVALID {ledger.name}: {where}{seq}: {e.reason}"
        if as_json:
            click.echo(
                orjson.dumps(
                    {
                        "valid": False,
                        "line": None if e.index is None else e.index + 1,
                        "seq": e.seq,
                        "error": type(e).__name__,
                        "reason": e.reason,
                    }
                )
            )
        else:
            click.echo(msg, err=True)
        sys.exit(1)
    except (EbrError, RecursionError, MemoryError) as e:
        # Not expected (the verifier names every bad line), but never a traceback.
        click.echo(f"INVALID {ledger.name}: {type(e).__name__}: {str(e)[:200]}", err=True)
        sys.exit(1)
    problems, checked = _custody(ledger)
    if problems:
        for batch_id, pr in problems:
            msg = f"INVALID custody in {ledger.name}: batch {batch_id} seq {pr.seq}: {pr.message}"
            click.echo(
                orjson.dumps({"valid": False, "seq": pr.seq, "batch_id": batch_id,
                              "error": "CustodyError", "reason": pr.message}).decode()
                if as_json
                else msg,
                err=not as_json,
            )  # fmt: skip
        sys.exit(1)
    if as_json:
        click.echo(
            orjson.dumps(
                {
                    "valid": True,
                    "custody_events": checked,
                    "unit_id": result.unit_id,
                    "events": result.event_count,
                    "first_seq": result.first_seq,
                    "head_seq": result.head_seq,
                    "head_hash": result.head_hash,
                    "checkpoints": result.checkpoint_count,
                    "key_ids": sorted(result.key_ids),
                }
            ).decode()
        )
    else:
        click.echo(
            f"OK {ledger.name}: unit {result.unit_id}, {result.event_count} events "
            f"(seq {result.first_seq}..{result.head_seq}), {result.checkpoint_count} checkpoints, "
            f"sealed; head {result.head_hash}"
            + (f"; custody: {checked} events checked" if checked else "")
        )


def _custody(ledger: Path) -> tuple[list[tuple[str, CustodyProblem]], int]:
    """Second pass over a verified ledger: the custody rules of every batch that has custody
    events (COI on every scan, continuous hand-offs, both signatures, nothing after infusion)."""
    per_batch: dict[str, list[Event]] = {}
    checked = 0
    with ledger.open("rb") as f:
        for line in f:
            d = orjson.loads(line)
            if d.get("type") != "event" or d.get("batch_id") is None:
                continue
            if d["kind"] == "batch.started" or d["kind"] in CUSTODY_KINDS:
                per_batch.setdefault(d["batch_id"], []).append(decode_record(d, Event))
                checked += d["kind"] in CUSTODY_KINDS
    problems = [
        (b, p)
        for b, evs in per_batch.items()
        if any(e.kind in CUSTODY_KINDS for e in evs)
        for p in check_custody(evs)
    ]
    return problems, checked


@click.group()
def keys() -> None:
    """Make and inspect unit signing keys."""


@keys.command("new")
@click.argument("unit_id")
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path), default=Path())
def keys_new(unit_id: str, out_dir: Path) -> None:
    """Make a new Ed25519 key for UNIT_ID: UNIT_ID.key (private) and UNIT_ID.pub (public)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    signer = UnitSigner.generate(unit_id)
    priv = out_dir / f"{unit_id}.key"
    if priv.exists():
        raise click.ClickException(f"{priv} exists; refusing to overwrite a private key")
    priv.write_bytes(signer.to_pem())
    priv.chmod(0o600)
    (out_dir / f"{unit_id}.pub").write_bytes(signer.public.to_json())
    click.echo(f"key {signer.key_id} for unit {unit_id}: {priv} and {out_dir / (unit_id + '.pub')}")
