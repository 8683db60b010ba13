"""Decoding one image file into a uint8 array: the only place featclf opens image files.

Every path that reads images (the extractor, the trainer, the CLI, the Ray engine) calls
:func:`decode_image`, so every one of them handles awkward files the same way.
"""

from __future__ import annotations

import io
import os
import stat
import time
import warnings
from typing import NamedTuple

import numpy as np
from PIL import Image, ImageFile, ImageOps, UnidentifiedImageError

#: Default upper bound on the pixels of one image (width x height). Larger files are refused
#: instead of being decoded, which protects a job from decompression bombs. Pillow's own default
#: warning threshold is about 89 million pixels; featclf refuses at twice that, like Pillow does.
DEFAULT_MAX_PIXELS = 2 * 89_478_485

# Truncated files must fail, not be silently padded with grey.
ImageFile.LOAD_TRUNCATED_IMAGES = False


class ImageDecodeError(ValueError):
    """An image file could not be turned into pixels.

    The message always starts with the file: ``cannot read image '<path>': <reason>``,
    followed by ``(<hint>)`` when there is a way forward to suggest.

    Parameters
    ----------
    path : str or path-like
        The file that failed.
    reason : str
        Why, in words a user can act on.
    hint : str, optional
        What to do about it, e.g. ``"pass on_error='skip' to ..."`` (built with
        :func:`featclf.errors.option`, so that the command line reads ``--on-error skip``).
        Kept apart from ``reason`` so that callers can reword it.

    Examples
    --------
    >>> str(ImageDecodeError("a/b.png", "empty file (0 bytes)", hint="try another"))
    "cannot read image 'a/b.png': empty file (0 bytes) (try another)"
    """

    def __init__(self, path: str | os.PathLike, reason: str, hint: str | None = None) -> None:
        self.path = _path_text(path)
        self.reason = reason
        self.hint = hint
        message = f"cannot read image {self.path!r}: {reason}"
        super().__init__(message if hint is None else f"{message} ({hint})")

    def __reduce__(self):  # keep path, reason and hint when the error crosses a process boundary
        return (type(self), (self.path, self.reason, self.hint))


def _path_text(path) -> str:
    """A path as text (bytes paths decoded the way ``os.listdir`` decodes names)."""
    if isinstance(path, bytes):
        return os.fsdecode(path)
    if isinstance(path, os.PathLike):
        return os.fsdecode(os.fspath(path))
    return str(path)


#: What ``stat`` calls the kinds of files that are not regular files.
_FILE_KINDS = ((stat.S_ISDIR, "is a directory, not an image file"),
               (stat.S_ISFIFO, "is a named pipe (FIFO), not a regular file"),
               (stat.S_ISSOCK, "is a socket, not a regular file"),
               (stat.S_ISCHR, "is a character device, not a regular file"),
               (stat.S_ISBLK, "is a block device, not a regular file"))


def _not_regular(mode: int) -> str:
    for test, reason in _FILE_KINDS:
        if test(mode):
            return reason
    return "not a regular file"


# Non-blocking: opening a FIFO that appeared between stat and open returns at once instead of
# waiting for a writer; no controlling terminal from a tty device. (Neither exists on Windows.)
_OPEN_FLAGS = getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_NOCTTY", 0) | \
    getattr(os, "O_BINARY", 0)


def read_image_file(path: str | os.PathLike, *, name: str | None = None) -> bytes:
    """The bytes of one image file, read once; only regular files are opened.

    A named pipe, socket or device listed as an input is refused without being opened
    (opening a pipe for reading waits for a writer, so it would hang the job), and the file is
    opened non-blocking and checked again, in case it was replaced after the first check.

    Parameters
    ----------
    path : str or path-like
        The file.
    name : str, optional
        What to call it in errors (default: the path).

    Returns
    -------
    bytes

    Raises
    ------
    ImageDecodeError
        Missing, a directory or another non-regular file, permission denied, or a read error.

    Examples
    --------
    >>> import os, tempfile
    >>> read_image_file(tempfile.mkdtemp())
    Traceback (most recent call last):
    featclf.data.decode.ImageDecodeError: cannot read image '...': is a directory, not an image file
    """
    return _read(path, name, stable=False).data


#: Why a file is not used when its size or times kept changing while it was read (another
#: program was writing it): the bytes read may be a mix of two versions.
CHANGED_DURING_READ = ("changed while being read (its size or modification time changed "
                       "during the read); run again")

#: How many times a read that overlapped a write is tried before the file counts as unreadable.
_READ_ATTEMPTS = 3


