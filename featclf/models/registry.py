"""The model registry: one name resolves to a builder, its head and its architecture's recipe.

Shaped like torchvision's ``list_models``/``get_model_spec`` and timm's ``register_model``:
featclf's own networks are registered by name (see :mod:`featclf.models.seed`), and every
torchvision classification model is available under its torchvision name, read from
torchvision's own registry, without registration. A name is registered once: registering a
taken name (featclf's or torchvision's) raises, as torchvision does.

Weights are not the registry's business: :func:`featclf.models.load_network` resolves them.
The registry gives the preprocessing an architecture gets with random weights (or weights that
name none); weights that carry their own recipe override it.
"""

from __future__ import annotations

import difflib
import functools
from collections.abc import Callable
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import torch
from torch import nn

from featclf.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocess
from featclf.models.head import find_head, layer_names
from featclf.models.weights import torchvision_preprocess
from featclf.params import Interval, check_params

__all__ = ["ModelSpec", "architecture_layers", "get_model_spec", "is_model_name", "list_models",
           "register_model"]


@dataclass(frozen=True)
class ModelSpec:
    """Everything featclf knows about an architecture name.

    Attributes
    ----------
    name : str
        Registry name.
    builder : callable
        ``builder(num_classes) -> nn.Module`` with random weights.
    preprocess : ImagePreprocess
        The architecture's input recipe (size, channels, normalisation), used with random
        weights and with weights that bring none.
    head : str or None
        Qualified name of the final classification layer (None when it is not a Linear layer).
    feature_dim : int or None
        Size of the penultimate features (the head's input).
    num_classes : int
        Default number of outputs.
    source : str
        ``"featclf"``, ``"torchvision"`` or ``"timm"``.
    description : str
        One line for ``featclf models``.
    """

    name: str
    builder: Callable[[int], nn.Module]
    preprocess: ImagePreprocess
    head: str | None
    feature_dim: int | None
    num_classes: int = 10
    source: str = "featclf"
    description: str = ""


_REGISTRY: dict[str, ModelSpec] = {}

_POSITIVE = Interval(Integral, 1, None, closed="left")


def register_model(name: str | None = None, *, preprocess: ImagePreprocess, head: str,
                   feature_dim: int, num_classes: int = 10, source: str = "featclf",
                   description: str = "") -> Callable:
    """Decorator registering ``builder(num_classes) -> nn.Module`` under ``name``.

    Parameters
    ----------
    name : str, optional
        Registry name (default: the function's name). It must not be taken, by a registered
        model or a torchvision one.
    preprocess : ImagePreprocess
        The network's input preprocessing with random weights.
    head : str
        Qualified name of its final classification layer.
    feature_dim : int
        Size of the penultimate features.
    num_classes : int
        Default number of classes.
    source, description : str
        Shown by ``featclf models`` (default description: the builder's first docstring line).

    Returns
    -------
    callable
        The decorator; it returns the builder unchanged.

    Raises
    ------
    ValueError
        The name is already taken: "An entry is already registered under the name '<name>'."

    Examples
    --------
    >>> def tiny_mlp(num_classes=10):
    ...     return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Linear(16, num_classes))
    >>> tiny = dict(preprocess=ImagePreprocess(8, 1, (0.5,), (0.5,)), head="2", feature_dim=16)
    >>> if "tiny_mlp" not in list_models():  # a name registers once per process
    ...     _ = register_model("tiny_mlp", **tiny)(tiny_mlp)
    >>> get_model_spec("tiny_mlp").feature_dim
    16
    >>> register_model("tiny_mlp", **tiny)(tiny_mlp)
    Traceback (most recent call last):
    ValueError: An entry is already registered under the name 'tiny_mlp'.
    """
    check_params({"name": [str, None], "preprocess": [ImagePreprocess], "head": [str],
                  "feature_dim": [_POSITIVE], "num_classes": [_POSITIVE], "source": [str],
                  "description": [str]},
                 {"name": name, "preprocess": preprocess, "head": head,
                  "feature_dim": feature_dim, "num_classes": num_classes, "source": source,
                  "description": description}, "register_model")

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or builder.__name__
        if key in _REGISTRY or key in _torchvision_names():
            raise ValueError(f"An entry is already registered under the name '{key}'.")
        summary = description or (builder.__doc__ or "").strip().split("\n")[0]
        _REGISTRY[key] = ModelSpec(key, builder, preprocess, head, feature_dim, num_classes,
                                   source, summary)
        return builder

    return decorate


@functools.cache
def _torchvision_names() -> frozenset[str]:
    import torchvision

    return frozenset(torchvision.models.list_models(module=torchvision.models))


#: Used only for a torchvision architecture that has no classification weights to take a
#: recipe from: the ImageNet evaluation recipe (shorter side 256, centre crop 224).
_IMAGENET = ImagePreprocess(224, 3, IMAGENET_MEAN, IMAGENET_STD, resize=256)


def _torchvision_weights_of(name: str) -> list:
    """The torchvision weights of architecture ``name``, in torchvision's order."""
    import torchvision

    try:
        return list(torchvision.models.get_model_weights(name))
    except (ValueError, KeyError):
        return []


