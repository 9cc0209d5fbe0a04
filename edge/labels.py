"""Labels for the apheresis bag, the final product bag and the shipper, as PNG and PDF.

Each label is laid out in the style of ISBT 128's cellular therapy labels (ICCBBA ST-004): the DIN
(data structure 001) upper left, the product code (003) upper right, the chain-of-identity
identifier (040) lower left with the autologous statement, the expiry (004 or 005) lower right;
each as Code 128 with its eye-readable text, the DIN's and the COI's keyboard check character in
a box.  The product bag adds a GS1 DataMatrix (GTIN, expiry, batch, serial).  The shipper is a
logistic unit: it carries its own SSCC (GS1 AI 00) as GS1-128, or its own GTIN and serial, never
a trade item's.  Bars are whole dots at the printer's dpi and the label is exactly a named stock
(:mod:`edge.label_layout`).  :func:`expected` states what a scan of each symbol must parse back
to; the round-trip test decodes every printed label and compares.
"""

from __future__ import annotations

import io
from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, date, datetime

from PIL import Image

from ebr_core.custody import LABELS
from ebr_core.errors import IdentifierError
from ebr_core.gs1 import gs1_check_digit
from ebr_core.identifiers import parse_scan
from ebr_core.isbt128 import coi_from_text, parse_din, parse_isbt128
from edge import label_layout as lay
from edge.errors import EdgeError

DPI = lay.DEFAULT_DPI


class LabelError(EdgeError):
    """A label cannot be made from the data given (names the field and what is expected)."""


@dataclass(frozen=True)
class LabelData:
    kind: str  # apheresis_bag | product_bag | shipper
    coi: str  # '&/CH' + 13 characters
    din: str | None = None  # '=' + 13 characters + 2 flag digits
    gtin: str | None = None
    batch: str | None = None
    expiry: date | None = None  # a datetime prints (and encodes) its time too
    serial: str | None = None
    product: str = ""
    product_code: str | None = None  # ISBT 128 product code, '=<' + 8 characters
    sscc: str | None = None  # the shipper's own SSCC, 18 digits (see :func:`sscc`)

    def validate(self, *, trade_items: Collection[str] = ()) -> None:
        """Refuse data that cannot make this label; ``trade_items`` are the GTINs of the site's
        materials, which a shipper must never carry as its own."""
        if self.kind not in LABELS:
            raise LabelError(f"label kind {self.kind!r} is not one of {', '.join(LABELS)}")
        try:
            coi_from_text(self.coi)
            if self.din is not None:
                parse_din(self.din)
            if self.product_code is not None:
                m = parse_isbt128(self.product_code)
                if m.product is None or len(m.structures) != 1:
                    raise LabelError(
                        f"{self.kind} label: {self.product_code!r} is not an ISBT 128 product "
                        "code ('=<' + 8 characters)"
                    )
        except IdentifierError as e:
            raise LabelError(f"{self.kind} label: {e}") from e
        if self.sscc is not None and self.kind != "shipper":
            raise LabelError(
                f"{self.kind} label: an SSCC identifies a logistic unit; only the shipper has one"
            )
        if self.kind == "shipper":
            self._shipper_identity(trade_items)
        if self.kind == "product_bag":
            self._gtin_and_serial()
            if not self.batch or self.expiry is None:
                raise LabelError("product_bag label: batch and expiry are required")
        if self.kind != "apheresis_bag":
            self._scans_back()

    def _gtin_and_serial(self) -> None:
        if not self.gtin or len(self.gtin) != 14 or not self.gtin.isdigit():
            raise LabelError(f"{self.kind} label: GTIN must be 14 digits, got {self.gtin!r}")
        if str(gs1_check_digit(self.gtin[:13])) != self.gtin[13]:
            raise LabelError(f"{self.kind} label: GTIN {self.gtin} has a wrong check digit")
        if not self.serial:
            raise LabelError(f"{self.kind} label: a serial number is required")

    def _shipper_identity(self, trade_items: Collection[str]) -> None:
        if self.sscc is None and self.gtin is None:
            raise LabelError(
                "shipper label: the shipper needs its own identity, an SSCC (GS1 AI 00, 18 "
                "digits) or its own GTIN with a serial"
            )
        if self.sscc is not None and self.gtin is not None:
            raise LabelError(
                "shipper label: give the shipper an SSCC or a GTIN, not both (one identity)"
            )
        if self.sscc is not None:
            check_sscc(self.sscc, "shipper label: ")
            if self.serial:
                raise LabelError(
                    "shipper label: an SSCC is already serial; a serial (AI 21) needs a GTIN"
                )
            return
        self._gtin_and_serial()
        if self.gtin in trade_items:
            raise LabelError(
                f"shipper label: GTIN {self.gtin} is a material's in the materials list; the "
                "shipper needs its own GTIN, or an SSCC"
            )

    def _scans_back(self) -> None:
        """Refuse a GS1 symbol whose scan this system would itself refuse (e.g. a serial that
        reads as another element string): never print a label that cannot be read back."""
        want: tuple[str | None, ...] = (None, None, None)
        if self.sscc is not None:
            es = f"00{self.sscc}"
        else:
            es = f"01{self.gtin}"
            if self.kind == "product_bag":
                assert self.expiry is not None
                es += f"17{self.expiry:%y%m%d}10{self.batch}\x1d"
            es += f"21{self.serial}"
            want = (self.gtin, self.serial, self.batch if self.kind == "product_bag" else None)
        try:
            # Without a symbology identifier: the strictest reading, a keyboard wedge that may
            # drop the separators (a scan with ]d2 or ]C1 carries them and is trusted).
            got = parse_scan(es)
        except IdentifierError as e:
            raise LabelError(f"{self.kind} label would not scan back: {e}") from e
        if (got.gtin, got.serial, got.batch) != want or got.elements.get("00") != self.sscc:
            raise LabelError(f"{self.kind} label would scan back as {got.to_json()}")


