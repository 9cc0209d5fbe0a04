"""Log checkpoints (c2sp.org/tlog-checkpoint): the signed tree head as a note.

Owns the checkpoint body (origin, tree size, base64 root hash, optional extension lines),
parsed strictly, signing it with the log's key, and opening a checkpoint: the log's signature
must verify; witness cosignatures by configured witnesses are checked and counted, so a caller
can show a checkpoint with too few of them as *unwitnessed*.
"""

from __future__ import annotations

import base64
from collections.abc import Sequence
from dataclasses import dataclass

from ebr_core.tlog.cosignature import Cosignature, CosignatureVerifier, cosignature_timestamp
from ebr_core.tlog.errors import NoteFormatError, NoteSignatureError
from ebr_core.tlog.merkle import HASH_SIZE
from ebr_core.tlog.note import (
    Ed25519NoteSigner,
    Ed25519NoteVerifier,
    NoteSignature,
    NoteVerifier,
    SignedNote,
    check_text,
    decode_base64,
    open_note,
)

MAX_TREE_SIZE = (1 << 63) - 1


@dataclass(frozen=True)
class Checkpoint:
    """A tree head: which log, how many entries, the root hash; extension lines are opaque."""

    origin: str
    size: int
    root: bytes
    extensions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.origin or "\n" in self.origin:
            raise NoteFormatError(f"checkpoint origin {self.origin!r} must be one non-empty line")
        if not 0 <= self.size <= MAX_TREE_SIZE:
            raise NoteFormatError(f"checkpoint tree size {self.size} is outside [0, 2**63 - 1]")
        if len(self.root) != HASH_SIZE:
            raise NoteFormatError(
                f"checkpoint root hash is {len(self.root)} bytes, expected {HASH_SIZE}"
            )
        for e in self.extensions:
            if not e or "\n" in e:
                raise NoteFormatError(f"checkpoint extension line {e!r} must be one non-empty line")

    def text(self) -> str:
        """The note text: origin, size, base64 root, extension lines, each ending in newline."""
        lines = [self.origin, str(self.size), base64.b64encode(self.root).decode("ascii")]
        out = "\n".join([*lines, *self.extensions]) + "\n"
        check_text(out)
        return out

    @classmethod
    def parse_text(cls, text: str) -> Checkpoint:
        if not text.endswith("\n"):
            raise NoteFormatError("checkpoint text must end with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3:
            raise NoteFormatError(
                f"checkpoint text has {len(lines)} lines, expected at least 3 "
                "(origin, tree size, root hash)"
            )
        origin, size_s, root_s, *ext = lines
        if not origin:
            raise NoteFormatError("checkpoint origin line (line 1) is empty")
        if not size_s.isascii() or not size_s.isdigit() or (size_s != "0" and size_s[0] == "0"):
            raise NoteFormatError(
                f"checkpoint tree size (line 2) {size_s[:30]!r} is not a decimal number "
                "without leading zeros"
            )
        if len(size_s) > 19:
            raise NoteFormatError(f"checkpoint tree size (line 2) {size_s[:30]!r} is too large")
        root = decode_base64(root_s, "checkpoint root hash (line 3)")
        if len(root) != HASH_SIZE:
            raise NoteFormatError(
                f"checkpoint root hash (line 3) is {len(root)} bytes, expected {HASH_SIZE}"
            )
        for i, e in enumerate(ext):
            if not e:
                raise NoteFormatError(f"checkpoint extension line (line {i + 4}) is empty")
        return cls(origin, int(size_s), root, tuple(ext))


def sign_checkpoint(checkpoint: Checkpoint, signer: Ed25519NoteSigner) -> SignedNote:
    """The log's signed checkpoint.  The log's key name should match the origin (spec)."""
    text = checkpoint.text()
    return SignedNote(text, (signer.sign(text),))


@dataclass(frozen=True)
class OpenedCheckpoint:
    """A checkpoint whose log signature verified, with the witnesses that cosigned it."""

    checkpoint: Checkpoint
    note: SignedNote
    cosignatures: tuple[Cosignature, ...]

    def witnessed(self, quorum: int) -> bool:
        """True if at least ``quorum`` distinct configured witnesses cosigned it."""
        return len({c.name for c in self.cosignatures}) >= quorum


def open_checkpoint(
    data: bytes | SignedNote,
    log: Ed25519NoteVerifier,
    witnesses: Sequence[CosignatureVerifier] = (),
) -> OpenedCheckpoint:
    """Verify a checkpoint: the log's signature is required; cosignatures are counted."""
    note = data if isinstance(data, SignedNote) else SignedNote.parse(data)
    verifiers: list[NoteVerifier] = [log, *witnesses]
    opened = open_note(note, verifiers)
    if not any(s.name == log.name and s.key_id == log.key_id for s in opened.verified):
        raise NoteSignatureError(
            f"checkpoint is not signed by the log's key {log.name}+{log.key_id:08x}"
        )
    checkpoint = Checkpoint.parse_text(note.text)
    wit = {(w.name, w.key_id) for w in witnesses}
    cosigs = tuple(
        Cosignature(s.name, s.key_id, cosignature_timestamp(s))
        for s in opened.verified
        if (s.name, s.key_id) in wit
    )
    return OpenedCheckpoint(checkpoint, note, cosigs)


def add_signatures(note: SignedNote, sigs: Sequence[NoteSignature]) -> SignedNote:
    """The note with more signature lines, replacing any earlier line by the same key."""
    keys = {(s.name, s.key_id) for s in sigs}
    kept = [s for s in note.signatures if (s.name, s.key_id) not in keys]
    return SignedNote(note.text, (*kept, *sigs))
