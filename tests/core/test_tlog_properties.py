"""The laws of the log (issue 24): proofs verify for every size pair (every pair up to 64,
sampled up to 4,096), and any single-bit change in a proof, a leaf or a root is refused."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebr_core.tlog import (
    Frontier,
    LeafHashes,
    MerkleTree,
    ProofError,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    verify_consistency,
    verify_inclusion,
)
from ebr_core.tlog.merkle import consistency_proof_length, inclusion_proof_length

BIG = 4096
SMALL = 64
LEAVES = [leaf_hash(i.to_bytes(4, "big")) for i in range(BIG)]
TREE = MerkleTree(LEAVES)
ROOTS = [TREE.root(n) for n in range(BIG + 1)]


class Leaves:
    def __init__(self, hashes: list[bytes]) -> None:
        self.hashes = hashes

    def size(self) -> int:
        return len(self.hashes)

    def leaf_hash(self, index: int) -> bytes:
        return self.hashes[index]


def flip(b: bytes, bit: int) -> bytes:
    out = bytearray(b)
    out[bit // 8] ^= 1 << (bit % 8)
    return bytes(out)


def test_every_pair_up_to_64_verifies_from_every_kind_of_store() -> None:
    leaves_only = LeafHashes(Leaves(LEAVES[:SMALL]))
    frontier = Frontier()
    for n in range(1, SMALL + 1):
        frontier.append(LEAVES[n - 1])
        assert frontier.root() == ROOTS[n]
        for i in range(n):
            proof = inclusion_proof(TREE, i, n)
            assert proof == inclusion_proof(leaves_only, i, n)
            assert len(proof) == inclusion_proof_length(i, n)
            verify_inclusion(i, n, LEAVES[i], proof, ROOTS[n])
        for m in range(1, n + 1):
            proof = consistency_proof(TREE, m, n)
            assert proof == consistency_proof(leaves_only, m, n)
            assert len(proof) == consistency_proof_length(m, n)
            verify_consistency(m, n, ROOTS[m], ROOTS[n], proof)


def test_groups_of_any_size_build_the_same_tree() -> None:
    t = MerkleTree()
    sizes = [1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 233, 377, 610, 987]
    sizes.append(BIG - 1 - sum(sizes))
    at = 0
    for k in sizes:
        t.append_many(LEAVES[at : at + k])
        at += k
        assert t.root() == ROOTS[at]
    assert at == BIG - 1
    t.append(LEAVES[-1])
    assert t.root() == ROOTS[BIG]
    for level in range(13):
        for index in (0, (BIG >> level) - 1):
            assert t.node_hash(level, index) == TREE.node_hash(level, index)


sizes = st.integers(1, BIG)


@st.composite
def leaf_in_tree(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(sizes)
    return draw(st.integers(0, n - 1)), n


@st.composite
def size_pair(draw: st.DrawFn) -> tuple[int, int]:
    n = draw(sizes)
    return draw(st.integers(1, n)), n


@settings(max_examples=300, deadline=None)
@given(leaf_in_tree())
def test_inclusion_proofs_verify_for_sampled_sizes(p: tuple[int, int]) -> None:
    i, n = p
    verify_inclusion(i, n, LEAVES[i], inclusion_proof(TREE, i, n), ROOTS[n])


@settings(max_examples=300, deadline=None)
@given(size_pair())
def test_consistency_proofs_verify_for_sampled_sizes(p: tuple[int, int]) -> None:
    m, n = p
    verify_consistency(m, n, ROOTS[m], ROOTS[n], consistency_proof(TREE, m, n))


@settings(max_examples=300, deadline=None)
@given(leaf_in_tree(), st.data())
def test_any_flipped_bit_in_an_inclusion_proof_leaf_or_root_is_refused(
    p: tuple[int, int], data: st.DataObject
) -> None:
    i, n = p
    proof = inclusion_proof(TREE, i, n)
    leaf, root = LEAVES[i], ROOTS[n]
    where = data.draw(st.sampled_from(["leaf", "root", *(["proof"] if proof else [])]))
    bit = data.draw(st.integers(0, 255))
    if where == "leaf":
        leaf = flip(leaf, bit)
    elif where == "root":
        root = flip(root, bit)
    else:
        k = data.draw(st.integers(0, len(proof) - 1))
        proof[k] = flip(proof[k], bit)
    with pytest.raises(ProofError):
        verify_inclusion(i, n, leaf, proof, root)


@settings(max_examples=300, deadline=None)
@given(size_pair(), st.data())
def test_any_flipped_bit_in_a_consistency_proof_or_either_root_is_refused(
    p: tuple[int, int], data: st.DataObject
) -> None:
    m, n = p
    proof = consistency_proof(TREE, m, n)
    old, new = ROOTS[m], ROOTS[n]
    where = data.draw(st.sampled_from(["old", "new", *(["proof"] if proof else [])]))
    bit = data.draw(st.integers(0, 255))
    if where == "old":
        old = flip(old, bit)
    elif where == "new":
        new = flip(new, bit)
    else:
        k = data.draw(st.integers(0, len(proof) - 1))
        proof[k] = flip(proof[k], bit)
    with pytest.raises(ProofError):
        verify_consistency(m, n, old, new, proof)


@settings(max_examples=200, deadline=None)
@given(size_pair())
def test_a_proof_for_other_sizes_is_refused(p: tuple[int, int]) -> None:
    m, n = p
    proof = consistency_proof(TREE, m, n)
    if n < BIG:
        with pytest.raises(ProofError):
            verify_consistency(m, n + 1, ROOTS[m], ROOTS[n + 1], proof)
    if m > 1:
        with pytest.raises(ProofError):
            verify_consistency(m - 1, n, ROOTS[m - 1], ROOTS[n], proof)
