"""The run path's named offsets (``ebr_core._verify_run``) are where the fields of a canonical
event line are, for any event; and the import-time layout check refuses an offset that is off."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebr_core import _verify_run
from ebr_core._verify_run import BODY_FROM_HASH, HASH_HEX, PREV_BACK, TIME_BACK, TIME_LEN
from ebr_core.canonical import canonical
from ebr_core.chain import ChainBuilder
from ebr_core.keys import UnitSigner
from ebr_core.ledgerfile import encode_record
from ebr_core.record import EVENT_TAG, event_line_shape

SIGNER = UnitSigner.from_seed(bytes(range(5, 37)), "UNIT-L")

text = st.text(max_size=8)
values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | text,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(text, inner, max_size=3),
    max_leaves=8,
)
kinds = st.from_regex(r"[a-z][a-z0-9_]{0,6}(\.[a-z][a-z0-9_]{0,6}){1,2}", fullmatch=True)
ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,10}", fullmatch=True)


@settings(max_examples=150, deadline=None)
@given(
    kinds,
    st.none() | ids,
    st.none() | st.text(min_size=1, max_size=8),
    st.dictionaries(text, values, max_size=4),
    st.datetimes(min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30)),
    st.integers(0, 10**6),
)
def test_each_offset_finds_its_field_in_any_event_line(
    kind: str, batch: str | None, actor: str | None, payload: dict[str, Any], t: datetime, skip: int
) -> None:
    b = ChainBuilder(SIGNER, lambda: t.replace(tzinfo=UTC), seq=skip, head_hash="ab" * 32)
    ev = b.next_event(kind, payload, batch_id=batch, actor=actor)
    line = encode_record(ev)[:-1]
    shape = event_line_shape(SIGNER.unit_id, kind, batch, actor)
    hp, tail = len(shape.head), len(shape.seq_tail % ev.seq)
    assert line[hp : hp + HASH_HEX] == ev.hash.encode()
    assert line[-tail - TIME_BACK : -tail] == ev.recorded_at.encode()
    assert len(ev.recorded_at) == TIME_LEN
    assert line[shape.payload_at : -tail - PREV_BACK] == canonical(payload)
    assert line[-tail - PREV_BACK : -tail - TIME_BACK] == (
        b',"prev_hash":"' + ev.prev_hash.encode() + b'","recorded_at":"'
    )
    body = {k: v for k, v in ev.to_dict().items() if k != "hash"}
    hashed = shape.body_head + line[hp + BODY_FROM_HASH : -shape.suffix_len] + shape.body_tail
    assert hashed == EVENT_TAG + canonical(body)


@pytest.mark.parametrize(
    "name", ["HASH_HEX", "TIME_LEN", "TIME_BACK", "PREV_BACK", "BODY_FROM_HASH"]
)
@pytest.mark.parametrize("by", [-1, 1])
def test_an_offset_that_is_off_fails_the_layout_check(
    monkeypatch: pytest.MonkeyPatch, name: str, by: int
) -> None:
    _verify_run._check_layout()  # as it runs at import: the real offsets pass
    monkeypatch.setattr(_verify_run, name, getattr(_verify_run, name) + by)
    with pytest.raises(AssertionError, match=f"offsets .*'{name}'"):
        _verify_run._check_layout()
