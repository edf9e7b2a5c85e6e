"""Threshold backtests over a year of 10-second bars (3.15 M) against vectorbt, a bare read and backtesting.py.

Targets (issue 13), all ratios measured in this run:
* one backtest (``run_vectorized``, every metric and the fill log; the per-bar equity and
  the trades frame are built from the log on first use, timed apart): at least 20x vectorbt's
  ``from_signals`` and within 3x of a compiled loop that only reads the same three arrays
  (the two timed in turns, so noise hits both; best and median ratios printed), and the same
  ratio for a calmer strategy on the same data (about a sixth of the trades), which shows what
  the fills cost;
* a 10 x 10 threshold grid (``sweep``) over the year: under 1 s;
* the event path (``run_event``, the live trader core): at least 3x backtesting.py's bars/s
  on the same strategy and data.

    .venv/bin/python -m bench.bench_backtest [--bars 3153600] [--event-bars 200000]
"""

from __future__ import annotations

import argparse
import os
import time
import warnings

import numba
import numpy as np
import numpy.typing as npt
import pandas as pd

from bench.common import best_time, interleaved_times, median_ratio, report
from dope.backtest import BacktestConfig, run_event, run_vectorized, sweep

INTERVAL_MS = 10_000
YEAR_BARS = 365 * 24 * 360
FloatArray = npt.NDArray[np.float64]


def make_market(n: int, seed: int = 1) -> tuple[FloatArray, FloatArray, FloatArray, npt.NDArray[np.int64]]:
    """Random-walk prices (opens gapped from the previous close) and AR(1) predictions."""
    rng = np.random.default_rng(seed)
    close = 30_000.0 * np.exp(np.cumsum(rng.normal(0.0, 4e-4, n)))
    open_ = np.r_[30_000.0, close[:-1]] * np.exp(rng.normal(0.0, 5e-5, n))
    noise = rng.normal(0.0, 1e-4, n)
    pred = np.asarray(pd.Series(noise).ewm(alpha=0.05).mean().to_numpy() * 4.0, dtype=np.float64)
    times = 1_735_689_600_000 + np.arange(n, dtype=np.int64) * INTERVAL_MS
    return open_, close, pred, times


@numba.njit(cache=True)
def read_pass(open_: FloatArray, close: FloatArray, pred: FloatArray) -> float:
    """The floor: a compiled loop that reads the three inputs once and does nothing else."""
    total = 0.0
    for i in range(close.shape[0]):
        total += open_[i] + close[i] + pred[i]
    return total


def bench_vectorbt(o: FloatArray, c: FloatArray, p: FloatArray, cfg: BacktestConfig) -> float:
    """vectorbt ``from_signals`` on precomputed, pre-shifted signals (its fastest engine)."""
    import vectorbt as vbt

    entries = np.r_[False, (p > cfg.upper)[:-1]]
    exits = np.r_[False, (p < cfg.lower)[:-1]]
    index = pd.date_range("2025-01-01", periods=len(c), freq="10s")
    close = pd.Series(c, index)

    def once() -> object:
        return vbt.Portfolio.from_signals(close=close, entries=entries, exits=exits, price=o, size=np.inf,
                                          fees=cfg.fee_rate, init_cash=cfg.initial_cash, direction="longonly",
                                          freq="10s").final_value()

    return best_time(once, repeat=3)


