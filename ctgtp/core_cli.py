"""Shell for ebr_core: ``ctgtp verify``, ``ctgtp scan``, ``ctgtp keys``.

Errors from ebr_core are turned into one-line messages and a non-zero exit; never a traceback.

Over 400 lines because ``ctgtp verify`` checks every form a record reaches an auditor in (a
ledger export, a segment, a log checkpoint and inclusion proof, custody) and names what failed
in each; its helpers are private to it.
"""

from __future__ import annotations

import base64
import binascii
import sys
from pathlib import Path
from typing import NoReturn

import click
import orjson

from ebr_core.custody import CUSTODY_KINDS, CustodyProblem, check_custody
from ebr_core.errors import EbrError, VerificationError
from ebr_core.keys import Keyring, PublicKey, UnitSigner
from ebr_core.ledgerfile import verify_ledger_chunks
from ebr_core.record import Event, decode_record
from ebr_core.tlog import (
    Checkpoint,
    CosignatureVerifier,
    Ed25519NoteVerifier,
    EntryKind,
    LogEntry,
    TlogError,
    TlogProof,
    leaf_hash,
    open_checkpoint,
    root_from_inclusion_proof,
    verify_inclusion,
)
from ebr_core.tlog.entries import ENTRY_TAG
from ebr_core.verify import Verified

CHUNK = 1 << 20


_FILE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.command()
@click.argument("ledger", required=False, type=_FILE)
@click.option(
    "--public-key",
    "public_keys",
    multiple=True,
    type=_FILE,
    help="A unit public key file trusted to sign this ledger (repeat for rotated keys).",
)
@click.option(
    "--log-checkpoint",
    "log_proof",
    type=_FILE,
    default=None,
    help="A .tlog-proof file (index, inclusion proof, signed checkpoint): prove the ledger's "
    "segment, or --entry, is in the server's transparency log.",
)
@click.option(
    "--log-key",
    type=_FILE,
    default=None,
    help="The log's verifier key (name+id+key), or the server's public key file.",
)
@click.option(
    "--witness-key",
    "witness_keys",
    multiple=True,
    type=_FILE,
    help="A witness's cosignature verifier key (repeat); its cosignatures are counted.",
)
@click.option(
    "--quorum",
    type=click.IntRange(min=0),
    default=None,
    help="Cosignatures needed to call the checkpoint witnessed (default 1 with witness keys).",
)
@click.option(
    "--entry",
    "entry_file",
    type=_FILE,
    default=None,
    help="The log entry to prove (its bytes, or the JSON of GET /v1/log/proof/inclusion), e.g. "
    "a QA decision's; default: from the proof file, or a segment of LEDGER.",
)
@click.option("--json", "as_json", is_flag=True, help="Print the result as JSON.")
def verify(
    ledger: Path | None,
    public_keys: tuple[Path, ...],
    log_proof: Path | None,
    log_key: Path | None,
    witness_keys: tuple[Path, ...],
    quorum: int | None,
    entry_file: Path | None,
    as_json: bool,
) -> None:
    """Verify LEDGER.jsonl: every hash, link, checkpoint signature and the final seal, then
    the chain-of-custody rules of every batch with custody events; with --log-checkpoint,
    also that its segment (or the --entry given) is in the server's transparency log.

    Exits 0 and prints the event count and head for a valid ledger; exits 1 naming the first bad
    line otherwise.  The log proof: exits 0 when the entry is a leaf of the checkpointed tree
    signed by the log's key (shown UNWITNESSED when fewer witnesses than --quorum cosigned it),
    1 naming what did not match.
    """
    if ledger is None and log_proof is None:
        raise click.UsageError("give LEDGER.jsonl, or --log-checkpoint with --entry")
    if ledger is None:
        _verify_log(None, log_proof, log_key, witness_keys, quorum, entry_file, as_json)
        return
    if not public_keys:
        raise click.UsageError("verifying a ledger needs its unit's --public-key")
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
    if log_proof is not None:
        _verify_log(
            (ledger, result), log_proof, log_key, witness_keys, quorum, entry_file, as_json
        )


MAX_SEGMENT_CANDIDATES = 200_000  # segments of a ledger tried for a proof without its entry


def _fail(as_json: bool, what: str, reason: str) -> NoReturn:
    """A log check that did not hold: one line naming it, exit 1."""
    if as_json:
        click.echo(orjson.dumps({"valid": False, "check": "log", "error": what,
                                 "reason": reason}).decode())  # fmt: skip
    else:
        click.echo(f"INVALID log proof: {what}: {reason}", err=True)
    sys.exit(1)


