"""Removing a classifier's head and reading features from any named layer.

The penultimate features are what the final classification layer receives: featclf gets them by
replacing that layer with ``nn.Identity`` (timm's ``num_classes=0`` idea). Any other layer is
read with torchvision's ``create_feature_extractor``, by graph node name; convolutional maps are
pooled or flattened into vectors.
"""

from __future__ import annotations

import copy
import difflib

import torch
from torch import nn
from torchvision.models.feature_extraction import (
    create_feature_extractor,
    get_graph_node_names,
)

#: How outputs become vectors: maps ``(n, C, H, W)`` and token sequences ``(n, T, D)``.
#: ``"cls"`` takes a transformer's class token, ``"mean"`` averages its patch tokens (class and
#: register tokens left out; on maps it is ``"avg"``). A ``"+l2"`` suffix scales each block's
#: vectors to unit L2 norm after pooling, so concatenated blocks weigh alike; the pooling is
#: part of every cache key, so normalised and raw vectors are stored apart.
BASE_POOLINGS = ("avg", "max", "flatten", "cls", "mean")
L2_SUFFIX = "+l2"
POOLINGS = BASE_POOLINGS + tuple(p + L2_SUFFIX for p in BASE_POOLINGS)


def find_head(module: nn.Module) -> str:
    """Name of a network's final classification layer: its last ``nn.Linear``.

    Parameters
    ----------
    module : torch.nn.Module
        A classifier.

    Returns
    -------
    str
        Qualified module name, e.g. ``"fc"`` or ``"classifier.6"``.

    Examples
    --------
    >>> import torchvision
    >>> find_head(torchvision.models.alexnet())
    'classifier.6'
    """
    linear = [name for name, m in module.named_modules() if isinstance(m, nn.Linear)]
    if not linear:
        raise ValueError(f"{type(module).__name__} has no nn.Linear layer to treat as its head; "
                         "pass layer='<node name>' to choose the features explicitly")
    return linear[-1]


def _set_submodule(module: nn.Module, name: str, new: nn.Module) -> None:
    parent_name, _, child = name.rpartition(".")
    parent = module.get_submodule(parent_name) if parent_name else module
    setattr(parent, child, new)


def without_head(module: nn.Module, head: str) -> nn.Module:
    """A copy of ``module`` whose ``head`` layer is replaced by ``nn.Identity``.

    Parameters
    ----------
    module : torch.nn.Module
        The classifier (left unchanged).
    head : str
        Qualified name of the layer to remove.

    Returns
    -------
    torch.nn.Module
        Outputs the head's input: the penultimate features.
    """
    headless = copy.deepcopy(module)
    _set_submodule(headless, head, nn.Identity())
    return headless


def replace_head(module: nn.Module, head: str, num_classes: int) -> nn.Module:
    """Give ``module`` a new, freshly initialised head with ``num_classes`` outputs (in place).

    Examples
    --------
    >>> m = replace_head(nn.Sequential(nn.Linear(4, 3)), "0", 5)
    >>> m[0].out_features
    5
    """
    old = module.get_submodule(head)
    if not isinstance(old, nn.Linear):
        raise ValueError(f"head {head!r} is a {type(old).__name__}, not nn.Linear")
    _set_submodule(module, head, nn.Linear(old.in_features, num_classes,
                                           bias=old.bias is not None))
    return module


def layer_names(module: nn.Module) -> list[str]:
    """The graph node names (eval mode) that ``layer=`` accepts, in execution order."""
    return list(get_graph_node_names(module)[1])


def check_layer(module: nn.Module, layer: str) -> None:
    """Raise a ValueError listing the valid names when ``layer`` is not a node of ``module``."""
    from featclf.models.timm_backbones import check_block

    if check_block(module, layer):  # a timm block, or a transformer's block index
        return
    names = layer_names(module)
    # A module name stands for the output of that module's last node (torchvision's rule).
    if layer in names or any(n.startswith(layer + ".") for n in names):
        return
    close = difflib.get_close_matches(layer, names, n=5)
    hint = f" Did you mean {', '.join(map(repr, close))}?" if close else ""
    raise ValueError(f"layer={layer!r} is not a node of {type(module).__name__}.{hint} Valid "
                     f"names: {', '.join(names)}")


def split_pooling(pooling: str) -> tuple[str, bool]:
    """``(base pooling, L2-normalise)`` of a :data:`POOLINGS` value.

    Examples
    --------
    >>> split_pooling("cls+l2"), split_pooling("avg")
    (('cls', True), ('avg', False))
    """
    if pooling not in POOLINGS:
        raise ValueError(f"pooling={pooling!r} is not one of {POOLINGS}")
    if pooling.endswith(L2_SUFFIX):
        return pooling[:-len(L2_SUFFIX)], True
    return pooling, False


def l2_normalize(x: torch.Tensor, enabled: bool = True) -> torch.Tensor:
    """Rows scaled to unit L2 norm (zero rows stay zero) when ``enabled``.

    Examples
    --------
    >>> l2_normalize(torch.tensor([[3.0, 4.0]])).tolist()
    [[0.6000000238418579, 0.800000011920929]]
    """
    return torch.nn.functional.normalize(x, dim=1) if enabled else x


