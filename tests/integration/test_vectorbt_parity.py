"""Against vectorbt, an independent implementation: the same signals give the same trades and equity.

The mapping of DOPE's semantics onto ``vbt.Portfolio.from_signals``: our decision at the
close of bar t is vectorbt's signal at bar t+1 (signals shifted one bar) with
``price=open`` (the fill at the next open) and ``close`` for the marks; ``fees=fee_rate``,
``slippage=slippage_bps / 1e4``; sizing ``size=np.inf`` (all the cash, fee included; the
order is cash-limited exactly as ours) or ``size=fraction, size_type="percent"``.
Long/flat: ``entries = prediction > upper``, ``exits = prediction < lower``,
``direction="longonly"``. Long/short: ``entries``/``short_entries`` with
``upon_opposite_entry="reverse"`` and ``lock_cash=True`` (so a short takes
``cash / (price * (1 + fee))`` units, as ours does). Predictions that are NaN are no signal.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pytest

from dope.backtest import BacktestConfig, BacktestResult, run_vectorized
from tests.conftest import require_shared_data

vbt = pytest.importorskip("vectorbt")

REL = 1e-9


def _shift(signal: np.ndarray) -> np.ndarray:
    return np.r_[False, signal[:-1]]


def vectorbt_portfolio(o: np.ndarray, c: np.ndarray, p: np.ndarray, cfg: BacktestConfig, freq: str) -> Any:
    """Our semantics expressed as vectorbt's ``from_signals``."""
    index = pd.date_range("2025-01-01", periods=len(c), freq=freq)
    kwargs: dict[str, Any] = {"close": pd.Series(c, index), "price": o, "fees": cfg.fee_rate,
                              "slippage": cfg.slippage, "init_cash": cfg.initial_cash, "freq": freq,
                              "entries": _shift(p > cfg.upper)}
    kwargs |= ({"size": np.inf} if cfg.fraction == 1.0 else {"size": cfg.fraction, "size_type": "percent"})
    if cfg.allow_short:
        kwargs |= {"short_entries": _shift(p < cfg.lower), "upon_opposite_entry": "reverse", "lock_cash": True}
    else:
        kwargs |= {"exits": _shift(p < cfg.lower), "direction": "longonly"}
    return vbt.Portfolio.from_signals(**kwargs)


def assert_same(ours: BacktestResult, theirs: Any) -> None:
    """Same equity per bar and at the end, same trades (bars, size, prices, fees, P&L)."""
    value = theirs.value().to_numpy()
    assert ours.equity[-1] == pytest.approx(value[-1], rel=REL)
    np.testing.assert_allclose(ours.equity, value, rtol=REL)
    rec = theirs.trades.records
    t = ours.trades
    assert len(t) == len(rec) and len(t) > 5
    last = len(ours.equity) - 1
    np.testing.assert_array_equal(t["entry_bar"], rec["entry_idx"])
    np.testing.assert_array_equal(np.where(t["is_open"], last, t["exit_bar"]), rec["exit_idx"])
    np.testing.assert_array_equal(t["direction"], np.where(rec["direction"] == 0, 1, -1))
    np.testing.assert_array_equal(t["is_open"], rec["status"] == 0)
    for ours_col, their_col in (("qty", "size"), ("entry_price", "entry_price"), ("exit_price", "exit_price"),
                                ("entry_fee", "entry_fees"), ("exit_fee", "exit_fees"), ("pnl", "pnl"),
                                ("return", "return")):
        np.testing.assert_allclose(t[ours_col], rec[their_col], rtol=REL, atol=1e-9, err_msg=ours_col)


# Thresholds in standard deviations of the (standardised) momentum prediction.
CONFIGS = [
    BacktestConfig(upper=2.0, lower=-2.0),
    BacktestConfig(upper=2.5, lower=0.0, fee_rate=0.00075, slippage_bps=5.0),
    BacktestConfig(upper=2.0, lower=-2.0, fee_rate=0.001, slippage_bps=2.0, allow_short=True),
    BacktestConfig(upper=1.5, lower=-2.5, fee_rate=0.0, fraction=0.5),
]


def momentum(close: np.ndarray, bars: int) -> np.ndarray:
    """Return over the last ``bars`` bars, known at the close, standardised; NaN until defined."""
    p = np.full(len(close), np.nan)
    p[bars:] = close[bars:] / close[:-bars] - 1.0
    return (p - np.nanmean(p)) / np.nanstd(p)


@pytest.mark.parametrize("cfg", CONFIGS, ids=["long", "long-slip", "short", "half"])
def test_synthetic_bars(cfg: BacktestConfig) -> None:
    from dope.market.synthetic import generate_bars

    start = 1_735_689_600_000
    bars = generate_bars(["BTCUSDT"], start, start + 3 * 86_400_000, 60_000, seed=11)["BTCUSDT"]
    o, c = bars["open"].to_numpy(), bars["close"].to_numpy()
    p = momentum(c, 5)
    p[np.random.default_rng(5).random(len(c)) < 0.05] = np.nan  # holes: no prediction
    ours = run_vectorized(o, c, p, cfg, times=bars["open_time"].to_numpy())
    assert_same(ours, vectorbt_portfolio(o, c, p, cfg, "1min"))


@pytest.mark.shared_data
@pytest.mark.parametrize("symbol", ["BTCUSDT", "ETHUSDT"])
@pytest.mark.parametrize("cfg", CONFIGS, ids=["long", "long-slip", "short", "half"])
def test_real_15m_klines(symbol: str, cfg: BacktestConfig) -> None:
    from dope.store import read_klines

    folder = require_shared_data("binance", "klines", "15m")
    path = next(folder.glob(f"{symbol}-15m-*.csv.gz"), None)
    if path is None:
        pytest.skip(f"no {symbol} 15m klines in {folder}")
    bars = read_klines(path).frame
    o, c = bars["open"].to_numpy(), bars["close"].to_numpy()
    p = momentum(c, 4)
    ours = run_vectorized(o, c, p, cfg, times=bars["open_time"].to_numpy())
    assert len(c) > 30_000
    assert_same(ours, vectorbt_portfolio(o, c, p, cfg, "15min"))
