"""Shared helpers for the benchmark scripts: timing and the one-JSON-object-a-line output."""

from __future__ import annotations

import json
import time
from collections.abc import Callable


def best_rate(fn: Callable[[], int], repeat: int = 3) -> float:
    """Items per second of the fastest of ``repeat`` runs (``fn`` returns the item count)."""
    best = 0.0
    for _ in range(repeat):
        t0 = time.perf_counter()
        n = fn()
        dt = time.perf_counter() - t0
        best = max(best, n / dt)
    return best


def best_rates(*fns: Callable[[], int], rounds: int = 5) -> list[float]:
    """Best rate of each function over ``rounds`` rounds that run them in turn.

    Interleaving matters on a shared machine whose speed drifts from one second to the next:
    a ceiling and the project's rate taken in the same rounds see the same machine."""
    best = [0.0] * len(fns)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            n = fn()
            dt = time.perf_counter() - t0
            best[i] = max(best[i], n / dt)
    return best


def emit(name: str, rate: float, unit: str, ceiling: float | None, **extra: object) -> None:
    """Print one measurement as a JSON line: name, rate, unit, ceiling, ratio."""
    ratio = round(rate / ceiling, 3) if ceiling else None
    row = {
        "name": name,
        "rate": round(rate, 1),
        "unit": unit,
        "ceiling": round(ceiling, 1) if ceiling else None,
        "ratio": ratio,
    }
    row.update(extra)
    print(json.dumps(row), flush=True)
