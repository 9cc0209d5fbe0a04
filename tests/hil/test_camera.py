"""Camera path: rendered labels in noisy, blurred, rotated 1280×720 frames → scans → identifiers."""

from __future__ import annotations

import numpy as np
import pytest

from ebr_core.identifiers import parse_scan
from edge.transports.camera import CameraScanner, decode_frame
from firmware_sim.camera import FrameStyle, code128, frame, gs1_datamatrix, qr

pytestmark = pytest.mark.hil
COI = "&/CHA999926ABC123"


@pytest.mark.parametrize(
    "style",
    [
        FrameStyle(),
        FrameStyle(angle=7, blur=3, noise=6, seed=1),
        FrameStyle(angle=-5, blur=3, noise=8, seed=2),
    ],
)
def test_each_symbology_decodes_and_parses_back(style: FrameStyle) -> None:
    f = frame(code128(COI), style)
    assert f.shape == (720, 1280) and f.dtype == np.uint8
    assert [parse_scan(t).coi for t in decode_frame(f)] == [COI]
    dm = decode_frame(frame(gs1_datamatrix("(01)09506000134352(10)TM2611(17)270331"), style))
    s = parse_scan(dm[0])
    assert (s.symbology, s.gtin, s.batch, str(s.expiry)) == (
        "]d2",
        "09506000134352",
        "TM2611",
        "2027-03-31",
    )
    assert parse_scan(decode_frame(frame(qr(COI), style))[0]).coi == COI


def test_a_label_in_consecutive_frames_is_one_scan() -> None:
    cam = CameraScanner()
    bag, reagent = code128(COI), gs1_datamatrix("(01)09506000134352(10)TM2611")
    seq = [bag, bag, bag, None, reagent, reagent, None, bag]
    scans = []
    for i, lab in enumerate(seq):
        scans += cam.process(frame(lab, FrameStyle(angle=3, noise=4, seed=i)))
    assert scans == [f"]C0{COI}", "]d2010950600013435210TM2611", f"]C0{COI}"]
    assert cam.frames == len(seq)


def test_opencv_capture_of_a_video_gives_one_scan_per_label(tmp_path) -> None:  # type: ignore[no-untyped-def]
    import cv2

    path = str(tmp_path / "station-camera.avi")
    w = cv2.VideoWriter(path, cv2.VideoWriter_fourcc(*"MJPG"), 10, (1280, 720), isColor=False)
    assert w.isOpened()
    labels = [qr(COI)] * 3 + [None] + [gs1_datamatrix("(01)09506000134352(10)TM2611")] * 2
    for i, lab in enumerate(labels):
        w.write(frame(lab, FrameStyle(noise=3, seed=i)))
    w.release()
    assert list(CameraScanner().from_capture(path)) == [f"]Q1{COI}", "]d2010950600013435210TM2611"]
