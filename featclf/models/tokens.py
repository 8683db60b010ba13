"""Feature models for transformers and timm backbones: token pooling, blocks by name or index.

A vision transformer's layers output token sequences ``(n, T, D)`` whose first tokens are the
class token (and, in some models, register tokens); torchvision's Swin outputs ``(n, H, W, C)``
maps, channels last. Pooling them as convolutional maps would mix the class token into the
mean, or average over the wrong axes, so these networks get feature models that know their
layout:

* :class:`TimmFeatures` reads any timm model through its own API: ``forward_features`` and
  ``forward_head(pre_logits=True)`` for the penultimate features, ``forward_intermediates`` for
  blocks (every block from one forward).
* :class:`TorchvisionTokenFeatures` reads torchvision's ``VisionTransformer`` and
  ``SwinTransformer`` from one FX graph, pooling each node by its layout.

Blocks are named as in ``layer=``: ``"penultimate"`` (the head's input), a block's module name
(``"blocks.11"``, ``"stages.2"``, ``"encoder.layers.encoder_layer_11"``: its raw output), or an
index into the model's blocks as a string (``"-1"``, ``"-4"``, ``"0"``): the block's tokens
passed through the network's final norm, as DINOv2's ``get_intermediate_layers`` gives them,
so ``layer=["-4", "-3", "-2", "-1"], pooling="cls"`` is DINOv2's linear-probe input (the last
four blocks' class tokens).
"""

from __future__ import annotations

import copy
import difflib
import inspect

import torch
from torch import nn
from torchvision.models.feature_extraction import create_feature_extractor

from featclf.models.head import (
    check_layer,
    find_head,
    l2_normalize,
    pool_features,
    pool_tokens,
    split_pooling,
    without_head,
)

__all__ = ["PENULTIMATE", "TimmFeatures", "TorchvisionTokenFeatures", "block_index",
           "last_blocks"]

PENULTIMATE = "penultimate"
#: The head's output (the network's own class scores, before softmax): never pooled.
LOGITS = "logits"
_TOKEN_POOLINGS = ("cls", "mean")


def last_blocks(n: int) -> list[str]:
    """``layer=`` for the last ``n`` blocks, oldest first: DINOv2's probe is ``last_blocks(4)``
    with ``pooling="cls"``.

    Examples
    --------
    >>> last_blocks(4)
    ['-4', '-3', '-2', '-1']
    """
    if not isinstance(n, int) or n < 1:
        raise ValueError(f"last_blocks: n={n!r} must be a positive int")
    return [str(-i) for i in range(n, 0, -1)]


def block_index(block: str, n_blocks: int) -> int | None:
    """The non-negative index that a block given as ``"-1"``/``"3"`` names; None for a name.

    Examples
    --------
    >>> block_index("-1", 12), block_index("3", 12), block_index("blocks.3", 12)
    (11, 3, None)
    """
    try:
        i = int(block)
    except ValueError:
        return None
    if not -n_blocks <= i < n_blocks:
        raise ValueError(f"layer={block!r}: this network has {n_blocks} blocks; an index runs "
                         f"from {-n_blocks} to {n_blocks - 1}")
    return i % n_blocks


def _unknown_block(block: str, valid: list[str], what: str) -> ValueError:
    close = difflib.get_close_matches(block, valid, n=3)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    return ValueError(f"layer={block!r} is not a block of {what}.{hint} Valid: 'penultimate', "
                      f"an index from -{len(valid)} to {len(valid) - 1}, or "
                      f"{', '.join(map(repr, valid))}")


