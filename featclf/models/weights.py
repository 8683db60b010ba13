"""Loading and saving weights safely: state dicts only, never pickled code.

featclf reads ``.pt``/``.pth`` files with ``torch.load(..., weights_only=True)`` and
``.safetensors`` files with safetensors, so a checkpoint downloaded from the internet can carry
tensors and plain metadata but cannot run code when loaded. A file that cannot be used (damaged,
truncated, foreign, with broken metadata or integer weights) raises :class:`CheckpointError`
naming the file and what is wrong. Saving is atomic (temporary file in the same folder, fsync,
``os.replace``): a process killed mid-save leaves the previous checkpoint.

torchvision's pretrained weights are read from torch's cache
(``torch.hub.get_dir()/checkpoints``), where torchvision keeps them, and downloaded there when
missing, except with the environment variable ``FEATCLF_OFFLINE=1``: then featclf never
downloads, and a missing file raises :class:`MissingWeightsError` saying where to put it.
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import pickle
import re
import socket
import sys
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

import torch
from torch import nn

from featclf.data.transforms import ImagePreprocess
from featclf.durable import fsync_dir
from featclf.errors import option

CHECKPOINT_FORMAT = "featclf-checkpoint"
WEIGHT_FILE_SUFFIXES = (".pt", ".pth", ".safetensors", ".bin", ".ckpt")


class WeightsError(ValueError):
    """Weights could not be loaded: the message names the file and what to do."""


class CheckpointError(WeightsError):
    """A weights file that cannot be used: truncated, damaged, foreign, with broken metadata or
    weights of the wrong dtype. The message names the file and what is wrong with it."""


class MissingWeightsError(WeightsError):
    """Pretrained weights that are not in torch's cache and cannot be downloaded (offline, or
    the download failed): the message names the file, where to put it and the alternatives."""


#: Environment variable: when set to 1 (or true/yes), featclf never downloads weights.
OFFLINE_ENV = "FEATCLF_OFFLINE"


def offline() -> bool:
    """Whether ``FEATCLF_OFFLINE`` forbids downloads (``1``, ``true``, ``yes``, ``on``).

    Examples
    --------
    >>> import os
    >>> offline() == (os.environ.get("FEATCLF_OFFLINE", "").lower() in ("1", "true", "yes", "on"))
    True
    """
    return os.environ.get(OFFLINE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


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


def _parse_metadata(raw: Any, path: Path) -> dict[str, Any]:
    """The checkpoint's JSON metadata as a dict, its known fields checked."""
    if not isinstance(raw, str | bytes):
        raise CheckpointError(f"{path}: its featclf metadata is a {type(raw).__name__}, not a "
                              "JSON string (damaged, or written by another program)")
    try:
        meta = json.loads(raw)
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
        raise CheckpointError(f"{path}: its featclf metadata is not valid JSON ({exc}); the "
                              "file is damaged") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: its featclf metadata is a JSON {type(meta).__name__}, "
                              "not an object; the file is damaged")
    for field, types in _METADATA_FIELDS.items():
        if meta.get(field) is not None and not isinstance(meta[field], types):
            raise CheckpointError(f"{path}: metadata field {field!r} is "
                                  f"{type(meta[field]).__name__} {meta[field]!r}, not "
                                  f"{' or '.join(t.__name__ for t in types)}")
    if meta.get("preprocess") is not None:
        try:
            ImagePreprocess.from_dict(meta["preprocess"])
        except KeyError as exc:
            raise CheckpointError(f"{path}: metadata 'preprocess' lacks the field {exc}; the "
                                  "file is damaged or was edited") from None
        except (TypeError, ValueError) as exc:
            raise CheckpointError(f"{path}: metadata 'preprocess' is invalid ({exc})") from None
    return meta


#: The metadata fields featclf reads, with the JSON types they must have (or null).
_METADATA_FIELDS: dict[str, tuple[type, ...]] = {
    "model": (str,), "head": (str,), "classes": (list,), "num_classes": (int,),
    "preprocess": (dict,), "params": (dict,), "history": (list,), "n_features_in": (int,),
}


def _checked_state(obj: Any, path: Path) -> dict[str, torch.Tensor]:
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"{path}: expected a state dict (names -> tensors), got "
                              f"{type(obj).__name__}")
    bad = next((k for k, v in obj.items() if not isinstance(k, str)
                or not isinstance(v, torch.Tensor)), None)
    if bad is not None:
        raise CheckpointError(f"{path}: expected a state dict (names -> tensors), but entry "
                              f"{bad!r} is a {type(obj[bad]).__name__}")
    if not obj:
        raise CheckpointError(f"{path}: the state dict holds no tensors")
    return dict(obj)


