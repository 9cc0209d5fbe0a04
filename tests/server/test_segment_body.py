"""A segment's request body: zstd (what the edge sends), gzip or identity, decompressed with
memory bounded by ``max_segment_bytes`` whatever the body claims, and anything that is not
exactly one whole compressed segment refused with a message saying what is wrong."""

from __future__ import annotations

import gzip
from collections.abc import Callable
from pathlib import Path

import pytest
import zstandard

from server.errors import TooLarge, Unprocessable
from server.settings import Settings
from server.units.ingest import read_segment

from .conftest import ADMIN

LIMIT = 64 * 1024
SEGMENT = b'{"type":"event","seq":1}\n' * 1000  # 25 kB: within the limit


def settings(tmp_path: Path) -> Settings:
    return Settings(
        database_url=f"sqlite:///{tmp_path / 's.db'}",
        data_dir=tmp_path,
        admin_token=ADMIN,
        max_segment_bytes=LIMIT,
    )


def zstd(data: bytes) -> bytes:
    return zstandard.ZstdCompressor(level=1).compress(data)


def zstd_without_size(data: bytes) -> bytes:
    c = zstandard.ZstdCompressor(level=1).compressobj()
    return c.compress(data) + c.flush()


ENCODERS: dict[str, Callable[[bytes], bytes]] = {
    "zstd": zstd,
    "gzip": gzip.compress,
    "identity": lambda b: b,
}


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_a_whole_segment_is_read_back(tmp_path: Path, encoding: str) -> None:
    body = ENCODERS[encoding](SEGMENT)
    assert read_segment(body, encoding, settings(tmp_path)) == SEGMENT


def test_no_content_encoding_means_identity(tmp_path: Path) -> None:
    assert read_segment(SEGMENT, None, settings(tmp_path)) == SEGMENT


@pytest.mark.parametrize("encoding", sorted(ENCODERS))
def test_a_segment_over_the_limit_is_refused(tmp_path: Path, encoding: str) -> None:
    # A bomb: 64 MB of zeros is a few kB compressed.  zstd is refused on its declared size,
    # gzip stops one byte past the limit; neither holds more than that in memory.
    big = bytes(64 * 1024 * 1024) if encoding != "identity" else bytes(LIMIT + 1)
    body = ENCODERS[encoding](big)
    with pytest.raises(TooLarge, match=f"segment exceeds {LIMIT} bytes"):
        read_segment(body, encoding, settings(tmp_path))


@pytest.mark.parametrize(
    ("encoding", "body", "message"),
    [
        ("zstd", b"not zstd at all", "body is not valid zstd"),
        ("zstd", b"", "body is not valid zstd"),
        ("zstd", zstd(SEGMENT)[:-7], "the frame ends early|body is not valid zstd"),
        ("zstd", zstd(SEGMENT) + zstd(SEGMENT), r"bytes after its zstd frame"),
        ("zstd", zstd(SEGMENT) + b"xyz", "3 bytes after its zstd frame"),
        ("zstd", zstd_without_size(SEGMENT), "does not declare its content size"),
        ("gzip", b"not gzip", "body is not valid gzip"),
        ("gzip", gzip.compress(SEGMENT)[:-12], "the stream ends early"),
        ("gzip", gzip.compress(SEGMENT) + b"xyz", "3 bytes after its gzip member"),
        ("br", b"whatever", "Content-Encoding 'br' is not zstd, gzip or identity"),
    ],
)
def test_a_body_that_is_not_one_whole_segment_is_refused(
    tmp_path: Path, encoding: str, body: bytes, message: str
) -> None:
    with pytest.raises(Unprocessable, match=message):
        read_segment(body, encoding, settings(tmp_path))
