"""Runs of like event lines are verified in bulk (``ChainVerifier.feed_run``); the law is that
this changes nothing: ``check_lines`` gives the same verdict, the same error (class, message,
line, seq) and the same end state as feeding every line through ``feed_line``, whatever the
lines hold.

Tampered lines come in two kinds here: bytes changed by accident or by hand (the hash no longer
matches), and lines a signer wrote wrong on purpose, with every hash after them recomputed over
the line's own bytes (``rechain``), so only the canonical-form checks stand between them and
acceptance.
"""

from __future__ import annotations

import hashlib
import re
from typing import Any

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from ebr_core.chain import ChainBuilder, sign_seal
from ebr_core.errors import MalformedRecordError, VerificationError
from ebr_core.keys import Keyring, UnitSigner
from ebr_core.ledgerfile import encode_record
from ebr_core.record import EVENT_TAG, GENESIS_HASH, Checkpoint, Event, Seal
from ebr_core.verify import ChainVerifier, EventRun

from .conftest import step_clock

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _payload(i: int) -> dict[str, Any]:
    if i % 7 == 0:
        return {"count": i, "flags": [True, None, "x"], "nested": {"depth": {"n": -i}}}
    if i % 5 == 0:
        return {"note": 'naïve µ ✓ "quoted" \\ back', "value": {"value": f"{i}.5", "unit": "Cel"}}
    return {"channel": "temperature", "value": {"value": f"37.{i % 10}", "unit": "Cel"}}


def _records(signer: UnitSigner) -> list[Event | Checkpoint | Seal]:
    """130 events in runs of like (kind, batch, actor), across seq 9->10 and 99->100, with
    checkpoints inside and between runs."""
    b = ChainBuilder(signer, step_clock(step_ms=170))  # several events a second, and not
    out: list[Event | Checkpoint | Seal] = []
    for i in range(130):
        group = i // 13
        kind = ("step.completed", "reading.recorded", "reading.rejected")[group % 3]
        if i % 13 == 7:  # one of a kind of the same length inside a run
            kind = "reading.reworked" if kind == "reading.recorded" else "reading.recorded"
        actor = "op1" if group % 4 == 1 else None
        batch = "B-1" if group % 5 != 4 else "B-2"
        out.append(b.next_event(kind, _payload(i), batch_id=batch, actor=actor))
        if i % 17 == 16:
            out.append(b.checkpoint())
    out.append(b.checkpoint())
    out.append(sign_seal(signer, 1, b.seq, b.head_hash))
    return out


@pytest.fixture(scope="module")
def lines(signer: UnitSigner) -> list[bytes]:
    return [encode_record(r)[:-1] for r in _records(signer)]


def line_by_line(lines: list[bytes], keyring: Keyring) -> tuple[Any, ...]:
    v = ChainVerifier(keyring)
    try:
        for line in lines:
            if not line.strip():
                raise MalformedRecordError(
                    "blank line: expected one record per line", index=v.index
                )
            v.feed_line(line)
    except VerificationError as e:
        return (type(e).__name__, str(e), e.index, e.seq)
    return ("ok", v.seq, v.head_hash, v.index, v.checkpoint_seq, v.sealed)


class Counting(ChainVerifier):
    runs = 0

    def feed_run(self, lines: Any, i: int, decode: bool = True) -> EventRun | None:
        r = super().feed_run(lines, i, decode)
        if r is not None:
            Counting.runs += r.size
        return r


def in_runs(lines: list[bytes], keyring: Keyring) -> tuple[Any, ...]:
    v = Counting(keyring)
    try:
        v.check_lines(lines)
    except VerificationError as e:
        return (type(e).__name__, str(e), e.index, e.seq)
    return ("ok", v.seq, v.head_hash, v.index, v.checkpoint_seq, v.sealed)


def test_a_valid_ledger_is_verified_mostly_in_runs(signer: UnitSigner, lines: list[bytes]) -> None:
    keys = Keyring([signer.public])
    Counting.runs = 0
    assert in_runs(lines, keys) == line_by_line(lines, keys)
    assert in_runs(lines, keys)[:2] == ("ok", 130)
    assert Counting.runs > 100  # the bulk path did the work (the law below is not vacuous)


