"""timm backbones by name: ``"timm/<name>"`` builds ``timm.create_model("<name>")``.

Any model timm lists (``featclf models --source timm``), with or without a pretrained tag:
``"timm/convnext_tiny"``, ``"timm/vit_small_patch16_224.augreg_in21k"``,
``"timm/vit_small_patch14_dinov2"``. timm is an optional extra (``pip install featclf[timm]``);
featclf imports it only when such a name (or a timm module) is used.

Weights (``weights=``): None means timm's pretrained weights of the name's tag, downloaded
from the Hugging Face Hub into its cache when online; with ``FEATCLF_OFFLINE=1`` a cached copy
is used, and a missing one raises :class:`~featclf.models.MissingWeightsError` naming the model
and the ways forward. ``"random"``: timm's random initialisation (seeded). A weights file
(``.safetensors``, ``.pth``; read with ``weights_only=True``), a state dict, a featclf
checkpoint, or a local Hugging Face directory (``config.json`` and ``model.safetensors``, as
``timm``'s ``save_for_hf`` writes it; its ``pretrained_cfg`` gives the preprocessing).

Preprocessing comes from the weights' ``pretrained_cfg`` through
``timm.data.resolve_data_config``: input size, ``crop_pct`` (shorter side resized to
``floor(size / crop_pct)``, then centre-cropped), interpolation, mean and std. It is an
:class:`~featclf.data.ImagePreprocess`, so every field is part of the feature cache key.

Features (``DeepFeatureExtractor``): see :mod:`featclf.models.tokens` for ``pooling="cls"`` /
``"mean"``, intermediate blocks by name or index and ``"+l2"`` per-block normalisation.
"""

from __future__ import annotations

import copy
import difflib
import functools
import json
import math
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from featclf.data.transforms import ImagePreprocess
from featclf.errors import option
from featclf.models.head import find_head, split_pooling
from featclf.models.tokens import (
    LOGITS,
    PENULTIMATE,
    TimmFeatures,
    TorchvisionTokenFeatures,
    _unknown_block,
    block_index,
)
from featclf.models.weights import (
    Checkpoint,
    MissingWeightsError,
    WeightsError,
    load_state_dict_checked,
    looks_like_weight_file,
    offline,
    read_checkpoint,
)

__all__ = ["TIMM_PREFIX", "is_timm", "is_timm_name", "load_timm_network", "timm_block_names",
           "timm_feature_model", "timm_model_names", "timm_preprocess", "timm_spec"]

#: Model names starting with this are timm's: ``"timm/convnext_tiny"``.
TIMM_PREFIX = "timm/"


def _timm():
    try:
        import timm
    except ImportError:
        raise ImportError("timm models need the timm package: pip install 'featclf[timm]' "
                          "(or pip install timm)") from None
    return timm


def is_timm_name(name: Any) -> bool:
    """Whether ``name`` follows the ``"timm/<name>"`` convention (timm need not be installed).

    Examples
    --------
    >>> is_timm_name("timm/convnext_tiny"), is_timm_name("resnet18")
    (True, False)
    """
    # A file of that relative path (a checkpoint in a folder named timm) is a file, not a name.
    return isinstance(name, str) and name.startswith(TIMM_PREFIX) and \
        len(name) > len(TIMM_PREFIX) and not os.path.isfile(name)


def _is_timm_module(module: Any) -> bool:
    return isinstance(module, nn.Module) and type(module).__module__.startswith("timm.")


def is_timm(module: Any) -> bool:
    """Whether :func:`timm_feature_model` builds ``module``'s features: a timm model, or a
    torchvision ``VisionTransformer``/``SwinTransformer`` (whose token outputs it pools the
    same way). Imports nothing.

    Examples
    --------
    >>> from featclf.models.seed import LeNet5
    >>> is_timm(LeNet5())
    False
    """
    if _is_timm_module(module):
        return True
    from torchvision.models import SwinTransformer, VisionTransformer

    return isinstance(module, VisionTransformer | SwinTransformer)


