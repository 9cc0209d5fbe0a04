"""Witness cosignatures (c2sp.org/tlog-cosignature, Ed25519 ``cosignature/v1``, type 0x04).

Owns the cosigned message (``cosignature/v1``, ``time <t>``, then the checkpoint's note text),
the ``timestamped_signature`` encoding (8-byte big-endian time || 64-byte Ed25519 signature),
the cosigner and its verifier.  A cosignature states: as of that time, this is the largest
tree the witness has seen for that origin, consistent with every one it saw before.  What a
witness checks before it cosigns is :mod:`witness`.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass

from ebr_core.keys import PublicKey, UnitSigner
from ebr_core.tlog.errors import NoteFormatError
from ebr_core.tlog.note import (
    COSIGNATURE_V1_TYPE,
    NoteSignature,
    check_key_name,
    key_id,
    parse_vkey,
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


class CosignatureVerifier:
    """A witness's public key under its name, as a note verifier of type 0x04."""

    sig_type = COSIGNATURE_V1_TYPE

    def __init__(self, name: str, public: PublicKey) -> None:
        check_key_name(name)
        self._name = name
        self.public = public
        self._key_id = key_id(name, self.sig_type, public.raw)

    @property
    def name(self) -> str:
        return self._name

    @property
    def key_id(self) -> int:
        return self._key_id

    def verify(self, text: bytes, signature: bytes) -> bool:
        if len(signature) != 72:
            return False
        t = int.from_bytes(signature[:8], "big")
        if t > MAX_TIMESTAMP:
            return False
        msg = HEADER + b"time %d\n" % t + text
        return self.public.verify(signature[8:], msg)

    def vkey(self) -> str:
        raw = bytes([self.sig_type]) + self.public.raw
        return f"{self._name}+{self._key_id:08x}+{base64.b64encode(raw).decode('ascii')}"

    @classmethod
    def from_vkey(cls, vkey: str) -> CosignatureVerifier:
        name, public = parse_vkey(vkey.strip(), cls.sig_type)
        return cls(name, public)


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
