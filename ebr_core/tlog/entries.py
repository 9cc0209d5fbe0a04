"""What the server's log holds: one typed entry per recorded fact (issue 24), as leaf bytes.

Owns the entry kinds (a vocabulary), the fields each kind must carry to bind its record, and
the leaf encoding: ``ctgtp/tlog-entry/v1\\0`` followed by the canonical JSON of a flat object
(string and integer values only).  Records too large for a leaf are bound by a hash of their
canonical content (``content_hash``), which ``ctgtp server log verify`` recomputes from the
database: an edited row no longer matches its leaf.  Leaves stay below 65,535 bytes, the
largest entry a tile entry bundle can carry.

A kind may gain optional fields without a format change (readers check the required ones and
the value types).  The server's row-level entries carry two: ``table`` and ``key`` (the row's
primary key as canonical JSON, or its SHA-256 where the key could name a patient), so that
``server log verify`` finds the row again.  No patient identifier enters a leaf: a custody
entry's ``coi`` is the SHA-256 of the COI (:func:`coi_digest`).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import orjson

from ebr_core.canonical import canonical_checked
from ebr_core.errors import CanonicalError
from ebr_core.tlog.errors import TlogError
from ebr_core.tlog.tiles import MAX_ENTRY_BYTES

ENTRY_TAG = b"ctgtp/tlog-entry/v1\x00"
_HEX64 = re.compile(r"[0-9a-f]{64}")


class EntryFormatError(TlogError):
    """A log entry's bytes or fields are not what its kind requires."""


class EntryKind(StrEnum):
    SEGMENT = "segment"  # an accepted segment of a unit's ledger
    QA_SIGNATURE = "qa-signature"
    DISPOSITION = "disposition"
    DEVIATION_CLOSURE = "deviation-closure"
    DEVIATION_LINK = "deviation-link"  # QA linked a deviation to a related one
    CUSTODY = "custody"  # a custody event recorded through the server
    LICENCE = "licence"  # a licence created or changed
    AUDIT = "audit"  # one audit-trail entry, by its chained hash


# kind -> required field -> type ("hash" is 64 lowercase hex digits)
REQUIRED: dict[EntryKind, dict[str, str]] = {
    EntryKind.SEGMENT: {
        "unit_id": "str",
        "first_seq": "int",
        "last_seq": "int",
        "head_hash": "hash",
    },
    EntryKind.QA_SIGNATURE: {"batch_id": "str", "record_hash": "hash", "content_hash": "hash"},
    EntryKind.DISPOSITION: {"batch_id": "str", "disposition": "str", "content_hash": "hash"},
    EntryKind.DEVIATION_CLOSURE: {"batch_id": "str", "deviation_id": "str", "content_hash": "hash"},
    EntryKind.DEVIATION_LINK: {"batch_id": "str", "deviation_id": "str", "content_hash": "hash"},
    # The COI names a patient: only its SHA-256 (hex) enters the log (coi_digest).
    EntryKind.CUSTODY: {"coi": "hash", "batch_id": "str", "content_hash": "hash"},
    EntryKind.LICENCE: {"licence_id": "str", "content_hash": "hash"},
    EntryKind.AUDIT: {"seq": "int", "hash": "hash"},
}


def coi_digest(coi: str) -> str:
    """What a custody entry carries of a COI: its SHA-256, hex (the COI itself stays out)."""
    return hashlib.sha256(coi.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class LogEntry:
    kind: EntryKind
    fields: Mapping[str, str | int]

    def __post_init__(self) -> None:
        if "kind" in self.fields:
            raise EntryFormatError("'kind' is the entry's kind, not one of its fields")
        for name, value in self.fields.items():
            if type(value) not in (str, int):
                raise EntryFormatError(
                    f"{self.kind} field {name!r} is {type(value).__name__}; "
                    "entry fields are strings or integers"
                )
        for name, typ in REQUIRED[self.kind].items():
            if name not in self.fields:
                raise EntryFormatError(f"{self.kind} entry has no {name!r} field")
            value = self.fields[name]
            if typ == "int" and type(value) is not int:
                raise EntryFormatError(f"{self.kind} field {name!r} must be an integer")
            if typ in ("str", "hash") and type(value) is not str:
                raise EntryFormatError(f"{self.kind} field {name!r} must be a string")
            if typ == "hash" and not _HEX64.fullmatch(str(value)):
                raise EntryFormatError(
                    f"{self.kind} field {name!r} must be 64 lowercase hex digits, got {value!r}"
                )
        if self.kind is EntryKind.SEGMENT and not (
            1 <= int(self.fields["first_seq"]) <= int(self.fields["last_seq"])
        ):
            raise EntryFormatError(
                f"segment seq range {self.fields['first_seq']}-{self.fields['last_seq']} "
                "must satisfy 1 <= first_seq <= last_seq"
            )

    def to_bytes(self) -> bytes:
        try:
            body = canonical_checked({"kind": str(self.kind), **self.fields})
        except CanonicalError as e:
            raise EntryFormatError(f"{self.kind} entry cannot be encoded: {e}") from e
        leaf = ENTRY_TAG + body
        if len(leaf) > MAX_ENTRY_BYTES:
            raise EntryFormatError(
                f"{self.kind} entry is {len(leaf)} bytes, more than {MAX_ENTRY_BYTES}; "
                "bind large content by its hash"
            )
        return leaf

    @classmethod
    def parse(cls, leaf: bytes) -> LogEntry:
        if not leaf.startswith(ENTRY_TAG):
            raise EntryFormatError("log entry does not start with the ctgtp/tlog-entry/v1 tag")
        body = leaf[len(ENTRY_TAG) :]
        try:
            doc: Any = orjson.loads(body)
        except orjson.JSONDecodeError as e:
            raise EntryFormatError(f"log entry body is not JSON: {e}") from e
        if not isinstance(doc, dict):
            raise EntryFormatError("log entry body is not a JSON object")
        kind_s = doc.pop("kind", None)
        try:
            kind = EntryKind(kind_s)
        except ValueError:
            known = ", ".join(k.value for k in EntryKind)
            raise EntryFormatError(f"log entry kind {kind_s!r} is not one of: {known}") from None
        entry = cls(kind, doc)
        # One entry, one byte form: what is logged is exactly what was encoded.
        if entry.to_bytes() != leaf:
            raise EntryFormatError("log entry is not in canonical form (sorted keys, no spaces)")
        return entry
