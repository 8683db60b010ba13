"""The warm-started regularisation path and the linear-probe protocol."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from numbers import Real

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin, clone
from sklearn.model_selection import train_test_split
from sklearn.utils import check_X_y
from sklearn.utils.metaestimators import available_if
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from featclf.linear._estimators import TorchLogisticRegression, _TorchLinear
from featclf.params import Interval, check_params

#: The linear-probe grid of DINOv2 and Kornblith et al. (2019): 45 values of C, 1e-6 .. 1e5.
PROBE_GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-6, 5, 45))


@dataclass(frozen=True)
class PathStep:
    """One C of a :func:`regularization_path`: its fitted estimator and its cost."""

    C: float
    estimator: _TorchLinear
    seconds: float
    n_iter: int
    converged: bool


def regularization_path(estimator: _TorchLinear, X, y, Cs: Sequence[float]) -> list[PathStep]:
    """Fit ``estimator`` at every C of ``Cs``, each fit warm-started from the previous one.

    The fits run from the smallest C to the largest: a small C is strongly regularised, so
    its problem is well conditioned and its solution near zero (a few iterations from a zero
    start); the solution then grows smoothly with C, so each fit starts close to its answer.
    Going the other way would begin with the hardest problem (large C: nearly unregularised,
    ill-conditioned, many iterations) from nothing. The one-vs-rest SVM starts half a step
    beyond the last solution (``TorchLinearSVC._path_start``) and builds its Newton
    preconditioner (the Gram matrix of ``X``) once for the whole path. An L-BFGS fit
    (logistic regression, Crammer-Singer) starts from the last one's curvature pairs too, and
    runs until its gradient is under 0.3x its start's as well as below ``tol``: at a large C
    the last solution already meets ``tol`` for the next C while far from its optimum.

    Parameters
    ----------
    estimator : TorchLogisticRegression or TorchLinearSVC
        The settings; cloned for every C (its own C is ignored).
    X : array-like of shape (n_samples, n_features)
    y : array-like of shape (n_samples,)
    Cs : sequence of float
        The values of C, in any order.

    Returns
    -------
    list of PathStep
        In the order of ``Cs``; ``seconds`` and ``n_iter`` are each step's own cost.

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from featclf.linear import TorchLogisticRegression, regularization_path
    >>> X, y = load_iris(return_X_y=True)
    >>> path = regularization_path(TorchLogisticRegression(device="cpu"), X, y, [1.0, 0.01])
    >>> [step.C for step in path], path[0].estimator.score(X, y) > path[1].estimator.score(X, y)
    ([1.0, 0.01], True)
    """
    if not isinstance(estimator, _TorchLinear):
        raise TypeError(f"regularization_path takes TorchLogisticRegression or TorchLinearSVC, "
                        f"not {type(estimator).__name__}")
    Cs = [float(c) for c in Cs]
    if not Cs:
        raise ValueError("Cs is empty: give at least one value of C")
    estimator._check()
    steps: dict[int, PathStep] = {}
    init = previous = None
    shared: dict = {}  # what every fit on this X can reuse (the Newton solver's preconditioner)
    # check_X_y, not validate_data: the template estimator must stay unfitted.
    X, y = check_X_y(X, y, dtype=[np.float64, np.float32], order="C")
    for i in sorted(range(len(Cs)), key=Cs.__getitem__):
        fitted = clone(estimator).set_params(C=Cs[i])
        fitted._check()
        start = time.perf_counter()
        fitted._fit(X, y, init=init, shared=shared)
        steps[i] = PathStep(Cs[i], fitted, time.perf_counter() - start, fitted.n_iter_,
                            fitted._converged)
        init = estimator._path_start(previous, fitted._solution)
        previous = fitted._solution
    return [steps[i] for i in range(len(Cs))]


class LinearProbe(ClassifierMixin, BaseEstimator):
    """The linear-probe protocol: C chosen on a validation split, then refit on everything.

    As in DINOv2 and Kornblith et al. (2019): the whole grid (by default :data:`PROBE_GRID`,
    45 values of C from 1e-6 to 1e5) is fitted warm-started on a stratified training part
    (:func:`regularization_path`), scored on the held-out validation part, and the C with the
    best validation accuracy (the smallest on ties) is refit on train + validation, started
    from that C's solution.

    Parameters
    ----------
    estimator : TorchLogisticRegression or TorchLinearSVC or None, default=None
        The classifier and its settings; None means ``TorchLogisticRegression()``.
    Cs : sequence of float or None, default=None
        The grid; None means :data:`PROBE_GRID`.
    validation_fraction : float, default=0.2
        Share of the training rows held out to choose C (stratified).
    random_state : int or None, default=0
        Seed of the validation split.

    Attributes
    ----------
    C_ : float
        The chosen C.
    validation_scores_ : numpy.ndarray of shape (len(Cs),)
        Validation accuracy at every C.
    estimator_ : the classifier refit at ``C_`` on all rows.
    classes_, coef_, intercept_, n_features_in_
        Those of ``estimator_``.

    Examples
    --------
    >>> from sklearn.datasets import load_digits
    >>> from featclf.linear import LinearProbe, TorchLogisticRegression
    >>> X, y = load_digits(return_X_y=True)
    >>> probe = LinearProbe(TorchLogisticRegression(device="cpu"), Cs=[1e-4, 1e-2, 1.0]).fit(X, y)
    >>> probe.C_ in (1e-2, 1.0), probe.validation_scores_.shape
    (True, (3,))
    """

    _parameter_constraints: dict[str, list] = {
        "estimator": [_TorchLinear, None],
        "Cs": ["array-like", None],
        "validation_fraction": [Interval(Real, 0, 1, closed="neither")],
        "random_state": ["random_state"],
    }

    def __init__(self, estimator: _TorchLinear | None = None, *,
                 Cs: Sequence[float] | None = None, validation_fraction: float = 0.2,
                 random_state: int | None = 0) -> None:  # fmt: skip
        self.estimator = estimator
        self.Cs = Cs
        self.validation_fraction = validation_fraction
        self.random_state = random_state

    def fit(self, X, y) -> LinearProbe:
        """Choose C on a validation split of ``(X, y)``, then refit on all of it."""
        check_params(self._parameter_constraints, self.get_params(deep=False), "LinearProbe")
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], order="C")
        check_classification_targets(y)
        base = TorchLogisticRegression() if self.estimator is None else self.estimator
        Cs = list(PROBE_GRID if self.Cs is None else self.Cs)
        X_fit, X_val, y_fit, y_val = train_test_split(
            X, y, test_size=self.validation_fraction, stratify=y, random_state=self.random_state
        )
        path = regularization_path(base, X_fit, y_fit, Cs)
        self.validation_scores_ = np.array([s.estimator.score(X_val, y_val) for s in path])
        tied = np.flatnonzero(self.validation_scores_ == self.validation_scores_.max())
        best = int(min(tied, key=Cs.__getitem__))  # ties: the smallest C, the simplest model
        self.C_ = float(Cs[best])
        final = clone(base).set_params(C=self.C_)
        final._check()
        self.estimator_ = final._fit(X, y, init=path[best].estimator._solution)
        self.classes_ = self.estimator_.classes_
        self.coef_ = self.estimator_.coef_
        self.intercept_ = self.estimator_.intercept_
        return self

    def decision_function(self, X) -> np.ndarray:
        """The refit classifier's scores."""
        check_is_fitted(self)
        return self.estimator_.decision_function(X)

    def predict(self, X) -> np.ndarray:
        """The refit classifier's predictions."""
        check_is_fitted(self)
        return self.estimator_.predict(X)

    @available_if(lambda self: self.estimator is None or hasattr(self.estimator,
                                                                 "predict_proba"))
    def predict_proba(self, X) -> np.ndarray:
        """The refit classifier's probabilities (logistic regression only)."""
        check_is_fitted(self)
        return self.estimator_.predict_proba(X)
