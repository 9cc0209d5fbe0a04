"""Camera decode rate on the same 1280×720 frames (rotated, blurred, noisy labels).

1D path: our Code 128 read (pyzbar at 3/4 size, zxing-cpp for the symbology identifier and the
other orientations); ceiling: the raw ``pyzbar.decode`` call on the same pixels (pre-scaled
outside the timing).  Floor (issue 4, issue 17): >= 30 frames/s and >= 0.7 of the ceiling.
2D path: our DataMatrix/QR decode; ceiling: raw ``zxingcpp.read_barcodes`` on the same frames.
Full-resolution retry (issue 17): the 1D path on frames with nothing to read, where every frame
pays the retry; ceiling: the same path without the retry (the reduced pass alone).
"""

from __future__ import annotations

import sys
from pathlib import Path

import zxingcpp
from pyzbar import pyzbar

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_rates, emit

from edge.transports import camera
from edge.transports.camera import PYZBAR_SCALE, ReadStats, decode_pyzbar, decode_zxing
from firmware_sim.camera import FrameStyle, code128, frame, gs1_datamatrix, qr

N = 20


def runner(fn, frames, expect_hits: bool = True):  # type: ignore[no-untyped-def]
    def run() -> int:
        hits = sum(1 for f in frames if fn(f))
        want = len(frames) if expect_hits else 0
        assert hits == want, f"decoded {hits}/{len(frames)}, expected {want}"
        return len(frames)

    return run


def main() -> None:
    styles = [FrameStyle(angle=(i % 9) - 4, blur=3, noise=6, seed=i) for i in range(N)]
    one_d = [frame(code128("&/CHA999926ABC123"), s) for s in styles]
    two_d = [
        frame(gs1_datamatrix("(01)09506000134352(10)TM2611(17)270331"), s)
        if i % 2
        else frame(qr("&/CHA999926ABC123"), s)
        for i, s in enumerate(styles)
    ]
    empty = [frame(None, FrameStyle(blur=3, noise=6, seed=i)) for i in range(N)]

    def small(fs):  # type: ignore[no-untyped-def]
        return [camera.reduce(f) for f in fs]  # the same pixels pyzbar's first pass reads

    def raw_zbar(f):  # type: ignore[no-untyped-def]
        return pyzbar.decode(f, symbols=[pyzbar.ZBarSymbol.CODE128])

    ours, ceiling = best_rates(runner(decode_pyzbar, one_d), runner(raw_zbar, small(one_d)))
    emit("camera decode, Code 128 path (pyzbar + zxing-cpp identifier, 1280x720)", ours,
         "frames/s", ceiling, floor_rate=30, floor_ratio=0.7)  # fmt: skip

    ours, ceiling = best_rates(runner(decode_zxing, two_d), runner(zxingcpp.read_barcodes, two_d))
    emit("camera decode, zxingcpp path (GS1 DataMatrix + QR, 1280x720)", ours, "frames/s", ceiling)

    stats = ReadStats()
    with_retry = runner(lambda f: camera.read_code128(f, stats), empty, expect_hits=False)

    def reduced_only(f):  # type: ignore[no-untyped-def]  # the path without the retry
        return camera._zbar_code128(f, PYZBAR_SCALE) or camera._zxing(f, camera._CODE128)

    ours, ceiling = best_rates(with_retry, runner(reduced_only, empty, expect_hits=False))
    assert stats.full_res_retries > 0
    retry_ms = round(1000 / ours - 1000 / ceiling, 1)
    emit("camera decode, Code 128 path on empty frames (full-resolution retry, 1280x720)", ours,
         "frames/s", ceiling, retry_ms_per_frame=retry_ms)  # fmt: skip


if __name__ == "__main__":
    main()