def _read_safetensors(path: Path) -> Checkpoint:
    from safetensors import SafetensorError, safe_open

    try:
        tensors: dict[str, torch.Tensor] = {}
        with safe_open(str(path), framework="pt", device="cpu") as fh:
            raw_meta = fh.metadata() or {}
            for key in fh.keys():  # noqa: SIM118 - safe_open is not a mapping
                tensors[key] = fh.get_tensor(key)
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise CheckpointError(f"{path}: not a readable safetensors file (truncated or "
                              f"damaged?): {exc}") from None
    meta = _parse_metadata(raw_meta["featclf"], path) if "featclf" in raw_meta else None
    return Checkpoint(_checked_state(tensors, path), meta, str(path))


def _read_torch(path: Path) -> Checkpoint:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        if "Unsupported global" not in str(exc):  # bytes that are no pickle of anything
            raise CheckpointError(f"{path}: not a PyTorch checkpoint (damaged, or another "
                                  "format)") from None
        raise CheckpointError(
            f"{path}: refused to load: the file contains pickled Python objects that are not "
            "tensors (it could run code when unpickled). featclf loads checkpoints only with "
            "torch.load(weights_only=True). Re-save it as a plain state dict "
            "(torch.save(model.state_dict(), path)) or as .safetensors. Details: "
            f"{str(exc).splitlines()[0]}") from None
    except OSError as exc:
        raise WeightsError(f"{path}: cannot read the weights file: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - any failure to parse foreign bytes is damage
        raise CheckpointError(f"{path}: not a readable PyTorch checkpoint (truncated, damaged "
                              f"or another format): {type(exc).__name__}: "
                              f"{str(exc).splitlines()[0] if str(exc) else ''}") from None
    meta = None
    if isinstance(obj, Mapping) and obj.get("format") == CHECKPOINT_FORMAT:
        lost = [k for k in ("metadata", "state_dict") if k not in obj]
        if lost:
            raise CheckpointError(f"{path}: a featclf checkpoint without its "
                                  f"{' and '.join(map(repr, lost))} entry (damaged, or written "
                                  "by another program); it holds "
                                  f"{', '.join(map(repr, obj)) or 'nothing'}")
        meta = _parse_metadata(obj["metadata"], path)
        obj = obj["state_dict"]
    elif isinstance(obj, Mapping) and "state_dict" in obj and isinstance(obj["state_dict"],
                                                                        Mapping):
        obj = obj["state_dict"]
    return Checkpoint(_checked_state(obj, path), meta, str(path))


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
        A missing or unreadable file.
    CheckpointError
        (a WeightsError) Truncated, damaged or foreign files, broken metadata (not JSON,
        fields of the wrong type, an incomplete ``preprocess``), and files carrying pickled
        code (refused without running it).

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
        raise CheckpointError(f"weights file {path} is empty (0 bytes)")
    if path.suffix.lower() == ".safetensors":
        return _read_safetensors(path)
    return _read_torch(path)


def _temp_prefix(path: Path, pid: int | None = None) -> str:
    return f".{path.name}.{socket.gethostname()}.{os.getpid() if pid is None else pid}."


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's live process
        return True
    return True


def _remove_dead_temps(path: Path) -> None:
    """Delete the temporary files that killed saves of ``path`` left, on this host only: a
    live process (or another host's, which cannot be checked) may still be writing its own."""
    host_prefix = f".{path.name}.{socket.gethostname()}."
    for tmp in path.parent.glob(f"{glob.escape(host_prefix)}*.tmp"):
        pid = tmp.name[len(host_prefix):].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):
                tmp.unlink()


def _atomic_write(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_dead_temps(path)
    # Same folder: os.replace is atomic only within one filesystem. The name carries host and
    # pid, so that a later save can tell a dead writer's leftover from a live one's file.
    fd, tmp = tempfile.mkstemp(prefix=_temp_prefix(path), suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o644)  # mkstemp makes 0600 files; checkpoints are meant to be shared
    try:
        write(tmp)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        fsync_dir(path.parent)  # the rename itself survives a power loss
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)



