"""The one record decoder: a line of the exchange format (or the dict it parses to) back to the
:class:`Event`, :class:`Checkpoint` or :class:`Seal` it was encoded from, and a precise
:class:`RecordFormatError` for anything that is not such a record."""

from __future__ import annotations

import copy
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebr_core.errors import RecordFormatError
from ebr_core.keys import UnitSigner
from ebr_core.ledgerfile import encode_record
from ebr_core.record import Checkpoint, Event, Seal, decode_record

from .conftest import make_ledger

SIGNER = UnitSigner.from_seed(bytes(range(1, 33)), "UNIT-D")
RECORDS = make_ledger(SIGNER, 7, every=3)
LINES = [encode_record(r)[:-1] for r in RECORDS]


@settings(max_examples=50, deadline=None)
@given(st.integers(0, len(RECORDS) - 1), st.sampled_from(["bytes", "str", "dict", "memoryview"]))
def test_every_record_decodes_to_what_it_was_encoded_from(i: int, form: str) -> None:
    line = LINES[i]
    src: Any = {
        "bytes": line,
        "str": line.decode(),
        "dict": orjson.loads(line),
        "memoryview": memoryview(line),
    }[form]
    before = copy.deepcopy(src) if form == "dict" else None
    got = decode_record(src)
    assert got == RECORDS[i] and type(got) is type(RECORDS[i])
    assert encode_record(got)[:-1] == line
    if before is not None:
        assert src == before  # the caller's dict keeps its "type"


def test_all_three_types_come_back() -> None:
    kinds = {type(decode_record(line)) for line in LINES}
    assert kinds == {Event, Checkpoint, Seal}


def test_expect_narrows_and_refuses_another_type() -> None:
    ev_line = next(x for x, r in zip(LINES, RECORDS, strict=True) if isinstance(r, Event))
    cp_line = next(x for x, r in zip(LINES, RECORDS, strict=True) if isinstance(r, Checkpoint))
    assert isinstance(decode_record(ev_line, Event), Event)
    assert isinstance(decode_record(cp_line, Checkpoint), Checkpoint)
    with pytest.raises(RecordFormatError, match=r"record type is 'checkpoint', expected 'event'"):
        decode_record(cp_line, Event)
    with pytest.raises(RecordFormatError, match=r"record type is 'event', expected 'seal'"):
        decode_record(ev_line, Seal)


def event_dict() -> dict[str, Any]:
    d: dict[str, Any] = orjson.loads(LINES[0])
    assert d["type"] == "event"
    return d


def without(d: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in d.items() if k != key}


@pytest.mark.parametrize(
    ("src", "message"),
    [
        (b'{"type":"event"', "a record is not valid JSON"),
        (b"[1,2]", "a record must be a JSON object, got list"),
        (b"", "a record is not valid JSON"),
        (without(event_dict(), "type"), "record type None is not one of 'event', 'checkpoint'"),
        ({**event_dict(), "type": "evnt"}, "record type 'evnt' is not one of"),
        ({**event_dict(), "type": ["event"]}, r"record type \['event'\] is not one of"),
        (without(event_dict(), "hash"), r"event fields wrong: missing \['hash'\], unexpected \[\]"),
        ({**event_dict(), "extra": 1}, r"event fields wrong: missing \[\], unexpected \['extra'\]"),
        (
            {**without(event_dict(), "seq"), "sequence": 1},
            r"event fields wrong: missing \['seq'\], unexpected \['sequence'\]",
        ),
        (
            {**without(orjson.loads(LINES[3]), "signature"), "sig": "x"},
            r"checkpoint fields wrong: missing \['signature'\], unexpected \['sig'\]",
        ),
    ],
)
def test_what_is_not_a_record_is_named(src: Any, message: str) -> None:
    with pytest.raises(RecordFormatError, match=message):
        decode_record(src)
