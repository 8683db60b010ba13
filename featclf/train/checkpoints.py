"""``SoftmaxClassifier.save`` and ``.load``: a fitted classifier as a featclf checkpoint.

The file goes through :func:`featclf.models.save_checkpoint`, which writes a temporary file
beside the destination and renames it into place (``os.replace``): a save that is interrupted
(an error, a full disk, ``kill -9``) leaves the previous checkpoint whole.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import torch

import featclf
from featclf.data.transforms import ImagePreprocess
from featclf.models import WeightsError, load_network, save_checkpoint
from featclf.train.loop import HISTORY_COLUMNS

if TYPE_CHECKING:
    from featclf.train.classifier import SoftmaxClassifier


def _json_value(value):
    """``value`` if JSON can hold it (params in checkpoints), else None."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, ImagePreprocess):
        return value.to_dict()
    if isinstance(value, tuple | list) and all(isinstance(v, int) for v in value):
        return list(value)  # image_shape
    return None


def save_classifier(clf: SoftmaxClassifier, path: str | os.PathLike) -> Path:
    """What :meth:`SoftmaxClassifier.save` does (see there)."""
    path = Path(path)
    if isinstance(clf.preprocess_, ImagePreprocess):
        preprocess = clf.preprocess_.to_dict()
    elif clf.preprocess_ is None:  # preprocess=None: model-ready inputs, nothing to store
        preprocess = None
    else:
        preprocess = None
        warnings.warn(f"{path}: the custom preprocess callable cannot be stored in a "
                      "checkpoint; pass it again to SoftmaxClassifier.load(path, "
                      "preprocess=...)", UserWarning, stacklevel=3)
    # Training parameters only: whether bars were shown is not part of the model.
    params = {k: _json_value(v) for k, v in clf.get_params(deep=False).items()
              if (_json_value(v) is not None or v is None) and k != "progress"}
    history = clf.history_.astype(object).where(clf.history_.notna(), None)
    metadata = {
        "model": clf.model_name_, "num_classes": len(clf.classes_),
        "classes": clf.classes_.tolist(), "preprocess": preprocess, "head": clf.head_,
        "featclf_version": featclf.__version__, "torch_version": torch.__version__,
        "params": params, "recipe": clf.recipe_, "history": history.to_dict(orient="records"),
        "n_features_in": getattr(clf, "n_features_in_", None),
    }
    save_checkpoint(path, clf.module_.state_dict(), metadata)
    return path


def load_classifier(cls: type[SoftmaxClassifier], path: str | os.PathLike, *,
                    preprocess=None) -> SoftmaxClassifier:
    """What :meth:`SoftmaxClassifier.load` does (see there)."""
    network = load_network(path)
    meta = network.metadata
    if not meta or "classes" not in meta or "params" not in meta:
        raise WeightsError(f"{path}: not a SoftmaxClassifier checkpoint (no classes/params "
                           "metadata); load bare weights with featclf.models.load_network("
                           "name, weights=path)")
    valid = cls().get_params(deep=False)
    params = {k: v for k, v in meta["params"].items() if k in valid}
    if isinstance(params.get("preprocess"), dict):
        params["preprocess"] = ImagePreprocess.from_dict(params["preprocess"])
    if isinstance(params.get("image_shape"), list):
        params["image_shape"] = tuple(params["image_shape"])
    if preprocess is not None:
        params["preprocess"] = preprocess
    params["model"] = network.arch
    clf = cls(**params)
    clf.module_ = network.module.eval()
    clf.classes_ = np.asarray(meta["classes"])
    clf.model_name_ = network.arch
    clf.head_ = network.head
    if preprocess is not None:
        clf.preprocess_ = preprocess
    elif "preprocess" in params and params["preprocess"] is None:
        clf.preprocess_ = None  # trained on model-ready inputs (not the architecture's own)
    elif network.preprocess is not None:
        clf.preprocess_ = network.preprocess
    else:
        raise ValueError(f"{path} was trained with a custom preprocess callable, which "
                         "checkpoints cannot store; pass it: SoftmaxClassifier.load(path, "
                         "preprocess=...)")
    # Checkpoints from before recipes were recorded: the parameters say it all.
    clf.recipe_ = meta.get("recipe") or clf._resolve_recipe(network)
    history = pd.DataFrame(meta.get("history") or [], columns=list(HISTORY_COLUMNS))
    clf.history_ = history.astype(float).astype({"epoch": int})
    clf.n_epochs_ = len(history)
    clf.skipped_ = []
    if meta.get("n_features_in") is not None:
        clf.n_features_in_ = int(meta["n_features_in"])
    clf.network_ = clf._trained_network(network.weights)
    return clf
