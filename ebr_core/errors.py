"""The exception tree of ebr_core: one root, precise subclasses.

Every error raised by the pure library derives from :class:`EbrError`, so a shell (CLI, edge
agent, server) can catch one type at its boundary and turn it into a clear message.
"""

from __future__ import annotations

from typing import Self


class EbrError(Exception):
    """Root of every error raised by ebr_core."""


class CanonicalError(EbrError):
    """A value cannot be put into canonical bytes (a float, a non-string key, ...)."""


class RecordFormatError(EbrError):
    """A record (event or checkpoint) does not have the shape the format requires."""


class KeyFormatError(EbrError):
    """A key file or key value cannot be read."""


class VerificationError(EbrError):
    """A ledger, segment or checkpoint failed verification.

    ``seq`` names the first bad event (or the checkpoint's seq), ``index`` the 0-based position of
    the record in the input (a JSONL reader adds 1 to report a line number).
    """

    def __init__(self, reason: str, *, seq: int | None = None, index: int | None = None) -> None:
        self.reason = reason
        self.seq = seq
        self.index = index
        where = []
        if index is not None:
            where.append(f"record {index + 1}")
        if seq is not None:
            where.append(f"seq {seq}")
        prefix = f"{', '.join(where)}: " if where else ""
        super().__init__(f"{prefix}{reason}")

    def shifted(self, by: int) -> Self:
        """The same error (class, reason, seq) with its index moved ``by`` records: an error
        found in a part of an input, placed in the whole input (the part starts at ``by``)."""
        index = None if self.index is None else self.index + by
        moved = type(self)(self.reason, seq=self.seq, index=index)
        moved.__cause__ = self.__cause__
        return moved


class MalformedRecordError(VerificationError):
    """A record could not be parsed as an event or a checkpoint."""


class HashMismatchError(VerificationError):
    """An event's stored hash is not the hash of its content: the event was altered."""


class ChainBrokenError(VerificationError):
    """``prev_hash`` does not link to the event before it (deleted, reordered, spliced)."""


class SequenceError(VerificationError):
    """``seq`` is not the expected next number (gap, duplicate, reordering)."""


class UnitMismatchError(VerificationError):
    """A record belongs to another unit than the ledger being verified."""


class CheckpointError(VerificationError):
    """A checkpoint does not match the chain head it claims to sign."""


class SignatureError(VerificationError):
    """A checkpoint's signature is invalid or made by a key not trusted for this unit."""


class UnsignedTailError(VerificationError):
    """Events after the last checkpoint: the tail of the ledger is not covered by a signature."""


class EmptyLedgerError(VerificationError):
    """There is nothing to verify."""


class IdentifierError(EbrError):
    """A scanned or typed identifier is malformed or refused."""


class SpecificationError(EbrError):
    """A specification document is malformed or breaks a rule (e.g. a loosening overlay)."""


class BatchStateError(EbrError):
    """An event cannot be applied to the batch state it is folded into."""
