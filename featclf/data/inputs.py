"""Turning what users pass as ``X`` into batches of images.

Every estimator and command in featclf calls :func:`as_image_source` on its input and then
:meth:`ImageSource.iter_batches`, so every kind of input is validated, decoded, preprocessed
and batched the same way everywhere.

What ``X`` means
----------------
One image is one image; anything else is a collection of images, one per row, item or file.

* A path (``str`` or path-like): a folder is its image files (those that
  :func:`~featclf.data.files.image_files` lists, sorted); any other path is one image file.
* A list, tuple, 1-D string array, pandas Series or one-column DataFrame of paths: image files.
* :class:`~featclf.data.files.ImageFiles` (from :func:`~featclf.data.files.image_files`).
* A PIL image: one image. A list of PIL images (or of image arrays of different sizes): those
  images, of any sizes and modes, converted as image files are (EXIF orientation, palette,
  alpha on white, 16-bit; see :mod:`featclf.data.pixels`).
* A ``torch.utils.data.Dataset`` (e.g. torchvision's ``ImageFolder``, with or without
  ``ToTensor()``): its items, each one image (of an ``(image, label)`` pair, the image); each
  item is read when its batch is made.
* Numeric arrays and tensors, by their number of dimensions:

  - 4-D: ``(n, C, H, W)`` or ``(n, H, W, C)``, the channel axis being the one of 1 or 3
    entries; ``(n, 3, H, 3)`` is channels-first for tensors, channels-last for arrays.
  - 3-D: one image ``(H, W, C)`` when the last axis has 1, 3 or 4 entries (a
    ``(64, 64, 3)`` array is one RGB image); otherwise ``n`` grey images ``(n, H, W)``. So a
    single channels-first image ``(C, H, W)`` (one ``ToTensor()`` output) reads as ``C`` grey
    images: pass ``x[None]``.
  - 2-D with ``image_shape=(H, W)`` or ``(H, W, C)``: rows of flattened images,
    scikit-learn's ``(n_samples, n_features)`` layout, each row reshaped to ``image_shape``
    (flattened in that order, channels last; one side may be -1, to be inferred).
  - 2-D without ``image_shape``: ``(n, s*s)`` with ``s >= 2`` is ``n`` flattened square grey
    images (scikit-learn's MNIST layout); a square array of a square side, such as
    ``(64, 64)``, could be one image or ``64`` flattened 8x8 images and is refused (pass
    ``X[None]`` for one image, or ``image_shape``); any other 2-D array ``(H, W)`` is one grey
    image, unless one side is more than 4 times the other (``(50000, 3072)``: refused, pass
    ``image_shape``).
  - 0-D, 1-D and 5-D or more: refused.

  4 channels (RGBA) are refused (drop the alpha channel, or pass PIL images or files, whose
  transparency is composited on white). The values follow :mod:`featclf.data.pixels`:
  ``uint8`` and integers 0-255 are pixels, ``uint16`` is 16-bit data scaled to 8 bit, floats
  are intensities in ``[0, 1]`` rounded to 8-bit pixels, so a float image gets the same
  preprocessing and features as its ``uint8`` twin; other values are refused. With
  ``model_ready=True`` (the estimators' ``preprocess=None``) values pass as they are.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from featclf.data.decode import DEFAULT_MAX_PIXELS
from featclf.data.files import ImageFiles, image_files
from featclf.data.pixels import as_pixels, check_channels, one_image
from featclf.data.sources import Batch, FileSource, ImageSource, InputError, Preprocess
from featclf.data.transforms import ImagePreprocess
from featclf.errors import option
from featclf.fingerprint import digest_array, digest_rows

#: A 2-D array more elongated than this is not read as one image (it is refused as ambiguous).
MAX_ASPECT = 4


class ArraySource(ImageSource):
    """In-memory images: a ``(n, C, H, W)`` tensor (a view of the user's array when possible).

    ``row_width`` is the width of the 2-D array the images were flattened in (None for other
    layouts): scikit-learn's ``n_features_in_``.
    """

    kind = "array"

    def __init__(self, images: torch.Tensor, *, model_ready: bool = False,
                 row_width: int | None = None) -> None:
        self.images = images
        self.model_ready = model_ready
        self.row_width = row_width

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


class _Items(Dataset):
    """Item ``i`` of ``ItemSource`` as ``(i, (C, H, W) image or None, error or None)``:
    failures are values, so the ``on_error`` policy is applied the same way in workers."""

    def __init__(self, source: ItemSource, preprocess: Preprocess | None) -> None:
        self.source = source
        self.preprocess = preprocess

    def __len__(self) -> int:
        return len(self.source)

    def __getitem__(self, i: int):
        try:
            image = self.source.image(i)
        except (OSError, ValueError, RuntimeError, SyntaxError, EOFError) as exc:
            return i, None, str(exc)
        if self.preprocess is not None:
            try:
                image = self.preprocess(image)
            except (ValueError, RuntimeError) as exc:
                return i, None, f"preprocessing failed: {exc}"
        return i, image, None


def _stack_items(items) -> tuple[np.ndarray, torch.Tensor, list[tuple[int, str]]]:
    good = [(i, img) for i, img, err in items if err is None]
    errors = [(i, err) for i, _, err in items if err is not None]
    indices = np.asarray([i for i, _ in good], dtype=np.int64)
    if not good:
        return indices, torch.empty(0), errors
    shapes = {tuple(img.shape) for _, img in good}
    if len(shapes) > 1:
        raise ValueError(f"images in one batch have different shapes {sorted(shapes)}; use a "
                         "preprocess that resizes (preprocess='auto') to batch them")
    return indices, torch.stack([img for _, img in good]), errors


class ItemSource(ImageSource):
    """Images held one by one: PIL images, image arrays of different sizes, or the items of
    a ``torch.utils.data.Dataset`` (read when their batch is made).

    Parameters
    ----------
    items : sequence or torch.utils.data.Dataset
        Each item one image (for a Dataset, an image or an ``(image, label, ...)`` tuple).
    name : str, default="X"
        How messages name the input (``X[3]``).
    model_ready : bool, default=False
        Keep float values as they are (see :mod:`featclf.data.pixels`).
    positions : sequence of int, optional
        The items this source holds, in order (default: all).

    Examples
    --------
    >>> from PIL import Image
    >>> source = ItemSource([Image.new("RGB", (5, 4)), Image.new("L", (7, 7))])
    >>> [tuple(source.image(i).shape) for i in range(len(source))]
    [(3, 4, 5), (1, 7, 7)]
    """

    kind = "images"

    def __init__(self, items, *, name: str = "X", model_ready: bool = False,
                 positions: Sequence[int] | None = None) -> None:
        self.items = items
        self.name = name
        self.model_ready = model_ready
        self.positions = list(range(len(items))) if positions is None else list(positions)

    def __len__(self) -> int:
        return len(self.positions)

    def describe(self, index: int) -> str:
        return f"{self.name}[{self.positions[index]}]"

    def image(self, index: int) -> torch.Tensor:
        """Item ``index`` as a ``(C, H, W)`` tensor (uint8 unless ``model_ready``)."""
        item = self.items[self.positions[index]]
        if isinstance(item, tuple | list):
            item = item[0]  # a Dataset's (image, label) sample
        return one_image(item, self.describe(index), model_ready=self.model_ready)

    def digests(self) -> list[str | None]:
        out: list[str | None] = []
        for i in range(len(self)):
            try:
                out.append(digest_array(self.image(i)))
            except (OSError, ValueError, RuntimeError, SyntaxError, EOFError):
                out.append(None)
        return out

    def subset(self, indices) -> ItemSource:
        return ItemSource(self.items, name=self.name, model_ready=self.model_ready,
                          positions=[self.positions[int(i)] for i in indices])

    def iter_batches(self, *, batch_size, preprocess, num_workers=0, on_error="raise",
                     pin_memory=False, max_pixels=DEFAULT_MAX_PIXELS,
                     jpeg_draft: int | None = None) -> Iterator[Batch]:
        loader = DataLoader(_Items(self, preprocess), batch_size=batch_size, shuffle=False,
                            num_workers=num_workers, collate_fn=_stack_items,
                            pin_memory=pin_memory)
        for indices, images, errors in loader:
            failures = [InputError(i, self.describe(i), reason) for i, reason in errors]
            if failures and on_error == "raise":
                first = failures[0]
                raise ValueError(f"cannot read {first.source}: {first.reason} (pass "
                                 f"{option('on_error', 'skip')} to skip unreadable images)")
            yield Batch(indices, images, failures)


def _is_path_like(x) -> bool:
    return isinstance(x, str | os.PathLike)


def _is_pil(x) -> bool:
    from PIL import Image

    return isinstance(x, Image.Image)


def _array_layout(shape: tuple[int, ...], is_tensor: bool, name: str) -> str:
    """Name the layout of a 4-D image array: "nchw" or "nhwc"."""
    c_first, c_last = shape[1] in (1, 3, 4), shape[3] in (1, 3, 4)
    if c_first and not c_last:
        return "nchw"
    if c_last and not c_first:
        return "nhwc"
    if c_first and c_last:  # (n, 3, H, 3): tensors are channels-first by convention
        return "nchw" if is_tensor else "nhwc"
    raise ValueError(f"{name} has shape {shape}: cannot find a channel axis of size 1 or 3 "
                     "(expected (n, C, H, W) or (n, H, W, C) with C = 1 (grey) or 3 (RGB))")


def check_image_shape(image_shape, name: str = "image_shape") -> tuple[int, ...] | None:
    """Validate an ``image_shape`` argument: ``(H, W)`` or ``(H, W, C)``, one side may be -1.

    Examples
    --------
    >>> check_image_shape([8, -1])
    (8, -1)
    >>> check_image_shape((8, 8, 2))
    Traceback (most recent call last):
    ValueError: image_shape=(8, 8, 2): C must be 1 (grey) or 3 (RGB)
    """
    if image_shape is None:
        return None
    try:
        shape = tuple(int(s) for s in image_shape)
        ints = all(float(s) == int(s) for s in image_shape)
    except (TypeError, ValueError):
        shape, ints = (), False
    if not ints or len(shape) not in (2, 3):
        raise ValueError(f"{name}={image_shape!r} must be (H, W) or (H, W, C)")
    sides = shape[:2]
    if any(s == 0 or s < -1 for s in sides) or sides.count(-1) > 1:
        raise ValueError(f"{name}={shape}: H and W must be positive, one of them may be -1 "
                         "(inferred)")
    if len(shape) == 3 and shape[2] not in (1, 3):
        raise ValueError(f"{name}={shape}: C must be 1 (grey) or 3 (RGB)")
    return shape


def _rows(shape: tuple[int, ...], image_shape: tuple[int, ...], name: str) -> tuple[int, ...]:
    """``image_shape`` with its -1 resolved for rows of ``shape[1]`` values."""
    width = shape[1]
    known = math.prod(s for s in image_shape if s != -1)
    if -1 in image_shape:
        if width % known:
            raise ValueError(f"{name} has shape {shape}: rows of {width} values cannot be images "
                             f"of image_shape={image_shape} ({width} is not a multiple of "
                             f"{known})")
        image_shape = tuple(width // known if s == -1 else s for s in image_shape)
    if math.prod(image_shape) != width:
        raise ValueError(f"{name} has shape {shape}: rows of {width} values are not images of "
                         f"image_shape={image_shape} ({math.prod(image_shape)} values)")
    return image_shape


def _numeric_source(X: np.ndarray | torch.Tensor, name: str, image_shape, model_ready: bool
                    ) -> ArraySource:
    shape = tuple(X.shape)
    is_tensor = isinstance(X, torch.Tensor)
    if isinstance(X, np.ndarray) and X.dtype.kind not in "uif":
        as_pixels(X, name)  # raises the dtype's error
    if len(shape) < 2:
        raise ValueError(f"{name} has {len(shape)} dimensions (shape {shape}); Reshape your data: "
                         f"one row of a flattened image is {name}.reshape(1, -1) (with "
                         "image_shape), and images are (n, H, W), (n, H, W, C), (n, C, H, W), "
                         "(H, W) or (H, W, C)")
    if len(shape) > 4:
        raise ValueError(f"{name} has {len(shape)} dimensions (shape {shape}); expected images "
                         "(n, H, W), (n, H, W, C), (n, C, H, W), one image (H, W) or (H, W, C), "
                         "or rows of flattened images (n, H*W)")
    if shape[0] == 0:
        raise ValueError(f"{name} is empty (shape {shape}); pass at least one image")
    if math.prod(shape) == 0:
        raise ValueError(f"{name} has shape {shape}: images of zero size (0 feature(s) "
                         f"(shape={shape}) while a minimum of 1 is required.)")
    row_width, layout = None, "nchw"
    if len(shape) == 2 and image_shape is not None:
        image_shape = _rows(shape, image_shape, name)
        row_width = shape[1]
        layout = "nhwc" if len(image_shape) == 3 else "nhw"
        target = (shape[0], *image_shape)
    elif len(shape) == 2:
        side = math.isqrt(shape[1])
        if side >= 2 and side * side == shape[1] and shape[0] == shape[1]:
            raise ValueError(
                f"{name} has shape {shape}: one {shape[0]}x{shape[1]} grey image, or "
                f"{shape[0]} flattened {side}x{side} grey images? Pass {name}[None] (shape "
                f"(1, {shape[0]}, {shape[1]})) for one image, or image_shape=({side}, {side}) "
                "for rows of flattened images")
        if side >= 2 and side * side == shape[1]:
            row_width, layout, target = shape[1], "nhw", (shape[0], side, side)
        elif max(shape) > MAX_ASPECT * min(shape):
            # (50000, 3072) is CIFAR's rows, not one image 16 times wider than tall.
            raise ValueError(
                f"{name} has shape {shape}: {shape[0]} rows of flattened images, or one "
                f"{shape[0]}x{shape[1]} grey image? Pass image_shape=(H, W) or (H, W, C) for "
                f"rows of {shape[1]} values (e.g. image_shape=(32, 32, 3) for CIFAR's 3072), "
                f"or {name}[None] for one image")
        else:
            layout, target = "nhw", (1, *shape)  # one grey image (H, W)
    elif len(shape) == 3 and shape[2] in (1, 3, 4):
        layout, target = "nhwc", (1, *shape)  # one image (H, W, C)
    elif len(shape) == 3:
        layout, target = "nhw", shape
    else:
        layout, target = _array_layout(shape, is_tensor, name), shape
    if layout == "nhwc" or layout == "nchw":
        check_channels(target[3] if layout == "nhwc" else target[1], name, shape)
    tensor = as_pixels(X, name, model_ready=model_ready).reshape(target)
    if layout == "nhw":
        tensor = tensor.unsqueeze(1)
    elif layout == "nhwc":
        tensor = tensor.permute(0, 3, 1, 2)
    return ArraySource(tensor, model_ready=model_ready, row_width=row_width)


def _from_sequence(X: list | tuple, name: str, image_shape, model_ready: bool) -> ImageSource:
    if len(X) == 0:
        raise ValueError(f"{name} is an empty list; pass at least one image")
    n_paths = sum(_is_path_like(p) for p in X)
    if n_paths == len(X):
        return FileSource(list(X))
    if n_paths:
        bad = next(p for p in X if not _is_path_like(p))
        raise ValueError(f"{name} mixes file paths with {type(bad).__name__} objects; pass "
                         "a list of paths or a numeric array")
    arrays = all(isinstance(x, np.ndarray | torch.Tensor) for x in X)
    if any(_is_pil(x) for x in X) or (arrays and len({tuple(x.shape) for x in X}) > 1):
        source = ItemSource(list(X), name=name, model_ready=model_ready)
        for i in range(len(source)):  # validated now, before any model work
            source.image(i)
        return source
    if arrays and all(isinstance(x, torch.Tensor) for x in X):
        return _numeric_source(torch.stack(list(X)), name, image_shape, model_ready)
    try:
        stacked = np.asarray([np.asarray(x) for x in X] if arrays else X)
    except ValueError as exc:  # ragged nested lists
        raise ValueError(f"{name} is a list that is not a rectangular array of images: "
                         f"{exc}") from None
    if stacked.dtype == object:
        raise ValueError(f"{name} is a list that is not a rectangular array of images: pass "
                         "numbers, paths, PIL images or image arrays")
    return _numeric_source(stacked, name, image_shape, model_ready)


def _from_object_array(X: np.ndarray, name: str, image_shape, model_ready: bool
                       ) -> ImageSource:
    flat = X.reshape(-1).tolist() if X.ndim == 1 or (X.ndim == 2 and X.shape[1] == 1) else None
    if flat and all(_is_path_like(x) or _is_pil(x) for x in flat):
        return _from_sequence(flat, name, image_shape, model_ready)
    try:
        numbers = X.astype(np.float64)
    except (TypeError, ValueError) as exc:
        raise TypeError(f"{name} is an object array that is not numbers ({exc}); pass a numeric "
                        "array of images, a list of file paths or of PIL images") from None
    inferred = np.array(X.tolist())  # Python ints stay integers (pixels), floats floats
    return _numeric_source(inferred if inferred.dtype.kind in "iuf" else numbers, name,
                           image_shape, model_ready)


def as_image_source(X, *, name: str = "X", image_shape=None,
                    model_ready: bool = False) -> ImageSource:
    """Validate ``X`` and wrap it as an :class:`ImageSource`.

    Parameters
    ----------
    X : images
        See the module docstring for what each kind of ``X`` means.
    name : str, default="X"
        The argument's name in error messages.
    image_shape : (int, int) or (int, int, int), optional
        ``(H, W)`` or ``(H, W, C)`` of the rows of a 2-D array (one side may be -1, inferred
        from the row width); other inputs carry their own shape and ignore it.
    model_ready : bool, default=False
        Values pass as they are, not brought to 8-bit pixels (``preprocess=None``).

    Returns
    -------
    ImageSource
        :class:`ArraySource`, :class:`ItemSource` or :class:`FileSource`.

    Raises
    ------
    ValueError
        Empty input, wrong rank or channel count, an ambiguous 2-D array, NaN/inf, object
        arrays, values that are not an image's (see :mod:`featclf.data.pixels`).

    Examples
    --------
    >>> src = as_image_source(np.zeros((5, 28, 28), dtype=np.uint8))
    >>> src.kind, len(src), tuple(src.images.shape)
    ('array', 5, (5, 1, 28, 28))
    >>> tuple(as_image_source(np.zeros((64, 64, 3), dtype=np.uint8)).images.shape)
    (1, 3, 64, 64)
    >>> tuple(as_image_source(np.zeros((4, 60)), image_shape=(5, -1, 3)).images.shape)
    (4, 3, 5, 4)
    >>> as_image_source(np.zeros((0, 28, 28)))
    Traceback (most recent call last):
    ValueError: X is empty (shape (0, 28, 28)); pass at least one image
    """
    image_shape = check_image_shape(image_shape)
    if isinstance(X, ImageSource):
        return X
    if isinstance(X, ImageFiles):
        if len(X) == 0:
            raise ValueError(f"{name} is an empty ImageFiles list")
        return FileSource(X.paths)
    if _is_path_like(X):
        if os.path.isdir(X):
            return FileSource(image_files(X, labels="none").paths)
        return FileSource([X])
    if _is_pil(X):
        return ItemSource([X], name=name, model_ready=model_ready)
    if isinstance(X, Dataset) and not isinstance(X, torch.Tensor):
        if len(X) == 0:
            raise ValueError(f"{name} is an empty Dataset; pass at least one image")
        return ItemSource(X, name=name, model_ready=model_ready)
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(X, pd.DataFrame):
        numeric = [pd.api.types.is_numeric_dtype(dtype) for dtype in X.dtypes]
        if X.shape[1] == 1 and not numeric[0]:
            X = X.iloc[:, 0]  # one column of paths (or PIL images)
        elif not all(numeric):
            raise ValueError(f"{name} is a DataFrame with columns {list(X.columns)}: pass its "
                             f"column of image paths ({name}['path']) or numeric pixels")
        else:
            X = X.to_numpy()
    if pd is not None and isinstance(X, pd.Series):
        X = X.to_numpy() if pd.api.types.is_numeric_dtype(X.dtype) else X.tolist()
    if isinstance(X, np.ndarray) and X.dtype.kind in "US":
        X = X.tolist()
    if isinstance(X, np.ndarray) and X.dtype == object:
        return _from_object_array(X, name, image_shape, model_ready)
    if isinstance(X, list | tuple):
        return _from_sequence(X, name, image_shape, model_ready)
    if type(X).__module__.startswith("scipy.sparse"):
        raise ValueError(f"{name} is a sparse matrix ({type(X).__name__}): sparse input is not "
                         "supported; pass a dense array of images (X.toarray())")
    if not isinstance(X, np.ndarray | torch.Tensor) and hasattr(X, "__array__"):
        X = np.asarray(X)  # array-likes
    if not isinstance(X, np.ndarray | torch.Tensor):
        raise ValueError(f"{name} of type {type(X).__name__} is not an image input: pass an "
                         "array (n, H, W[, C]), a tensor, a path, a list of paths or PIL "
                         "images, a Dataset or image_files(...)")
    return _numeric_source(X, name, image_shape, model_ready)


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