def test_runs_go_on_where_the_seq_gains_a_digit(signer: UnitSigner) -> None:
    b = ChainBuilder(signer, step_clock())
    records: list[Event | Checkpoint | Seal] = [
        b.next_event("reading.recorded", _payload(1), batch_id="B-1") for _ in range(20)
    ]
    records.append(b.checkpoint())
    keys = Keyring([signer.public])
    Counting.runs = 0
    assert in_runs([encode_record(r)[:-1] for r in records], keys)[:2] == ("ok", 20)
    # The first event sets the line shape; 2..9 and 10..20 are two runs.
    assert Counting.runs == 19


def test_a_run_carries_what_feed_line_parses(signer: UnitSigner, lines: list[bytes]) -> None:
    keys = Keyring([signer.public])
    a, b = ChainVerifier(keys), ChainVerifier(keys)
    parsed = [a.feed_line(x) for x in lines]
    got: list[dict[str, Any]] = []
    i = 0
    while i < len(lines):
        r = b.feed_run(lines, i)
        if r is None:
            got.append(b.feed_line(lines[i]))
            i += 1
            continue
        assert len(r.hashes) == len(r.payloads) == len(r.recorded_at) == r.size >= 2
        for k in range(r.size):
            got.append(
                {
                    "actor": r.actor,
                    "batch_id": r.batch_id,
                    "hash": r.hashes[k],
                    "kind": r.kind,
                    "payload": r.payloads[k],
                    "prev_hash": parsed[i + k]["prev_hash"],  # not carried: checked equal
                    "recorded_at": r.recorded_at[k],
                    "seq": r.first_seq + k,
                    "type": "event",
                    "unit_id": "UNIT-A",
                }
            )
        i += r.size
    assert got == parsed


# -- lines written wrong on purpose, every later hash recomputed ----------------------------

_HASH = re.compile(rb'"hash":"([0-9a-fA-F]{64})",')
_PREV = re.compile(rb'"prev_hash":"[0-9a-fA-F]{64}"')


def rechain(lines: list[bytes], start: int) -> None:
    """Recompute prev_hash and hash of every event line from ``start`` over the line's own bytes
    (without its hash and type), as a signer that writes non-canonical lines would."""
    prev = (
        next(
            m.group(1)
            for x in reversed(lines[:start])
            if x.startswith(b'{"actor"') and (m := _HASH.search(x))
        )
        if start
        else GENESIS_HASH.encode()
    )
    for j in range(start, len(lines)):
        if lines[j].startswith(b'{"actor"'):
            lines[j], prev = rehash(lines[j], prev)


def rehash(line: bytes, prev: bytes) -> tuple[bytes, bytes]:
    """The event line linked to ``prev`` with its hash recomputed over its own bytes; and
    that hash."""
    line = _PREV.sub(b'"prev_hash":"' + prev + b'"', line, count=1)
    body = _HASH.sub(b"", line, count=1).replace(b'"type":"event",', b"", 1)
    h = hashlib.sha256(EVENT_TAG + body).hexdigest().encode()
    return _HASH.sub(b'"hash":"' + h + b'",', line, count=1), h


def judged_alike(lines: list[bytes], keys: Keyring) -> tuple[Any, ...]:
    """Assert that runs and one line at a time give the same outcome; return it."""
    expected = line_by_line(lines, keys)
    assert in_runs(lines, keys) == expected
    return expected


def set_payload(line: bytes, payload: bytes) -> bytes:
    a = line.index(b'"payload":') + len(b'"payload":')
    b = line.rindex(b',"prev_hash":"')
    return line[:a] + payload + line[b:]


PAYLOADS = [
    b'{"a": "1"}',  # a space
    b'{"b":"1","a":"2"}',  # keys out of order
    b'{"a":1.5}',
    b'{"a":1e5}',
    b'{"a":-0.0}',
    b'{"a":[1,2.5]}',
    b'{"a":[1.5]}',
    b'{"a":["x",2.5]}',
    b'{"a":{"b":{"c":2.5}}}',
    b'{"a":9223372036854775808}',  # beyond signed 64-bit
    b'{"a":-9223372036854775809}',
    b'{"a":9223372036854775807,"b":-9223372036854775808}',  # the limits: valid
    b'{"a":"1","a":"2"}',  # a duplicated key
    b'{"a":"\\u00e9"}',  # an escape canonical form writes as UTF-8
    b'{"a":"x"} ',
    b'{"a":"1"},{"b":"2"}',  # two objects where one belongs
    b"[]",
    b'"x"',
    b"1",
    b"null",
    b"{}",  # valid: only the checkpoint's signature can tell
    b'{"a":"2"}',  # valid, and changed
    b'{"a":01}',
    b'{"a":"1:0,0[0"}',  # digits after ':' ',' '[' inside a string: valid
]

