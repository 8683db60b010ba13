"""Preprocessing: turning decoded images into what a model expects, and training augmentation.

Images enter as ``uint8`` tensors (0-255) or float tensors in ``[0, 1]``, shaped ``(C, H, W)``
or ``(N, C, H, W)``; :class:`ImagePreprocess` returns normalised float32 tensors of the model's
size and channel count. Resizing and cropping run in the input's dtype (uint8 stays uint8 until
the last step), as in torchvision's own ``weights.transforms()``. It runs on whatever device its
input lives on, so on a GPU the uint8 batch is copied first (4x fewer bytes) and preprocessed
there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
MNIST_MEAN = (0.1307,)
MNIST_STD = (0.3081,)
_INTERPOLATIONS = {"bilinear": v2.InterpolationMode.BILINEAR,
                   "bicubic": v2.InterpolationMode.BICUBIC,
                   "nearest": v2.InterpolationMode.NEAREST}


@dataclass(frozen=True)
class ImagePreprocess:
    """Resize, convert channels and normalise images for one model.

    Grey images given to a 3-channel model are repeated to RGB; RGB images given to a 1-channel
    model are converted to grey (ITU-R 601 luma). Images are resized with antialiasing.
    Calling it runs :meth:`geometry` (channels, resize, crop; uint8 stays uint8) then
    :meth:`finish` (scale and normalise), the two halves that file workers and the device
    split between them.

    Parameters
    ----------
    size : int or (int, int)
        Output height and width.
    channels : {1, 3}
        Channels the model takes.
    mean, std : tuple of float
        Per-channel normalisation applied after scaling to ``[0, 1]``.
    resize : int or None
        When set, first resize the shorter side to this, then centre-crop to ``size`` (the
        ImageNet evaluation recipe, 256 then 224). When None, resize straight to ``size``.
    interpolation : {"bilinear", "bicubic", "nearest"}, default="bilinear"
        The resampling filter (antialiased when shrinking), as in torchvision's
        ``weights.transforms()``.

    Examples
    --------
    >>> pre = ImagePreprocess(size=32, channels=3, mean=(0.5,) * 3, std=(0.5,) * 3)
    >>> pre(torch.zeros(2, 1, 28, 28, dtype=torch.uint8)).shape
    torch.Size([2, 3, 32, 32])
    """

    size: int | tuple[int, int]
    channels: int = 3
    mean: tuple[float, ...] = IMAGENET_MEAN
    std: tuple[float, ...] = IMAGENET_STD
    resize: int | None = None
    interpolation: str = "bilinear"

    def __post_init__(self) -> None:
        if self.interpolation not in _INTERPOLATIONS:
            raise ValueError(f"ImagePreprocess: interpolation={self.interpolation!r} is not one "
                             f"of {sorted(_INTERPOLATIONS)}")
        if self.channels not in (1, 3):
            raise ValueError(f"ImagePreprocess: channels must be 1 or 3, got {self.channels}")
        if len(self.mean) != self.channels or len(self.std) != self.channels:
            raise ValueError(f"ImagePreprocess: mean and std need {self.channels} values each")
        # Lists from JSON metadata become tuples so the object stays hashable.
        object.__setattr__(self, "mean", tuple(float(m) for m in self.mean))
        object.__setattr__(self, "std", tuple(float(s) for s in self.std))
        if not isinstance(self.size, int):
            object.__setattr__(self, "size", tuple(int(s) for s in self.size))

    @property
    def output_size(self) -> tuple[int, int]:
        """``(height, width)`` of the output."""
        return (self.size, self.size) if isinstance(self.size, int) else tuple(self.size)

    def to_dict(self) -> dict:
        """JSON-able description (stored in checkpoints and used in cache keys)."""
        d = asdict(self)
        d["size"] = list(self.output_size)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        # Part of cache keys: uint8 images are resized in uint8 since featclf 0.1 (before,
        # in float), so vectors computed the old way are not mistaken for current ones.
        d["geometry_dtype"] = "input"
        return d

    @classmethod
    def from_dict(cls, d: dict) -> ImagePreprocess:
        """Inverse of :meth:`to_dict`."""
        return cls(size=tuple(d["size"]), channels=int(d["channels"]), mean=tuple(d["mean"]),
                   std=tuple(d["std"]), resize=d.get("resize"),
                   interpolation=d.get("interpolation", "bilinear"))

    def geometry(self, images: torch.Tensor) -> torch.Tensor:
        """Fix the channel count and size, keeping the dtype (uint8 stays uint8).

        This is the part of the work that depends on the input's size. On uint8 images it runs
        in uint8, as torchvision's own ``weights.transforms()`` does: resizing 8-bit pixels is
        faster than resizing floats (``artifacts/benchmarks``), and cropping first leaves fewer
        pixels to convert.
        File workers run it, so batches cross processes and the bus as uint8 (4x fewer bytes).

        Parameters
        ----------
        images : torch.Tensor
            ``(C, H, W)`` or ``(N, C, H, W)``, uint8 or float.

        Returns
        -------
        torch.Tensor
            ``(..., channels, *output_size)``, same dtype.

        Examples
        --------
        >>> pre = ImagePreprocess(size=224, resize=256)
        >>> out = pre.geometry(torch.zeros(3, 300, 400, dtype=torch.uint8))
        >>> out.shape, out.dtype
        (torch.Size([3, 224, 224]), torch.uint8)
        """
        x = images
        c = x.shape[-3]
        if c != self.channels:
            if c == 1:
                x = x.expand(*x.shape[:-3], 3, *x.shape[-2:])
            elif c == 3 and x.dtype == torch.uint8:
                # torchvision truncates the uint8 luma (white becomes 254): round it instead.
                x = F.rgb_to_grayscale(x.float(), num_output_channels=1).round_().to(torch.uint8)
            elif c == 3:
                x = F.rgb_to_grayscale(x, num_output_channels=1)
            else:
                raise ValueError(f"images have {c} channels; featclf takes 1 (grey) or 3 (RGB)")
        out_h, out_w = self.output_size
        if self.resize is not None:
            if min(x.shape[-2:]) != self.resize:
                x = F.resize(x, [self.resize], interpolation=_INTERPOLATIONS[self.interpolation],
                             antialias=True)
            if tuple(x.shape[-2:]) != (out_h, out_w):
                x = F.center_crop(x, [out_h, out_w])
        elif tuple(x.shape[-2:]) != (out_h, out_w):
            x = F.resize(x, [out_h, out_w], interpolation=_INTERPOLATIONS[self.interpolation],
                         antialias=True)
        return x

    def to_float(self, images: torch.Tensor) -> torch.Tensor:
        """Fix the channel count and size, then scale to float32 ``[0, 1]``, without normalising.

        Examples
        --------
        >>> pre = ImagePreprocess(size=2, channels=1, mean=(0.5,), std=(0.5,))
        >>> pre.to_float(torch.full((1, 4, 4), 255, dtype=torch.uint8))
        tensor([[[1., 1.],
                 [1., 1.]]])
        """
        x = self.geometry(images)
        return x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the per-channel mean/std to float images in ``[0, 1]``."""
        mean, std = _channel_stats(self.mean, self.std, x.dtype, x.device)
        return (x - mean) / std

    def finish(self, images: torch.Tensor) -> torch.Tensor:
        """Scale and normalise images that already have the output size (from :meth:`geometry`).

        uint8 images are converted in one pass: ``x * (1 / (255 std)) - mean / std``.

        Parameters
        ----------
        images : torch.Tensor
            ``(..., channels, *output_size)``, uint8 (0-255) or float (``[0, 1]``).

        Returns
        -------
        torch.Tensor
            float32, contiguous.
        """
        if images.dtype != torch.uint8:
            return self.normalize(images.float()).contiguous()
        scale, shift = _affine_stats(self.mean, self.std, images.device)
        return torch.addcmul(shift, images.float(), scale).contiguous()

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return self.finish(self.geometry(images))


