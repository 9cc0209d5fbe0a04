"""Two-part verification (a worker process takes the half after a checkpoint) gives exactly
the serial result: the same rows, deltas and head, and the same first error on the same line."""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebr_core.chain import ChainBuilder, sign_seal
from ebr_core.errors import MalformedRecordError, SignatureError, UnsignedTailError
from ebr_core.keys import Keyring, UnitSigner
from ebr_core.ledgerfile import encode_record
from ebr_core.record import GENESIS_HASH
from ebr_core.verify import ChainVerifier
from server import projections
from server.verifying import Part, Start, Verifier, split_point, verify_lines, with_lines

from .conftest import clock

UNIT = UnitSigner.from_seed(bytes(range(7, 39)), "UNIT-PV")
KEYS: list[tuple[bytes, str | None]] = [(UNIT.public.raw, UNIT.unit_id)]
START = Start(0, GENESIS_HASH, 0)


def segment(n: int = 60, every: int = 7) -> list[bytes]:
    b = ChainBuilder(UNIT, clock())  # type: ignore[arg-type]
    out = []
    for i in range(n):
        if i % 20 == 0:
            kind, payload = "batch.started", {"coi": f"COI-{i}"}
        elif i % 13 == 0:
            kind, payload = "deviation.raised", {"id": f"D{i}"}
        elif i % 19 == 0:
            kind, payload = "batch.completed", {}
        else:
            kind, payload = "reading.recorded", {"i": i, "value": {"value": "1.5", "unit": "%"}}
        batch = f"B-{i // 20}"
        out.append(encode_record(b.next_event(kind, payload, batch_id=batch))[:-1])
        if (i + 1) % every == 0 or i == n - 1:
            out.append(encode_record(b.checkpoint())[:-1])
    return out


@pytest.fixture(scope="module")
def verifier() -> Iterator[Verifier]:
    v = Verifier(1, min_lines=10, worker_share=0.6)
    assert v.wait_ready(30), "the worker did not start"  # it imports the server package
    yield v
    v.close()


def same(a: Part, b: Part, lines: list[bytes]) -> None:
    assert a.error == b.error
    assert type(a.failure) is type(b.failure)  # the class travels with the part
    if a.failure is not None and b.failure is not None:
        assert (a.failure.index, a.failure.seq, str(a.failure)) == (
            b.failure.index,
            b.failure.seq,
            str(b.failure),
        )
    assert a.seal_at == b.seal_at
    if a.error is None:
        assert with_lines(a, lines) == with_lines(b, lines)
        assert a.checkpoints == b.checkpoints
        assert a.deltas == b.deltas
        assert a.end == b.end


def test_two_parts_equal_one(verifier: Verifier) -> None:
    lines = segment()
    cut = split_point(lines)
    assert cut is not None and 10 < cut[0] < len(lines) - 10
    serial = verify_lines(KEYS, UNIT.unit_id, START, lines)
    assert serial.error is None and serial.end is not None and serial.end.seq == 60
    before = verifier.worker_parts
    parallel = verifier.verify(KEYS, UNIT.unit_id, START, lines)
    assert verifier.worker_parts == before + 1
    same(parallel, serial, lines)
    assert sum(d.exceptions for d in parallel.deltas.values()) > 0


def tamper(line: bytes) -> bytes:
    for old, new in ((b'"1.5"', b'"1.6"'), (b'"COI-', b'"COJ-'), (b'"seq":', b'"seq":9')):
        if old in line:
            return line.replace(old, new, 1)
    return line[:-2] + b"x" + line[-1:]


def test_first_error_is_the_same_whichever_part_it_is_in(verifier: Verifier) -> None:
    lines = segment(40, 6)
    at = split_point(lines)
    assert at is not None
    before = verifier.worker_parts
    for i in range(len(lines)):
        for bad in (
            [*lines[:i], tamper(lines[i]), *lines[i + 1 :]],  # altered
            lines[:i] + lines[i + 1 :],  # deleted
            [*lines[: i + 1], lines[i], *lines[i + 1 :]],  # duplicated
        ):
            serial = verify_lines(KEYS, UNIT.unit_id, START, bad)
            parallel = verifier.verify(KEYS, UNIT.unit_id, START, bad)
            same(parallel, serial, bad)
            if serial.error is None:  # a deleted last checkpoint: the tail is unsigned
                assert serial.end is not None and serial.end.checkpoint_seq != serial.end.seq
    assert verifier.worker_parts > before + len(lines)  # errors after the cut: the worker's


