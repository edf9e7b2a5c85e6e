"""``up_share_20``: the share of the last 20 bars that closed up, minus one half (in [-0.5, 0.5])."""

from __future__ import annotations

import numba
import numpy as np

from dope.plugins import CH_RETURN, FeatureDefinition

WINDOW = 20


@numba.njit(cache=True, nogil=True)
def up_share(w: np.ndarray) -> float:  # pragma: no cover - compiled
    """``w``: the ring channels over the last ``WINDOW`` bars, newest last."""
    ups = 0.0
    returns = w[CH_RETURN]
    for i in range(returns.shape[0]):
        if returns[i] > 0.0:
            ups += 1.0
    return float(ups / returns.shape[0] - 0.5)


UP_SHARE_20 = FeatureDefinition(name="up_share_20", window=WINDOW, function=up_share, version="1")
