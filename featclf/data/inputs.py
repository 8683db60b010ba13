"""Turning what users pass as ``X`` into batches of model-ready tensors.

Every estimator and command in featclf calls :func:`as_image_source` on its input and then
:meth:`ImageSource.iter_batches`, so arrays, tensors, path lists and :class:`ImageFiles` are
validated, decoded, preprocessed and batched the same way everywhere.

Accepted ``X``:

* numeric arrays or tensors ``(n, H, W)``, ``(n, H, W, C)`` or ``(n, C, H, W)`` with ``C`` 1 or 3;
  ``(n, s*s)`` flattened square grey images (scikit-learn's usual layout for MNIST) too;
* a list, tuple, 1-D string array or pandas Series of image paths;
* :class:`~featclf.data.files.ImageFiles` (from :func:`~featclf.data.files.image_files`).

``uint8`` (and integer arrays within 0-255) are pixel values; float arrays in ``(n, H, W)`` or
``(n, H, W, C)`` layout are intensities in ``[0, 1]``; float ``(n, C, H, W)`` arrays are taken as
already preprocessed ("model-ready") and are left alone by ``preprocess="auto"``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator

import numpy as np
import torch

from featclf.data.decode import DEFAULT_MAX_PIXELS
from featclf.data.files import ImageFiles
from featclf.data.sources import Batch, FileSource, ImageSource, Preprocess
from featclf.data.transforms import ImagePreprocess
from featclf.fingerprint import digest_rows


class ArraySource(ImageSource):
    """In-memory images: a ``(n, C, H, W)`` tensor (a view of the user's array when possible)."""

    kind = "array"

    def __init__(self, images: torch.Tensor, *, model_ready: bool) -> None:
        self.images = images
        self.model_ready = model_ready

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def describe(self, index: int) -> str:
        return f"row {index}"

    def digests(self) -> list[str | None]:
        return digest_rows(self.images)  # == digest_array(row) per row, in one pass

    def subset(self, indices) -> ArraySource:
        idx = torch.as_tensor(np.asarray(indices, dtype=np.int64))
        return ArraySource(self.images.index_select(0, idx), model_ready=self.model_ready)

    def iter_batches(self, *, batch_size, preprocess, num_workers=0, on_error="raise",
                     pin_memory=False, max_pixels=DEFAULT_MAX_PIXELS) -> Iterator[Batch]:
        n = len(self)
        for start in range(0, n, batch_size):
            stop = min(start + batch_size, n)
            chunk = self.images[start:stop]
            if preprocess is not None:
                chunk = preprocess(chunk)
            if pin_memory:
                chunk = chunk.pin_memory()
            yield Batch(np.arange(start, stop), chunk)


def _is_path_like(x) -> bool:
    return isinstance(x, str | os.PathLike)


def _array_layout(shape: tuple[int, ...], is_tensor: bool) -> str:
    """Name the layout of a 4-D image array: "nchw" or "nhwc"."""
    c_first, c_last = shape[1] in (1, 3), shape[3] in (1, 3)
    if c_first and not c_last:
        return "nchw"
    if c_last and not c_first:
        return "nhwc"
    if c_first and c_last:  # (n, 3, H, 3): tensors are channels-first by convention
        return "nchw" if is_tensor else "nhwc"
    raise ValueError(f"X has shape {shape}: cannot find a channel axis of size 1 or 3 "
                     "(expected (n, C, H, W) or (n, H, W, C) with C = 1 (grey) or 3 (RGB))")


def _validate_numeric(arr: np.ndarray | torch.Tensor, name: str) -> torch.Tensor:
    """Checks shared by arrays and tensors; returns a CPU tensor of the same shape."""
    if isinstance(arr, np.ndarray):
        if arr.dtype == object:
            raise ValueError(f"{name} is an object array; pass a numeric array of images or a "
                             "list of file paths")
        if arr.dtype.kind == "c":
            raise ValueError(f"{name} has dtype {arr.dtype}: Complex data not supported; images "
                             "must be uint8, integer 0-255 or float")
        if arr.dtype.kind not in "uif":
            raise ValueError(f"{name} has dtype {arr.dtype}; images must be uint8, integer "
                             "0-255 or float")
        if arr.dtype.kind == "f" and arr.dtype != np.float32:
            arr = arr.astype(np.float32)
        tensor = torch.from_numpy(np.ascontiguousarray(arr) if not arr.flags.c_contiguous
                                  and not arr.flags.f_contiguous else arr)
    else:
        tensor = arr.detach()
        if tensor.is_complex() or tensor.dtype == torch.bool:
            raise ValueError(f"{name} has dtype {tensor.dtype}; images must be uint8, integer "
                             "0-255 or float")
        if tensor.is_floating_point() and tensor.dtype != torch.float32:
            tensor = tensor.float()
    if tensor.ndim == 0 or tensor.shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {tuple(tensor.shape)}); pass at least one image")
    if tensor.numel() == 0:
        shape = tuple(tensor.shape)
        raise ValueError(f"{name} has shape {shape}: images of zero size (0 feature(s) "
                         f"(shape={shape}) while a minimum of 1 is required.)")
    if tensor.is_floating_point():
        if not torch.isfinite(tensor).all():
            bad = int((~torch.isfinite(tensor)).reshape(tensor.shape[0], -1).any(1).nonzero()[0])
            raise ValueError(f"{name} contains NaN or infinity (first at row {bad}); images must "
                             "be finite")
    elif tensor.dtype != torch.uint8:
        lo, hi = int(tensor.min()), int(tensor.max())
        if lo < 0 or hi > 255:
            raise ValueError(f"{name} has integer values in [{lo}, {hi}]; integer images must "
                             "lie in 0-255 (or pass floats)")
        tensor = tensor.to(torch.uint8)
    return tensor


