"""DOPE for notebooks: the steps of the ``dope`` commands as functions returning pandas frames and results.

One implementation: ``dope bars``, ``dope backtest``, ``dope optimize`` and ``dope report`` call these
functions, and :func:`train` / :func:`predict` / :func:`walk_forward` call the library functions that
``dope train`` and ``dope predict`` call. The in-sample guard holds here as on the command line.
Walk through it in ``docs/tutorial.md``.

>>> from dope import research as dr
>>> bars = dr.read_files([dr.SAMPLE_KLINES])           # real BTCUSDT 1 h klines shipped with DOPE
>>> len(bars), dr.bars_interval(bars)
(2160, 3600000)
>>> study = dr.walk_forward(bars, "ridge", folds=3)
>>> list(study.metrics.index), int(study.metrics.loc["ridge", "bars"]) == len(study.predictions)
(['ridge', 'zero'], True)
>>> bt = dr.backtest(bars, study.predictions, upper=0.001, lower=-0.001)
>>> list(bt.metrics.columns)
['strategy', 'buy_and_hold', 'zero']
"""

from pathlib import Path

from dope.research.backtests import (
    Backtest,
    Optimization,
    backtest,
    check_predictions,
    optimize,
    parse_values,
    read_predictions,
    report,
)
from dope.research.data import bars_interval, ingest, load_bars, open_store, read_files
from dope.research.forecast import (
    SklearnForecaster,
    WalkForward,
    feature_set,
    features,
    open_registry,
    predict,
    sklearn_model,
    train,
    walk_forward,
)

SAMPLE_KLINES = Path(__file__).resolve().parents[1] / "data" / "BTCUSDT-1h-2025-01-01_2025-03-31.csv.gz"
"""Three months of real Binance spot BTCUSDT 1-hour klines (2025-01-01 .. 2025-03-31), shipped with DOPE."""

__all__ = ["SAMPLE_KLINES", "Backtest", "Optimization", "SklearnForecaster", "WalkForward", "backtest",
           "bars_interval", "check_predictions", "feature_set", "features", "ingest", "load_bars", "open_registry",
           "open_store", "optimize", "parse_values", "predict", "read_files", "read_predictions", "report",
           "sklearn_model", "train", "walk_forward"]
