"""DeepFeatureExtractor's parameters: their constraints, cloning, and the untrained-weights rule.

Kept apart from :mod:`featclf.extract.extractor` so that the estimator reads as what it does.
"""

from __future__ import annotations

import copy
import math
import os
import warnings
from collections.abc import Callable
from numbers import Integral

import torch
from sklearn.base import clone

from featclf.data.transforms import ImagePreprocess
from featclf.devices import PRECISIONS, resolve_precision
from featclf.errors import option
from featclf.models import Network
from featclf.models.head import POOLINGS
from featclf.models.network import UntrainedWeightsWarning
from featclf.params import Interval, StrOptions
from featclf.store import FeatureStore

PARAMETER_CONSTRAINTS: dict = {
    "layer": [None, str, list, tuple],
    "pooling": [StrOptions(set(POOLINGS))],
    "preprocess": [StrOptions({"auto"}), None, callable],
    "device": [str, torch.device],
    "precision": [StrOptions(set(PRECISIONS))],
    "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
    "num_workers": [Interval(Integral, 0, None, closed="left")],
    "store": [None, str, os.PathLike, FeatureStore],
    "on_error": [StrOptions({"raise", "skip"})],
    "progress": ["boolean"],
    "compile": ["boolean"],
    "jpeg_draft": ["boolean"],
    "image_shape": [None, tuple, list],
}


def fitted_network(model) -> Network | None:
    """The network a fitted estimator given as ``model=`` holds (``network_``), else None.

    Examples
    --------
    >>> fitted_network("lenet5") is None
    True
    """
    if isinstance(model, torch.nn.Module):
        return None
    network = getattr(model, "network_", None)
    return network if isinstance(network, Network) and network.module is not None else None


def clone_sharing(estimator):
    """``sklearn.base.clone`` of an extractor, sharing a fitted ``model`` and a store object.

    sklearn's clone would reset a fitted estimator given as ``model=`` (it clones parameters
    that are estimators), leaving nothing to extract with, and deep-copy a store object. Both
    are sources to read from, like a weights file, so the clone shares them. Returns None when
    there is nothing to share (the default clone applies).
    """
    shared = {}
    if fitted_network(estimator.model) is not None:
        shared["model"] = estimator.model
    if estimator.store is not None and not isinstance(estimator.store, str | os.PathLike):
        shared["store"] = estimator.store
    if not shared:
        return None
    params = {name: shared[name] if name in shared else clone(value, safe=False)
              for name, value in estimator.get_params(deep=False).items()}
    new = type(estimator)(**params)
    for attr in ("_metadata_request", "_sklearn_output_config", "_skl_callbacks"):
        if hasattr(estimator, attr):  # what BaseEstimator.__sklearn_clone__ carries over
            value = getattr(estimator, attr)
            setattr(new, attr, value if attr == "_skl_callbacks" else copy.deepcopy(value))
    return new


def restore_runner(runner, device, precision: str) -> None:
    """Make an unpickled extractor's runner usable here (``__setstate__``)."""
    if runner is None:
        return
    # torch.fx graph modules (layer="...") do not keep eval mode through every copy.
    runner.module.eval()
    if runner.device.type == "cuda" and not torch.cuda.is_available() and device == "auto":
        # Fitted on a GPU machine, loaded on one without: "auto" means the CPU here.
        runner.device = torch.device("cpu")
        runner.precision = resolve_precision(precision, runner.device)


def values_as_given(preprocess) -> bool:
    """Whether inputs reach ``preprocess`` with their values as given (``model_ready``):
    ``preprocess=None`` and callables of the user's own; ``"auto"`` and ``ImagePreprocess``
    take pixels (floats as intensities in [0, 1]).

    Examples
    --------
    >>> values_as_given("auto"), values_as_given(None), values_as_given(abs)
    (False, True, True)
    """
    if isinstance(preprocess, str) or isinstance(preprocess, ImagePreprocess):
        return False
    return preprocess is None or isinstance(preprocess, Callable)


def untrained_warning(network: Network, name: str | None, *, stacklevel: int) -> None:
    """Warn (:class:`UntrainedWeightsWarning`) when ``network`` has random weights that were
    not asked for (a seed network given by name, without trained weights)."""
    weights = network.weights
    if weights.kind != "random" or weights.explicit:
        return
    warnings.warn(f"{name or 'the network'} has no pretrained weights, so its features come "
                  f"from {weights.description}: an untrained network. Pass trained weights "
                  "(a checkpoint file, or a fitted SoftmaxClassifier as the model), or "
                  f"{option('weights', 'random')} if random features are what you want",
                  UntrainedWeightsWarning, stacklevel=stacklevel + 1)


def square_text(width: int) -> str:
    """``"28x28"`` for 784: how a flattened square image's width reads in messages.

    Examples
    --------
    >>> square_text(784), square_text(10)
    ('28x28', '10-pixel')
    """
    side = math.isqrt(width)
    return f"{side}x{side}" if side * side == width else f"{width}-pixel"
