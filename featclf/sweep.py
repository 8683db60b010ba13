"""One classifier's C sweep on one feature set, and its paired comparison with the softmax head.

:func:`sweep` chooses C on training data only (``GridSearchCV``: stratified, seeded folds, or
the validation part when the split has one), then refits every C of the grid on all training
features and scores it on the test features, so the report can draw accuracy against C.
:func:`paired_stats` compares one classifier's test predictions with the softmax head's
(McNemar's test and a bootstrap interval of the accuracy difference, :mod:`featclf.stats`).
:func:`featclf.compare.compare` runs these for every model, layer and classifier.
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, f1_score, log_loss
from sklearn.model_selection import (
    GridSearchCV,
    PredefinedSplit,
    StratifiedGroupKFold,
    StratifiedKFold,
)
from sklearn.pipeline import Pipeline

from featclf.params import StrOptions, check_params
from featclf.pipelines import REGISTRY, make_classifier
from featclf.stats import bootstrap_accuracy_ci, bootstrap_accuracy_diff, mcnemar

__all__ = [
    "PAIRED_COLUMNS", "TORCH_MIN_CELLS", "Features", "Outcome", "paired_stats",
    "predicted_class_score", "resolve_solver", "score", "sweep",
]  # fmt: skip

_C_PARAM = "clf__C"

#: ``solver="auto"`` uses torch when the training matrix has at least this many entries
#: (rows x features), e.g. 2,000 x 512 or 12,000 x 84. Measured on 2 busy cores, the 6-value
#: sweep with 5-fold CV on MNIST-5k LeNet-5 features (84-d): torch's warm-started paths were
#: already 1.4-2x faster at 1,000-4,000 rows (same C chosen, same test accuracy), and the gap
#: grows with the matrix (benchmarks/linear_solvers.py). Below the threshold both take
#: seconds, so scikit-learn, the reference the committed reports were made with, stays the
#: default there (the MNIST-5k demo, 4,000 x 84, keeps its numbers).
TORCH_MIN_CELLS = 1_000_000

#: The columns :func:`paired_stats` fills (NaN on the softmax head's own row).
PAIRED_COLUMNS = (
    "diff_vs_softmax", "diff_ci_low", "diff_ci_high", "mcnemar_b", "mcnemar_c", "mcnemar_p",
)  # fmt: skip


@dataclass
class Outcome:
    """One evaluated classifier: its row (without paired statistics) and test predictions.

    ``score`` is each test image's score of its predicted class (see
    :func:`predicted_class_score`) and ``score_kind`` says which: ``"probability"`` or
    ``"decision"``; None when not computed. ``estimator`` is the fitted classifier that made
    the predictions (the pipeline refit at the selected C, or the softmax network); kept for
    the selected rows only, None otherwise.
    """

    row: dict[str, Any]
    pred: np.ndarray
    score: np.ndarray | None = None
    score_kind: str | None = None
    estimator: Any = None


def predicted_class_score(pred: np.ndarray, classes: np.ndarray, values: np.ndarray
                          ) -> np.ndarray:  # fmt: skip
    """Each image's score of the class it was assigned: one entry of ``values`` per row.

    Parameters
    ----------
    pred : numpy.ndarray of shape (n,)
        Predicted labels, each one of ``classes``.
    classes : numpy.ndarray of shape (k,)
        The estimator's ``classes_``, the column order of ``values``.
    values : numpy.ndarray of shape (n, k) or (n,)
        ``predict_proba`` or ``decision_function`` output. A 1-D decision function (a binary
        scikit-learn classifier) is the score of ``classes[1]``; the predicted class's score
        is then that value for ``classes[1]`` and its negative for ``classes[0]``, the
        margin in favour of the class predicted.

    Returns
    -------
    numpy.ndarray of shape (n,), float64

    Examples
    --------
    >>> import numpy as np
    >>> from featclf.sweep import predicted_class_score
    >>> proba = np.array([[0.9, 0.1], [0.3, 0.7]])
    >>> predicted_class_score(np.array(["a", "b"]), np.array(["a", "b"]), proba).tolist()
    [0.9, 0.7]
    >>> predicted_class_score(np.array([0, 1]), np.array([0, 1]), np.array([-2.0, 0.5])).tolist()
    [2.0, 0.5]
    """
    values = np.asarray(values, dtype=np.float64)
    column = {c: i for i, c in enumerate(np.asarray(classes).tolist())}
    index = np.fromiter((column[p] for p in np.asarray(pred).tolist()), dtype=np.intp,
                        count=len(pred))  # fmt: skip
    if values.ndim == 1:
        return np.where(index == 1, values, -values)
    return values[np.arange(len(index)), index]


def score(
    y_true: np.ndarray, pred: np.ndarray, proba: np.ndarray | None, classes: np.ndarray, *,
    n_resamples: int, confidence: float, random_state: int | None,
) -> dict[str, float]:  # fmt: skip
    """Accuracy with its bootstrap interval, macro-F1 and log-loss (NaN without proba).

    Examples
    --------
    >>> import numpy as np
    >>> from featclf.sweep import score
    >>> row = score(np.array([0, 1, 1, 0]), np.array([0, 1, 0, 0]), None, np.array([0, 1]),
    ...             n_resamples=100, confidence=0.95, random_state=0)
    >>> row["accuracy"], bool(np.isnan(row["log_loss"]))
    (0.75, True)
    """
    ci = bootstrap_accuracy_ci(
        y_true, pred, n_resamples=n_resamples, confidence=confidence, random_state=random_state
    )
    return {
        "accuracy": float(accuracy_score(y_true, pred)),
        "accuracy_ci_low": ci.ci_low,
        "accuracy_ci_high": ci.ci_high,
        "macro_f1": float(f1_score(y_true, pred, average="macro", labels=classes,
                                   zero_division=0)),
        "log_loss": float(log_loss(y_true, proba, labels=classes)) if proba is not None
        else math.nan,
    }  # fmt: skip


def _fit_one_C(
    pipeline: Pipeline, C: float, F_train: np.ndarray, y_train: np.ndarray, F_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None, float, float, bool, np.ndarray, str, Pipeline]:
    """Fit one C on all training features; predict the test features (runs in a worker).

    Also returns each test image's score of its predicted class (the probability when the
    classifier has ``predict_proba``, else its ``decision_function`` value) and the fitted
    pipeline itself.
    """
    estimator = clone(pipeline).set_params(**{_C_PARAM: C})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        start = time.perf_counter()
        estimator.fit(F_train, y_train)
        fit_time = time.perf_counter() - start
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    start = time.perf_counter()
    pred = estimator.predict(F_test)
    proba = estimator.predict_proba(F_test) if hasattr(estimator, "predict_proba") else None
    predict_time = time.perf_counter() - start
    if proba is not None:
        values, kind = proba, "probability"
    else:  # outside the timing: predict_time_s stays the time of predict (and predict_proba)
        values, kind = estimator.decision_function(F_test), "decision"
    scores = predicted_class_score(pred, estimator.classes_, values)
    return pred, proba, fit_time, predict_time, converged, scores, kind, estimator


@dataclass
class Features:
    """Feature matrices of one network layer for the parts of the split."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    seconds: float

    @property
    def n_images(self) -> int:
        return len(self.train) + len(self.validation) + len(self.test)


