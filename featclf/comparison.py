"""``Comparison``: what one :func:`featclf.compare.compare` run found, as one object.

:func:`~featclf.compare.compare` returns it and :func:`featclf.report.write_report` reads it:
the results table, the test predictions of every selected classifier keyed by
:class:`ResultKey` ``(model, layer, classifier)`` with each image's score of its predicted
class, who the test images are, the true test labels, the classes, the split, the softmax
networks' training histories, the setup and where the time went.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from featclf.model_selection import Split
from featclf.pipelines import BASELINES, REGISTRY

__all__ = ["TIMING_TABLE_COLUMNS", "Comparison", "ResultKey", "layer_of", "views_label"]

_SCORE_KINDS = ("probability", "decision")

#: Columns of :attr:`Comparison.timings`, in order.
TIMING_TABLE_COLUMNS: tuple[str, ...] = (
    "phase", "model", "layer", "classifier", "seconds", "n_computed", "n_reused",
)  # fmt: skip


_VIEWS_LABEL = re.compile(r"(?P<layer>.+) \+ (?P<n>[0-9]+) views?")


def views_label(layer: str, n_views: int) -> str:
    """The ``layer`` of the rows whose classifiers also trained on augmented views.

    ``compare(augment="seed", views=K)`` adds, next to each layer's rows, a group trained on
    the clean features of every training image *and* on ``K`` augmented views of each; its
    ``layer`` column says so: ``"penultimate + 4 views"``.

    Examples
    --------
    >>> from featclf.comparison import layer_of, views_label
    >>> views_label("penultimate", 4)
    'penultimate + 4 views'
    >>> layer_of(views_label("c5", 1)), layer_of("c5")
    (('c5', 1), ('c5', 0))
    """
    return f"{layer} + {int(n_views)} {'view' if n_views == 1 else 'views'}"


def layer_of(label: str) -> tuple[str, int]:
    """The feature layer of a results ``layer`` label and its number of training views.

    ``(label, 0)`` for rows trained on clean features only; see :func:`views_label`.
    """
    match = _VIEWS_LABEL.fullmatch(str(label))
    if match is None:
        return str(label), 0
    return match["layer"], int(match["n"])


class ResultKey(NamedTuple):
    """The key of one group of results: a model, a layer of its features and a classifier.

    A tuple, so ``comparison.predictions["lenet5", "penultimate", "softmax"]`` works too.

    Examples
    --------
    >>> from featclf.comparison import ResultKey
    >>> key = ResultKey("lenet5", "penultimate", "linear_svm")
    >>> key.classifier, key == ("lenet5", "penultimate", "linear_svm")
    ('linear_svm', True)
    """

    model: str
    layer: str
    classifier: str


@dataclass(frozen=True, eq=False)
class Comparison:
    """The outcome of :func:`featclf.compare.compare`; :func:`featclf.report.write_report` input.

    Attributes
    ----------
    results : pandas.DataFrame
        One row per (model, layer, classifier, C), columns
        :data:`featclf.compare.RESULT_COLUMNS` (a report needs at least ``model``, ``layer``,
        ``classifier`` and ``accuracy``; see :func:`featclf.report.write_report`).
    predictions : mapping of ResultKey to numpy.ndarray
        Test predictions of every selected row (the confusion matrices); may be empty.
    y_true : numpy.ndarray or None
        The test labels, in the order of the predictions.
    classes : numpy.ndarray or None
        Every class of the data, sorted.
    split : Split or None
        The train, validation and test positions into the data.
    histories : mapping of (model, baseline) to pandas.DataFrame
        Each softmax network's per-epoch training history (``SoftmaxClassifier.history_``);
        ``baseline`` is ``"softmax"`` or ``"softmax_finetune"``.
    setup : mapping
        The experiment's configuration, plain values only (the report's Setup section).
    timings : pandas.DataFrame or None
        Where the time went, columns :data:`TIMING_TABLE_COLUMNS`: one row per ``"training"``
        (a baseline network), ``"extraction"`` (one model's features of every image, with the
        vectors computed and reused from the feature store) and ``"classifier"`` (one
        classifier's C search and refits on one layer) and ``"views"`` (the augmented views
        of the training images, ``compare(views=K)``).
    seconds : float
        Wall-clock time of the whole run.
    skipped : tuple of (str, str)
        The image files left out because they could not be read (``on_error="skip"``):
        (path, reason) pairs.
    scores : mapping of ResultKey to numpy.ndarray
        For the keys of ``predictions``: each test image's score of the class it was assigned,
        the probability (``predict_proba``; the softmax head's too) or, for a classifier
        without probabilities (the SVMs), its ``decision_function`` value; may be empty.
    score_kinds : mapping of ResultKey to str
        Which score each key's ``scores`` are: ``"probability"`` or ``"decision"``.
    images : sequence or None
        Who the test images are, in the order of ``y_true``: their file paths when the data
        were files, else their row positions in the data. None: :attr:`test_images` falls back
        to ``split.test`` (row positions), or ``0 .. n_test - 1``.
    estimators : mapping of ResultKey to estimator
        For the keys of ``predictions``: the fitted classifier that made them, the
        scikit-learn pipeline refit at the selected C (it takes feature vectors), or the
        softmax baseline's :class:`~featclf.train.SoftmaxClassifier` (it takes images); may
        be empty. :func:`featclf.winner.save_winner` saves one with its network.
    networks : mapping of str to network
        Per model: the network its features came from, the trained softmax baseline's
        ``SoftmaxClassifier`` (or, in a transfer run, the frozen pre-trained
        :class:`~featclf.models.Network`); may be empty.

    Examples
    --------
    >>> import pandas as pd
    >>> from featclf.comparison import Comparison, ResultKey
    >>> results = pd.DataFrame({"model": ["m"], "layer": ["penultimate"],
    ...                         "classifier": ["softmax"], "accuracy": [0.5]})
    >>> comparison = Comparison(results, predictions={ResultKey("m", "penultimate",
    ...                                                         "softmax"): [0, 1]},
    ...                         y_true=[0, 0])
    >>> comparison.prediction("m", "penultimate", "softmax").tolist()
    [0, 1]
    >>> comparison.test_images.tolist()
    [0, 1]
    """

    results: pd.DataFrame
    predictions: Mapping[ResultKey, np.ndarray] = field(default_factory=dict)
    y_true: np.ndarray | None = None
    classes: np.ndarray | None = None
    split: Split | None = None
    histories: Mapping[tuple[str, str], pd.DataFrame] = field(default_factory=dict)
    setup: Mapping[str, Any] = field(default_factory=dict)
    timings: pd.DataFrame | None = None
    seconds: float = float("nan")
    skipped: tuple[tuple[str, str], ...] = ()
    scores: Mapping[ResultKey, np.ndarray] = field(default_factory=dict)
    score_kinds: Mapping[ResultKey, str] = field(default_factory=dict)
    images: Any = None
    estimators: Mapping[ResultKey, Any] = field(default_factory=dict)
    networks: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.results, pd.DataFrame):
            raise TypeError(
                f"results must be a pandas DataFrame, got {type(self.results).__name__}."
            )
        keys = {ResultKey(*key): np.asarray(pred) for key, pred in self.predictions.items()}
        object.__setattr__(self, "predictions", keys)
        scores = {ResultKey(*key): np.asarray(s, dtype=np.float64)
                  for key, s in self.scores.items()}  # fmt: skip
        object.__setattr__(self, "scores", scores)
        kinds = {ResultKey(*key): str(kind) for key, kind in self.score_kinds.items()}
        bad = {key: kind for key, kind in kinds.items() if kind not in _SCORE_KINDS}
        if bad:
            raise ValueError(f"score_kinds must be 'probability' or 'decision', got {bad}.")
        object.__setattr__(self, "score_kinds", kinds)
        object.__setattr__(self, "estimators",
                           {ResultKey(*key): est for key, est in self.estimators.items()})
        object.__setattr__(self, "networks", dict(self.networks))
        if self.images is not None:
            object.__setattr__(self, "images", np.asarray(self.images))
        for name in ("y_true", "classes"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, np.asarray(getattr(self, name)))

    def prediction(self, model: str, layer: str, classifier: str) -> np.ndarray | None:
        """The test predictions of one selected classifier, or None when not recorded."""
        return self.predictions.get(ResultKey(model, layer, classifier))

    @property
    def test_images(self) -> np.ndarray | None:
        """Who the test images are, in order: ``images``, else ``split.test``, else 0..n-1.

        None when there are no test labels to count them by.
        """
        if self.images is not None:
            return self.images
        if self.split is not None:
            return np.asarray(self.split.test)
        if self.y_true is not None:
            return np.arange(len(self.y_true))
        return None


def is_svm(classifier: str) -> bool:
    """Whether the classifier registry calls ``classifier`` an SVM.

    Examples
    --------
    >>> is_svm("rbf_svm"), is_svm("logistic"), is_svm("softmax")
    (True, False, False)
    """
    spec = REGISTRY.get(classifier)
    return spec is not None and spec.is_svm


def cv_candidates(rows: pd.DataFrame) -> pd.DataFrame:
    """The rows :func:`chosen_by_cv` chooses among: the SVMs, else every non-baseline row.

    Examples
    --------
    >>> rows = pd.DataFrame({"classifier": ["softmax", "logistic", "rbf_svm"]})
    >>> cv_candidates(rows)["classifier"].tolist()
    ['rbf_svm']
    """
    others = rows[~rows["classifier"].isin(BASELINES)]
    svms = others[others["classifier"].map(is_svm)]
    return svms if not svms.empty else others


def chosen_by_cv(rows: pd.DataFrame, *, among_svms: bool = True) -> pd.Series | None:
    """The row the verdict compares with the softmax head, and that ``save_winner`` saves.

    With ``among_svms``, the candidates are the non-baseline rows that are SVMs (else every
    non-baseline row); the one with the highest ``cv_accuracy`` wins. Rows without a CV
    accuracy rank last; ties go to featclf's classifier order (linear SVM, Crammer-Singer SVM,
    RBF SVM, logistic regression), then to the table's order. Test accuracy plays no part:
    picking the best of several on the test images would bias the comparison made on them.

    Parameters
    ----------
    rows : pandas.DataFrame
        Selected result rows (columns ``classifier`` and ``cv_accuracy``).
    among_svms : bool, default=True
        Restrict the candidates as above; False ranks every row given.

    Returns
    -------
    pandas.Series or None
        The chosen row; None when there is no candidate.

    Examples
    --------
    >>> rows = pd.DataFrame({"classifier": ["softmax", "linear_svm", "rbf_svm", "logistic"],
    ...                      "accuracy": [0.9, 0.99, 0.8, 0.95],
    ...                      "cv_accuracy": [None, 0.91, 0.95, 0.97]})
    >>> chosen_by_cv(rows)["classifier"]   # the CV-best SVM, not the test-best
    'rbf_svm'
    """
    if among_svms:
        rows = cv_candidates(rows)
    if rows.empty:
        return None
    cv = (pd.to_numeric(rows["cv_accuracy"], errors="coerce").to_numpy(dtype=float)
          if "cv_accuracy" in rows else np.full(len(rows), np.nan))
    cv = np.where(np.isnan(cv), -np.inf, cv)
    order = list(REGISTRY)
    ranks = [order.index(c) if c in order else len(order) for c in rows["classifier"]]
    # Highest CV accuracy; ties: classifier order, then table order (lexsort: last key first).
    return rows.iloc[int(np.lexsort((np.arange(len(rows)), ranks, -cv))[0])]
