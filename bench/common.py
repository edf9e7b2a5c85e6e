"""Timing helpers shared by the benchmarks: best-of-N wall time, and ratio lines."""

from __future__ import annotations

import time
from collections.abc import Callable


def best_time(fn: Callable[[], object], repeat: int = 3) -> float:
    """Best wall-clock seconds of ``repeat`` runs (after one warm-up run)."""
    fn()
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def report(name: str, seconds: float, items: int, unit: str = "trades") -> None:
    """Print one timing line: seconds and items per second."""
    print(f"{name:<44} {seconds * 1000:10.1f} ms  {items / seconds / 1e6:8.2f} M {unit}/s")
