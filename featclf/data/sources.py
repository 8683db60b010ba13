"""What an image input is once validated: a sized sequence of images that yields batches.

:class:`ImageSource` is the interface every estimator and job reads images through;
:class:`FileSource` is image files on disk, decoded (in DataLoader workers when asked) by
:func:`~featclf.data.decode.decode_image`. In-memory arrays are
:class:`~featclf.data.inputs.ArraySource`, made by :func:`~featclf.data.inputs.as_image_source`.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from featclf.data.decode import DEFAULT_MAX_PIXELS, ImageDecodeError, decode_image
from featclf.fingerprint import digest_bytes

ON_ERROR = ("raise", "skip")
Preprocess = Callable[[torch.Tensor], torch.Tensor]


class SkippedImagesWarning(UserWarning):
    """Some inputs could not be read and were left out (``on_error="skip"``)."""


@dataclass(frozen=True)
class InputError:
    """One input that could not be used: its position, what it was, and why."""

    index: int
    source: str
    reason: str


@dataclass
class Batch:
    """A batch of images ready for a model, and the inputs of this batch that failed.

    Attributes
    ----------
    indices : numpy.ndarray
        Positions (in the source) of the rows of ``images``.
    images : torch.Tensor
        ``(len(indices), C, H, W)`` tensor.
    errors : list of InputError
        Inputs in this stretch of the source that were skipped.
    """

    indices: np.ndarray
    images: torch.Tensor
    errors: list[InputError] = field(default_factory=list)


def check_on_error(on_error: str) -> str:
    """Validate an ``on_error`` argument.

    Examples
    --------
    >>> check_on_error("skip")
    'skip'
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error={on_error!r} is not one of {ON_ERROR}")
    return on_error


class ImageSource(abc.ABC):
    """Base class of the validated inputs: a sized sequence of images."""

    kind: str = "abstract"
    model_ready: bool = False

    @abc.abstractmethod
    def __len__(self) -> int:
        """Number of images."""

    @abc.abstractmethod
    def describe(self, index: int) -> str:
        """How to name item ``index`` in messages and error manifests."""

    @abc.abstractmethod
    def digests(self) -> list[str | None]:
        """Content digest of every item (None for files that cannot be read)."""

    @abc.abstractmethod
    def subset(self, indices: Sequence[int] | np.ndarray) -> ImageSource:
        """The items at ``indices``, in that order."""

    @abc.abstractmethod
    def iter_batches(self, *, batch_size: int, preprocess: Preprocess | None,
                     num_workers: int = 0, on_error: str = "raise", pin_memory: bool = False,
                     max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Iterator[Batch]:
        """Yield :class:`Batch` objects in order; memory stays bounded by ``batch_size``."""


class _DecodeDataset(Dataset):
    """Decode + preprocess one file; failures come back as values, not exceptions, so the
    main process applies the ``on_error`` policy the same way with or without workers."""

    def __init__(self, paths: list[str], preprocess: Preprocess | None,
                 max_pixels: int | None, draft: int | None = None) -> None:
        self.paths = paths
        self.preprocess = preprocess
        self.max_pixels = max_pixels
        self.draft = draft

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        try:
            pixels = decode_image(self.paths[index], max_pixels=self.max_pixels,
                                  draft=self.draft)
            image = torch.from_numpy(pixels).permute(2, 0, 1)
            if self.preprocess is not None:
                image = self.preprocess(image)
            return index, image, None
        except ImageDecodeError as exc:
            return index, None, exc.reason
        except (ValueError, RuntimeError) as exc:  # preprocessing refused this image
            return index, None, f"preprocessing failed: {exc}"


def _discard_pixels(image: torch.Tensor) -> torch.Tensor:
    # Module-level so that DataLoader workers can pickle it.
    return image.new_empty(0)


def _collate(items):
    good = [(i, img) for i, img, err in items if err is None]
    errors = [(i, err) for i, _, err in items if err is not None]
    indices = np.asarray([i for i, _ in good], dtype=np.int64)
    if good:
        shapes = {tuple(img.shape) for _, img in good}
        if len(shapes) > 1:
            raise ValueError(f"images in one batch have different shapes {sorted(shapes)}; "
                             "use a preprocess that resizes (preprocess='auto') to batch them")
        images = torch.stack([img for _, img in good])
    else:
        images = torch.empty(0)
    return indices, images, errors


class FileSource(ImageSource):
    """Image files on disk, decoded by :func:`~featclf.data.decode.decode_image`."""

    kind = "files"

    def __init__(self, paths: Sequence[str]) -> None:
        self.paths = [os.fspath(p) for p in paths]

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, index: int) -> str:
        return self.paths[index]

    def digests(self) -> list[str | None]:
        out: list[str | None] = []
        for p in self.paths:
            try:
                out.append(digest_bytes(Path(p).read_bytes()))
            except OSError:
                out.append(None)
        return out

    def subset(self, indices) -> FileSource:
        return FileSource([self.paths[int(i)] for i in indices])

    def unreadable(self, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                   num_workers: int = 0) -> list[InputError]:
        """Decode every file once and list those that fail (for policies that must know
        before the work starts, such as training on the readable files only)."""
        batches = self.iter_batches(batch_size=64, preprocess=_discard_pixels,
                                    num_workers=num_workers, on_error="skip",
                                    max_pixels=max_pixels)
        return [error for batch in batches for error in batch.errors]

    def iter_batches(self, *, batch_size, preprocess, num_workers=0, on_error="raise",
                     pin_memory=False, max_pixels=DEFAULT_MAX_PIXELS,
                     jpeg_draft: int | None = None) -> Iterator[Batch]:
        """Decode (JPEGs at reduced scale down to ``jpeg_draft`` pixels, when given),
        preprocess and batch the files, in ``num_workers`` DataLoader workers."""
        check_on_error(on_error)
        loader = DataLoader(_DecodeDataset(self.paths, preprocess, max_pixels, jpeg_draft),
                            batch_size=batch_size, shuffle=False, num_workers=num_workers,
                            collate_fn=_collate, pin_memory=pin_memory,
                            persistent_workers=False)
        for indices, images, errors in loader:
            failures = [InputError(i, self.paths[i], reason) for i, reason in errors]
            if failures and on_error == "raise":
                first = failures[0]
                raise ImageDecodeError(first.source, first.reason + " (pass on_error='skip' to "
                                       "skip unreadable images and list them instead)")
            yield Batch(indices, images, failures)