def timm_feature_model(module: nn.Module, blocks: list[str], *, pooling: str) -> nn.Module:
    """Images -> pooled features of ``blocks``: ``(n, d)`` for one block, ``{block: (n, d)}``
    for several, every block from one forward.

    Parameters
    ----------
    module : torch.nn.Module
        A timm model or a torchvision ViT/Swin (:func:`is_timm`); not modified.
    blocks : list of str
        ``"penultimate"`` (the head's input; with ``pooling="cls"``/``"mean"``, the final
        tokens' class token / patch mean), a block index as a string (``"-1"``: through the
        final norm, DINOv2's reading) or a block's module name (``"blocks.3"``, ``"stages.2"``,
        raw). torchvision networks also take any graph node name.
    pooling : str
        One of :data:`featclf.models.head.POOLINGS`.

    Returns
    -------
    torch.nn.Module
        In eval mode.

    Examples
    --------
    >>> import timm
    >>> vit = timm.create_model("vit_tiny_patch16_224", img_size=32, depth=4)
    >>> probe = timm_feature_model(vit, ["-4", "-3", "-2", "-1"], pooling="cls+l2")
    >>> with torch.no_grad():
    ...     out = probe(torch.zeros(1, 3, 32, 32))
    >>> [tuple(v.shape) for v in out.values()], round(float(out["-1"].norm()), 4)
    ([(1, 192), (1, 192), (1, 192), (1, 192)], 1.0)
    """
    split_pooling(pooling)
    if not is_timm(module):
        raise ValueError(f"timm_feature_model: {type(module).__name__} is neither a timm model "
                         "nor a torchvision ViT/Swin")
    if not blocks:
        raise ValueError("timm_feature_model: blocks is empty")
    if _is_timm_module(module):
        return TimmFeatures(copy.deepcopy(module).eval(), blocks, pooling).eval()
    return TorchvisionTokenFeatures(module, blocks, pooling).eval()


def check_block(module: nn.Module, block: str) -> bool:
    """Whether ``block`` is a valid ``layer=`` of a timm model or torchvision ViT/Swin read by
    index; raises a ValueError listing the valid blocks for a timm model; False when the
    graph's node names decide (any other network, or a torchvision node name).

    Examples
    --------
    >>> import timm
    >>> check_block(timm.create_model("convnext_atto"), "-1")
    True
    >>> check_block(timm.create_model("convnext_atto"), "stage.2")
    Traceback (most recent call last):
    ValueError: layer='stage.2' is not a block of ConvNeXt. Did you mean 'stages.2'...
    """
    if not is_timm(module):
        return False
    if block in (PENULTIMATE, LOGITS):
        return True
    if _is_timm_module(module):
        names = timm_block_names(module)
        if block_index(block, len(names)) is None and block not in names:
            raise _unknown_block(block, names, type(module).__name__)
        return True
    try:
        int(block)
    except ValueError:
        return False
    TorchvisionTokenFeatures.check_index(module, block)
    return True


# --------------------------------------------------------------------------- names and specs


def timm_model_names(pattern: str = "*", *, pretrained: bool = False) -> list[str]:
    """``"timm/<name>"`` for every timm model matching ``pattern`` (no download).

    ``pretrained=True`` lists the names with their pretrained tags (``timm.list_pretrained``).

    Examples
    --------
    >>> "timm/convnext_atto" in timm_model_names("convnext_at*")
    True
    """
    timm = _timm()
    names = timm.list_pretrained(pattern) if pretrained else timm.list_models(pattern)
    return [TIMM_PREFIX + n for n in names]


def _bare(arch: str) -> str:
    return arch[len(TIMM_PREFIX):] if is_timm_name(arch) else arch


def _check_known(arch: str) -> str:
    timm = _timm()
    name = _bare(arch)
    if not timm.is_model(name):
        base = name.split(".", 1)[0]
        close = difflib.get_close_matches(base, timm.list_models(), n=3)
        hint = f" Did you mean {' or '.join(repr(TIMM_PREFIX + c) for c in close)}?" \
            if close else ""
        raise ValueError(f"unknown timm model {arch!r}.{hint} See featclf models --source timm")
    return name


