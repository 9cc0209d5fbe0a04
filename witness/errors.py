"""The witness's exceptions: one root, precise subclasses."""

from __future__ import annotations


class WitnessError(Exception):
    """Root of every error the witness raises."""


class ConfigError(WitnessError):
    """A key file, the log's key or an option cannot be used."""


class StateError(WitnessError):
    """The state directory holds something this witness did not write."""


class FetchError(WitnessError):
    """The log could not be read (network, HTTP status, missing tile): nothing was cosigned."""


class UncheckableError(WitnessError):
    """The log's checkpoint or tiles could not be checked (bad signature, malformed tiles)."""


class PushError(WitnessError):
    """The log refused the witness's cosignature, or could not be reached to take it (the
    cosignature is kept in the state directory all the same)."""