def pool_tokens(x: torch.Tensor, pooling: str, *, prefix: int) -> torch.Tensor:
    """``(n, T, D)`` transformer tokens whose first ``prefix`` are class/register tokens as
    ``(n, d)`` vectors: ``cls`` the class token, ``avg``/``mean``/``max`` over the patch tokens
    only, ``flatten`` every token. A ``+l2`` suffix normalises the result.

    Examples
    --------
    >>> tokens = torch.stack([torch.full((2, 3), 9.0), torch.ones(2, 3), torch.zeros(2, 3)], 1)
    >>> pool_tokens(tokens, "cls", prefix=1)[0].tolist(), pool_tokens(tokens, "mean", prefix=1)[0]
    ([9.0, 9.0, 9.0], tensor([0.5000, 0.5000, 0.5000]))
    """
    base, l2 = split_pooling(pooling)
    if base == "cls":
        if prefix < 1:
            raise ValueError("pooling='cls': this output has no class token; use "
                             "pooling='mean' (the mean of its patch tokens)")
        return l2_normalize(x[:, 0], l2)
    if base == "flatten":
        return l2_normalize(x.flatten(1), l2)
    patches = x[:, prefix:]
    return l2_normalize(patches.amax(dim=1) if base == "max" else patches.mean(dim=1), l2)


def pool_features(x: torch.Tensor, pooling: str) -> torch.Tensor:
    """Turn a layer's output into ``(n, d)`` vectors.

    ``(n, C, H, W)`` maps: ``avg``/``mean``/``max`` pool over space (d = C), ``flatten`` keeps
    every value (d = C*H*W), ``cls`` is refused (a map has no class token). ``(n, L, D)``
    sequences whose layout is unknown pool over all of L (``cls``: the first). ``(n, d)`` passes
    unchanged. A ``+l2`` suffix scales the vectors to unit L2 norm.

    Examples
    --------
    >>> pool_features(torch.ones(2, 8, 3, 3), "flatten").shape
    torch.Size([2, 72])
    >>> pool_features(torch.ones(2, 8, 3, 3), "avg+l2").norm(dim=1).round(decimals=4).tolist()
    [1.0, 1.0]
    """
    base, l2 = split_pooling(pooling)
    if x.ndim <= 2:
        return l2_normalize(x.reshape(x.shape[0], -1), l2)
    if x.ndim == 3:
        return pool_tokens(x, pooling, prefix=1 if base == "cls" else 0)
    if base == "cls":
        raise ValueError(f"pooling='cls': a map of shape {tuple(x.shape[1:])} has no class "
                         "token; use 'avg', 'max' or 'flatten'")
    if base == "flatten":
        return l2_normalize(x.flatten(1), l2)
    dims = tuple(range(2, x.ndim))
    return l2_normalize(x.amax(dim=dims) if base == "max" else x.mean(dim=dims), l2)


class PooledFeatures(nn.Module):
    """Wraps a network so that its forward returns ``(n, d)`` vectors of its layers.

    Parameters
    ----------
    body : torch.nn.Module
        A headless network, or a ``create_feature_extractor`` graph module returning a dict.
    pooling : str
        One of :data:`POOLINGS`: how maps and tokens become vectors.
    named : bool, default=False
        Return the graph's every node as ``{name: (n, d)}`` (several layers from one
        forward); otherwise the one output (the graph's ``"features"`` node) as ``(n, d)``.
    """

    def __init__(self, body: nn.Module, pooling: str, *, named: bool = False) -> None:
        super().__init__()
        self.body = body
        self.pooling = pooling
        self.named = named

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        out = self.body(x)
        if self.named:
            return {name: pool_features(value, self.pooling) for name, value in out.items()}
        if isinstance(out, dict):
            out = out["features"]
        return pool_features(out, self.pooling)


def feature_model(module: nn.Module, *, layer: str | None, head: str | None,
                  pooling: str = "avg") -> nn.Module:
    """A network that maps images to feature vectors of ``layer`` (default: the head's input).

    Parameters
    ----------
    module : torch.nn.Module
        A trained classifier (not modified).
    layer : str or None
        A graph node name, or None for the penultimate features.
    head : str or None
        The classification layer to remove when ``layer`` is None (default: the last Linear).
    pooling : str, default="avg"
        One of :data:`POOLINGS`: how maps and tokens become vectors.

    Returns
    -------
    torch.nn.Module
        A :class:`PooledFeatures`; for a timm model or a torchvision ViT/Swin, the token-aware
        model of :func:`featclf.models.timm_backbones.timm_feature_model`.

    Examples
    --------
    >>> from featclf.models.seed import LeNet5
    >>> feature_model(LeNet5(), layer=None, head="output")(torch.zeros(3, 1, 28, 28)).shape
    torch.Size([3, 84])
    >>> feature_model(LeNet5(), layer="c3", head=None, pooling="max")(
    ...     torch.zeros(3, 1, 28, 28)).shape
    torch.Size([3, 16])
    """
    split_pooling(pooling)
    from featclf.models.timm_backbones import is_timm, timm_feature_model

    if is_timm(module):  # token outputs, forward_intermediates: pooled their own way
        return timm_feature_model(module, [layer or "penultimate"], pooling=pooling)
    if layer is None:
        body = without_head(module, head or find_head(module))
    else:
        check_layer(module, layer)
        body = create_feature_extractor(copy.deepcopy(module), return_nodes={layer: "features"})
    return PooledFeatures(body, pooling).eval()