def check_sscc(value: str, where: str = "") -> str:
    if len(value) != 18 or not value.isdigit() or not value.isascii():
        raise LabelError(f"{where}SSCC must be 18 digits, got {value!r}")
    want = gs1_check_digit(value[:17])
    if int(value[17]) != want:
        raise LabelError(f"{where}SSCC {value} has check digit {value[17]}, expected {want}")
    return value


def sscc(company_prefix: str, serial_reference: int, extension: int = 0) -> str:
    """The SSCC (GS1 AI 00) of a logistic unit: extension digit, the site's GS1 company prefix
    (from its configuration), a serial reference unique to the unit, the mod-10 check digit."""
    if not (4 <= len(company_prefix) <= 12 and company_prefix.isdigit()):
        raise LabelError(f"GS1 company prefix must be 4-12 digits, got {company_prefix!r}")
    if not 0 <= extension <= 9:
        raise LabelError(f"SSCC extension digit must be 0-9, got {extension}")
    width = 16 - len(company_prefix)
    if not 0 <= serial_reference < 10**width:
        raise LabelError(
            f"SSCC serial reference {serial_reference} does not fit {width} digits after the "
            f"company prefix {company_prefix}"
        )
    body = f"{extension}{company_prefix}{serial_reference:0{width}d}"
    return body + str(gs1_check_digit(body))


@dataclass(frozen=True)
class Symbol:
    role: str  # din | product_code | coi | expiry | gs1
    symbology: str  # code128 | gs1_128 | gs1_datamatrix
    data: str  # what is encoded (GS1: the HRI form with parentheses)
    eye_readable: str
    check: str | None = None  # the keyboard check character, printed in a box


def _isbt_expiry(when: date) -> str:
    """Expiration date (004, ``=>cyyjjj``) or, with a time, date and time (005)."""
    cyy, jjj = f"{when.year % 1000:03d}", f"{when.timetuple().tm_yday:03d}"
    return f"&>{cyy}{jjj}{when:%H%M}" if isinstance(when, datetime) else f"=>{cyy}{jjj}"


def _day(when: date) -> date:
    return when.date() if isinstance(when, datetime) else when


def symbols(d: LabelData) -> list[Symbol]:
    d.validate()
    coi = coi_from_text(d.coi)
    body = f"CH {coi.facility} {coi.year} {coi.serial}"
    out = [Symbol("coi", "code128", coi.data(), body, coi.check)]
    if d.din is not None:
        din = parse_din(d.din)
        text = f"{din.facility} {din.year} {din.sequence}"
        out.append(Symbol("din", "code128", din.data(), text, din.check))
    if d.product_code is not None:
        out.append(Symbol("product_code", "code128", d.product_code, d.product_code[2:]))
    if d.expiry is not None:
        out.append(Symbol("expiry", "code128", _isbt_expiry(d.expiry), lay.eye_date(d.expiry)))
    if d.kind == "product_bag":
        assert d.expiry is not None
        hri = f"(01){d.gtin}(17){d.expiry:%y%m%d}(10){d.batch}(21){d.serial}"
        out.append(Symbol("gs1", "gs1_datamatrix", hri, hri))
    elif d.kind == "shipper":
        hri = f"(00){d.sscc}" if d.sscc is not None else f"(01){d.gtin}(21){d.serial}"
        out.append(Symbol("gs1", "gs1_128", hri, hri))
    return out


