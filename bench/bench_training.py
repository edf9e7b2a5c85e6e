"""Benchmark: training each model on a year of synthetic 10 s bars for one symbol (3.15 M bars).

For each model: a walk-forward evaluation (``--folds`` folds, the default per-model row caps of
``dope.training.pipeline.DEFAULT_MAX_TRAIN_ROWS``) plus the final fit on the whole year, which is
what ``dope train`` does. The target: at most 300 s per model on 2 cores. Baseline in the same run:
the ridge regression fitted on every row (no cap), the cheapest honest full-data fit.

Run: ``.venv/bin/python bench/bench_training.py [--days 365] [--models ridge lightgbm ...]``.
"""

from __future__ import annotations

import argparse
import time

from dope.training.threads import limit_threads

limit_threads()

from dope.features import default_feature_set, training_matrix  # noqa: E402
from dope.market.synthetic import generate_bars  # noqa: E402
from dope.training.pipeline import DEFAULT_MAX_TRAIN_ROWS, DEFAULT_PARAMS, model_factory  # noqa: E402
from dope.training.walkforward import WalkForwardConfig, train_rows, walk_forward_forecast  # noqa: E402

DAY_MS = 86_400_000
START_MS = 1_704_067_200_000  # 2024-01-01 UTC
BUDGET_S = 300.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--days", type=int, default=365)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--models", nargs="*", default=["ridge", "momentum", "lightgbm", "random_forest", "lstm"])
    args = parser.parse_args()
    began = time.perf_counter()
    bars = generate_bars(["BTCUSDT"], START_MS, START_MS + args.days * DAY_MS, 10_000, seed=7)["BTCUSDT"]
    generated = time.perf_counter()
    X, y, _ = training_matrix(bars, default_feature_set(10_000), horizon=1)
    featured = time.perf_counter()
    print(f"{len(bars)} bars generated in {generated - began:.1f} s; {X.shape} training matrix in "
          f"{featured - generated:.1f} s")
    for kind in args.models:
        _bench(kind, X, y, args.folds)


def _bench(kind: str, X, y, folds: int) -> None:  # type: ignore[no-untyped-def]
    factory = model_factory(kind, {})
    config = WalkForwardConfig(n_folds=folds, max_train_rows=DEFAULT_MAX_TRAIN_ROWS.get(kind))
    began = time.perf_counter()
    result = walk_forward_forecast(X, y, factory, config)
    evaluated = time.perf_counter()
    model = factory()
    rows = train_rows(0, len(y), max(1, model.lookback), config)
    model.fit(X[rows], y[rows])
    total = time.perf_counter() - began
    verdict = "OK" if total <= BUDGET_S else "OVER BUDGET"
    print(f"{kind:14} cap {str(config.max_train_rows):>9} params {DEFAULT_PARAMS.get(kind, {})}: walk-forward "
          f"{evaluated - began:6.1f} s + final fit {total - (evaluated - began):6.1f} s = {total:6.1f} s "
          f"[{verdict} <= {BUDGET_S:.0f} s]; OOS rmse/zero {result.metrics.rmse / result.baseline.rmse:.5f}")


if __name__ == "__main__":
    main()
