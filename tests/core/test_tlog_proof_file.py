"""tlog-proof files (c2sp.org/tlog-proof@v1): built from a log, verified offline, refused when
anything in them is wrong."""

from __future__ import annotations

import pytest

from ebr_core.keys import UnitSigner
from ebr_core.tlog import (
    Checkpoint,
    Cosigner,
    Ed25519NoteSigner,
    MerkleTree,
    NoteFormatError,
    NoteSignatureError,
    ProofError,
    add_signatures,
    leaf_hash,
    sign_checkpoint,
)
from ebr_core.tlog.tlogproof import TlogProof, make_tlog_proof

ENTRIES = [b"qa disposition %d" % i for i in range(1000)]


@pytest.fixture()
def setup() -> tuple[MerkleTree, Ed25519NoteSigner, Cosigner, bytes]:
    tree = MerkleTree([leaf_hash(e) for e in ENTRIES])
    log = Ed25519NoteSigner("log.example/ebr", UnitSigner.from_seed(bytes(range(32)), "log"))
    w = Cosigner("witness.example/w1", UnitSigner.from_seed(bytes(range(1, 33)), "w"))
    note = sign_checkpoint(Checkpoint("log.example/ebr", 1000, tree.root()), log)
    note = add_signatures(note, [w.cosign(note.text, 1_790_000_000)])
    data = make_tlog_proof(tree, 417, note, extra=b"unit UNIT-A seq 1-500").to_bytes()
    return tree, log, w, data


def test_round_trip_and_offline_verification(setup: tuple[MerkleTree, Ed25519NoteSigner, Cosigner, bytes]) -> None:
    _, log, w, data = setup
    text = data.decode()
    assert text.startswith("c2sp.org/tlog-proof@v1\nextra ")
    assert "\nindex 417\n" in text
    p = TlogProof.parse(data)
    assert p.to_bytes() == data
    assert p.extra == b"unit UNIT-A seq 1-500"
    opened = p.verify(ENTRIES[417], log.verifier, [w.verifier])
    assert opened.witnessed(1)
    assert not p.verify(ENTRIES[417], log.verifier).witnessed(1)  # shown as unwitnessed


def test_wrong_entries_and_wrong_keys_are_refused(setup: tuple[MerkleTree, Ed25519NoteSigner, Cosigner, bytes]) -> None:
    _, log, _, data = setup
    p = TlogProof.parse(data)
    with pytest.raises(ProofError, match="inclusion proof for leaf 417 leads to root"):
        p.verify(ENTRIES[418], log.verifier)
    with pytest.raises(ProofError):
        TlogProof(418, p.proof, p.checkpoint).verify(ENTRIES[417], log.verifier)
    other = Ed25519NoteSigner("log.example/ebr", UnitSigner.from_seed(bytes(32), "x"))
    with pytest.raises(NoteSignatureError, match="no signature by a known key"):
        p.verify(ENTRIES[417], other.verifier)


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda t: t.replace("c2sp.org/tlog-proof@v1", "tlog-proof@v2"), "expected 'c2sp.org/tlog-proof@v1'"),
        (lambda t: t.replace("index 417", "index 0417"), "'0417' is not a decimal number"),
        (lambda t: t.replace("index 417", "idx 417"), "no 'index <n>' line"),
        (lambda t: t.replace("\n\n", "\n", 1), "hash 11 is not valid standard base64: 'log.example/ebr'"),
        (lambda t: t.replace("\n\n", "\n"), "no blank line before its checkpoint"),
        (lambda t: t.replace("extra ", "extra !"), "extra data is not valid standard base64"),
        (lambda t: t.replace("index 417\n", "index 417\nAAAA\n"), "hash 1 is 3 bytes, expected 32"),
    ],
)
def test_malformed_proof_files(setup: tuple[MerkleTree, Ed25519NoteSigner, Cosigner, bytes], edit: object, message: str) -> None:
    data = setup[3].decode()
    assert callable(edit)
    with pytest.raises(NoteFormatError, match=message):
        TlogProof.parse(edit(data).encode())
