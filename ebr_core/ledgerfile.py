"""The ledger exchange format: JSON Lines, one record a line.

Each line is a canonical JSON object ending in ``\\n`` with a ``type``:

* ``event``: the event's fields (``unit_id, seq, prev_hash, recorded_at, batch_id, kind, actor,
  payload, hash``);
* ``checkpoint``: ``unit_id, seq, prev_seq, head_hash, key_id, signature``, placed right after the
  event it signs;
* ``seal``: ``unit_id, first_seq, seq, head_hash, key_id, signature``, the last line of a file.

Pure: bytes in, records out.  :class:`LineSplitter` gives the same lines however the bytes are
chunked, so a reader may feed a file in any block size.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ebr_core.canonical import canonical
from ebr_core.errors import MalformedRecordError
from ebr_core.keys import Keyring
from ebr_core.record import Checkpoint, Event, Seal
from ebr_core.verify import ChainVerifier, Verified


def encode_record(record: Event | Checkpoint | Seal) -> bytes:
    """One line of the exchange format."""
    if isinstance(record, Event):
        t = "event"
    elif isinstance(record, Checkpoint):
        t = "checkpoint"
    else:
        t = "seal"
    d: dict[str, Any] = record.to_dict()
    d["type"] = t
    return canonical(d) + b"\n"


class LineSplitter:
    """Splits a byte stream into ``\\n``-terminated lines, whatever the chunking."""

    def __init__(self) -> None:
        self._buf = b""

    def feed(self, chunk: bytes) -> list[bytes]:
        data = self._buf + chunk
        parts = data.split(b"\n")
        self._buf = parts.pop()
        return parts

    def rest(self) -> bytes:
        """Bytes after the last newline (a line without its terminator)."""
        return self._buf


def verify_ledger_chunks(
    chunks: Iterable[bytes], keyring: Keyring, *, unit_id: str | None = None
) -> Verified:
    """Verify a whole exported ledger file given as byte chunks of any size.

    A complete export ends with a seal; every line must end with ``\\n``; blank lines are refused
    (a line removed by hand leaves a trace the verifier should report, not skip).
    """
    v = ChainVerifier(keyring, unit_id=unit_id)
    splitter = LineSplitter()
    for chunk in chunks:
        v.check_lines(splitter.feed(chunk))
    tail = splitter.rest()
    if tail:
        raise MalformedRecordError(
            "last line has no newline terminator: the file was truncated", index=v.index
        )
    return v.finish(require_seal=True)
