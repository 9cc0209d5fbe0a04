"""Camera decode rate on the same 1280×720 frames (rotated, blurred, noisy labels).

pyzbar path: our 1D decode (downscale + zbar + symbology mapping); ceiling: the raw
``pyzbar.decode`` call on the same pixels (pre-scaled outside the timing).  zxingcpp path: our
DataMatrix/QR decode; ceiling: raw ``zxingcpp.read_barcodes`` on the same frames.  Floor
(issue 4): pyzbar path >= 30 frames/s.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import cv2
import zxingcpp
from pyzbar import pyzbar

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import emit

from edge.transports.camera import PYZBAR_SCALE, decode_pyzbar, decode_zxing
from firmware_sim.camera import FrameStyle, code128, frame, gs1_datamatrix, qr

N = 20


def rate(fn, frames) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    hits = sum(1 for f in frames if fn(f))
    dt = time.perf_counter() - t0
    assert hits == len(frames), f"decoded {hits}/{len(frames)}"
    return len(frames) / dt


def main() -> None:
    styles = [FrameStyle(angle=(i % 9) - 4, blur=3, noise=6, seed=i) for i in range(N)]
    one_d = [frame(code128("&/CHA999926ABC123"), s) for s in styles]
    two_d = [
        frame(gs1_datamatrix("(01)09506000134352(10)TM2611(17)270331"), s)
        if i % 2
        else frame(qr("&/CHA999926ABC123"), s)
        for i, s in enumerate(styles)
    ]
    small = [
        cv2.resize(f, None, fx=PYZBAR_SCALE, fy=PYZBAR_SCALE, interpolation=cv2.INTER_AREA)
        for f in one_d
    ]
    raw_z = rate(lambda f: pyzbar.decode(f, symbols=[pyzbar.ZBarSymbol.CODE128]), small)
    emit(
        "camera decode, pyzbar path (Code 128, 1280x720)",
        rate(decode_pyzbar, one_d),
        "frames/s",
        raw_z,
    )
    raw_x = rate(zxingcpp.read_barcodes, two_d)
    emit(
        "camera decode, zxingcpp path (GS1 DataMatrix + QR, 1280x720)",
        rate(decode_zxing, two_d),
        "frames/s",
        raw_x,
    )


if __name__ == "__main__":
    main()
