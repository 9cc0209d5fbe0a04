"""The RFC 9162 Merkle tree: hashing, the tree head of any size, proof generation, appends.

Owns: the leaf and node hashes (RFC 9162 §2.1.1), the storage interface a log keeps its hashes
behind (:class:`HashStore`), an in-memory tree that appends in amortised O(1) hashes and keeps
every complete subtree (:class:`MerkleTree`), the O(log n) compact range for a log that keeps
only its right edge in memory (:class:`Frontier`), and inclusion and consistency proof
generation (RFC 9162 §2.1.3.1, §2.1.4.1) from any store.  Verification is in
:mod:`ebr_core.tlog.proof`; it needs nothing from here but the hashes.

A *complete subtree* ``(level, index)`` is the node over leaves
``[index * 2**level, (index + 1) * 2**level)``; level 0 is the leaf hashes.  Every hash an
RFC 9162 proof carries is one of these or the hash of a right edge made of them, so a store that
can give complete subtrees gives every proof in O(log n) reads.

Over 400 lines: the RFC 9162 tree, its stores and its proofs share the subtree arithmetic and are
held together to the published vectors.
"""

from __future__ import annotations

import functools
import hashlib
import operator
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol, runtime_checkable

from ebr_core.tlog.errors import TreeError

HASH_SIZE = 32
LEAF_PREFIX = b"\x00"
NODE_PREFIX = b"\x01"
#: MTH({}) = SHA-256() (RFC 9162 §2.1.1): the root of the empty tree.
EMPTY_ROOT = hashlib.sha256(b"").digest()

_sha256 = hashlib.sha256


def leaf_hash(leaf: bytes) -> bytes:
    """MTH({d}) = SHA-256(0x00 || d)."""
    return _sha256(LEAF_PREFIX + leaf).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right)."""
    return _sha256(NODE_PREFIX + left + right).digest()


def split_point(n: int) -> int:
    """k, the largest power of two smaller than n (n > 1): MTH splits D[n] into D[0:k], D[k:n]."""
    return 1 << ((n - 1).bit_length() - 1)


@runtime_checkable
class HashStore(Protocol):
    """What proof generation reads: a log's size and the hashes of its complete subtrees.

    ``node_hash(0, i)`` is the leaf hash of entry i.  A store that keeps only leaf hashes
    (a database table) is wrapped by :class:`LeafHashes`; one that keeps interior nodes or tiles
    answers every level directly.
    """

    def size(self) -> int: ...

    def node_hash(self, level: int, index: int) -> bytes: ...


class LeafHashStore(Protocol):
    """The least a log must keep: its size and each entry's leaf hash."""

    def size(self) -> int: ...

    def leaf_hash(self, index: int) -> bytes: ...


class LeafHashes:
    """A :class:`HashStore` over a store of leaf hashes only: interior nodes are computed.

    A complete subtree of 2**level leaves costs 2**level - 1 hashes, so this suits small logs
    and tests; a large log keeps interior nodes (a :class:`MerkleTree`, tiles, or a node table).
    """

    def __init__(self, leaves: LeafHashStore) -> None:
        self._leaves = leaves

    def size(self) -> int:
        return self._leaves.size()

    def node_hash(self, level: int, index: int) -> bytes:
        _check_complete(self, level, index)
        start = index << level
        return _range_hash([self._leaves.leaf_hash(i) for i in range(start, start + (1 << level))])


def _range_hash(hashes: Sequence[bytes]) -> bytes:
    """MTH over a run of leaf hashes (any length >= 1), by the RFC's recursion."""
    level = list(hashes)
    # A complete power-of-two run folds pairwise; MTH's left-heavy split gives the same result
    # for any length when odd tails are carried up unchanged and joined right to left.
    while len(level) > 1:
        nxt = [node_hash(level[i], level[i + 1]) for i in range(0, len(level) - 1, 2)]
        if len(level) % 2:
            nxt.append(level[-1])
        level = nxt
    return level[0]