class TimmFeatures(nn.Module):
    """A timm model's features of ``blocks``, pooled: ``(n, d)`` for one, a dict for several.

    Parameters
    ----------
    model : torch.nn.Module
        A timm model (used as it is: pass a copy).
    blocks : list of str
        ``"penultimate"``, indices (``"-1"``) or ``feature_info`` module names (``"blocks.3"``).
    pooling : str
        One of :data:`featclf.models.head.POOLINGS`. For ``"penultimate"``, ``"cls"`` and
        ``"mean"`` pool the final tokens of a transformer (``forward_features``); the others
        give what the head receives (``forward_head(pre_logits=True)``), timm's own pooling.

    Examples
    --------
    >>> import timm
    >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=2, num_classes=3)
    >>> features = TimmFeatures(vit.eval(), ["penultimate", "-1"], pooling="mean")
    >>> {k: tuple(v.shape) for k, v in features(torch.zeros(2, 3, 32, 32)).items()}
    {'penultimate': (2, 192), '-1': (2, 192)}
    """

    def __init__(self, model: nn.Module, blocks: list[str], pooling: str) -> None:
        super().__init__()
        self.model = model
        self.blocks = list(blocks)
        self.pooling = pooling
        base, self._l2 = split_pooling(pooling)
        self._base = base
        prefix = getattr(model, "num_prefix_tokens", None)
        takes_prefix = "return_prefix_tokens" in inspect.signature(
            getattr(model, "forward_intermediates", lambda: None)).parameters
        # Transformers whose tokens timm hands over with the class/register tokens apart.
        self._tokens = prefix is not None and takes_prefix
        self._has_cls = self._tokens and getattr(model, "cls_token", None) is not None
        names = [info["module"] for info in getattr(model, "feature_info", [])]
        self._specs: dict[str, tuple[int | None, bool]] = {}
        for block in self.blocks:
            if block in (PENULTIMATE, LOGITS):
                self._specs[block] = (None, block == LOGITS)
                continue
            if not names or not hasattr(model, "forward_intermediates"):
                raise ValueError(f"layer={block!r}: {type(model).__name__} has no "
                                 "forward_intermediates in this timm version; only "
                                 "'penultimate' features can be read from it")
            index = block_index(block, len(names))
            if index is None and block not in names:
                raise _unknown_block(block, names, type(model).__name__)
            # An index means DINOv2's reading (the final norm applied); a name the raw output.
            self._specs[block] = (names.index(block), False) if index is None else \
                (index, self._tokens)
        if base == "cls" and not self._has_cls:
            raise ValueError(f"pooling={pooling!r}: {type(model).__name__} has no class token; "
                             "use pooling='mean' (patch tokens) or 'avg'")

    def _final(self, final: torch.Tensor) -> torch.Tensor:
        if self._tokens and self._base in _TOKEN_POOLINGS:
            return pool_tokens(final, self.pooling, prefix=int(self.model.num_prefix_tokens))
        return l2_normalize(self.model.forward_head(final, pre_logits=True), self._l2)

    def _intermediate(self, out, normed: bool) -> torch.Tensor:
        if not self._tokens:
            return pool_features(out, self.pooling)  # (n, C, H, W) maps, timm's NCHW
        patches, prefix = out
        tokens = torch.cat([prefix, patches], dim=1)
        if normed:
            tokens = self.model.norm(tokens)
        return pool_tokens(tokens, self.pooling, prefix=prefix.shape[1])

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        wanted = sorted({i for i, _ in self._specs.values() if i is not None})
        final_needed = PENULTIMATE in self._specs or LOGITS in self._specs
        by_index: dict[int, object] = {}
        final = None
        if wanted:
            kwargs = {"output_fmt": "NLC", "return_prefix_tokens": True} if self._tokens else {}
            out = self.model.forward_intermediates(x, indices=wanted, norm=False,
                                                   intermediates_only=not final_needed,
                                                   **kwargs)
            final, inters = out if final_needed else (None, out)
            by_index = dict(zip(wanted, inters, strict=True))
        elif final_needed:
            final = self.model.forward_features(x)
        pooled = {}
        for block, (index, normed) in self._specs.items():
            if block == LOGITS:
                pooled[block] = self.model.forward_head(final)
            else:
                pooled[block] = self._final(final) if index is None else \
                    self._intermediate(by_index[index], normed)
        return pooled if len(self.blocks) > 1 else pooled[self.blocks[0]]


def _is_swin(module: nn.Module) -> bool:
    from torchvision.models.swin_transformer import SwinTransformer

    return isinstance(module, SwinTransformer)


