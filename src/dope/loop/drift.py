"""Drift statistics of live samples against a reference sample, vectorised over features (columns).

Both samples are 2-d arrays, one row per observation and one column per feature (a 1-d array is
one feature). Values that are not finite (NaN, ±inf) are excluded per value and counted in
:class:`Drift`'s ``nonfinite``: a feature with no finite live value has a NaN statistic.

**PSI** (population stability index), per feature, over ``bins`` bins cut at the reference's
quantiles ``1/bins, ..., (bins-1)/bins`` (so each bin holds about ``1/bins`` of the reference)::

    PSI = sum_b (q_b - p_b) * ln(q_b / p_b)

with ``p_b``, ``q_b`` the reference's and the live sample's share of bin ``b``, each raised to at least
``EPSILON`` so an empty bin costs a large but finite amount. Bins are ``(-inf, e_1], (e_1, e_2], ...,
(e_{bins-1}, inf)``; a repeated edge (a feature with ties) gives an empty bin in both samples, which adds 0.
Usual reading: below 0.1 stable, 0.1-0.25 a moderate shift, above 0.25 a significant one.

**KS**: the two-sample Kolmogorov-Smirnov statistic, the exact largest distance between the two
empirical CDFs, ``sup_x |F_ref(x) - F_live(x)|`` (``scipy.stats.ks_2samp``'s statistic), evaluated at
every distinct pooled value.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> ref = rng.normal(size=(2_000, 2))
>>> drift = drift_of(ref, ref[:500])
>>> bool((drift.psi < 0.05).all()), bool((drift.ks < 0.05).all())
(True, True)
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final

import numpy as np
from numpy.typing import ArrayLike, NDArray

BINS: Final = 10
EPSILON: Final = 1e-4

FloatArray = NDArray[np.float64]


@dataclass(frozen=True)
class Drift:
    """PSI and KS per feature, and the live values left out because they were not finite."""

    psi: FloatArray
    ks: FloatArray
    nonfinite: int


def as_columns(sample: ArrayLike, name: str = "sample") -> FloatArray:
    """``sample`` as a 2-d float array (a 1-d array becomes one column); ``ValueError`` for other shapes."""
    array = np.asarray(sample, dtype=np.float64)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{name} must be 1-d or 2-d (rows x features), got shape {array.shape}")
    return array


def _pair(reference: ArrayLike, live: ArrayLike) -> tuple[FloatArray, FloatArray]:
    ref, cur = as_columns(reference, "reference"), as_columns(live, "live")
    if ref.shape[1] != cur.shape[1]:
        raise ValueError(f"reference has {ref.shape[1]} feature(s), live has {cur.shape[1]}")
    if ref.shape[0] == 0 or not np.isfinite(ref).any(axis=0).all():
        raise ValueError("the reference needs at least one finite value per feature")
    return ref, cur


def bin_edges(reference: ArrayLike, bins: int = BINS) -> FloatArray:
    """The inner bin edges, shape ``(bins - 1, features)``: the reference's finite values' quantiles."""
    if bins < 2:
        raise ValueError(f"PSI needs at least 2 bins, got {bins}")
    ref = as_columns(reference, "reference")
    levels = np.arange(1, bins) / bins
    if np.isfinite(ref).all():
        return np.asarray(np.quantile(ref, levels, axis=0), dtype=np.float64)
    return np.asarray(np.nanquantile(np.where(np.isfinite(ref), ref, np.nan), levels, axis=0), dtype=np.float64)


def bin_shares(sample: FloatArray, edges: FloatArray) -> FloatArray:
    """Each column's share of its finite values in each bin, shape ``(bins, features)`` (NaN: none finite)."""
    finite = np.isfinite(sample)
    index = (sample[:, None, :] > edges[None, :, :]).sum(axis=1)  # bin of each value, (rows, features)
    bins = edges.shape[0] + 1
    counts = ((index[None, :, :] == np.arange(bins)[:, None, None]) & finite[None, :, :]).sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.asarray(counts / finite.sum(axis=0), dtype=np.float64)


def psi_of_shares(expected: FloatArray, actual: FloatArray, epsilon: float = EPSILON) -> FloatArray:
    """``sum_b (a - e) ln(a / e)`` over axis 0, each share raised to at least ``epsilon``."""
    e, a = np.maximum(expected, epsilon), np.maximum(actual, epsilon)
    return np.asarray(((a - e) * np.log(a / e)).sum(axis=0), dtype=np.float64)


def psi(reference: ArrayLike, live: ArrayLike, bins: int = BINS, epsilon: float = EPSILON) -> FloatArray:
    """PSI of every feature of ``live`` against ``reference`` (see the module docstring)."""
    ref, cur = _pair(reference, live)
    edges = bin_edges(ref, bins)
    return psi_of_shares(bin_shares(ref, edges), bin_shares(cur, edges), epsilon)


def ks_statistic(reference: ArrayLike, live: ArrayLike) -> FloatArray:
    """The two-sample KS statistic of every feature: ``sup_x |F_ref(x) - F_live(x)|`` over finite values."""
    ref, cur = _pair(reference, live)
    pooled = np.ascontiguousarray(np.concatenate([ref, cur]).T)  # one row per feature: sorts run on contiguous rows
    finite = np.isfinite(pooled)
    order = np.argsort(np.where(finite, pooled, np.inf), axis=1)
    values = np.take_along_axis(pooled, order, axis=1)
    kept = np.take_along_axis(finite, order, axis=1)  # non-finite values sort last and count for neither
    from_ref = order < len(ref)
    is_ref, is_live = from_ref & kept, ~from_ref & kept
    with np.errstate(invalid="ignore", divide="ignore"):
        gap = np.abs(np.cumsum(is_ref, axis=1) / is_ref.sum(axis=1, keepdims=True)
                     - np.cumsum(is_live, axis=1) / is_live.sum(axis=1, keepdims=True))
    run_end = np.ones(values.shape, dtype=bool)  # the ECDFs are compared after the last of equal values
    run_end[:, :-1] = values[:, 1:] != values[:, :-1]
    gap = np.where(run_end & kept, gap, 0.0)
    return np.where(is_live.any(axis=1), gap.max(axis=1, initial=0.0), np.nan)


@dataclass(frozen=True)
class PreparedReference:
    """A reference sample with its bin edges and bin shares, computed once for many checks."""

    sample: FloatArray
    edges: FloatArray
    shares: FloatArray

    @classmethod
    def of(cls, reference: ArrayLike, bins: int = BINS) -> PreparedReference:
        ref, _ = _pair(reference, np.empty((0, as_columns(reference).shape[1])))
        edges = bin_edges(ref, bins)
        return cls(ref, edges, bin_shares(ref, edges))


def drift_of(reference: ArrayLike | PreparedReference, live: ArrayLike, bins: int = BINS,
             epsilon: float = EPSILON) -> Drift:
    """PSI and KS of every feature of ``live`` against ``reference``, and the non-finite live values left out.

    A :class:`PreparedReference` saves recomputing the reference's bins (its own ``bins`` are used)."""
    prepared = reference if isinstance(reference, PreparedReference) else PreparedReference.of(reference, bins)
    ref, cur = _pair(prepared.sample, live)
    return Drift(psi=psi_of_shares(prepared.shares, bin_shares(cur, prepared.edges), epsilon),
                 ks=ks_statistic(ref, cur), nonfinite=int((~np.isfinite(cur)).sum()))
