"""Which outputs of a network become features: one layer, or several from one forward.

``layer=None`` (or ``"penultimate"``) is the input of the final classification layer, read by
replacing that layer with ``nn.Identity`` (:func:`featclf.models.feature_model`). Several
layers are one torchvision FX graph (``create_feature_extractor`` with several
``return_nodes``), so every requested node comes from the same forward pass. ``"logits"`` is
the original head's output (before any softmax): the head layer applied to the head's input
that the same forward computed, so the network's own scores come with its features at the
cost of one small matrix product.
"""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from featclf.models.head import (
    PooledFeatures,
    check_layer,
    feature_model,
    find_head,
    pool_features,
    without_head,
)

__all__ = ["LOGITS", "PENULTIMATE", "BlockOutputs", "block_names", "feature_names",
           "layer_feature_model", "probe_widths"]

#: The block name of the final classification layer's input.
PENULTIMATE = "penultimate"
#: The block name of the final classification layer's output: the network's own class scores.
LOGITS = "logits"


def block_names(layer: str | list[str] | tuple[str, ...] | None) -> list[str]:
    """The block names that ``layer=`` asks for, in order.

    Examples
    --------
    >>> block_names(None), block_names("c5"), block_names(["c5", "penultimate"])
    (['penultimate'], ['c5'], ['c5', 'penultimate'])
    """
    if layer is None:
        return [PENULTIMATE]
    if isinstance(layer, str):
        return [layer]
    names = [PENULTIMATE if name is None else name for name in layer]
    if len(set(names)) != len(names):
        raise ValueError(f"layer={list(layer)!r} names a layer twice")
    return names


def layer_feature_model(module: nn.Module, blocks: list[str], *, head: str | None,
                        pooling: str) -> nn.Module:
    """A network mapping images to the feature vectors of ``blocks``, all from one forward.

    Parameters
    ----------
    module : torch.nn.Module
        The classifier (not modified).
    blocks : list of str
        Graph node names; ``"penultimate"`` is the head's input, ``"logits"`` its output.
    head : str or None
        The final classification layer (default: the last ``nn.Linear``).
    pooling : str
        One of :data:`featclf.models.head.POOLINGS`: how maps and tokens become vectors.

    Returns
    -------
    torch.nn.Module
        For one block it returns ``(n, d)``, for several ``{block: (n, d_block)}`` from one
        forward: a :class:`~featclf.models.head.PooledFeatures`, or a :class:`BlockOutputs`
        when ``"logits"`` is asked for; for a timm network, what
        ``featclf.models.timm_backbones.timm_feature_model`` builds.

    Examples
    --------
    >>> import torch
    >>> from featclf.models.seed import LeNet5
    >>> net = layer_feature_model(LeNet5(), ["c5", "penultimate"], head="output", pooling="avg")
    >>> {k: tuple(v.shape) for k, v in net(torch.zeros(2, 1, 28, 28)).items()}
    {'c5': (2, 120), 'penultimate': (2, 84)}

    ``"logits"`` are the network's own outputs:

    >>> lenet = LeNet5().eval()
    >>> x = torch.rand(3, 1, 28, 28)
    >>> net = layer_feature_model(lenet, ["penultimate", "logits"], head="output",
    ...                           pooling="avg")
    >>> out = net(x)
    >>> tuple(out["logits"].shape), bool(torch.equal(out["logits"], lenet(x)))
    ((3, 10), True)
    """
    timm_model = _timm_feature_model(module, blocks, pooling)
    if timm_model is not None:
        return timm_model
    if LOGITS in blocks:
        return _with_logits(module, blocks, head=head, pooling=pooling)
    if len(blocks) == 1:
        layer = None if blocks[0] == PENULTIMATE else blocks[0]
        return feature_model(module, layer=layer, head=head, pooling=pooling)
    body = _graph_body(module, blocks, head)
    return PooledFeatures(body, pooling, named=True).eval()


def _timm_feature_model(module: nn.Module, blocks: list[str], pooling: str) -> nn.Module | None:
    """timm networks have their own feature reading (featclf.models.timm_backbones), when
    that module (and timm) are there."""
    try:
        from featclf.models.timm_backbones import is_timm, timm_feature_model
    except ImportError:  # no timm support installed
        return None
    if not is_timm(module):
        return None
    return timm_feature_model(module, blocks, pooling=pooling)


