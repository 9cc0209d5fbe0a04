"""In-process limit checks over telemetry, vectorised.

Values arrive as decimal strings; they are compared as float64, which is exact for decimals of at
most 15 significant digits (rounding to the nearest double is monotonic and maps distinct such
decimals to distinct doubles), so a value equal to a limit compares equal.  Longer values take
the Decimal path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from ebr_core.spec.model import Bound


@dataclass(frozen=True)
class LimitCheck:
    count: int
    below: int
    above: int
    first_breach: int | None  # index of the first value outside the limits


def _exact(values: Sequence[str]) -> bool:
    return all(sum(c.isdigit() for c in v) <= 15 for v in values)


def inprocess_check(values: Sequence[str], lower: Bound | None, upper: Bound | None) -> LimitCheck:
    if not values:
        return LimitCheck(0, 0, 0, None)
    if not _exact(values):
        dec = [Decimal(v) for v in values]
        lo_bad = [
            lower is not None and (d < lower.value if lower.inclusive else d <= lower.value)
            for d in dec
        ]
        hi_bad = [
            upper is not None and (d > upper.value if upper.inclusive else d >= upper.value)
            for d in dec
        ]
        flags = [a or b for a, b in zip(lo_bad, hi_bad, strict=True)]
        first_flag = flags.index(True) if any(flags) else None
        return LimitCheck(len(dec), sum(lo_bad), sum(hi_bad), first_flag)
    import numpy as np  # here: numpy takes 0.1-0.2 s to import, and most commands never check

    arr = np.asarray(values, dtype=np.float64)
    low = np.zeros(arr.shape, dtype=bool)
    high = np.zeros(arr.shape, dtype=bool)
    if lower is not None:
        lv = float(lower.value)
        low = arr < lv if lower.inclusive else arr <= lv
    if upper is not None:
        uv = float(upper.value)
        high = arr > uv if upper.inclusive else arr >= uv
    bad = low | high
    first = int(np.argmax(bad)) if bad.any() else None
    return LimitCheck(int(arr.size), int(low.sum()), int(high.sum()), first)
