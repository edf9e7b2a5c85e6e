"""The backtest kernel's parts: the trading rule against the paper broker, the metric fold against its
plain definition, and the notice while numba compiles."""

from __future__ import annotations

import io
import math

import numba
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dope.backtest.metrics import equity_sums, fold_bar, fold_unmoved, start_equity_sums
from dope.compile_notice import install, uninstall
from dope.trading import HOLD, Order, PaperBroker, Portfolio
from dope.trading.orders import Fill
from dope.trading.rule import Costs, Position, Thresholds, decide, execute, flat


def _plain_fold(equity: list[float], position: list[float], cash0: float) -> list[float]:
    """The definition of the equity sums in plain Python, bar by bar in order."""
    n = sum_r = sum_r2 = sum_d2 = sum_eq = exposed = mdd = 0.0
    peak = floor = prev = cash0
    for eq, held in zip(equity, position, strict=True):
        r = eq / prev - 1.0
        n, sum_r, sum_r2, sum_eq = n + 1.0, sum_r + r, sum_r2 + r * r, sum_eq + eq
        sum_d2 += (r if r < 0.0 else 0.0) ** 2
        exposed += held != 0.0
        if eq > peak:
            peak, floor = eq, eq * (1.0 - mdd)
        elif eq < floor:
            mdd = 1.0 - eq / peak
            floor = peak * (1.0 - mdd)
        prev = eq
    return [n, prev, sum_r, sum_r2, sum_d2, mdd, exposed, sum_eq, peak, floor]


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.integers(0, 60), elements=st.sampled_from([90.0, 95.5, 100.0, 101.25, 120.0, 80.0])),
       st.floats(50.0, 150.0))
def test_equity_sums_are_the_plain_fold_in_bar_order(equity: np.ndarray, cash0: float) -> None:
    position = (np.arange(len(equity)) % 3 == 0).astype(np.float64)
    got = list(equity_sums(equity, position, cash0))
    assert got == _plain_fold(equity.tolist(), position.tolist(), cash0)


def test_equity_sums_on_a_long_random_curve_are_the_plain_fold() -> None:
    rng = np.random.default_rng(5)
    equity = 1e4 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 1003)))
    equity[100:140] = equity[99]
    position = rng.choice([0.0, 1.0, -1.0], len(equity))
    assert list(equity_sums(equity, position, 1e4)) == _plain_fold(equity.tolist(), position.tolist(), 1e4)


@numba.njit
def _fold_repeated(before: np.ndarray, cash: float, repeats: int):  # type: ignore[no-untyped-def]
    """A curve, then ``cash`` for ``repeats`` bars folded by fold_bar and, after its first bar, by fold_unmoved."""
    sums = start_equity_sums(before[0])
    for eq in before:
        sums = fold_bar(sums, eq)
    sums = fold_bar(sums, cash)
    whole = split = sums
    for _ in range(repeats):
        whole = fold_bar(whole, cash)
        split = fold_unmoved(split)
    return whole, split


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([90.0, 95.5, 100.0, 120.0, 60.0, 1e-3, 7e5]), min_size=1, max_size=12),
       st.sampled_from([90.0, 95.5, 100.0, 130.0, 50.0, 0.1, 3.3e5]), st.integers(1, 9))
def test_a_flat_bar_folded_as_unmoved_gives_fold_bars_bits(before: list[float], cash: float, repeats: int) -> None:
    whole, split = _fold_repeated(np.array(before), cash, repeats)
    assert repr(tuple(split)) == repr(tuple(whole))  # repr: -0.0 differs from 0.0


def _paper_fills(direction: int, target: int, cash: float, price: float, costs: Costs) -> tuple[Fill, ...]:
    portfolio = Portfolio(cash)
    broker = PaperBroker(portfolio, fee_rate=costs.fee_rate, slippage_bps=costs.slippage * 1e4,
                         fraction=costs.fraction)
    if direction != 0:
        portfolio.apply_fill(Fill(symbol="X", time_ms=0, side=direction, qty=3.0, price=100.0, value=300.0, fee=0.3))
    broker.submit(Order(symbol="X", time_ms=0, target=target, prediction=0.0))
    return broker.on_open(1, price)


