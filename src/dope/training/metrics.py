"""Out-of-sample metrics of return forecasts: RMSE, directional accuracy, Spearman IC, bars covered.

Directional accuracy counts, over the bars whose realised return is not zero, a forecast of
the right sign as 1, of the wrong sign as 0 and a forecast of exactly zero ("no call") as 1/2,
so the zero-return baseline scores exactly 0.5 and a coin toss is the bar to beat. Bars with
a zero realised return (common on quiet 10 s bars) have no direction and are left out.

>>> m = compute_metrics(np.array([0.01, -0.02, 0.0, 0.03]), np.array([0.02, 0.01, 0.0, 0.0]))
>>> round(m.rmse, 6), m.directional_accuracy, m.n
(0.021794, 0.5, 4)
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import pandas as pd

from dope.types import FloatArray


@dataclass(frozen=True)
class Metrics:
    """Metrics of one set of forecasts; ``n`` = bars scored, ``n_directional`` = those with a non-zero return."""

    rmse: float
    directional_accuracy: float
    ic: float
    n: int
    n_directional: int

    def as_dict(self) -> dict[str, Any]:
        """Plain values, NaN as None (for JSON)."""
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in asdict(self).items()}


def compute_metrics(y: npt.ArrayLike, pred: npt.ArrayLike) -> Metrics:
    """Metrics over the rows where both the target and the forecast are finite."""
    y_arr, p_arr = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    if y_arr.shape != p_arr.shape:
        raise ValueError(f"targets {y_arr.shape} and predictions {p_arr.shape} differ in shape")
    keep = np.isfinite(y_arr) & np.isfinite(p_arr)
    y_arr, p_arr = y_arr[keep], p_arr[keep]
    moving = y_arr != 0
    return Metrics(rmse=rmse(y_arr, p_arr), directional_accuracy=directional_accuracy(y_arr, p_arr),
                   ic=spearman_ic(y_arr, p_arr), n=int(len(y_arr)), n_directional=int(moving.sum()))


def loss_gain_t(y: npt.ArrayLike, pred: npt.ArrayLike) -> float:
    """t-statistic of the squared-error gain over the zero forecast (Diebold-Mariano, no autocorrelation term).

    ``d = y**2 - (y - pred)**2`` per bar; ``t = mean(d) / (std(d) / sqrt(n))``. Positive: the forecast
    beats zero; above about 2: unlikely to be luck (one-bar horizons; overlapping labels would need HAC).
    """
    y_arr, p_arr = np.asarray(y, dtype=np.float64), np.asarray(pred, dtype=np.float64)
    keep = np.isfinite(y_arr) & np.isfinite(p_arr)
    gain = y_arr[keep] ** 2 - (y_arr[keep] - p_arr[keep]) ** 2
    spread = gain.std(ddof=1) if len(gain) > 1 else 0.0
    return float(gain.mean() / (spread / np.sqrt(len(gain)))) if spread > 0 else math.nan


def rmse(y: FloatArray, pred: FloatArray) -> float:
    """Root mean squared error (NaN when empty)."""
    return float(np.sqrt(np.mean((y - pred) ** 2))) if len(y) else math.nan


def directional_accuracy(y: FloatArray, pred: FloatArray) -> float:
    """Share of right signs over non-zero targets, a zero forecast counting 1/2 (NaN when none)."""
    moving = y != 0
    if not moving.any():
        return math.nan
    score = np.where(pred[moving] == 0, 0.5, (np.sign(pred[moving]) == np.sign(y[moving])).astype(np.float64))
    return float(score.mean())


def spearman_ic(y: FloatArray, pred: FloatArray) -> float:
    """Spearman rank correlation (average ranks for ties); NaN when either side is constant."""
    if len(y) < 2:
        return math.nan
    ry = pd.Series(y).rank(method="average").to_numpy()
    rp = pd.Series(pred).rank(method="average").to_numpy()
    if ry.std() == 0 or rp.std() == 0:
        return math.nan
    return float(np.corrcoef(ry, rp)[0, 1])