def timm_preprocess(model: nn.Module, config: Mapping | None = None) -> ImagePreprocess:
    """The evaluation recipe of a timm model's weights as an :class:`ImagePreprocess`.

    ``timm.data.resolve_data_config`` of its ``pretrained_cfg`` (or ``config``): input size,
    ``crop_pct`` (resize the shorter side to ``floor(size / crop_pct)``, then centre-crop),
    interpolation, mean, std. A ViT built at another ``img_size`` than its weights were
    published at keeps that size (``patch_embed.img_size``). ``crop_mode="squash"`` with
    ``crop_pct=1`` resizes straight to the size.

    Examples
    --------
    >>> import timm
    >>> pre = timm_preprocess(timm.create_model("convnext_atto"))
    >>> pre.output_size, pre.resize, pre.interpolation, pre.mean
    ((224, 224), 256, 'bicubic', (0.485, 0.456, 0.406))
    """
    timm = _timm()
    cfg = dict(timm.data.resolve_data_config(dict(config or {}), model=model))
    channels, height, width = (int(v) for v in cfg["input_size"])
    img_size = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if img_size is not None and getattr(model, "dynamic_img_size", False) is False:
        height, width = (int(v) for v in img_size)
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    side = min(height, width)
    resize = math.floor(side / crop_pct)
    if cfg.get("crop_mode") == "squash" and resize == side:
        resize = None
    interpolation = cfg.get("interpolation", "bilinear")
    if interpolation not in ("bilinear", "bicubic", "nearest"):
        interpolation = "bilinear"  # timm's "random" is a training-time choice
    mean, std = tuple(cfg["mean"]), tuple(cfg["std"])
    if channels == 1 and len(mean) == 3:
        mean, std = mean[:1], std[:1]
    return ImagePreprocess(size=(height, width) if height != width else height,
                           channels=channels, mean=mean, std=std,
                           resize=resize,
                           interpolation=interpolation)


def _classifier(model: nn.Module) -> str | None:
    """The qualified name of a timm model's classifier when it is a Linear layer."""
    name = (getattr(model, "pretrained_cfg", None) or {}).get("classifier")
    names = [name] if isinstance(name, str) else list(name or [])
    for candidate in names:
        try:
            if isinstance(model.get_submodule(candidate), nn.Linear):
                return candidate
        except AttributeError:
            continue
    try:
        head = find_head(model)
    except ValueError:
        return None
    # The last Linear is the head only when it is what get_classifier() returns.
    getter = getattr(model, "get_classifier", None)
    return head if getter is not None and getter() is model.get_submodule(head) else None


def _feature_dim(model: nn.Module, head: str | None) -> int | None:
    if head is not None:
        return int(model.get_submodule(head).in_features)
    dim = getattr(model, "head_hidden_size", None) or getattr(model, "num_features", None)
    return int(dim) if dim else None


def _description(name: str, model: nn.Module, head: str | None) -> str:
    cfg = getattr(model, "pretrained_cfg", None) or {}
    tag = cfg.get("tag")
    what = f"{_feature_dim(model, head)} features"
    return f"timm {name.split('.', 1)[0]}, {what}" + (f"; weights {tag}" if tag else "")


def _build(name: str, num_classes: int | None, **kwargs) -> nn.Module:
    timm = _timm()
    extra = {} if num_classes is None else {"num_classes": int(num_classes)}
    return timm.create_model(name, **extra, **kwargs)


@functools.cache
def timm_spec(arch: str):
    """The :class:`~featclf.models.registry.ModelSpec` of ``"timm/<name>"`` (random weights'
    preprocessing is the name's pretrained tag's).

    Examples
    --------
    >>> spec = timm_spec("timm/convnext_atto")
    >>> spec.head, spec.feature_dim, spec.source, spec.preprocess.resize
    ('head.fc', 320, 'timm', 256)
    """
    from featclf.models.registry import ModelSpec

    name = _check_known(arch)
    try:
        with torch.device("meta"):  # no weights allocated just to read the head and recipe
            probe = _build(name, None, pretrained=False)
    except (NotImplementedError, RuntimeError):
        probe = _build(name, None, pretrained=False)
    head = _classifier(probe)
    classes = int((probe.pretrained_cfg or {}).get("num_classes") or 0) or 1000

    def builder(num_classes: int = classes) -> nn.Module:
        return _build(name, num_classes, pretrained=False)

    return ModelSpec(TIMM_PREFIX + name, builder, timm_preprocess(probe), head,
                     _feature_dim(probe, head), classes, "timm", _description(name, probe, head))


