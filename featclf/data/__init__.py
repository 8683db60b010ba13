"""Images in: built-in data sets, image files and folders, decoding, preprocessing, batching.

The names are loaded when first used, so ``from featclf.data import image_files`` (the
command line's start path) imports neither torch nor scikit-learn.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ImageDecodeError": "featclf.data.decode",
    "ImageFiles": "featclf.data.files",
    "ImagePreprocess": "featclf.data.transforms",
    "as_image_source": "featclf.data.inputs",
    "decode_image": "featclf.data.decode",
    "image_files": "featclf.data.files",
    "load_digits_images": "featclf.data.datasets",
    "load_mnist5k": "featclf.data.datasets",
    "seed_augmentation": "featclf.data.transforms",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'featclf.data' has no attribute {name!r}")
    value = getattr(importlib.import_module(_WHERE[name]), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_WHERE))
