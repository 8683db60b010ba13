"""The splits of featclf: stratified, seeded train / [validation /] test positions.

Every featclf experiment splits its data here, so the softmax network, the SVMs and logistic
regression always see the same parts. :func:`split_indices` is the one stratified split
(identical to :func:`sklearn.model_selection.train_test_split` with ``stratify=y``);
:func:`split_train_test` applies it to images, and :func:`make_split` builds a :class:`Split`
with an optional validation part (seed 001's 65/25/10) for :func:`featclf.compare.compare`.
Positions depend only on the labels and the seed, never on the images.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

import numpy as np
import pandas as pd
import torch
from sklearn.model_selection import train_test_split

from featclf.data.files import ImageFiles
from featclf.data.inputs import check_labels
from featclf.params import Interval, InvalidParameterError, StrOptions, check_params

__all__ = ["SEED001_SPLIT", "Split", "check_class_counts", "class_counts_text", "make_split",
           "predefined_split", "split_indices", "split_train_test"]

#: Seed 001's train/validation/test fractions (``split="seed001"``).
SEED001_SPLIT: tuple[float, float, float] = (0.65, 0.25, 0.10)


def check_class_counts(y, *, min_per_class: int = 2, what: str = "training") -> dict:
    """Count the images of each class; refuse one class, or a class with too few images.

    Called before any training (by :class:`~featclf.train.SoftmaxClassifier` and
    :func:`featclf.compare.compare`), so a data set that cannot be trained or split fails at
    once, naming the classes, instead of minutes later with scikit-learn's raw error.

    Parameters
    ----------
    y : array-like of shape (n,)
        Labels.
    min_per_class : int, default=2
        The fewest images a class may have.
    what : str, default="training"
        What the labels are for, as the message says it ("training", "the split").

    Returns
    -------
    dict
        ``{class: count}``, sorted by class (classes as plain Python values).

    Raises
    ------
    ValueError
        With no labels, one class, or a class with fewer than ``min_per_class`` images; the
        message names the classes and their counts.

    Examples
    --------
    >>> from featclf.model_selection import check_class_counts
    >>> check_class_counts(["b", "a", "b", "a"])
    {'a': 2, 'b': 2}
    >>> check_class_counts(["a", "a", "b"])  # doctest: +NORMALIZE_WHITESPACE
    Traceback (most recent call last):
    ...
    ValueError: training needs at least 2 images of each class; class 'b' has 1
    (classes: a 2, b 1)
    """
    values, counts = np.unique(np.asarray(y), return_counts=True)
    found = {v: int(c) for v, c in zip(values.tolist(), counts.tolist())}
    if not found:
        raise ValueError(f"{what} needs labelled images; got none")
    listed = class_counts_text(found)
    if len(found) == 1:
        (only, count), = found.items()
        raise ValueError(f"{what} needs at least two classes; every image ({count}) is of "
                         f"class {only!r}")
    few = {c: n for c, n in found.items() if n < min_per_class}
    if few:
        named = ", ".join(f"class {c!r} has {n}" for c, n in list(few.items())[:10])
        more = f" (and {len(few) - 10} more)" if len(few) > 10 else ""
        raise ValueError(f"{what} needs at least {min_per_class} images of each class; "
                         f"{named}{more} (classes: {listed})")
    return found


def class_counts_text(counts: dict, limit: int = 30) -> str:
    """``'a' 2, 'b' 1``: classes and their counts in one line (the first ``limit``).

    Examples
    --------
    >>> from featclf.model_selection import class_counts_text
    >>> class_counts_text({0: 400, 1: 380})
    '0 400, 1 380'
    """
    shown = [f"{c} {n}" for c, n in list(counts.items())[:limit]]
    if len(counts) > limit:
        shown.append(f"... ({len(counts) - limit} more classes)")
    return ", ".join(shown)


def split_indices(y, *, test_size: float = 0.2, random_state: int | None = 0
                  ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Stratified train/test positions: the split every featclf experiment uses.

    Identical to ``train_test_split(X, y, test_size=test_size, stratify=y,
    random_state=random_state)`` (which depends only on ``y``), returned as positions.

    Parameters
    ----------
    y : array-like of shape (n,)
        Labels to stratify on.
    test_size : float, default=0.2
        Fraction of the samples in the test part.
    random_state : int or None, default=0
        Seed of the shuffle.

    Returns
    -------
    train, test : numpy.ndarray of int
        Positions into ``y``.

    Examples
    --------
    >>> import numpy as np
    >>> from featclf.model_selection import split_indices
    >>> train, test = split_indices([0, 1] * 10, test_size=0.2)
    >>> len(train), len(test), sorted(np.asarray([0, 1] * 10)[test].tolist())
    (16, 4, [0, 0, 1, 1])
    """
    y = np.asarray(y)
    positions = np.arange(len(y))
    train, test = train_test_split(positions, test_size=test_size, stratify=y,
                                   random_state=random_state)  # fmt: skip
    return np.asarray(train), np.asarray(test)