def as_image_source(X, *, name: str = "X") -> ImageSource:
    """Validate ``X`` and wrap it as an :class:`ImageSource`.

    Parameters
    ----------
    X : array-like, torch.Tensor, sequence of paths or ImageFiles
        See the module docstring for the accepted layouts.
    name : str
        The argument's name in error messages.

    Returns
    -------
    ImageSource
        :class:`ArraySource` or :class:`FileSource`.

    Raises
    ------
    ValueError
        Empty input, wrong rank or channel count, NaN/inf, object arrays, values outside 0-255
        for integer images.

    Examples
    --------
    >>> src = as_image_source(np.zeros((5, 28, 28), dtype=np.uint8))
    >>> src.kind, len(src), tuple(src.images.shape)
    ('array', 5, (5, 1, 28, 28))
    >>> as_image_source(np.zeros((0, 28, 28)))
    Traceback (most recent call last):
    ValueError: X is empty (shape (0, 28, 28)); pass at least one image
    """
    if isinstance(X, ImageFiles):
        if len(X) == 0:
            raise ValueError(f"{name} is an empty ImageFiles list")
        return FileSource(X.paths)
    if isinstance(X, ImageSource):
        return X
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(X, pd.Series):
        X = X.tolist()
    if pd is not None and isinstance(X, pd.DataFrame):
        X = X.to_numpy()
    if isinstance(X, np.ndarray) and X.dtype.kind in "US":
        X = X.tolist()
    if isinstance(X, list | tuple):
        if len(X) == 0:
            raise ValueError(f"{name} is an empty list; pass at least one image")
        n_paths = sum(_is_path_like(p) for p in X)
        if n_paths == len(X):
            return FileSource(list(X))
        if n_paths:
            bad = next(p for p in X if not _is_path_like(p))
            raise ValueError(f"{name} mixes file paths with {type(bad).__name__} objects; pass "
                             "a list of paths or a numeric array")
        try:
            X = np.asarray(X)
        except ValueError as exc:  # ragged nested lists
            raise ValueError(f"{name} is a list that is not a rectangular array of images: "
                             f"{exc}") from None
    if isinstance(X, np.ndarray) and X.dtype == object:
        raise ValueError(f"{name} is an object array; pass a numeric array of images or a list "
                         "of file paths")
    if type(X).__module__.startswith("scipy.sparse"):
        raise ValueError(f"{name} is a sparse matrix ({type(X).__name__}): sparse input is not "
                         "supported; pass a dense array of images (X.toarray())")
    if not isinstance(X, np.ndarray | torch.Tensor):
        raise ValueError(f"{name} of type {type(X).__name__} is not an image input: pass an "
                         "array (n, H, W[, C]), a tensor, a list of paths or image_files(...)")
    is_tensor = isinstance(X, torch.Tensor)
    tensor = _validate_numeric(X, name)
    shape = tuple(tensor.shape)
    if tensor.ndim == 2:
        side = math.isqrt(shape[1])
        if side * side != shape[1] or side == 0:
            raise ValueError(f"{name} has shape {shape}: a 2-D input must be flattened square "
                             "grey images (n, s*s); otherwise pass (n, H, W) or (n, H, W, C)")
        tensor = tensor.reshape(shape[0], 1, side, side)
        return ArraySource(tensor, model_ready=False)
    if tensor.ndim == 3:
        return ArraySource(tensor.unsqueeze(1), model_ready=False)
    if tensor.ndim == 4:
        layout = _array_layout(shape, is_tensor)
        if layout == "nhwc":
            return ArraySource(tensor.permute(0, 3, 1, 2), model_ready=False)
        return ArraySource(tensor, model_ready=tensor.is_floating_point())
    raise ValueError(f"{name} has {tensor.ndim} dimensions (shape {shape}); expected images "
                     "(n, H, W), (n, H, W, C) or (n, C, H, W)")


