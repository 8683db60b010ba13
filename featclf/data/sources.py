"""What an image input is once validated: a sized sequence of images that yields batches.

:class:`ImageSource` is the interface every estimator and job reads images through;
:class:`FileSource` is image files on disk, each read once per pass
(:func:`~featclf.data.decode.read_image_file`, regular files only) and decoded from those bytes
(:func:`~featclf.data.decode.decode_image_bytes`), in DataLoader workers when asked; within a
job, those bytes must be the ones its store lookup hashed. In-memory arrays are
:class:`~featclf.data.inputs.ArraySource`, made by :func:`~featclf.data.inputs.as_image_source`.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from featclf.data.decode import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    decode_image_bytes,
    read_image_file,
)
from featclf.errors import option
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

    def snapshot(self) -> ImageSource:
        """This source with its content digests taken now, for one job.

        The job looks its inputs up in the store by these digests, and the pixels it computes
        must be those of the same content. In-memory sources return themselves; a
        :class:`FileSource` returns a copy that has just hashed its files.
        """
        return self

    @abc.abstractmethod
    def iter_batches(self, *, batch_size: int, preprocess: Preprocess | None,
                     num_workers: int = 0, on_error: str = "raise", pin_memory: bool = False,
                     max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Iterator[Batch]:
        """Yield :class:`Batch` objects in order; memory stays bounded by ``batch_size``."""


#: Why a file whose bytes no longer match the digest its store lookup used is not computed.
CHANGED_WHILE_READ = ("changed while being read (its bytes differ from those hashed for the "
                      "feature store lookup); run again")


class _DecodeDataset(Dataset):
    """Read, decode and preprocess one file; failures come back as values, not exceptions, so
    the main process applies the ``on_error`` policy the same way with or without workers.

    With ``digests`` (what the store lookup hashed), each file is read once and those same
    bytes are hashed and decoded: a file rewritten since it was hashed is reported as an error
    instead of giving pixels that would be filed under the digest of other bytes.
    """

    def __init__(self, paths: list[str], preprocess: Preprocess | None,
                 max_pixels: int | None, draft: int | None = None,
                 digests: list[str | None] | None = None) -> None:
        self.paths = paths
        self.preprocess = preprocess
        self.max_pixels = max_pixels
        self.draft = draft
        self.digests = digests

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        try:
            data = read_image_file(path)
            if self.digests is not None and digest_bytes(data) != self.digests[index]:
                return index, None, CHANGED_WHILE_READ
            pixels = decode_image_bytes(data, name=path, max_pixels=self.max_pixels,
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


class _Collate:
    """Stack a batch's images and set its failures apart (a class so that workers pickle it)."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __call__(self, items):
        good = [(i, img) for i, img, err in items if err is None]
        errors = [(i, err) for i, _, err in items if err is not None]
        indices = np.asarray([i for i, _ in good], dtype=np.int64)
        if good:
            shapes: dict[tuple, int] = {}
            for i, img in good:
                shapes.setdefault(tuple(img.shape), i)
            if len(shapes) > 1:
                seen = ", ".join(f"{self.paths[i]!r} is {list(shape)}"
                                 for shape, i in shapes.items())
                raise ValueError(f"images in one batch have different shapes ({seen}); use a "
                                 "preprocess that resizes (preprocess='auto') to batch them")
            images = torch.stack([img for _, img in good])
        else:
            images = torch.empty(0)
        return indices, images, errors


class FileSource(ImageSource):
    """Image files on disk, decoded by :func:`~featclf.data.decode.decode_image_bytes`.

    Parameters
    ----------
    paths : sequence of str or path-like
        The files.
    digests : list of str or None, optional
        Their content digests, when already known (:meth:`subset` passes them on).

    Notes
    -----
    :meth:`digests` reads every file once and keeps the result; from then on
    :meth:`iter_batches` checks each file's bytes against it, so the pixels it yields are
    always those of the bytes that were hashed (a file changed in between is reported as
    unreadable). Named pipes, sockets and devices are never opened.
    """

    kind = "files"

    def __init__(self, paths: Sequence[str | os.PathLike],
                 digests: Sequence[str | None] | None = None) -> None:
        self.paths = [os.fspath(p) for p in paths]
        if digests is not None and len(digests) != len(self.paths):
            raise ValueError(f"{len(digests)} digests for {len(self.paths)} paths")
        self._digests = None if digests is None else list(digests)

    def __len__(self) -> int:
        return len(self.paths)

    def describe(self, index: int) -> str:
        return self.paths[index]

    def digests(self) -> list[str | None]:
        """Content digest of every file (None for those that cannot be read), computed once.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.png"; _ = p.write_bytes(b"x")
        >>> source = FileSource([p, p.with_name("gone.png")])
        >>> source.digests() == [digest_bytes(b"x"), None]
        True
        >>> _ = p.write_bytes(b"y"); source.digests()[0] == digest_bytes(b"x")  # kept
        True
        """
        if self._digests is None:
            out: list[str | None] = []
            for p in self.paths:
                try:
                    out.append(digest_bytes(read_image_file(p)))
                except ImageDecodeError:
                    out.append(None)
            self._digests = out
        return list(self._digests)

    def snapshot(self) -> FileSource:
        """A copy that hashes every file now (a job's digests, whatever this one remembers).

        Examples
        --------
        >>> import tempfile, pathlib
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.png"; _ = p.write_bytes(b"x")
        >>> source = FileSource([p]); _ = source.digests(); _ = p.write_bytes(b"y")
        >>> source.snapshot().digests() == [digest_bytes(b"y")]
        True
        """
        fresh = FileSource(self.paths)
        fresh.digests()
        return fresh

    def subset(self, indices) -> FileSource:
        picks = [int(i) for i in indices]
        return FileSource([self.paths[i] for i in picks],
                          None if self._digests is None else [self._digests[i] for i in picks])

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
        preprocess and batch the files, in ``num_workers`` DataLoader workers.

        Once :meth:`digests` has run, a file whose bytes no longer match its digest is an
        unreadable input ("changed while being read"), like a damaged file.
        """
        check_on_error(on_error)
        dataset = _DecodeDataset(self.paths, preprocess, max_pixels, jpeg_draft,
                                 digests=self._digests)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                            num_workers=num_workers, collate_fn=_Collate(self.paths),
                            pin_memory=pin_memory, persistent_workers=False)
        for indices, images, errors in loader:
            failures = [InputError(i, self.paths[i], reason) for i, reason in errors]
            if failures and on_error == "raise":
                first = failures[0]
                raise ImageDecodeError(first.source, first.reason, hint=skip_hint())
            yield Batch(indices, images, failures)


def skip_hint() -> str:
    """The way forward for an unreadable input, as the current interface spells it.

    Examples
    --------
    >>> skip_hint()
    "pass on_error='skip' to skip unreadable images and list them instead"
    """
    return f"pass {option('on_error', 'skip')} to skip unreadable images and list them instead"
