"""The LSTM's forward pass in numba, from the Keras weights: the serving path of :mod:`dope.models.lstm`.

Keras' ``LSTM`` (tanh activation, sigmoid recurrent activation, gates packed ``i, f, c, o``) then
``Dense(1)``: per step ``z = x W + b + h U``, ``c = f*c + i*g``, ``h = o*tanh(c)``; the output is
``h_L . w + d``. Computed in float64 from the float32 weights, it matches ``model(x)`` to float32
rounding (about 1e-6 relative) in tens of microseconds for one window, where ``model.predict``
takes milliseconds.

The input projection ``x W + b`` of each row is shared by every window that holds the row, so
:func:`LstmWeights.run_many` computes it once per row; :func:`LstmWeights.run_one` does the same
arithmetic in the same order, so one window's result equals the batch's bit for bit.
"""

from __future__ import annotations

from dataclasses import dataclass

import numba
import numpy as np
import numpy.typing as npt

from dope.types import FloatArray


@dataclass(frozen=True)
class LstmWeights:
    """``kernel`` (f, 4u), ``recurrent`` (u, 4u), ``bias`` (4u), ``dense`` (u,), ``dense_bias``."""

    kernel: FloatArray
    recurrent: FloatArray
    bias: FloatArray
    dense: FloatArray
    dense_bias: float

    @classmethod
    def from_arrays(cls, kernel: npt.ArrayLike, recurrent: npt.ArrayLike, bias: npt.ArrayLike,
                    dense: npt.ArrayLike, dense_bias: npt.ArrayLike) -> LstmWeights:
        """From Keras' weight arrays (``lstm.get_weights()`` then ``dense.get_weights()``)."""
        def as64(a: npt.ArrayLike) -> FloatArray:
            return np.ascontiguousarray(a, dtype=np.float64)
        return cls(as64(kernel), as64(recurrent), as64(bias), as64(dense).reshape(-1),
                   float(np.asarray(dense_bias, dtype=np.float64).reshape(-1)[0]))

    def run_one(self, window: FloatArray) -> float:
        """Network output for one window ``(L, f)`` (inputs already scaled)."""
        proj = _project(np.ascontiguousarray(window), self.kernel, self.bias)
        return float(_run(proj, 0, window.shape[0], self.recurrent, self.dense, self.dense_bias))

    def run_many(self, X: FloatArray, lookback: int) -> FloatArray:
        """Output for the window ending at every row of ``X`` (NaN for the first ``lookback - 1``)."""
        proj = _project(np.ascontiguousarray(X), self.kernel, self.bias)
        out = np.full(X.shape[0], np.nan)
        _run_rows(proj, lookback, self.recurrent, self.dense, self.dense_bias, out)
        return out


@numba.njit(cache=True, nogil=True)  # type: ignore[misc]
def _project(X: FloatArray, kernel: FloatArray, bias: FloatArray) -> FloatArray:  # pragma: no cover - compiled
    n, f = X.shape
    out = np.empty((n, kernel.shape[1]))
    for i in range(n):
        out[i, :] = bias
        for k in range(f):
            xk = X[i, k]
            for j in range(kernel.shape[1]):
                out[i, j] += xk * kernel[k, j]
    return out


@numba.njit(cache=True, nogil=True, inline="always")  # type: ignore[misc]
def _sigmoid(v: float) -> float:  # pragma: no cover - compiled
    return float(1.0 / (1.0 + np.exp(-v)))


@numba.njit(cache=True, nogil=True)  # type: ignore[misc]
def _run(proj: FloatArray, start: int, steps: int, recurrent: FloatArray, dense: FloatArray,
         dense_bias: float) -> float:  # pragma: no cover - compiled
    units = recurrent.shape[0]
    h = np.zeros(units)
    c = np.zeros(units)
    z = np.empty(4 * units)
    for t in range(steps):
        z[:] = proj[start + t]
        for k in range(units):
            hk = h[k]
            for j in range(4 * units):
                z[j] += hk * recurrent[k, j]
        for k in range(units):
            c[k] = _sigmoid(z[units + k]) * c[k] + _sigmoid(z[k]) * np.tanh(z[2 * units + k])
            h[k] = _sigmoid(z[3 * units + k]) * np.tanh(c[k])
    out = dense_bias
    for k in range(units):
        out += h[k] * dense[k]
    return out


@numba.njit(cache=True, nogil=True)  # type: ignore[misc]
def _run_rows(proj: FloatArray, lookback: int, recurrent: FloatArray, dense: FloatArray, dense_bias: float,
              out: FloatArray) -> None:  # pragma: no cover - compiled
    for i in range(lookback - 1, proj.shape[0]):
        out[i] = _run(proj, i - lookback + 1, lookback, recurrent, dense, dense_bias)
