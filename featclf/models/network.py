"""One notion of the network: :class:`Network`, built by :func:`load_network` alone.

Every featclf entry point that needs a network (``DeepFeatureExtractor``, ``SoftmaxClassifier``,
``compare``, the CLI) passes its ``model``/``weights`` arguments here, so weights are resolved,
checked and described in one place. A ``Network`` says what the module is (``arch``), where its
weights came from (:class:`WeightsSource`), what its images must look like (``preprocess``),
which layer is its head, and a fingerprint of its class and weights that is the same however the
network was given: by name, checkpoint file, state dict, module or fitted classifier.

A torchvision architecture given by name gets its pretrained ``DEFAULT`` weights unless
``weights="random"`` asks for random ones; featclf's seed networks (``lenet5``, ``seed_cnn``)
have no pretrained weights, so they start random. :attr:`WeightsSource.explicit` tells random
weights that were asked for from random weights by default, which an extractor warns about
(:class:`UntrainedWeightsWarning`).

Preprocessing belongs to the weights, as torchvision's ``Weights.transforms()`` does: a featclf
checkpoint's metadata names its recipe, torchvision weights bring theirs, and random weights
(or weights that name none) get the architecture's registered recipe (MNIST statistics at 28x28
for ``lenet5``/``seed_cnn``; for a torchvision architecture, the recipe of the first weights
torchvision lists for it, the input it was published with).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import os
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import torch
from torch import nn

from featclf.data.transforms import ImagePreprocess
from featclf.fingerprint import digest_state_dict, module_fingerprint
from featclf.models.head import find_head, replace_head
from featclf.models.registry import ModelSpec, get_model_spec, is_model_name
from featclf.models.weights import (
    Checkpoint,
    CheckpointError,
    WeightsError,
    has_torchvision_weights,
    load_state_dict_checked,
    looks_like_weight_file,
    read_checkpoint,
    torchvision_cache_file,
    torchvision_preprocess,
    torchvision_state_dict,
    torchvision_weights,
)
from featclf.params import Interval, check_params

__all__ = ["WEIGHTS_KINDS", "Network", "UntrainedWeightsWarning", "WeightsSource", "get_model",
           "load_network"]

#: Where a network's weights can come from (``WeightsSource.kind``).
WEIGHTS_KINDS = ("pretrained", "file", "trained", "random", "module")


class UntrainedWeightsWarning(UserWarning):
    """Features are computed with random weights the user did not ask for (a seed network used
    untrained); pass ``weights="random"`` to say that is meant, or trained weights."""


@dataclass(frozen=True)
class WeightsSource:
    """Where a network's weights came from, in plain words.

    Attributes
    ----------
    kind : {"pretrained", "file", "trained", "random", "module"}
        ``"pretrained"``: torchvision's published weights; ``"file"``: a weights file;
        ``"trained"``: trained by a featclf estimator (``SoftmaxClassifier.network_``);
        ``"random"``: random initialisation; ``"module"``: weights handed over in memory (a
        module used as it was, or a state dict).
    description : str
        For summaries, stores and reports, e.g. ``"random weights (seed 0)"``,
        ``"torchvision ResNet18_Weights.IMAGENET1K_V1"``, ``"file /x/w.pt (xxh3 1a2b3c4d)"``.
    explicit : bool, default=False
        True when the caller asked for random weights (``weights="random"``); False for random
        weights that a seed network gets by default, which extractors warn about.

    Examples
    --------
    >>> WeightsSource("random", "random weights (seed 0)").to_dict()
    {'kind': 'random', 'description': 'random weights (seed 0)', 'explicit': False}
    """

    kind: str
    description: str
    explicit: bool = False

    def __post_init__(self) -> None:
        if self.kind not in WEIGHTS_KINDS:
            raise ValueError(f"WeightsSource: kind={self.kind!r} is not one of {WEIGHTS_KINDS}")

    def to_dict(self) -> dict:
        """JSON-able ``{"kind": ..., "description": ..., "explicit": ...}``."""
        return {"kind": self.kind, "description": self.description, "explicit": self.explicit}


@dataclass(frozen=True, eq=False)
class Network:
    """A classifier network and everything featclf knows about it.

    Build one with :func:`load_network`; ``dataclasses.replace`` gives a variant (its
    fingerprint is computed afresh).

    Attributes
    ----------
    module : torch.nn.Module or None
        The full classifier, head included: in eval mode on the CPU when featclf built or
        copied it; a module given as ``model=`` is used as it is. None in a
        :meth:`description`.
    arch : str or None
        Registry or torchvision name; None for an anonymous module.
    weights : WeightsSource
        Where its weights came from.
    preprocess : ImagePreprocess, callable or None
        What its images must look like; None when unknown (a module given as it is).
    head : str or None
        Qualified name of its final classification layer (None: no Linear head).
    feature_dim : int or None
        The head's input size (the penultimate features).
    metadata : dict or None
        The featclf checkpoint metadata its weights came with (classes, params, history).
    fingerprint : str
        Digest of the module's class and every weight and buffer, taken when the Network is
        made: equal for the same network however it was built (the architecture name is not
        part of it, so ``"lenet5"`` and a ``LeNet5()`` with the same weights agree).

    Examples
    --------
    >>> net = load_network("lenet5")
    >>> net.arch, net.head, net.feature_dim, net.weights.description
    ('lenet5', 'output', 84, 'random weights (seed 0)')
    >>> net.fingerprint == load_network(net.module).fingerprint  # the same network, as a module
    True
    """

    module: nn.Module | None
    arch: str | None
    weights: WeightsSource
    preprocess: ImagePreprocess | Callable | None
    head: str | None
    feature_dim: int | None
    metadata: dict | None = None
    fingerprint: str | None = dataclasses.field(default=None, repr=False)

    def __post_init__(self) -> None:
        # Taken when the Network is made, so it names the weights as they were then even if a
        # module given as it is changes afterwards (a store must never file new vectors under
        # old weights). A Network with a module always computes its own.
        if self.module is not None:
            object.__setattr__(self, "fingerprint", module_fingerprint(self.module))
        elif self.fingerprint is None:
            raise ValueError("Network: one without its module needs the fingerprint of it")

    def description(self) -> Network:
        """This network without its module: what it is, where its weights came from, and its
        fingerprint (what an extractor keeps once it has built its own feature model).

        Examples
        --------
        >>> net = load_network("lenet5")
        >>> about = net.description()
        >>> about.module is None, about.fingerprint == net.fingerprint, about.arch
        (True, True, 'lenet5')
        """
        return dataclasses.replace(self, module=None, fingerprint=self.fingerprint)

    def __repr__(self) -> str:
        arch = self.arch or type(self.module).__name__
        return (f"Network({arch}, {self.weights.description}, head={self.head!r}, "
                f"feature_dim={self.feature_dim})")


# --------------------------------------------------------------------------- helpers


@contextlib.contextmanager
def _random_draws(seed: int | None) -> Iterator[None]:
    """Draw from ``torch.manual_seed(seed)`` in a forked RNG; None: from the global RNG."""
    if seed is None:
        yield
        return
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _is_random(weights: Any) -> bool:
    return isinstance(weights, str) and weights == "random"


def _random_description(seed: int | None) -> str:
    return f"random weights (seed {seed})" if seed is not None else \
        "random weights (global RNG)"


def _head_or_none(module: nn.Module) -> str | None:
    try:
        return find_head(module)
    except ValueError:  # no Linear layer: only layer="<node>" can read features, and says so
        return None


def _feature_dim(module: nn.Module, head: str | None) -> int | None:
    layer = module.get_submodule(head) if head else None
    return int(layer.in_features) if isinstance(layer, nn.Linear) else None


def _head_outputs(module: nn.Module, head: str | None) -> int | None:
    layer = module.get_submodule(head) if head else None
    return int(layer.out_features) if isinstance(layer, nn.Linear) else None


def _stored_classes(state: Mapping[str, torch.Tensor], head: str | None) -> int | None:
    w = state.get(f"{head}.weight") if head else None
    return int(w.shape[0]) if w is not None and w.ndim == 2 else None


def _file_source(path: str, state: Mapping[str, torch.Tensor]) -> WeightsSource:
    return WeightsSource("file", f"file {path} (xxh3 {digest_state_dict(state)[:8]})")


def _check_checkpoint_arch(meta: dict | None, path: str, arch: str | None) -> None:
    """Refuse a featclf checkpoint saved for another architecture than ``arch``."""
    stored = (meta or {}).get("model")
    if arch is not None and stored not in (None, arch):
        raise CheckpointError(f"weights={path!r} is a checkpoint of model {stored!r}, not "
                              f"{arch!r}; pass model={path!r} alone to use it")


def _meta_preprocess(meta: dict | None) -> ImagePreprocess | None:
    stored = (meta or {}).get("preprocess")
    return ImagePreprocess.from_dict(stored) if stored else None


@dataclass
class _Weights:
    """A resolved ``weights`` argument: the state dict and what came with it."""

    state: dict[str, torch.Tensor]
    source: WeightsSource
    where: str  # for error messages: the file, "the given state dict", the torchvision name
    metadata: dict | None = None
    preprocess: ImagePreprocess | None = None  # the weights' own recipe, when they carry one


def _read_weights(weights: Any, arch: str | None) -> _Weights:
    """Fetch the state dict that ``weights`` designates for architecture ``arch`` (None: an
    anonymous module, which takes files and state dicts only)."""
    if isinstance(weights, Mapping):
        state = dict(weights)
        return _Weights(state, WeightsSource(
            "module", f"the given state dict (xxh3 {digest_state_dict(state)[:8]})"),
            "the given state dict")
    if looks_like_weight_file(weights):
        weights = read_checkpoint(weights)
    if isinstance(weights, Checkpoint):
        _check_checkpoint_arch(weights.metadata, weights.path, arch)
        return _Weights(weights.state_dict, _file_source(weights.path, weights.state_dict),
                        weights.path, weights.metadata, _meta_preprocess(weights.metadata))
    if arch is None:
        raise WeightsError(f"weights={weights!r}: for a network given as an object, pass None, a "
                           ".pt/.safetensors file or a state dict (torchvision weights names "
                           "work only with a model name such as model='resnet18')")
    if not isinstance(getattr(weights, "name", weights), str):
        raise WeightsError(f"weights={weights!r}: pass None, 'random', a file path, a state dict "
                           "or a torchvision weights name such as 'DEFAULT'")
    if get_model_spec(arch).source != "torchvision":
        raise WeightsError(f"weights={getattr(weights, 'name', weights)!r} is not a file, and "
                           f"{arch!r} has no torchvision weights; pass the path of a "
                           ".pt/.safetensors file")
    member = torchvision_weights(arch, weights)
    described = f"torchvision {type(member).__name__}.{member.name}"
    state = torchvision_state_dict(arch, member)
    return _Weights(state, WeightsSource("pretrained", described),
                    f"{described} ({torchvision_cache_file(arch, member)})",
                    preprocess=torchvision_preprocess(arch, member))


def _resized(network: Network, num_classes: int | None, seed: int | None,
             copied: bool) -> Network:
    """``network`` with a fresh head of ``num_classes`` outputs when its head differs."""
    if num_classes is None or num_classes == _head_outputs(network.module, network.head):
        return network
    from featclf.models.timm_backbones import _classifier, _is_timm_module

    timm_model = _is_timm_module(network.module)
    if network.head is None and not timm_model:
        name = network.arch or type(network.module).__name__
        raise ValueError(f"{name} has no Linear head to resize to {num_classes} classes")
    module = network.module if copied else copy.deepcopy(network.module)
    with _random_draws(seed):
        if timm_model:  # timm's own head and initialisation (also where it had none)
            module.reset_classifier(num_classes)
        else:
            replace_head(module, network.head, num_classes)
    head = _classifier(module) if timm_model else network.head
    return dataclasses.replace(network, module=module.eval(), head=head,
                               feature_dim=_feature_dim(module, head) or network.feature_dim)


# --------------------------------------------------------------------------- the cases


def _from_name(name: str, weights: Any, num_classes: int | None, seed: int | None) -> Network:
    spec: ModelSpec = get_model_spec(name)
    if spec.source == "timm":  # timm builds, loads and adapts its own weights
        from featclf.models.timm_backbones import load_timm_network

        return load_timm_network(name, weights, num_classes=num_classes, seed=seed)
    if weights is None and spec.source == "torchvision" and has_torchvision_weights(name):
        weights = "DEFAULT"  # a torchvision architecture means its published weights
    if weights is None or _is_random(weights):
        with _random_draws(seed):
            module = spec.builder(num_classes or spec.num_classes)
        source = WeightsSource("random", _random_description(seed), explicit=_is_random(weights))
        return Network(module.eval(), name, source, spec.preprocess, spec.head,
                       _feature_dim(module, spec.head))
    given = _read_weights(weights, name)
    head = (given.metadata or {}).get("head") or spec.head
    stored = _stored_classes(given.state, head) or spec.num_classes
    with _random_draws(seed):  # the builder's initial draws are overwritten, but they are draws
        module = spec.builder(stored)
    load_state_dict_checked(module, given.state, source=given.where)
    if given.source.kind == "pretrained" and hasattr(module, "transform_input"):
        # googlenet/inception_v3: torchvision's weights expect their inputs re-normalised, as
        # its builders set whenever weights are given.
        module.transform_input = True
    network = Network(module.eval(), name, given.source, given.preprocess or spec.preprocess,
                      head, _feature_dim(module, head), given.metadata)
    return _resized(network, num_classes, seed, copied=True)


def _from_checkpoint(path: str | os.PathLike, weights: Any, num_classes: int | None,
                     seed: int | None) -> Network:
    if weights is not None:
        raise ValueError(f"model={os.fspath(path)!r} is a checkpoint file and carries its own "
                         f"weights; leave weights=None (got weights={weights!r})")
    ck = read_checkpoint(path)
    name = (ck.metadata or {}).get("model")
    if ck.metadata is not None and not name:
        raise CheckpointError(f"{ck.path}: this checkpoint holds a custom nn.Module, not a zoo "
                              "model (its metadata names no architecture), so featclf cannot "
                              "rebuild it: build your module, then load_network(module, "
                              f"weights={ck.path!r})")
    if not name:
        raise CheckpointError(f"{ck.path}: this file has no featclf metadata naming its "
                              "architecture (a bare state dict); pass the architecture and the "
                              f"file separately: model='<name>', weights={ck.path!r}")
    return _from_name(name, ck, num_classes, seed)


def _from_module(module: nn.Module) -> Network:
    from featclf.models.timm_backbones import _classifier, _is_timm_module, module_preprocess

    # A timm model names its head and brings its weights' recipe (pretrained_cfg).
    head = _classifier(module) if _is_timm_module(module) else _head_or_none(module)
    return Network(module, None, WeightsSource(
        "module", f"the given {type(module).__name__}'s own weights"), module_preprocess(module),
        head, _feature_dim(module, head))


def _from_estimator(estimator: Any) -> Network:
    network = getattr(estimator, "network_", None)
    if not isinstance(network, Network):
        raise ValueError(f"model is a {type(estimator).__name__} without a fitted network (no "
                         "network_): fit it first or pass its saved checkpoint (clf.save(path), "
                         "then model=path)")
    return network


def _with_weights(network: Network, weights: Any, num_classes: int | None,
                  seed: int | None) -> Network:
    """``network`` itself when ``weights`` is None, else a copy with those weights loaded."""
    if weights is None:
        return _resized(network, num_classes, seed, copied=False)
    if _is_random(weights):
        if network.arch is None:
            raise WeightsError("weights='random' needs an architecture to draw from: pass a "
                               "model name, e.g. model='resnet18', weights='random'")
        classes = num_classes or _head_outputs(network.module, network.head)
        return _from_name(network.arch, "random", classes, seed)
    given = _read_weights(weights, network.arch)
    module = copy.deepcopy(network.module).to("cpu")  # the given module stays as it was
    load_state_dict_checked(module, given.state, source=given.where)
    # The weights' own recipe first; then the architecture's, which random weights also get.
    preprocess = given.preprocess or (get_model_spec(network.arch).preprocess
                                      if network.arch else network.preprocess)
    head = (given.metadata or {}).get("head") or network.head
    loaded = Network(module.eval(), network.arch, given.source, preprocess, head,
                     _feature_dim(module, head), given.metadata)
    return _resized(loaded, num_classes, seed, copied=True)


_CONSTRAINTS = {
    "num_classes": [Interval(Integral, 1, None, closed="left"), None],
    "seed": [Interval(Integral, 0, None, closed="left"), None],
}


def load_network(model: Any, weights: Any = None, *, num_classes: int | None = None,
                 seed: int | None = 0) -> Network:
    """The network that ``model`` and ``weights`` designate: the one place weights are resolved.

    Parameters
    ----------
    model : str, path-like, torch.nn.Module, Network or fitted estimator
        A registry or torchvision name (:func:`list_models`); a featclf checkpoint file whose
        metadata names its architecture (``SoftmaxClassifier.save``, :func:`save_checkpoint`);
        an ``nn.Module`` (used as it is, not copied, unless weights or a new head are asked
        for); a :class:`Network` (returned as it is, under the same condition); or a fitted
        estimator exposing its ``network_`` (a fitted ``SoftmaxClassifier``).
    weights : None, "random", str, path-like, state dict, Checkpoint or torchvision weights
        None: a given network keeps its weights; a torchvision name gets its pretrained
        ``DEFAULT`` weights (as ``"DEFAULT"``); ``lenet5``/``seed_cnn``, which have no
        pretrained weights, get random ones. ``"random"``: random weights of the architecture,
        asked for (``weights.explicit``). A ``.pt``/``.pth``/``.safetensors`` file (read with
        ``weights_only=True``) or a :class:`Checkpoint`; a featclf checkpoint saved for another
        architecture is refused. A state dict. With a torchvision architecture, a torchvision
        weights name (``"DEFAULT"``, ``"IMAGENET1K_V1"``) or enum member: read from torch's
        cache (``torch.hub.get_dir()/checkpoints``), downloaded there when missing unless the
        environment variable ``FEATCLF_OFFLINE=1`` forbids it.
    num_classes : int, optional
        Outputs of the head. Default: as many as the weights have, else the architecture's
        default. When it differs, the head is replaced by a fresh ``nn.Linear`` (for
        fine-tuning), on a copy: a given module is never modified.
    seed : int or None, default=0
        Random weights and a replaced head are drawn from ``torch.manual_seed(seed)`` in a
        forked RNG, so that every call builds the same network; None draws from (and advances)
        the global RNG.

    Returns
    -------
    Network

    Raises
    ------
    ValueError
        Unknown names (close ones suggested), objects that are not networks, an unfitted
        estimator. :class:`WeightsError` (a ValueError) for weights that cannot be read, do
        not fit, or are a checkpoint of another architecture; its :class:`CheckpointError`
        for damaged or foreign files, :class:`MissingWeightsError` for pretrained weights that
        are neither cached nor downloadable (the message says where to put the file).

    Examples
    --------
    >>> net = load_network("lenet5", num_classes=3)
    >>> net.module(torch.zeros(1, 1, 28, 28)).shape, net.preprocess.output_size
    (torch.Size([1, 3]), (28, 28))
    >>> rand = load_network("resnet18", "random")
    >>> rand.weights.description, rand.weights.explicit, rand.feature_dim
    ('random weights (seed 0)', True, 512)
    >>> load_network("lenet5").fingerprint == load_network("lenet5").fingerprint
    True
    >>> load_network(nn.Linear(4, 2)).weights.kind
    'module'
    """
    check_params(_CONSTRAINTS, {"num_classes": num_classes, "seed": seed}, "load_network")
    if isinstance(model, Network):
        return _with_weights(model, weights, num_classes, seed)
    if isinstance(model, nn.Module):
        return _with_weights(_from_module(model), weights, num_classes, seed)
    if is_model_name(model):
        return _from_name(model, weights, num_classes, seed)
    if isinstance(model, str | os.PathLike) and looks_like_weight_file(model):
        return _from_checkpoint(model, weights, num_classes, seed)
    if isinstance(model, str):
        get_model_spec(model)  # raises "unknown model ... Did you mean ...?"
    if any(hasattr(model, a) for a in ("network_", "module_", "get_params")):  # an estimator
        return _with_weights(_from_estimator(model), weights, num_classes, seed)
    raise ValueError(f"model={model!r} is not a network: pass a model name (see "
                     "featclf.models.list_models()), an nn.Module, a checkpoint file saved by "
                     "featclf, or a fitted SoftmaxClassifier")


def get_model(name: str, weights: Any = None, num_classes: int | None = None) -> nn.Module:
    """Build a network by name: ``load_network(name, weights, ...).module``.

    Parameters
    ----------
    name : str
        A name from :func:`list_models` (``include_torchvision=True`` for all).
    weights : None, str, path-like, state dict, or torchvision weights
        As for :func:`load_network`: None means a torchvision architecture's pretrained
        ``DEFAULT`` weights and random ones for ``lenet5``/``seed_cnn``. Random weights (and a
        new head) are drawn from the global RNG (seed it with ``torch.manual_seed`` for a
        reproducible network).
    num_classes : int, optional
        Outputs of the head. Default: as many as the weights have, else the model's default.
        When it differs from the weights', the head is replaced by a new, random one.

    Returns
    -------
    torch.nn.Module
        In eval mode.

    Examples
    --------
    >>> get_model("lenet5", num_classes=3)(torch.zeros(1, 1, 28, 28)).shape
    torch.Size([1, 3])
    """
    check_params({"name": [str], "num_classes": _CONSTRAINTS["num_classes"]},
                 {"name": name, "num_classes": num_classes}, "get_model")
    get_model_spec(name)  # a name only (not a checkpoint path): unknown names raise here
    return load_network(name, weights, num_classes=num_classes, seed=None).module
