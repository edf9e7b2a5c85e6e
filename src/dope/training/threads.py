"""Thread counts that suit a small machine (2 cores): set before numerical libraries start their pools."""

from __future__ import annotations

import os
from typing import Final

_VARIABLES: Final = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS",
                     "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS")


def default_threads() -> int:
    """Threads to use: the CPUs this process may run on, at most 2 (``DOPE_THREADS`` overrides)."""
    if os.environ.get("DOPE_THREADS", "").isdigit():
        return max(1, int(os.environ["DOPE_THREADS"]))
    return max(1, min(2, len(os.sched_getaffinity(0))))


def limit_threads(n: int | None = None) -> int:
    """Cap OpenMP/BLAS/numba/TensorFlow pools at ``n`` threads (variables the user set are kept); return n."""
    n = n or default_threads()
    for name in _VARIABLES:
        os.environ.setdefault(name, str(n))
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")
    return n