def _log_verifier(path: Path, origin: str, as_json: bool) -> Ed25519NoteVerifier:
    """The log's key: a verifier key (``name+id+key``), or the server's public key file (JSON
    or PEM), whose note key name is then the checkpoint's origin."""
    data = path.read_bytes()
    try:
        if data.lstrip().startswith((b"{", b"-----BEGIN")):
            return Ed25519NoteVerifier(origin, PublicKey.from_bytes(data))
        return Ed25519NoteVerifier.from_vkey(data.decode("utf-8").strip())
    except (EbrError, UnicodeDecodeError) as e:
        _fail(as_json, f"--log-key {path.name}", f"not a log key (a verifier key or a public "
              f"key file): {e}")  # fmt: skip


def _entry_bytes(path: Path, as_json: bool) -> bytes:
    """An entry file: the leaf's bytes, or the JSON of ``GET /v1/log/proof/inclusion``."""
    data = path.read_bytes()
    if data.startswith(ENTRY_TAG):
        return data
    try:
        doc = orjson.loads(data)
        leaf = base64.b64decode(doc["leaf"], validate=True)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError, binascii.Error):
        _fail(as_json, f"--entry {path.name}", "neither a log entry (ctgtp/tlog-entry/v1) nor "
              "a JSON document with a base64 'leaf'")  # fmt: skip
    return leaf


def _ledger_heads(ledger: Path) -> tuple[list[int], dict[int, str]]:
    """The seqs the ledger's checkpoints close (where segments end), and the event hash at each."""
    seqs: list[int] = []
    hashes: dict[int, str] = {}
    last: tuple[int, str] | None = None
    with ledger.open("rb") as f:
        for line in f:
            d = orjson.loads(line)
            if d.get("type") == "event":
                last = (int(d["seq"]), str(d["hash"]))
            elif d.get("type") == "checkpoint" and last is not None and last[0] == d["seq"]:
                seqs.append(last[0])
                hashes[last[0]] = last[1]
    return seqs, hashes


def _search_segment(
    ledger: Path, proof: TlogProof, root: bytes, size: int, as_json: bool
) -> bytes | None:
    """The segment entry of this ledger that is leaf ``proof.index`` (ends at one of the
    ledger's checkpoints, starts at 1 or just after one), or None."""
    seqs, hashes = _ledger_heads(ledger)
    with ledger.open("rb") as f:
        unit_id = str(orjson.loads(f.readline()).get("unit_id"))
    starts = [1, *(s + 1 for s in seqs)]
    n = len(seqs) * (len(seqs) + 1) // 2
    if n > MAX_SEGMENT_CANDIDATES:
        _fail(as_json, "entry", f"the proof carries no entry and {ledger.name} allows {n:,} "
              "segments, too many to try: give the entry with --entry (GET "
              "/v1/log/proof/inclusion)")  # fmt: skip
    for last in reversed(seqs):  # the head first: most proofs are of a recent segment
        for first in starts:
            if first > last:
                break
            leaf = LogEntry(EntryKind.SEGMENT, {"unit_id": unit_id, "first_seq": first,
                            "last_seq": last, "head_hash": hashes[last]}).to_bytes()  # fmt: skip
            try:
                got = root_from_inclusion_proof(proof.index, size, leaf_hash(leaf), proof.proof)
            except TlogError:
                return None
            if got == root:
                return leaf
    return None


