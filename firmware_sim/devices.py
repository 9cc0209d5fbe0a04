"""Device behaviour as byte producers: a barcode scanner and a CC1 cell counter.

Faults are plain parameters: ``garble`` (probability of flipping a byte of a frame),
``truncate`` (probability of losing the terminator, as when a cable is pulled mid-frame),
``bad_checksum`` (cell counter), ``duplicate`` (the same frame twice).
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

GS = "\x1d"


@dataclass
class Faults:
    garble: float = 0.0
    truncate: float = 0.0
    bad_checksum: float = 0.0
    duplicate: float = 0.0
    rng: random.Random = field(default_factory=lambda: random.Random(1))


@dataclass
class ScannerSim:
    """What a serial scanner sends for a label: [prefix][symbology id][data][suffix]."""

    suffix: bytes = b"\r\n"
    prefix: bytes = b""
    gs_substitute: str = ""  # "" keeps GS; a character replaces it
    symbology_ids: bool = True
    keyboard_wedge: bool = False  # a wedge drops GS entirely
    faults: Faults = field(default_factory=Faults)

    def frame(self, data: str, symbology: str = "]d2") -> bytes:
        text = data
        if self.keyboard_wedge:
            text = text.replace(GS, "")
        elif self.gs_substitute:
            text = text.replace(GS, self.gs_substitute)
        if self.symbology_ids:
            text = symbology + text
        body = self.prefix + text.encode("ascii")
        f = self.faults
        if f.garble and f.rng.random() < f.garble:
            b = bytearray(body)
            i = f.rng.randrange(len(b))
            b[i] = 0x80 | (b[i] ^ 0x55)  # a line-noise byte: never printable ASCII
            body = bytes(b)
        if f.truncate and f.rng.random() < f.truncate:
            return body  # the terminator never arrives
        out = body + self.suffix
        if f.duplicate and f.rng.random() < f.duplicate:
            out += out
        return out


def _xor(body: bytes) -> str:
    x = 0
    for b in body:
        x ^= b
    return f"{x:02X}"


@dataclass
class CellCounterSim:
    faults: Faults = field(default_factory=Faults)

    def frame(self, sample_id: str, total_per_ml: int, viable_per_ml: int) -> bytes:
        # viability in tenths of a percent, rounded half up
        via = (viable_per_ml * 10_000 // total_per_ml + 5) // 10 if total_per_ml else 0
        body = f"CC1,{sample_id},{total_per_ml},{viable_per_ml},{via // 10}.{via % 10}".encode()
        xx = _xor(body)
        if self.faults.bad_checksum and self.faults.rng.random() < self.faults.bad_checksum:
            xx = f"{(int(xx, 16) ^ 0x01):02X}"
        line = b"$" + body + b"*" + xx.encode() + b"\r\n"
        if self.faults.truncate and self.faults.rng.random() < self.faults.truncate:
            return line[: len(line) // 2]
        return line