def stat_key(st: os.stat_result) -> tuple[int, int, int, int, int]:
    """What identifies one version of a file without reading it: ``(size, mtime_ns,
    ctime_ns, inode, device)``.

    Any write moves ``ctime`` forward (``os.utime`` can put ``mtime`` back, never ``ctime``);
    replacing the file changes the inode.

    Examples
    --------
    >>> import tempfile
    >>> st = os.stat(tempfile.mkdtemp())
    >>> stat_key(st)[1:3] == (st.st_mtime_ns, st.st_ctime_ns)
    True
    """
    return (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)


class FileBytes(NamedTuple):
    """One file's bytes, the version they are (:func:`stat_key` from ``fstat`` of the open file,
    the same before and after the read) and the clock (``time.time_ns()``) before the read."""

    data: bytes
    stat: tuple[int, int, int, int, int]
    read_ns: int


def read_image_file_stat(path: str | os.PathLike, *, name: str | None = None) -> FileBytes:
    """Like :func:`read_image_file`, also saying which version of the file the bytes are.

    The open file's ``fstat`` is taken before and after the read; when they differ (another
    program wrote the file meanwhile) the read is tried again, and after three tries the file
    is unreadable ("changed while being read"). So the bytes returned are those of the
    version ``stat`` names, and a stat record built from them (:mod:`featclf.store._stat`)
    never names the digest of other bytes.

    Parameters
    ----------
    path : str or path-like
        The file.
    name : str, optional
        What to call it in errors (default: the path).

    Returns
    -------
    FileBytes

    Raises
    ------
    ImageDecodeError
        As :func:`read_image_file`, or the file kept changing while it was read.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "a.png"; _ = p.write_bytes(b"abc")
    >>> got = read_image_file_stat(p)
    >>> got.data, got.stat == stat_key(os.stat(p))
    (b'abc', True)
    """
    return _read(path, name, stable=True)


def _read(path, name: str | None, *, stable: bool) -> FileBytes:
    label = name or _path_text(path)
    try:
        mode = os.stat(path).st_mode
        if not stat.S_ISREG(mode):
            raise ImageDecodeError(label, _not_regular(mode))
        with os.fdopen(os.open(path, os.O_RDONLY | _OPEN_FLAGS), "rb") as fh:
            before = os.fstat(fh.fileno())
            if not stat.S_ISREG(before.st_mode):  # swapped for something else since the stat
                raise ImageDecodeError(label, _not_regular(before.st_mode))
            if not stable:
                return FileBytes(fh.read(), (), 0)  # O_NONBLOCK does not apply to regular files
            for _ in range(_READ_ATTEMPTS):
                read_ns = time.time_ns()
                fh.seek(0)
                data = fh.read()
                after = os.fstat(fh.fileno())
                if stat_key(after) == stat_key(before) and len(data) == after.st_size:
                    return FileBytes(data, stat_key(after), read_ns)
                before = after
            raise ImageDecodeError(label, CHANGED_DURING_READ)
    except FileNotFoundError:
        raise ImageDecodeError(label, "file not found") from None
    except IsADirectoryError:
        raise ImageDecodeError(label, "is a directory, not an image file") from None
    except PermissionError:
        raise ImageDecodeError(label, "permission denied") from None
    except OSError as exc:
        raise ImageDecodeError(label, f"read failed: {exc.strerror or exc}") from None


def _to_8bit(img: Image.Image) -> Image.Image:
    """Bring 16/32-bit and float modes to 8-bit grey by scaling their actual range."""
    arr = np.asarray(img)
    if img.mode.startswith("I;16") or img.mode == "I":
        # 16-bit files store 0..65535; scale by the type's range, not the image's, so that
        # two exposures of the same scene keep their relative brightness.
        top = 65535.0 if arr.max(initial=0) > 255 or img.mode.startswith("I;16") else 255.0
        arr = np.clip(arr.astype(np.float64) * (255.0 / top), 0, 255)
    else:  # "F": floats of unknown range
        lo, hi = float(np.nanmin(arr)), float(np.nanmax(arr))
        arr = (arr - lo) * (255.0 / (hi - lo)) if hi > lo else np.zeros_like(arr)
    return Image.fromarray(np.round(arr).astype(np.uint8), mode="L")


def normalise_mode(img: Image.Image) -> Image.Image:
    """Convert any Pillow mode to "L" (grey) or "RGB", compositing transparency on white."""
    if img.mode in ("L", "RGB"):
        return img
    if img.mode == "1":
        return img.convert("L")
    if img.mode in ("I", "F") or img.mode.startswith("I;16"):
        return _to_8bit(img)
    if img.mode == "P":
        img = img.convert("RGBA" if "transparency" in img.info else "RGB")
    if img.mode in ("LA", "La", "PA"):
        img = img.convert("RGBA")
    if img.mode in ("RGBA", "RGBa"):
        background = Image.new("RGBA", img.size, (255, 255, 255, 255))
        return Image.alpha_composite(background, img.convert("RGBA")).convert("RGB")
    # CMYK, YCbCr, LAB, HSV: Pillow knows the conversion.
    return img.convert("RGB")


