"""C2SP signed notes (c2sp.org/signed-note): text signed by one or more named keys.

Owns the note's wire form (parsed strictly: every malformed note is refused with a message
naming what was wrong), Ed25519 note signers and verifiers over the project's keys
(:mod:`ebr_core.keys`), verifier keys (``name+hex(key ID)+base64(type || key)``), and the
opening rule of the spec: signatures by unknown keys are ignored, a known key whose signature
fails refuses the whole note, and a note with no verified signature is refused.
Checkpoints (what the text says) are :mod:`ebr_core.tlog.checkpoint`; cosignatures (a second
signature type over the same text) are :mod:`ebr_core.tlog.cosignature`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol, Self

from ebr_core.errors import KeyFormatError
from ebr_core.keys import PublicKey, UnitSigner
from ebr_core.tlog.errors import NoteFormatError, NoteSignatureError

#: Signature type bytes assigned by c2sp.org/signed-note.
ED25519_TYPE = 0x01
COSIGNATURE_V1_TYPE = 0x04
SIG_PREFIX = "— "  # em dash, space
#: The spec asks verifiers to accept at least 16; more is a note built to exhaust its reader.
MAX_SIGNATURES = 100
MAX_NOTE_BYTES = 1 << 20


def key_id(name: str, sig_type: int, public: bytes) -> int:
    """SHA-256(name || 0x0A || type || public key)[:4], big-endian."""
    d = hashlib.sha256(name.encode() + b"\n" + bytes([sig_type]) + public).digest()
    return int.from_bytes(d[:4], "big")


def check_key_name(name: str) -> None:
    """A key name is non-empty, with no Unicode space and no '+' (c2sp.org/signed-note)."""
    if not name:
        raise NoteFormatError("a key name must not be empty")
    bad = [c for c in name if c.isspace() or c == "+" or ord(c) < 0x20]
    if bad:
        raise NoteFormatError(
            f"key name {name!r} contains {bad[0]!r}; a key name has no spaces and no '+'"
        )


@dataclass(frozen=True)
class NoteSignature:
    """One signature line: the key's name and 32-bit ID, and the signature's bytes."""

    name: str
    key_id: int
    signature: bytes

    def line(self) -> str:
        raw = self.key_id.to_bytes(4, "big") + self.signature
        return f"{SIG_PREFIX}{self.name} {base64.b64encode(raw).decode('ascii')}\n"


class NoteVerifier(Protocol):
    """A key a note may be checked with: its name, ID and a check of one signature."""

    @property
    def name(self) -> str: ...

    @property
    def key_id(self) -> int: ...

    def verify(self, text: bytes, signature: bytes) -> bool: ...


@dataclass(frozen=True)
class SignedNote:
    """A note: its text (ending in a newline) and its signature lines, in order."""

    text: str
    signatures: tuple[NoteSignature, ...]

    def to_bytes(self) -> bytes:
        return (self.text + "\n" + "".join(s.line() for s in self.signatures)).encode()

    @classmethod
    def parse(cls, data: bytes) -> SignedNote:
        """Read a note's wire form; refuse anything the spec does not allow, saying what."""
        if len(data) > MAX_NOTE_BYTES:
            raise NoteFormatError(f"note is {len(data)} bytes, more than {MAX_NOTE_BYTES}")
        try:
            s = data.decode("utf-8")
        except UnicodeDecodeError as e:
            raise NoteFormatError(f"note is not valid UTF-8 (byte {e.start})") from e
        for i, c in enumerate(s):
            if c < " " and c != "\n":
                raise NoteFormatError(
                    f"note contains control character {c!r} at character {i}; "
                    "only newline is allowed"
                )
        if not s.endswith("\n"):
            raise NoteFormatError("note does not end with a newline")
        cut = s.rfind("\n\n")
        if cut < 0:
            raise NoteFormatError("note has no blank line separating its text from its signatures")
        text, block = s[: cut + 1], s[cut + 2 :]
        if not block:
            raise NoteFormatError("note has no signature lines after its blank line")
        lines = block[:-1].split("\n")
        if len(lines) > MAX_SIGNATURES:
            raise NoteFormatError(
                f"note has {len(lines)} signature lines, more than {MAX_SIGNATURES}"
            )
        return cls(text, tuple(_parse_signature_line(line, n) for n, line in enumerate(lines)))


def _parse_signature_line(line: str, n: int) -> NoteSignature:
    where = f"signature line {n + 1}"
    if not line.startswith(SIG_PREFIX):
        raise NoteFormatError(f"{where} does not start with an em dash and a space: {line[:40]!r}")
    parts = line[len(SIG_PREFIX) :].split(" ")
    if len(parts) != 2:
        raise NoteFormatError(
            f"{where} must be '— <key name> <base64 signature>', got {len(parts)} fields"
        )
    name, b64 = parts
    try:
        check_key_name(name)
    except NoteFormatError as e:
        raise NoteFormatError(f"{where}: {e}") from e
    raw = decode_base64(b64, f"{where}: the signature")
    if len(raw) < 5:
        raise NoteFormatError(
            f"{where}: the signature is {len(raw)} bytes; expected a 4-byte key ID and a signature"
        )
    return NoteSignature(name, int.from_bytes(raw[:4], "big"), raw[4:])


