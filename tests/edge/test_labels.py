"""Labels at the station: every printed label, at every supported dpi, scans back to the
identifiers it was made from (the DIN, product code, COI, expiry with its time, the GS1 data, the
shipper's SSCC); the ISBT 128 symbols sit where ST-004 puts them; check characters are boxed,
not bracketed; every label the demo prints is exactly its stock; data that cannot make a label
is refused by name."""

from __future__ import annotations

import io
from datetime import date, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest
import zxingcpp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from pypdf import PdfReader

from ebr_core.gs1 import gs1_check_digit
from ebr_core.identifiers import parse_scan
from ebr_core.isbt128 import mod37_2
from edge import label_layout as lay
from edge.engine import Engine
from edge.labels import LabelData, LabelError, expected, layout, pdf, png, render, sscc
from edge.transports.camera import decode_frame

from .conftest import COI

ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
DIN = "=A99992612345600"
facility = st.sampled_from(["A9999", "G1234", "W0042", "30001"])


@st.composite
def label_data(draw: st.DrawFn) -> tuple[LabelData, int]:
    fac = draw(facility)
    yy = draw(st.integers(20, 39))
    coi = f"&/CH{fac}{yy}{''.join(draw(st.lists(st.sampled_from(ALNUM), min_size=6, max_size=6)))}"
    din = f"={fac}{yy}{draw(st.integers(0, 999999)):06d}00"
    body = "".join(str(d) for d in draw(st.lists(st.integers(0, 9), min_size=13, max_size=13)))
    gtin = body + str(gs1_check_digit(body))
    code = st.text(alphabet=ALNUM + "-", min_size=1, max_size=10)
    kind = draw(st.sampled_from(["apheresis_bag", "product_bag", "shipper"]))
    day = draw(st.dates(date(2026, 1, 1), date(2035, 12, 31)))
    timed = draw(st.booleans())
    when: date = datetime(day.year, day.month, day.day, draw(st.integers(0, 23)),
                          draw(st.integers(0, 59))) if timed else day  # fmt: skip
    expiry = when if kind == "product_bag" or draw(st.booleans()) else None
    pcode = draw(st.none() | st.sampled_from(["=<S1234100", "=<S0042X00", "=<SA001A00"]))
    by_sscc = kind == "shipper" and draw(st.booleans())
    d = LabelData(
        kind,
        coi,
        din if kind != "shipper" else None,
        gtin if kind == "product_bag" or (kind == "shipper" and not by_sscc) else None,
        draw(code) if kind == "product_bag" else None,
        expiry,
        draw(code) if kind == "product_bag" or (kind == "shipper" and not by_sscc) else None,
        product_code=pcode,
        sscc=sscc(draw(st.sampled_from(["9506000", "950110153"])),
                  draw(st.integers(0, 99999)), draw(st.integers(0, 9))) if by_sscc else None,
    )  # fmt: skip
    return d, draw(st.sampled_from(lay.DPIS))


def scanned(d: LabelData, dpi: int = 300) -> dict[str, str | None]:
    frame = np.asarray(Image.open(io.BytesIO(png(d, dpi))).convert("L"))
    got: dict[str, str | None] = dict.fromkeys(expected(d))
    for raw in decode_frame(frame):
        s = parse_scan(raw).to_json()
        s["sscc"] = s["elements"].get("00")
        for k, before in got.items():
            if s.get(k) is not None:
                assert before in (None, s[k]), f"two symbols disagree on {k}"
                got[k] = s[k]
    return got


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(label_data())
def test_every_label_at_every_dpi_decodes_back_to_its_identifiers(
    case: tuple[LabelData, int],
) -> None:
    """Either the label is refused before printing, or it scans back to the same identifiers."""
    d, dpi = case
    try:
        d.validate()
    except LabelError as e:
        assert "would not scan back" in str(e)
        return
    assert scanned(d, dpi) == expected(d)