class TorchvisionTokenFeatures(nn.Module):
    """torchvision ``VisionTransformer``/``SwinTransformer`` features of ``blocks``, pooled by
    their layout (class token first; Swin's maps channels last), all from one forward.

    Parameters
    ----------
    module : torch.nn.Module
        The classifier (not modified).
    blocks : list of str
        ``"penultimate"``, indices into the encoder layers (ViT) or stages (Swin), or graph
        node names.
    pooling : str
        One of :data:`featclf.models.head.POOLINGS`; for ``"penultimate"``, ``"cls"`` and
        ``"mean"`` pool the encoder's final tokens, the others give the head's input.

    Examples
    --------
    >>> from torchvision.models import VisionTransformer
    >>> vit = VisionTransformer(32, 8, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32)
    >>> features = TorchvisionTokenFeatures(vit.eval(), ["penultimate", "-1"], "mean")
    >>> {k: tuple(v.shape) for k, v in features(torch.zeros(2, 3, 32, 32)).items()}
    {'penultimate': (2, 16), '-1': (2, 16)}
    """

    def __init__(self, module: nn.Module, blocks: list[str], pooling: str) -> None:
        super().__init__()
        self.blocks = list(blocks)
        self.pooling = pooling
        base, _ = split_pooling(pooling)
        self._swin = _is_swin(module)
        stages = self.stages(module)
        if self._swin:
            final_node, self._norm_of = "norm", {stages[-1]: "norm"}
        else:
            final_node, self._norm_of = "encoder.ln", dict.fromkeys(stages, "encoder.ln")
        if base == "cls" and self._swin:
            raise ValueError(f"pooling={pooling!r}: Swin has no class token; use "
                             "pooling='mean' or 'avg'")
        head = find_head(module)
        token_final = base in _TOKEN_POOLINGS
        head_input = LOGITS in blocks or (PENULTIMATE in blocks and not token_final)
        body = without_head(module, head) if head_input else copy.deepcopy(module)
        # The original head, applied to its input from the same forward, gives the logits.
        self.head_layer = copy.deepcopy(module.get_submodule(head)) if LOGITS in blocks \
            else None
        nodes: dict[str, str] = {}
        # block -> (graph node, whether its tokens pass through the final norm)
        self._specs: dict[str, tuple[str, bool]] = {}
        for block in self.blocks:
            if block == LOGITS:
                node, normed = head, False
            elif block == PENULTIMATE:
                node, normed = (final_node if token_final else head), False
            else:
                index = block_index(block, len(stages))
                if index is None:
                    check_layer(module, block)
                    node, normed = block, False
                else:
                    node = stages[index]
                    normed = node in self._norm_of
            nodes[node] = node
            self._specs[block] = (node, normed)
        self.graph = create_feature_extractor(body, return_nodes=nodes)
        # The final norm, applied to indexed blocks (shared with the graph, not a copy).
        self.norms = nn.ModuleDict({n.replace(".", "_"): body.get_submodule(n)
                                    for n in set(self._norm_of.values())})
        self._final_node = final_node
        self._head = head

    @staticmethod
    def stages(module: nn.Module) -> list[str]:
        """The module names that indices count: encoder layers (ViT) or stages (Swin)."""
        if _is_swin(module):
            return [f"features.{i}" for i, m in enumerate(module.features)
                    if i > 0 and isinstance(m, nn.Sequential)]
        return [f"encoder.layers.{name}" for name, _ in module.encoder.layers.named_children()]

    @classmethod
    def check_index(cls, module: nn.Module, block: str) -> int:
        """The stage a block index names (a ValueError when out of range)."""
        return block_index(block, len(cls.stages(module)))

    def _pool(self, node: str, x: torch.Tensor, normed: bool) -> torch.Tensor:
        if normed:
            x = self.norms[self._norm_of[node].replace(".", "_")](x)
        if node == self._head:  # the head's input: vectors already
            return pool_features(x, self.pooling)
        if self._swin and x.ndim == 4 and (node.startswith("features.") or node == "norm"):
            return pool_features(x.permute(0, 3, 1, 2), self.pooling)  # NHWC -> NCHW
        if not self._swin and x.ndim == 3:
            # Tokens inside the encoder carry the class token first; before it, none.
            prefix = 1 if node.startswith("encoder") else 0
            return pool_tokens(x, self.pooling, prefix=prefix)
        return pool_features(x, self.pooling)

    def forward(self, x: torch.Tensor) -> torch.Tensor | dict[str, torch.Tensor]:
        out = self.graph(x)
        pooled = {block: self.head_layer(out[node]) if block == LOGITS else
                  self._pool(node, out[node], normed)
                  for block, (node, normed) in self._specs.items()}
        return pooled if len(self.blocks) > 1 else pooled[self.blocks[0]]