def decode_base64(text: str, what: str) -> bytes:
    try:
        raw = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError) as e:
        raise NoteFormatError(f"{what} is not valid standard base64: {text[:40]!r}") from e
    # One byte string has one encoding: refuse non-canonical padding bits, so a note's bytes
    # cannot be varied without changing what it says.
    if base64.b64encode(raw).decode("ascii") != text:
        raise NoteFormatError(f"{what} is not canonical base64: {text[:40]!r}")
    return raw


class Ed25519NoteVerifier:
    """An Ed25519 note key (signature type 0x01): a name and the project's public key."""

    sig_type = ED25519_TYPE

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
        return len(signature) == 64 and self.public.verify(signature, text)

    def vkey(self) -> str:
        """``name+hex(key ID)+base64(type || public key)``."""
        raw = bytes([self.sig_type]) + self.public.raw
        return f"{self._name}+{self._key_id:08x}+{base64.b64encode(raw).decode('ascii')}"

    @classmethod
    def from_vkey(cls, vkey: str) -> Self:
        name, public = parse_vkey(vkey.strip(), cls.sig_type)
        return cls(name, public)


def parse_vkey(vkey: str, sig_type: int) -> tuple[str, PublicKey]:
    """Read a verifier key of the given signature type; check its ID against its key."""
    parts = vkey.split("+", 2)
    if len(parts) != 3:
        raise NoteFormatError(
            f"verifier key has {len(parts)} '+'-separated parts, expected 3 "
            "(name+hex key ID+base64 key)"
        )
    name, hex_id, b64 = parts
    check_key_name(name)
    if len(hex_id) != 8 or any(c not in "0123456789abcdef" for c in hex_id):
        raise NoteFormatError(f"verifier key ID {hex_id!r} is not 8 lowercase hex digits")
    raw = decode_base64(b64, "the verifier key's public key")
    if not raw or raw[0] != sig_type:
        got = f"0x{raw[0]:02x}" if raw else "nothing"
        raise NoteFormatError(f"verifier key has signature type {got}, expected 0x{sig_type:02x}")
    try:
        public = PublicKey(raw[1:])
    except KeyFormatError as e:
        raise NoteFormatError(f"verifier key: {e}") from e
    want = key_id(name, sig_type, public.raw)
    if int(hex_id, 16) != want:
        raise NoteFormatError(
            f"verifier key ID {hex_id} does not match its name and key (expected {want:08x})"
        )
    return name, public


class Ed25519NoteSigner:
    """Signs note text with one of the project's Ed25519 keys under a note key name."""

    def __init__(self, name: str, signer: UnitSigner) -> None:
        self.verifier = Ed25519NoteVerifier(name, signer.public)
        self._signer = signer

    @property
    def name(self) -> str:
        return self.verifier.name

    @property
    def key_id(self) -> int:
        return self.verifier.key_id

    def sign(self, text: str) -> NoteSignature:
        return NoteSignature(self.name, self.key_id, self._signer.sign(text.encode()))


def check_text(text: str) -> None:
    """Note text ends in a newline, is non-empty and has no control character but newline."""
    if not text.endswith("\n"):
        raise NoteFormatError("note text must end with a newline")
    for i, c in enumerate(text):
        if c < " " and c != "\n":
            raise NoteFormatError(f"note text contains control character {c!r} at {i}")


def sign_note(
    text: str, signers: Sequence[Ed25519NoteSigner], keep: Iterable[NoteSignature] = ()
) -> SignedNote:
    """A note over ``text`` with a signature by each signer (after the kept ones)."""
    check_text(text)
    sigs = [*keep, *(s.sign(text) for s in signers)]
    return SignedNote(text, tuple(sigs))


@dataclass(frozen=True)
class OpenedNote:
    """A note whose signatures were checked: those verified, and those by unknown keys."""

    note: SignedNote
    verified: tuple[NoteSignature, ...]
    unknown: tuple[NoteSignature, ...]


def open_note(note: SignedNote | bytes, verifiers: Sequence[NoteVerifier]) -> OpenedNote:
    """Check a note's signatures (c2sp.org/signed-note "Signatures").

    A signature whose (name, key ID) is a known key must verify, or the note is refused; the
    others are kept as unknown; at least one known signature is required.
    """
    if isinstance(note, bytes):
        note = SignedNote.parse(note)
    by_id: dict[tuple[str, int], NoteVerifier] = {}
    for v in verifiers:
        if (v.name, v.key_id) in by_id:
            raise NoteSignatureError(f"two verifiers for key {v.name}+{v.key_id:08x}")
        by_id[(v.name, v.key_id)] = v
    text = note.text.encode()
    verified: list[NoteSignature] = []
    unknown: list[NoteSignature] = []
    for sig in note.signatures:
        known = by_id.get((sig.name, sig.key_id))
        if known is None:
            unknown.append(sig)
        elif known.verify(text, sig.signature):
            verified.append(sig)
        else:
            raise NoteSignatureError(f"invalid signature by key {sig.name}+{sig.key_id:08x}")
    if not verified:
        names = ", ".join(f"{v.name}+{v.key_id:08x}" for v in verifiers) or "none"
        raise NoteSignatureError(f"note has no signature by a known key (known: {names})")
    return OpenedNote(note, tuple(verified), tuple(unknown))
