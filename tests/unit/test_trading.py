"""The trader core: threshold strategy, paper broker fill rule, portfolio booking, trader loop."""

from __future__ import annotations

import math

import pytest

from dope.clock import SimulatedClock
from dope.trading import HOLD, Execution, Order, PaperBroker, Portfolio, ThresholdStrategy, Trader, signal


def test_signal_thresholds_and_nan() -> None:
    assert signal(0.3, 0.2, -0.2, False) == 1
    assert signal(-0.3, 0.2, -0.2, False) == 0
    assert signal(-0.3, 0.2, -0.2, True) == -1
    assert signal(0.2, 0.2, -0.2, True) == HOLD  # strictly above the upper threshold to buy
    assert signal(-0.2, 0.2, -0.2, True) == HOLD
    assert signal(math.nan, 0.2, -0.2, True) == HOLD
    assert signal(math.inf, 0.2, -0.2, False) == 1


def test_strategy_holds_when_already_there() -> None:
    s = ThresholdStrategy(0.1, -0.1, allow_short=True)
    assert s.target(0.5, current=1) is None
    assert s.target(0.5, current=-1) == 1
    assert s.target(-0.5, current=0) == -1
    assert s.target(0.0, current=-1) is None
    with pytest.raises(ValueError, match="above upper"):
        ThresholdStrategy(0.0, 0.1)


def _order(target: int) -> Order:
    return Order(symbol="X", time_ms=0, target=target, prediction=0.0)


def test_broker_buys_at_next_open_with_fee_and_slippage() -> None:
    pf = Portfolio(1010.0)
    broker = PaperBroker(pf, fee_rate=0.01, slippage_bps=100.0)  # 1% fee, 1% slippage
    broker.submit(_order(1))
    (fill,) = broker.on_open(5, 100.0)
    assert fill.side == 1 and fill.time_ms == 5
    assert fill.price == pytest.approx(101.0)            # bought 1% above the open
    assert fill.value == pytest.approx(1000.0)           # 1010 / 1.01: the fee fits in the cash
    assert fill.fee == pytest.approx(10.0)
    assert fill.qty == pytest.approx(1000.0 / 101.0)
    assert pf.cash == pytest.approx(0.0, abs=1e-9) and pf.direction == 1
    assert broker.on_open(6, 120.0) == ()                # nothing pending: nothing fills


def test_broker_round_trip_pnl_by_hand() -> None:
    pf = Portfolio(1010.0)
    broker = PaperBroker(pf, fee_rate=0.01)
    broker.submit(_order(1))
    broker.on_open(1, 100.0)                              # 10 units for 1000 + 10 fee
    broker.submit(_order(0))
    (fill,) = broker.on_open(2, 110.0)                   # sold for 1100 - 11 fee
    assert fill.side == -1 and fill.qty == pytest.approx(10.0)
    assert pf.cash == pytest.approx(1089.0)
    (trade,) = pf.trades
    assert trade.pnl == pytest.approx(10 * (110 - 100) - 10 - 11)
    assert trade.ret == pytest.approx(79 / 1000)
    assert pf.fees_paid == pytest.approx(21.0)


def test_broker_reversal_is_close_then_open_at_the_same_open() -> None:
    pf = Portfolio(1000.0)
    broker = PaperBroker(pf, fee_rate=0.0)
    broker.submit(_order(-1))
    broker.on_open(1, 100.0)                              # short 10 at 100: cash 2000
    assert pf.qty == pytest.approx(-10.0) and pf.cash == pytest.approx(2000.0)
    broker.submit(_order(1))
    close, open_ = broker.on_open(2, 95.0)               # cover at 95 (cash 1050), then long 1050/95
    assert (close.side, open_.side) == (1, 1)
    assert pf.qty == pytest.approx(1050 / 95) and pf.cash == pytest.approx(0.0, abs=1e-9)
    assert pf.trades[0].pnl == pytest.approx(50.0) and pf.trades[0].direction == -1


def test_no_new_position_without_cash() -> None:
    pf = Portfolio(1000.0)
    broker = PaperBroker(pf, fee_rate=0.0)
    broker.submit(_order(-1))
    broker.on_open(1, 100.0)
    broker.submit(_order(1))
    fills = broker.on_open(2, 250.0)                      # covering costs 2500 > 2000: ruined
    assert len(fills) == 1 and pf.direction == 0 and pf.cash == pytest.approx(-500.0)


