"""featclf: classify images with deep features.

A trained CNN without its softmax head as a scikit-learn transformer
(:class:`DeepFeatureExtractor`), end-to-end softmax training as a scikit-learn classifier
(:class:`SoftmaxClassifier`), and a crash-safe on-disk cache of the features
(:class:`FeatureStore`). See ``featclf.compare`` and ``featclf.report`` for the
softmax-vs-SVM comparison.
"""

__version__ = "0.1.0"

from featclf.extract import DeepFeatureExtractor  # noqa: E402
from featclf.store import FeatureStore  # noqa: E402
from featclf.train import SoftmaxClassifier  # noqa: E402

__all__ = ["DeepFeatureExtractor", "FeatureStore", "SoftmaxClassifier", "__version__"]
