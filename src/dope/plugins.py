"""The public, stable API for plugins: what a model or a feature from another package builds on.

A **model kind** is a class following :class:`Model` (subclassing :class:`BaseModel` gives the input
checks, ``model.json``, checksums and metadata for free; fill ``_fit``, ``_predict_many``,
``_save_state``, ``_load_state``). A model that learns online also has ``learn_one(x, y)``
(:class:`OnlineModel`). Register it as an entry point of the group ``dope.models`` (its name must be
the class's ``kind``), or name it as ``module:Class`` wherever a kind is accepted.

A **feature** is a :class:`FeatureDefinition` (a compiled function of the last ``window`` bars of
the ring channels ``CH_*``), registered as an entry point of the group ``dope.features``.

``dope models kinds`` lists the kinds and where each comes from; ``dope models check KIND`` runs the
conformance suite. See ``docs/plugins.md``.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from dope.features.definitions import (
    CH_CLOSE,
    CH_CONTEXT,
    CH_LOG_CLOSE,
    CH_LOG_COUNT,
    CH_LOG_VOLUME,
    CH_QUOTE,
    CH_RANGE,
    CH_RETURN,
    CH_TAKER,
    CH_VOLUME,
)
from dope.features.plugins import FEATURES_GROUP, FeatureDefinition
from dope.models.base import (
    BaseModel,
    Model,
    ModelError,
    check_matrix,
    check_target,
    load_model,
    make_model,
    model_class,
    skops_dump,
    skops_load,
)
from dope.models.kinds import ALLOW_ENV, MODELS_GROUP, known_kinds, resolve_kind
from dope.types import FloatArray


@runtime_checkable
class OnlineModel(Model, Protocol):
    """A model that also learns one labelled row at a time (``y`` is known only once its horizon passed)."""

    def learn_one(self, x: FloatArray, y: float) -> None: ...


__all__ = [
    "ALLOW_ENV", "CH_CLOSE", "CH_CONTEXT", "CH_LOG_CLOSE", "CH_LOG_COUNT", "CH_LOG_VOLUME", "CH_QUOTE",
    "CH_RANGE", "CH_RETURN", "CH_TAKER", "CH_VOLUME", "FEATURES_GROUP", "MODELS_GROUP", "BaseModel",
    "FeatureDefinition", "FloatArray", "Model", "ModelError", "OnlineModel", "check_matrix", "check_target",
    "known_kinds", "load_model", "make_model", "model_class", "resolve_kind", "skops_dump", "skops_load",
]