def _take(X, idx: np.ndarray):
    """Rows ``idx`` of arrays, tensors, DataFrames, Series, ImageFiles and path lists."""
    if isinstance(X, ImageFiles):
        return X[idx]
    if isinstance(X, pd.DataFrame | pd.Series):
        return X.iloc[idx]
    if isinstance(X, torch.Tensor):
        return X[torch.as_tensor(idx, dtype=torch.long)]
    if isinstance(X, np.ndarray):
        return X[idx]
    return [X[int(i)] for i in idx]


def split_train_test(X, y, *, test_size: float = 0.2, random_state: int | None = 0):
    """Split images and labels into the stratified train and test parts featclf compares on.

    Parameters
    ----------
    X : array-like, tensor, list of paths or ImageFiles
        The images.
    y : array-like of shape (n,)
        Their labels.
    test_size : float, default=0.2
        Fraction held out for testing (MNIST-5k: 4,000 train / 1,000 test).
    random_state : int or None, default=0
        Seed of the shuffle.

    Returns
    -------
    X_train, X_test, y_train, y_test
        The same types as ``X`` and a numpy array of labels; identical to
        ``sklearn.model_selection.train_test_split(X, y, test_size=test_size, stratify=y,
        random_state=random_state)``.

    Examples
    --------
    >>> import numpy as np
    >>> from featclf.data import load_mnist5k
    >>> from featclf.model_selection import split_train_test
    >>> X, y = load_mnist5k(return_X_y=True)
    >>> X_train, X_test, y_train, y_test = split_train_test(X, y)
    >>> X_train.shape, X_test.shape, np.bincount(y_test).tolist() == [100] * 10
    ((4000, 28, 28), (1000, 28, 28), True)
    """
    y = check_labels(y, len(X))
    train, test = split_indices(y, test_size=test_size, random_state=random_state)
    return _take(X, train), _take(X, test), y[train], y[test]


@dataclass(frozen=True)
class Split:
    """Positions of the train, validation (possibly empty) and test parts of one data set.

    Attributes
    ----------
    train, validation, test : numpy.ndarray of int
        Disjoint positions into the data; together they cover it.
    fractions : tuple of float
        The requested (train, validation, test) fractions (for a predefined split, the
        fractions it has).
    origin : str or None
        Where a predefined split came from, in words ("the folder's own train/ and test/
        subfolders"); None for a random split.

    Examples
    --------
    >>> import numpy as np
    >>> from featclf.model_selection import Split
    >>> Split(np.arange(8), np.arange(0), np.arange(8, 10)).describe()
    '8 train / 2 test'
    """

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    fractions: tuple[float, float, float] = field(default=(0.8, 0.0, 0.2))
    origin: str | None = None

    def describe(self) -> str:
        """One line naming the sizes of the parts."""
        parts = [f"{len(self.train)} train"]
        if len(self.validation):
            parts.append(f"{len(self.validation)} validation")
        parts.append(f"{len(self.test)} test")
        return " / ".join(parts)


_SPLIT_CONSTRAINTS = {
    "split": [Interval(Real, 0, 1, closed="neither"), StrOptions({"seed001"}), list, tuple]
}


