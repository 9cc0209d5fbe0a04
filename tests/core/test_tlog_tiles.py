"""Tiles (c2sp.org/tlog-tiles): paths, which tiles a tree has, and proofs read from tiles equal
to proofs from the tree itself."""

from __future__ import annotations

import hashlib
import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ebr_core.tlog import (
    MerkleTree,
    ProofError,
    Tile,
    TileError,
    TileReader,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    parse_tile_path,
    root_hash,
    tile_files,
    verify_consistency,
    verify_inclusion,
)
from ebr_core.tlog.tiles import encode_index, entry_bundle, parse_entry_bundle, tiles_for_size


def entries(n: int) -> list[bytes]:
    return [b"entry %d" % i for i in range(n)]


@pytest.fixture(scope="module")
def big() -> MerkleTree:
    # Past 65,536 leaves: three tile levels, partial tiles at each.
    return MerkleTree([leaf_hash(e) for e in entries(70_000)])


def test_index_encoding_is_the_specs() -> None:
    assert encode_index(1234067) == "x001/x234/067"
    assert encode_index(0) == "000"
    assert encode_index(999) == "999"
    assert encode_index(1000) == "x001/000"
    assert Tile(0, 1234067).path() == "tile/0/x001/x234/067"
    assert Tile(2, 5, 17).path() == "tile/2/005.p/17"
    assert Tile(None, 12, 3).path() == "tile/entries/012.p/3"
    for t in (Tile(0, 1234067), Tile(2, 5, 17), Tile(None, 12, 3), Tile(63, 0, 255)):
        assert parse_tile_path(t.path()) == t


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("tiles/0/000", "does not start with 'tile/<level>/'"),
        ("tile/01/000", "level '01' is not 'entries' or a number"),
        ("tile/64/000", "level 64 is outside \\[0, 63\\]"),
        ("tile/0/1234", "index element '1234' should be 3 digits"),
        ("tile/0/001/234", "index element '001' should be x and 3 digits"),
        ("tile/0/x000/234", "not written in its one canonical form"),
        ("tile/0/000.p/256", "a partial tile's width must be below 256"),
        ("tile/0/000.p/012", "width '012' is not a number"),
        ("tile/0/000.p/0", "width '0' is not a number"),
    ],
)
def test_bad_tile_paths_are_refused(path: str, message: str) -> None:
    with pytest.raises(TileError, match=message):
        parse_tile_path(path)


def test_which_tiles_a_tree_has_follows_the_specs_example() -> None:
    tiles = tiles_for_size(70_000)
    full0 = [t for t in tiles if t.level == 0 and not t.partial]
    assert len(full0) == 273
    partial = {(t.level, t.width) for t in tiles if t.partial}
    assert partial == {(0, 112), (1, 17), (2, 1)}
    assert [t for t in tiles if t.level == 1 and not t.partial] == [Tile(1, 0)]
    assert tiles_for_size(256) == [Tile(0, 0), Tile(1, 0, 1)]
    # Growing from 300 to 600: the new full level-0 tile 1, the partial 2, level 1 partial 2.
    assert tiles_for_size(600, since=300) == [Tile(0, 1), Tile(0, 2, 88), Tile(1, 0, 2)]
    assert tiles_for_size(5, since=5) == []


def test_tile_bytes_are_the_subtree_hashes(big: MerkleTree) -> None:
    files = dict(tile_files(big, 70_000))
    assert len(files["tile/0/000"]) == 8192
    assert files["tile/0/000"][:32] == leaf_hash(b"entry 0")
    # A level-1 hash is the root of a full level-0 tile: MTH of its 256 leaves.
    assert files["tile/1/000"][32:64] == MerkleTree([leaf_hash(e) for e in entries(512)[256:]]).root()
    assert files["tile/2/000.p/1"] == big.node_hash(16, 0)
    assert len(files["tile/1/001.p/17"]) == 17 * 32


def test_proofs_read_from_tiles_equal_proofs_from_the_tree(big: MerkleTree) -> None:
    files = dict(tile_files(big, 70_000))
    reader = TileReader(files.get, 70_000)
    rng = random.Random(24)
    assert root_hash(reader, 70_000) == big.root()
    for _ in range(60):
        n = rng.randrange(1, 70_001)
        i = rng.randrange(n)
        m = rng.randrange(1, n + 1)
        assert inclusion_proof(reader, i, n) == inclusion_proof(big, i, n)
        assert consistency_proof(reader, m, n) == consistency_proof(big, m, n)
        verify_consistency(m, n, big.root(m), big.root(n), consistency_proof(reader, m, n))
        verify_inclusion(i, 70_000, leaf_hash(b"entry %d" % i), inclusion_proof(reader, i, 70_000), big.root())
    # The tiles needed for one proof are few: O(log n) of them, cached.
    one = TileReader(files.get, 70_000)
    inclusion_proof(one, 12_345, 70_000)
    assert one.fetched <= 6


