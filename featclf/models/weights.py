"""Loading and saving weights safely: state dicts only, never pickled code.

featclf reads ``.pt``/``.pth`` files with ``torch.load(..., weights_only=True)`` and
``.safetensors`` files with safetensors, so a checkpoint downloaded from the internet can carry
tensors and plain metadata but cannot run code when loaded. Saving is atomic (temporary file,
fsync, ``os.replace``).
"""

from __future__ import annotations

import json
import os
import pickle
import tempfile
import urllib.error
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from featclf.data.transforms import ImagePreprocess

CHECKPOINT_FORMAT = "featclf-checkpoint"
WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin", ".ckpt")


class WeightsError(ValueError):
    """Weights could not be loaded: the message names the file and what to do."""


@dataclass
class Checkpoint:
    """A state dict and the featclf metadata saved with it (None for a bare state dict)."""

    state_dict: dict[str, torch.Tensor]
    metadata: dict[str, Any] | None
    path: str


def looks_like_weight_file(weights: object) -> bool:
    """Whether ``weights`` names a file rather than a torchvision weights name.

    Examples
    --------
    >>> looks_like_weight_file("model.pt"), looks_like_weight_file("IMAGENET1K_V1")
    (True, False)
    """
    if isinstance(weights, os.PathLike):
        return True
    if not isinstance(weights, str):
        return False
    return weights.lower().endswith(WEIGHT_FILE_SUFFIXES) or os.sep in weights or \
        Path(weights).is_file()


def _read_safetensors(path: Path) -> Checkpoint:
    from safetensors import SafetensorError, safe_open

    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            raw_meta = fh.metadata() or {}
            for key in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
                tensors[key] = fh.get_tensor(key)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise WeightsError(f"{path}: not a readable safetensors file (truncated or damaged?): "
                           f"{exc}") from None
    meta = json.loads(raw_meta["featclf"]) if "featclf" in raw_meta else None
    return Checkpoint(tensors, meta, str(path))


