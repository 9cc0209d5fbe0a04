"""Witness cosignatures (c2sp.org/tlog-cosignature, Ed25519 ``cosignature/v1``, type 0x04).

Owns the cosigned message (``cosignature/v1``, ``time <t>``, then the checkpoint's note text),
the ``timestamped_signature`` encoding (8-byte big-endian time || 64-byte Ed25519 signature),
the cosigner and its verifier.  A cosignature states: as of that time, this is the largest
tree the witness has seen for that origin, consistent with every one it saw before.  What a
witness checks before it cosigns is :mod:`witness`.
"""

from __future__ import annotations

from dataclasses import dataclass

from ebr_core.keys import UnitSigner
from ebr_core.tlog.errors import NoteFormatError
from ebr_core.tlog.note import (
    COSIGNATURE_V1_TYPE,
    Ed25519NoteVerifier,
    NoteSignature,
)

HEADER = b"cosignature/v1\n"
MAX_TIMESTAMP = (1 << 63) - 1


def cosigned_message(text: str, timestamp: int) -> bytes:
    if not 0 <= timestamp <= MAX_TIMESTAMP:
        raise NoteFormatError(f"cosignature time {timestamp} is outside [0, 2**63 - 1]")
    return HEADER + b"time %d\n" % timestamp + text.encode()


def cosignature_timestamp(sig: NoteSignature) -> int:
    """The time a cosignature line claims (it is only trustworthy once verified)."""
    if len(sig.signature) != 72:
        raise NoteFormatError(
            f"a cosignature/v1 signature by {sig.name} is 8 + 64 bytes, got {len(sig.signature)}"
        )
    t = int.from_bytes(sig.signature[:8], "big")
    if t > MAX_TIMESTAMP:
        raise NoteFormatError(f"cosignature by {sig.name} has time {t}, more than 2**63 - 1")
    return t


class CosignatureVerifier(Ed25519NoteVerifier):
    """A witness's public key under its name, as a note verifier of type 0x04: the note key's
    name, key ID and vkey rules, with a cosignature's timestamped message."""

    sig_type = COSIGNATURE_V1_TYPE

    def verify(self, text: bytes, signature: bytes) -> bool:
        if len(signature) != 72:
            return False
        t = int.from_bytes(signature[:8], "big")
        if t > MAX_TIMESTAMP:
            return False
        msg = HEADER + b"time %d\n" % t + text
        return self.public.verify(signature[8:], msg)


class Cosigner:
    """A witness's private key: makes cosignature lines at a time the caller gives."""

    def __init__(self, name: str, signer: UnitSigner) -> None:
        self.verifier = CosignatureVerifier(name, signer.public)
        self._signer = signer

    @property
    def name(self) -> str:
        return self.verifier.name

    def cosign(self, text: str, timestamp: int) -> NoteSignature:
        sig = self._signer.sign(cosigned_message(text, timestamp))
        return NoteSignature(self.name, self.verifier.key_id, timestamp.to_bytes(8, "big") + sig)


@dataclass(frozen=True)
class Cosignature:
    """A verified cosignature: who and when."""

    name: str
    key_id: int
    timestamp: int
