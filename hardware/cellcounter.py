"""The CC1 cell-counter line protocol (defined here, modelled on real counters' serial exports).

One result per line, ASCII, NMEA-style checksum::

    $CC1,<sample_id>,<total_per_ml>,<viable_per_ml>,<viability_pct>*<XX>\\r\\n

``XX`` is the XOR of every byte between ``$`` and ``*`` as two upper-case hex digits.  Counts are
integers (cells per mL); viability is a decimal with one fraction digit.  The parser checks the
checksum, the field formats, and that viable <= total and viability agrees with viable / total
within 0.1 percentage points.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from decimal import Decimal

from hardware.errors import FrameError

_LINE = re.compile(
    rb"\$(CC1,([A-Za-z0-9\-]{1,32}),(\d{1,12}),(\d{1,12}),(\d{1,3}\.\d))\*([0-9A-F]{2})"
)


def checksum(body: bytes) -> str:
    x = 0
    for b in body:
        x ^= b
    return f"{x:02X}"


@dataclass(frozen=True)
class CellCount:
    sample_id: str
    total_per_ml: int
    viable_per_ml: int
    viability_pct: Decimal


def parse_cc1(line: bytes) -> CellCount:
    m = _LINE.fullmatch(line)
    if not m:
        raise FrameError(f"not a CC1 result line: {line[:60]!r}")
    body, sample, total, viable, via, xx = m.groups()
    expected = checksum(body)
    if xx.decode() != expected:
        raise FrameError(f"CC1 checksum is {xx.decode()}, expected {expected} (line corrupted)")
    t, v, pct = int(total), int(viable), Decimal(via.decode())
    if v > t:
        raise FrameError(f"viable {v}/mL exceeds total {t}/mL")
    if t and abs(Decimal(v * 100) / t - pct) > Decimal("0.1"):
        raise FrameError(
            f"viability {pct} % disagrees with viable/total {(Decimal(v * 100) / t):.1f} %"
        )
    return CellCount(sample.decode(), t, v, pct)
