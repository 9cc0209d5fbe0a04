"""Export the ledger in the exchange format (JSON Lines + seal) and re-verify what was written.

The file is written under a temporary name in the same folder (``.<name>.<pid>.partial``),
fsynced, then renamed over the target: a reader never sees half a file, and an export that is
interrupted leaves at most its partial file, which the next export into that folder removes
(once the process that wrote it is gone).  A file that cannot be written is a one-line error
naming it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO

from ebr_core.chain import sign_seal
from ebr_core.errors import VerificationError
from ebr_core.keys import Keyring
from ebr_core.ledgerfile import encode_record, verify_ledger_chunks
from ebr_core.verify import Verified
from edge.errors import LedgerError
from edge.ledger import Ledger


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # another user's process
    return True


def clean_stale_partials(out_path: Path) -> list[Path]:
    """Remove the partial files earlier exports to ``out_path`` left behind (their process is
    gone); return them."""
    pattern = re.compile(rf"\.{re.escape(out_path.name)}\.(\d+)\.partial")
    removed = []
    legacy = out_path.with_name(out_path.name + ".partial")  # (the name before this change)
    candidates = [legacy] if legacy.exists() else []
    if out_path.parent.is_dir():
        for p in out_path.parent.iterdir():
            m = pattern.fullmatch(p.name)
            if m is not None and not _alive(int(m.group(1))):
                candidates.append(p)
    for p in candidates:
        try:
            p.unlink()
            removed.append(p)
        except FileNotFoundError:
            pass
        except OSError as e:
            raise LedgerError(f"cannot remove the stale partial export {p}: {e.strerror}") from e
    return removed


def _write_atomically(target: Path, write: Callable[[IO[bytes]], object]) -> None:
    tmp = target.with_name(f".{target.name}.{os.getpid()}.partial")
    try:
        with tmp.open("wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        tmp.replace(target)
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise LedgerError(f"cannot write {target}: {e.strerror or e}") from e
    except BaseException:
        tmp.unlink(missing_ok=True)  # interrupted (Ctrl-C, an error): nothing left behind
        raise


def export_ledger(ledger: Ledger, out_path: Path, public_key_path: Path | None = None) -> Verified:
    """Write every record and a seal to ``out_path`` (atomically), the public key beside it, then
    verify the written file with the one verifier; return what was verified."""
    seq, head = ledger.head
    if seq == 0:
        raise LedgerError("the ledger holds no events yet: nothing to export")
    try:
        out_path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LedgerError(f"cannot create the folder {out_path.parent}: {e.strerror}") from e
    clean_stale_partials(out_path)

    def records(f: IO[bytes]) -> None:
        for line in ledger.lines(1, seq):
            f.write(line)
            f.write(b"\n")
        f.write(encode_record(sign_seal(ledger.signer, 1, seq, head)))

    _write_atomically(out_path, records)
    pub = public_key_path or out_path.with_name("unit.pub")
    key = ledger.signer.public.to_json()
    _write_atomically(pub, lambda f: f.write(key))

    def chunks() -> Iterator[bytes]:
        with out_path.open("rb") as f:
            while block := f.read(1 << 20):
                yield block

    try:
        return verify_ledger_chunks(chunks(), Keyring([ledger.signer.public]))
    except VerificationError as e:
        raise LedgerError(f"the exported file does not verify: {e}") from e
