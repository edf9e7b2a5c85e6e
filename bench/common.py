"""Timing helpers shared by the benchmarks: best-of-N wall time, and ratio lines."""

from __future__ import annotations

import statistics
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


def interleaved_times(fns: dict[str, Callable[[], object]], rounds: int = 15) -> dict[str, list[float]]:
    """Wall seconds of each function over ``rounds`` rounds, the functions taking turns in every round
    (after one warm-up each), so a noisy neighbour slows all of them alike."""
    for fn in fns.values():
        fn()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - start)
    return times


def median_ratio(numerator: list[float], denominator: list[float]) -> float:
    """The median over rounds of ``numerator / denominator`` (pairs from :func:`interleaved_times`)."""
    return statistics.median(a / b for a, b in zip(numerator, denominator, strict=True))
