"""What an image input is once validated: a sized sequence of images that yields batches.

:class:`ImageSource` is the interface every estimator and job reads images through;
:class:`FileSource` is image files on disk, each read once per pass
(:func:`~featclf.data.decode.read_image_file`, regular files only) and decoded from those bytes
(:func:`~featclf.data.decode.decode_image_bytes`), in DataLoader workers when asked; in a job
with a feature store the same bytes are hashed there too (:meth:`FileSource.reading`), so a
vector is always stored under the digest of the bytes it was computed from. In-memory arrays are
:class:`~featclf.data.inputs.ArraySource`, made by :func:`~featclf.data.inputs.as_image_source`.
"""

from __future__ import annotations

import abc
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from featclf.data.decode import (
    DEFAULT_MAX_PIXELS,
    ImageDecodeError,
    decode_image_bytes,
    read_image_file,
    read_image_file_stat,
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
        :class:`FileSource` returns a copy that has just hashed its files (the extraction
        job does not use it for files: it looks them up by stat and hashes the bytes it
        decodes, see :meth:`FileSource.reading`).
        """
        return self

    @abc.abstractmethod
    def iter_batches(self, *, batch_size: int, preprocess: Preprocess | None,
                     num_workers: int = 0, on_error: str = "raise", pin_memory: bool = False,
                     max_pixels: int | None = DEFAULT_MAX_PIXELS) -> Iterator[Batch]:
        """Yield :class:`Batch` objects in order; memory stays bounded by ``batch_size``."""


#: Why a file whose bytes no longer match the digest taken of it before
#: (:meth:`FileSource.digests`) is not computed.
CHANGED_WHILE_READ = ("changed while being read (its bytes differ from those hashed before "
                      "the read); run again")


class FileRead(NamedTuple):
    """What reading one file said about its content: the digest of the bytes that were
    decoded, the version of the file they are (:func:`~featclf.data.decode.stat_key`) and the
    clock before the read (``time.time_ns()``), for the store's stat record."""

    index: int
    digest: str
    stat: tuple[int, int, int, int, int]
    read_ns: int


#: ``admit(reads)``: one bool per decoded file of a batch, False to leave it out of the batch.
Admit = Callable[[list[FileRead]], Sequence[bool]]


class _DecodeDataset(Dataset):
    """Read, decode and preprocess one file; failures come back as values, not exceptions, so
    the main process applies the ``on_error`` policy the same way with or without workers.

    With ``hash_bytes``, the bytes read are hashed too (in the worker, beside the decode) and
    the item carries a :class:`FileRead`; with ``digests`` (known beforehand), a file whose
    bytes hash to something else is reported as an error instead of giving pixels that would
    be filed under the digest of other bytes.
    """

    def __init__(self, paths: list[str], preprocess: Preprocess | None,
                 max_pixels: int | None, draft: int | None = None,
                 digests: list[str | None] | None = None, hash_bytes: bool = False) -> None:
        self.paths = paths
        self.preprocess = preprocess
        self.max_pixels = max_pixels
        self.draft = draft
        self.digests = digests
        self.hash_bytes = hash_bytes or digests is not None

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int):
        path = self.paths[index]
        read = None
        try:
            if self.hash_bytes:
                got = read_image_file_stat(path)
                data = got.data
                read = FileRead(index, digest_bytes(data), got.stat, got.read_ns)
                if self.digests is not None and read.digest != self.digests[index]:
                    return index, None, CHANGED_WHILE_READ, None
            else:
                data = read_image_file(path)
            pixels = decode_image_bytes(data, name=path, max_pixels=self.max_pixels,
                                        draft=self.draft)
            image = torch.from_numpy(pixels).permute(2, 0, 1)
            if self.preprocess is not None:
                image = self.preprocess(image)
            return index, image, None, read
        except ImageDecodeError as exc:
            return index, None, exc.reason, None
        except (ValueError, RuntimeError) as exc:  # preprocessing refused this image
            return index, None, f"preprocessing failed: {exc}", None


def _discard_pixels(image: torch.Tensor) -> torch.Tensor:
    # Module-level so that DataLoader workers can pickle it.
    return image.new_empty(0)


