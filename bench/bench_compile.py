"""The first backtest after an install: compiling the kernels with an empty numba cache, against a warm run.

Each run is a fresh Python process that imports :mod:`dope.backtest` and runs what ``dope backtest``
runs (the strategy with its equity curve, buy-and-hold and the zero baseline) on 10,000 bars. The
cold runs get ``NUMBA_CACHE_DIR`` set to a new empty folder, so numba compiles everything as on a
fresh install; the warm runs reuse one filled folder. Target (issue 13): at most 10 s cold.

    .venv/bin/python -m bench.bench_compile [--runs 2]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

#: What ``dope backtest`` computes, as a script for a fresh interpreter.
BACKTEST = """
import numpy as np
from dope.backtest import BacktestConfig, buy_and_hold, run_vectorized, zero_baseline
rng = np.random.default_rng(1)
close = 100 * np.exp(np.cumsum(rng.normal(0, 1e-3, 10_000)))
open_ = np.r_[100.0, close[:-1]]
times = np.arange(10_000, dtype=np.int64) * 60_000
cfg = BacktestConfig(upper=1e-3, lower=-1e-3)
result = run_vectorized(open_, close, rng.normal(0, 1e-3, 10_000), cfg, times=times, interval_ms=60_000)
assert len(result.equity) == 10_000 and result.metrics["n_bars"] == 10_000
buy_and_hold(open_, close, cfg, times=times, interval_ms=60_000)
zero_baseline(open_, close, cfg, times=times, interval_ms=60_000)
"""


def timed_run(cache_dir: str) -> float:
    """Wall seconds of one backtest in a fresh process whose numba cache is ``cache_dir``."""
    env = dict(os.environ, NUMBA_CACHE_DIR=cache_dir)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", BACKTEST], env=env, check=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=2, help="cold and warm runs each (best is reported)")
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    cold: list[float] = []
    with tempfile.TemporaryDirectory() as warm_dir:
        for _ in range(args.runs):
            with tempfile.TemporaryDirectory() as empty:
                cold.append(timed_run(empty))
        timed_run(warm_dir)  # fills the warm cache
        warm = [timed_run(warm_dir) for _ in range(args.runs)]
    print(f"first backtest, empty numba cache: {min(cold):6.2f} s (runs: {', '.join(f'{s:.2f}' for s in cold)})"
          "   (target <= 10 s)")
    print(f"same backtest, warm cache:         {min(warm):6.2f} s (runs: {', '.join(f'{s:.2f}' for s in warm)})")
    print(f"  ratio cold / warm: {min(cold) / min(warm):5.1f}x")


if __name__ == "__main__":
    main()
