"""The camera path against a public corpus: zxing-cpp's sample photos (tests/fixtures/zxing/).

Each sample must decode to its expected text with the symbology identifier zxing-cpp's own test
suite states (or, where it states none, the plain one: a Code 128 without FNC1 is ``]C0``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ebr_core.errors import IdentifierError
from ebr_core.identifiers import parse_scan
from edge.transports.camera import decode_frame

pytestmark = pytest.mark.hil
CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "zxing"
IMAGES = sorted(p for p in CORPUS.glob("*/*") if p.suffix in (".png", ".webp"))
PLAIN = {"code128": "]C0", "datamatrix": "]d1", "qrcode": "]Q1"}


def expected(img: Path) -> tuple[str, str]:
    text = img.with_suffix(".txt").read_bytes().decode("utf-8")
    result = img.with_suffix(".result.txt")
    sid = PLAIN[img.parent.name.rsplit("-", 1)[0]]
    if result.exists():
        for line in result.read_text().splitlines():
            if line.startswith("symbologyIdentifier="):
                sid = line.split("=", 1)[1]
    return sid, text


def test_the_corpus_is_there() -> None:
    assert len(IMAGES) >= 20
    assert sum(p.stat().st_size for p in CORPUS.rglob("*")) < 2_000_000


@pytest.mark.parametrize("img", IMAGES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_each_sample_decodes_to_its_text_and_symbology(img: Path) -> None:
    sid, text = expected(img)
    scans = decode_frame(np.asarray(Image.open(img).convert("L")))
    assert scans == [sid + text]


@pytest.mark.parametrize("name", ["code128-3/1.png", "code128-2/31.webp", "code128-2/32.webp"])
def test_a_plain_code128_stays_plain(name: str) -> None:
    (scan,) = decode_frame(np.asarray(Image.open(CORPUS / name).convert("L")))
    assert scan[:3] == "]C0"
    if name.startswith("code128-3"):
        assert scan == "]C010064908"
    # never read as GS1 (a lot 064908, or a ship-to postcode in AI 420)
    try:
        s = parse_scan(scan)
    except IdentifierError:  # refused (not ISBT 128 either): still never taken for GS1
        return
    assert s.symbology == "]C0" and s.batch is None and s.gtin is None