class _Collate:
    """Stack a batch's images and set its failures apart (a class so that workers pickle it)."""

    def __init__(self, paths: list[str]) -> None:
        self.paths = paths

    def __call__(self, items):
        good = [(i, img) for i, img, err, _ in items if err is None]
        errors = [(i, err) for i, _, err, _ in items if err is not None]
        reads = [read for _, _, err, read in items if err is None and read is not None]
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
        return indices, images, errors, reads


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
    Each pass reads every file once. With a feature store, the extraction job
    (:func:`~featclf.extract.cached.cached_features`) does not hash the files up front: it
    looks them up by ``os.stat`` in the store's stat record (:mod:`featclf.store._stat`)
    and reads only those it must compute, through :meth:`reading`, which hashes the very
    bytes it decodes (in the DataLoader workers) and lets the job leave out the files whose
    content turns out to be stored already. :meth:`digests` (every file hashed now, once) is
    for callers that want all digests; once it has run, :meth:`iter_batches` checks each
    file's bytes against it, so the pixels it yields are always those of the bytes that were
    hashed (a file changed in between is reported as unreadable). Named pipes, sockets and
    devices are never opened.
    """

    kind = "files"

    def __init__(self, paths: Sequence[str | os.PathLike],
                 digests: Sequence[str | None] | None = None) -> None:
        self.paths = [os.fspath(p) for p in paths]
        if digests is not None and len(digests) != len(self.paths):
            raise ValueError(f"{len(digests)} digests for {len(self.paths)} paths")
        self._digests = None if digests is None else list(digests)
        self._admit: Admit | None = None

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

    def reading(self, admit: Admit) -> FileSource:
        """A copy whose passes hash each file's bytes as they are decoded and ask ``admit``.

        For every batch, in the main process and before the batch is handed on,
        ``admit(reads)`` gets one :class:`FileRead` per decoded file (its position, the
        digest of the bytes its pixels come from, the file version those bytes are) and
        returns one bool per file: False leaves the file out of the batch (its vector is
        found elsewhere, e.g. in the store). Hashing happens where decoding does (the
        DataLoader workers), from the same bytes: one read per file, and a digest always
        names the content its pixels were decoded from. The hook is not carried by
        :meth:`subset`.

        Examples
        --------
        >>> import tempfile, pathlib
        >>> from PIL import Image
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for name, grey in [("a.png", 0), ("b.png", 9), ("c.png", 0)]:
        ...     Image.new("L", (2, 2), grey).save(d / name)
        >>> seen = set()
        >>> def first_of_each_content(reads):
        ...     keep = [r.digest not in seen and not seen.add(r.digest) for r in reads]
        ...     return keep
        >>> source = FileSource([d / "a.png", d / "b.png", d / "c.png"])
        >>> [b.indices.tolist() for b in source.reading(first_of_each_content).iter_batches(
        ...     batch_size=3, preprocess=None)]
        [[0, 1]]
        """
        copy = FileSource(self.paths, self._digests)
        copy._admit = admit
        return copy

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
        unreadable input ("changed while being read"), like a damaged file; so is a file that
        kept changing while it was read (:meth:`reading`).
        """
        check_on_error(on_error)
        admit = self._admit
        dataset = _DecodeDataset(self.paths, preprocess, max_pixels, jpeg_draft,
                                 digests=self._digests, hash_bytes=admit is not None)
        loader = DataLoader(dataset, batch_size=batch_size, shuffle=False,
                            num_workers=num_workers, collate_fn=_Collate(self.paths),
                            pin_memory=pin_memory, persistent_workers=False)
        for indices, images, errors, reads in loader:
            failures = [InputError(i, self.paths[i], reason) for i, reason in errors]
            if failures and on_error == "raise":
                first = failures[0]
                raise ImageDecodeError(first.source, first.reason, hint=skip_hint())
            if admit is not None and len(indices):
                keep = np.asarray(admit(reads), dtype=bool)
                if not keep.all():
                    indices = indices[keep]
                    images = images[torch.from_numpy(keep)] if len(indices) else \
                        images[:0]
                    if pin_memory and len(indices):  # a new tensor: pinned like the loader's
                        images = images.pin_memory()
            yield Batch(indices, images, failures)


def skip_hint() -> str:
    """The way forward for an unreadable input, as the current interface spells it.

    Examples
    --------
    >>> skip_hint()
    "pass on_error='skip' to skip unreadable images and list them instead"
    """
    return f"pass {option('on_error', 'skip')} to skip unreadable images and list them instead"
