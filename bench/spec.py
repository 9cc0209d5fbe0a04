"""Specification evaluation throughput, and in-process limit checks over 1,000,000 points.

Ceilings: Decimal parse + compare of the same 50 values per batch (evaluation), and numpy
float64 parse + compare of the same 1M strings (in-process).  Target: 1M points in <= 1 s.
"""

from __future__ import annotations

import sys
import time
from decimal import Decimal
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import best_rate, emit

from ebr_core.spec import evaluate, inprocess_check, parse_spec
from ebr_core.spec.model import Bound

N_ATTR = 50
BATCHES = 2_000
POINTS = 1_000_000


def main() -> None:
    attrs = {f"a{i}": {"unit": "%", "limit": {"min": "70", "max": "100"}} for i in range(N_ATTR)}
    spec = parse_spec(
        {
            "spec_id": "B",
            "version": "1",
            "attributes": attrs,
            "overlays": {"EU": {"tighten": {"a0": {"limit": {"min": "80"}}}}},
        }
    )
    results = {f"a{i}": {"value": f"{80 + i % 20}.5", "unit": "%"} for i in range(N_ATTR)}

    def run_eval() -> int:
        for _ in range(BATCHES):
            ev = evaluate(spec, results, "EU")
        assert ev.disposition == "releasable"
        return BATCHES

    lo, hi = Decimal("70"), Decimal("100")
    values = [r["value"] for r in results.values()]

    def raw_eval() -> int:
        for _ in range(BATCHES):
            for v in values:
                d = Decimal(v)
                _ = lo <= d <= hi
        return BATCHES

    emit(
        "spec evaluate batches (50 results each, EU overlay)",
        best_rate(run_eval),
        "batches/s",
        best_rate(raw_eval),
    )

    rng = np.random.default_rng(7)
    points = [f"{x:.2f}" for x in rng.normal(37.0, 0.3, POINTS)]
    lower, upper = Bound(Decimal("36.0"), True), Bound(Decimal("38.0"), True)
    t0 = time.perf_counter()
    res = inprocess_check(points, lower, upper)
    dt = time.perf_counter() - t0
    t0 = time.perf_counter()
    arr = np.asarray(points, dtype=np.float64)
    _ = int(((arr < 36.0) | (arr > 38.0)).sum())
    raw_dt = time.perf_counter() - t0
    emit(
        "spec evaluate in-process limits over 1,000,000 telemetry points",
        POINTS / dt,
        "points/s",
        POINTS / raw_dt,
        seconds=round(dt, 3),
        breaches=res.below + res.above,
    )


if __name__ == "__main__":
    main()
