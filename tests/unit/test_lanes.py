"""The eight-lane vectors behind the backtest kernel, and the lane-wise metric sums they fold."""

from __future__ import annotations

import numba
import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from dope.backtest.lanes import (
    WIDTH,
    add_where,
    address,
    bits_gt,
    bits_lt,
    bits_ne,
    first_lane,
    lane,
    lane_min,
    lane_sum,
    lanes_from,
    load,
    load_one,
    load_part,
    prefetch,
    previous_lanes,
    splat,
    store_one,
)
from dope.backtest.metrics import (
    EquitySums,
    equity_sums,
    fold_lanes,
    fold_return,
    fold_unmoved,
    start_sums,
)


@numba.njit
def _lanes(v):  # type: ignore[no-untyped-def]
    out = np.empty(WIDTH)
    for j in range(WIDTH):
        out[j] = lane(v, j)
    return out


@numba.njit
def _arithmetic(a, b):  # type: ignore[no-untyped-def]
    x, y = load(address(a), 0), load(address(b), 0)
    return _lanes(x + y), _lanes(x - y), _lanes(x * y), _lanes(x / y), _lanes(lane_min(x, y))


@numba.njit
def _compares(a, b):  # type: ignore[no-untyped-def]
    x, y = load(address(a), 0), load(address(b), 0)
    return bits_gt(x, y), bits_lt(x, y), bits_ne(x, y)


def _bits(flags: list[bool]) -> int:
    return sum(1 << j for j, flag in enumerate(flags) if flag)


def test_lane_arithmetic_rounds_each_lane_as_python_does() -> None:
    a = np.array([0.1, -3.0, 1e308, 7.0, 1 / 3, 2.0, -0.0, 5e-324])
    b = np.array([0.2, 3.0, 10.0, 3.0, 3.0, 1e-300, 1.0, 2.0])
    added, subtracted, multiplied, divided, lowest = _arithmetic(a, b)
    assert added.tolist() == [x + y for x, y in zip(a.tolist(), b.tolist(), strict=True)]
    assert subtracted.tolist() == [x - y for x, y in zip(a.tolist(), b.tolist(), strict=True)]
    assert multiplied.tolist() == [x * y for x, y in zip(a.tolist(), b.tolist(), strict=True)]  # inf included
    assert divided.tolist() == [x / y for x, y in zip(a.tolist(), b.tolist(), strict=True)]
    assert lowest.tolist() == [x if x < y else y for x, y in zip(a.tolist(), b.tolist(), strict=True)]


def test_lane_masks_compare_as_python_compares_floats_nan_included() -> None:
    a = np.array([1.0, np.nan, 2.0, -np.inf, np.nan, 0.0, 3.0, -1.0])
    b = np.array([0.0, 1.0, 2.0, np.nan, np.nan, -0.0, 4.0, -2.0])
    gt, lt, ne = _compares(a, b)
    pairs = list(zip(a.tolist(), b.tolist(), strict=True))
    assert gt == _bits([x > y for x, y in pairs]) == 0b10000001
    assert lt == _bits([x < y for x, y in pairs]) == 0b01000000
    assert ne == _bits([x != y for x, y in pairs]) == 0b11011011


@numba.njit
def _masked(a, b, bits):  # type: ignore[no-untyped-def]
    return _lanes(add_where(load(address(a), 0), load(address(b), 0), bits))


def test_add_where_adds_only_in_the_masked_lanes() -> None:
    a, b = np.arange(1.0, 9.0), np.r_[np.arange(10.0, 80.0, 10.0), np.nan]
    assert _masked(a, b, 0b00000101).tolist() == [11.0, 2.0, 33.0, 4.0, 5.0, 6.0, 7.0, 8.0]
    assert _masked(a, b, 0).tolist() == a.tolist()


@numba.njit
def _shifts(a, before, j):  # type: ignore[no-untyped-def]
    return _lanes(previous_lanes(load(address(a), 0), before, j))


def test_previous_lanes_puts_each_lanes_left_neighbour_and_the_value_before() -> None:
    a = np.arange(1.0, 9.0)
    assert _shifts(a, 9.0, 0).tolist() == [9.0, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0]
    assert _shifts(a, 9.0, 5)[5:].tolist() == [9.0, 6.0, 7.0]


@numba.njit
def _masks(bits, first, last):  # type: ignore[no-untyped-def]
    return first_lane(bits), lanes_from(first, last)


def test_first_lane_and_lanes_from() -> None:
    assert _masks(0b10000000, 0, 7) == (7, 0b11111111)
    assert _masks(0b0110, 1, 2) == (1, 0b0110)
    assert _masks(0b0001, 2, 2) == (0, 0b0100)


@numba.njit
def _memory(a, start, count):  # type: ignore[no-untyped-def]
    base = address(a)
    part = _lanes(load_part(base, start, count, -1.0))
    store_one(base, start, lane(splat(42), 3))
    return part, load_one(base, start), lane_sum(load(base, 0))


@numba.njit
def _prefetch_past_the_end(a):  # type: ignore[no-untyped-def]
    base = address(a)
    for k in (0, a.shape[0], 1 << 20, 1 << 40):
        prefetch(base, k)
    return lane_sum(load(base, 0))


