"""The evaluation document: the zero baseline is always there and a model that loses to it is said to lose."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dope.training.evaluation import EvaluationSettings, SymbolResult, evaluate_symbol, render
from tests.conftest import require_shared_data


def fake_result(symbol: str, seed: int) -> SymbolResult:
    rng = np.random.default_rng(seed)
    y = rng.normal(scale=0.002, size=2_000)
    return SymbolResult(symbol, 2_000, y, {"oracle": 0.5 * y, "noise": rng.normal(scale=0.002, size=2_000)},
                        {"oracle": 1.0, "noise": 2.0})


def test_render_reports_winners_and_losers_against_zero() -> None:
    results = [fake_result("AAAUSDT", 1), fake_result("BBBUSDT", 2)]
    settings = EvaluationSettings(data=Path("."), symbols=("AAAUSDT", "BBBUSDT"),
                                  models={"oracle": {}, "noise": {}})
    text = render(results, settings, 3.0)
    assert "| all | zero | 4000 |" in text and "| AAAUSDT | zero | 2000 |" in text
    assert "oracle beat the zero-return forecast" in text
    assert "noise do worse than simply predicting zero" in text
    assert "oracle 2, noise 0" in text
    assert "| all | oracle | 4000 |" in text and "0.50000 |" in text  # RMSE ratio of y/2 is exactly 0.5


def test_one_symbol_on_real_klines_has_zero_and_the_models() -> None:
    data = require_shared_data("binance", "klines", "15m")
    settings = EvaluationSettings(data=data, symbols=("BTCUSDT",), folds=2, models={"ridge": {}},
                                  end_ms=1_740_787_200_000)  # Jan + Feb 2025: a fast check
    result = evaluate_symbol(settings, "BTCUSDT")
    assert result.rows > 5_000 and len(result.y) == len(result.forecasts["ridge"]) > 3_000
    assert np.isfinite(result.forecasts["ridge"]).all()
    with pytest.raises(Exception, match="no 15m klines of NOPEUSDT"):
        evaluate_symbol(settings, "NOPEUSDT")