def _split_fractions(split: Any, owner: str = "make_split") -> tuple[float, float, float]:
    """(train, validation, test) fractions from a ``split`` argument of ``owner``."""
    check_params(_SPLIT_CONSTRAINTS, {"split": split}, owner)
    if isinstance(split, str):
        return SEED001_SPLIT
    if isinstance(split, Real):
        return (1.0 - float(split), 0.0, float(split))
    parts = [float(p) for p in split] if len(split) in (2, 3) else []
    if parts:
        train, validation, test = (parts[0], 0.0, parts[1]) if len(parts) == 2 else parts
        if min(train, test) > 0 and validation >= 0 and math.isclose(sum(parts), 1.0):
            return (train, validation, test)
    raise InvalidParameterError(
        f"The 'split' parameter of {owner} must be (train, [validation,] test) fractions that "
        "are positive (the validation one may be 0) and sum to 1, such as (0.65, 0.25, 0.10). "
        f"Got {split!r} instead."
    )


def make_split(y: Any, split: Any = 0.2, *, random_state: int | None = 0) -> Split:
    """Split labelled data into stratified, seeded train / [validation /] test positions.

    The test part is drawn first with :func:`split_indices` (the split every featclf
    experiment uses), the validation part from the rest; both depend only on ``y`` and
    ``random_state``, never on the images.

    Parameters
    ----------
    y : array-like of shape (n,)
        Labels to stratify on.
    split : float, (train, test), (train, validation, test) or "seed001", default=0.2
        A test fraction, or the fractions of the parts (summing to 1); ``"seed001"`` is seed
        001's 65/25/10.
    random_state : int or None, default=0
        Seed of the shuffles.

    Returns
    -------
    Split

    Examples
    --------
    >>> from featclf.model_selection import make_split
    >>> parts = make_split([0, 1] * 50, "seed001")
    >>> len(parts.train), len(parts.validation), len(parts.test)
    (65, 25, 10)
    """
    y = np.asarray(y)
    train_frac, val_frac, test_frac = _split_fractions(split)
    rest, test = split_indices(y, test_size=test_frac, random_state=random_state)
    if val_frac == 0:
        return Split(rest, rest[:0], test, (train_frac, val_frac, test_frac))
    train_pos, val_pos = split_indices(
        y[rest], test_size=val_frac / (train_frac + val_frac), random_state=random_state
    )
    return Split(rest[train_pos], rest[val_pos], test, (train_frac, val_frac, test_frac))


def predefined_split(parts: list[str] | np.ndarray, *, origin: str) -> Split:
    """The :class:`Split` a collection's own ``train``/``val``/``test`` parts give.

    Without a ``test`` part, the ``val`` part is the test part (and there is no validation
    part): the images a user kept out of training are the ones to test on.

    Parameters
    ----------
    parts : sequence of {"train", "val", "test"}
        The part of each image (``ImageFiles.splits``).
    origin : str
        Where the parts came from, in words; kept as :attr:`Split.origin`.

    Returns
    -------
    Split

    Raises
    ------
    ValueError
        When a part is missing: no training images, or nothing to test on.

    Examples
    --------
    >>> from featclf.model_selection import predefined_split
    >>> parts = predefined_split(["train", "test", "train", "val"], origin="a CSV's split column")
    >>> parts.train.tolist(), parts.validation.tolist(), parts.test.tolist()
    ([0, 2], [3], [1])
    >>> predefined_split(["train", "val"], origin="folders").test.tolist()
    [1]
    """
    parts = np.asarray(parts, dtype=object)
    unknown = sorted(set(parts.tolist()) - {"train", "val", "test"})
    if unknown:
        raise ValueError(f"predefined_split: parts {unknown} are not train, val or test")
    train = np.flatnonzero(parts == "train")
    validation = np.flatnonzero(parts == "val")
    test = np.flatnonzero(parts == "test")
    if not len(test):
        test, validation = validation, validation[:0]
        origin += " (val/ serves as the test part)" if len(test) else ""
    if not len(train) or not len(test):
        missing = "training" if not len(train) else "test"
        raise ValueError(f"{origin}: no {missing} images; {origin} must have train and test "
                         "(or val) parts")
    n = len(parts)
    fractions = (len(train) / n, len(validation) / n, len(test) / n)
    return Split(train, validation, test, fractions, origin)
