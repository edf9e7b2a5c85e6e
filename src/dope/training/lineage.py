"""What a registered model was made from: the ``lineage`` key of its ``metadata.json``.

``lineage(...)`` gathers the data range and row count, a content hash of the training bars
(:func:`bars_sha256`), the feature-set version, the parent model, the code version
(:func:`code_version`) and the parameters. ``dope train`` and the loop's fit jobs both record it
through :func:`dope.training.pipeline.train`.
"""

from __future__ import annotations

import functools
import hashlib
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import dope
from dope.bars.schema import BAR_COLUMNS, BAR_DTYPES

HASH_SCHEME = ("sha256 of BAR_COLUMNS in order: name, NUL, row count (8-byte LE), values (LE int64/float64, "
               "bool as 1 byte)")
"""How :func:`bars_sha256` reads the bars (recorded next to each hash, so a later scheme is told apart)."""


def bars_sha256(bars: pd.DataFrame) -> str:
    """Content hash of a bar frame, independent of its index, extra columns and pandas version.

    For each column of ``BAR_COLUMNS`` in that order: the column name (UTF-8), a NUL byte, the row
    count as an 8-byte little-endian integer, then the values in row order as little-endian
    ``int64``/``float64`` (``bool`` as one byte each). Equal bars give equal hashes; any changed
    value, added or dropped row changes it. The symbol is not hashed (it is recorded beside it).
    """
    digest = hashlib.sha256()
    for name in BAR_COLUMNS:
        dtype = np.dtype(BAR_DTYPES[name]).newbyteorder("<")
        values = np.ascontiguousarray(bars[name].to_numpy(), dtype=dtype)
        digest.update(name.encode() + b"\0" + len(values).to_bytes(8, "little"))
        digest.update(values.tobytes())
    return digest.hexdigest()


@functools.cache
def code_version() -> dict[str, Any]:
    """``{"dope": version, "git_commit": sha or None, "git_dirty": bool or None}``.

    The commit is read only when the imported ``dope`` package sits in a git checkout's ``src/``
    (``<root>/src/dope`` with ``<root>/.git``); an installed package, or a machine without git,
    gives the package version alone.
    """
    root = Path(dope.__file__).resolve().parents[2]
    commit = dirty = None
    if (root / ".git").exists():
        commit = _git(root, "rev-parse", "HEAD")
        status = _git(root, "status", "--porcelain", "--untracked-files=no") if commit else None
        dirty = None if status is None else bool(status)
    return {"dope": dope.__version__, "git_commit": commit, "git_dirty": dirty}


def _git(root: Path, *args: str) -> str | None:
    try:
        done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10,
                              check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout.strip()


def lineage(bars: pd.DataFrame, context: Mapping[str, pd.DataFrame] | None, *, feature_set: Mapping[str, Any],
            rows: int, parent_id: str, params: Mapping[str, Any], training: Mapping[str, Any]) -> dict[str, Any]:
    """The ``lineage`` record of a model fitted on ``bars`` (and ``context`` bars) giving ``rows`` samples."""
    return {
        "data": {"symbol": str(bars["symbol"].iloc[0]) if "symbol" in bars else "",
                 "start_ms": int(bars["open_time"].iloc[0]), "end_ms": int(bars["close_time"].iloc[-1]) + 1,
                 "bars": len(bars), "rows": rows, "bars_sha256": bars_sha256(bars), "hash_scheme": HASH_SCHEME,
                 "context_sha256": {s: bars_sha256(frame) for s, frame in sorted((context or {}).items())}},
        "feature_set": {"name": feature_set["name"], "version": feature_set["version"]},
        "parent_id": parent_id,
        "code": code_version(),
        "params": dict(params),
        "training": dict(training),
    }
