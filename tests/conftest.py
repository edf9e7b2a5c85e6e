"""Shared fixtures: where the real data lives, and the repo's bundled sample."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
BUNDLED_DATA = REPO_ROOT / "src" / "dope" / "data"

os.environ.setdefault("NUMBA_NUM_THREADS", "1")
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def shared_data_dir() -> Path:
    """``../shared/data`` beside the checkout (CI always has it; a fresh clone may not)."""
    return (REPO_ROOT / ".." / "shared" / "data").resolve()


def require_shared_data(*parts: str) -> Path:
    """The path under ``../shared/data``, or skip the test with the reason."""
    path = shared_data_dir().joinpath(*parts)
    if not path.exists():
        pytest.skip(f"needs {path} (the larger real data sets in ../shared/data), absent here")
    return path


def bundled_trades_file(symbol: str) -> Path:
    """The real spot trades of ``symbol`` (BTCUSDT or ETHUSDT) committed with the package."""
    return next(BUNDLED_DATA.glob(f"{symbol}-trades-spot-*.csv.gz"))
