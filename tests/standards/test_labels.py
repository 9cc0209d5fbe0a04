"""Labels measured as a verifier would: each printed symbol is found and read by zxing-cpp (and the
linear ones by pyzbar), and its bars are measured in the bitmap against the symbology's own
specification (Code 128: every symbol character 11 modules of 3 bars and 3 spaces, 1-4 modules
each, the stop 13 modules, quiet zones of at least 10 modules; GS1 DataMatrix: a timing pattern
of single modules).  Every bar and space must be a whole number of printer dots, the module width
within the standard's range, and the label exactly a named stock.  The shipper's SSCC is checked
by biip, a GS1 implementation nobody here wrote."""

from __future__ import annotations

import io
import itertools
from datetime import date, datetime

import biip
import numpy as np
import pytest
import zxingcpp
from PIL import Image
from pyzbar import pyzbar

from edge.label_layout import DPIS, STOCKS
from edge.labels import LabelData, LabelError, png, sscc

COI = "&/CHA999926ABC123"
DIN = "=A99992612345600"
PREFIX = "9506000"  # the demo site's GS1 company prefix (950: GS1's own prefix for examples)

LABELS = {
    "apheresis_bag": LabelData("apheresis_bag", COI, DIN, product="Apheresis, autologous"),
    "product_bag": LabelData(
        "product_bag", COI, DIN, "09506000134345", "B-2026-0042", datetime(2027, 5, 31, 14, 30),
        "BAG1", "CD19 CAR-T cells, autologous", product_code="=<S1234100",
    ),
    "shipper": LabelData("shipper", COI, sscc=sscc(PREFIX, 42)),
}  # fmt: skip

# Code 128's stop character: bars and spaces 2 3 3 1 1 1 2 modules (ISO/IEC 15417).
STOP = [2, 3, 3, 1, 1, 1, 2]


def image(d: LabelData, dpi: int) -> np.ndarray:
    img = Image.open(io.BytesIO(png(d, dpi)))
    assert tuple(round(v) for v in img.info["dpi"]) == (dpi, dpi)  # PNG stores dots per metre
    return np.asarray(img.convert("L"))


def runs(row: np.ndarray) -> list[tuple[bool, int]]:
    """(dark, length) of each run of pixels in a row, left to right."""
    dark = row < 128
    edges = np.flatnonzero(np.diff(dark.astype(np.int8))) + 1
    bounds = [0, *edges.tolist(), len(row)]
    return [(bool(dark[a]), b - a) for a, b in itertools.pairwise(bounds)]


