"""Risk limits of the live trader: position caps, the daily-loss kill switch and its resets, stale inputs."""

from __future__ import annotations

import pytest

from dope.config import RiskConfig, TraderConfig
from dope.messages import Decision, Equity, Fill
from dope.trading.live import SymbolTrader
from dope.trading.risk import RiskLimits
from dope.types import DAY_MS
from tests.trader_helpers import INTERVAL, START, make_bar, make_prediction


def trader(**risk: float) -> SymbolTrader:
    config = TraderConfig(upper=0.001, lower=-0.001, initial_cash=10_000.0, fee_rate=0.001,
                          risk=RiskConfig(**risk))  # type: ignore[arg-type]
    return SymbolTrader("BTCUSDT", config, None)


def of(kind: type, messages: list) -> list:  # type: ignore[type-arg]
    return [m for m in messages if isinstance(m, kind)]


def step(t: SymbolTrader, i: int, open_: float, close: float, prediction: float | None, *, now: int | None = None,
         pred_now: int | None = None, start: int = START) -> list:  # type: ignore[type-arg]
    open_time = start + i * INTERVAL
    arrived = open_time + INTERVAL if now is None else now
    out = t.on_bar(make_bar(open_time, open_, close), arrived)
    return out + t.on_prediction(make_prediction(open_time, prediction), arrived if pred_now is None else pred_now)


def test_position_cap_in_units_limits_the_fill() -> None:
    t = trader(max_position_units=2.0)
    step(t, 0, 100.0, 100.0, 0.01)
    fills = of(Fill, step(t, 1, 100.0, 101.0, 0.0))
    assert len(fills) == 1 and fills[0].qty == pytest.approx(2.0, rel=1e-12)
    assert t.portfolio.cash == pytest.approx(10_000.0 - 2 * 100.0 * 1.001)


def test_position_cap_in_notional_limits_the_fill() -> None:
    t = trader(max_position_notional=1_500.0)
    step(t, 0, 100.0, 100.0, 0.01)
    fills = of(Fill, step(t, 1, 120.0, 121.0, 0.0))
    assert fills[0].qty * fills[0].price == pytest.approx(1_500.0)


def test_daily_loss_trips_the_kill_switch_goes_flat_and_blocks_entries_until_the_next_day() -> None:
    t = trader(max_daily_loss=500.0)
    step(t, 0, 100.0, 100.0, 0.01)                       # decide long
    step(t, 1, 100.0, 100.0, 0.0)                        # filled at 100, ~100 units
    out = step(t, 2, 100.0, 90.0, 0.01)                  # -1000: tripped
    kill = [d for d in of(Decision, out) if d.reason.startswith("kill switch")]
    assert kill[0].action == "sell" and kill[0].target_position == 0
    assert of(Equity, out)[-1].kill_switch is True
    out = step(t, 3, 91.0, 95.0, 0.05)                   # flat at this open; entries refused
    assert of(Fill, out)[0].side == "SELL" and t.portfolio.direction == 0
    assert of(Decision, out)[-1].action == "hold" and "kill switch" in of(Decision, out)[-1].reason
    assert t.broker.pending is None
    next_day = START + DAY_MS
    out = step(t, 0, 95.0, 95.0, 0.05, start=next_day)   # a new UTC day: trading again
    assert of(Equity, out)[-1].kill_switch is False and of(Decision, out)[-1].action == "buy"


def test_daily_loss_fraction_and_manual_reset() -> None:
    t = trader(max_daily_loss_fraction=0.05)
    step(t, 0, 100.0, 100.0, 0.01)
    step(t, 1, 100.0, 100.0, 0.0)
    step(t, 2, 100.0, 94.0, 0.0)
    assert t.risk.state.killed and "6." in t.risk.state.reason
    step(t, 3, 94.0, 94.0, 0.05)
    assert t.portfolio.direction == 0
    t.risk.reset()
    out = step(t, 4, 94.0, 94.0, 0.05)
    assert of(Decision, out)[-1].action == "buy" and not t.risk.state.killed


