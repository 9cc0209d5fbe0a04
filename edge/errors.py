"""The edge agent's exception tree: one root, precise subclasses."""

from __future__ import annotations


class EdgeError(Exception):
    """Root of every error raised by the edge agent."""


class LedgerError(EdgeError):
    """The ledger cannot do what was asked."""


class LedgerIOError(LedgerError):
    """The disk refused a write (full, fsync failure, ...): the event was not recorded."""


class LedgerClosedError(LedgerError):
    """The ledger failed closed after an I/O error, or was closed; it records nothing more."""


class LedgerBusyError(LedgerError):
    """Another process writes this ledger: one unit's ledger has one writer at a time."""


class LedgerCorruptError(LedgerError):
    """The ledger file failed its integrity or chain check on open."""