def resolve_solver(solver: str, name: str, n_rows: int, n_features: int) -> str:
    """The solver :func:`sweep` uses: ``"torch"`` or ``"sklearn"``.

    ``"auto"`` is ``"torch"`` when the classifier has a torch twin and the training matrix has
    at least :data:`TORCH_MIN_CELLS` entries. A classifier without a torch twin (the RBF SVM)
    always uses scikit-learn, whatever is asked, so one ``solver`` serves a whole comparison.

    Examples
    --------
    >>> from featclf.sweep import resolve_solver
    >>> resolve_solver("auto", "logistic", 4_000, 84), resolve_solver("auto", "logistic",
    ...                                                                50_000, 512)
    ('sklearn', 'torch')
    >>> resolve_solver("torch", "rbf_svm", 50_000, 512)
    'sklearn'
    """
    check_params({"solver": [StrOptions({"auto", "sklearn", "torch"})]}, {"solver": solver},
                 "sweep")  # fmt: skip
    if not REGISTRY[name].torch or solver == "sklearn":
        return "sklearn"
    return "torch" if solver == "torch" or n_rows * n_features >= TORCH_MIN_CELLS else "sklearn"


def _split_pipeline(pipeline: Pipeline) -> tuple[list[tuple[str, Any]], Any]:
    """``(the steps before the classifier, the classifier)``, unfitted copies."""
    return [(n, clone(s)) for n, s in pipeline.steps[:-1]], clone(pipeline.steps[-1][1])


def _torch_path(pipeline: Pipeline, grid: Sequence[float], X: np.ndarray, y: np.ndarray
                ) -> tuple[list[tuple[str, Any]], list[Any]]:  # fmt: skip
    """Fit the preprocessing once, then the whole C grid warm-started (featclf.linear)."""
    from featclf.linear import regularization_path  # imports torch: only on this path

    steps, clf = _split_pipeline(pipeline)
    if steps:
        X = Pipeline(steps).fit_transform(X, y)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # each step records its own
        return steps, regularization_path(clf, X, y, grid)


