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