def expected(d: LabelData) -> dict[str, str | None]:
    """The identifiers a scan of this label must give back."""
    coi = coi_from_text(d.coi)
    din = parse_din(d.din) if d.din else None
    timed = isinstance(d.expiry, datetime) and f"{d.expiry:%H%M}" != "2359"
    return {
        "coi": coi.data(),
        "coi_check": coi.check,
        "din": din.din if din else None,
        "din_check": din.check if din else None,
        "product_code": d.product_code[2:7] if d.product_code else None,
        "gtin": d.gtin if d.kind != "apheresis_bag" else None,
        "batch": d.batch if d.kind == "product_bag" else None,
        "expiry": _day(d.expiry).isoformat() if d.expiry else None,
        "expiry_time": d.expiry.replace(tzinfo=UTC).isoformat()
        if isinstance(d.expiry, datetime) and timed
        else None,
        "serial": d.serial if d.kind != "apheresis_bag" else None,
        "sscc": d.sscc if d.kind == "shipper" else None,
    }


_TITLES = {
    "apheresis_bag": "APHERESIS MATERIAL - AUTOLOGOUS USE ONLY",
    "product_bag": "CAR-T CELL PRODUCT - FOR AUTOLOGOUS USE ONLY",
    "shipper": "CRYOGENIC SHIPPER - KEEP BELOW -150 C",
}
# ST-004 places the ISBT 128 symbols in quadrants.  The COI's Code 128 is the longest (about
# 211 modules, 2.1 in at 0.25 mm): the lower row gives it what it needs and the expiry the rest.
_ISBT_BAR_MM = 10.0  # ISBT 128's recommended height on a container label
_SSCC_BAR_MM = 31.75  # GS1 logistic label: at least 31.75 mm
_DATAMATRIX_WIDTH_IN = 1.0
CAPTION_PT, EYE_PT, TITLE_PT, HRI_PT = 6.0, 9.0, 9.0, 8.0


def _linear(s: Symbol, rule: lay.ModuleRule, dpi: int, width: int, bar_mm: float) -> lay.Symbol:
    modules = lay.linear_modules(s.data, gs1=s.symbology == "gs1_128")
    x = lay.module_dots(rule, dpi, len(modules), lay.room(width, dpi))
    height = round(bar_mm * dpi / lay.MM_PER_INCH)
    return lay.Symbol(lay.linear_image(modules, x, height, rule.quiet_modules), s.data)


def _isbt(caption: str, s: Symbol | None, dpi: int, width: int) -> list[lay.Item]:
    if s is None:
        return []
    bars = _linear(s, lay.ISBT_CODE128, dpi, width, _ISBT_BAR_MM)
    return [lay.Text(caption, CAPTION_PT), bars, lay.Text(s.eye_readable, EYE_PT, s.check)]