def check_labels(y, n: int, *, name: str = "y") -> np.ndarray:
    """Validate labels against the number of inputs.

    Examples
    --------
    >>> check_labels([0, 1], 3)
    Traceback (most recent call last):
    ValueError: X has 3 images but y has 2 labels; they must match
    """
    if y is None:
        raise ValueError(f"{name} is required")
    arr = np.asarray(y)
    if arr.ndim != 1:
        arr = arr.reshape(-1) if arr.ndim == 2 and arr.shape[1] == 1 else arr
    if arr.ndim != 1:
        raise ValueError(f"{name} must be 1-D, got shape {arr.shape}")
    if len(arr) != n:
        raise ValueError(f"X has {n} images but {name} has {len(arr)} labels; they must match")
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinity")
    return arr


def device_batches(source: ImageSource, preprocess: Preprocess | None, *, batch_size: int,
                   num_workers: int = 0, on_error: str = "raise", on_gpu: bool = False,
                   jpeg_draft: int | None = None
                   ) -> tuple[Iterator[Batch], Preprocess | None]:
    """Batches of ``source`` for a network, and what must still run on its device.

    Arrays are batched as they are and preprocessed where the network runs: on a GPU the uint8
    batch crosses the bus (4x fewer bytes than float) and is resized there. Files are decoded
    by ``num_workers`` workers, which also resize and crop in uint8
    (:meth:`ImagePreprocess.geometry <featclf.data.ImagePreprocess.geometry>`); scaling and
    normalising (``finish``) happen where the network runs, so batches cross processes and
    the bus at a quarter of the size.

    Parameters
    ----------
    source : ImageSource
        The images.
    preprocess : callable or None
        What the images need before the network (None: nothing).
    batch_size : int
        Images per batch.
    num_workers : int, default=0
        Decoding processes for files.
    on_error : {"raise", "skip"}, default="raise"
        What an unreadable file does.
    on_gpu : bool, default=False
        Whether the network runs on CUDA (host batches are then pinned).
    jpeg_draft : int or None, default=None
        Smallest side a reduced-scale JPEG decode may give (None: full size).

    Returns
    -------
    batches : iterator of Batch
    finish : callable or None
        To apply to each batch on the device.

    Examples
    --------
    >>> from featclf.data import ImagePreprocess
    >>> pre = ImagePreprocess(8, 1, (0.5,), (0.5,))
    >>> batches, finish = device_batches(as_image_source(np.zeros((3, 16, 16), np.uint8)), pre,
    ...                                  batch_size=2)
    >>> [tuple(b.images.shape) for b in batches], finish is pre
    ([(2, 1, 16, 16), (1, 1, 16, 16)], True)
    """
    if isinstance(source, ArraySource):
        on_host = source.images.device.type == "cpu"  # a CUDA tensor input stays put
        return source.iter_batches(batch_size=batch_size, preprocess=None,
                                   pin_memory=on_gpu and on_host), preprocess
    load, finish = preprocess, None
    if isinstance(preprocess, ImagePreprocess):
        load, finish = preprocess.geometry, preprocess.finish
    return source.iter_batches(batch_size=batch_size, preprocess=load, num_workers=num_workers,
                               on_error=on_error, pin_memory=on_gpu,
                               jpeg_draft=jpeg_draft), finish