def test_portfolio_closes_partly_and_rejects_oversized_and_adding_fills() -> None:
    pf = Portfolio(1000.0)
    pf.apply_fill(Execution(symbol="X", time_ms=0, side=1, qty=2.0, price=100.0, value=200.0, fee=0.4))
    with pytest.raises(ValueError, match="larger than the position"):
        pf.apply_fill(Execution(symbol="X", time_ms=1, side=-1, qty=3.0, price=100.0, value=300.0, fee=0.0))
    with pytest.raises(ValueError, match="adding to an open position"):
        pf.apply_fill(Execution(symbol="X", time_ms=1, side=1, qty=1.0, price=100.0, value=100.0, fee=0.0))
    # a live close that executed partly: a trade for the part sold, the rest stays open with its share
    pf.apply_fill(Execution(symbol="X", time_ms=2, side=-1, qty=0.5, price=120.0, value=60.0, fee=0.0))
    assert (pf.qty, pf.direction, pf.cash) == (1.5, 1, 1000.0 - 200.4 + 60.0)
    assert pf.trades[-1].qty == 0.5 and pf.trades[-1].pnl == pytest.approx(0.5 * 20.0 - 0.1)
    pf.apply_fill(Execution(symbol="X", time_ms=3, side=-1, qty=1.5, price=100.0, value=150.0, fee=0.0))
    assert pf.direction == 0 and sum(t.pnl for t in pf.trades) == pytest.approx(pf.cash - 1000.0)


def test_trader_decides_at_close_and_fills_at_next_open() -> None:
    clock = SimulatedClock(0)
    pf = Portfolio(100.0)
    trader = Trader("X", ThresholdStrategy(0.0, 0.0), PaperBroker(pf, fee_rate=0.0), pf, clock)
    assert trader.on_bar(0, 10.0, 10.0) == ()
    clock.advance_to(999)
    order = trader.on_prediction(1.0)
    assert order is not None and order.time_ms == 999 and order.target == 1
    assert trader.on_prediction(1.0) is not None   # still flat until the fill: re-sent, replaces the first
    assert pf.direction == 0 and trader.equity() == 100.0
    (fill,) = trader.on_bar(1_000, 20.0, 25.0)      # filled at the next open, not at the decision's close
    assert fill.price == 20.0 and trader.equity() == pytest.approx(125.0)
    assert trader.on_prediction(math.nan) is None


def test_the_trader_section_is_the_trading_config_the_backtest_runs() -> None:
    """``[trader]`` keeps its flat fields; its strategy part is exactly a backtest config, with nothing else."""
    from dope.backtest import BacktestConfig
    from dope.config import config_from_dict
    from dope.trading.config import RiskConfig, StrategyConfig, TradingConfig

    cfg = config_from_dict({"trader": {"upper": 0.01, "lower": -0.02, "fee_rate": 0.002, "slippage_bps": 3.0,
                                       "fraction": 0.5, "broker": "paper", "risk": {"max_daily_loss": 5.0}}})
    trader = cfg.trader
    assert isinstance(trader, TradingConfig) and trader.risk == RiskConfig(max_daily_loss=5.0)
    assert trader.strategy() == BacktestConfig(upper=0.01, lower=-0.02, fee_rate=0.002, slippage_bps=3.0,
                                               fraction=0.5)
    assert type(trader.strategy()) is StrategyConfig is BacktestConfig
    assert trader.costs() == (0.002, 3.0 / 10_000.0, 0.5) and trader.thresholds() == (0.01, -0.02, False)


@pytest.mark.parametrize(("fields", "named"), [({"lower": 0.1, "upper": 0.0}, "above upper threshold"),
                                               ({"fraction": 0.0}, "fraction"), ({"fee_rate": 1.0}, "fee_rate")])
def test_bad_trading_settings_are_refused_with_the_field_named(fields: dict[str, float], named: str) -> None:
    from dope.config import ConfigError, config_from_dict

    with pytest.raises(ConfigError, match=named):
        config_from_dict({"trader": fields})
