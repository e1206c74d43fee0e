"""Small helpers shared by the benchmarks: timing and aligned report lines."""

from __future__ import annotations

import time
from typing import Callable, List


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time of ``repeat`` runs, in seconds (the least disturbed run)."""
    times: List[float] = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def report(name: str, value: float, unit: str, ratio: float | None = None, against: str = "") -> None:
    line = f"{name:<44} {value:>12.4f} {unit:<8}"
    if ratio is not None:
        line += f"  ratio {ratio:6.3f} vs {against}"
    print(line, flush=True)
