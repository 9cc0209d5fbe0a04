"""The RFC 9162 tree against published vectors: Certificate Transparency's reference tree
(via transparency-dev/merkle) and transparency-dev/merkle's proof-verification probes.

Sources and licence: tests/fixtures/tlog/README.md.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest

from ebr_core.tlog import (
    EMPTY_ROOT,
    Frontier,
    LeafHashes,
    MerkleTree,
    ProofError,
    TreeError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root_hash,
    verify_consistency,
    verify_inclusion,
)
from ebr_core.tlog.merkle import consistency_proof_length, inclusion_proof_length

FIX = Path(__file__).resolve().parents[1] / "fixtures" / "tlog"
REF = json.loads((FIX / "rfc6962_reference.json").read_text())
LEAVES = [bytes.fromhex(x) for x in REF["leaves_hex"]]
ROOTS = [bytes.fromhex(x) for x in REF["roots_hex"]]


def b64(x: str | None) -> bytes:
    return base64.b64decode(x or "")


def probes(kind: str) -> list[tuple[str, dict[str, Any]]]:
    root = FIX / "transparency-dev-merkle" / kind
    return [(str(p.relative_to(root)), json.loads(p.read_text())) for p in sorted(root.rglob("*.json"))]


class Leaves:
    """A store that keeps leaf hashes only, as a database table would."""

    def __init__(self, hashes: list[bytes]) -> None:
        self.hashes = hashes

    def size(self) -> int:
        return len(self.hashes)

    def leaf_hash(self, index: int) -> bytes:
        return self.hashes[index]


def test_hashes_are_rfc_9162() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    for got, want in zip([leaf_hash(x) for x in LEAVES], REF["node_hashes_hex"][0], strict=True):
        assert got.hex() == want
    level1 = REF["node_hashes_hex"][1]
    assert node_hash(leaf_hash(LEAVES[0]), leaf_hash(LEAVES[1])).hex() == level1[0]


def test_roots_of_every_size_from_each_way_of_building() -> None:
    one_by_one = MerkleTree()
    frontier = Frontier()
    for i, leaf in enumerate(LEAVES):
        one_by_one.append(leaf_hash(leaf))
        frontier.append(leaf_hash(leaf))
        assert one_by_one.root() == ROOTS[i + 1]
        assert frontier.root() == ROOTS[i + 1]
    grouped = MerkleTree()
    grouped.append_many([leaf_hash(x) for x in LEAVES[:3]])
    grouped.append_many([leaf_hash(x) for x in LEAVES[3:]])
    leaves_only = LeafHashes(Leaves([leaf_hash(x) for x in LEAVES]))
    for n in range(9):
        assert grouped.root(n) == ROOTS[n]
        assert root_hash(leaves_only, n) == ROOTS[n]
    assert Frontier().root() == EMPTY_ROOT


def test_every_stored_interior_node_is_the_reference() -> None:
    t = MerkleTree([leaf_hash(x) for x in LEAVES])
    for level, row in enumerate(REF["node_hashes_hex"]):
        for index, want in enumerate(row):
            assert t.node_hash(level, index).hex() == want


@pytest.mark.parametrize("p", REF["inclusion_proofs"], ids=lambda p: f"{p['leaf_index']}@{p['tree_size']}")
def test_inclusion_proofs_are_the_reference(p: dict[str, Any]) -> None:
    for store in (MerkleTree([leaf_hash(x) for x in LEAVES]), LeafHashes(Leaves([leaf_hash(x) for x in LEAVES]))):
        proof = inclusion_proof(store, p["leaf_index"], p["tree_size"])
        assert [h.hex() for h in proof] == p["proof_hex"]
        assert inclusion_proof_length(p["leaf_index"], p["tree_size"]) == len(proof)
    verify_inclusion(p["leaf_index"], p["tree_size"], leaf_hash(LEAVES[p["leaf_index"]]), proof, ROOTS[p["tree_size"]])


@pytest.mark.parametrize("p", REF["consistency_proofs"], ids=lambda p: f"{p['old_size']}-{p['new_size']}")
def test_consistency_proofs_are_the_reference(p: dict[str, Any]) -> None:
    t = MerkleTree([leaf_hash(x) for x in LEAVES])
    proof = consistency_proof(t, p["old_size"], p["new_size"])
    assert [h.hex() for h in proof] == p["proof_hex"]
    assert consistency_proof_length(p["old_size"], p["new_size"]) == len(proof)
    verify_consistency(p["old_size"], p["new_size"], ROOTS[p["old_size"]], ROOTS[p["new_size"]], proof)


# Where this verifier is stricter than transparency-dev/merkle: a root that is not a 32-byte
# SHA-256 hash is refused even when the sizes are equal and the two roots are the same bytes.
STRICTER = {"additional/sizes-are-equal-one-and-proof-is-empty.json"}


@pytest.mark.parametrize(("name", "p"), probes("inclusion"), ids=lambda x: x if isinstance(x, str) else "")
def test_transparency_dev_inclusion_probes(name: str, p: dict[str, Any]) -> None:
    proof = [b64(x) for x in p["proof"] or []]
    args = (p["leafIdx"], p["treeSize"], b64(p["leafHash"]), proof, b64(p["root"]))
    if p["wantErr"]:
        with pytest.raises(ProofError):
            verify_inclusion(*args)
    else:
        verify_inclusion(*args)


@pytest.mark.parametrize(("name", "p"), probes("consistency"), ids=lambda x: x if isinstance(x, str) else "")
def test_transparency_dev_consistency_probes(name: str, p: dict[str, Any]) -> None:
    proof = [b64(x) for x in p["proof"] or []]
    args = (p["size1"], p["size2"], b64(p["root1"]), b64(p["root2"]), proof)
    if p["wantErr"] or name in STRICTER:
        with pytest.raises(ProofError):
            verify_consistency(*args)
    else:
        verify_consistency(*args)


def test_the_probes_are_all_there() -> None:
    # A fixture directory emptied by accident must not pass as "no failures".
    assert len(probes("inclusion")) == 98
    assert len(probes("consistency")) == 98


def test_refusals_name_what_was_wrong() -> None:
    t = MerkleTree([leaf_hash(x) for x in LEAVES])
    proof = inclusion_proof(t, 2, 5)
    with pytest.raises(ProofError, match="leaf index 5 is not below the tree size 5"):
        verify_inclusion(5, 5, leaf_hash(LEAVES[2]), proof, ROOTS[5])
    with pytest.raises(ProofError, match="too short: 2 hashes"):
        verify_inclusion(2, 5, leaf_hash(LEAVES[2]), proof[:2], ROOTS[5])
    with pytest.raises(ProofError, match="too long: 4 hashes"):
        verify_inclusion(2, 5, leaf_hash(LEAVES[2]), [*proof, ROOTS[1]], ROOTS[5])
    with pytest.raises(ProofError, match="element 1 is 31 bytes, expected 32"):
        verify_inclusion(2, 5, leaf_hash(LEAVES[2]), [proof[0], proof[1][:31], proof[2]], ROOTS[5])
    with pytest.raises(ProofError, match=f"leads to root .* not the tree head's {ROOTS[4].hex()}"):
        verify_inclusion(2, 5, leaf_hash(LEAVES[2]), proof, ROOTS[4])
    with pytest.raises(ProofError, match="two different roots for size 3"):
        verify_consistency(3, 3, ROOTS[3], ROOTS[2], [])
    with pytest.raises(ProofError, match="old size 4 is larger than the new size 3"):
        verify_consistency(4, 3, ROOTS[4], ROOTS[3], [])
    with pytest.raises(ProofError, match="from the empty tree"):
        verify_consistency(0, 3, EMPTY_ROOT, ROOTS[3], [])
    cp = consistency_proof(t, 3, 7)
    with pytest.raises(ProofError, match="does not lead to the old root"):
        verify_consistency(3, 7, ROOTS[2], ROOTS[7], cp)
    with pytest.raises(ProofError, match="does not lead to the new root"):
        verify_consistency(3, 7, ROOTS[3], ROOTS[6], cp)


def test_stores_refuse_what_they_do_not_hold() -> None:
    t = MerkleTree([leaf_hash(x) for x in LEAVES[:5]])
    with pytest.raises(TreeError, match="past the tree's size 5"):
        t.node_hash(2, 1)
    with pytest.raises(TreeError, match="leaf index 5 is not in a tree of size 5"):
        inclusion_proof(t, 5, 5)
    with pytest.raises(TreeError, match="past the store's size 5"):
        consistency_proof(t, 2, 6)
    with pytest.raises(TreeError, match="a leaf hash is 32 bytes, got 3"):
        t.append(b"abc")
    with pytest.raises(TreeError, match="a leaf hash is 32 bytes, got 0"):
        t.append_many([leaf_hash(b"x"), b""])
    assert t.size() == 5  # a refused group adds nothing
    with pytest.raises(TreeError, match="3 peaks, got 1"):
        Frontier(7, [ROOTS[1]])


def test_frontier_reports_the_nodes_it_completes() -> None:
    f = Frontier()
    made: list[tuple[int, int, bytes]] = []
    for leaf in LEAVES:
        made += f.append(leaf_hash(leaf))
    stored = {(lvl, i): h.hex() for lvl, i, h in made}
    want = {(lvl, i): h for lvl, row in enumerate(REF["node_hashes_hex"]) for i, h in enumerate(row)}
    assert stored == want
    # A frontier taken from a stored tree continues where the tree stopped.
    t = MerkleTree([leaf_hash(x) for x in LEAVES[:5]])
    g = t.frontier()
    for leaf in LEAVES[5:]:
        g.append(leaf_hash(leaf))
    assert g.root() == ROOTS[8]
