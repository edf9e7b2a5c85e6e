"""Features of bars, defined once: the online path (per bar) and the offline path (whole frames)
run the same compiled step, so they agree exactly. See ``docs/features.md``.
"""

from dope.features.featureset import FeatureError, FeatureParams, FeatureSet, default_feature_set
from dope.features.offline import (
    FeatureInputError,
    compute_features,
    forward_log_return,
    training_matrix,
)
from dope.features.online import OnlineFeaturizer

__all__ = [
    "FeatureError",
    "FeatureInputError",
    "FeatureParams",
    "FeatureSet",
    "OnlineFeaturizer",
    "compute_features",
    "default_feature_set",
    "forward_log_return",
    "training_matrix",
]