def test_a_killed_worker_falls_back_and_restarts(verifier: Verifier) -> None:
    lines = segment()
    pool = verifier._pool
    assert pool is not None
    for pid in list(pool._processes):  # type: ignore[union-attr]
        os.kill(pid, signal.SIGKILL)
    time.sleep(0.2)
    serial = verify_lines(KEYS, UNIT.unit_id, START, lines)
    same(verifier.verify(KEYS, UNIT.unit_id, START, lines), serial, lines)
    for _ in range(600):  # a later large segment starts a new worker, which is used again
        verifier.verify(KEYS, UNIT.unit_id, START, lines)
        if verifier._ready and verifier._pool is not pool:
            break
        time.sleep(0.05)
    assert verifier._pool is not pool and verifier._ready
    before = verifier.worker_parts
    same(verifier.verify(KEYS, UNIT.unit_id, START, lines), serial, lines)
    assert verifier.worker_parts == before + 1


def test_on_part_gets_each_passed_part_in_order(verifier: Verifier) -> None:
    lines = segment()
    serial = verify_lines(KEYS, UNIT.unit_id, START, lines)
    seen: list[tuple[list[tuple[object, ...]], int]] = []  # (rows, line count) per call

    def on_part(p: Part, ls: list[bytes]) -> None:
        seen.append((with_lines(p, ls), len(ls)))  # the part is only valid during the call

    parallel = verifier.verify(KEYS, UNIT.unit_id, START, lines, on_part=on_part)
    same(parallel, serial, lines)
    assert len(seen) == 2 and seen[0][1] + seen[1][1] == len(lines)
    rows = [r for part_rows, _ in seen for r in part_rows]
    assert rows == with_lines(serial, lines)
    # The worker takes the larger, later share (this process also stores the first part).
    assert seen[1][1] > seen[0][1]
    # An error in the worker's part: only the first part was handed over, and the result
    # carries the error for the caller to roll back.
    bad = [*lines[:-3], tamper(lines[-3]), *lines[-2:]]
    seen.clear()
    res = verifier.verify(KEYS, UNIT.unit_id, START, bad, on_part=on_part)
    assert res.error is not None and res.error[1] == len(lines) - 3
    assert len(seen) == 1 and seen[0][1] < len(lines) - 3
    # An error in the first part: nothing is handed over.
    seen.clear()
    bad = [tamper(lines[0]), *lines[1:]]
    res = verifier.verify(KEYS, UNIT.unit_id, START, bad, on_part=on_part)
    assert res.error is not None and res.error[1] == 0 and seen == []


def runs_segment() -> list[bytes]:
    """Runs of like events (verified in bulk) of every kind the review counts, with and
    without a batch, and lone events between them."""
    b = ChainBuilder(UNIT, clock())  # type: ignore[arg-type]
    out = []
    plan = [
        ("batch.started", "B-1", lambda i: {"coi": f"COI-{i}"}, 3),
        ("value.recorded", "B-1", lambda i: {"limit": ["ok", "high", "ok"][i % 3]}, 9),
        ("value.recorded", "B-1", lambda i: {"v": str(i)}, 4),
        ("deviation.raised", "B-1", lambda i: {"id": f"D{i}"}, 5),
        ("reading.recorded", None, lambda i: {"i": i}, 6),
        ("batch.completed", "B-1", lambda i: {"n": i}, 3),
        ("batch.started", "B-2", lambda i: {"coi": f"COI-2-{i}"}, 1),
        ("reading.recorded", "B-2", lambda i: {"i": i}, 12),
    ]
    for kind, batch, payload, count in plan:
        for i in range(count):
            out.append(encode_record(b.next_event(kind, payload(i), batch_id=batch))[:-1])
            if len(out) % 11 == 0:
                out.append(encode_record(b.checkpoint())[:-1])
    out.append(encode_record(b.checkpoint())[:-1])
    return out


def test_runs_give_the_rows_and_deltas_of_one_event_at_a_time() -> None:

    lines = runs_segment()
    got = verify_lines(KEYS, UNIT.unit_id, START, lines)
    v = ChainVerifier(Keyring([UNIT.public]), unit_id=UNIT.unit_id)
    rows, deltas = [], {}  # type: ignore[var-annotated]
    for i, line in enumerate(lines):
        r = v.feed_line(line)
        if r["type"] == "event":
            projections.tally(deltas, r)
            keys = ("seq", "hash", "batch_id", "kind", "recorded_at")
            rows.append((UNIT.unit_id, *(r[k] for k in keys), lines[i]))
    assert got.error is None
    assert with_lines(got, lines) == rows
    assert got.deltas == deltas
    assert deltas["B-1"].exceptions == 3 + 5 and deltas["B-1"].coi == "COI-2"
    assert got.end == Start(v.seq, v.head_hash, v.checkpoint_seq)


