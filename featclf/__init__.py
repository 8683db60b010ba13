"""featclf: classify images with deep features.

A trained CNN without its softmax head as a scikit-learn transformer
(:class:`DeepFeatureExtractor`), end-to-end softmax training as a scikit-learn classifier
(:class:`SoftmaxClassifier`), and a crash-safe on-disk cache of the features
(:class:`FeatureStore`). See ``featclf.compare`` and ``featclf.report`` for the
softmax-vs-SVM comparison.

The public names load on first use, so ``import featclf.store`` (and commands that need no
network) do not import torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

__version__ = "0.1.0"

_PUBLIC = {
    "DeepFeatureExtractor": "featclf.extract",
    "FeatureStore": "featclf.store",
    "SoftmaxClassifier": "featclf.train",
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs
    from featclf.extract import DeepFeatureExtractor
    from featclf.store import FeatureStore
    from featclf.train import SoftmaxClassifier

__all__ = ["DeepFeatureExtractor", "FeatureStore", "SoftmaxClassifier", "__version__"]


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(importlib.import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'featclf' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
