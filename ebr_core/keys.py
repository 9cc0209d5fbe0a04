"""Unit signing keys and the keyring that says which key may sign for which unit.

Pure: keys are read from and written to *bytes*; the shells decide where the bytes live.

Key files:

* private key: PKCS#8 PEM (unencrypted; protect it with file permissions on the station);
* public key: a small JSON document binding the key to its unit
  (``{"format": "ctgtp-unit-public-key/1", "unit_id": ..., "algorithm": "ed25519",
  "key_id": ..., "public_key": <base64 of the 32 raw bytes>}``), or a plain SubjectPublicKeyInfo
  PEM, which binds to no unit (the verifier then takes the unit named by the ledger).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from dataclasses import dataclass, field
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from ebr_core.errors import KeyFormatError

PUBLIC_KEY_FORMAT = "ctgtp-unit-public-key/1"


def key_id_of(raw_public: bytes) -> str:
    """16 hex digits naming a public key (a truncated SHA-256 of its raw bytes)."""
    return hashlib.sha256(b"ctgtp/key-id/v1\x00" + raw_public).hexdigest()[:16]


@dataclass(frozen=True)
class PublicKey:
    raw: bytes
    unit_id: str | None = None  # None: a bare key not bound to a unit
    _key: Ed25519PublicKey = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if len(self.raw) != 32:
            raise KeyFormatError(f"an Ed25519 public key is 32 bytes, got {len(self.raw)}")
        object.__setattr__(self, "_key", Ed25519PublicKey.from_public_bytes(self.raw))

    @property
    def key_id(self) -> str:
        return key_id_of(self.raw)

    def verify(self, signature: bytes, message: bytes) -> bool:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            return False
        return True

    def to_json(self) -> bytes:
        """The public key file (JSON, one line plus newline)."""
        doc = {
            "format": PUBLIC_KEY_FORMAT,
            "unit_id": self.unit_id,
            "algorithm": "ed25519",
            "key_id": self.key_id,
            "public_key": base64.b64encode(self.raw).decode("ascii"),
        }
        return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2) + b"\n"

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicKey:
        """Read a public key file: the JSON form above, or a SubjectPublicKeyInfo PEM."""
        text = data.strip()
        if text.startswith(b"-----BEGIN"):
            try:
                k = serialization.load_pem_public_key(text)
            except ValueError as e:
                raise KeyFormatError(f"not a readable PEM public key: {e}") from e
            if not isinstance(k, Ed25519PublicKey):
                raise KeyFormatError(f"expected an Ed25519 public key, got {type(k).__name__}")
            raw = k.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
            return cls(raw)
        try:
            doc: Any = orjson.loads(text)
        except orjson.JSONDecodeError as e:
            raise KeyFormatError(
                "public key file is neither a PEM key nor a ctgtp JSON key document"
            ) from e
        if not isinstance(doc, dict) or doc.get("format") != PUBLIC_KEY_FORMAT:
            raise KeyFormatError(f"public key document must have format {PUBLIC_KEY_FORMAT!r}")
        if doc.get("algorithm") != "ed25519":
            raise KeyFormatError(
                f"algorithm {doc.get('algorithm')!r} is not supported; expected 'ed25519'"
            )
        try:
            raw = base64.b64decode(str(doc.get("public_key", "")), validate=True)
        except binascii.Error as e:
            raise KeyFormatError("public_key is not valid base64") from e
        unit_id = doc.get("unit_id")
        if unit_id is not None and not isinstance(unit_id, str):
            raise KeyFormatError("unit_id in the public key document must be a string")
        key = cls(raw, unit_id)
        if doc.get("key_id") not in (None, key.key_id):
            raise KeyFormatError(
                f"key_id {doc.get('key_id')!r} does not match the key (expected {key.key_id!r})"
            )
        return key


class UnitSigner:
    """A unit's private Ed25519 key."""

    def __init__(self, private: Ed25519PrivateKey, unit_id: str) -> None:
        self._private = private
        self.unit_id = unit_id
        raw = private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        self.public = PublicKey(raw, unit_id)

    @classmethod
    def generate(cls, unit_id: str) -> UnitSigner:
        return cls(Ed25519PrivateKey.generate(), unit_id)

    @classmethod
    def from_seed(cls, seed: bytes, unit_id: str) -> UnitSigner:
        """Deterministic key from 32 bytes (tests and reproducible demos only)."""
        if len(seed) != 32:
            raise KeyFormatError(f"an Ed25519 seed is 32 bytes, got {len(seed)}")
        return cls(Ed25519PrivateKey.from_private_bytes(seed), unit_id)

    @classmethod
    def from_pem(cls, data: bytes, unit_id: str) -> UnitSigner:
        try:
            k = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as e:
            raise KeyFormatError(f"not a readable unencrypted PEM private key: {e}") from e
        if not isinstance(k, Ed25519PrivateKey):
            raise KeyFormatError(f"expected an Ed25519 private key, got {type(k).__name__}")
        return cls(k, unit_id)

    def to_pem(self) -> bytes:
        return self._private.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @property
    def key_id(self) -> str:
        return self.public.key_id

    def sign(self, message: bytes) -> bytes:
        return self._private.sign(message)


class Keyring:
    """Which public keys are trusted to sign checkpoints for which unit.

    A key bound to no unit (a bare PEM given on the command line) is trusted for any unit: the
    caller has chosen to trust it for the one ledger being verified.
    """

    def __init__(self, keys: list[PublicKey] | None = None) -> None:
        self._by_id: dict[str, PublicKey] = {}
        for k in keys or []:
            self.add(k)

    def add(self, key: PublicKey) -> None:
        self._by_id[key.key_id] = key

    def remove(self, key_id: str) -> None:
        self._by_id.pop(key_id, None)

    def get(self, key_id: str) -> PublicKey | None:
        return self._by_id.get(key_id)

    def for_unit(self, key_id: str, unit_id: str) -> PublicKey | None:
        k = self._by_id.get(key_id)
        if k is None or (k.unit_id is not None and k.unit_id != unit_id):
            return None
        return k

    def __len__(self) -> int:
        return len(self._by_id)