def layout(d: LabelData, dpi: int = DPI) -> list[list[lay.Block]]:
    """The label's rows of blocks (ST-004 quadrants, then the GS1 band)."""
    dpi = lay.check_dpi(dpi)
    by = {s.role: s for s in symbols(d)}
    full = lay.row_width(dpi)
    half = full // 2
    rows = [[lay.Block([lay.Text(_TITLES[d.kind], TITLE_PT)])]]
    product = [
        lay.Text(line, HRI_PT) for line in lay.wrap(d.product, HRI_PT, dpi, lay.room(half, dpi))
    ]
    if "din" in by or "product_code" in by or product:
        upper_right = _isbt("PRODUCT CODE", by.get("product_code"), dpi, half) + product
        rows.append([lay.Block(_isbt("DIN", by.get("din"), dpi, half)), lay.Block(upper_right)])
    coi = [*_isbt("CHAIN OF IDENTITY", by["coi"], dpi, full)]
    if "AUTOLOGOUS" not in _TITLES[d.kind]:  # the bags' titles already say it
        coi.append(lay.Text("FOR AUTOLOGOUS USE ONLY", CAPTION_PT))
    coi_w = max(half, lay.block_width(coi, dpi))
    expiry = _isbt("EXPIRES", by.get("expiry"), dpi, full)
    if lay.block_width(expiry, dpi) <= full - coi_w:
        rows.append([lay.Block(coi, coi_w), lay.Block(expiry)])
    else:  # a long COI symbol: the expiry keeps the lower right, on a row of its own
        rows.append([lay.Block(coi)])
        rows.append([lay.Block([], coi_w), lay.Block(expiry)])
    gs1 = by.get("gs1")
    if gs1 is not None and gs1.symbology == "gs1_datamatrix":
        cells = lay.matrix_modules(gs1.data)  # square, or rectangular (DMRE) for short data
        hri: list[lay.Item] = [lay.Text(f"({p}", HRI_PT) for p in gs1.data.split("(")[1:]]
        room = lay.room(full - lay.block_width(hri, dpi), dpi)
        x = lay.module_dots(lay.GS1_DATAMATRIX, dpi, cells.shape[1], room)
        matrix = lay.Symbol(lay.matrix_image(cells, x, lay.GS1_DATAMATRIX.quiet_modules), gs1.data)
        width = max(round(_DATAMATRIX_WIDTH_IN * dpi), lay.block_width([matrix], dpi))
        rows.append([lay.Block([matrix], width), lay.Block(hri)])
    elif gs1 is not None:
        rule = lay.GS1_128_SSCC if d.sscc is not None else lay.GS1_128
        bars = _linear(gs1, rule, dpi, full, _SSCC_BAR_MM)
        caption = "SSCC" if d.sscc is not None else "GTIN / SERIAL"
        rows.append([lay.Block([lay.Text(caption, CAPTION_PT), bars, lay.Text(gs1.data, HRI_PT)])])
    return rows


def render(d: LabelData, dpi: int = DPI) -> Image.Image:
    """The label as a greyscale image, exactly the size of its stock at ``dpi``."""
    return stocked(d, dpi)[0]


def stocked(d: LabelData, dpi: int = DPI) -> tuple[Image.Image, lay.Stock]:
    """The label's image and the stock it was laid out for (the smallest its content fits)."""
    try:
        return lay.compose(d.kind, layout(d, dpi), dpi)
    except lay.LayoutError as e:
        raise LabelError(str(e)) from e


def png(d: LabelData, dpi: int = DPI) -> bytes:
    buf = io.BytesIO()
    render(d, dpi).save(buf, format="PNG", dpi=(dpi, dpi))
    return buf.getvalue()


def pdf(labels: list[LabelData], dpi: int = DPI) -> bytes:
    """One page per label, at its stock's physical size."""
    from reportlab.lib.utils import ImageReader
    from reportlab.pdfgen import canvas

    buf = io.BytesIO()
    c = canvas.Canvas(buf, invariant=1)
    for d in labels:
        img, stock = stocked(d, dpi)
        w, h = stock.width_in * 72, stock.height_in * 72
        c.setPageSize((w, h))
        c.drawImage(ImageReader(img.convert("RGB")), 0, 0, w, h)
        c.showPage()
    c.save()
    return buf.getvalue()


def examples() -> dict[str, LabelData]:
    """One label of each kind, as the demo's batch has them: the pictures in docs/standards.md
    (``python -m edge.labels docs/img`` writes them)."""
    coi, din = "&/CHA999926ABC123", "=A99992612345600"
    return {
        "apheresis_bag": LabelData("apheresis_bag", coi, din, product="Apheresis, autologous"),
        "product_bag": LabelData(
            "product_bag", coi, din, "09506000134345", "B-2026-0042",
            datetime(2027, 5, 31, 14, 30), "BAG1", "CD19 CAR-T cells, autologous",
            product_code="=<S1234100",
        ),
        "shipper": LabelData("shipper", coi, sscc=sscc("9506000", 42)),
    }  # fmt: skip


if __name__ == "__main__":
    import sys
    from pathlib import Path

    for kind, d in examples().items():
        path = Path(sys.argv[1]) / f"labels-{kind.replace('_', '-')}.png"
        render(d).convert("1").save(path, format="PNG", dpi=(DPI, DPI), optimize=True)
        sys.stdout.write(f"{path} {path.stat().st_size} bytes\n")
