"""Camera frames of labels: Code 128 (python-barcode), GS1 DataMatrix and QR (zxing-cpp), placed
on a 1280×720 frame with rotation, blur, glare and sensor noise, as a station camera sees them."""

from __future__ import annotations

import io
from dataclasses import dataclass

import cv2
import numpy as np
import zxingcpp
from barcode import Code128
from barcode.writer import ImageWriter
from PIL import Image

W, H = 1280, 720


def code128(data: str) -> np.ndarray:
    buf = io.BytesIO()
    Code128(data, writer=ImageWriter()).write(
        buf,
        {
            "module_width": 0.35,
            "module_height": 14,
            "quiet_zone": 6,
            "write_text": False,
            "dpi": 200,
        },
    )
    return np.asarray(Image.open(buf).convert("L"))


def gs1_128(element_string: str) -> np.ndarray:
    """GS1-128 (Code 128 with FNC1) from an element string such as ``0109506000134352...``."""
    from barcode import Gs1_128

    buf = io.BytesIO()
    Gs1_128(element_string, writer=ImageWriter()).write(
        buf,
        {
            "module_width": 0.35,
            "module_height": 14,
            "quiet_zone": 6,
            "write_text": False,
            "dpi": 200,
        },
    )
    return np.asarray(Image.open(buf).convert("L"))


def gs1_datamatrix(hri: str, scale: int = 8) -> np.ndarray:
    """``hri`` in GS1 human-readable form, e.g. ``(01)09506000134352(10)TM2611``."""
    b = zxingcpp.create_barcode(hri, zxingcpp.BarcodeFormat.DataMatrix, gs1=True)
    return _quiet(np.asarray(zxingcpp.write_barcode_to_image(b, scale=scale)), 4 * scale)


def qr(text: str, scale: int = 8) -> np.ndarray:
    b = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode)
    return _quiet(np.asarray(zxingcpp.write_barcode_to_image(b, scale=scale)), 4 * scale)


def _quiet(img: np.ndarray, pad: int) -> np.ndarray:
    return np.pad(img, pad, constant_values=255)


@dataclass
class FrameStyle:
    angle: float = 0.0
    blur: int = 0  # Gaussian kernel size (odd) or 0
    noise: float = 0.0  # standard deviation of sensor noise, in grey levels
    seed: int = 0
    glare: float = 0.0  # 0..1: a specular patch washing out the middle of the frame to white


def frame(label: np.ndarray | None, style: FrameStyle | None = None) -> np.ndarray:
    """A 1280×720 greyscale frame with ``label`` (or nothing) in the middle."""
    style = style or FrameStyle()
    canvas: np.ndarray = np.full((H, W), 235, np.uint8)
    if label is not None:
        h, w = label.shape[:2]
        if h > H or w > W:
            f = min(H / h, W / w) * 0.9
            label = cv2.resize(label, (int(w * f), int(h * f)), interpolation=cv2.INTER_AREA)
            h, w = label.shape[:2]
        y, x = (H - h) // 2, (W - w) // 2
        canvas[y : y + h, x : x + w] = label
        if style.angle:
            m = cv2.getRotationMatrix2D((W / 2, H / 2), style.angle, 1.0)
            canvas = cv2.warpAffine(canvas, m, (W, H), borderValue=235)
    if style.glare:
        # A reflection on the bag's film: a bright ellipse blended over the label's middle.
        mask = np.zeros((H, W), np.float32)
        cv2.ellipse(mask, (W // 2, H // 2), (W // 7, H // 6), 20, 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (61, 61), 0) * float(style.glare)
        canvas = (canvas * (1 - mask) + 255 * mask).astype(np.uint8)
    if style.blur:
        canvas = cv2.GaussianBlur(canvas, (style.blur, style.blur), 0)
    if style.noise:
        rng = np.random.default_rng(style.seed)
        noisy = canvas.astype(np.int16) + rng.normal(0, style.noise, canvas.shape).astype(np.int16)
        canvas = np.clip(noisy, 0, 255).astype(np.uint8)
    return canvas
