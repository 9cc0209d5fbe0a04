"""Tiled logs (c2sp.org/tlog-tiles): the tree as static files any web server can mirror.

Owns tile and entry-bundle paths (``tile/<L>/<N>[.p/<W>]``, ``tile/entries/<N>[.p/<W>]``,
with N written as ``x001/x234/067``), which tiles a tree of a given size has, a tile's bytes
from a :class:`~ebr_core.tlog.merkle.HashStore`, entry bundles, and :class:`TileReader`: a
``HashStore`` over tiles fetched through a callable, so a client builds every inclusion and
consistency proof from static files.  Fetching (HTTP, files) is the caller's.

A tile at level l holds up to 256 hashes of tree level 8*l: hash i of tile n is the complete
subtree (8*l, n*256 + i).  Levels between are recomputed from a tile's hashes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from ebr_core.tlog.errors import TileError, TreeError
from ebr_core.tlog.merkle import HASH_SIZE, HashStore, MerkleTree, node_hash

TILE_HEIGHT = 8
TILE_WIDTH = 1 << TILE_HEIGHT
MAX_ENTRY_BYTES = 0xFFFF


@dataclass(frozen=True)
class Tile:
    """A tile (``level`` >= 0) or an entry bundle (``level`` is None): index and width."""

    level: int | None
    index: int
    width: int = TILE_WIDTH

    def __post_init__(self) -> None:
        if self.level is not None and not 0 <= self.level <= 63:
            raise TileError(f"tile level {self.level} is outside [0, 63]")
        if self.index < 0:
            raise TileError(f"tile index {self.index} is negative")
        if not 1 <= self.width <= TILE_WIDTH:
            raise TileError(f"tile width {self.width} is outside [1, {TILE_WIDTH}]")

    @property
    def partial(self) -> bool:
        return self.width < TILE_WIDTH

    def path(self) -> str:
        lvl = "entries" if self.level is None else str(self.level)
        tail = f".p/{self.width}" if self.partial else ""
        return f"tile/{lvl}/{encode_index(self.index)}{tail}"

    def full(self) -> Tile:
        return Tile(self.level, self.index)


def encode_index(n: int) -> str:
    """1234067 -> ``x001/x234/067``: 3-digit elements, all but the last prefixed with x."""
    if n < 0:
        raise TileError(f"tile index {n} is negative")
    s = str(n)
    s = "0" * (-len(s) % 3) + s
    parts = [s[i : i + 3] for i in range(0, len(s), 3)]
    return "/".join([*("x" + p for p in parts[:-1]), parts[-1]])


def parse_tile_path(path: str) -> Tile:
    """Read a tile path strictly (no leading zeros, no stray elements)."""
    parts = path.split("/")
    if len(parts) < 3 or parts[0] != "tile":
        raise TileError(f"tile path {path!r} does not start with 'tile/<level>/'")
    lvl_s, rest = parts[1], parts[2:]
    if lvl_s == "entries":
        level: int | None = None
    elif lvl_s.isdigit() and lvl_s.isascii() and (lvl_s == "0" or lvl_s[0] != "0"):
        level = int(lvl_s)
    else:
        raise TileError(f"tile path {path!r}: level {lvl_s!r} is not 'entries' or a number")
    width = TILE_WIDTH
    if len(rest) >= 2 and rest[-2].endswith(".p"):
        w = rest[-1]
        if not (w.isdigit() and w.isascii() and w[0] != "0"):
            raise TileError(f"tile path {path!r}: width {w!r} is not a number from 1 to 255")
        width = int(w)
        if width >= TILE_WIDTH:
            raise TileError(f"tile path {path!r}: a partial tile's width must be below 256")
        rest = [*rest[:-2], rest[-2][:-2]]
    digits = []
    for i, el in enumerate(rest):
        last = i == len(rest) - 1
        body = el if last else el[1:]
        if (not last and not el.startswith("x")) or len(body) != 3 or not body.isdigit():
            raise TileError(
                f"tile path {path!r}: index element {el!r} should be "
                f"{'3 digits' if last else 'x and 3 digits'}"
            )
        digits.append(body)
    index = int("".join(digits))
    if encode_index(index) != "/".join(rest):
        raise TileError(f"tile path {path!r}: index is not written in its one canonical form")
    return Tile(level, index, width)


def tiles_for_size(size: int, since: int = 0) -> list[Tile]:
    """The tiles a tree of ``size`` has that a tree of ``since`` entries did not have.

    Full tiles at every level, then each level's partial tile (never hashed into the level
    above).  With ``since`` = 0, every tile of the tree.
    """
    if not 0 <= since <= size:
        raise TileError(f"tile range from size {since} to {size} is not growing")
    out: list[Tile] = []
    level = 0
    while size >> (TILE_HEIGHT * level):
        n_new = size >> (TILE_HEIGHT * level)  # complete nodes at this tile level
        n_old = since >> (TILE_HEIGHT * level)
        for index in range(n_old // TILE_WIDTH, n_new // TILE_WIDTH):
            out.append(Tile(level, index))
        w = n_new % TILE_WIDTH
        if w and n_new != n_old:
            out.append(Tile(level, n_new // TILE_WIDTH, w))
        level += 1
    return out


def tile_bytes(store: HashStore, tile: Tile) -> bytes:
    """The tile's hashes, concatenated (32 * width bytes)."""
    if tile.level is None:
        raise TileError("an entry bundle is made from entries, not from hashes")
    tree_level = TILE_HEIGHT * tile.level
    start = tile.index * TILE_WIDTH
    try:
        if isinstance(store, MerkleTree):
            return store.level_bytes(tree_level, start, start + tile.width)
        return b"".join(store.node_hash(tree_level, start + i) for i in range(tile.width))
    except TreeError as e:
        raise TileError(f"{tile.path()}: {e}") from e


