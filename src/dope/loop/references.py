"""Where the health monitor finds a model's reference sample: ``Registry.reference(model_id)``.

The fit job saves a reference sample (feature rows and the model's predictions on them) inside each
registered model. Until ``Registry.reference`` exists on this branch, :func:`registry_references`
reads the stand-in ``reference.npz`` (``feature_names``, ``features``, ``predictions``) in the
model's folder; once the registry has the method, it is used and the stand-in is dead code to remove.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final, cast

import numpy as np
from numpy.typing import NDArray

from dope.loop.health import ReferenceLoader
from dope.models.registry import Registry, RegistryError

REFERENCE_NPZ: Final = "reference.npz"


@dataclass(frozen=True)
class StoredReference:
    """A reference sample read from ``reference.npz``."""

    feature_names: tuple[str, ...]
    features: NDArray[np.float64]
    predictions: NDArray[np.float64]


def registry_references(registry: Registry) -> ReferenceLoader:
    """``registry.reference`` when the registry has it, else the ``reference.npz`` stand-in."""
    own = getattr(registry, "reference", None)
    if own is not None:
        return cast(ReferenceLoader, own)
    return lambda model_id: read_reference(registry.path_of(model_id) / REFERENCE_NPZ)


def read_reference(path: Path) -> StoredReference:
    """The sample in ``path``; ``RegistryError`` when it is absent or malformed."""
    try:
        with np.load(path, allow_pickle=False) as data:
            names = tuple(str(n) for n in data["feature_names"])
            features = np.asarray(data["features"], dtype=np.float64)
            predictions = np.asarray(data["predictions"], dtype=np.float64)
    except (OSError, KeyError, ValueError) as exc:
        raise RegistryError(f"no usable reference sample at {path}: {exc}") from None
    if features.ndim != 2 or features.shape[1] != len(names) or predictions.ndim != 1:
        raise RegistryError(f"{path}: features {features.shape} do not match {len(names)} names, "
                            f"predictions {predictions.shape}")
    return StoredReference(names, features, predictions)


def write_reference(folder: Path, names: Sequence[str], features: NDArray[np.float64],
                    predictions: NDArray[np.float64]) -> Path:
    """Save a sample as the stand-in file in a model's ``folder`` (tests; the fit job has its own)."""
    path = folder / REFERENCE_NPZ
    np.savez(path, feature_names=np.array(list(names)), features=features, predictions=predictions)
    return path
