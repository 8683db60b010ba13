"""Which outputs of a network become features: one layer, or several from one forward.

``layer=None`` (or ``"penultimate"``) is the input of the final classification layer, read by
replacing that layer with ``nn.Identity`` (:func:`featclf.models.feature_model`). Several
layers are one torchvision FX graph (``create_feature_extractor`` with several
``return_nodes``), so every requested node comes from the same forward pass.
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
    without_head,
)

__all__ = ["PENULTIMATE", "block_names", "feature_names", "layer_feature_model", "probe_widths"]

#: The block name of the final classification layer's input.
PENULTIMATE = "penultimate"


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
    """A network mapping images to the feature vectors of ``blocks``.

    Parameters
    ----------
    module : torch.nn.Module
        The classifier (not modified).
    blocks : list of str
        Graph node names; ``"penultimate"`` is the head's input.
    head : str or None
        The final classification layer (default: the last ``nn.Linear``).
    pooling : {"avg", "max", "flatten"}
        How maps become vectors.

    Returns
    -------
    torch.nn.Module
        A :class:`~featclf.models.head.PooledFeatures`: for one block it returns ``(n, d)``,
        for several ``{block: (n, d_block)}`` from one forward.

    Examples
    --------
    >>> import torch
    >>> from featclf.models.seed import LeNet5
    >>> net = layer_feature_model(LeNet5(), ["c5", "penultimate"], head="output", pooling="avg")
    >>> {k: tuple(v.shape) for k, v in net(torch.zeros(2, 1, 28, 28)).items()}
    {'c5': (2, 120), 'penultimate': (2, 84)}
    """
    if len(blocks) == 1:
        layer = None if blocks[0] == PENULTIMATE else blocks[0]
        return feature_model(module, layer=layer, head=head, pooling=pooling)
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
                raise ValueError(f"layer {name!r} is the head itself; ask for 'penultimate'")
            nodes[name] = name
    graph = create_feature_extractor(body, return_nodes=nodes)
    return PooledFeatures(graph, pooling, named=True).eval()


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
