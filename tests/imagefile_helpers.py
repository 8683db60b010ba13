"""Helpers that tests import by name (``from imagefile_helpers import write_image``).

They live outside ``conftest.py`` because the project root has a ``conftest.py`` too (doctest
set-up): in joblib's worker processes ``import conftest`` may find that one first.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def write_image(path: Path, array: np.ndarray, fmt: str | None = None) -> Path:
    """Save a uint8 (H, W) or (H, W, 3) array as an image file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, format=fmt)
    return path


def register_tiny_cnn(name: str, *, width: int, num_classes: int) -> str:
    """Register (once per process) a network for any image size under ``name``: a convolution
    of ``width`` channels, global pooling, a linear head; for scikit-learn's estimator checks,
    which feed 1-pixel-high images of any width."""
    from torch import nn

    from featclf.data import ImagePreprocess
    from featclf.models import list_models, register_model

    def build(num_classes: int = num_classes) -> nn.Module:
        return nn.Sequential(nn.Conv2d(1, width, 3, padding=1), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))

    if name not in list_models():
        register_model(name, preprocess=ImagePreprocess(8, 1, (0.5,), (0.5,)), head="4",
                       feature_dim=width, num_classes=num_classes)(build)
    return name
