"""What serving a model means, shared by the model service and ``dope lineage``: the model with what its
metadata says about its input, the vectors it can read, and its prediction on a window of them.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from dope.messages import Features


class LoadedModel:
    """A model from the registry with what serving it needs of its metadata."""

    def __init__(self, model: Any, meta: Mapping[str, Any]) -> None:
        self.model = model
        self.model_id = str(meta["model_id"])
        self.kind = str(meta["kind"])
        self.lookback = max(1, int(model.lookback))
        self.n_features = int(meta["model"].get("n_features") or model.n_features)

    def predict(self, window: np.ndarray) -> float:
        """The prediction for the last ``lookback`` vectors (rows of ``window``, oldest first)."""
        return float(self.model.predict_one(window if self.lookback > 1 else window[0]))


def vector_problem(msg: Features, version: str, n_features: int) -> tuple[str, str] | None:
    """Why a model cannot read ``msg`` (``(kind, text)``), or None: such a vector never enters its window."""
    if msg.feature_version != version:
        return "feature_version", f"version {msg.feature_version}, the model reads {version}"
    if len(msg.values) != n_features:
        return "feature_count", f"{len(msg.values)} values, the model reads {n_features}"
    if not all(math.isfinite(v) for v in msg.values):
        return "bad_value", "non-finite value"
    return None