def bench_backtesting_py(o: FloatArray, c: FloatArray, p: FloatArray, cfg: BacktestConfig) -> float | None:
    """backtesting.py on the same strategy: buy above upper, close below lower, fills at the next open."""
    try:
        from backtesting import Backtest, Strategy
    except ImportError:
        print("backtesting.py is not installed: pip install backtesting==0.6.6 (dev extra)")
        return None
    data = pd.DataFrame({"Open": o, "High": np.maximum(o, c), "Low": np.minimum(o, c), "Close": c,
                         "Volume": 1.0}, index=pd.date_range("2025-01-01", periods=len(c), freq="10s"))
    upper, lower = cfg.upper, cfg.lower

    class Threshold(Strategy):  # type: ignore[misc]
        def init(self) -> None:
            self.pred = self.I(lambda: p, name="prediction", plot=False)

        def next(self) -> None:
            value = self.pred[-1]
            if value > upper and not self.position:
                self.buy()
            elif value < lower and self.position:
                self.position.close()

    bt = Backtest(data, Threshold, cash=cfg.initial_cash * 1e3, commission=cfg.fee_rate, finalize_trades=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        start = time.perf_counter()
        bt.run()
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--bars", type=int, default=YEAR_BARS)
    parser.add_argument("--event-bars", type=int, default=200_000, help="bars for the event-path comparison")
    args = parser.parse_args()
    o, c, p, t = make_market(args.bars)
    cfg = BacktestConfig(upper=2e-5, lower=-2e-5, fee_rate=0.0)
    n = len(c)
    load = os.getloadavg()[0]
    print(f"{n:,} bars of {INTERVAL_MS // 1000} s; numba threads {numba.get_num_threads()}; "
          f"load average {load:.1f} on {os.cpu_count()} CPUs (ratios are only fair on an idle machine)")

    calm = BacktestConfig(upper=1e-4, lower=-1e-4, fee_rate=0.0)
    turns = interleaved_times({"ours": lambda: run_vectorized(o, c, p, cfg, interval_ms=INTERVAL_MS),
                               "read": lambda: read_pass(o, c, p),
                               "calm": lambda: run_vectorized(o, c, p, calm, interval_ms=INTERVAL_MS)}, rounds=21)
    ours, bare = min(turns["ours"]), min(turns["read"])
    with_times = best_time(lambda: run_vectorized(o, c, p, cfg, times=t, interval_ms=INTERVAL_MS), repeat=3)
    def with_curves() -> object:
        result = run_vectorized(o, c, p, cfg, interval_ms=INTERVAL_MS)
        return result.equity, result.position

    curves = best_time(with_curves, repeat=3)
    frames = best_time(lambda: run_vectorized(o, c, p, cfg, interval_ms=INTERVAL_MS).trades, repeat=3)
    result = run_vectorized(o, c, p, cfg, times=t, interval_ms=INTERVAL_MS)
    print(f"trades: {len(result.trades):,}, exposure {result.metrics['exposure']:.2f}")
    vbt_s = bench_vectorbt(o, c, p, cfg)
    report("run_vectorized (one backtest)", ours, n, "bars")
    report("run_vectorized, bar times checked too", with_times, n, "bars")
    report("run_vectorized, then its equity/position", curves, n, "bars")
    report("run_vectorized, then its trades frame", frames, n, "bars")
    report("bare compiled read of the 3 inputs", bare, n, "bars")
    report("vectorbt Portfolio.from_signals", vbt_s, n, "bars")
    print(f"  ratio vectorbt / ours: {vbt_s / ours:6.1f}x   (target >= 20x)")
    print(f"  ratio ours / bare read: best {ours / bare:5.2f}x, median of {len(turns['read'])} turns "
          f"{median_ratio(turns['ours'], turns['read']):5.2f}x   (target <= 3x)")
    print(f"  ratio ours with equity/position / bare read: {curves / bare:5.2f}x")
    calm_trades = run_vectorized(o, c, p, calm, interval_ms=INTERVAL_MS).metrics["n_trades"]
    print(f"  a calmer strategy (thresholds +-{calm.upper:g}, {calm_trades:,.0f} round trips): best "
          f"{min(turns['calm']) / bare:5.2f}x, median {median_ratio(turns['calm'], turns['read']):5.2f}x the read")

    uppers = np.linspace(0.0, 9e-5, 10)
    lowers = np.linspace(-9e-5, 0.0, 10)
    grid = best_time(lambda: sweep(o, c, p, uppers, lowers, cfg, interval_ms=INTERVAL_MS), repeat=3)
    report("sweep 10 x 10 grid (100 backtests)", grid, 100 * n, "bar-steps")
    print(f"  grid seconds: {grid:.3f} s   (target < 1 s)")

    m = min(args.event_bars, n)
    bars = {"open_time": t[:m], "open": o[:m], "close": c[:m]}
    event = best_time(lambda: run_event(bars, p[:m], cfg, interval_ms=INTERVAL_MS), repeat=3)
    report(f"run_event (trader core), {m:,} bars", event, m, "bars")
    bt = bench_backtesting_py(o[:m], c[:m], p[:m], cfg)
    if bt is not None:
        report(f"backtesting.py, {m:,} bars", bt, m, "bars")
        print(f"  ratio event path / backtesting.py bars/s: {bt / event:6.1f}x   (target >= 3x)")


if __name__ == "__main__":
    main()
