"""Label geometry at a printer's resolution: bar codes with whole-dot modules, named stock, and
the text of an ISBT 128 label (boxed keyboard check characters, eye-readable dates).

A thermal printer prints whole dots.  A module (the narrowest bar or space) that is not a whole
number of dots is rounded differently from bar to bar, and the bars' widths vary (the first
labels varied by about 14 %).  Here every module is ``x`` dots, ``x`` chosen per symbology from
its standard's nominal and minimum module width at the printer's dpi, and every symbol is drawn
module by module from the symbology's own encoding (python-barcode for Code 128 and GS1-128,
zxing-cpp for GS1 DataMatrix): no resampling anywhere.

A label is laid out as blocks (a caption, a symbol, its eye-readable text) in rows, and printed
on the smallest named stock (:data:`STOCKS`) its content fits; the image is exactly the stock's
size in dots.  :mod:`edge.labels` decides what goes on each label.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime

import numpy as np
import zxingcpp
from barcode import Code128, Gs1_128
from PIL import Image, ImageDraw, ImageFont

from edge.errors import EdgeError

DPIS = (203, 300, 600)
DEFAULT_DPI = 300
MM_PER_INCH = 25.4
_MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


class LayoutError(EdgeError):
    """The content does not fit a label, or the printer's resolution is not one supported."""


@dataclass(frozen=True)
class Stock:
    name: str
    width_in: int
    height_in: int

    def size(self, dpi: int) -> tuple[int, int]:
        return self.width_in * dpi, self.height_in * dpi


STOCKS = (Stock("4x2", 4, 2), Stock("4x3", 4, 3), Stock("4x4", 4, 4))


@dataclass(frozen=True)
class ModuleRule:
    """A symbology's module width: the nominal (used when the symbol fits) and the minimum."""

    name: str
    nominal_mm: float
    minimum_mm: float
    quiet_modules: int  # each side


# ISBT 128 (ST-001, linear symbols): Code 128, nominal X 0.25 mm where possible and never below
# 0.17 mm; ISO/IEC 15417 quiet zones of 10X.
ISBT_CODE128 = ModuleRule("ISBT 128 Code 128", 0.25, 0.17, 10)
# GS1-128 on a logistic label (GS1 General Specifications, symbol specification table for
# logistic units): X 0.495-1.016 mm.  A GS1-128 that is not an SSCC may go down to 0.25 mm.
GS1_128_SSCC = ModuleRule("GS1-128 (SSCC)", 0.495, 0.495, 10)
GS1_128 = ModuleRule("GS1-128", 0.495, 0.25, 10)
# GS1 DataMatrix on healthcare items not scanned at retail: X 0.255-0.615 mm, nominal 0.5 mm here.
GS1_DATAMATRIX = ModuleRule("GS1 DataMatrix", 0.5, 0.255, 2)


def check_dpi(dpi: int) -> int:
    if dpi not in DPIS:
        raise LayoutError(f"printer resolution {dpi} dpi is not supported; expected one of {DPIS}")
    return dpi


def module_dots(rule: ModuleRule, dpi: int, modules: int, room: int) -> int:
    """The module width in whole dots: the one nearest the nominal width that is not below the
    minimum, narrowed (never below the minimum) until the symbol and its quiet zones fit
    ``room`` dots."""
    nominal = max(1, round(rule.nominal_mm * dpi / MM_PER_INCH))
    least = math.ceil(rule.minimum_mm * dpi / MM_PER_INCH - 1e-9)
    for x in range(max(nominal, least), least - 1, -1):
        if (modules + 2 * rule.quiet_modules) * x <= room:
            return x
    need = (modules + 2 * rule.quiet_modules) * least
    raise LayoutError(
        f"{rule.name}: a symbol of {modules} modules needs {need} dots at its minimum module "
        f"width ({rule.minimum_mm} mm at {dpi} dpi); the label has {room}"
    )


def linear_modules(data: str, *, gs1: bool) -> str:
    """The Code 128 (or GS1-128, FNC1 first) modules of ``data``, '1' a bar and '0' a space,
    start to stop; GS1 data in its HRI form with parentheses."""
    if gs1:
        return str(Gs1_128(data.replace("(", "").replace(")", "")).build()[0])
    return str(Code128(data).build()[0])


def matrix_modules(hri: str) -> np.ndarray:
    """The GS1 DataMatrix of an element string in HRI form, one array cell a module (0 dark)."""
    b = zxingcpp.create_barcode(hri, zxingcpp.BarcodeFormat.DataMatrix, gs1=True)
    return np.asarray(b.to_image(scale=1, add_quiet_zones=False))


def linear_image(modules: str, x: int, height: int, quiet: int) -> Image.Image:
    """Bars ``x`` dots a module with ``quiet`` modules of space each side."""
    row = np.array([0 if m == "1" else 255 for m in "0" * quiet + modules + "0" * quiet], np.uint8)
    return Image.fromarray(np.tile(np.repeat(row, x), (height, 1)))


def matrix_image(cells: np.ndarray, x: int, quiet: int) -> Image.Image:
    big = np.kron(cells, np.ones((x, x), np.uint8)).astype(np.uint8)
    return Image.fromarray(np.pad(big, quiet * x, constant_values=255))


def eye_date(when: date) -> str:
    """ISBT 128 eye-readable date: ``31 DEC 2026``, with ``23:59`` when a time is given."""
    text = f"{when.day:02d} {_MONTHS[when.month - 1]} {when.year:04d}"
    return f"{text} {when:%H:%M}" if isinstance(when, datetime) else text


def font(pt: float, dpi: int) -> ImageFont.FreeTypeFont:
    f = ImageFont.load_default(size=max(8, round(pt * dpi / 72)))
    assert isinstance(f, ImageFont.FreeTypeFont)
    return f


