"""A log that publishes itself as static tiles, and a real HTTP file server in front of it."""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from ebr_core.keys import UnitSigner
from ebr_core.tlog import (
    Checkpoint,
    Cosigner,
    Ed25519NoteSigner,
    MerkleTree,
    SignedNote,
    leaf_hash,
    sign_checkpoint,
    tile_files,
)

ORIGIN = "log.example/ebr"


class TiledLog:
    """A log as the server will publish it: entries, a tree, a signed checkpoint, tiles."""

    def __init__(self, signer: Ed25519NoteSigner, entries: list[bytes] | None = None) -> None:
        self.signer = signer
        self.entries: list[bytes] = []
        self.tree = MerkleTree()
        self.add(entries or [])

    def add(self, entries: list[bytes]) -> None:
        self.entries += entries
        self.tree.append_many([leaf_hash(e) for e in entries])

    def checkpoint(self) -> SignedNote:
        cp = Checkpoint(ORIGIN, self.tree.size(), self.tree.root())
        return sign_checkpoint(cp, self.signer)

    def files(self) -> dict[str, bytes]:
        out = dict(tile_files(self.tree, self.tree.size()))
        out["checkpoint"] = self.checkpoint().to_bytes()
        return out

    def publish(self, root: Path) -> None:
        """Replace the view at ``root`` with the log's current one, written aside first, so a
        reader sees the old view, no view (404) or the new one, never half of one."""
        new = root.with_name(root.name + ".new")
        for path, data in self.files().items():
            p = new / path
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        if root.exists():
            old = root.with_name(root.name + ".old")
            root.rename(old)
            shutil.rmtree(old)
        new.rename(root)


def entries(n: int, tag: str = "entry") -> list[bytes]:
    return [f"{tag} {i}".encode() for i in range(n)]


@pytest.fixture()
def log_signer() -> Ed25519NoteSigner:
    return Ed25519NoteSigner(ORIGIN, UnitSigner.from_seed(bytes(range(32)), "log"))


@pytest.fixture()
def witness_signer() -> UnitSigner:
    return UnitSigner.from_seed(bytes(range(100, 132)), "w1")


@pytest.fixture()
def cosigner(witness_signer: UnitSigner) -> Cosigner:
    return Cosigner("witness.example/w1", witness_signer)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture()
def static_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """``python -m http.server`` serving a directory: (URL, directory)."""
    root = tmp_path / "www"
    root.mkdir()
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1", "--directory", str(root)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline or proc.poll() is not None:
                    raise RuntimeError("the static file server did not start") from None
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}/log", root / "log"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