FIELDS = [
    (b'"recorded_at":"2026-11-24T08:00:', b'"recorded_at":"2026-11-24 08:00:'),
    (b'"recorded_at":"2026-11-24T08:00:', b'"recorded_at":"2026-11-24T08:0a:'),
    (b'"recorded_at":"2026-11-24T08:00:', b'"recorded_at":"2026-11-24T08:\xd9\xa2:'),
    (b'Z","seq"', b'z","seq"'),
    (b'"seq":', b'"seq":0'),
    (b'"seq":', b'"seq": '),
    (b',"kind"', b', "kind"'),
    (b'"type":"event"', b'"type":"Event"'),
    (b'"type":"event",', b""),
    (b'{"actor"', b'{"extra":1,"actor"'),
]


def _event_indexes(lines: list[bytes]) -> list[int]:
    return [i for i, x in enumerate(lines) if x.startswith(b'{"actor"')]


@FAST
@given(st.data())
def test_wrong_payloads_rehashed_are_judged_alike(
    signer: UnitSigner, lines: list[bytes], d: st.DataObject
) -> None:
    keys = Keyring([signer.public])
    bad = list(lines)
    k = d.draw(st.sampled_from(_event_indexes(lines)[:-1]))
    payload = d.draw(st.sampled_from(PAYLOADS))
    bad[k] = set_payload(bad[k], payload)
    if d.draw(st.booleans()) and bad[k + 1].startswith(b'{"actor"'):
        # An array split over two lines: each line alone is not JSON, the two joined are.
        bad[k] = set_payload(bad[k], b'{"a":[{}')
        bad[k + 1] = set_payload(bad[k + 1], b"{}]}")
    rechain(bad, k)
    assert judged_alike(bad, keys)[0] != "ok"


@FAST
@given(st.data())
def test_wrong_fields_rehashed_are_judged_alike(
    signer: UnitSigner, lines: list[bytes], d: st.DataObject
) -> None:
    keys = Keyring([signer.public])
    bad = list(lines)
    k = d.draw(st.sampled_from(_event_indexes(lines)))
    old, new = d.draw(st.sampled_from(FIELDS))
    assume(old in bad[k])
    bad[k] = bad[k].replace(old, new, 1)
    rechain(bad, k)
    if d.draw(st.booleans()):  # the stored hashes in upper case
        h = _HASH.search(bad[k])
        assert h is not None
        bad[k] = bad[k].replace(h.group(1), h.group(1).upper())
    assert judged_alike(bad, keys)[0] != "ok"


@FAST
@given(st.data())
def test_a_forked_chain_rehashed_is_judged_alike(
    signer: UnitSigner, lines: list[bytes], d: st.DataObject
) -> None:
    """An event with the right seq and its own hash right, but linked to another chain."""
    keys = Keyring([signer.public])
    bad = list(lines)
    k = d.draw(st.sampled_from(_event_indexes(lines)))
    other = d.draw(st.binary(min_size=32, max_size=32)).hex().encode()
    assume(b'"prev_hash":"' + other not in bad[k])
    bad[k], _ = rehash(bad[k], other)
    rechain(bad, k + 1)
    assert judged_alike(bad, keys)[0] == "ChainBrokenError"


@FAST
@given(st.data())
def test_changed_bytes_are_judged_alike(
    signer: UnitSigner, lines: list[bytes], d: st.DataObject
) -> None:
    keys = Keyring([signer.public])
    bad = list(lines)
    how = d.draw(st.sampled_from(["byte", "delete", "swap", "duplicate", "splice", "blank"]))
    k = d.draw(st.integers(0, len(bad) - 2))
    if how == "byte":
        x = bytearray(bad[k])
        pos = d.draw(st.integers(0, len(x) - 1))
        x[pos] = d.draw(st.sampled_from(list(b'0123456789aAfF"{}[],:.eE- \\\xc3')))
        bad[k] = bytes(x)
    elif how == "delete":
        del bad[k]
    elif how == "swap":
        bad[k], bad[k + 1] = bad[k + 1], bad[k]
    elif how == "duplicate":
        bad.insert(k, bad[k])
    elif how == "splice":
        cut = d.draw(st.integers(1, min(len(bad[k]), len(bad[k + 1])) - 1))
        bad[k] = bad[k][:cut] + bad[k + 1][cut:]
    else:
        bad.insert(k, b" ")
    judged_alike(bad, keys)