def test_risk_limits_alone() -> None:
    risk = RiskLimits(RiskConfig(max_daily_loss=10.0))
    assert risk.on_equity(START, 100.0) is None
    assert risk.on_equity(START + 1, 95.0) is None
    assert risk.on_equity(START + 2, 89.0) is not None and risk.state.killed
    assert risk.on_equity(START + 3, 50.0) is None  # already tripped: reported once
    risk.reset()
    assert risk.state.day_start_equity == 50.0 and not risk.state.killed
    caps = RiskLimits(RiskConfig())
    assert caps.fraction(0.7, 1_000.0, 10.0, 1, 0.001, 0.0) == 0.7  # no limit: unchanged


def test_a_late_prediction_is_stale_and_not_traded() -> None:
    t = trader(max_prediction_delay_ms=5_000)
    bar_seen = START + INTERVAL
    out = step(t, 0, 100.0, 100.0, 0.05, now=bar_seen, pred_now=bar_seen + 6_000)
    decision = of(Decision, out)[-1]
    assert decision.action == "hold" and decision.reason.startswith("stale prediction")
    assert t.broker.pending is None and t.counters["holds_stale"] == 1


def test_a_stale_price_is_not_traded() -> None:
    t = trader(max_price_age_ms=1_000)
    close_time = START + INTERVAL - 1
    out = step(t, 0, 100.0, 100.0, 0.05, now=close_time + 3_000)
    assert of(Decision, out)[-1].reason.startswith("stale price")
    out = step(t, 1, 100.0, 100.0, 0.05, now=close_time + INTERVAL + 500)
    assert of(Decision, out)[-1].action == "buy"


def test_a_prediction_for_an_older_bar_is_refused() -> None:
    t = trader()
    step(t, 0, 100.0, 100.0, 0.0)
    step(t, 1, 100.0, 100.0, 0.0)
    assert t.on_prediction(make_prediction(START, 0.05), START + 3 * INTERVAL) == []
    assert t.counters["stale_predictions"] == 1 and t.broker.pending is None


def test_no_prediction_in_time_is_a_hold_and_the_next_bar_goes_on() -> None:
    t = trader(max_prediction_delay_ms=2_000)
    t.on_bar(make_bar(START, 100.0, 100.0), 0)
    assert t.poll(1_000) == []
    out = t.poll(2_500)
    assert of(Decision, out)[0].reason.startswith("no prediction within") and t.waiting is None
    none = step(t, 1, 100.0, 100.0, None, now=3_000)
    assert of(Decision, none)[-1].reason == "no prediction (none)" and of(Decision, none)[-1].prediction is None


def test_bars_queued_behind_a_silent_rendezvous_all_time_out_in_one_poll() -> None:
    t = trader(max_prediction_delay_ms=1_000)
    for i in range(5):
        t.on_bar(make_bar(START + i * INTERVAL, 100.0, 100.0), i * 10)
    assert len(t.queue) == 4
    out = t.poll(5_000)
    assert len(of(Decision, out)) == 5 and t.waiting is None and not t.queue


def test_an_exchange_halt_keeps_the_kill_switch_on_until_it_ends_even_across_a_utc_day() -> None:
    risk = RiskLimits(RiskConfig())
    risk.on_equity(0, 1_000.0)
    risk.halt(5_000, "IP banned")
    assert risk.state.killed and risk.state.reason == "exchange halt: IP banned"
    risk.on_equity(DAY_MS, 1_000.0)                      # a new UTC day does not lift a ban
    assert risk.state.killed and not risk.end_halt(4_999)
    assert risk.end_halt(5_000) and not risk.state.killed and risk.state.halted_until_ms == 0
    risk.state.killed, risk.state.reason = True, "daily loss"
    risk.halt(9_000, "IP banned")                       # a ban never hides, nor lifts, another kill reason
    assert risk.end_halt(9_000) and risk.state.killed and risk.state.reason == "daily loss"