@functools.lru_cache(maxsize=64)
def _channel_stats(mean: tuple[float, ...], std: tuple[float, ...], dtype: torch.dtype,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    # Built once per device: creating them per batch on a GPU is a blocking host-to-device
    # copy that would stall the overlap of copies and compute.
    return (torch.tensor(mean, dtype=dtype, device=device).view(-1, 1, 1),
            torch.tensor(std, dtype=dtype, device=device).view(-1, 1, 1))


@functools.lru_cache(maxsize=64)
def _affine_stats(mean: tuple[float, ...], std: tuple[float, ...],
                  device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``(1 / (255 std), -mean / std)``: normalising uint8 pixels as one multiply-add."""
    m = torch.tensor(mean, dtype=torch.float64)
    s = torch.tensor(std, dtype=torch.float64)
    return ((1.0 / (255.0 * s)).float().view(-1, 1, 1).to(device),
            (-m / s).float().view(-1, 1, 1).to(device))


def seed_augmentation(*, degrees: float = 20.0, shift: float = 0.2,
                      horizontal_flip: bool = True) -> v2.Transform:
    """The seed tutorial's Keras ``ImageDataGenerator`` augmentation as torchvision v2 transforms.

    ``rotation_range=20, width_shift_range=0.2, height_shift_range=0.2, horizontal_flip=True``.
    The generator's featurewise centring and std normalisation are the trainer's job: it fits
    the mean and std on the training images (see ``SoftmaxClassifier(augment="seed")``).

    Parameters
    ----------
    degrees : float
        Largest rotation either way.
    shift : float
        Largest shift as a fraction of width/height.
    horizontal_flip : bool
        Flip half the images left-right.

    Returns
    -------
    torchvision.transforms.v2.Transform
        Works on float ``(N, C, H, W)`` batches.

    Examples
    --------
    >>> aug = seed_augmentation()
    >>> aug(torch.rand(4, 1, 28, 28)).shape
    torch.Size([4, 1, 28, 28])
    """
    steps: list[v2.Transform] = [v2.RandomAffine(degrees=degrees, translate=(shift, shift))]
    if horizontal_flip:
        steps.append(v2.RandomHorizontalFlip())
    return v2.Compose(steps)


def as_size(size: int | Sequence[int]) -> tuple[int, int]:
    """``(h, w)`` from an int or a pair.

    Examples
    --------
    >>> as_size(28), as_size((32, 48))
    ((28, 28), (32, 48))
    """
    return (int(size), int(size)) if isinstance(size, int) else (int(size[0]), int(size[1]))


class ScaleToUnit:
    """Preprocessing for a network featclf knows nothing about: uint8 ``0-255`` → float ``[0, 1]``.

    Float images pass unchanged (as float32). This is what ``preprocess="auto"`` means for an
    ``nn.Module`` given without preprocessing information: no resizing, no normalisation.

    Examples
    --------
    >>> ScaleToUnit()(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)).max().item()
    1.0
    """

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            return images.float().div_(255.0)
        return images.float()

    def to_dict(self) -> dict:
        """JSON-able description (used in cache keys)."""
        return {"scale_uint8_to_unit": True}

    def __repr__(self) -> str:
        return "ScaleToUnit()"


class CastToFloat32:
    """``preprocess=None``: images reach the network unchanged except for the dtype (float32).

    Examples
    --------
    >>> CastToFloat32()(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)).max().item()
    255.0
    """

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.float()

    def to_dict(self) -> dict:
        """JSON-able description (used in cache keys)."""
        return {"cast": "float32"}

    def __repr__(self) -> str:
        return "CastToFloat32()"


def describe_preprocess(preprocess: Callable | None) -> dict | str | None:
    """A JSON-able description of a preprocessing callable, for cache keys and reports.

    ``ImagePreprocess`` (and featclf's own callables) describe themselves with ``to_dict()``;
    any other callable is described by its ``repr``: give it a stable, informative repr (a
    dataclass, say) if its cached features should be found again in a later process.

    Examples
    --------
    >>> describe_preprocess(None) is None
    True
    >>> describe_preprocess(ImagePreprocess(28, 1, (0.5,), (0.5,)))["size"]
    [28, 28]
    """
    if preprocess is None:
        return None
    to_dict = getattr(preprocess, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return repr(preprocess)
