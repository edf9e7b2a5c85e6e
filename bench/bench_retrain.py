"""Benchmark: the loop retraining a random forest on 30 days of 10 s bars (259,200 rows).

Synthetic bars are written into a temporary store; the job is built by ``fit_job_for`` with the
loop's defaults (``dope.loop.fit.LOOP_PARAMS["random_forest"]``) and run through the real path:
``launch`` -> a niced child process (``python -m dope.loop.fit``) that reads the bars, computes the
features, walk-forward evaluates (3 folds), fits, saves the reference sample and registers.
Target: at most 60 s on 2 cores. Baseline in the same run: reading the bars and computing the
feature matrix alone, in this process (the part no fit can skip). The child's CPU seconds and the
load average are printed too: a niced fit on a busy machine waits for the other work, by design.

Run: ``.venv/bin/python bench/bench_retrain.py [--days 30] [--nice 10]``.
"""

from __future__ import annotations

import argparse
import os
import resource
import tempfile
import time
from pathlib import Path

from dope.features import default_feature_set, training_matrix
from dope.loop.config import LoopConfig
from dope.loop.fit import LOOP_PARAMS, fit_job_for, launch
from dope.market.config import SyntheticConfig
from dope.market.synthetic import configured_bars
from dope.models.registry import Registry
from dope.store import BarStore

DAY_MS = 86_400_000
INTERVAL_MS = 10_000
START_MS = 1_704_067_200_000  # 2024-01-01 UTC
BUDGET_S = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--nice", type=int, default=10)
    args = parser.parse_args()
    end_ms = START_MS + args.days * DAY_MS
    with tempfile.TemporaryDirectory(prefix="bench-retrain-") as tmp:
        root = Path(tmp)
        store = BarStore(root / "store")
        frames = configured_bars(SyntheticConfig(), ["BTCUSDT"], START_MS, end_ms, INTERVAL_MS)
        store.write_bars(frames["BTCUSDT"], INTERVAL_MS)
        baseline = _features_seconds(store, end_ms)
        loop = LoopConfig(train_window=f"{args.days}d")
        job = fit_job_for(loop, "random_forest", "BTCUSDT", INTERVAL_MS, end_ms, store, root / "registry")
        load, cpu_before = os.getloadavg()[0], _children_cpu()
        began = time.perf_counter()
        fit = launch(job, root / "work", nice=args.nice)
        while (result := fit.poll()) is None:
            time.sleep(0.1)
        seconds, cpu = time.perf_counter() - began, _children_cpu() - cpu_before
        meta = Registry(root / "registry").show(result.model_id)
    verdict = "OK" if seconds <= BUDGET_S else "OVER BUDGET"
    print(f"random_forest {LOOP_PARAMS['random_forest']}, {loop.folds} folds")
    print(f"bars + feature matrix alone ({meta['lineage']['data']['bars']} bars): {baseline:6.1f} s")
    print(f"retrain through launch (child, nice {result.nice}, {result.rows} rows): {seconds:6.1f} s  "
          f"[{verdict} <= {BUDGET_S:.0f} s]  ratio {seconds / baseline:.1f}x the baseline")
    print(f"the child used {cpu:.1f} CPU s; load average {load:.1f} before, {os.getloadavg()[0]:.1f} after "
          f"({os.cpu_count()} cores)")
    model, zero = meta["metrics"]["model"]["rmse"], meta["metrics"]["zero_baseline"]["rmse"]
    print(f"walk-forward out-of-sample rmse / zero-return rmse: {model / zero:.5f}")


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _features_seconds(store: BarStore, end_ms: int) -> float:
    """Seconds to read the bars and compute the training matrix (after one warm-up run for the compile cache)."""
    fs = default_feature_set(INTERVAL_MS)
    training_matrix(store.read_bars("BTCUSDT", INTERVAL_MS, None, end_ms).iloc[:5_000], fs, 1)
    began = time.perf_counter()
    training_matrix(store.read_bars("BTCUSDT", INTERVAL_MS, None, end_ms), fs, 1)
    return time.perf_counter() - began


if __name__ == "__main__":
    main()