PRODUCT = LabelData(
    "product_bag", COI, DIN, "09506000134345", "B-2026-0042", datetime(2026, 12, 31, 23, 59),
    "BAG1", "CD19 CAR-T cells, autologous", product_code="=<S1234100",
)  # fmt: skip


def test_an_expiry_time_and_the_product_code_scan_back() -> None:
    d = LabelData("product_bag", COI, DIN, "09506000134345", "L1", datetime(2027, 2, 3, 14, 5),
                  "S1", product_code="=<S1234100")  # fmt: skip
    got = scanned(d)
    assert (got["expiry"], got["expiry_time"]) == ("2027-02-03", "2027-02-03T14:05:00+00:00")
    assert got["product_code"] == "S1234"


def test_isbt_symbols_sit_in_their_st004_quadrants() -> None:
    frame = np.asarray(render(PRODUCT))
    centre: dict[str, tuple[float, float]] = {}
    for r in zxingcpp.read_barcodes(frame):
        p = r.position
        xs = (p.top_left.x, p.top_right.x, p.bottom_left.x, p.bottom_right.x)
        ys = (p.top_left.y, p.top_right.y, p.bottom_left.y, p.bottom_right.y)
        centre[r.text[:2] if r.text[0] in "=&" else "gs1"] = (sum(xs) / 4, sum(ys) / 4)
    w = frame.shape[1]
    din, product, coi, expiry, gs1 = (centre[k] for k in ("=A", "=<", "&/", "&>", "gs1"))
    assert din[0] < w / 2 < product[0], "DIN upper left, product code upper right"
    assert abs(din[1] - product[1]) < 5, "DIN and product code on one row"
    assert coi[1] > din[1] + 50 and expiry[1] > product[1] + 50, "COI and expiry below"
    assert coi[0] < w / 2 < expiry[0], "COI lower left, expiry lower right"
    assert gs1[1] > max(coi[1], expiry[1]), "the GS1 DataMatrix below the ISBT 128 quadrants"