@dataclass(frozen=True)
class Text:
    text: str
    pt: float = 8.0
    check: str | None = None  # a keyboard check character, drawn in a box after the text


@dataclass(frozen=True)
class Symbol:
    image: Image.Image
    what: str  # named in an error


Item = Text | Symbol


@dataclass(frozen=True)
class Block:
    """One cell of a row: items stacked top to bottom, left-aligned."""

    items: Sequence[Item] = ()
    width: int | None = None  # dots; None: the rest of the row


def _gap(dpi: int) -> int:
    return max(2, dpi // 50)


def margin(dpi: int) -> int:
    return round(0.06 * dpi)


def row_width(dpi: int) -> int:
    """The width of a row of blocks: the stock's width less its margins (every stock is 4 in
    wide)."""
    return STOCKS[0].width_in * dpi - 2 * margin(dpi)


def room(width: int, dpi: int) -> int:
    """What a block ``width`` dots wide leaves for its items (a gap each side)."""
    return width - 3 * _gap(dpi)


def wrap(text: str, pt: float, dpi: int, width: int, lines: int = 3) -> list[str]:
    """``text`` broken at spaces into lines no wider than ``width`` dots, at most ``lines``."""
    f = font(pt, dpi)
    out: list[str] = []
    for word in text.split():
        if out and f.getlength(f"{out[-1]} {word}") <= width:
            out[-1] = f"{out[-1]} {word}"
        else:
            out.append(word)
    if len(out) > lines or any(f.getlength(line) > width for line in out):
        raise LayoutError(
            f"{text!r} does not fit {lines} lines of {width / dpi:.2f} in at {pt} pt; shorten it"
        )
    return out


def _text_size(t: Text, dpi: int) -> tuple[int, int]:
    f = font(t.pt, dpi)
    ascent, descent = f.getmetrics()
    w = round(f.getlength(t.text))
    if t.check is not None:
        w += round(f.getlength(" ")) + round(f.getlength("W")) + 2 * _gap(dpi)
    return w, ascent + descent + (2 * _gap(dpi) if t.check else 0)


def _draw_text(draw: ImageDraw.ImageDraw, t: Text, xy: tuple[int, int], dpi: int) -> None:
    f = font(t.pt, dpi)
    x, y = xy
    g = _gap(dpi)
    top = y + (g if t.check else 0)
    draw.text((x, top), t.text, fill=0, font=f)
    if t.check is None:
        return
    ascent, descent = f.getmetrics()
    left = x + round(f.getlength(t.text + " "))
    box = round(f.getlength("W")) + 2 * g
    line = max(1, dpi // 150)
    draw.rectangle((left, y, left + box, y + ascent + descent + 2 * g), outline=0, width=line)
    cw = round(f.getlength(t.check))
    draw.text((left + (box - cw) // 2, top), t.check, fill=0, font=f)


def _item_size(item: Item, dpi: int) -> tuple[int, int]:
    if isinstance(item, Text):
        return _text_size(item, dpi)
    return item.image.size


def block_width(items: Sequence[Item], dpi: int) -> int:
    """The least width of a block holding ``items`` (0 for none)."""
    return max((_item_size(i, dpi)[0] for i in items), default=-3 * _gap(dpi)) + 3 * _gap(dpi)


def block_height(b: Block, dpi: int) -> int:
    return sum(_item_size(i, dpi)[1] + _gap(dpi) for i in b.items)


def compose(kind: str, rows: list[list[Block]], dpi: int) -> tuple[Image.Image, Stock]:
    """Lay the rows out on the smallest stock they fit, with rules between rows and cells."""
    edge = margin(dpi)
    line = max(1, dpi // 150)
    width = row_width(dpi)
    placed: list[list[tuple[Block, int]]] = []
    for row in rows:
        fixed = sum(b.width for b in row if b.width is not None)
        rest = [b for b in row if b.width is None]
        widths = [
            b.width if b.width is not None else (width - fixed) // len(rest)
            for b in row
        ]
        for b, w in zip(row, widths, strict=True):
            for item in b.items:
                iw = _item_size(item, dpi)[0]
                if iw > room(w, dpi):
                    what = item.text if isinstance(item, Text) else item.what
                    raise LayoutError(
                        f"{kind} label: {what!r} is {iw} dots wide; its place on the label has "
                        f"{room(w, dpi)} at {dpi} dpi"
                    )
        placed.append(list(zip(row, widths, strict=True)))
    heights = [max(block_height(b, dpi) for b, _ in row) + 2 * _gap(dpi) for row in placed]
    need = sum(heights) + 2 * edge
    stock = next((s for s in STOCKS if s.height_in * dpi >= need), None)
    if stock is None:
        biggest = STOCKS[-1]
        raise LayoutError(
            f"{kind} label needs {need / dpi:.2f} in of height; the largest stock is "
            f"{biggest.width_in} x {biggest.height_in} in"
        )
    label = Image.new("L", stock.size(dpi), 255)
    draw = ImageDraw.Draw(label)
    y = edge
    for r, (cells, h) in enumerate(zip(placed, heights, strict=True)):
        if r:
            draw.rectangle((edge, y - line, label.width - edge - 1, y - 1), fill=0)
        x = edge
        for i, (b, w) in enumerate(cells):
            if i:
                draw.rectangle((x, y, x + line - 1, y + h - 1), fill=0)
            iy = y + _gap(dpi)
            for item in b.items:
                ix = x + 2 * _gap(dpi)
                if isinstance(item, Text):
                    _draw_text(draw, item, (ix, iy), dpi)
                else:
                    label.paste(item.image, (ix, iy))
                iy += _item_size(item, dpi)[1] + _gap(dpi)
            x += w
        y += h
    return label, stock
