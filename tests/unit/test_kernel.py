"""The backtest kernel's parts: the trading rule (and the paper broker booking it), the metric fold against its
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
from dope.trading.accounting import close_position, open_position
from dope.trading.orders import Execution
from dope.trading.rule import Costs, Leg, Position, Thresholds, decide, execute, flat


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


_HELD = 3.0  # units held by a non-flat position in the cases below, entered at 100 for a fee of 0.3


@pytest.mark.parametrize(("case", "direction", "target", "cash", "price", "sides"), [
    ("hold", 1, HOLD, 700.0, 90.0, ()),
    ("already there", 1, 1, 700.0, 90.0, ()),
    ("flat stays flat", 0, 0, 1000.0, 90.0, ()),
    ("open long", 0, 1, 1000.0, 90.0, (1,)),
    ("open short", 0, -1, 1000.0, 2000.0, (-1,)),
    ("close long", 1, 0, 700.0, 2000.0, (-1,)),
    ("close short", -1, 0, 1300.0, 90.0, (1,)),
    ("reverse long to short", 1, -1, 700.0, 90.0, (-1, -1)),
    ("reverse short to long", -1, 1, 1300.0, 90.0, (1, 1)),
    ("refused: no cash", 0, 1, -5000.0, 90.0, ()),
    ("a short that lost the account: closed, not reversed", -1, 1, 1300.0, 2000.0, (1,)),
])
def test_the_rule_holds_opens_closes_reverses_and_refuses_without_cash(
        case: str, direction: int, target: int, cash: float, price: float, sides: tuple[int, ...]) -> None:
    """Which legs an order fills, each at the accounting's price, value and fee, the cash settled leg by leg."""
    costs = Costs(fee_rate=0.001, slippage=0.0002, fraction=0.5)
    position = flat(cash) if direction == 0 else Position(cash, direction, _HELD, 100.0, 0.3)
    after, closed, opened = execute(position, target, price, costs)
    legs = [leg for leg in (closed, opened) if leg.side != 0]
    assert tuple(leg.side for leg in legs) == sides, case
    expected_cash, held = cash, direction
    if direction != 0 and sides:
        expected_cash, c_price, c_value, c_fee = close_position(cash, direction, _HELD, price, costs.slippage,
                                                                costs.fee_rate)
        assert closed == Leg(-direction, _HELD, c_price, c_value, c_fee)
        held = 0
    if opened.side != 0:
        expected_cash, qty, o_price, o_value, o_fee = open_position(expected_cash, target, price, costs.slippage,
                                                                    costs.fee_rate, costs.fraction)
        assert opened == Leg(target, qty, o_price, o_value, o_fee)
        held = target
    assert (after.cash, after.direction) == (expected_cash, held)


def test_the_paper_broker_books_the_rules_legs() -> None:
    portfolio = Portfolio(1000.0)
    portfolio.apply_fill(Execution(symbol="X", time_ms=0, side=1, qty=3.0, price=100.0, value=300.0, fee=0.3))
    broker = PaperBroker(portfolio, fee_rate=0.001, slippage_bps=2.0, fraction=0.5)
    broker.submit(Order(symbol="X", time_ms=0, target=-1, prediction=0.0))
    done = broker.on_open(1, 90.0)
    _, closed, opened = execute(Position(699.7, 1, 3.0, 100.0, 0.3), -1, 90.0, broker.costs)
    assert [(e.side, e.qty, e.price, e.value, e.fee) for e in done] == [tuple(closed), tuple(opened)]
    assert (portfolio.direction, portfolio.qty) == (-1, -opened.qty)


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