def _verify_log(
    ledger: tuple[Path, Verified] | None,
    proof_path: Path | None,
    log_key: Path | None,
    witness_keys: tuple[Path, ...],
    quorum: int | None,
    entry_file: Path | None,
    as_json: bool,
) -> None:
    """``--log-checkpoint``: the entry is leaf N of a tree the log's key signed."""
    assert proof_path is not None
    if log_key is None:
        raise click.UsageError("--log-checkpoint needs the log's key: --log-key FILE")
    if ledger is None and entry_file is None:
        raise click.UsageError("without a ledger, --log-checkpoint needs the entry: --entry FILE")
    try:
        proof = TlogProof.parse(proof_path.read_bytes())
        cp = Checkpoint.parse_text(proof.checkpoint.text)
    except TlogError as e:
        _fail(as_json, proof_path.name, f"not a tlog-proof file: {e}")
    log = _log_verifier(log_key, cp.origin, as_json)
    witnesses: list[CosignatureVerifier] = []
    for w in witness_keys:
        try:
            witnesses.append(CosignatureVerifier.from_vkey(w.read_text().strip()))
        except (EbrError, UnicodeDecodeError) as e:
            _fail(as_json, f"--witness-key {w.name}", f"not a witness verifier key: {e}")
    need = quorum if quorum is not None else (1 if witnesses else 0)
    try:
        opened = open_checkpoint(proof.checkpoint, log, witnesses)
    except TlogError as e:
        _fail(as_json, "checkpoint", f"{cp.origin} size {cp.size} is not signed by the log's key "
              f"{log.name}+{log.key_id:08x}: {e}")  # fmt: skip
    # The entry: given, carried by the proof, or a segment of the ledger.
    entry: bytes | None = None
    if entry_file is not None:
        entry = _entry_bytes(entry_file, as_json)
    elif proof.extra is not None and proof.extra.startswith(ENTRY_TAG):
        entry = proof.extra
    elif ledger is not None:
        entry = _search_segment(ledger[0], proof, cp.root, cp.size, as_json)
        if entry is None:
            _fail(as_json, "leaf", f"no segment of {ledger[0].name} (unit {ledger[1].unit_id}, "
                  f"seq {ledger[1].first_seq}..{ledger[1].head_seq}) is leaf {proof.index} of "
                  f"{cp.origin} size {cp.size}")  # fmt: skip
    assert entry is not None
    try:
        parsed = LogEntry.parse(entry)
    except TlogError as e:
        _fail(as_json, "entry", f"not a log entry: {e}")
    if ledger is not None:
        _match_ledger(parsed, ledger, as_json)
    try:
        verify_inclusion(proof.index, cp.size, leaf_hash(entry), proof.proof, cp.root)
    except TlogError as e:
        _fail(as_json, "leaf", f"the {parsed.kind} entry is not leaf {proof.index} of "
              f"{cp.origin} size {cp.size} (root {base64.b64encode(cp.root).decode()}): "
              f"{e}")  # fmt: skip
    cosigners = sorted({c.name for c in opened.cosignatures})
    witnessed = opened.witnessed(need)
    fields = ", ".join(f"{k} {v}" for k, v in sorted(parsed.fields.items()))
    if as_json:
        click.echo(orjson.dumps({
            "valid": True, "check": "log", "origin": cp.origin, "tree_size": cp.size,
            "root": base64.b64encode(cp.root).decode(), "index": proof.index,
            "entry": {"kind": str(parsed.kind), **parsed.fields}, "cosigned_by": cosigners,
            "quorum": need, "witnessed": witnessed}).decode())  # fmt: skip
        return
    wit = f"witnessed: cosigned by {', '.join(cosigners)}" if cosigners else "no cosignature"
    if not witnessed:
        wit = f"UNWITNESSED: {len(cosigners)} of the {need} witness cosignatures required"
    elif need == 0 and not witness_keys:
        wit += " (no --witness-key given)"
    click.echo(
        f"OK log {proof_path.name}: {parsed.kind} ({fields}) is leaf {proof.index} of "
        f"{cp.origin}, tree size {cp.size}, signed by {log.name}+{log.key_id:08x}; {wit}"
    )


def _match_ledger(entry: LogEntry, ledger: tuple[Path, Verified], as_json: bool) -> None:
    """A segment entry proven for a ledger must be that ledger's: its unit and its event."""
    path, v = ledger
    if entry.kind is not EntryKind.SEGMENT:
        _fail(as_json, "entry", f"a {entry.kind} entry is not a segment of {path.name}")
    unit, last = entry.fields["unit_id"], int(entry.fields["last_seq"])
    if unit != v.unit_id:
        _fail(as_json, "entry", f"the segment is unit {unit}'s, {path.name} is {v.unit_id}'s")
    if not v.first_seq <= last <= v.head_seq:
        _fail(as_json, "entry", f"the segment ends at seq {last}, outside {path.name} "
              f"(seq {v.first_seq}..{v.head_seq})")  # fmt: skip
    _seqs, hashes = _ledger_heads(path)
    mine = hashes.get(last)
    if mine is None:
        mine = _hash_at(path, last)
    if mine != entry.fields["head_hash"]:
        _fail(as_json, "entry", f"the segment's head hash {entry.fields['head_hash']} is not "
              f"{path.name}'s event {last} ({mine})")  # fmt: skip


def _hash_at(ledger: Path, seq: int) -> str | None:
    with ledger.open("rb") as f:
        for line in f:
            d = orjson.loads(line)
            if d.get("type") == "event" and d.get("seq") == seq:
                return str(d["hash"])
    return None


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