def _original_recipe(name: str) -> ImagePreprocess:
    """The recipe of the first weights torchvision lists for ``name`` (its original release).

    Random weights have no recipe of their own, so they take the input the architecture was
    published with: resnet50's ``IMAGENET1K_V1`` (256 then 224), not its later default
    ``IMAGENET1K_V2`` (232 then 224), whose recipe comes with those weights.
    """
    weights = _torchvision_weights_of(name)
    return (torchvision_preprocess(name, weights[0]) if weights else None) or _IMAGENET


def _torchvision_description(name: str, feature_dim: int | None) -> str:
    """``torchvision resnet50, 2048 features; weights IMAGENET1K_V1, IMAGENET1K_V2 (DEFAULT)``."""
    what = f"{feature_dim} features" if feature_dim else "no Linear head (pass layer=)"
    weights = _torchvision_weights_of(name)
    if not weights:
        return f"torchvision {name}, {what}"
    default = type(weights[0]).DEFAULT
    names = [f"{w.name} (DEFAULT)" if w is default else w.name for w in weights]
    return f"torchvision {name}, {what}; weights {', '.join(names)}"


@functools.cache
def _torchvision_spec(name: str) -> ModelSpec:
    import torchvision

    def build(num_classes: int = 1000) -> nn.Module:
        # No auxiliary classifiers: featclf reads features and trains one head.
        kwargs = {"aux_logits": False, "init_weights": False} if name in (
            "googlenet", "inception_v3") else {}
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes,
                                            **kwargs)

    try:
        with torch.device("meta"):  # build without allocating weights just to read the head
            probe = build(1000)
    except (NotImplementedError, RuntimeError):  # a builder that computes with tensors
        probe = build(1000)
    try:
        head: str | None = find_head(probe)
        feature_dim: int | None = probe.get_submodule(head).in_features
    except ValueError:  # e.g. SqueezeNet classifies with a convolution: pass layer= for features
        head, feature_dim = None, None
    return ModelSpec(name, build, _original_recipe(name), head, feature_dim, 1000, "torchvision",
                     _torchvision_description(name, feature_dim))


def list_models(*, include_torchvision: bool = False) -> list[str]:
    """Names ``load_network`` accepts: featclf's registry, optionally every torchvision model.

    The torchvision names are accepted either way; ``include_torchvision`` only lists them.

    Examples
    --------
    >>> {"lenet5", "seed_cnn"} <= set(list_models())
    True
    >>> {"resnet18", "vgg16", "vit_b_16"} <= set(list_models(include_torchvision=True))
    True
    """
    names = set(_REGISTRY)
    if include_torchvision:
        names |= _torchvision_names()
    return sorted(names)


def is_model_name(name: Any) -> bool:
    """Whether ``name`` is a registered or torchvision model name, or a ``"timm/<name>"``
    (:mod:`featclf.models.timm_backbones`; checked against timm when it is built).

    Examples
    --------
    >>> is_model_name("resnet18"), is_model_name("model.pt"), is_model_name(3)
    (True, False, False)
    """
    from featclf.models.timm_backbones import is_timm_name

    return isinstance(name, str) and (name in _REGISTRY or name in _torchvision_names()
                                      or is_timm_name(name))


def get_model_spec(name: str) -> ModelSpec:
    """The :class:`ModelSpec` of a registered or torchvision model name.

    Raises
    ------
    ValueError
        Unknown name; the message suggests close names.

    Examples
    --------
    >>> get_model_spec("lenet5").feature_dim
    84
    >>> spec = get_model_spec("resnet50")
    >>> spec.head, spec.feature_dim, spec.preprocess.resize
    ('fc', 2048, 256)
    >>> get_model_spec("resnt18")
    Traceback (most recent call last):
    ValueError: unknown model 'resnt18'. Did you mean 'resnet18'...? See ...list_models()
    """
    check_params({"name": [str]}, {"name": name}, "get_model_spec")
    if name in _REGISTRY:
        return _REGISTRY[name]
    if name in _torchvision_names():
        return _torchvision_spec(name)
    from featclf.models.timm_backbones import is_timm_name, timm_spec

    if is_timm_name(name):
        return timm_spec(name)  # ImportError without timm; unknown names suggest close ones
    close = difflib.get_close_matches(name, sorted(set(_REGISTRY) | _torchvision_names()), n=3)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"unknown model {name!r}.{hint} See featclf.models.list_models()")


def architecture_layers(name: str) -> list[str]:
    """The graph node names of architecture ``name`` that ``layer=`` accepts, in execution order.

    The network is built on the meta device (no weights allocated, drawn or downloaded), so
    this is quick even for large architectures.

    Examples
    --------
    >>> architecture_layers("lenet5")[:4]
    ['x', 'pad', 'c1.0', 'c1.1']
    >>> "layer4.1.relu_1" in architecture_layers("resnet18")
    True
    """
    spec = get_model_spec(name)
    if spec.source == "timm":
        from featclf.models.timm_backbones import timm_block_names

        return timm_block_names(name)
    try:
        with torch.device("meta"):
            module = spec.builder(spec.num_classes)
    except (NotImplementedError, RuntimeError):  # a builder that computes with tensors
        module = spec.builder(spec.num_classes)
    return layer_names(module.eval())
