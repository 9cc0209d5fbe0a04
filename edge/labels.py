"""Labels for the apheresis bag, the final product bag and the shipper, as PNG and PDF.

Each label carries the ISBT 128 chain-of-identity identifier (data structure 040) and, where
there is one, the DIN (data structure 001) as Code 128 with their eye-readable text and keyboard
check character; the product bag adds a GS1 DataMatrix (GTIN, expiry, batch, serial) and the
shipper a GS1-128 (GTIN, serial).  :func:`expected` states what a scan of each symbol must parse
back to; the round-trip test decodes every printed label and compares.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from datetime import date

import zxingcpp
from barcode import Code128, Gs1_128
from barcode.writer import ImageWriter
from PIL import Image, ImageDraw, ImageFont

from ebr_core.custody import LABELS
from ebr_core.errors import IdentifierError
from ebr_core.gs1 import gs1_check_digit
from ebr_core.identifiers import parse_scan
from ebr_core.isbt128 import coi_from_text, parse_din
from edge.errors import EdgeError

DPI = 300
WIDTH = 1200  # 4 inches at 300 dpi


class LabelError(EdgeError):
    """A label cannot be made from the data given (names the field and what is expected)."""


@dataclass(frozen=True)
class LabelData:
    kind: str  # apheresis_bag | product_bag | shipper
    coi: str  # '&/CH' + 13 characters
    din: str | None = None  # '=' + 13 characters + 2 flag digits
    gtin: str | None = None
    batch: str | None = None
    expiry: date | None = None
    serial: str | None = None
    product: str = ""

    def validate(self) -> None:
        if self.kind not in LABELS:
            raise LabelError(f"label kind {self.kind!r} is not one of {', '.join(LABELS)}")
        try:
            coi_from_text(self.coi)
            if self.din is not None:
                parse_din(self.din)
        except IdentifierError as e:
            raise LabelError(f"{self.kind} label: {e}") from e
        if self.kind in ("product_bag", "shipper"):
            if not self.gtin or len(self.gtin) != 14 or not self.gtin.isdigit():
                raise LabelError(f"{self.kind} label: GTIN must be 14 digits, got {self.gtin!r}")
            if str(gs1_check_digit(self.gtin[:13])) != self.gtin[13]:
                raise LabelError(f"{self.kind} label: GTIN {self.gtin} has a wrong check digit")
            if not self.serial:
                raise LabelError(f"{self.kind} label: a serial number is required")
        if self.kind == "product_bag" and (not self.batch or self.expiry is None):
            raise LabelError("product_bag label: batch and expiry are required")
        if self.kind != "apheresis_bag":
            self._scans_back()

    def _scans_back(self) -> None:
        """Refuse a GS1 symbol whose scan this system would itself refuse (e.g. a serial that
        reads as another element string): never print a label that cannot be read back."""
        es = f"01{self.gtin}"
        if self.kind == "product_bag":
            assert self.expiry is not None
            es += f"17{self.expiry:%y%m%d}10{self.batch}\x1d"
        es += f"21{self.serial}"
        try:
            # Without a symbology identifier: the strictest reading, a keyboard wedge that may
            # drop the separators (a scan with ]d2 or ]C1 carries them and is trusted).
            got = parse_scan(es)
        except IdentifierError as e:
            raise LabelError(f"{self.kind} label would not scan back: {e}") from e
        want = (self.gtin, self.serial, self.batch if self.kind == "product_bag" else None)
        if (got.gtin, got.serial, got.batch) != want:
            raise LabelError(f"{self.kind} label would scan back as {got.to_json()}")


@dataclass(frozen=True)
class Symbol:
    symbology: str  # code128 | gs1_128 | gs1_datamatrix
    data: str  # what is encoded (GS1: the HRI form with parentheses)
    eye_readable: str


def symbols(d: LabelData) -> list[Symbol]:
    d.validate()
    coi = coi_from_text(d.coi)
    out = [Symbol("code128", coi.data(), coi.eye_readable())]
    if d.din is not None:
        din = parse_din(d.din)
        out.append(Symbol("code128", din.data(), din.eye_readable()))
    if d.kind == "product_bag":
        assert d.expiry is not None
        hri = f"(01){d.gtin}(17){d.expiry:%y%m%d}(10){d.batch}(21){d.serial}"
        out.append(Symbol("gs1_datamatrix", hri, hri))
    elif d.kind == "shipper":
        hri = f"(01){d.gtin}(21){d.serial}"
        out.append(Symbol("gs1_128", hri, hri))
    return out


def expected(d: LabelData) -> dict[str, str | None]:
    """The identifiers a scan of this label must give back."""
    coi = coi_from_text(d.coi)
    din = parse_din(d.din) if d.din else None
    return {
        "coi": coi.data(),
        "coi_check": coi.check,
        "din": din.din if din else None,
        "din_check": din.check if din else None,
        "gtin": d.gtin if d.kind != "apheresis_bag" else None,
        "batch": d.batch if d.kind == "product_bag" else None,
        "expiry": d.expiry.isoformat() if d.kind == "product_bag" and d.expiry else None,
        "serial": d.serial if d.kind != "apheresis_bag" else None,
    }


_WRITER = {
    "module_width": 0.3,
    "module_height": 12,
    "quiet_zone": 6.5,
    "write_text": False,
    "dpi": DPI,
}


def _image(s: Symbol) -> Image.Image:
    if s.symbology == "gs1_datamatrix":
        b = zxingcpp.create_barcode(s.data, zxingcpp.BarcodeFormat.DataMatrix, gs1=True)
        img = Image.fromarray(zxingcpp.write_barcode_to_image(b, scale=10))
        framed = Image.new("L", (img.width + 80, img.height + 80), 255)
        framed.paste(img, (40, 40))
        return framed
    buf = io.BytesIO()
    if s.symbology == "gs1_128":
        Gs1_128(s.data.replace("(", "").replace(")", ""), writer=ImageWriter()).write(buf, _WRITER)
    else:
        Code128(s.data, writer=ImageWriter()).write(buf, _WRITER)
    return Image.open(buf).convert("L")


_TITLES = {
    "apheresis_bag": "APHERESIS MATERIAL - AUTOLOGOUS USE ONLY",
    "product_bag": "CAR-T CELL PRODUCT - FOR AUTOLOGOUS USE ONLY",
    "shipper": "CRYOGENIC SHIPPER - KEEP BELOW -150 C",
}


def render(d: LabelData) -> Image.Image:
    """The label as a greyscale image (symbols stacked, each with its eye-readable text)."""
    parts = [(_image(s), s.eye_readable) for s in symbols(d)]
    font = ImageFont.load_default(size=34)
    small = ImageFont.load_default(size=28)
    height = 140 + sum(img.height + 70 for img, _ in parts) + 40
    label = Image.new("L", (WIDTH, height), 255)
    draw = ImageDraw.Draw(label)
    draw.text((30, 20), _TITLES[d.kind], fill=0, font=font)
    if d.product:
        draw.text((30, 70), d.product, fill=0, font=small)
    y = 130
    for img, text in parts:
        if img.width > WIDTH - 20:
            raise LabelError(f"{d.kind} label: symbol {text!r} is too wide for a 4-inch label")
        label.paste(img, ((WIDTH - img.width) // 2, y))
        y += img.height + 5
        draw.text((60, y), text, fill=0, font=small)
        y += 65
    return label


def png(d: LabelData) -> bytes:
    buf = io.BytesIO()
    render(d).save(buf, format="PNG", dpi=(DPI, DPI))
    return buf.getvalue()


def pdf(labels: list[LabelData]) -> bytes:
    """One page per label, at its physical size."""
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, invariant=1)
    for d in labels:
        img = render(d)
        w, h = img.width * 72 / DPI, img.height * 72 / DPI
        c.setPageSize((w, h))
        c.drawImage(ImageReader(img.convert("RGB")), 0, 0, w, h)
        c.showPage()
    c.save()
    return buf.getvalue()
