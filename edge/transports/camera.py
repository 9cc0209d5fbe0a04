"""Camera scanning: OpenCV frames decoded with pyzbar (1D: Code 128 / GS1-128, the fast first
pass) and zxing-cpp (the symbology identifier of every Code 128, Code 128 at any rotation, GS1
DataMatrix, which zbar cannot read, and QR, which zxing-cpp reads faster here).

The symbology identifier always comes from the decoder that saw the symbol, never from the
content: zbar does not report whether a Code 128 carries FNC1 in first position (GS1-128, ``]C1``)
or not (``]C0``), and pyzbar hides what zbar knows, so every Code 128 that pyzbar reads is read
again by zxing-cpp, which reports the identifier (ISO/IEC 15424). A Code 128 that zxing-cpp cannot
confirm is not reported (the next frame is another chance), rather than reported with a guess.

A frame may hold several symbols; all are returned. The same label seen in consecutive frames is
one scan; it counts again only after it has left the view."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import cv2
import numpy as np
import zxingcpp
from pyzbar import pyzbar

PYZBAR_SCALE = 0.75  # zbar scans every line: 3/4 size keeps 1D labels readable at 2.3x speed
_REREAD_MARGIN = 24  # pixels (full resolution) around the region pyzbar reports, for the quiet zone

_F = zxingcpp.BarcodeFormat
# Tuples: the "|" form is deprecated in zxing-cpp 2.3 (its stubs still say BarcodeFormats).
_CODE128 = (_F.Code128,)
_TWO_D = (_F.DataMatrix, _F.QRCode)


@dataclass(frozen=True)
class Symbol:
    """One symbol read in a frame: what the decoder reported, and where."""

    symbology: str  # ISO/IEC 15424 symbology identifier as the decoder reported it, e.g. "]C0"
    text: str  # content; GS1 separators (FNC1 after the first position) as GS (0x1d)
    box: tuple[int, int, int, int]  # x, y, width, height in the frame (full resolution)

    @property
    def scan(self) -> str:
        """The scan as the rest of the system reads it: identifier followed by the content."""
        return self.symbology + self.text


@dataclass
class ReadStats:
    """What the camera path did, for the bench and the logs."""

    frames: int = 0
    full_res_retries: int = 0
    unconfirmed_code128: int = 0  # read by pyzbar, identifier not confirmed by zxing-cpp: dropped


STATS = ReadStats()


def _gray(frame: np.ndarray) -> np.ndarray:
    if frame.ndim == 3:
        return cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
    return frame


def _box(pos: zxingcpp.Position, dx: int = 0, dy: int = 0) -> tuple[int, int, int, int]:
    xs = [pos.top_left.x, pos.top_right.x, pos.bottom_left.x, pos.bottom_right.x]
    ys = [pos.top_left.y, pos.top_right.y, pos.bottom_left.y, pos.bottom_right.y]
    return (min(xs) + dx, min(ys) + dy, max(xs) - min(xs), max(ys) - min(ys))


def _zx_symbol(r: zxingcpp.Barcode, dx: int = 0, dy: int = 0) -> Symbol:
    sid = r.symbology_identifier
    if sid.startswith("]d") and sid != "]d2" and r.content_type == zxingcpp.ContentType.GS1:
        # A GS1 DataMatrix in a DMRE (rectangular extension) shape is reported with another
        # modifier (e.g. ]d8); the decoder has seen FNC1 in first position, which is what
        # ]d2 states, so the GS1 parser gets the identifier it expects.
        sid = "]d2"
    return Symbol(sid, r.text, _box(r.position, dx, dy))


def _zxing(
    img: np.ndarray, formats: tuple[zxingcpp.BarcodeFormat, ...], *, rotate: bool = True
) -> list[Symbol]:
    results = zxingcpp.read_barcodes(
        img,
        formats=formats,  # type: ignore[arg-type]
        text_mode=zxingcpp.TextMode.Plain,
        try_rotate=rotate,  # 90 and 270 degrees; 180 is a right-to-left read, always tried
    )
    return [_zx_symbol(r) for r in results if r.valid]


def _sweep_code128(gray: np.ndarray) -> list[Symbol]:
    """zxing-cpp over the whole frame upright and turned a quarter (its own ``try_rotate`` turns
    the frame only when the upright pass finds nothing, which misses a turned label beside an
    upright one); boxes in the frame's coordinates."""
    out = []
    for s in _zxing(gray, _CODE128, rotate=False):
        out.append(s)
    width = gray.shape[1]
    for s in _zxing(np.ascontiguousarray(np.rot90(gray)), _CODE128, rotate=False):
        x, y, w, h = s.box  # in the turned frame: x runs down the frame, y right to left
        out.append(Symbol(s.symbology, s.text, (width - y - h, x, h, w)))
    return out


def reduce(gray: np.ndarray, scale: float = PYZBAR_SCALE) -> np.ndarray:
    """The frame pyzbar's first pass reads: bilinear is 8x cheaper than area averaging here and
    reads the same labels."""
    return cv2.resize(gray, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)


def _zbar_code128(gray: np.ndarray, scale: float) -> list[tuple[str, tuple[int, int, int, int]]]:
    """Code 128 texts pyzbar reads, with their regions in full-resolution coordinates."""
    img = gray if scale == 1.0 else reduce(gray, scale)
    out = []
    for r in pyzbar.decode(img, symbols=[pyzbar.ZBarSymbol.CODE128]):
        # zbar may pass GS1-128's leading FNC1 on as GS; zxing-cpp's content never starts with it.
        text = r.data.decode("latin-1").lstrip("\x1d")
        x, y, w, h = (round(v / scale) for v in r.rect)
        out.append((text, (x, y, w, h)))
    return out