def test_a_client_reads_only_the_tiles_its_checkpoint_requires(big: MerkleTree) -> None:
    # A mirror that still has the tiles of size 1000 serves a client checking size 1000, even
    # though the log has grown since (partial tiles of older sizes may remain).
    files = dict(tile_files(big, 1000))
    files.update(tile_files(big, 70_000, since=1000))
    asked: list[str] = []

    def fetch(path: str) -> bytes | None:
        asked.append(path)
        return files.get(path)

    reader = TileReader(fetch, 1000)
    assert root_hash(reader, 1000) == big.root(1000)
    assert all(parse_tile_path(p).width <= 256 for p in asked)
    assert "tile/0/003.p/232" in asked


def test_a_partial_tile_that_is_gone_is_read_from_the_full_one(big: MerkleTree) -> None:
    files = dict(tile_files(big, 70_000))  # has tile/0/003 full, not tile/0/003.p/232
    assert "tile/0/003.p/232" not in files
    reader = TileReader(files.get, 1000)
    assert root_hash(reader, 1000) == big.root(1000)


def test_wrong_tiles_are_refused_or_caught_by_the_proof(big: MerkleTree) -> None:
    files = dict(tile_files(big, 1000))
    short = dict(files)
    short["tile/0/001"] = files["tile/0/001"][:-1]
    with pytest.raises(TileError, match="tile/0/001 is 8191 bytes, expected 8192 \\(256 hashes\\)"):
        inclusion_proof(TileReader(short.get, 1000), 300, 1000)
    missing = {k: v for k, v in files.items() if k != "tile/0/002"}
    with pytest.raises(TileError, match="tile/0/002 is not available"):
        inclusion_proof(TileReader(missing.get, 1000), 600, 1000)
    forged = dict(files)
    forged["tile/0/001"] = hashlib.sha256(b"x").digest() + files["tile/0/001"][32:]
    # A forged leaf hash inside the old tree: the proof no longer reaches the signed old root.
    proof = consistency_proof(TileReader(forged.get, 1000), 300, 1000)
    with pytest.raises(ProofError, match="does not lead to the old root"):
        verify_consistency(300, 1000, big.root(300), big.root(1000), proof)


def test_entry_bundles_round_trip_and_refuse_damage() -> None:
    es = [b"", b"a", b"x" * 300]
    data = entry_bundle(es)
    assert data[:2] == b"\x00\x00" and data[2:4] == b"\x00\x01"
    assert parse_entry_bundle(data, 3) == es
    with pytest.raises(TileError, match="truncated in entry 2 \\(300 bytes announced\\)"):
        parse_entry_bundle(data[:-1], 3)
    with pytest.raises(TileError, match="holds 3 entries, expected 4"):
        parse_entry_bundle(data, 4)
    with pytest.raises(TileError, match="at most 65535"):
        entry_bundle([bytes(70_000)])
    t = MerkleTree([leaf_hash(e) for e in entries(300)])
    files = dict(tile_files(t, 300, entries=lambda a, b: entries(300)[a:b]))
    bundle = parse_entry_bundle(files["tile/entries/001.p/44"], 44)
    assert bundle[0] == b"entry 256"
    # Each entry hashes to the matching hash of the level-0 tile.
    assert b"".join(leaf_hash(e) for e in bundle) == files["tile/0/001.p/44"]


@settings(max_examples=10, deadline=None)  # 25 took 19-25 s under coverage (a tree of 70,000)
@given(st.integers(0, 70_000), st.integers(0, 70_000))
def test_publishing_increments_gives_the_same_files_as_publishing_at_once(a: int, b: int) -> None:
    old, new = min(a, b), max(a, b)
    t = _SHARED[0]
    served = dict(tile_files(t, old))
    added = dict(tile_files(t, new, since=old))
    served.update(added)
    at_once = dict(tile_files(t, new))
    # Everything a reader of the new size needs is served, byte for byte the same.
    assert {p: served[p] for p in at_once} == at_once
    # Only tiles that are new or grew were written.
    assert all(p not in dict(tile_files(t, old)) for p in added)
    if new:
        assert root_hash(TileReader(served.get, new), new) == t.root(new)


_SHARED = [MerkleTree([leaf_hash(e) for e in entries(70_000)])]