@pytest.mark.parametrize("direction", [-1, 0, 1])
@pytest.mark.parametrize("target", [-1, 0, 1])
@pytest.mark.parametrize("cash", [1000.0, -5000.0])
@pytest.mark.parametrize("price", [90.0, 2000.0])
def test_the_rule_fills_exactly_as_the_paper_broker(direction: int, target: int, cash: float, price: float) -> None:
    """Hold, open, close, reverse and refuse without cash: the rule's legs are the paper broker's fills."""
    costs = Costs(fee_rate=0.001, slippage=0.0002, fraction=0.5)
    fills = _paper_fills(direction, target, cash, price, costs)
    start = cash - (direction * 300.0 + 0.3 if direction else 0.0)
    position = flat(start) if direction == 0 else Position(start, direction, 3.0, 100.0, 0.3)
    after, closed, opened = execute(position, target if target != direction else HOLD, price, costs)
    legs = [(leg.side, leg.qty, leg.price, leg.value, leg.fee) for leg in (closed, opened) if leg.side != 0]
    assert legs == [(f.side, f.qty, f.price, f.value, f.fee) for f in fills]
    broker_cash = start + sum(-f.side * f.value - f.fee for f in fills)
    assert after.cash == pytest.approx(broker_cash, rel=1e-12, abs=1e-9)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.floats(-1, 1), st.just(math.nan), st.just(math.inf)), st.floats(-0.5, 0.5), st.floats(0, 0.5),
       st.booleans(), st.sampled_from([-1, 0, 1]))
def test_decide_orders_only_a_change_of_direction(prediction: float, lower: float, width: float, allow_short: bool,
                                                  direction: int) -> None:
    if direction < 0 and not allow_short:
        direction = 0  # a long/flat run is never short
    upper = lower + width
    target = decide(prediction, direction, Thresholds(upper, lower, allow_short))
    wanted = 1 if prediction > upper else (-1 if allow_short else 0) if prediction < lower else HOLD
    assert target == (HOLD if wanted == direction else wanted)


def test_a_long_compilation_prints_one_line_and_a_quick_one_none() -> None:
    quiet, loud = io.StringIO(), io.StringIO()
    for stream, after_s in ((quiet, 60.0), (loud, 0.0)):
        notice = install(after_s=after_s, stream=stream)
        try:
            assert numba.njit(lambda x: x * 2)(21) == 42
            assert numba.njit(lambda x: x * 3)(2) == 6  # a second compilation: still one line
        finally:
            uninstall(notice)
    assert quiet.getvalue() == ""
    assert loud.getvalue().count("\n") == 1 and loud.getvalue().startswith("compiling numba code")


def test_short_compilations_that_add_up_print_the_line() -> None:
    """A cold start compiles many small functions, none long alone: their sum is what the user waits for."""
    out = io.StringIO()
    notice = install(after_s=60.0, stream=out)
    try:
        assert numba.njit(lambda x: x + 7)(1) == 8
        assert out.getvalue() == ""
        notice.after_s = notice._compiled_s + 1e-6  # any further compilation crosses it, added to the first
        assert numba.njit(lambda x: x + 8)(1) == 9
    finally:
        uninstall(notice)
    assert out.getvalue().startswith("compiling numba code")


def test_no_line_when_nothing_compiles() -> None:
    f = numba.njit(lambda x: x - 1)
    f(1)
    out = io.StringIO()
    notice = install(after_s=0.0, stream=out)
    try:
        assert f(2) == 1  # compiled already
    finally:
        uninstall(notice)
    assert out.getvalue() == ""