def _torch_sweep(
    pipeline: Pipeline, grid: Sequence[float], splits: list[tuple[np.ndarray, np.ndarray]],
    F_select: np.ndarray, y_select: np.ndarray, F_train: np.ndarray, y_train: np.ndarray,
    F_test: np.ndarray,
) -> tuple[np.ndarray, list]:  # fmt: skip
    """Cross-validation accuracies and one fit per C, each a warm-started path over the grid.

    One path per fold and one on all training features: (folds + 1) paths in all, each
    costing little more than one fit. The folds run one after another, torch using every
    CPU thread for each (joblib workers on top would only fight over the cores).
    """
    fold_scores = []
    for train, held_out in splits:
        steps, path = _torch_path(pipeline, grid, F_select[train], y_select[train])
        X_held = Pipeline(steps).transform(F_select[held_out]) if steps else F_select[held_out]
        fold_scores.append([accuracy_score(y_select[held_out], step.estimator.predict(X_held))
                            for step in path])  # fmt: skip
    cv_scores = np.mean(fold_scores, axis=0)
    steps, path = _torch_path(pipeline, grid, F_train, y_train)
    fits = []
    for step in path:
        estimator = Pipeline([*steps, ("clf", step.estimator)])
        start = time.perf_counter()
        pred = estimator.predict(F_test)
        proba = estimator.predict_proba(F_test) if hasattr(estimator, "predict_proba") else None
        predict_time = time.perf_counter() - start
        values, kind = ((proba, "probability") if proba is not None
                        else (estimator.decision_function(F_test), "decision"))  # fmt: skip
        scores = predicted_class_score(pred, estimator.classes_, values)
        fits.append((pred, proba, step.seconds, predict_time, step.converged, scores, kind,
                     estimator))  # fmt: skip
    return cv_scores, fits