def timm_block_names(arch_or_model: str | nn.Module) -> list[str]:
    """The blocks ``layer=`` takes by name for a timm model (``feature_info`` module names),
    in order; indices (``"-1"``) and ``"penultimate"`` work too.

    Examples
    --------
    >>> timm_block_names("timm/convnext_atto")
    ['stages.0', 'stages.1', 'stages.2', 'stages.3']
    """
    model = arch_or_model
    if isinstance(model, str):
        try:
            with torch.device("meta"):
                model = _build(_check_known(model), None, pretrained=False)
        except (NotImplementedError, RuntimeError):
            model = _build(_check_known(model), None, pretrained=False)
    return [info["module"] for info in getattr(model, "feature_info", [])]


# --------------------------------------------------------------------------- loading


def _hf_cached_file(cfg: Mapping) -> str | None:
    """The Hugging Face cache's copy of a pretrained cfg's weights, if any (no network)."""
    repo = cfg.get("hf_hub_id")
    if not repo:
        return None
    from huggingface_hub import try_to_load_from_cache

    repo_id, _, revision = repo.partition("@")
    for filename in ("model.safetensors", "pytorch_model.bin", "open_clip_pytorch_model.bin"):
        found = try_to_load_from_cache(repo_id, filename, revision=revision or None)
        if isinstance(found, str):
            return found
    return None


def _missing(arch: str, cfg: Mapping, why: str) -> MissingWeightsError:
    repo = cfg.get("hf_hub_id") or cfg.get("url") or "(no published weights)"
    from huggingface_hub.constants import HF_HUB_CACHE

    return MissingWeightsError(
        f"{arch}: its pretrained weights ({repo}) are not in the Hugging Face cache "
        f"({HF_HUB_CACHE}), and {why}. Run once online (without FEATCLF_OFFLINE=1) to cache "
        f"them, or pass {option('weights', 'FILE')} with a .safetensors/.pth file of these "
        f"weights or a local Hugging Face directory (config.json + model.safetensors), or "
        f"{option('weights', 'random')} for random weights")


def _pretrained(arch: str, name: str, num_classes: int | None):
    """timm's pretrained weights of ``name``: (module, WeightsSource)."""
    from featclf.models.network import WeightsSource

    cfg = _timm().models.get_pretrained_cfg(name)  # the tag's cfg; no model built for it
    cfg = cfg.to_dict() if cfg is not None else {}
    where = f"timm {cfg.get('architecture', name)}.{cfg.get('tag')}" if cfg.get("tag") else \
        f"timm {name}"
    cached = _hf_cached_file(cfg)
    if cached is None and offline():
        raise _missing(arch, cfg, "featclf is offline (FEATCLF_OFFLINE=1)")
    try:
        if cached is not None:  # never touch the network for weights already here
            module = _build(name, num_classes, pretrained=True,
                            pretrained_cfg_overlay={"file": cached, "custom_load": False})
        else:
            module = _build(name, num_classes, pretrained=True)
    except (OSError, RuntimeError, ValueError) as exc:
        if isinstance(exc, WeightsError):
            raise
        raise _missing(arch, cfg, f"loading them failed ({type(exc).__name__}: {exc})") \
            from None
    hub = f" (Hugging Face {cfg['hf_hub_id']})" if cfg.get("hf_hub_id") else ""
    return module, WeightsSource("pretrained", where + hub)


def _local_dir(arch: str, name: str, path: Path, num_classes: int | None):
    """A local Hugging Face directory: (module, WeightsSource)."""
    from featclf.models.network import WeightsSource

    config = path / "config.json"
    if not config.is_file():
        raise WeightsError(f"weights={os.fspath(path)!r} is a directory without config.json: "
                           "pass a Hugging Face model directory (config.json + "
                           "model.safetensors, as timm's save_for_hf writes) or a weights file")
    try:
        stored = json.loads(config.read_text())
    except (OSError, ValueError) as exc:
        raise WeightsError(f"{config}: not a readable JSON file ({exc})") from None
    stored_arch = stored.get("architecture")
    if stored_arch and stored_arch != name.split(".", 1)[0]:
        raise WeightsError(f"{path} holds a {stored_arch!r} model, not {arch!r}; pass "
                           f"model='timm/{stored_arch}'")
    try:
        module = _build(f"local-dir:{path}", num_classes, pretrained=True)
    except (OSError, RuntimeError) as exc:
        raise WeightsError(f"{path}: timm could not load this directory ({exc})") from None
    return module, WeightsSource("file", f"local Hugging Face directory {path}")


