"""Hostile bytes: every parser of the log refuses garbage with its own error (never a foreign
exception), and any single changed byte of a signed checkpoint or a proof file is refused."""

from __future__ import annotations

import contextlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ebr_core.keys import UnitSigner
from ebr_core.tlog import (
    Checkpoint,
    Cosigner,
    Ed25519NoteSigner,
    MerkleTree,
    SignedNote,
    TileError,
    TlogError,
    TlogProof,
    add_signatures,
    leaf_hash,
    open_checkpoint,
    parse_tile_path,
    sign_checkpoint,
)
from ebr_core.tlog.entries import LogEntry
from ebr_core.tlog.tiles import parse_entry_bundle
from ebr_core.tlog.tlogproof import make_tlog_proof

LOG = Ed25519NoteSigner("log.example/ebr", UnitSigner.from_seed(bytes(range(32)), "log"))
W = Cosigner("witness.example/w1", UnitSigner.from_seed(bytes(range(1, 33)), "w"))
TREE = MerkleTree([leaf_hash(b"%d" % i) for i in range(300)])
NOTE = add_signatures(
    sign_checkpoint(Checkpoint("log.example/ebr", 300, TREE.root()), LOG),
    [W.cosign(sign_checkpoint(Checkpoint("log.example/ebr", 300, TREE.root()), LOG).text, 7)],
)
SIGNED = NOTE.to_bytes()
PROOF = make_tlog_proof(TREE, 123, NOTE).to_bytes()


@settings(max_examples=300)
@given(st.binary(max_size=400))
@example(b"\n\n\xe2\x80\x94 ")
@example("o\n1\nAAAA\n\n— a AAAAAAA=\n".encode())
def test_garbage_is_refused_by_each_parser_with_its_own_error(data: bytes) -> None:
    for parse in (
        SignedNote.parse,
        TlogProof.parse,
        LogEntry.parse,
        lambda d: open_checkpoint(d, LOG.verifier, [W.verifier]),
        lambda d: parse_entry_bundle(d, 3),
    ):
        with contextlib.suppress(TlogError):
            parse(data)
    with contextlib.suppress(TileError):
        parse_tile_path(data.decode("utf-8", "replace"))


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(SIGNED) - 1), st.integers(1, 255))
def test_any_changed_byte_of_a_signed_checkpoint_is_refused(at: int, delta: int) -> None:
    data = bytearray(SIGNED)
    data[at] = (data[at] + delta) % 256
    try:
        opened = open_checkpoint(bytes(data), LOG.verifier, [W.verifier])
    except TlogError:
        return
    # Only the witness's line may be damaged without refusing the log's checkpoint, and then
    # the cosignature no longer counts: the note is shown as unwitnessed.
    assert at >= SIGNED.index("— witness".encode())
    assert opened.checkpoint.root == TREE.root()
    assert not opened.witnessed(1)


@settings(max_examples=300, deadline=None)
@given(st.integers(0, len(PROOF) - 1), st.integers(1, 255))
def test_any_changed_byte_of_a_proof_file_is_refused_or_unwitnessed(at: int, delta: int) -> None:
    data = bytearray(PROOF)
    data[at] = (data[at] + delta) % 256
    try:
        opened = TlogProof.parse(bytes(data)).verify(b"123", LOG.verifier, [W.verifier])
    except TlogError:
        return
    assert at >= PROOF.index("— witness".encode())
    assert not opened.witnessed(1)


def test_the_unchanged_inputs_pass() -> None:
    assert open_checkpoint(SIGNED, LOG.verifier, [W.verifier]).witnessed(1)
    assert TlogProof.parse(PROOF).verify(b"123", LOG.verifier, [W.verifier]).witnessed(1)
    with pytest.raises(TlogError):
        TlogProof.parse(PROOF).verify(b"124", LOG.verifier)