def _read_torch(path: Path) -> Checkpoint:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(
            f"{path}: refused to load: the file contains pickled Python objects that are not "
            "tensors (it could run code when unpickled). featclf loads checkpoints only with "
            "torch.load(weights_only=True). Re-save it as a plain state dict "
            "(torch.save(model.state_dict(), path)) or as .safetensors. Details: "
            f"{str(exc).splitlines()[0]}") from None
    except (RuntimeError, EOFError, zipfile.BadZipFile, OSError) as exc:
        raise WeightsError(f"{path}: not a readable PyTorch checkpoint (truncated, damaged or "
                           f"another format): {exc}") from None
    meta = None
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        meta = json.loads(obj["metadata"])
        obj = obj["state_dict"]
    elif isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"],
                                                                        Mapping):
        obj = obj["state_dict"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise WeightsError(f"{path}: expected a state dict (names → tensors), got "
                           f"{type(obj).__name__}")
    return Checkpoint(dict(obj), meta, str(path))


def read_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """Read a state dict (and featclf metadata, if any) from ``.pt``/``.pth``/``.safetensors``.

    Parameters
    ----------
    path : str or path-like
        The file.

    Returns
    -------
    Checkpoint

    Raises
    ------
    WeightsError
        Missing, truncated or damaged files, and files carrying pickled code (refused without
        running it).

    Examples
    --------
    >>> import tempfile
    >>> p = Path(tempfile.mkdtemp()) / "w.safetensors"
    >>> save_checkpoint(p, nn.Linear(2, 3).state_dict(), {"model": "demo"})
    >>> read_checkpoint(p).metadata["model"]
    'demo'
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"weights file {path} does not exist")
    if path.stat().st_size == 0:
        raise WeightsError(f"weights file {path} is empty (0 bytes)")
    if path.suffix.lower() == ".safetensors":
        return _read_safetensors(path)
    return _read_torch(path)


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; checkpoints are meant to be shared
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def save_checkpoint(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor],
                    metadata: Mapping[str, Any] | None = None) -> None:
    """Save a state dict with JSON metadata, atomically; ``.safetensors`` or torch format.

    The torch format is a dict of tensors and one JSON string, so it loads with
    ``torch.load(path, weights_only=True)`` anywhere, featclf installed or not.

    Parameters
    ----------
    path : str or path-like
        Destination; a ``.safetensors`` suffix selects safetensors.
    state_dict : mapping of str to torch.Tensor
        The weights.
    metadata : mapping, optional
        JSON-able metadata (model name, classes, preprocessing, versions).
    """
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in state_dict.items()}
    meta_json = json.dumps(dict(metadata or {}), default=str)
    if path.suffix.lower() == ".safetensors":
        from safetensors.torch import save_file

        # safetensors refuses tensors that share memory; clone any that do.
        seen: dict[int, str] = {}
        for k, v in tensors.items():
            ptr = v.untyped_storage().data_ptr()
            if ptr in seen and v.numel() > 0:
                tensors[k] = v.clone()
            seen[ptr] = k
        _atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata={"featclf": meta_json}))
    else:
        payload = {"format": CHECKPOINT_FORMAT, "metadata": meta_json, "state_dict": tensors}
        _atomic_write(path, lambda tmp: torch.save(payload, tmp))


def load_state_dict_checked(module: nn.Module, state_dict: Mapping[str, torch.Tensor], *,
                            source: str) -> None:
    """``module.load_state_dict(strict=True)`` with an error that lists what does not match.

    Parameters
    ----------
    module : torch.nn.Module
        The network to load into.
    state_dict : mapping
        The weights.
    source : str
        Where the weights came from, for the message.

    Raises
    ------
    WeightsError
        Missing keys, unexpected keys or shape mismatches, each listed by name.
    """
    own = module.state_dict()
    missing = sorted(set(own) - set(state_dict))
    unexpected = sorted(set(state_dict) - set(own))
    wrong = [f"{k}: file {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
             for k in sorted(set(own) & set(state_dict)) if own[k].shape != state_dict[k].shape]
    if missing or unexpected or wrong:

        def show(items: list[str]) -> str:
            return ", ".join(items[:12]) + (f" ... ({len(items)} in all)" if len(items) > 12
                                            else "")

        parts = []
        if missing:
            parts.append(f"missing keys: {show(missing)}")
        if unexpected:
            parts.append(f"unexpected keys: {show(unexpected)}")
        if wrong:
            parts.append(f"shape mismatches: {show(wrong)}")
        raise WeightsError(f"weights from {source} do not fit {type(module).__name__}: "
                           + "; ".join(parts) + ". Are they for another architecture or number "
                           "of classes?")
    module.load_state_dict(state_dict, strict=True)


def torchvision_weights(model_name: str, weights: Any) -> Any:
    """The torchvision weights enum member that ``weights`` names for ``model_name``.

    Parameters
    ----------
    model_name : str
        torchvision architecture name, e.g. ``"resnet18"``.
    weights : str or torchvision WeightsEnum member
        ``"DEFAULT"``, a member name such as ``"IMAGENET1K_V1"``, or the member itself.

    Returns
    -------
    torchvision.models.WeightsEnum
        The member (``"DEFAULT"`` resolved), nothing downloaded.

    Raises
    ------
    WeightsError
        The architecture has no torchvision weights, the name is not one of them, or the member
        belongs to another architecture.

    Examples
    --------
    >>> torchvision_weights("resnet50", "DEFAULT")
    ResNet50_Weights.IMAGENET1K_V2
    >>> torchvision_weights("resnet18", "IMAGENET1K_V2")
    Traceback (most recent call last):
    featclf.models.weights.WeightsError: ... for resnet18; choose one of: DEFAULT, IMAGENET1K_V1
    """
    import torchvision

    try:
        enum = torchvision.models.get_model_weights(model_name)
    except (ValueError, KeyError):
        raise WeightsError(f"torchvision has no weights for model {model_name!r}") from None
    if isinstance(weights, torchvision.models.WeightsEnum) and not isinstance(weights, enum):
        raise WeightsError(f"weights={weights} are torchvision weights of another architecture; "
                           f"{model_name} takes {enum.__name__}")
    name_of = getattr(weights, "name", weights)
    try:
        return enum.DEFAULT if name_of == "DEFAULT" else enum[name_of]
    except KeyError:
        names = ", ".join(["DEFAULT", *(member.name for member in enum)])  # no aliases
        raise WeightsError(f"weights={name_of!r} is neither a file nor a torchvision weights "
                           f"name for {model_name}; choose one of: {names}") from None


def torchvision_preprocess(model_name: str, weights: Any) -> ImagePreprocess | None:
    """The evaluation recipe of torchvision weights (their ``transforms()``), downloading nothing.

    Weights of one architecture can differ in it: resnet50's ``IMAGENET1K_V2`` (the default)
    resizes to 232 before the 224 crop, where ``IMAGENET1K_V1`` resizes to 256; convnext_tiny
    resizes to 236; vit_b_16's ``IMAGENET1K_SWAG_E2E_V1`` takes 384x384 images, bicubic.

    Parameters
    ----------
    model_name : str
        torchvision architecture name.
    weights : str or torchvision WeightsEnum member
        ``"DEFAULT"``, a member name such as ``"IMAGENET1K_V2"``, or the member itself.

    Returns
    -------
    ImagePreprocess or None
        None when ``weights`` names no torchvision classification weights of ``model_name``
        (a file path, say).

    Examples
    --------
    >>> pre = torchvision_preprocess("resnet50", "DEFAULT")
    >>> pre.resize, pre.output_size, pre.interpolation
    (232, (224, 224), 'bilinear')
    >>> torchvision_preprocess("resnet50", "IMAGENET1K_V1").resize
    256
    """
    if not isinstance(getattr(weights, "name", weights), str) or looks_like_weight_file(weights):
        return None
    try:
        member = torchvision_weights(model_name, weights)
    except WeightsError:
        return None
    recipe = member.transforms()
    # Classification presets carry these; others (video, segmentation) are not featclf's.
    if not all(hasattr(recipe, a) for a in ("crop_size", "resize_size", "mean", "std",
                                            "interpolation")):
        return None
    return ImagePreprocess(size=int(recipe.crop_size[0]), channels=3, mean=tuple(recipe.mean),
                           std=tuple(recipe.std), resize=int(recipe.resize_size[0]),
                           interpolation=recipe.interpolation.value)


def torchvision_state_dict(model_name: str, weights: Any) -> dict[str, torch.Tensor]:
    """Download (or read from torch's cache) the state dict of torchvision weights.

    Parameters
    ----------
    model_name : str
        torchvision architecture name, e.g. ``"resnet18"``.
    weights : str or torchvision WeightsEnum member
        An enum member name such as ``"IMAGENET1K_V1"``, ``"DEFAULT"``, or the member itself.

    Returns
    -------
    dict
        The state dict.

    Raises
    ------
    WeightsError
        Unknown names, or no network: the message gives the URL and how to pass a local file.
    """
    member = torchvision_weights(model_name, weights)
    try:
        return member.get_state_dict(progress=True, check_hash=True)
    except (urllib.error.URLError, OSError, RuntimeError) as exc:
        raise WeightsError(
            f"could not download torchvision weights {model_name} {member.name} from "
            f"{member.url} ({exc}). Offline? Download that file on a machine with network "
            f"access and pass its path instead: weights='/path/to/{Path(member.url).name}'"
        ) from None
