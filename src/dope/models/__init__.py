"""Models: one small protocol, random forest, LSTM, LightGBM and baselines, each with a fast
single-prediction path that gives the library's own predictions. See ``docs/models.md``.

Importing this package is cheap: each kind's module (TensorFlow for the LSTM) loads on first use.
"""

from dope.models.base import (
    MODEL_KINDS,
    BaseModel,
    Model,
    ModelError,
    load_model,
    make_model,
    model_class,
)

__all__ = ["MODEL_KINDS", "BaseModel", "Model", "ModelError", "load_model", "make_model",
           "model_class"]
