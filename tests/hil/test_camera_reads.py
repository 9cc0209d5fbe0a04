"""Camera path on rendered frames: identifiers from the decoder, any rotation, several symbols in
one frame, the full-resolution retry, and one scan per label appearance."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from edge.transports import camera
from edge.transports.camera import CameraScanner, ReadStats, decode_frame, read_symbols
from firmware_sim.camera import FrameStyle, code128, frame, gs1_128, gs1_datamatrix, qr

pytestmark = pytest.mark.hil
COI = "&/CHA999926ABC123"
GS1 = "0109506000134345" + "17251231" + "21BAG1"


def test_a_plain_code128_is_c0_and_a_gs1_128_is_c1() -> None:
    assert decode_frame(frame(code128("10064908"))) == ["]C010064908"]
    assert decode_frame(frame(code128("42094043"), FrameStyle(angle=4, noise=5))) == ["]C042094043"]
    assert decode_frame(frame(gs1_128(GS1))) == ["]C1" + GS1]


@pytest.mark.parametrize("k", [0, 1, 2, 3])
@pytest.mark.parametrize("data", [COI, "10064908"])
def test_code128_reads_at_every_quarter_turn(k: int, data: str) -> None:
    f = frame(np.rot90(code128(data), k).copy(), FrameStyle(angle=3, blur=3, noise=5, seed=k))
    assert decode_frame(f) == ["]C0" + data]


@pytest.mark.parametrize("k", [1, 2, 3])
def test_gs1_128_keeps_c1_when_rotated(k: int) -> None:
    f = frame(np.rot90(gs1_128(GS1), k).copy(), FrameStyle(noise=4, seed=k))
    assert decode_frame(f) == ["]C1" + GS1]


def test_several_symbols_in_one_frame() -> None:
    canvas = frame(None, FrameStyle())
    bag = code128(COI)
    bag = cv2.resize(bag, (bag.shape[1] * 2 // 3, bag.shape[0] * 2 // 3))
    dm = gs1_datamatrix("(01)09506000134352(10)TM2611", scale=6)
    q = qr("=A99992612345600", scale=6)
    canvas[20 : 20 + bag.shape[0], 20 : 20 + bag.shape[1]] = bag
    canvas[400 : 400 + dm.shape[0], 100 : 100 + dm.shape[1]] = dm
    canvas[400 : 400 + q.shape[0], 900 : 900 + q.shape[1]] = q
    got = read_symbols(canvas)
    assert sorted(s.scan for s in got) == sorted(
        [f"]C0{COI}", "]d2010950600013435210TM2611", "]Q1=A99992612345600"]
    )
    (b,) = [s for s in got if s.symbology == "]C0"]
    assert b.box[0] < 100 and b.box[1] < 100  # where it is, in full-resolution pixels


def test_the_full_resolution_retry_runs_only_when_the_reduced_pass_finds_nothing() -> None:
    stats = ReadStats()
    camera.read_code128(frame(code128(COI)), stats)
    assert stats.full_res_retries == 0
    camera.read_code128(frame(None, FrameStyle(noise=4)), stats)
    assert stats.full_res_retries == 1


def test_a_code128_only_the_full_resolution_pass_reads_is_read(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # A label so small that zbar misses it at 3/4 size; zxing-cpp kept out of the first look so
    # that only the retry can find it, and the identifier still comes from zxing-cpp's re-read.
    small = cv2.resize(code128("10064908"), None, fx=0.65, fy=0.65, interpolation=cv2.INTER_AREA)
    f = frame(small, FrameStyle(blur=3))
    assert camera._zbar_code128(f, camera.PYZBAR_SCALE) == []
    real = camera._zxing
    first = {"done": False}

    def zxing_blind_once(img, formats):  # type: ignore[no-untyped-def]
        if img.shape == f.shape and not first["done"]:
            first["done"] = True
            return []
        return real(img, formats)

    monkeypatch.setattr(camera, "_zxing", zxing_blind_once)
    stats = ReadStats()
    assert [s.scan for s in camera.read_code128(f, stats)] == ["]C010064908"]
    assert stats.full_res_retries == 1


def test_a_code128_zxing_cannot_confirm_is_dropped_not_guessed(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(camera, "_zxing", lambda img, formats, rotate=True: [])
    stats = ReadStats()
    assert camera.read_code128(frame(code128("10064908")), stats) == []
    assert stats.unconfirmed_code128 == 1


def test_a_label_that_flickers_out_of_one_frame_is_still_one_scan() -> None:
    t = [0.0]
    cam = CameraScanner(leave_after=3, hold_s=0.3, clock=lambda: t[0])
    bag = code128(COI)
    seq = [bag, bag, None, bag, None, None, bag, None, None, None, None, bag]
    scans = []
    for i, lab in enumerate(seq):
        t[0] = i * 0.1
        scans += cam.process(frame(lab, FrameStyle(angle=2, noise=4, seed=i)))
    # gone only after 3 frames and 0.3 s without it: the last appearance is a new scan
    assert scans == [f"]C0{COI}", f"]C0{COI}"]


def test_two_labels_in_view_are_two_scans_once() -> None:
    cam = CameraScanner.live()
    canvas = frame(None)
    dm = gs1_datamatrix("(01)09506000134352(10)TM2611", scale=6)
    q = qr(COI, scale=6)
    canvas[100 : 100 + dm.shape[0], 100 : 100 + dm.shape[1]] = dm
    canvas[100 : 100 + q.shape[0], 800 : 800 + q.shape[1]] = q
    scans = [cam.process(canvas) for _ in range(4)]
    assert scans[0] == sorted(["]d2010950600013435210TM2611", f"]Q1{COI}"])
    assert scans[1:] == [[], [], []]


def test_a_stream_reads_a_second_code128_at_another_quarter_turn(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """When pyzbar reads one label and misses a turned one (as it does on some photos), the
    periodic zxing-cpp sweep of a stream still finds the turned one, and each is one scan."""
    canvas = frame(None, FrameStyle())
    flat = code128(COI)
    turned = np.rot90(code128("&/CHA999926XYZ789")).copy()
    turned = cv2.resize(turned, (turned.shape[1] * 2 // 3, turned.shape[0] * 2 // 3))
    canvas[20 : 20 + flat.shape[0], 20 : 20 + flat.shape[1]] = flat
    canvas[200 : 200 + turned.shape[0], 1000 : 1000 + turned.shape[1]] = turned
    real = camera._zbar_code128
    monkeypatch.setattr(
        camera, "_zbar_code128", lambda g, sc: [h for h in real(g, sc) if h[0] == COI]
    )
    fast = camera.read_code128(canvas, sweep=False)
    assert [s.scan for s in fast] == [f"]C0{COI}"]  # the fast pass alone misses it
    assert len(camera.read_code128(canvas)) == 2  # one frame, swept, reads both
    cam = CameraScanner(sweep_every=3)
    scans = [s for _ in range(cam.sweep_every) for s in cam.process(canvas)]
    assert sorted(scans) == sorted([f"]C0{COI}", "]C0&/CHA999926XYZ789"])  # each once
