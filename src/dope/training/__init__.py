"""Training and evaluation: walk-forward (purged, embargoed) out-of-sample metrics against the zero baseline.

>>> import numpy as np
>>> from dope.training import WalkForwardConfig, make_folds
>>> [(f.train_stop, f.test_start) for f in make_folds(100, WalkForwardConfig(n_folds=2, horizon=3))]
[(31, 34), (64, 67)]
"""

from dope.training.metrics import (
    Metrics,
    compute_metrics,
    directional_accuracy,
    loss_gain_t,
    rmse,
    spearman_ic,
)
from dope.training.walkforward import (
    Forecaster,
    ForecastFold,
    WalkForwardConfig,
    WalkForwardForecast,
    make_folds,
    train_rows,
    walk_forward_forecast,
)

__all__ = [
    "ForecastFold",
    "Forecaster",
    "Metrics",
    "WalkForwardConfig",
    "WalkForwardForecast",
    "compute_metrics",
    "directional_accuracy",
    "loss_gain_t",
    "make_folds",
    "rmse",
    "spearman_ic",
    "train_rows",
    "walk_forward_forecast",
]
