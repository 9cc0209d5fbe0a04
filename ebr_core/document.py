"""Signed, versioned documents: master batch records, specifications, anything a publisher signs.

A document is authored in YAML and published as a JSON *envelope*::

    {"format": "ctgtp-signed-document/1", "doc_type": "mbr", "doc_id": "CAR-T-COCOON",
     "version": "3", "content": {...}, "content_hash": "<sha256 hex>",
     "signer": "qa.approver@site", "key_id": "<16 hex>", "signed_at": "...Z",
     "signature": "<base64>"}

The signature covers ``DOCUMENT_TAG || canonical({doc_type, doc_id, version, content_hash,
signer, key_id, signed_at})`` and ``content_hash`` is SHA-256 over the canonical bytes of
``content``; so changing one character of the content, the version or the type voids it.

YAML numbers with a fraction (``87.5``) and dates are loaded as *strings* exactly as written:
records hold no floats, and nobody's value is rounded on the way in.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
import yaml

from ebr_core.canonical import canonical, check_value
from ebr_core.errors import CanonicalError, EbrError
from ebr_core.keys import Keyring, UnitSigner
from ebr_core.record import format_time

DOCUMENT_TAG = b"ctgtp/document/v1\x00"
ENVELOPE_FORMAT = "ctgtp-signed-document/1"
_ENVELOPE_FIELDS = frozenset(
    {
        "format",
        "doc_type",
        "doc_id",
        "version",
        "content",
        "content_hash",
        "signer",
        "key_id",
        "signed_at",
        "signature",
    }
)
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9._\-]{0,63}")


class DocumentError(EbrError):
    """A document is unreadable, unsigned, altered, or signed by an untrusted key."""


class _ExactLoader(yaml.SafeLoader):
    """SafeLoader that keeps floats and timestamps as the strings the author wrote."""


# The loader gets its own table: the inherited one is SafeLoader's, shared by every
# ``yaml.safe_load`` in the process, which must keep reading 0.5 as a float.
_ExactLoader.yaml_implicit_resolvers = {
    first: [
        (tag, rx)
        for tag, rx in resolvers
        if tag not in ("tag:yaml.org,2002:float", "tag:yaml.org,2002:timestamp")
    ]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def load_yaml(text: str | bytes) -> dict[str, Any]:
    """Parse a YAML document into canonical-ready JSON values (no floats, no dates)."""
    try:
        data = yaml.load(text, Loader=_ExactLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as e:
        raise DocumentError(f"not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise DocumentError(f"the document must be a YAML mapping, got {type(data).__name__}")
    try:
        check_value(data, "$")
    except CanonicalError as e:
        raise DocumentError(str(e)) from e
    return data


def content_hash(content: dict[str, Any]) -> str:
    return hashlib.sha256(canonical(content)).hexdigest()


def _message(env: dict[str, Any]) -> bytes:
    return DOCUMENT_TAG + canonical(
        {
            k: env[k]
            for k in (
                "doc_type",
                "doc_id",
                "version",
                "content_hash",
                "signer",
                "key_id",
                "signed_at",
            )
        }
    )


@dataclass(frozen=True)
class SignedDocument:
    doc_type: str
    doc_id: str
    version: str
    content: dict[str, Any]
    content_hash: str
    signer: str
    key_id: str
    signed_at: str
    signature: str

    def envelope(self) -> dict[str, Any]:
        return {
            "format": ENVELOPE_FORMAT,
            "doc_type": self.doc_type,
            "doc_id": self.doc_id,
            "version": self.version,
            "content": self.content,
            "content_hash": self.content_hash,
            "signer": self.signer,
            "key_id": self.key_id,
            "signed_at": self.signed_at,
            "signature": self.signature,
        }

    def to_bytes(self) -> bytes:
        return orjson.dumps(self.envelope(), option=orjson.OPT_SORT_KEYS | orjson.OPT_INDENT_2)


def sign_document(
    content: dict[str, Any],
    *,
    doc_type: str,
    doc_id: str,
    version: str,
    signer: UnitSigner,
    signed_at: datetime,
) -> SignedDocument:
    """Sign ``content`` as ``doc_type``/``doc_id`` version ``version``.

    ``signer.unit_id`` names the publisher (a person or service id) for documents.
    """
    for name, value in (("doc_type", doc_type), ("doc_id", doc_id), ("version", version)):
        if not _WORD.fullmatch(value):
            raise DocumentError(f"{name} {value!r} must be 1-64 letters, digits, '.', '_' or '-'")
    try:
        check_value(content, "content")
    except CanonicalError as e:
        raise DocumentError(str(e)) from e
    env: dict[str, Any] = {
        "doc_type": doc_type,
        "doc_id": doc_id,
        "version": version,
        "content_hash": content_hash(content),
        "signer": signer.unit_id,
        "key_id": signer.key_id,
        "signed_at": format_time(signed_at),
    }
    sig = base64.b64encode(signer.sign(_message(env))).decode("ascii")
    return SignedDocument(content=content, signature=sig, **env)


def open_document(data: bytes, keyring: Keyring, *, doc_type: str) -> SignedDocument:
    """Read an envelope, check it is a ``doc_type`` signed by a trusted key, and return it.

    Raises :class:`DocumentError` saying what is wrong: unsigned (plain YAML), altered content,
    wrong type, unknown signer, bad signature.
    """
    try:
        env: Any = orjson.loads(data)
    except orjson.JSONDecodeError as e:
        raise DocumentError(
            f"not a signed {doc_type} document (expected a {ENVELOPE_FORMAT} JSON envelope; "
            "an unsigned YAML file must be published first)"
        ) from e
    if not isinstance(env, dict) or env.get("format") != ENVELOPE_FORMAT:
        raise DocumentError(f"not a signed document: format must be {ENVELOPE_FORMAT!r}")
    if env.keys() != _ENVELOPE_FIELDS:
        missing = sorted(_ENVELOPE_FIELDS - env.keys())
        extra = sorted(env.keys() - _ENVELOPE_FIELDS)
        raise DocumentError(f"envelope fields wrong: missing {missing}, unexpected {extra}")
    if env["doc_type"] != doc_type:
        raise DocumentError(f"document is a {env['doc_type']!r}, expected a {doc_type!r}")
    if not isinstance(env["content"], dict):
        raise DocumentError("document content must be a mapping")
    try:
        check_value(env["content"], "content")
    except CanonicalError as e:
        raise DocumentError(str(e)) from e
    actual = content_hash(env["content"])
    if actual != env["content_hash"]:
        raise DocumentError(
            f"document content was altered after signing (content hash {actual[:16]}…, "
            f"signed {str(env['content_hash'])[:16]}…)"
        )
    key = keyring.get(str(env["key_id"]))
    if key is None or (key.unit_id is not None and key.unit_id != env["signer"]):
        raise DocumentError(
            f"document is signed by {env['signer']!r} with key {env['key_id']}, which is not a "
            "trusted publisher key"
        )
    try:
        sig = base64.b64decode(str(env["signature"]), validate=True)
    except binascii.Error as e:
        raise DocumentError("document signature is not base64") from e
    if not key.verify(sig, _message(env)):
        raise DocumentError("document signature is invalid (the envelope was altered)")
    return SignedDocument(**{k: env[k] for k in _ENVELOPE_FIELDS if k != "format"})
