"""Deep features: the headless network as a scikit-learn transformer, and the cached loop."""

from featclf.extract.cached import FeatureExtraction
from featclf.extract.extractor import (
    FEATURE_FORMAT_VERSION,
    CastToFloat32,
    DeepFeatureExtractor,
    ScaleToUnit,
    SkippedImagesWarning,
    describe_preprocess,
)
from featclf.models.network import UntrainedWeightsWarning

__all__ = [
    "FEATURE_FORMAT_VERSION",
    "CastToFloat32",
    "DeepFeatureExtractor",
    "FeatureExtraction",
    "ScaleToUnit",
    "SkippedImagesWarning",
    "UntrainedWeightsWarning",
    "describe_preprocess",
]