def _from_state(arch: str, name: str, weights: Any, num_classes: int | None):
    """A weights file, featclf checkpoint or state dict: (module, WeightsSource, metadata)."""
    from featclf.fingerprint import digest_state_dict
    from featclf.models.network import WeightsSource

    meta = None
    if isinstance(weights, Mapping):
        state, where = dict(weights), "the given state dict"
        source = WeightsSource("module", f"the given state dict "
                               f"(xxh3 {digest_state_dict(state)[:8]})")
    else:
        ck = weights if isinstance(weights, Checkpoint) else read_checkpoint(weights)
        stored = (ck.metadata or {}).get("model")
        if stored not in (None, arch):
            raise WeightsError(f"weights={ck.path!r} is a checkpoint of model {stored!r}, not "
                               f"{arch!r}; pass model={ck.path!r} alone to use it")
        state, where, meta = ck.state_dict, ck.path, ck.metadata
        source = WeightsSource("file", f"file {ck.path} (xxh3 {digest_state_dict(state)[:8]})")
    probe = _build(name, None, pretrained=False)
    head = (meta or {}).get("head") or _classifier(probe)
    w = state.get(f"{head}.weight") if head else None
    stored_classes = int(w.shape[0]) if w is not None and w.ndim == 2 else 0
    module = _build(name, stored_classes, pretrained=False)
    load_state_dict_checked(module, state, source=where)
    if num_classes is not None and num_classes != stored_classes:
        module.reset_classifier(num_classes)
    return module, source, meta


def load_timm_network(arch: str, weights: Any = None, *, num_classes: int | None = None,
                      seed: int | None = 0):
    """The :class:`~featclf.models.Network` of ``"timm/<name>"`` and ``weights``.

    :func:`featclf.models.load_network` calls it for timm names; see the module docstring for
    what ``weights`` may be. ``num_classes`` different from the weights' gives a fresh head
    (timm's ``reset_classifier``), drawn from ``torch.manual_seed(seed)`` as random weights are.

    Examples
    --------
    >>> net = load_timm_network("timm/convnext_atto", "random", num_classes=3)
    >>> net.arch, net.head, net.feature_dim, net.weights.description
    ('timm/convnext_atto', 'head.fc', 320, 'random weights (seed 0)')
    """
    from featclf.models.network import (
        Network,
        WeightsSource,
        _meta_preprocess,
        _random_description,
        _random_draws,
    )

    name = _check_known(arch)
    arch = TIMM_PREFIX + name
    meta = None
    with _random_draws(seed):
        if weights is None:
            module, source = _pretrained(arch, name, num_classes)
        elif isinstance(weights, str) and weights == "random":
            module = _build(name, num_classes, pretrained=False)
            source = WeightsSource("random", _random_description(seed), explicit=True)
        elif isinstance(weights, str | os.PathLike) and Path(weights).is_dir():
            module, source = _local_dir(arch, name, Path(weights), num_classes)
        elif isinstance(weights, Mapping | Checkpoint) or looks_like_weight_file(weights):
            module, source, meta = _from_state(arch, name, weights, num_classes)
        else:
            raise WeightsError(f"weights={weights!r} for {arch}: pass None (timm's pretrained "
                               "weights), 'random', a .safetensors/.pth file, a state dict or "
                               "a local Hugging Face directory")
    head = _classifier(module)
    preprocess = _meta_preprocess(meta) or timm_preprocess(module)
    return Network(module.eval(), arch, source, preprocess, head, _feature_dim(module, head),
                   meta)


def module_preprocess(module: nn.Module) -> ImagePreprocess | None:
    """A timm module's own recipe (None for other modules): what a timm model given as an
    object gets with ``preprocess="auto"``.

    Examples
    --------
    >>> import timm
    >>> module_preprocess(timm.create_model("vit_tiny_patch16_224", img_size=32)).output_size
    (32, 32)
    """
    return timm_preprocess(module) if _is_timm_module(module) else None
