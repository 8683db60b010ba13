"""Repeated splits: one comparison on K seeded splits, and how much its numbers move.

One split's verdict can hinge on which images landed in the test part. ``compare_repeated``
runs :func:`featclf.compare.compare` K times with ``random_state`` = ``random_state``,
``random_state + 1``, ... (each seed draws its own stratified split and seeds that split's
network training, cross-validation folds and bootstraps), and keeps every
:class:`~featclf.comparison.Comparison`. :class:`RepeatedComparison` then gives each selected
classifier's test accuracy on every split, its mean ± standard deviation, and how many of the
K splits' verdicts said "better", "worse", "no detectable difference" or "inconclusive" (the
report's own verdict, :mod:`featclf.report._repeats`).

Features are extracted once where they can be: a transfer run's frozen pre-trained network
(``weights=``) gives every image the same vector whatever the split, so every split reads it
from one feature store (``store=``, or a temporary one for the duration of the call) and only
the first split computes any. Without ``weights``, each split trains its own softmax network on
its own training images and takes its features from that network: they differ from split to
split and are extracted anew (the report says which of the two happened).
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from numbers import Integral
from typing import Any

import pandas as pd

from featclf.compare import compare
from featclf.comparison import Comparison
from featclf.data.datasets import BUILTIN_DATASETS, load_data
from featclf.data.files import ImageFiles
from featclf.errors import option
from featclf.experiment import StageLog
from featclf.params import Interval, check_params
from featclf.report._repeats import (
    OUTCOMES,
    REPEAT_COLUMNS,
    repeats_summary,
    repeats_table,
    verdict_spread,
)

__all__ = ["OUTCOMES", "REPEAT_COLUMNS", "RepeatedComparison", "compare_repeated"]


@dataclass(frozen=True, eq=False)
class RepeatedComparison:
    """The outcome of :func:`compare_repeated`: K comparisons of the same setup on K splits.

    Attributes
    ----------
    comparisons : tuple of Comparison
        One per split, in seed order; ``comparisons[0]`` (:attr:`first`) is the run a plain
        ``compare(..., random_state=seeds[0])`` gives.
    seeds : tuple of int
        The ``random_state`` of each split: ``random_state``, ``random_state + 1``, ...
    splits : pandas.DataFrame
        Every split's selected classifiers (columns :data:`REPEAT_COLUMNS`, ``repeats.csv``):
        ``accuracy`` per split, ``compared`` and ``verdict`` on the row each split's verdict
        compares with the softmax head, and the extraction's ``n_computed`` / ``n_reused``.

    Examples
    --------
    >>> import pandas as pd
    >>> from featclf.comparison import Comparison
    >>> from featclf.repeats import RepeatedComparison
    >>> runs = tuple(Comparison(pd.DataFrame({"model": "m", "layer": "penultimate",
    ...                                       "classifier": ["softmax", "logistic"],
    ...                                       "accuracy": [a, a + d]}))
    ...              for a, d in ((0.80, 0.02), (0.90, 0.0), (0.85, 0.01)))
    >>> repeated = RepeatedComparison.from_comparisons(runs, (0, 1, 2))
    >>> repeated.summary[["classifier", "n_splits", "accuracy_mean", "accuracy_sd"]].round(3)
      classifier  n_splits  accuracy_mean  accuracy_sd
    0    softmax         3           0.85         0.05
    1   logistic         3           0.86         0.04
    """

    comparisons: tuple[Comparison, ...]
    seeds: tuple[int, ...]
    splits: pd.DataFrame

    @classmethod
    def from_comparisons(cls, comparisons: Sequence[Comparison], seeds: Sequence[int]
                         ) -> RepeatedComparison:  # fmt: skip
        """Gather K comparisons (one per seed) and tabulate them (:attr:`splits`)."""
        return cls(tuple(comparisons), tuple(int(s) for s in seeds),
                   repeats_table(comparisons, seeds))  # fmt: skip

    @property
    def first(self) -> Comparison:
        """The first split's comparison (seed ``seeds[0]``): the one the report details."""
        return self.comparisons[0]

    @property
    def summary(self) -> pd.DataFrame:
        """Mean ± sd (``ddof=1``), min and max of each selected classifier's test accuracy.

        See :func:`featclf.report._repeats.repeats_summary`.
        """
        return repeats_summary(self.splits)

    @property
    def verdicts(self) -> pd.DataFrame:
        """Per model/layer, how many splits' verdicts said each of :data:`OUTCOMES`."""
        return verdict_spread(self.splits)

    def accuracies(self, model: str, layer: str, classifier: str) -> pd.Series:
        """One selected classifier's test accuracy on each split, indexed by seed."""
        rows = self.splits[(self.splits["model"] == model) & (self.splits["layer"] == layer)
                           & (self.splits["classifier"] == classifier)]  # fmt: skip
        if rows.empty:
            known = sorted(set(zip(self.splits["model"], self.splits["layer"],
                                   self.splits["classifier"])))  # fmt: skip
            raise KeyError(f"no selected rows for {(model, layer, classifier)}; known: {known}")
        return pd.Series(rows["accuracy"].to_numpy(), index=rows["seed"].to_numpy(),
                         name="accuracy")  # fmt: skip


