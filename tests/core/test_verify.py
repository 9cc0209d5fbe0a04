"""The one verifier: a valid ledger verifies; every kind of tampering is refused."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ebr_core.chain import ChainBuilder, sign_checkpoint, sign_seal
from ebr_core.errors import (
    ChainBrokenError,
    CheckpointError,
    EmptyLedgerError,
    HashMismatchError,
    MalformedRecordError,
    SequenceError,
    SignatureError,
    UnsignedTailError,
    VerificationError,
)
from ebr_core.keys import Keyring, PublicKey, UnitSigner
from ebr_core.ledgerfile import encode_record, verify_ledger_chunks
from ebr_core.record import GENESIS_HASH, Event
from ebr_core.verify import ChainVerifier, verify

from .conftest import ledger_bytes, make_ledger, step_clock

FAST = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@pytest.fixture(scope="module")
def data(signer: UnitSigner) -> bytes:
    return ledger_bytes(make_ledger(signer, 12, every=4))


def keyring(signer: UnitSigner) -> Keyring:
    return Keyring([signer.public])


def test_valid_ledger_verifies(signer: UnitSigner, data: bytes) -> None:
    v = verify_ledger_chunks([data], keyring(signer))
    assert (v.unit_id, v.event_count, v.first_seq, v.head_seq) == ("UNIT-A", 12, 1, 12)
    assert v.checkpoint_count == 3
    assert v.sealed
    assert v.key_ids == {signer.key_id}


@FAST
@given(st.data())
def test_any_flipped_byte_is_refused(signer: UnitSigner, data: bytes, d: st.DataObject) -> None:
    pos = d.draw(st.integers(0, len(data) - 1))
    xor = d.draw(st.integers(1, 255))
    bad = bytearray(data)
    bad[pos] ^= xor
    with pytest.raises(VerificationError):
        verify_ledger_chunks([bytes(bad)], keyring(signer))


def lines_of(data: bytes) -> list[bytes]:
    return [x + b"\n" for x in data.split(b"\n")[:-1]]


def test_every_deleted_line_is_refused(signer: UnitSigner, data: bytes) -> None:
    lines = lines_of(data)
    for i in range(len(lines)):
        with pytest.raises(VerificationError):
            verify_ledger_chunks([b"".join(lines[:i] + lines[i + 1 :])], keyring(signer))


def test_every_duplicated_line_is_refused(signer: UnitSigner, data: bytes) -> None:
    lines = lines_of(data)
    for i in range(len(lines)):
        with pytest.raises(VerificationError):
            verify_ledger_chunks([b"".join(lines[: i + 1] + lines[i:])], keyring(signer))


def test_every_swap_of_two_lines_is_refused(signer: UnitSigner, data: bytes) -> None:
    lines = lines_of(data)
    for i in range(len(lines)):
        for j in range(i + 1, len(lines)):
            swapped = list(lines)
            swapped[i], swapped[j] = swapped[j], swapped[i]
            with pytest.raises(VerificationError):
                verify_ledger_chunks([b"".join(swapped)], keyring(signer))


def test_every_truncation_is_refused(signer: UnitSigner, data: bytes) -> None:
    for n in range(len(data)):
        with pytest.raises(VerificationError):
            verify_ledger_chunks([data[:n]], keyring(signer))


def test_splice_from_a_fork_signed_by_the_genuine_key_is_refused(signer: UnitSigner) -> None:
    # Two histories of the same unit that share events 1..4 and then differ.
    a = make_ledger(signer, 10, every=2)
    b_builder = ChainBuilder(signer, step_clock(step_ms=11))
    b = []
    for i in range(10):
        b.append(b_builder.next_event("step.completed", {"i": i, "fork": True}, batch_id="B-1"))
        if (i + 1) % 2 == 0:
            b.append(b_builder.checkpoint())
    la, lb = lines_of(ledger_bytes(a)), lines_of(ledger_bytes(b))
    for cut in range(1, len(la) - 1):
        spliced = la[:cut] + lb[cut:]
        with pytest.raises(VerificationError):
            verify_ledger_chunks([b"".join(spliced)], keyring(signer))


def test_checkpoint_signed_by_another_key_is_refused(
    signer: UnitSigner, other_signer: UnitSigner
) -> None:
    recs = make_ledger(signer, 3, every=3, seal=False)
    ev = recs[-2]
    assert isinstance(ev, Event)
    forged = sign_checkpoint(other_signer, ev.seq, 0, ev.hash)
    lines = b"".join(encode_record(r) for r in [*recs[:-1], forged])
    with pytest.raises(SignatureError) as e:
        verify_ledger_chunks([lines], keyring(signer))
    assert e.value.index == 3
    assert "not trusted for unit 'UNIT-A'" in e.value.reason


def test_missing_final_checkpoint_is_refused(signer: UnitSigner) -> None:
    b = ChainBuilder(signer, step_clock())
    recs = [b.next_event("step.completed", {}), b.checkpoint(), b.next_event("step.completed", {})]
    with pytest.raises(UnsignedTailError) as e:
        verify([orjson.loads(encode_record(r)) for r in recs], keyring(signer))
    assert e.value.seq == 2
    assert "events 2..2 are not covered by a checkpoint" in str(e.value)


def test_missing_seal_is_refused_for_a_file(signer: UnitSigner) -> None:
    data = ledger_bytes(make_ledger(signer, 4, every=2, seal=False))
    with pytest.raises(UnsignedTailError, match="no seal record"):
        verify_ledger_chunks([data], keyring(signer))


def test_first_bad_event_is_named(signer: UnitSigner, data: bytes) -> None:
    lines = lines_of(data)
    rec = orjson.loads(lines[5])
    assert rec["type"] == "event"
    rec["payload"]["i"] = 999
    lines[5] = orjson.dumps(rec, option=orjson.OPT_SORT_KEYS) + b"\n"
    with pytest.raises(HashMismatchError) as e:
        verify_ledger_chunks([b"".join(lines)], keyring(signer))
    assert (e.value.index, e.value.seq) == (5, rec["seq"])
    assert str(e.value).startswith(f"record 6, seq {rec['seq']}: content does not match its hash")


def test_non_canonical_line_is_refused_even_if_equivalent(signer: UnitSigner, data: bytes) -> None:
    lines = lines_of(data)
    lines[0] = (
        orjson.dumps(orjson.loads(lines[0]), option=orjson.OPT_INDENT_2).replace(b"\n", b"") + b"\n"
    )
    with pytest.raises(MalformedRecordError, match="not in canonical form"):
        verify_ledger_chunks([b"".join(lines)], keyring(signer))


@FAST
@given(st.lists(st.integers(1, 400), max_size=30))
def test_result_does_not_depend_on_chunking(
    signer: UnitSigner, data: bytes, sizes: list[int]
) -> None:
    chunks, pos = [], 0
    for n in sizes:
        chunks.append(data[pos : pos + n])
        pos += n
    chunks.append(data[pos:])
    assert verify_ledger_chunks(chunks, keyring(signer)) == verify_ledger_chunks(
        [data], keyring(signer)
    )


def test_continuing_from_a_stored_head(signer: UnitSigner) -> None:
    recs = make_ledger(signer, 9, every=3, seal=False)
    dicts = [orjson.loads(encode_record(r)) for r in recs]
    first = verify(dicts[:4], keyring(signer))  # events 1..3 + checkpoint
    rest = verify(
        dicts[4:],
        keyring(signer),
        unit_id="UNIT-A",
        start_seq=first.head_seq,
        start_hash=first.head_hash,
        start_checkpoint_seq=3,
    )
    assert (rest.first_seq, rest.head_seq, rest.event_count) == (4, 9, 6)
    with pytest.raises(ChainBrokenError):
        verify(
            dicts[4:], keyring(signer), start_seq=3, start_hash=GENESIS_HASH, start_checkpoint_seq=3
        )
    with pytest.raises(SequenceError, match="seq is 4, expected 1"):
        verify(dicts[4:], keyring(signer))


def test_checkpoint_must_match_head_and_chain(signer: UnitSigner) -> None:
    b = ChainBuilder(signer, step_clock())
    e1 = b.next_event("step.completed", {})
    e2 = b.next_event("step.completed", {})
    stale = sign_checkpoint(signer, e1.seq, 0, e1.hash)
    with pytest.raises(CheckpointError, match="claims head seq 1"):
        verify([orjson.loads(encode_record(r)) for r in (e1, e2, stale)], keyring(signer))
    skip = sign_checkpoint(signer, e2.seq, 1, e2.hash)  # claims a checkpoint at 1 that is absent
    with pytest.raises(CheckpointError, match="links to previous checkpoint seq 1, expected 0"):
        verify([orjson.loads(encode_record(r)) for r in (e1, e2, skip)], keyring(signer))


def test_a_key_bound_to_another_unit_is_refused() -> None:
    unit_b = UnitSigner.from_seed(bytes(32), "UNIT-B")
    data = ledger_bytes(make_ledger(unit_b, 2, every=2))
    # The same key material, but the keyring trusts it for UNIT-A only.
    with pytest.raises(SignatureError, match="not trusted for unit 'UNIT-B'"):
        verify_ledger_chunks([data], Keyring([PublicKey(unit_b.public.raw, "UNIT-A")]))
    assert verify_ledger_chunks([data], Keyring([unit_b.public])).unit_id == "UNIT-B"


def test_empty_and_garbage_inputs() -> None:
    with pytest.raises(EmptyLedgerError):
        verify_ledger_chunks([b""], Keyring())
    with pytest.raises(MalformedRecordError, match="blank line"):
        verify_ledger_chunks([b"\n"], Keyring())
    with pytest.raises(MalformedRecordError, match="not valid JSON"):
        verify_ledger_chunks([b"{nope\n"], Keyring())
    with pytest.raises(MalformedRecordError, match="type 'x' is not one of"):
        verify_ledger_chunks([b'{"type":"x"}\n'], Keyring())
    with pytest.raises(MalformedRecordError, match="expected a JSON object, got list"):
        ChainVerifier(Keyring()).feed([1])


def test_record_after_seal_is_refused(signer: UnitSigner, data: bytes) -> None:
    extra = encode_record(sign_seal(signer, 1, 12, orjson.loads(lines_of(data)[-1])["head_hash"]))
    with pytest.raises(MalformedRecordError, match="record after the seal"):
        verify_ledger_chunks([data + extra], keyring(signer))
