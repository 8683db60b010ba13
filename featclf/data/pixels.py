"""What the numbers of an in-memory image mean, and how one image is laid out.

Every in-memory input (arrays, tensors, PIL images, the items of a ``torch.utils.data.Dataset``)
goes through :func:`as_pixels`, so that the same picture means the same pixels whichever way it
arrives:

* ``uint8``: pixels 0-255.
* other integer dtypes (``int8`` to ``int64``, ``uint32``, ``uint64``): pixels, when every value
  lies in 0-255; otherwise refused (a hint says ``uint16`` when the values fit 16 bits).
* ``uint16``: 16-bit image data (what a 16-bit PNG or TIFF holds), scaled to 8 bit as
  ``round(v * 255 / 65535)``, as :func:`featclf.data.decode.decode_image` scales 16-bit files.
* float: intensities in ``[0, 1]`` (what torchvision's ``ToTensor()`` gives), rounded to 8-bit
  pixels ``round(255 x)``, so that a float image gets exactly the preprocessing, and the
  features, of its ``uint8`` twin. Values outside ``[0, 1]`` (0-255 floats, normalised
  tensors) are refused with what to do; NaN and infinity are refused.
* ``bool``, complex: refused.

With ``model_ready=True`` (the estimators' ``preprocess=None``, or a preprocessing callable of
the user's own) values are kept as they are: ``uint8`` stays ``uint8``, other numbers become
float32, and floats are checked only for being finite.

PIL images are converted as image files are (:func:`featclf.data.decode.decode_image`): EXIF
orientation applied, palette/alpha/CMYK/16-bit modes to grey or RGB, transparency on white.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

__all__ = ["as_pixels", "check_channels", "image_layout", "one_image", "pil_pixels"]

_EPS = 1e-6  # float rounding slack at the ends of [0, 1]


def _dtype_error(name: str, dtype) -> ValueError:
    what = "Complex data not supported; " if "complex" in str(dtype) else ""
    return ValueError(f"{name} has dtype {dtype}: {what}images must be uint8, integers 0-255, "
                      "uint16 (16-bit images) or floats in [0, 1]")


def as_pixels(x: np.ndarray | torch.Tensor, name: str = "X", *,
              model_ready: bool = False) -> torch.Tensor:
    """Validate an image array's values and return them as a tensor of the same shape.

    Parameters
    ----------
    x : numpy.ndarray or torch.Tensor
        Numeric image data of any shape.
    name : str, default="X"
        The argument's name in error messages.
    model_ready : bool, default=False
        Keep the values (see the module docstring) instead of bringing them to 8-bit pixels.

    Returns
    -------
    torch.Tensor
        ``uint8`` (a view of ``x`` when it already is ``uint8``), or float32 when
        ``model_ready`` and ``x`` is not ``uint8``.

    Raises
    ------
    ValueError
        A dtype that is not an image's, NaN/inf, floats outside ``[0, 1]``, integers outside
        0-255 (``uint16`` excepted).

    Examples
    --------
    >>> as_pixels(np.array([0.0, 0.5, 1.0])).tolist()
    [0, 128, 255]
    >>> as_pixels(np.array([0, 65535], dtype=np.uint16)).tolist()
    [0, 255]
    >>> as_pixels(np.array([0.0, 255.0]))
    Traceback (most recent call last):
    ValueError: X has float values in [0, 255]: float images must be intensities in [0, 1] (as \
ToTensor() gives); divide 0-255 values by 255 (or pass them as uint8), or pass preprocess=None \
if the images are already preprocessed for the network
    """
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise ValueError(f"{name} is an object array; pass a numeric array of images or a "
                             "list of file paths")
        if x.dtype.kind not in "uif":
            raise _dtype_error(name, x.dtype)
        if x.dtype.kind == "f" and x.dtype != np.float32:
            x = x.astype(np.float32)
        elif x.dtype in (np.uint32, np.uint64):  # torch has no unsigned 32/64-bit arithmetic
            x = np.minimum(x, np.uint64(2**62)).astype(np.int64)  # 0-255 only, anyway
        if not (x.flags.c_contiguous or x.flags.f_contiguous):
            x = np.ascontiguousarray(x)
        with warnings.catch_warnings():  # a read-only array (a memmap) is only ever read
            warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
            tensor = torch.from_numpy(x)
    else:
        tensor = x.detach()
        if tensor.is_complex() or tensor.dtype == torch.bool:
            raise _dtype_error(name, tensor.dtype)
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            tensor = tensor.float()
    if tensor.numel() == 0:
        return tensor if model_ready or tensor.dtype == torch.uint8 else \
            tensor.to(torch.uint8)
    if tensor.is_floating_point():
        finite = torch.isfinite(tensor)
        if not finite.all():
            flat = (~finite).reshape(tensor.shape[0], -1).any(1) if tensor.ndim > 1 else ~finite
            bad = int(flat.nonzero()[0])
            raise ValueError(f"{name} contains NaN or infinity (first at row {bad}); images must "
                             "be finite")
        if model_ready:
            return tensor
        lo, hi = float(tensor.min()), float(tensor.max())
        if lo < -_EPS or hi > 1 + _EPS:
            raise ValueError(
                f"{name} has float values in [{lo:.4g}, {hi:.4g}]: float images must be "
                "intensities in [0, 1] (as ToTensor() gives); divide 0-255 values by 255 (or "
                "pass them as uint8), or pass preprocess=None if the images are already "
                "preprocessed for the network")
        return tensor.mul(255.0).round_().clamp_(0, 255).to(torch.uint8)
    if tensor.dtype == torch.uint8:
        return tensor
    if model_ready:
        return tensor.float()
    if tensor.dtype == torch.uint16:
        return _from_16_bit(tensor)
    if tensor.dtype in (torch.uint32, torch.uint64):  # min/max need a signed type
        tensor = tensor.to(torch.int64)
    lo, hi = int(tensor.min()), int(tensor.max())
    if lo < 0 or hi > 255:
        hint = (" (16-bit images: pass them as uint16, which is scaled to 8 bit)"
                if lo >= 0 and hi <= 65535 else "")
        raise ValueError(f"{name} has integer values in [{lo}, {hi}]; integer images must lie "
                         f"in 0-255 (or pass floats in [0, 1]){hint}")
    return tensor.to(torch.uint8)


def _from_16_bit(tensor: torch.Tensor) -> torch.Tensor:
    # The same arithmetic as decode's 16-bit files: v * 255 / 65535, rounded half to even.
    return tensor.to(torch.float64).mul_(255.0 / 65535.0).round_().to(torch.uint8)


def image_layout(shape: tuple[int, ...], *, is_tensor: bool) -> str:
    """Name the layout of one image's 3-D array: ``"chw"`` or ``"hwc"``.

    A channel axis has 1 (grey), 3 (RGB) or 4 (RGBA) entries. When both ends could be one
    (``(3, H, 3)``), tensors are channels-first (torch's convention) and arrays channels-last
    (numpy's and PIL's).

    Examples
    --------
    >>> image_layout((28, 28, 3), is_tensor=False), image_layout((3, 28, 28), is_tensor=True)
    ('hwc', 'chw')
    """
    first, last = shape[0] in (1, 3, 4), shape[-1] in (1, 3, 4)
    if first and not last:
        return "chw"
    if last and not first:
        return "hwc"
    if first and last:
        return "chw" if is_tensor else "hwc"
    raise ValueError(f"an image of shape {shape} has no channel axis of 1, 3 or 4 entries "
                     "(expected (H, W), (H, W, C) or (C, H, W))")


def check_channels(c: int, name: str, shape: tuple[int, ...]) -> None:
    """Refuse channel counts other than 1 and 3, saying what to do with an alpha channel."""
    if c == 4:
        raise ValueError(f"{name} has shape {shape}: 4 channels (RGBA?); featclf takes grey or "
                         "RGB images: drop the alpha channel (X[..., :3] for channels-last) or "
                         "pass PIL images or files, whose transparency is composited on white")
    if c not in (1, 3):
        raise ValueError(f"{name} has shape {shape}: {c} channels; images have 1 (grey) or 3 "
                         "(RGB)")


def one_image(x, name: str, *, model_ready: bool = False) -> torch.Tensor:
    """One image (a PIL image, an array or tensor ``(H, W)``, ``(H, W, C)`` or ``(C, H, W)``)
    as a ``(C, H, W)`` tensor (:func:`as_pixels` values).

    Examples
    --------
    >>> one_image(np.zeros((5, 7, 3), np.uint8), "X[0]").shape
    torch.Size([3, 5, 7])
    >>> one_image(torch.rand(1, 5, 7), "X[0]").dtype
    torch.uint8
    """
    from PIL import Image

    if isinstance(x, Image.Image):
        return torch.from_numpy(pil_pixels(x)).permute(2, 0, 1)
    if not isinstance(x, np.ndarray | torch.Tensor):
        try:
            x = np.asarray(x)
        except (TypeError, ValueError):
            raise ValueError(f"{name} of type {type(x).__name__} is not an image") from None
    pixels = as_pixels(x, name, model_ready=model_ready)
    shape = tuple(pixels.shape)
    if pixels.ndim == 2:
        return pixels.unsqueeze(0)
    if pixels.ndim != 3 or pixels.numel() == 0:
        raise ValueError(f"{name} has shape {shape}: one image is (H, W), (H, W, C) or "
                         "(C, H, W)")
    if image_layout(shape, is_tensor=isinstance(x, torch.Tensor)) == "hwc":
        pixels = pixels.permute(2, 0, 1)
    check_channels(int(pixels.shape[0]), name, shape)
    return pixels


def pil_pixels(img) -> np.ndarray:
    """A PIL image as the ``(H, W, C)`` uint8 array its file would decode to (C 1 or 3).

    Examples
    --------
    >>> from PIL import Image
    >>> pil_pixels(Image.new("RGBA", (4, 2), (255, 0, 0, 0))).shape  # transparent: on white
    (2, 4, 3)
    """
    from PIL import ImageOps

    from featclf.data.decode import normalise_mode

    img = normalise_mode(ImageOps.exif_transpose(img))
    arr = np.array(img, dtype=np.uint8)
    return arr[:, :, None] if arr.ndim == 2 else arr