def sweep(
    name: str, features: Features, y_train: np.ndarray, y_val: np.ndarray,
    y_test: np.ndarray, classes: np.ndarray, *, grid: Sequence[float],
    options: Mapping[str, Any], cv: int, n_jobs: int | None, random_state: int | None,
    n_resamples: int, confidence: float, solver: str = "auto",
    groups: np.ndarray | None = None, scored: np.ndarray | None = None,
) -> list[Outcome]:  # fmt: skip
    """Select C for one classifier on training data only; score every C on the test features.

    Parameters
    ----------
    solver : {"auto", "sklearn", "torch"}, default="auto"
        ``"torch"``: the classifier's :mod:`featclf.linear` twin (same objective, same C),
        each cross-validation fold and the final fits one warm-started path over ``grid``
        (:func:`featclf.linear.regularization_path`); a row's ``fit_time_s`` is then its own
        step along the path. ``"auto"``: torch from :data:`TORCH_MIN_CELLS` training entries
        on (:func:`resolve_solver`). Classifiers without a twin (``rbf_svm``) use
        scikit-learn. Each row says which ran (``solver``).
    groups : numpy.ndarray of shape (len(y_train),) or None, default=None
        One group id per training row (e.g. the image that augmented views come from): the
        cross-validation folds are then ``StratifiedGroupKFold``, so no group is split across
        folds. Ignored when the split has a validation part (the folds are then fixed).
    scored : numpy.ndarray of bool, shape (len(y_train),), or None, default=None
        Which training rows a held-out fold is scored on (None: all). Rows outside it are
        trained on but never scored: augmented views, when the test is on clean images only.
        Ignored when the split has a validation part.

    Returns
    -------
    list of Outcome
        One per value of ``grid``, in order; exactly one has ``row["selected"]`` True: the C
        with the best cross-validation (or validation) accuracy, the smallest on ties.

    Examples
    --------
    >>> import numpy as np
    >>> from featclf.sweep import Features, sweep
    >>> rng = np.random.default_rng(0)
    >>> y = np.repeat([0, 1], 20)
    >>> F = (rng.normal(size=(40, 3)) + y[:, None]).astype(np.float32)
    >>> features = Features(F[::2], F[:0], F[1::2], seconds=0.1)
    >>> outcomes = sweep("logistic", features, y[::2], y[:0], y[1::2], np.array([0, 1]),
    ...                  grid=[0.1, 1.0], options={}, cv=2, n_jobs=None, random_state=0,
    ...                  n_resamples=50, confidence=0.95)
    >>> [o.row["C"] for o in outcomes], sum(o.row["selected"] for o in outcomes)
    ([0.1, 1.0], 1)
    """
    for what, rows in (("groups", groups), ("scored", scored)):
        if rows is not None and np.shape(rows) != (len(y_train),):
            raise ValueError(f"{what} has shape {np.shape(rows)}: give one per training row, "
                             f"shape ({len(y_train)},)")
    used = resolve_solver(solver, name, *features.train.shape)
    pipeline = make_classifier(name, **options, **({"solver": "torch"} if used == "torch"
                                                    else {}))  # fmt: skip
    if len(features.validation):
        # A validation part: fit on the training features, score on the validation features.
        F_select = np.concatenate([features.train, features.validation])
        y_select = np.concatenate([y_train, y_val])
        splitter: Any = PredefinedSplit(
            np.r_[np.full(len(y_train), -1), np.zeros(len(y_val), dtype=int)]
        )
    elif groups is not None:
        # Rows of one group (views of one image) stay in one fold: no leak into the held-out.
        F_select, y_select = features.train, y_train
        splitter = StratifiedGroupKFold(n_splits=cv, shuffle=True, random_state=random_state)
    else:
        F_select, y_select = features.train, y_train
        splitter = StratifiedKFold(n_splits=cv, shuffle=True, random_state=random_state)
    split_groups = groups if groups is not None and not len(features.validation) else None
    splits = list(splitter.split(F_select, y_select, split_groups))
    if scored is not None and not len(features.validation):
        keep = np.asarray(scored, dtype=bool)
        splits = [(fit, held[keep[held]]) for fit, held in splits]
    if used == "torch":
        cv_scores, fits = _torch_sweep(pipeline, grid, splits, F_select, y_select,
                                       features.train, y_train, features.test)  # fmt: skip
        # GridSearchCV's choice: the best mean accuracy, the first (smallest C) on ties.
        chosen = int(np.flatnonzero(cv_scores == cv_scores.max())[0])
    else:
        search = GridSearchCV(
            pipeline, {_C_PARAM: list(grid)}, cv=splits, n_jobs=n_jobs, refit=False,
            error_score="raise",
        )  # fmt: skip
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            search.fit(F_select, y_select)
        cv_scores = search.cv_results_["mean_test_score"]
        chosen = int(search.best_index_)  # ties: the first, i.e. the smallest C

        fits = Parallel(n_jobs=n_jobs)(
            delayed(_fit_one_C)(pipeline, C, features.train, y_train, features.test)
            for C in grid
        )  # fmt: skip
    outcomes = []
    for i, (C, fit) in enumerate(zip(grid, fits)):
        pred, proba, fit_time, predict_time, converged, scores, kind, estimator = fit
        row = {
            "classifier": name,
            "C": float(C),
            "selected": i == chosen,
            "cv_accuracy": float(cv_scores[i]),
            **score(y_test, pred, proba, classes, n_resamples=n_resamples,
                     confidence=confidence, random_state=random_state),
            "fit_time_s": fit_time,
            "predict_time_s": predict_time,
            "extract_time_s": features.seconds,
            "extract_images_per_s": features.n_images / features.seconds
            if features.seconds > 0 else math.nan,
            "n_features": int(features.train.shape[1]),
            "converged": converged,
            "solver": used,
        }  # fmt: skip
        # Only the selected fit is kept: the others are scored and dropped (memory).
        outcomes.append(Outcome(row, np.asarray(pred), scores, kind,
                                estimator if i == chosen else None))
    return outcomes


def paired_stats(
    outcome: Outcome, reference: np.ndarray, y_test: np.ndarray, *, n_resamples: int,
    confidence: float, random_state: int | None,
) -> dict[str, float]:  # fmt: skip
    """McNemar and the bootstrap interval of (this classifier's accuracy - the softmax head's).

    Examples
    --------
    >>> import numpy as np
    >>> from featclf.sweep import Outcome, paired_stats
    >>> y = np.array([0, 1, 1, 0, 1])
    >>> stats = paired_stats(Outcome({}, np.array([0, 1, 1, 0, 0])), np.array([0, 1, 0, 0, 0]),
    ...                      y, n_resamples=100, confidence=0.95, random_state=0)
    >>> stats["diff_vs_softmax"], stats["mcnemar_b"], stats["mcnemar_c"]
    (0.2, 1, 0)
    """
    test = mcnemar(y_test, outcome.pred, reference)
    diff = bootstrap_accuracy_diff(
        y_test, outcome.pred, reference, n_resamples=n_resamples, confidence=confidence,
        random_state=random_state,
    )  # fmt: skip
    return {
        "diff_vs_softmax": diff.diff,
        "diff_ci_low": diff.ci_low,
        "diff_ci_high": diff.ci_high,
        "mcnemar_b": test.b,
        "mcnemar_c": test.c,
        "mcnemar_p": test.pvalue,
    }