def _own_split(data: Any, test_data: Any, dataset: str | None, repeats: int
               ) -> tuple[Any, str | None]:  # fmt: skip
    """The data, resolved once; refuse data whose own split would repeat K times.

    A folder's ``train/``/``test/`` subfolders, a CSV's split column or ``test_data`` fix the
    split: every seed would give the same one.
    """
    if test_data is not None:
        where = os.fspath(test_data) if isinstance(test_data, os.PathLike) else test_data
        raise ValueError(
            f"{option('repeats', repeats)}: {option('test_data', where)} fixes the test images, "
            f"so every repeat would use the same split; leave out {option('test_data')} to draw "
            "random splits from the data, or run the comparison once."
        )
    if isinstance(data, str) and data in BUILTIN_DATASETS or isinstance(data, tuple):
        return data, dataset
    if not isinstance(data, str | os.PathLike | ImageFiles):
        return data, dataset  # compare refuses it with its own message
    name, files, _ = load_data(data, name=dataset)
    if files.splits is not None and set(files.splits) != {"train"}:
        where = "the CSV file's split column" if files.layout == "csv" else (
            "the folder's own train/ and test/ subfolders")
        origin = files.root if files.root is not None else (
            os.fspath(data) if isinstance(data, str | os.PathLike) else "the data")
        raise ValueError(
            f"{option('repeats', repeats)}: {origin} has its own split ({where}), so every "
            "repeat would use the same one; repeated splits need a collection without one (one "
            "class per subfolder), or run the comparison once."
        )
    return files, name


@contextlib.contextmanager
def _shared_store(store: Any, transfer: bool) -> Iterator[Any]:
    """The store every split reads: the given one, or a temporary one for a transfer run."""
    if store is not None or not transfer:
        yield store
        return
    with tempfile.TemporaryDirectory(prefix="featclf-repeats-") as folder:
        yield os.path.join(folder, "store")


def compare_repeated(
    data: Any,
    *,
    repeats: int = 5,
    random_state: int = 0,
    store: Any = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    **compare_kwargs: Any,
) -> RepeatedComparison:
    """Run :func:`featclf.compare.compare` on ``repeats`` seeded splits of the same data.

    Parameters
    ----------
    data : str, path-like, ImageFiles or (X, y) tuple
        As for ``compare``; without a split of its own (no ``train/``/``test/`` subfolders, no
        CSV split column, no ``test_data``): each repeat draws its own.
    repeats : int, default=5
        K, the number of splits.
    random_state : int, default=0
        The first split's seed; split k (from 0) uses ``random_state + k``, which seeds its
        split, its networks' training, its cross-validation folds and its bootstraps.
    store : None, path-like or FeatureStore, default=None
        Passed to every ``compare``. In a transfer run (``weights=``) the features do not
        depend on the split, so without a store a temporary one serves the K runs and only the
        first computes vectors.
    progress : bool, default=False
        Stage lines (and progress bars) for every run, each split announced.
    log : callable, optional
        Receives the stage lines instead of stderr (with ``progress``).
    **compare_kwargs
        Every other ``compare`` parameter (``models``, ``weights``, ``classifiers``,
        ``split``, ``epochs``, ``cv``, ...), the same for every split.

    Returns
    -------
    RepeatedComparison
        The K comparisons, their seeds, and every split's selected rows with its verdict
        (``splits``; ``summary``: mean ± sd; ``verdicts``: the spread of the verdict).
        ``featclf.report.write_report(result.first, out, repeats=result.splits)`` writes the
        first split's report with a "Repeated splits" section and ``repeats.csv``.

    Examples
    --------
    >>> from featclf.data import load_digits_images
    >>> from featclf.repeats import compare_repeated
    >>> X, y = load_digits_images(return_X_y=True)
    >>> repeated = compare_repeated((X[:200], y[:200]), repeats=2, models=["lenet5"],
    ...                             classifiers=["logistic"], epochs=1, cv=2, c_grids=[1.0],
    ...                             n_resamples=50)
    >>> repeated.seeds, repeated.summary["n_splits"].tolist()
    ((0, 1), [2, 2])
    >>> int(repeated.verdicts.loc[0, ["better", "worse", "no detectable difference",
    ...                                "inconclusive", "no test"]].sum())
    2
    """
    check_params({"repeats": [Interval(Integral, 1, None, closed="left")],
                  "random_state": [Interval(Integral, 0, 2**32 - 1, closed="both")]},
                 {"repeats": repeats, "random_state": random_state},
                 "compare_repeated")  # fmt: skip
    if random_state + repeats - 1 > 2**32 - 1:
        check_params({"random_state": [Interval(Integral, 0, 2**32 - repeats, closed="both")]},
                     {"random_state": random_state}, "compare_repeated")  # fmt: skip
    if repeats > 1:
        data, dataset = _own_split(data, compare_kwargs.get("test_data"),
                                   compare_kwargs.get("dataset"), repeats)  # fmt: skip
        if dataset is not None:
            compare_kwargs["dataset"] = dataset
    say = StageLog(progress, log)
    seeds = [random_state + k for k in range(repeats)]
    comparisons = []
    with _shared_store(store, compare_kwargs.get("weights") is not None) as shared:
        for k, seed in enumerate(seeds, start=1):
            say(f"repeated splits: split {k} of {repeats} (random_state={seed})")
            comparison = compare(data, random_state=seed, store=shared, progress=progress,
                                 log=log, **compare_kwargs)
            if shared is not store:
                # The temporary store is gone once this returns: the setup must not point at it.
                setup = {**comparison.setup, "feature store": "a temporary one, shared by the "
                         "repeated splits and removed after them"}
                comparison = dataclasses.replace(comparison, setup=setup)
            comparisons.append(comparison)
    return RepeatedComparison.from_comparisons(comparisons, seeds)
