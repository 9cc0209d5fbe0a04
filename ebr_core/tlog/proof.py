"""Verifying RFC 9162 inclusion and consistency proofs: pure functions over hashes.

Owns the two verification algorithms exactly as RFC 9162 §2.1.3.2 and §2.1.4.2 write them
(with the edge cases transparency-dev/merkle's test data pins down: sizes 0 and equal sizes).
Each raises :class:`~ebr_core.tlog.errors.ProofError` naming what did not hold, and returns
nothing: a caller cannot forget to look at a boolean.  Generation is in
:mod:`ebr_core.tlog.merkle`.
"""

from __future__ import annotations

from collections.abc import Sequence

from ebr_core.tlog.errors import ProofError
from ebr_core.tlog.merkle import HASH_SIZE, node_hash


def _check_hashes(proof: Sequence[bytes], what: str) -> None:
    for i, p in enumerate(proof):
        if len(p) != HASH_SIZE:
            raise ProofError(f"{what} proof element {i} is {len(p)} bytes, expected {HASH_SIZE}")


def root_from_inclusion_proof(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes]
) -> bytes:
    """The root an inclusion proof leads to (RFC 9162 §2.1.3.2 steps 1-4)."""
    if size < 0 or index < 0:
        raise ProofError(f"leaf index {index} and tree size {size} must be >= 0")
    if index >= size:
        raise ProofError(f"leaf index {index} is not below the tree size {size}")
    if len(leaf_hash) != HASH_SIZE:
        raise ProofError(f"the leaf hash is {len(leaf_hash)} bytes, expected {HASH_SIZE}")
    _check_hashes(proof, "inclusion")
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise ProofError(
                f"inclusion proof for leaf {index} in size {size} is too long: {len(proof)} hashes"
            )
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(
            f"inclusion proof for leaf {index} in size {size} is too short: {len(proof)} hashes"
        )
    return r


def verify_inclusion(
    index: int, size: int, leaf_hash: bytes, proof: Sequence[bytes], root: bytes
) -> None:
    """Raise :class:`ProofError` unless ``proof`` shows leaf ``index`` in the tree ``root``."""
    got = root_from_inclusion_proof(index, size, leaf_hash, proof)
    if got != root:
        raise ProofError(
            f"inclusion proof for leaf {index} leads to root {got.hex()}, "
            f"not the tree head's {root.hex()} (size {size})"
        )


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Raise :class:`ProofError` unless the tree ``new_root`` extends the tree ``old_root``."""
    if old_size < 0 or new_size < 0:
        raise ProofError(f"tree sizes {old_size} and {new_size} must be >= 0")
    if old_size > new_size:
        raise ProofError(f"old size {old_size} is larger than the new size {new_size}")
    for what, h in (("old", old_root), ("new", new_root)):
        if len(h) != HASH_SIZE:
            raise ProofError(f"the {what} root is {len(h)} bytes, expected {HASH_SIZE}")
    _check_hashes(proof, "consistency")
    if old_size == new_size and old_size > 0:
        if proof:
            raise ProofError(
                f"consistency proof between equal sizes {old_size} must be empty, "
                f"has {len(proof)} hashes"
            )
        if old_root != new_root:
            raise ProofError(
                f"two different roots for size {old_size}: {old_root.hex()} and {new_root.hex()}"
            )
        return
    if old_size == 0:
        # Every tree extends the empty one: a proof of it proves nothing, so none is accepted
        # (as transparency-dev/merkle decides); a client with no tree head yet has no old root.
        raise ProofError(
            "a consistency proof from the empty tree (size 0) proves nothing; "
            "start from a tree head with at least one entry"
        )
    # RFC 9162 §2.1.4.2.
    if not proof:
        raise ProofError(f"consistency proof from size {old_size} to {new_size} is empty")
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise ProofError(
                f"consistency proof from size {old_size} to {new_size} is too long: "
                f"{len(proof)} hashes"
            )
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while fn and not fn & 1:
                    fn >>= 1
                    sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise ProofError(
            f"consistency proof from size {old_size} to {new_size} is too short: "
            f"{len(proof)} hashes"
        )
    if fr != old_root:
        raise ProofError(
            f"consistency proof from size {old_size} to {new_size} does not lead to the old "
            f"root: got {fr.hex()}, expected {old_root.hex()}"
        )
    if sr != new_root:
        raise ProofError(
            f"consistency proof from size {old_size} to {new_size} does not lead to the new "
            f"root: got {sr.hex()}, expected {new_root.hex()}"
        )
