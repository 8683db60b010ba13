"""``Comparison``: what one :func:`featclf.compare.compare` run found, as one object.

:func:`~featclf.compare.compare` returns it and :func:`featclf.report.write_report` reads it:
the results table, the test predictions of every selected classifier keyed by
:class:`ResultKey` ``(model, layer, classifier)``, the true test labels, the classes, the split,
the softmax networks' training histories, the setup and where the time went.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import pandas as pd

from featclf.model_selection import Split

__all__ = ["TIMING_TABLE_COLUMNS", "Comparison", "ResultKey"]

#: Columns of :attr:`Comparison.timings`, in order.
TIMING_TABLE_COLUMNS: tuple[str, ...] = (
    "phase", "model", "layer", "classifier", "seconds", "n_computed", "n_reused",
)  # fmt: skip


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
        classifier's C search and refits on one layer).
    seconds : float
        Wall-clock time of the whole run.
    skipped : tuple of (str, str)
        The image files left out because they could not be read (``on_error="skip"``):
        (path, reason) pairs.

    Examples
    --------
    >>> import pandas as pd
    >>> from featclf.comparison import Comparison, ResultKey
    >>> results = pd.DataFrame({"model": ["m"], "layer": ["penultimate"],
    ...                         "classifier": ["softmax"], "accuracy": [0.5]})
    >>> comparison = Comparison(results, predictions={ResultKey("m", "penultimate",
    ...                                                         "softmax"): [0, 1]})
    >>> comparison.prediction("m", "penultimate", "softmax").tolist()
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

    def __post_init__(self) -> None:
        if not isinstance(self.results, pd.DataFrame):
            raise TypeError(
                f"results must be a pandas DataFrame, got {type(self.results).__name__}."
            )
        keys = {ResultKey(*key): np.asarray(pred) for key, pred in self.predictions.items()}
        object.__setattr__(self, "predictions", keys)
        for name in ("y_true", "classes"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, np.asarray(getattr(self, name)))

    def prediction(self, model: str, layer: str, classifier: str) -> np.ndarray | None:
        """The test predictions of one selected classifier, or None when not recorded."""
        return self.predictions.get(ResultKey(model, layer, classifier))