def _check_complete(store: HashStore, level: int, index: int) -> None:
    if level < 0 or index < 0:
        raise TreeError(f"node ({level}, {index}): level and index must be >= 0")
    if (index + 1) << level > store.size():
        raise TreeError(
            f"node ({level}, {index}) covers leaves up to {((index + 1) << level) - 1}, "
            f"past the tree's size {store.size()}"
        )


_PAIR = 1 + 2 * HASH_SIZE  # one node input: 0x01 || left || right
_digest = type(hashlib.sha256()).digest


def _pos(index: int) -> int:
    """Where hash ``index`` of a level starts in the level's interleaved buffer."""
    return _PAIR * (index >> 1) + 1 + HASH_SIZE * (index & 1)


@functools.lru_cache(maxsize=256)
def _pair_inputs(n: int) -> Callable[[bytes], Sequence[bytes]]:
    """A function cutting n consecutive node inputs out of a level's bytes, in C (one
    ``itemgetter`` of n slices, kept for the group sizes a log sees again and again)."""
    cuts = [slice(o, o + _PAIR) for o in range(0, _PAIR * n, _PAIR)]
    if n == 1:
        return lambda b: (b[cuts[0]],)
    return operator.itemgetter(*cuts)


def _interleave(hashes: Sequence[bytes], odd_start: bool) -> bytes:
    """The bytes to add to a level holding an odd (``odd_start``) or even count of hashes."""
    out = b""
    if odd_start:
        out, hashes = hashes[0], hashes[1:]
    m = len(hashes)
    if not m:
        return out
    # [0x01, h0, h1, 0x01, h2, h3, ...] filled by slice assignment (no per-hash Python step).
    parts: list[bytes] = [NODE_PREFIX, b"", b""] * ((m + 1) // 2)
    parts[1::3] = hashes[0::2]
    parts[2::3] = [*hashes[1::2], *([b""] if m % 2 else [])]
    return out + b"".join(parts)


class MerkleTree:
    """An in-memory log tree that keeps every complete subtree, level by level.

    ``append`` costs one node hash amortised; ``append_many`` adds a commit group level by level,
    which is the fast path.  Each level is one bytearray in which every pair of hashes is
    stored behind a 0x01 byte (``0x01 || h0 || h1 || 0x01 || h2 || h3 ...``), so a parent's
    input is one slice of it: the tree costs the ceiling's SHA-256 calls plus one slice each.
    """

    def __init__(self, leaf_hashes: Iterable[bytes] = ()) -> None:
        self._levels: list[bytearray] = [bytearray()]
        self._counts: list[int] = [0]
        self.append_many(list(leaf_hashes))

    def size(self) -> int:
        return self._counts[0]

    def node_hash(self, level: int, index: int) -> bytes:
        _check_complete(self, level, index)
        off = _pos(index)
        return bytes(self._levels[level][off : off + HASH_SIZE])

    def leaf_hash(self, index: int) -> bytes:
        return self.node_hash(0, index)

    def level_bytes(self, level: int, start: int, end: int) -> bytes:
        """Concatenated complete-subtree hashes ``[start, end)`` of one level (tiles read this)."""
        have = self.size() >> level
        if end > have or start < 0 or start > end:
            raise TreeError(
                f"level {level} holds {have} complete nodes, asked for [{start}, {end})"
            )
        buf = self._levels[level]
        return b"".join([buf[_pos(i) : _pos(i) + HASH_SIZE] for i in range(start, end)])

    def _add(self, level: int, hashes: Sequence[bytes]) -> None:
        if level == len(self._levels):
            self._levels.append(bytearray())
            self._counts.append(0)
        self._levels[level] += _interleave(hashes, bool(self._counts[level] & 1))
        self._counts[level] += len(hashes)

    def append(self, leaf_hash_: bytes) -> int:
        """Add one entry by its leaf hash; return its index."""
        _check_hash(leaf_hash_, "leaf hash")
        index, h, level = self.size(), leaf_hash_, 0
        while True:
            if level == len(self._levels):
                self._levels.append(bytearray())
                self._counts.append(0)
            buf, odd = self._levels[level], self._counts[level] & 1
            buf += h if odd else NODE_PREFIX + h
            self._counts[level] += 1
            if not odd:
                return index
            # The hash completes a pair: its parent's input is the level's last 65 bytes.
            h = _sha256(buf[-_PAIR:]).digest()
            level += 1

    def append_many(self, leaf_hashes: Sequence[bytes]) -> int:
        """Add a group of entries by their leaf hashes; return the index of the first.

        Level by level: the new nodes of a level are its newly completed pairs, hashed in one
        pass over one copy of their bytes.
        """
        first = self.size()
        if not leaf_hashes:
            return first
        if set(map(len, leaf_hashes)) != {HASH_SIZE}:
            bad = next(h for h in leaf_hashes if len(h) != HASH_SIZE)
            _check_hash(bad, "leaf hash")
        self._add(0, leaf_hashes)
        sha, digest, level = _sha256, _digest, 0
        while True:
            have = self._counts[level + 1] if level + 1 < len(self._counts) else 0
            want = self._counts[level] >> 1
            if want == have:
                break  # no new node at this level: none above it either
            seg = memoryview(self._levels[level])[_PAIR * have : _PAIR * want].tobytes()
            self._add(level + 1, list(map(digest, map(sha, _pair_inputs(want - have)(seg)))))
            level += 1
        return first

    def root(self, size: int | None = None) -> bytes:
        """MTH(D[size]) (the current size by default)."""
        return root_hash(self, self.size() if size is None else size)

    def frontier(self) -> Frontier:
        """The compact range of the current tree (to continue appending with O(log n) memory)."""
        return Frontier.from_store(self)


def _check_hash(h: bytes, what: str) -> None:
    if len(h) != HASH_SIZE:
        raise TreeError(f"a {what} is {HASH_SIZE} bytes, got {len(h)}")


def subtree_hash(store: HashStore, start: int, end: int) -> bytes:
    """MTH(D[start:end]) for a range the RFC recursion produces (start aligned to the split).

    Complete subtrees are read from the store; a right edge is split as MTH splits it, so the
    cost is O(log n) reads.
    """
    n = end - start
    if n <= 0:
        raise TreeError(f"empty range [{start}, {end})")
    level = n.bit_length() - 1
    if n == 1 << level and start % n == 0:
        return store.node_hash(level, start >> level)
    k = split_point(n)
    return node_hash(subtree_hash(store, start, start + k), subtree_hash(store, start + k, end))


def root_hash(store: HashStore, size: int) -> bytes:
    """The tree head's root hash at ``size`` (any size up to the store's)."""
    if size < 0 or size > store.size():
        raise TreeError(f"tree size {size} is outside [0, {store.size()}] of the store")
    if size == 0:
        return EMPTY_ROOT
    return subtree_hash(store, 0, size)


def inclusion_proof(store: HashStore, index: int, size: int) -> list[bytes]:
    """PATH(index, D[size]) (RFC 9162 §2.1.3.1), leaf to root."""
    if size > store.size():
        raise TreeError(f"tree size {size} is past the store's size {store.size()}")
    if not 0 <= index < size:
        raise TreeError(f"leaf index {index} is not in a tree of size {size}")
    out: list[bytes] = []
    start, end = 0, size
    # Walk down from the root; siblings are collected root first, then reversed.
    while end - start > 1:
        k = split_point(end - start)
        if index < start + k:
            out.append(subtree_hash(store, start + k, end))
            end = start + k
        else:
            out.append(subtree_hash(store, start, start + k))
            start += k
    out.reverse()
    return out


def consistency_proof(store: HashStore, old_size: int, new_size: int) -> list[bytes]:
    """PROOF(old_size, D[new_size]) (RFC 9162 §2.1.4.1); empty when the sizes are equal or 0."""
    if new_size > store.size():
        raise TreeError(f"tree size {new_size} is past the store's size {store.size()}")
    if not 0 <= old_size <= new_size:
        raise TreeError(f"old size {old_size} must be between 0 and the new size {new_size}")
    if old_size in (0, new_size):
        return []
    out: list[bytes] = []
    m, start, end, whole = old_size, 0, new_size, True
    # SUBPROOF(m, D[start:end], whole), unrolled: each step keeps one side, records the other.
    while m != end - start:
        k = split_point(end - start)
        if m <= k:
            out.append(subtree_hash(store, start + k, end))
            end = start + k
        else:
            out.append(subtree_hash(store, start, start + k))
            m -= k
            start += k
            whole = False
    if not whole:
        out.append(subtree_hash(store, start, end))
    out.reverse()
    return out


def inclusion_proof_length(index: int, size: int) -> int:
    """How many hashes PATH(index, D[size]) has, without a tree (for sizing and benches)."""
    if not 0 <= index < size:
        raise TreeError(f"leaf index {index} is not in a tree of size {size}")
    n, start, end = 0, 0, size
    while end - start > 1:
        k = split_point(end - start)
        n += 1
        if index < start + k:
            end = start + k
        else:
            start += k
    return n


def consistency_proof_length(old_size: int, new_size: int) -> int:
    """How many hashes PROOF(old_size, D[new_size]) has, without a tree."""
    if not 0 <= old_size <= new_size:
        raise TreeError(f"old size {old_size} must be between 0 and the new size {new_size}")
    if old_size in (0, new_size):
        return 0
    n, m, start, end, whole = 0, old_size, 0, new_size, True
    while m != end - start:
        k = split_point(end - start)
        n += 1
        if m <= k:
            end = start + k
        else:
            m -= k
            start += k
            whole = False
    return n + (0 if whole else 1)


class Frontier:
    """The compact range [0, size): the roots of the perfect subtrees along the right edge.

    O(log n) memory and hashes per append; what a log that keeps its leaf hashes in a table
    holds in memory to know its next root without reading the table.  ``append`` returns the
    complete subtrees it made, ``(level, index, hash)``, for a store of interior nodes.
    """

    def __init__(self, size: int = 0, peaks: Sequence[bytes] = ()) -> None:
        if size < 0:
            raise TreeError(f"tree size {size} must be >= 0")
        if len(peaks) != size.bit_count():
            raise TreeError(
                f"a compact range of size {size} has {size.bit_count()} peaks, got {len(peaks)}"
            )
        for p in peaks:
            _check_hash(p, "peak hash")
        self._size = size
        # Highest level first, as the peaks read left to right along the leaves.
        self._peaks = list(peaks)

    @classmethod
    def from_store(cls, store: HashStore, size: int | None = None) -> Frontier:
        n = store.size() if size is None else size
        peaks, start = [], 0
        for level in range(n.bit_length() - 1, -1, -1):
            if n >> level & 1:
                peaks.append(store.node_hash(level, start >> level))
                start += 1 << level
        return cls(n, peaks)

    @property
    def size(self) -> int:
        return self._size

    @property
    def peaks(self) -> tuple[bytes, ...]:
        return tuple(self._peaks)

    def append(self, leaf_hash_: bytes) -> list[tuple[int, int, bytes]]:
        _check_hash(leaf_hash_, "leaf hash")
        made = [(0, self._size, leaf_hash_)]
        h, level, n = leaf_hash_, 0, self._size
        while n & 1:
            h = node_hash(self._peaks.pop(), h)
            level += 1
            n >>= 1
            made.append((level, n, h))
        self._peaks.append(h)
        self._size += 1
        return made

    def root(self) -> bytes:
        if not self._peaks:
            return EMPTY_ROOT
        r = self._peaks[-1]
        for p in reversed(self._peaks[:-1]):
            r = node_hash(p, r)
        return r
