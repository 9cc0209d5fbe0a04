"""Log entries: one canonical leaf per recorded fact, each kind with the fields that bind it."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from ebr_core.tlog.entries import ENTRY_TAG, EntryFormatError, EntryKind, LogEntry, coi_digest

H = "ab" * 32


def test_a_segment_entry_is_tagged_canonical_json() -> None:
    e = LogEntry(EntryKind.SEGMENT, {"unit_id": "UNIT-A", "first_seq": 1, "last_seq": 500, "head_hash": H})
    leaf = e.to_bytes()
    assert leaf == ENTRY_TAG + (
        b'{"first_seq":1,"head_hash":"' + H.encode() + b'","kind":"segment","last_seq":500,"unit_id":"UNIT-A"}'
    )
    assert LogEntry.parse(leaf) == e


@pytest.mark.parametrize(
    ("kind", "fields", "message"),
    [
        (EntryKind.SEGMENT, {"unit_id": "U", "first_seq": 1, "last_seq": 5}, "has no 'head_hash' field"),
        (EntryKind.SEGMENT, {"unit_id": "U", "first_seq": 6, "last_seq": 5, "head_hash": H}, "1 <= first_seq <= last_seq"),
        (EntryKind.SEGMENT, {"unit_id": "U", "first_seq": "1", "last_seq": 5, "head_hash": H}, "'first_seq' must be an integer"),
        (EntryKind.AUDIT, {"seq": 3, "hash": H.upper()}, "must be 64 lowercase hex digits"),
        (EntryKind.DISPOSITION, {"batch_id": "B", "disposition": "released", "content_hash": H, "x": 1.5}, "'x' is float"),
        (EntryKind.LICENCE, {"licence_id": "L", "content_hash": H, "kind": "x"}, "'kind' is the entry's kind"),
    ],
)
def test_entries_that_do_not_bind_their_record_are_refused(
    kind: EntryKind, fields: dict[str, object], message: str
) -> None:
    with pytest.raises(EntryFormatError, match=message):
        LogEntry(kind, fields)  # type: ignore[arg-type]


def test_leaves_are_read_strictly() -> None:
    good = LogEntry(EntryKind.AUDIT, {"seq": 7, "hash": H}).to_bytes()
    for bad, message in [
        (good[len(ENTRY_TAG) :], "does not start with the ctgtp/tlog-entry/v1 tag"),
        (good.replace(b'"seq":7', b'"seq": 7'), "not in canonical form"),
        (good.replace(b"audit", b"audits"), "kind 'audits' is not one of: segment, qa-signature"),
        (ENTRY_TAG + b"[1]", "not a JSON object"),
        (ENTRY_TAG + b"{", "not JSON"),
    ]:
        with pytest.raises(EntryFormatError, match=message):
            LogEntry.parse(bad)
    with pytest.raises(EntryFormatError, match="more than 65535; bind large content by its hash"):
        LogEntry(EntryKind.LICENCE, {"licence_id": "L", "content_hash": H, "note": "x" * 70_000}).to_bytes()


@given(
    st.dictionaries(
        st.text(min_size=1, max_size=8).filter(lambda k: k not in ("kind", "seq", "hash")),
        st.one_of(st.text(max_size=20), st.integers(-(2**63), 2**63 - 1)),
        max_size=5,
    ),
    st.integers(0, 2**63 - 1),
)
def test_any_entry_round_trips(extra: dict[str, str | int], seq: int) -> None:
    e = LogEntry(EntryKind.AUDIT, {**extra, "seq": seq, "hash": H})
    assert LogEntry.parse(e.to_bytes()) == e


def test_a_custody_entry_carries_the_coi_only_as_its_sha256() -> None:
    coi = "&/CHA999926ABC123"
    with pytest.raises(EntryFormatError, match="'coi' must be 64 lowercase hex digits"):
        LogEntry(EntryKind.CUSTODY, {"coi": coi, "batch_id": "B", "content_hash": H})
    e = LogEntry(EntryKind.CUSTODY, {"coi": coi_digest(coi), "batch_id": "B", "content_hash": H})
    leaf = e.to_bytes()
    assert coi.encode() not in leaf
    assert coi_digest(coi) == "a3bd3cb2332bf774495f8506c955700a4f2a9b6b71893ab189866923e42c9231"
