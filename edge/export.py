"""Export the ledger in the exchange format (JSON Lines + seal) and re-verify what was written."""

from __future__ import annotations

import os
from pathlib import Path

from ebr_core.chain import sign_seal
from ebr_core.errors import VerificationError
from ebr_core.keys import Keyring
from ebr_core.ledgerfile import encode_record, verify_ledger_chunks
from ebr_core.verify import Verified
from edge.errors import LedgerError
from edge.ledger import Ledger


def export_ledger(ledger: Ledger, out_path: Path, public_key_path: Path | None = None) -> Verified:
    """Write every record and a seal to ``out_path`` (atomically), the public key beside it, then
    verify the written file with the one verifier; return what was verified."""
    seq, head = ledger.head
    if seq == 0:
        raise LedgerError("the ledger holds no events yet: nothing to export")
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + ".partial")
    with tmp.open("wb") as f:
        for line in ledger.lines(1, seq):
            f.write(line)
            f.write(b"\n")
        f.write(encode_record(sign_seal(ledger.signer, 1, seq, head)))
        f.flush()
        os.fsync(f.fileno())
    tmp.replace(out_path)
    pub = public_key_path or out_path.with_name("unit.pub")
    pub.write_bytes(ledger.signer.public.to_json())

    def chunks() -> object:
        with out_path.open("rb") as f:
            while block := f.read(1 << 20):
                yield block

    try:
        return verify_ledger_chunks(chunks(), Keyring([ledger.signer.public]))  # type: ignore[arg-type]
    except VerificationError as e:
        raise LedgerError(f"the exported file does not verify: {e}") from e
