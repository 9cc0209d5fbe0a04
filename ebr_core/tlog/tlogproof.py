"""Offline proofs that an entry is in the log (c2sp.org/tlog-proof@v1, ``.tlog-proof`` files).

Owns the text format (header, optional ``extra``, ``index``, the inclusion proof one base64
hash a line, a blank line, the signed checkpoint verbatim), parsed strictly, building one from a
store, and verifying one against the entry's bytes, the log's key and the configured witnesses.
This is what a receipt carries and what ``ctgtp verify --log-checkpoint`` checks.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from ebr_core.tlog.checkpoint import Checkpoint, OpenedCheckpoint, open_checkpoint
from ebr_core.tlog.cosignature import CosignatureVerifier
from ebr_core.tlog.errors import NoteFormatError
from ebr_core.tlog.merkle import HashStore, inclusion_proof, leaf_hash
from ebr_core.tlog.note import Ed25519NoteVerifier, SignedNote, decode_base64
from ebr_core.tlog.proof import verify_inclusion

HEADER = "c2sp.org/tlog-proof@v1"
MAX_PROOF_HASHES = 64


@dataclass(frozen=True)
class TlogProof:
    index: int
    proof: tuple[bytes, ...]
    checkpoint: SignedNote
    extra: bytes | None = None

    def to_bytes(self) -> bytes:
        lines = [HEADER]
        if self.extra is not None:
            lines.append("extra " + base64.b64encode(self.extra).decode("ascii"))
        lines.append(f"index {self.index}")
        lines += [base64.b64encode(h).decode("ascii") for h in self.proof]
        return ("\n".join(lines) + "\n\n").encode() + self.checkpoint.to_bytes()

    @classmethod
    def parse(cls, data: bytes) -> TlogProof:
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise NoteFormatError(f"tlog proof is not valid UTF-8 (byte {e.start})") from e
        head, sep, note = text.partition("\n\n")
        if not sep:
            raise NoteFormatError("tlog proof has no blank line before its checkpoint")
        lines = head.split("\n")
        if lines[0] != HEADER:
            raise NoteFormatError(f"tlog proof starts with {lines[0][:40]!r}, expected {HEADER!r}")
        rest = lines[1:]
        extra = None
        if rest and rest[0].startswith("extra "):
            extra = decode_base64(rest.pop(0)[6:], "tlog proof extra data")
        if not rest or not rest[0].startswith("index "):
            raise NoteFormatError("tlog proof has no 'index <n>' line after its header")
        idx = rest.pop(0)[6:]
        if not (idx.isascii() and idx.isdigit()) or (idx != "0" and idx[0] == "0"):
            raise NoteFormatError(
                f"tlog proof index {idx[:30]!r} is not a decimal number without leading zeros"
            )
        if len(rest) > MAX_PROOF_HASHES:
            raise NoteFormatError(
                f"tlog proof has {len(rest)} proof hashes, more than {MAX_PROOF_HASHES}"
            )
        proof = []
        for i, line in enumerate(rest):
            h = decode_base64(line, f"tlog proof hash {i + 1}")
            if len(h) != 32:
                raise NoteFormatError(f"tlog proof hash {i + 1} is {len(h)} bytes, expected 32")
            proof.append(h)
        return cls(int(idx), tuple(proof), SignedNote.parse(note.encode()), extra)

    def verify(
        self,
        entry: bytes,
        log: Ed25519NoteVerifier,
        witnesses: Sequence[CosignatureVerifier] = (),
    ) -> OpenedCheckpoint:
        """Check the log's signature, count the witnesses' cosignatures, and prove ``entry`` is
        leaf ``index`` of the checkpointed tree.  Raises on any failure; the caller decides
        what too few cosignatures mean (``OpenedCheckpoint.witnessed``)."""
        opened = open_checkpoint(self.checkpoint, log, witnesses)
        cp = opened.checkpoint
        verify_inclusion(self.index, cp.size, leaf_hash(entry), self.proof, cp.root)
        return opened


def make_tlog_proof(
    store: HashStore, index: int, checkpoint: SignedNote, extra: bytes | None = None
) -> TlogProof:
    """The proof of entry ``index`` in the tree the (signed) checkpoint names."""
    cp = Checkpoint.parse_text(checkpoint.text)
    return TlogProof(index, tuple(inclusion_proof(store, index, cp.size)), checkpoint, extra)