def test_check_characters_are_boxed_not_bracketed() -> None:
    texts = [i for row in layout(PRODUCT) for b in row for i in b.items if isinstance(i, lay.Text)]
    assert not any("[" in t.text or "]" in t.text for t in texts)
    boxed = {t.text: t.check for t in texts if t.check}
    assert boxed == {"A9999 26 123456": mod37_2("A999926123456"), "CH A9999 26 ABC123": "P"}
    # In the bitmap: the box's sides are vertical strokes exactly the box's height, which no
    # glyph and no bar (8 mm) has; two boxes, two sides each.
    frame = np.asarray(render(PRODUCT)) < 128
    f = lay.font(9.0, 300)
    ascent, descent = f.getmetrics()
    side = ascent + descent + 2 * max(2, 300 // 50) + 1
    columns = []
    for x in range(frame.shape[1]):
        col = frame[:, x].astype(np.int8)
        edges = np.flatnonzero(np.diff(np.concatenate(([0], col, [0]))))
        if any(b - a == side for a, b in zip(edges[::2], edges[1::2], strict=True)):
            columns.append(x)
    sides = [c for i, c in enumerate(columns) if i == 0 or c != columns[i - 1] + 1]
    assert len(sides) == 4, f"box sides at x = {columns}"


def test_eye_readable_expiry_is_printed_in_the_lower_right() -> None:
    (lower,) = [row for row in layout(PRODUCT) if any(i.text == "EXPIRES" for b in row
                                                      for i in b.items if isinstance(i, lay.Text))]  # fmt: skip
    right = lower[-1]
    assert [i.text for i in right.items if isinstance(i, lay.Text)] == [
        "EXPIRES", "31 DEC 2026 23:59"]  # fmt: skip
    plain = LabelData("apheresis_bag", COI, DIN, expiry=date(2027, 1, 5))
    words = [i.text for row in layout(plain) for b in row for i in b.items if isinstance(i, lay.Text)]
    assert "05 JAN 2027" in words


def test_every_label_the_demo_prints_is_exactly_its_stock(started: Engine, tmp_path: Path) -> None:
    from ctgtp.demo import _labels

    names = _labels(started, "B1", tmp_path)
    assert len(names) == 3
    sizes = {s.size(300): s for s in lay.STOCKS}
    for name in names:
        img = Image.open(tmp_path / name)
        assert img.size in sizes, f"{name} is {img.size[0]} x {img.size[1]} dots"
        assert tuple(round(v) for v in img.info["dpi"]) == (300, 300)
        stock = sizes[img.size]
        reader = PdfReader(tmp_path / name.replace(".png", ".pdf"))
        for page in reader.pages:
            assert (float(page.mediabox.width), float(page.mediabox.height)) == (
                stock.width_in * 72, stock.height_in * 72)  # fmt: skip


def test_each_label_gets_the_smallest_stock_its_content_fits() -> None:
    apheresis = LabelData("apheresis_bag", COI, DIN)
    assert render(apheresis).size == (1200, 600)
    assert render(PRODUCT).size == (1200, 900)
    more = LabelData("apheresis_bag", COI, DIN, expiry=date(2027, 1, 1), product_code="=<S1234100",
                     product="Apheresis, autologous, leukapheresis collection " * 2)  # fmt: skip
    assert render(more).size == (1200, 900)


def test_the_shipper_has_its_own_identity() -> None:
    own = sscc("9506000", 42)
    assert scanned(LabelData("shipper", COI, sscc=own))["sscc"] == own
    with pytest.raises(LabelError, match="needs its own identity, an SSCC"):
        png(LabelData("shipper", COI))
    with pytest.raises(LabelError, match="an SSCC or a GTIN, not both"):
        png(LabelData("shipper", COI, gtin="09506000134352", serial="S", sscc=own))
    with pytest.raises(LabelError, match="an SSCC is already serial"):
        png(LabelData("shipper", COI, serial="SHP-1", sscc=own))
    with pytest.raises(LabelError, match="only the shipper has one"):
        png(LabelData("apheresis_bag", COI, sscc=own))
    trade = LabelData("shipper", COI, gtin="09506000134352", serial="SHP-1")
    trade.validate()  # a GTIN of its own is allowed
    with pytest.raises(LabelError, match="GTIN 09506000134352 is a material's in the materials"):
        trade.validate(trade_items={"09506000134352", "09506000134369"})
    with pytest.raises(LabelError, match="SSCC must be 18 digits, got '12345'"):
        png(LabelData("shipper", COI, sscc="12345"))
    with pytest.raises(LabelError, match="company prefix must be 4-12 digits"):
        sscc("95A6000", 1)
    with pytest.raises(LabelError, match="serial reference 1000000000 does not fit 9 digits"):
        sscc("9506000", 10**9)


def test_bad_label_data_is_refused_by_name() -> None:
    with pytest.raises(LabelError, match="is not an ISBT 128 product code"):
        png(LabelData("apheresis_bag", COI, DIN, product_code="=A99992612345600"))
    with pytest.raises(LabelError, match="product code '=<S12' is not"):
        png(LabelData("apheresis_bag", COI, DIN, product_code="=<S12"))
    with pytest.raises(LabelError, match="does not fit 3 lines"):
        png(LabelData("apheresis_bag", COI, DIN, product="x" * 200))


def test_label_pdf_pages_are_the_stock_size() -> None:
    d = LabelData("shipper", COI, sscc=sscc("9506000", 7), expiry=date.today() + timedelta(30))
    pages = PdfReader(io.BytesIO(pdf([d, PRODUCT]))).pages
    assert [(float(p.mediabox.width), float(p.mediabox.height)) for p in pages] == [
        (288.0, 216.0), (288.0, 216.0)]  # fmt: skip
