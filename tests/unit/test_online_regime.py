"""The online model's scorecard improves by itself after a regime switch (examples/regimes.toml), through the
model service's own path (:func:`dope.rendezvous.online.replay`, the predictions it publishes live).

The synthetic market trends (10 s returns AR +0.3) until 06:00, then mean-reverts (AR -0.3). Both models are
fitted on the labels known before the switch. Figures (seed 7, BTCUSDT, 10 s bars), information coefficient
(correlation of prediction and realised return) and the online/static mean squared error ratio:

============================  =========  =========  ==========
window                        online IC  static IC  MSE ratio
============================  =========  =========  ==========
first 20 min after switch     -0.06      -0.30      0.80
1 h to 6 h after the switch   +0.24      -0.24      0.76
============================  =========  =========  ==========

From 1 h after the switch the online model's MSE is 0.94 of the zero-return forecast's, the static one's 1.24.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from dope.config import load_config
from dope.features import default_feature_set, training_matrix
from dope.market.synthetic import configured_bars
from dope.models import make_model
from dope.rendezvous.online import replay
from dope.types import FloatArray

START = 1_704_067_200_000  # 2024-01-01, the first regime's start
SWITCH = START + 6 * 3_600_000
INTERVAL = 10_000


def test_the_online_model_recovers_after_a_regime_switch_and_the_static_one_does_not() -> None:
    config = load_config(Path(__file__).parents[2] / "examples" / "regimes.toml")
    frame = configured_bars(config.synthetic, ["BTCUSDT"], START, START + 12 * 3_600_000, INTERVAL)["BTCUSDT"]
    X, y, times = training_matrix(frame, default_feature_set(INTERVAL), 1)
    known = times < SWITCH - INTERVAL  # rows whose label was realised before the switch
    static = make_model("ridge").fit(X[known], y[known]).predict_many(X)
    closes = frame.set_index("open_time")["close"].reindex(times).to_numpy()
    online = replay(make_model("online_ridge").fit(X[known], y[known]), X, closes, times, INTERVAL, 1)

    def ic(pred: FloatArray, rows: np.ndarray) -> float:
        return float(np.corrcoef(pred[rows], y[rows])[0, 1])

    def mse_ratio(rows: np.ndarray) -> float:
        return float(np.mean((online[rows] - y[rows]) ** 2) / np.mean((static[rows] - y[rows]) ** 2))

    early = (times >= SWITCH) & (times < SWITCH + 1_200_000)
    late = times >= SWITCH + 3_600_000
    assert ic(static, early) < -0.25 and ic(static, late) < -0.2  # the static model stays wrong
    assert ic(online, early) < 0 < 0.2 < ic(online, late)  # the online one turns round by itself
    assert mse_ratio(late) < mse_ratio(early) < 0.9 and mse_ratio(late) < 0.8
    zero_mse = float(np.mean(y[late] ** 2))
    assert np.mean((online[late] - y[late]) ** 2) < 0.97 * zero_mse < 1.2 * zero_mse < np.mean((static[late] - y[late]) ** 2)
