"""The chain builder writes exactly the bytes the record format defines.

``ChainBuilder.next_events`` builds a commit group run by run, filling a per-(kind, batch,
actor) template instead of encoding the whole body; these tests hold it to the reference
definition (stdlib ``json``, sorted keys) for any valid input, hold a sequence cut into groups to
the same events one at a time (``next_event``, a group of one) under the same clock readings,
and check that anything invalid is refused with the precise message and leaves the builder's
head where it was.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebr_core.canonical import reference_canonical
from ebr_core.chain import ChainBuilder, NewEvent
from ebr_core.errors import RecordFormatError, VerificationError
from ebr_core.keys import Keyring, UnitSigner
from ebr_core.ledgerfile import encode_record
from ebr_core.record import EVENT_TAG, GENESIS_HASH, event_line_template, format_time
from ebr_core.verify import ChainVerifier

SIGNER = UnitSigner.from_seed(bytes(range(32)), "UNIT-A")

ints = st.integers(-(2**63), 2**63 - 1)
scalars = st.none() | st.booleans() | ints | st.text(max_size=12)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=12,
)
payloads = st.dictionaries(st.text(max_size=8), json_values, max_size=5)
kinds = st.from_regex(r"[a-z][a-z0-9_]{0,6}(\.[a-z][a-z0-9_]{0,6}){1,2}", fullmatch=True)
ids = st.from_regex(r"[A-Za-z0-9][A-Za-z0-9._:\-]{0,10}", fullmatch=True)
actors = st.none() | st.text(min_size=1, max_size=10)  # quotes, %, unicode: all allowed
zones = st.sampled_from(
    [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
)
times = st.datetimes(
    min_value=datetime(1000, 1, 2), max_value=datetime(9999, 12, 30), timezones=zones
)


def reference_hash(ev: Any) -> str:
    body = ev.to_dict()
    del body["hash"]
    return hashlib.sha256(EVENT_TAG + reference_canonical(body)).hexdigest()


@settings(max_examples=120, deadline=None)  # 300 took 15 s under coverage
@given(st.lists(st.tuples(kinds, st.none() | ids, actors, payloads, times), min_size=1, max_size=6))
def test_event_bytes_equal_the_reference_encoding(
    steps: list[tuple[str, str | None, str | None, dict[str, Any], datetime]],
) -> None:
    it = iter([t for *_, t in steps])
    b = ChainBuilder(SIGNER, lambda: next(it))
    prev = GENESIS_HASH
    for seq, (kind, batch, actor, payload, t) in enumerate(steps, 1):
        ev = b.next_event(kind, payload, batch_id=batch, actor=actor)
        assert ev.hash == reference_hash(ev)
        assert (ev.seq, ev.prev_hash, ev.kind, ev.batch_id, ev.actor) == (
            seq,
            prev,
            kind,
            batch,
            actor,
        )
        assert ev.recorded_at == t.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        prev = ev.hash
    assert b.head_hash == prev


@settings(max_examples=500, deadline=None)
@given(st.lists(times, min_size=1, max_size=20))
def test_format_time_equals_strftime_whatever_the_order(ts: list[datetime]) -> None:
    # The per-second cache must never give one second's prefix to another second.
    for t in ts:
        for u in (t, t + timedelta(microseconds=1), t - timedelta(seconds=1)):
            assert format_time(u) == u.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def test_format_time_refuses_naive_and_early_times() -> None:
    with pytest.raises(RecordFormatError, match="timezone-aware"):
        format_time(datetime(2026, 1, 1))
    with pytest.raises(RecordFormatError, match="before the year 1000"):
        format_time(datetime(999, 1, 1, tzinfo=UTC))
    assert format_time(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)) == (
        "9999-12-31T23:59:59.999999Z"
    )


T = datetime(2026, 11, 25, 9, 0, tzinfo=UTC)


INVALID = pytest.mark.parametrize(
    ("kind", "payload", "batch", "actor", "message"),
    [
        ("reading.recorded", {"v": 1.5}, "B-1", None, r"payload\.v: float 1\.5 is not allowed"),
        ("reading.recorded", {"q": {"value": 2.0}}, "B-1", None, r"payload\.q\.value: float"),
        ("reading.recorded", {"n": [1, {"x": float("nan")}]}, "B-1", None, "float nan"),
        ("reading.recorded", {"n": 2**63}, "B-1", None, "outside the signed 64-bit range"),
        ("reading.recorded", {1: "x"}, "B-1", None, "key 1 is not a string"),
        ("reading.recorded", {"q": {2: "x"}}, "B-1", None, "key 2 is not a string"),
        ("reading.recorded", {"t": (1, 2)}, "B-1", None, "tuple is not a JSON value"),
        ("reading.recorded", {"d": T}, "B-1", None, "datetime is not a JSON value"),
        ("reading.recorded", ["x"], "B-1", None, "payload must be a JSON object"),
        ("Reading", {}, "B-1", None, "kind 'Reading' is not dotted lower-case"),
        (None, {}, None, None, "kind None is not dotted lower-case"),
        ("reading.recorded", {}, "bad batch", None, "batch_id 'bad batch'"),
        ("reading.recorded", {}, ["B"], None, r"batch_id \['B'\]"),
        ("reading.recorded", {}, "B-1", "", "actor must be a non-empty string"),
        ("reading.recorded", {}, "B-1", ["op"], "actor must be a non-empty string"),
    ],
)


@INVALID
def test_invalid_input_is_refused_and_the_head_stays(
    kind: Any, payload: Any, batch: Any, actor: Any, message: str
) -> None:
    b = ChainBuilder(SIGNER, lambda: T)
    good = b.next_event("reading.recorded", {"v": "1"}, batch_id="B-1")
    with pytest.raises(RecordFormatError, match=message):
        b.next_event(kind, payload, batch_id=batch, actor=actor)
    assert (b.seq, b.head_hash) == (1, good.hash)
    again = b.next_event("reading.recorded", {"v": "2"}, batch_id="B-1")
    assert again.prev_hash == good.hash and again.hash == reference_hash(again)


def test_naive_clock_is_refused() -> None:
    b = ChainBuilder(SIGNER, lambda: datetime(2026, 1, 1))
    with pytest.raises(RecordFormatError, match="timezone-aware"):
        b.next_event("reading.recorded", {}, batch_id="B-1")
    with pytest.raises(RecordFormatError, match="timezone-aware"):
        b.next_events([NewEvent("reading.recorded", {}, "B-1")])
    assert b.seq == 0


fixed_fields = st.tuples(kinds, st.none() | ids, actors)


@st.composite
def commit_groups(draw: st.DrawFn) -> list[tuple[datetime, list[NewEvent]]]:
    """Commit groups of events whose fixed fields repeat (so groups hold runs of like events)."""
    pool = draw(st.lists(fixed_fields, min_size=1, max_size=3))
    groups = []
    for _ in range(draw(st.integers(1, 4))):
        t = draw(times)
        items = []
        for _ in range(draw(st.integers(0, 6))):
            kind, batch, actor = draw(st.sampled_from(pool))
            items.append(NewEvent(kind, draw(payloads), batch, actor))
        groups.append((t, items))
    return groups


@settings(max_examples=100, deadline=None)  # 300 took 22 s under coverage
@given(commit_groups())
def test_a_commit_group_makes_the_events_of_one_at_a_time(
    groups: list[tuple[datetime, list[NewEvent]]],
) -> None:
    # The law of next_events: the events next_event makes for each item in turn, with the
    # group's one clock reading; the builders end at the same head.
    readings: list[datetime] = []
    group_clock = iter(t for t, _ in groups)
    grouped = ChainBuilder(SIGNER, lambda: readings.append(next(group_clock)) or readings[-1])
    one_clock = iter(t for t, items in groups for _ in items)
    single = ChainBuilder(SIGNER, lambda: next(one_clock))
    for t, items in groups:
        made = grouped.next_events(items)
        assert made == [
            single.next_event(it.kind, it.payload, batch_id=it.batch_id, actor=it.actor)
            for it in items
        ]
        assert all(ev.hash == reference_hash(ev) for ev in made)
        assert (grouped.seq, grouped.head_hash) == (single.seq, single.head_hash)
    assert readings == [t for t, _ in groups]  # one clock reading per group


@INVALID
@pytest.mark.parametrize("at", [0, 2, 4])
def test_an_invalid_item_refuses_its_whole_group_and_the_head_stays(
    kind: Any, payload: Any, batch: Any, actor: Any, message: str, at: int
) -> None:
    b = ChainBuilder(SIGNER, lambda: T)
    good = b.next_event("reading.recorded", {"v": "1"}, batch_id="B-1")
    items = [NewEvent("reading.recorded", {"v": str(i)}, "B-1") for i in range(4)]
    items.insert(at, NewEvent(kind, payload, batch, actor))
    with pytest.raises(RecordFormatError, match=message):
        b.next_events(items)
    assert (b.seq, b.head_hash) == (1, good.hash)
    again = b.next_events(items[:at] + items[at + 1 :])
    assert [ev.seq for ev in again] == [2, 3, 4, 5]
    assert again[0].prev_hash == good.hash
    assert all(ev.hash == reference_hash(ev) for ev in again)


def test_invalid_unit_id_is_refused() -> None:
    with pytest.raises(RecordFormatError, match="not a valid unit id"):
        ChainBuilder(UnitSigner.from_seed(bytes(32), "bad unit"), lambda: T)


@settings(max_examples=200, deadline=None)
@given(kinds, st.none() | ids, actors, payloads, times)
def test_line_template_equals_the_exchange_line(
    kind: str, batch: str | None, actor: str | None, payload: dict[str, Any], t: datetime
) -> None:
    ev = ChainBuilder(SIGNER, lambda: t).next_event(kind, payload, batch_id=batch, actor=actor)
    filled = event_line_template(SIGNER.unit_id, kind, batch, actor) % (
        ev.hash.encode(),
        orjson.dumps(payload, option=orjson.OPT_SORT_KEYS),
        ev.prev_hash.encode(),
        ev.recorded_at.encode(),
        ev.seq,
    )
    assert filled + b"\n" == encode_record(ev)


@pytest.mark.parametrize(
    "edit",
    [
        lambda s: s.replace(b'"kind":', b'"kind": '),
        lambda s: s.replace(b'"Cel"', b'"\\u0043el"'),
        lambda s: s.replace(b'"seq":1,', b'"seq":1.0,'),
        lambda s: s.replace(b'"seq":1,', b'"seq":01,'),
        lambda s: s.replace(b'{"unit":"Cel","value":"1"}', b'{"value":"1","unit":"Cel"}'),
    ],
)
def test_an_equivalent_but_not_canonical_event_line_is_refused(edit: Any) -> None:
    ev = ChainBuilder(SIGNER, lambda: T).next_event(
        "reading.recorded", {"q": {"value": "1", "unit": "Cel"}}, batch_id="B-1"
    )
    line = encode_record(ev)[:-1]
    bad = edit(line)
    assert bad != line
    v = ChainVerifier(Keyring([SIGNER.public]))
    with pytest.raises(VerificationError):  # a float seq is a SequenceError, the rest malformed
        v.feed_line(bad)
    ChainVerifier(Keyring([SIGNER.public])).feed_line(line)  # the canonical line passes
