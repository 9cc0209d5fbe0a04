"""Verifying in two parts cut after a checkpoint (``ChainVerifier.split_at_checkpoint``, the
server's parallel ingest) is verifying in one: the same first error (class, reason, line, seq)
or the same end, for any cut and whatever single byte of the input was changed."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebr_core.errors import (
    MalformedRecordError,
    SignatureError,
    UnsignedTailError,
    VerificationError,
)
from ebr_core.keys import Keyring, UnitSigner
from ebr_core.ledgerfile import encode_record
from ebr_core.verify import GENESIS, ChainHead, ChainVerifier, check_signed_head

from .conftest import make_ledger

SIGNER = UnitSigner.from_seed(bytes(range(9, 41)), "UNIT-S")
KEYS = Keyring([SIGNER.public])
# 24 events, a checkpoint every 4 (7 checkpoints), and the seal.
DATA = b"".join(encode_record(r) for r in make_ledger(SIGNER, 24, every=4))
LINES = DATA.split(b"\n")[:-1]


def outcome(v: ChainVerifier, lines: list[bytes], offset: int = 0) -> tuple[Any, ...]:
    """What verifying ``lines`` with ``v`` gives: the error, placed in the whole input, or the
    end state and the verdict of the end check."""
    try:
        v.check_lines(lines)
    except VerificationError as e:
        return error(e.shifted(offset))
    try:
        end = v.finish(require_seal=True)
    except VerificationError as e:
        return ("end", v.head, error(e.shifted(offset)))
    return ("end", v.head, end.sealed)


def error(e: VerificationError) -> tuple[Any, ...]:
    return (type(e).__name__, e.reason, e.index, e.seq, str(e))


def serial(lines: list[bytes]) -> tuple[Any, ...]:
    return outcome(ChainVerifier(KEYS, unit_id=SIGNER.unit_id), lines)


def in_two(lines: list[bytes], at: float) -> tuple[Any, ...] | None:
    """As the server does it: the first part from the start, the second from the checkpoint's
    claimed state; the first part's error first.  None if there is no cut."""
    cut = ChainVerifier.split_at_checkpoint(lines, at)
    if cut is None:
        return None
    i, mid = cut
    first = ChainVerifier(KEYS, unit_id=SIGNER.unit_id)
    try:
        first.check_lines(lines[:i])
    except VerificationError as e:
        return error(e)
    assert first.head == mid  # the checkpoint's claim held: it was verified
    second = ChainVerifier(
        KEYS,
        unit_id=SIGNER.unit_id,
        start_seq=mid.seq,
        start_hash=mid.head_hash,
        start_checkpoint_seq=mid.checkpoint_seq,
        first_seq=first.first_seq,  # what a seal must cover: the whole input
    )
    return outcome(second, lines[i:], offset=i)


def test_the_cut_is_just_after_the_checkpoint_nearest_the_fraction() -> None:
    checkpoints = [i for i, x in enumerate(LINES) if b'"type":"checkpoint"' in x]
    for at in (0.0, 0.2, 0.5, 0.8, 1.0):
        cut = ChainVerifier.split_at_checkpoint(LINES, at)
        assert cut is not None
        i, mid = cut
        want = min(checkpoints, key=lambda c: abs(c - int(len(LINES) * at)))
        assert i == want + 1
        v = ChainVerifier(KEYS)
        v.check_lines(LINES[:i])
        assert mid == v.head and mid.checkpoint_seq == mid.seq
    assert in_two(LINES, 0.5) == serial(LINES) == ("end", ChainHead(24, mid.head_hash, 24), True)


@pytest.mark.parametrize(
    "lines",
    [[], LINES[:1], LINES[:2], [x for x in LINES if b'"type":"checkpoint"' not in x]],
)
def test_no_cut_without_a_checkpoint_inside(lines: list[bytes]) -> None:
    assert ChainVerifier.split_at_checkpoint(lines) is None


def test_an_odd_line_that_looks_like_a_checkpoint_is_no_cut() -> None:
    odd = b'{"head_hash":"x","seq":"4","type":"checkpoint"}'
    assert ChainVerifier.split_at_checkpoint([LINES[0], odd, LINES[1]]) is None
    assert ChainVerifier.split_at_checkpoint([LINES[0], odd[:-1], LINES[1]]) is None


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.floats(0, 1), st.integers(0, len(DATA) - 1), st.integers(0, 255))
def test_two_parts_give_the_serial_verdict_whatever_byte_changed(
    at: float, where: int, value: int
) -> None:
    data = DATA[:where] + bytes([value]) + DATA[where + 1 :]
    lines = data.split(b"\n")[:-1]
    got = in_two(lines, at)
    if got is not None:
        assert got == serial(lines)


@settings(max_examples=50, deadline=None)
@given(st.floats(0, 1))
def test_two_parts_give_the_serial_verdict_for_an_intact_ledger(at: float) -> None:
    assert in_two(LINES, at) == serial(LINES)


def test_a_bad_signature_and_a_malformed_line_keep_their_class_in_either_part() -> None:
    cps = [i for i, x in enumerate(LINES) if b'"type":"checkpoint"' in x]
    evs = [i for i, x in enumerate(LINES) if b'"type":"event"' in x]
    for bad_at in (cps[0], cps[-1]):  # in the first part, in the second
        sig = bytearray(LINES[bad_at])
        k = sig.index(b'"signature":"') + len(b'"signature":"') + 5
        sig[k] = ord("A") if sig[k] != ord("A") else ord("B")
        lines = [*LINES[:bad_at], bytes(sig), *LINES[bad_at + 1 :]]
        want = serial(lines)
        assert want[0] == SignatureError.__name__ and want[2] == bad_at
        assert in_two(lines, 0.5) == want
    for bad_at in (evs[3], evs[-3]):
        lines = [
            *LINES[:bad_at],
            LINES[bad_at].replace(b'{"actor"', b'{ "actor"'),
            *LINES[bad_at + 1 :],
        ]
        want = serial(lines)
        assert want[0] == MalformedRecordError.__name__ and want[2] == bad_at
        assert in_two(lines, 0.5) == want


def test_the_end_check_names_the_unsigned_tail() -> None:
    check_signed_head(GENESIS, index=0)
    check_signed_head(ChainHead(7, "ab" * 32, 7), index=3)
    with pytest.raises(UnsignedTailError, match=r"record 4, seq 6: events 6\.\.7 are not covered"):
        check_signed_head(ChainHead(7, "ab" * 32, 5), index=3)


def test_a_shifted_error_keeps_its_class_reason_and_seq() -> None:
    e = SignatureError("checkpoint signature is invalid", seq=8, index=2)
    moved = e.shifted(10)
    assert type(moved) is SignatureError
    assert (moved.reason, moved.seq, moved.index) == (e.reason, 8, 12)
    assert str(moved) == "record 13, seq 8: checkpoint signature is invalid"
    assert VerificationError("no place").shifted(3).index is None
