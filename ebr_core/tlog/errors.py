"""The transparency log's exceptions: one root under :class:`~ebr_core.errors.EbrError`."""

from __future__ import annotations

from ebr_core.errors import EbrError


class TlogError(EbrError):
    """Root of every error raised by :mod:`ebr_core.tlog`."""


class TreeError(TlogError):
    """A tree or a store was asked for something it does not hold (an index past its size)."""


class ProofError(TlogError):
    """An inclusion or consistency proof does not verify, or is malformed."""


class NoteFormatError(TlogError):
    """A signed note, a verifier key or a checkpoint body is malformed."""


class NoteSignatureError(TlogError):
    """A signed note carries no valid signature by the key(s) it is checked with."""


class TileError(TlogError):
    """A tile path or a tile's bytes are malformed, or a tile could not be had."""