def entry_bundle(entries: Sequence[bytes]) -> bytes:
    """Entries as big-endian uint16 length-prefixed records."""
    out = bytearray()
    for i, e in enumerate(entries):
        if len(e) > MAX_ENTRY_BYTES:
            raise TileError(f"entry {i} is {len(e)} bytes; an entry bundle holds at most 65535")
        out += len(e).to_bytes(2, "big") + e
    return bytes(out)


def parse_entry_bundle(data: bytes, width: int) -> list[bytes]:
    """Read ``width`` entries; refuse a short, long or truncated bundle."""
    out: list[bytes] = []
    off = 0
    while off < len(data):
        if off + 2 > len(data):
            raise TileError(f"entry bundle truncated in the length of entry {len(out)}")
        n = int.from_bytes(data[off : off + 2], "big")
        if off + 2 + n > len(data):
            raise TileError(f"entry bundle truncated in entry {len(out)} ({n} bytes announced)")
        out.append(data[off + 2 : off + 2 + n])
        off += 2 + n
    if len(out) != width:
        raise TileError(f"entry bundle holds {len(out)} entries, expected {width}")
    return out


def tile_files(
    store: HashStore,
    size: int,
    *,
    since: int = 0,
    entries: Callable[[int, int], Sequence[bytes]] | None = None,
) -> Iterator[tuple[str, bytes]]:
    """(path, bytes) of every tile (and entry bundle, given ``entries(start, end)``) a static
    mirror of the tree at ``size`` needs beyond those of ``since``."""
    for tile in tiles_for_size(size, since):
        yield tile.path(), tile_bytes(store, tile)
        if tile.level == 0 and entries is not None:
            start = tile.index * TILE_WIDTH
            bundle = Tile(None, tile.index, tile.width)
            yield bundle.path(), entry_bundle(entries(start, start + tile.width))


TileFetch = Callable[[str], "bytes | None"]


class TileReader:
    """A :class:`HashStore` over the tiles of a tree of ``size``, read through ``fetch``.

    ``fetch(path)`` returns the file's bytes, or None when there is none.  Only tiles a tree
    of ``size`` must have are asked for (the spec forbids guessing partial tiles); a partial
    tile that is gone is read from the full tile that replaced it.  Tiles are cached.
    """

    def __init__(self, fetch: TileFetch, size: int) -> None:
        if size < 0:
            raise TileError(f"tree size {size} must be >= 0")
        self._fetch = fetch
        self._size = size
        self._cache: dict[tuple[int, int], bytes] = {}
        self.fetched = 0

    def size(self) -> int:
        return self._size

    def _tile(self, level: int, index: int) -> bytes:
        key = (level, index)
        got = self._cache.get(key)
        if got is not None:
            return got
        have = self._size >> (TILE_HEIGHT * level)
        width = min(TILE_WIDTH, have - index * TILE_WIDTH)
        if width <= 0:
            raise TileError(f"tile {level}/{index} is not part of a tree of size {self._size}")
        tile = Tile(level, index, width)
        data = self._fetch(tile.path())
        self.fetched += 1
        if data is None and tile.partial:
            full = self._fetch(tile.full().path())
            self.fetched += 1
            data = None if full is None else full[: width * HASH_SIZE]
        if data is None:
            raise TileError(f"{tile.path()} is not available")
        if len(data) != width * HASH_SIZE:
            raise TileError(
                f"{tile.path()} is {len(data)} bytes, expected {width * HASH_SIZE} ({width} hashes)"
            )
        self._cache[key] = data
        return data

    def node_hash(self, level: int, index: int) -> bytes:
        if level < 0 or index < 0 or (index + 1) << level > self._size:
            raise TreeError(
                f"node ({level}, {index}) is not a complete subtree of a tree of size {self._size}"
            )
        tl, r = divmod(level, TILE_HEIGHT)
        first = index << r  # first hash of the tile level under this node
        data = self._tile(tl, first >> TILE_HEIGHT)
        off = first & (TILE_WIDTH - 1)
        hashes = [data[i * HASH_SIZE : (i + 1) * HASH_SIZE] for i in range(off, off + (1 << r))]
        while len(hashes) > 1:
            hashes = [node_hash(hashes[i], hashes[i + 1]) for i in range(0, len(hashes), 2)]
        return hashes[0]

    def leaf_hash(self, index: int) -> bytes:
        return self.node_hash(0, index)