def bad_signature(line: bytes) -> bytes:
    k = line.index(b'"signature":"') + len(b'"signature":"') + 3
    return line[:k] + (b"B" if line[k : k + 1] == b"A" else b"A") + line[k + 1 :]


def test_a_bad_signature_and_a_malformed_line_keep_their_class(verifier: Verifier) -> None:
    """Whichever part they fall in, a forged checkpoint signature and a line that is not in
    canonical form come back as their own error classes, on their line of the whole segment,
    as serial verification gives them (so the server can answer them differently)."""
    lines = segment()
    cut = split_point(lines, 1 - verifier.worker_share)
    assert cut is not None
    at = cut[0]
    cps = [i for i, x in enumerate(lines) if b'"type":"checkpoint"' in x]
    evs = [i for i, x in enumerate(lines) if b'"type":"event"' in x]
    cases = [
        (SignatureError, min(cps), bad_signature),  # in this process's part
        (SignatureError, max(i for i in cps if i != at - 1), bad_signature),  # the worker's
        (MalformedRecordError, evs[2], lambda x: x.replace(b'{"actor"', b'{ "actor"')),
        (MalformedRecordError, evs[-2], lambda x: x.replace(b'{"actor"', b'{ "actor"')),
    ]
    before = verifier.worker_parts
    for cls, i, spoil in cases:
        bad = [*lines[:i], spoil(lines[i]), *lines[i + 1 :]]
        serial = verify_lines(KEYS, UNIT.unit_id, START, bad)
        parallel = verifier.verify(KEYS, UNIT.unit_id, START, bad)
        assert type(parallel.failure) is cls and parallel.failure.index == i, (cls, i)
        same(parallel, serial, bad)
        with pytest.raises(cls) as raised:
            parallel.finish()
        assert raised.value.index == i
    assert verifier.worker_parts == before + 2  # the errors after the cut came from the worker


def test_finish_is_the_verifiers_end_check(verifier: Verifier) -> None:
    lines = segment()
    for part in (
        verify_lines(KEYS, UNIT.unit_id, START, lines),
        verifier.verify(KEYS, UNIT.unit_id, START, lines),
    ):
        assert part.finish() == part.end and part.end is not None and part.end.seq == 60
    # Nothing new: the head it started from.
    head = verify_lines(KEYS, UNIT.unit_id, START, lines).end
    assert head is not None
    assert verify_lines(KEYS, UNIT.unit_id, head, []).finish() == head
    # The last checkpoint missing: the line after the last, with ChainVerifier.finish's text.
    unsigned = lines[:-1]
    v = ChainVerifier(Keyring([UNIT.public]), unit_id=UNIT.unit_id)
    v.check_lines(unsigned)
    with pytest.raises(UnsignedTailError) as want:
        v.finish()
    for part in (
        verify_lines(KEYS, UNIT.unit_id, START, unsigned),
        verifier.verify(KEYS, UNIT.unit_id, START, unsigned),
    ):
        with pytest.raises(UnsignedTailError) as got:
            part.finish()
        assert (got.value.index, str(got.value)) == (len(unsigned), str(want.value))
    # A seal line: refused on its line, typed as a malformed segment.
    b = ChainBuilder(UNIT, clock())  # type: ignore[arg-type]
    sealed = [encode_record(b.next_event("reading.recorded", {"i": 1}))[:-1]]
    sealed.append(encode_record(b.checkpoint())[:-1])
    sealed.append(encode_record(sign_seal(UNIT, 1, b.seq, b.head_hash))[:-1])
    part = verify_lines(KEYS, UNIT.unit_id, START, sealed)
    assert part.seal_at == 2
    with pytest.raises(MalformedRecordError, match="a segment carries no seal") as raised:
        part.finish()
    assert raised.value.index == 2


SEGMENTS = {every: b"\n".join(segment(40, every)) + b"\n" for every in (3, 5, 8)}


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(st.sampled_from(sorted(SEGMENTS)), st.data())
def test_two_parts_equal_one_whatever_single_byte_changed(
    verifier: Verifier, every: int, data: st.DataObject
) -> None:
    """The law behind the split, through the worker: for cuts after checkpoints placed every
    3, 5 or 8 events, and any one byte of the segment set to any value, the two-part result is
    the serial one (rows, deltas, head, or the first error with its class and line)."""
    whole = SEGMENTS[every]
    where = data.draw(st.integers(0, len(whole) - 1))
    value = data.draw(st.integers(0, 255))
    lines = (whole[:where] + bytes([value]) + whole[where + 1 :]).split(b"\n")[:-1]
    serial = verify_lines(KEYS, UNIT.unit_id, START, lines)
    same(verifier.verify(KEYS, UNIT.unit_id, START, lines), serial, lines)
