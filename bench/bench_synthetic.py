"""Benchmark: a year of 10 s synthetic bars for 3 symbols, against the floor of any such generator
(3.15 M standard normal draws + a cumulative sum per symbol), measured in the same run.

    .venv/bin/python bench/bench_synthetic.py
"""

from __future__ import annotations

import time

import numpy as np

from dope.market.synthetic import generate_bars

SYMBOLS = ["BTCUSDT", "ETHUSDT", "SOLUSDT"]
START = 1_704_067_200_000  # 2024-01-01 UTC
YEAR_MS = 365 * 86_400_000
BARS_PER_YEAR = YEAR_MS // 10_000


def baseline() -> float:
    """Seconds for 3.15 M normal draws + cumsum, per symbol."""
    rng = np.random.default_rng(0)
    began = time.perf_counter()
    for _ in SYMBOLS:
        np.cumsum(rng.standard_normal(BARS_PER_YEAR))
    return time.perf_counter() - began


def generate() -> tuple[float, int]:
    """Seconds and rows for a year of 10 s bars of every symbol."""
    began = time.perf_counter()
    frames = generate_bars(SYMBOLS, START, START + YEAR_MS, seed=7)
    return time.perf_counter() - began, sum(len(f) for f in frames.values())


def main() -> None:
    generate_bars(SYMBOLS[:1], START, START + 86_400_000, seed=7)  # warm-up (numba cache, imports)
    floor = min(baseline() for _ in range(3))
    seconds, rows = min(generate() for _ in range(2))
    print(f"synthetic: {rows:,} bars ({len(SYMBOLS)} symbols x 1 year of 10 s) in {seconds:.2f} s "
          f"= {rows / seconds:,.0f} bars/s")
    print(f"baseline (normal draws + cumsum): {floor:.3f} s; ratio synthetic/baseline = {seconds / floor:.1f}x")


if __name__ == "__main__":
    main()