def test_prefetch_is_only_a_hint_even_far_past_the_end() -> None:
    a = np.arange(1.0, 9.0)
    assert _prefetch_past_the_end(a) == 36.0 and a.tolist() == list(range(1, 9))


def test_load_part_fills_missing_lanes_and_store_one_writes_in_place() -> None:
    a = np.arange(1.0, 11.0)
    part, stored, total = _memory(a, 8, 2)
    assert part.tolist() == [9.0, 10.0] + [-1.0] * (WIDTH - 2)
    assert stored == 42.0 and a[8] == 42.0
    assert total == ((1.0 + 2.0) + (3.0 + 4.0)) + ((5.0 + 6.0) + (7.0 + 8.0))


def _plain_lane_fold(equity: np.ndarray, position: np.ndarray, cash0: float) -> list[float]:
    """The definition of the lane sums in plain Python: bar t in lane t % 8, lanes added pairwise."""
    sums = {name: [0.0] * 8 for name in ("r", "r2", "d2", "eq")}
    peak = floor = prev = cash0
    mdd = 0.0
    for t, eq in enumerate(equity.tolist()):
        j = t % 8
        if eq != prev:
            r = eq / prev - 1.0
            sums["r"][j] += r
            sums["r2"][j] += r * r
            if r < 0.0:
                sums["d2"][j] += r * r
            if eq > peak:
                peak = eq
                floor = peak * (1.0 - mdd)
            elif eq < floor:
                mdd = 1.0 - eq / peak
                floor = peak * (1.0 - mdd)
        sums["eq"][j] += eq
        prev = eq

    def pairwise(v: list[float]) -> float:
        return ((v[0] + v[1]) + (v[2] + v[3])) + ((v[4] + v[5]) + (v[6] + v[7]))

    final = float(equity[-1]) if len(equity) else cash0
    return [len(equity), final, pairwise(sums["r"]), pairwise(sums["r2"]), pairwise(sums["d2"]), mdd,
            int(np.count_nonzero(position)), pairwise(sums["eq"])]


@settings(max_examples=200, deadline=None)
@given(arrays(np.float64, st.integers(0, 53), elements=st.sampled_from([90.0, 95.5, 100.0, 101.25, 120.0, 80.0])),
       st.floats(50.0, 150.0))
def test_equity_sums_are_the_plain_lane_by_lane_fold(equity: np.ndarray, cash0: float) -> None:
    position = (np.arange(len(equity)) % 3 == 0).astype(np.float64)
    assert equity_sums(equity, position, cash0).tolist() == _plain_lane_fold(equity, position, cash0)


def test_equity_sums_on_a_long_random_curve_are_the_plain_fold() -> None:
    rng = np.random.default_rng(5)
    equity = 1e4 * np.exp(np.cumsum(rng.normal(0.0, 0.01, 1003)))
    equity[100:140] = equity[99]  # unchanged equity adds no return
    position = rng.choice([0.0, 1.0, -1.0], len(equity))
    assert equity_sums(equity, position, 1e4).tolist() == _plain_lane_fold(equity, position, 1e4)


@numba.njit
def _plain(sums: EquitySums):  # type: ignore[no-untyped-def]
    """The sums with their lanes as arrays (numba cannot hand a vector to Python)."""
    peak, mdd, floor, prev, sum_r, sum_r2, sum_d2, sum_eq, n_exposed = sums
    return peak, mdd, floor, prev, _lanes(sum_r), _lanes(sum_r2), _lanes(sum_d2), _lanes(sum_eq), n_exposed


@numba.njit
def _flat_group_both_ways(before, cash, j, last, peak_drop):  # type: ignore[no-untyped-def]
    """A group folded whole by fold_lanes, then its bars to ``j - 1`` the same way and lanes ``j`` to ``last``
    (the cash, unmoved after bar ``j``; never NaN, as prices that would make it NaN are refused) by
    fold_return and fold_unmoved."""
    sums = start_sums(before[0] * (1.0 + peak_drop))
    sums = fold_lanes(sums, load(address(before), 0), 0, WIDTH - 1)
    prior = fold_lanes(sums, load(address(before), 0), 0, j - 1) if j > 0 else sums
    group = load(address(np.full(WIDTH, cash)), 0)
    split = fold_unmoved(fold_return(prior, cash, j), group, j, last)
    return _plain(fold_lanes(prior, group, j, last)), _plain(split)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([90.0, 95.5, 100.0, 120.0, 60.0]), min_size=WIDTH, max_size=WIDTH),
       st.sampled_from([90.0, 95.5, 100.0, 130.0, 50.0, np.inf]), st.integers(0, WIDTH - 1),
       st.integers(0, WIDTH - 1), st.sampled_from([0.0, 0.3]))
def test_a_flat_stretch_folded_as_its_fill_bar_and_unmoved_lanes_gives_fold_lanes_bits(
        before: list[float], cash: float, j: int, extra: int, peak_drop: float) -> None:
    last = min(WIDTH - 1, j + extra)
    whole, split = _flat_group_both_ways(np.array(before), cash, j, last, peak_drop)
    as_lists = [[x.tolist() if isinstance(x, np.ndarray) else x for x in sums] for sums in (whole, split)]
    assert repr(as_lists[1]) == repr(as_lists[0])  # repr: NaN equals NaN, -0.0 differs from 0.0
