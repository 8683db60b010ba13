"""Deep features: the headless network as a scikit-learn transformer, the cached loop, and
cached augmented views (:func:`extract_views`)."""

from featclf.extract.cached import FeatureExtraction
from featclf.extract.extractor import (
    FEATURE_FORMAT_VERSION,
    CastToFloat32,
    DeepFeatureExtractor,
    ScaleToUnit,
    SkippedImagesWarning,
    describe_preprocess,
)
from featclf.extract.layers import LOGITS, PENULTIMATE
from featclf.extract.views import ViewExtraction, extract_views, tta_features
from featclf.models.network import UntrainedWeightsWarning

__all__ = [
    "FEATURE_FORMAT_VERSION",
    "CastToFloat32",
    "DeepFeatureExtractor",
    "FeatureExtraction",
    "LOGITS",
    "PENULTIMATE",
    "ScaleToUnit",
    "SkippedImagesWarning",
    "UntrainedWeightsWarning",
    "ViewExtraction",
    "describe_preprocess",
    "extract_views",
    "tta_features",
]
