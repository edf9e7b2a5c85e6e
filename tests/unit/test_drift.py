"""Drift statistics: known answers, scipy's KS statistic, symmetry and monotonicity, non-finite values."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import ks_2samp

from dope.loop.drift import (
    EPSILON,
    PreparedReference,
    bin_edges,
    bin_shares,
    drift_of,
    ks_statistic,
    psi,
    psi_of_shares,
)


def normal(seed: int, rows: int, cols: int = 3, shift: float = 0.0) -> np.ndarray:
    return np.random.default_rng(seed).normal(shift, 1.0, size=(rows, cols))


def test_identical_samples_drift_zero() -> None:
    ref = normal(0, 2_000)
    assert psi(ref, ref) == pytest.approx(np.zeros(3), abs=1e-12)
    assert ks_statistic(ref, ref) == pytest.approx(np.zeros(3), abs=1e-12)


def test_psi_by_hand() -> None:
    ref = np.arange(1.0, 11.0)  # 10 bins of one value each: edges at 1.9, 2.8, ...
    live = np.array([1.0, 1.0, 1.0, 1.0, 1.0, 10.0, 10.0, 10.0, 10.0, 10.0])
    p = np.full(10, 0.1)
    q = np.array([0.5] + [EPSILON] * 8 + [0.5])
    assert psi(ref, live)[0] == pytest.approx(((q - p) * np.log(q / p)).sum(), rel=1e-12)


def test_ks_equals_scipy_with_ties_and_different_sizes() -> None:
    rng = np.random.default_rng(3)
    ref = np.round(rng.normal(size=(2_000, 5)), 1)  # many ties
    live = np.round(rng.normal(0.2, 1.3, size=(437, 5)), 1)
    expected = [ks_2samp(ref[:, j], live[:, j]).statistic for j in range(5)]
    assert np.abs(ks_statistic(ref, live) - expected).max() <= 1e-12


def test_shifted_normal_is_flagged_and_drift_grows_with_the_shift() -> None:
    ref = normal(0, 2_000, 1)
    same = drift_of(ref, normal(1, 500, 1))
    assert same.psi[0] < 0.1 and same.ks[0] < 0.1
    shifts = [0.25, 0.5, 1.0, 2.0]
    drifts = [drift_of(ref, normal(1, 500, 1, shift)) for shift in shifts]
    assert drifts[-2].psi[0] > 0.25 and drifts[-2].ks[0] > 0.25
    assert np.all(np.diff([d.psi[0] for d in drifts]) > 0)
    assert np.all(np.diff([d.ks[0] for d in drifts]) > 0)


def test_symmetry() -> None:
    a, b = normal(4, 300), normal(5, 800, shift=0.3)
    assert ks_statistic(a, b) == pytest.approx(ks_statistic(b, a), abs=1e-15)
    edges = bin_edges(a)
    pa, pb = bin_shares(a, edges), bin_shares(b, edges)
    assert psi_of_shares(pa, pb) == pytest.approx(psi_of_shares(pb, pa), rel=1e-12)


def test_columns_are_independent() -> None:
    ref, live = normal(6, 1_000, 4), normal(7, 300, 4, shift=0.5)
    whole = drift_of(ref, live)
    for j in range(4):
        one = drift_of(ref[:, j], live[:, j])
        assert one.psi[0] == pytest.approx(whole.psi[j], rel=1e-12)
        assert one.ks[0] == pytest.approx(whole.ks[j], abs=1e-15)


def test_nonfinite_live_values_are_counted_and_left_out() -> None:
    ref, live = normal(8, 1_000, 2), normal(9, 200, 2)
    dirty = live.copy()
    dirty[:5, 0] = np.nan
    dirty[5, 1] = np.inf
    drift = drift_of(ref, dirty)
    assert drift.nonfinite == 6
    assert drift.psi[0] == pytest.approx(psi(ref[:, 0], live[5:, 0])[0], rel=1e-12)
    assert drift.ks[1] == pytest.approx(ks_statistic(ref[:, 1], np.delete(live[:, 1], 5))[0], abs=1e-15)
    all_bad = drift_of(ref, np.full((10, 2), np.nan))
    assert all_bad.nonfinite == 20 and np.isnan(all_bad.psi).all() and np.isnan(all_bad.ks).all()


def test_bad_shapes_are_named() -> None:
    with pytest.raises(ValueError, match="reference has 2 feature"):
        drift_of(np.zeros((5, 2)), np.zeros((5, 3)))
    with pytest.raises(ValueError, match="1-d or 2-d"):
        psi(np.zeros((2, 2, 2)), np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="finite value per feature"):
        ks_statistic(np.full((5, 1), np.nan), np.zeros((5, 1)))


def test_a_prepared_reference_gives_the_same_drift() -> None:
    ref, live = normal(10, 1_000), normal(11, 300, shift=0.4)
    ref[3, 1] = np.nan  # a reference value that is not finite is left out of its bins too
    direct, prepared = drift_of(ref, live), drift_of(PreparedReference.of(ref), live)
    assert np.array_equal(direct.psi, prepared.psi) and np.array_equal(direct.ks, prepared.ks)
    assert np.isfinite(direct.psi).all()