def code128_modules(frame: np.ndarray, r: zxingcpp.Barcode, x: int) -> list[int]:
    """Measure the symbol zxing-cpp found at ``r``: its elements in modules, start to stop; each
    run must be a whole number of ``x``-dot modules and the quiet zones at least 10 modules."""
    p = r.position
    y = (p.top_left.y + p.bottom_left.y) // 2
    left, right = min(p.top_left.x, p.bottom_left.x), max(p.top_right.x, p.bottom_right.x)
    assert left >= 10 * x, "room for the left quiet zone"
    rs = runs(frame[y, left - 10 * x : right + 10 * x + 1])
    assert not rs[0][0] and not rs[-1][0], "a symbol ends in its quiet zones"
    assert rs[0][1] >= 10 * x and rs[-1][1] >= 10 * x, f"quiet zones {rs[0][1]}, {rs[-1][1]} dots"
    elements = rs[1:-1]
    for dark, n in elements:
        assert n % x == 0, f"a {'bar' if dark else 'space'} of {n} dots is not whole {x}-dot modules"
    return [n // x for _, n in elements]


def check_code128_structure(modules: list[int]) -> None:
    body, stop = modules[:-7], modules[-7:]
    assert stop == STOP
    assert len(body) % 6 == 0 and body, "symbol characters are 3 bars and 3 spaces each"
    for i in range(0, len(body), 6):
        char = body[i : i + 6]
        assert sum(char) == 11 and all(1 <= m <= 4 for m in char), char
        assert sum(char[0::2]) % 2 == 0, f"bars of a Code 128 character sum to even: {char}"


def expected_x(dpi: int, nominal_mm: float) -> int:
    return round(nominal_mm * dpi / 25.4)


@pytest.mark.parametrize("kind", list(LABELS))
def test_every_bar_and_space_is_whole_dots_at_300_dpi(kind: str) -> None:
    d = LABELS[kind]
    frame = image(d, 300)
    found = zxingcpp.read_barcodes(frame)
    linear = [r for r in found if r.format == zxingcpp.BarcodeFormat.Code128]
    assert len(linear) == {"apheresis_bag": 2, "product_bag": 4, "shipper": 2}[kind]
    for r in linear:
        sscc_symbol = r.symbology_identifier == "]C1"
        x = 6 if sscc_symbol else 3  # GS1 logistic 0.495 mm -> 6 dots; ISBT 0.25 mm -> 3
        mm = x * 25.4 / 300
        assert (0.495 <= mm <= 1.016) if sscc_symbol else (0.17 <= mm <= 0.26)
        check_code128_structure(code128_modules(frame, r, x))


def test_the_measurement_refuses_bars_of_uneven_width() -> None:
    """The old labels' module (0.3 mm at 300 dpi, 3.54 dots) made bars of 3 and 4 dots for one
    module: the same measurement must fail on them."""
    from barcode import Code128
    from barcode.writer import ImageWriter

    buf = io.BytesIO()
    Code128(COI, writer=ImageWriter()).write(
        buf, {"module_width": 0.3, "module_height": 12, "quiet_zone": 6.5, "write_text": False,
              "dpi": 300}
    )  # fmt: skip
    frame = np.asarray(Image.open(buf).convert("L"))
    (r,) = zxingcpp.read_barcodes(frame)
    for x in (3, 4):
        with pytest.raises(AssertionError, match=rf"is not whole {x}-dot modules"):
            code128_modules(frame, r, x)


@pytest.mark.parametrize("dpi", DPIS)
def test_module_widths_at_every_supported_dpi(dpi: int) -> None:
    d = LABELS["product_bag"]
    frame = image(d, dpi)
    found = zxingcpp.read_barcodes(frame)
    x = expected_x(dpi, 0.25)  # ISBT 128: nominal 0.25 mm, never below 0.17 mm
    assert x * 25.4 / dpi >= 0.17
    linear = [r for r in found if r.format == zxingcpp.BarcodeFormat.Code128]
    assert {r.text for r in linear} == {DIN, "=<S1234100", COI, "&>0271511430"}
    for r in linear:
        check_code128_structure(code128_modules(frame, r, x))
    (dm,) = [r for r in found if r.format == zxingcpp.BarcodeFormat.DataMatrix]
    assert dm.symbology_identifier == "]d2"
    # The DataMatrix's top edge is its timing pattern: alternating single modules.
    p = dm.position
    xs = [p.top_left.x, p.top_right.x, p.bottom_left.x, p.bottom_right.x]
    ys = [p.top_left.y, p.top_right.y, p.bottom_left.y, p.bottom_right.y]
    box = frame[min(ys) - 2 : max(ys) + 3, min(xs) - 2 : max(xs) + 3] < 128
    rows_dark = np.flatnonzero(box.any(axis=1))
    cols_dark = np.flatnonzero(box.any(axis=0))
    top = box[rows_dark[0], cols_dark[0] : cols_dark[-1] + 1]
    lengths = [n for _, n in runs(np.where(top, 0, 255).astype(np.uint8))]
    mx = expected_x(dpi, 0.5)
    assert set(lengths) == {mx}, f"timing pattern runs {sorted(set(lengths))}, module {mx} dots"
    assert (cols_dark[-1] - cols_dark[0] + 1) == len(lengths) * mx


@pytest.mark.parametrize("dpi", DPIS)
@pytest.mark.parametrize("kind", list(LABELS))
def test_each_label_is_exactly_a_named_stock(kind: str, dpi: int) -> None:
    frame = image(LABELS[kind], dpi)
    h, w = frame.shape
    assert (w, h) in {s.size(dpi) for s in STOCKS}, f"{w} x {h} dots at {dpi} dpi"
    # The smallest stock the content fits: the apheresis label on 4 x 2 in, the others 4 x 3 in.
    assert h == {"apheresis_bag": 2, "product_bag": 3, "shipper": 3}[kind] * dpi


def test_an_unsupported_resolution_is_refused() -> None:
    with pytest.raises(LabelError, match=r"250 dpi is not supported; expected one of \(203, 300"):
        png(LABELS["shipper"], 250)


def test_linear_symbols_read_by_pyzbar_too() -> None:
    for kind, d in LABELS.items():
        got = {s.data.decode() for s in pyzbar.decode(Image.open(io.BytesIO(png(d))))}
        want = {COI} | ({DIN} if d.din else set())
        if kind == "product_bag":
            want |= {"=<S1234100", "&>0271511430"}
        if kind == "shipper":
            want.add("00" + sscc(PREFIX, 42))
        assert got == want, kind


def test_the_shipper_carries_an_sscc_that_biip_accepts() -> None:
    frame = image(LABELS["shipper"], 300)
    (r,) = [r for r in zxingcpp.read_barcodes(frame) if r.symbology_identifier == "]C1"]
    parsed = biip.parse(r.symbology_identifier + r.text.replace("(", "").replace(")", ""))
    assert parsed.gs1_message is not None and parsed.sscc is not None, parsed.sscc_error
    assert parsed.sscc.value == sscc(PREFIX, 42)
    assert parsed.sscc.company_prefix is not None
    assert parsed.sscc.value[1:8] == PREFIX and parsed.sscc.extension_digit == 0
    assert parsed.gtin is None, "the shipper carries no trade item's GTIN"


@pytest.mark.parametrize(
    ("prefix", "ref", "ext"), [("9506000", 42, 0), ("950110153", 1, 3), ("061414112345", 7, 9)]
)
def test_sscc_check_digits_agree_with_biip(prefix: str, ref: int, ext: int) -> None:
    s = sscc(prefix, ref, ext)
    assert len(s) == 18 and s.startswith(f"{ext}{prefix}")
    parsed = biip.parse("00" + s)
    assert parsed.sscc is not None, parsed.sscc_error
    assert parsed.sscc.check_digit == int(s[-1])
    wrong = s[:-1] + str((int(s[-1]) + 1) % 10)
    assert biip.parse("00" + wrong).sscc is None
    with pytest.raises(LabelError, match=f"SSCC {wrong} has check digit {wrong[-1]}, expected"):
        png(LabelData("shipper", COI, sscc=wrong))


def test_eye_readable_expiry_is_the_isbt_date() -> None:
    from edge.label_layout import eye_date

    assert eye_date(date(2026, 12, 31)) == "31 DEC 2026"
    assert eye_date(datetime(2026, 12, 31, 23, 59)) == "31 DEC 2026 23:59"
    assert eye_date(date(2027, 5, 1)) == "01 MAY 2027"
