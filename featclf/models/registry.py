"""The model registry: one name resolves to a builder, its head and its preprocessing.

Shaped like torchvision's ``list_models``/``get_model`` and timm's ``register_model``: featclf's
own seed networks are registered by name, and every torchvision classification model is
available under its torchvision name without registration.
"""

from __future__ import annotations

import difflib
import functools
import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch
from torch import nn

from featclf.data.transforms import IMAGENET_MEAN, IMAGENET_STD, ImagePreprocess
from featclf.models.head import find_head, replace_head
from featclf.models.weights import (
    Checkpoint,
    WeightsError,
    load_state_dict_checked,
    looks_like_weight_file,
    read_checkpoint,
    torchvision_preprocess,
    torchvision_state_dict,
)


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
        The input the network expects (size, channels, normalisation).
    head : str or None
        Qualified name of the final classification layer (None when it is not a Linear layer).
    feature_dim : int or None
        Size of the penultimate features (the head's input).
    num_classes : int
        Default number of outputs.
    source : str
        ``"featclf"`` or ``"torchvision"``.
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


def register_model(name: str | None = None, *, preprocess: ImagePreprocess, head: str,
                   feature_dim: int, num_classes: int = 10, source: str = "featclf",
                   description: str = "") -> Callable:
    """Decorator registering ``builder(num_classes) -> nn.Module`` under ``name``.

    Parameters
    ----------
    name : str, optional
        Registry name (default: the function's name).
    preprocess : ImagePreprocess
        The network's input preprocessing.
    head : str
        Qualified name of its final classification layer.
    feature_dim : int
        Size of the penultimate features.
    num_classes : int
        Default number of classes.
    source, description : str
        Shown by ``featclf models``.

    Returns
    -------
    callable
        The decorator; it returns the builder unchanged.

    Examples
    --------
    >>> @register_model("tiny_mlp", preprocess=ImagePreprocess(8, 1, (0.5,), (0.5,)),
    ...                 head="2", feature_dim=16)
    ... def tiny_mlp(num_classes=10):
    ...     return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.Linear(16, num_classes))
    >>> "tiny_mlp" in list_models()
    True
    """

    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        key = name or builder.__name__
        _REGISTRY[key] = ModelSpec(key, builder, preprocess, head, feature_dim, num_classes,
                                   source, description or (builder.__doc__ or "").strip()
                                   .split("\n")[0])
        return builder

    return decorate


def _torchvision_names() -> list[str]:
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


@functools.cache
def _torchvision_spec(name: str) -> ModelSpec:
    import torchvision

    def build(num_classes: int = 1000) -> nn.Module:
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
    try:
        t = torchvision.models.get_model_weights(name).DEFAULT.transforms()
        crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
        pre = ImagePreprocess(crop, 3, tuple(t.mean), tuple(t.std), resize=resize)
    except (ValueError, AttributeError, KeyError):
        pre = ImagePreprocess(224, 3, IMAGENET_MEAN, IMAGENET_STD, resize=256)
    return ModelSpec(name, build, pre, head, feature_dim, 1000, "torchvision",
                     f"torchvision {name}")


def list_models(*, include_torchvision: bool = False) -> list[str]:
    """Names ``get_model`` accepts: featclf's registry, optionally every torchvision classifier.

    Examples
    --------
    >>> {"lenet5", "seed_cnn", "resnet18", "vgg16"} <= set(list_models())
    True
    """
    names = set(_REGISTRY)
    if include_torchvision:
        names |= set(_torchvision_names())
    return sorted(names)


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
    >>> get_model_spec("resnt18")
    Traceback (most recent call last):
    ValueError: unknown model 'resnt18'. Did you mean 'resnet18'...? See ...list_models()
    """
    if not isinstance(name, str):
        raise ValueError(f"model name must be a string, got {type(name).__name__}")
    if name in _REGISTRY:
        return _REGISTRY[name]
    tv = _torchvision_names()
    if name in tv:
        return _torchvision_spec(name)
    close = difflib.get_close_matches(name, sorted(set(_REGISTRY) | set(tv)), n=3)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"unknown model {name!r}.{hint} See featclf.models.list_models()")


def default_preprocess(name: str, weights=None) -> ImagePreprocess:
    """The preprocessing of model ``name`` with ``weights``: the torchvision weights' own
    evaluation recipe when they have one, else the one registered for the architecture.

    Examples
    --------
    >>> default_preprocess("resnet50", "DEFAULT").resize, default_preprocess("resnet50").resize
    (232, 256)
    """
    spec = get_model_spec(name)
    own = torchvision_preprocess(name, weights) if spec.source == "torchvision" else None
    return own or spec.preprocess


def _head_classes(state: Mapping[str, torch.Tensor], head: str | None) -> int | None:
    w = state.get(f"{head}.weight") if head else None
    return int(w.shape[0]) if w is not None and w.ndim == 2 else None


def resolve_weights(name: str, weights) -> tuple[dict[str, torch.Tensor] | None, str,
                                                  dict | None]:
    """Fetch the state dict that ``weights`` designates for model ``name``.

    Returns
    -------
    (state_dict or None, description of the source, featclf metadata or None)
    """
    if weights is None:
        return None, "random initialisation", None
    if isinstance(weights, Mapping):
        return dict(weights), "the given state dict", None
    if isinstance(weights, Checkpoint):
        return weights.state_dict, weights.path, weights.metadata
    if looks_like_weight_file(weights):
        ck = read_checkpoint(weights)
        if ck.metadata and ck.metadata.get("model") not in (None, name):
            raise WeightsError(f"{weights}: this checkpoint is for model "
                               f"{ck.metadata['model']!r}, not {name!r}")
        return ck.state_dict, os.fspath(weights), ck.metadata
    name_of = getattr(weights, "name", weights)  # a torchvision WeightsEnum member or its name
    if not isinstance(name_of, str):
        raise WeightsError(f"weights={weights!r}: pass None, a file path, a state dict or a "
                           "torchvision weights name such as 'DEFAULT'")
    if get_model_spec(name).source != "torchvision":
        raise WeightsError(f"weights={name_of!r} is not a file, and {name!r} has no "
                           "torchvision weights; pass the path of a .pt/.safetensors file")
    return torchvision_state_dict(name, name_of), f"torchvision {name}.{name_of}", None


def get_model(name: str, weights=None, num_classes: int | None = None) -> nn.Module:
    """Build a network by name, optionally with weights and a head of ``num_classes`` outputs.

    Parameters
    ----------
    name : str
        A name from :func:`list_models` (``include_torchvision=True`` for all).
    weights : None, str, path-like, state dict, or torchvision weights
        ``None``: random initialisation. A ``.pt``/``.pth`` file (read with
        ``weights_only=True``) or ``.safetensors`` file, including checkpoints saved by
        ``SoftmaxClassifier.save``. A torchvision weights name (``"DEFAULT"``,
        ``"IMAGENET1K_V1"``), downloaded when online.
    num_classes : int, optional
        Outputs of the head. Default: as many as the weights have, else the model's default.
        When it differs from the weights', the head is replaced by a new, random one (for
        fine-tuning).

    Returns
    -------
    torch.nn.Module
        In eval mode.

    Examples
    --------
    >>> get_model("lenet5", num_classes=3)(torch.zeros(1, 1, 28, 28)).shape
    torch.Size([1, 3])
    """
    spec = get_model_spec(name)
    state, source, _ = resolve_weights(name, weights)
    if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
        raise ValueError(f"num_classes must be a positive int, got {num_classes!r}")
    if state is None:
        module = spec.builder(num_classes or spec.num_classes)
    else:
        stored = _head_classes(state, spec.head) or spec.num_classes
        module = spec.builder(stored)
        load_state_dict_checked(module, state, source=source)
        if num_classes is not None and num_classes != stored:
            if spec.head is None:
                raise ValueError(f"{name} has no Linear head to resize to {num_classes} classes")
            replace_head(module, spec.head, num_classes)
    return module.eval()