def decode_image(source: str | os.PathLike | bytes, *, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                 name: str | None = None, draft: int | None = None) -> np.ndarray:
    """Decode an image file into a ``(H, W, C)`` uint8 array with ``C`` 1 (grey) or 3 (RGB).

    Palette, RGBA (composited on white), CMYK, 16-bit and 1-bit images are converted; EXIF
    orientation is applied; animated images give their first frame.

    Parameters
    ----------
    source : str, path-like or bytes
        The file, or its bytes.
    max_pixels : int or None, default=DEFAULT_MAX_PIXELS
        Refuse images with more pixels than this (decompression-bomb guard). ``None`` disables it.
    name : str, optional
        What to call the image in errors when ``source`` is bytes.
    draft : int, optional
        JPEG only: let libjpeg decode at 1/2, 1/4 or 1/8 scale (DCT scaling, several times
        faster on large photos) as long as both sides stay at least ``draft`` pixels. None
        decodes at full size. Other formats ignore it.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape ``(H, W, 1)`` or ``(H, W, 3)``.

    Raises
    ------
    ImageDecodeError
        The file is missing, empty, truncated, not an image, too large, or in a format Pillow
        cannot read. The message names the file and the reason.

    Examples
    --------
    >>> import io
    >>> from PIL import Image
    >>> buf = io.BytesIO(); Image.new("RGBA", (4, 2), (255, 0, 0, 0)).save(buf, "PNG")
    >>> decode_image(buf.getvalue()).shape  # fully transparent red on white is white
    (2, 4, 3)
    """
    if isinstance(source, bytes):
        return decode_image_bytes(source, name=name or "<bytes>", max_pixels=max_pixels,
                                  draft=draft)
    label = name or _path_text(source)
    return decode_image_bytes(read_image_file(source, name=label), name=label,
                              max_pixels=max_pixels, draft=draft)


def decode_image_bytes(data: bytes, *, name: str, max_pixels: int | None = DEFAULT_MAX_PIXELS,
                       draft: int | None = None) -> np.ndarray:
    """Decode image bytes already in memory; see :func:`decode_image`.

    Parameters
    ----------
    data : bytes
        The encoded image.
    name : str
        The file name used in error messages.
    max_pixels : int or None
        Decompression-bomb limit.
    draft : int or None
        Smallest side a reduced-scale JPEG decode may give (see :func:`decode_image`).

    Returns
    -------
    numpy.ndarray
        ``uint8`` array ``(H, W, 1)`` or ``(H, W, 3)``.

    Examples
    --------
    >>> decode_image_bytes(b"", name="empty.png")
    Traceback (most recent call last):
    featclf.data.decode.ImageDecodeError: cannot read image 'empty.png': empty file (0 bytes)
    """
    if len(data) == 0:
        raise ImageDecodeError(name, "empty file (0 bytes)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            img = Image.open(io.BytesIO(data))
            width, height = img.size
            if max_pixels is not None and width * height > max_pixels:
                raise ImageDecodeError(
                    name, f"{width}x{height} = {width * height:,} pixels exceeds max_pixels="
                    f"{max_pixels:,} (possible decompression bomb; raise max_pixels to allow it)")
            img.seek(0)  # animated GIF/PNG/WebP: the first frame
            if draft is not None and img.format == "JPEG":
                img.draft(None, (int(draft), int(draft)))
            img.load()
            img = ImageOps.exif_transpose(img)
            img = normalise_mode(img)
    except ImageDecodeError:
        raise
    except UnidentifiedImageError:
        raise ImageDecodeError(name, "not an image file, or a format Pillow cannot read") from None
    except Image.DecompressionBombError as exc:
        raise ImageDecodeError(name, f"decompression bomb refused: {exc}") from None
    except (OSError, SyntaxError, ValueError, EOFError) as exc:
        text = str(exc)
        if "truncated" in text.lower() or "broken data stream" in text or isinstance(exc, EOFError):
            raise ImageDecodeError(name, f"truncated or damaged file ({text})") from None
        raise ImageDecodeError(name, f"damaged or unsupported image ({text})") from None
    arr = np.array(img, dtype=np.uint8)  # a writable copy, so torch.from_numpy can share it
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.size == 0:
        raise ImageDecodeError(name, "image has no pixels")
    return np.ascontiguousarray(arr)