def save_checkpoint(path: str | os.PathLike, state_dict: Mapping[str, torch.Tensor],
                    metadata: Mapping[str, Any] | None = None) -> None:
    """Save a state dict with JSON metadata, atomically; ``.safetensors`` or torch format.

    The file is written under a temporary name in the same folder, flushed to disk, then
    renamed over ``path``: a save killed at any point leaves the previous file whole (and a
    hidden ``.<name>.<host>.<pid>.*.tmp`` file, which the next save removes).

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
        Missing keys, unexpected keys or shape mismatches, each listed by name; integer or
        boolean tensors for floating-point weights (``load_state_dict`` would cast them
        silently, and the network would compute constant features).
    """
    own = module.state_dict()
    # Files saved before BatchNorm counted its batches (torchvision's densenets, for one) lack
    # these counters; load_state_dict would fill them in itself for such files.
    state_dict = {**{k: own[k] for k in own if k.endswith(".num_batches_tracked")},
                  **state_dict}
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
        raise CheckpointError(f"weights from {source} do not fit {type(module).__name__}: "
                              + "; ".join(parts) + ". Are they for another architecture or "
                              "number of classes?")
    not_float = [k for k in own if own[k].is_floating_point()
                 and not (state_dict[k].is_floating_point() or state_dict[k].is_complex())]
    if not_float:
        first = not_float[0]
        more = f" ({len(not_float)} such tensors)" if len(not_float) > 1 else ""
        raise CheckpointError(f"weights from {source}: tensor {first!r} is "
                              f"{str(state_dict[first].dtype).removeprefix('torch.')}, but "
                              f"{type(module).__name__} needs floating-point weights there"
                              f"{more}; the file is damaged or was written from integer data")
    module.load_state_dict(state_dict, strict=True)


def has_torchvision_weights(model_name: str) -> bool:
    """Whether torchvision publishes weights for architecture ``model_name``.

    Examples
    --------
    >>> has_torchvision_weights("resnet18"), has_torchvision_weights("lenet5")
    (True, False)
    """
    import torchvision

    try:
        return len(torchvision.models.get_model_weights(model_name)) > 0
    except (ValueError, KeyError):
        return False


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


def torchvision_cache_file(model_name: str, weights: Any) -> Path:
    """Where torch keeps the file of torchvision weights: ``<torch.hub.get_dir()>/checkpoints/``
    and the file name of their URL, as ``torch.hub.load_state_dict_from_url`` does.

    Examples
    --------
    >>> torchvision_cache_file("resnet18", "DEFAULT").name
    'resnet18-f37072fd.pth'
    """
    member = torchvision_weights(model_name, weights)
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(member.url).path)


def _missing_weights(model_name: str, member: Any, path: Path, why: str) -> MissingWeightsError:
    return MissingWeightsError(
        f"{model_name}: the pretrained weights {type(member).__name__}.{member.name} are not in "
        f"torch's cache, and {why}. Download {member.url} and put it in {path.parent} "
        f"(as {path}), or pass {option('weights', 'FILE')} with a weights file of your own, "
        f"or {option('weights', 'random')} for random weights")


def torchvision_state_dict(model_name: str, weights: Any) -> dict[str, torch.Tensor]:
    """The state dict of torchvision weights: from torch's cache, downloaded there if missing.

    The file is read like any other (``weights_only=True``, damaged files named). It is
    downloaded (with torchvision's URL and hash check) only when it is not in the cache and the
    environment variable ``FEATCLF_OFFLINE`` is not set to 1.

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
    MissingWeightsError
        (a WeightsError) Not in the cache, and offline or the download failed: the message
        names the file, the folder to put it in, its URL, and ``weights=FILE`` /
        ``weights='random'``.
    WeightsError
        Unknown names; :class:`CheckpointError` for a damaged cached file.
    """
    member = torchvision_weights(model_name, weights)
    path = torchvision_cache_file(model_name, member)
    if not path.is_file():
        if offline():
            raise _missing_weights(model_name, member, path,
                                   f"featclf is offline ({OFFLINE_ENV}=1)")
        print(f"featclf: downloading {member.url} to {path}", file=sys.stderr)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            match = torch.hub.HASH_REGEX.search(path.name)  # torchvision's own hash check
            # Downloads to a temporary file and renames: never a partial file under `path`.
            torch.hub.download_url_to_file(member.url, str(path),
                                           match.group(1) if match else None, progress=True)
        except (OSError, RuntimeError, ValueError) as exc:  # URLError is an OSError
            raise _missing_weights(model_name, member, path,
                                   f"downloading it failed ({exc})") from None
    return _as_featclf_builds(read_checkpoint(path).state_dict)


#: Keys of densenet files published before '.' was banned from module names ('norm.1').
_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var))$")


def _as_featclf_builds(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A torchvision weights file's state dict, fitted to the network featclf builds: the
    renaming torchvision's own densenet builders do, and without the auxiliary classifiers of
    googlenet/inception_v3, which featclf builds without (as torchvision does once loaded)."""
    out = {}
    for key, value in state.items():
        if key.split(".", 1)[0] in ("aux1", "aux2", "AuxLogits"):
            continue
        old = _OLD_DENSENET_KEY.match(key)
        out[old.group(1) + old.group(2) if old else key] = value
    return out