def _reread(gray: np.ndarray, text: str, box: tuple[int, int, int, int]) -> Symbol | None:
    """zxing-cpp on the region where pyzbar read ``text``: the identifier, or None."""
    x, y, w, h = box
    m = _REREAD_MARGIN
    # zbar's rectangle can be a thin line across the bars: take the full height the bars may
    # have, up to the symbol's width, so zxing-cpp sees enough rows.
    pad_y = max(m, w // 2)
    x0, y0 = max(0, x - m), max(0, y - pad_y)
    crop = gray[y0 : y + h + pad_y, x0 : x + w + m]
    for img in (crop, cv2.resize(crop, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)):
        for s in _zxing(img, _CODE128):
            if s.text == text:
                return Symbol(s.symbology, s.text, box)
    return None


def read_code128(
    frame: np.ndarray, stats: ReadStats = STATS, *, sweep: bool = True
) -> list[Symbol]:
    """Every Code 128 in the frame, with the identifier zxing-cpp reports (``]C0`` / ``]C1``).

    pyzbar at 3/4 size is the fast first pass; zxing-cpp re-reads the region of each hit for its
    identifier. When that pass finds nothing, zxing-cpp reads the whole frame (Code 128 in any
    of the four orientations, a few milliseconds), and then pyzbar at full resolution.  With
    ``sweep`` (the default; about 2 ms a frame here), zxing-cpp reads the whole frame even when
    pyzbar found something, so a second Code 128 at another quarter turn is read too."""
    gray = _gray(frame)
    hits = _zbar_code128(gray, PYZBAR_SCALE)
    out: list[Symbol] = []
    if sweep and hits:
        for s in _sweep_code128(gray):
            if all(s.scan != o.scan for o in out):
                out.append(s)
    if not hits:
        for s in _zxing(gray, _CODE128):  # zxing-cpp may report one symbol twice
            if all(s.scan != o.scan for o in out):
                out.append(s)
        if out:
            return out
        stats.full_res_retries += 1
        hits = _zbar_code128(gray, 1.0)
    for text, box in hits:
        if any(s.text == text for s in out):
            continue
        confirmed = _reread(gray, text, box)
        if confirmed is None:
            stats.unconfirmed_code128 += 1
        else:
            out.append(confirmed)
    return out


def read_2d(frame: np.ndarray) -> list[Symbol]:
    """GS1 DataMatrix and QR codes in the frame, with zxing-cpp's identifiers."""
    return _zxing(_gray(frame), _TWO_D)


def read_symbols(
    frame: np.ndarray, stats: ReadStats = STATS, *, sweep: bool = True
) -> list[Symbol]:
    """Every symbol in the frame (Code 128, DataMatrix, QR), each once (``sweep``: see
    :func:`read_code128`)."""
    stats.frames += 1
    gray = _gray(frame)
    out: list[Symbol] = []
    for s in read_code128(gray, stats, sweep=sweep) + read_2d(gray):
        if all(s.scan != o.scan for o in out):
            out.append(s)
    return out


def decode_pyzbar(frame: np.ndarray) -> list[str]:
    """Code 128 scans (identifier + content), identifiers confirmed by zxing-cpp."""
    return [s.scan for s in read_code128(frame)]


def decode_zxing(frame: np.ndarray) -> list[str]:
    """DataMatrix and QR scans (identifier + content)."""
    return [s.scan for s in read_2d(frame)]


def decode_frame(frame: np.ndarray) -> list[str]:
    """Every scan in the frame (identifier + content), each once."""
    return [s.scan for s in read_symbols(frame)]


@dataclass
class CameraScanner:
    """Turns a stream of frames into scans (one per label appearance).

    A label is in view from the frame it is first read until it has been missing from
    ``leave_after`` consecutive frames and for at least ``hold_s`` seconds; only its first
    reading in view is a scan. The defaults (one empty frame, no hold) suit rendered frames; a
    live camera, where a frame may blur and miss a label still in front of it, wants several
    frames and a short hold (``CameraScanner.live()``)."""

    leave_after: int = 1
    hold_s: float = 0.0
    # Every this many frames, zxing-cpp also sweeps the whole frame for Code 128 when pyzbar
    # found one, so a second label at another quarter turn is read (1: every frame).
    sweep_every: int = 1
    clock: Callable[[], float] = time.monotonic
    frames: int = 0
    _visible: dict[str, tuple[int, float]] = field(default_factory=dict)  # scan -> last seen

    @classmethod
    def live(cls) -> CameraScanner:
        """Settings for a real camera at 15-30 frames/s: gone after 5 frames and 0.5 s."""
        return cls(leave_after=5, hold_s=0.5)

    def process(self, frame: np.ndarray) -> list[str]:
        self.frames += 1
        now = self.clock()
        sweep = self.frames % self.sweep_every == 0
        seen = [s.scan for s in read_symbols(frame, sweep=sweep)]
        new = sorted({s for s in seen if s not in self._visible})
        for s in seen:
            self._visible[s] = (self.frames, now)
        for s, (n, t) in list(self._visible.items()):
            if self.frames - n >= self.leave_after and now - t >= self.hold_s:
                del self._visible[s]
        return new

    def from_capture(self, source: int | str) -> Iterator[str]:
        """Scans from a real camera (device index) or a video file, via OpenCV."""
        cap = cv2.VideoCapture(source)
        try:
            while True:
                ok, img = cap.read()
                if not ok:
                    return
                yield from self.process(img)
        finally:
            cap.release()