def _graph_body(module: nn.Module, blocks: list[str], head: str | None) -> nn.Module:
    """One FX graph returning every block of ``blocks`` (the head's input, unpooled, as
    ``"penultimate"``)."""
    nodes: dict[str, str] = {}
    if PENULTIMATE in blocks:
        head = head or find_head(module)
        # The head becomes an Identity leaf (in a copy): its node's output is the head's input.
        body = without_head(module, head)
        nodes[head] = PENULTIMATE
    else:
        body = copy.deepcopy(module)
    for name in blocks:
        if name != PENULTIMATE:
            check_layer(module, name)
            if name in nodes:
                raise ValueError(f"layer {name!r} is the head itself; ask for 'penultimate' "
                                 "(its input) or 'logits' (its output)")
            nodes[name] = name
    return create_feature_extractor(body, return_nodes=nodes)


def _with_logits(module: nn.Module, blocks: list[str], *, head: str | None,
                 pooling: str) -> BlockOutputs:
    """The blocks of ``blocks`` with the head's output as ``"logits"``, from one forward."""
    try:
        head = head or find_head(module)
    except ValueError as error:
        raise ValueError(f"layer={LOGITS!r} is the output of the network's final "
                         f"classification layer, and {error}") from None
    head_layer = copy.deepcopy(module.get_submodule(head))
    others = [b for b in blocks if b not in (LOGITS, PENULTIMATE)]
    if others:
        body = _graph_body(module, [*others, PENULTIMATE], head)
    else:
        body = without_head(module, head)
    return BlockOutputs(body, head_layer, pooling, blocks).eval()


class BlockOutputs(nn.Module):
    """A headless network's blocks plus the head's output (``"logits"``), from one forward.

    ``body`` returns the head's input (a tensor, or ``{"penultimate": ..., other blocks}``);
    ``head`` (the original classification layer) turns that input, unpooled, into the
    logits, exactly as the whole network does. The other blocks are then pooled into
    vectors; the logits are kept as they are (no pooling, no normalisation).

    Parameters
    ----------
    body : torch.nn.Module
        The network with its head replaced by ``nn.Identity`` (or an FX graph of it).
    head : torch.nn.Module
        The final classification layer.
    pooling : str
        One of :data:`featclf.models.head.POOLINGS`: how maps and tokens become vectors.
    blocks : list of str
        The outputs, in order; one block gives ``(n, d)``, several ``{block: (n, d)}``.
    """

    def __init__(self, body: nn.Module, head: nn.Module, pooling: str,
                 blocks: list[str]) -> None:
        super().__init__()
        self.body = body
        self.head = head
        self.pooling = pooling
        self.blocks = list(blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        out = self.body(x)
        raw = dict(out) if isinstance(out, dict) else {PENULTIMATE: out}
        # The logits stay the network's own scores: never pooled or normalised ("avg+l2").
        logits = self.head(raw[PENULTIMATE])
        vectors = {b: logits.reshape(logits.shape[0], -1) if b == LOGITS
                   else pool_features(raw[b], self.pooling) for b in self.blocks}
        return vectors if len(self.blocks) > 1 else vectors[self.blocks[0]]


def probe_widths(model: nn.Module, blocks: list[str], probe: torch.Tensor) -> dict[str, int]:
    """Each block's width, from one forward pass of ``probe`` (where ``model`` lies).

    Examples
    --------
    >>> from featclf.models.seed import LeNet5
    >>> net = layer_feature_model(LeNet5(), ["c5", "penultimate"], head="output", pooling="avg")
    >>> probe_widths(net, ["c5", "penultimate"], torch.zeros(1, 1, 28, 28))
    {'c5': 120, 'penultimate': 84}
    """
    with torch.inference_mode():
        out = model(probe)
    outs = out if isinstance(out, dict) else {blocks[0]: out}
    return {name: int(outs[name].shape[1]) for name in blocks}


def feature_names(prefix: str, widths: dict[str, int], *, named: bool) -> np.ndarray:
    """Output column names: ``"<prefix>_f<i>"``, or ``"<prefix>_<block>_f<i>"`` when ``named``.

    Examples
    --------
    >>> feature_names("lenet5", {"c5": 2, "penultimate": 1}, named=True).tolist()
    ['lenet5_c5_f0', 'lenet5_c5_f1', 'lenet5_penultimate_f0']
    """
    names = []
    for block, width in widths.items():
        start = f"{prefix}_{block.replace('.', '_')}" if named else prefix
        names += [f"{start}_f{i}" for i in range(width)]
    return np.asarray(names, dtype=object)
