"""TorchLogisticRegression and TorchLinearSVC: scikit-learn estimators on the torch solver."""

from __future__ import annotations

import warnings
from abc import ABCMeta, abstractmethod
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.extmath import softmax
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from featclf.devices import resolve_device
from featclf.linear._newton import GramPreconditioner, newton_squared_hinge, with_bias_column
from featclf.linear._solver import _lbfgs, _n_threads, _torch_threads
from featclf.params import Interval, StrOptions, check_params

_CONSTRAINTS: dict[str, list] = {
    "C": [Interval(Real, 0, None, closed="neither")],
    "fit_intercept": ["boolean"],
    "tol": [Interval(Real, 0, None, closed="neither")],
    "max_iter": [Interval(Integral, 1, None, closed="left")],
    "device": [str, torch.device],
    "dtype": [StrOptions({"float32", "float64"})],
    "n_threads": [Interval(Integral, 1, None, closed="left"), None],
}


class _TorchLinear(ClassifierMixin, BaseEstimator, metaclass=ABCMeta):
    """Shared fit / predict of the torch linear classifiers (not public)."""

    # LogisticRegression(lbfgs) leaves the intercept free; liblinear (LinearSVC) penalises it
    # as the weight of a constant feature (intercept_scaling=1). Each torch twin does the same.
    _penalize_intercept: bool = False

    @abstractmethod
    def _loss_kind(self, n_classes: int) -> str:
        """The loss :func:`featclf.linear._solver._lbfgs` minimises for ``n_classes`` classes."""

    def _smoothing(self) -> float:
        return 1.0

    def _path_start(self, previous: tuple[np.ndarray, np.ndarray] | None,
                    current: tuple[np.ndarray, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
        """Where a :func:`regularization_path` starts the next C: the last solution."""
        return current

    def _check(self) -> None:
        check_params(self._parameter_constraints, self.get_params(deep=False),
                     type(self).__name__)  # fmt: skip

    def fit(self, X, y) -> _TorchLinear:
        """Fit on the whole matrix (L-BFGS, or truncated Newton for the one-vs-rest SVM).

        Parameters
        ----------
        X : array-like of shape (n_samples, n_features)
            Feature vectors (dense).
        y : array-like of shape (n_samples,)
            Labels; at least two classes.

        Returns
        -------
        self
        """
        self._check()
        return self._fit(X, y, init=None)

    def _fit(self, X, y, *, init: tuple[np.ndarray, np.ndarray] | None,
             shared: dict | None = None) -> _TorchLinear:
        """Fit from ``init`` (a solution in full ``(k, d)`` form) or zeros.

        ``shared``: a dict a :func:`regularization_path` passes to every fit on the same
        matrix, where the Newton solver keeps the matrix with its bias column and the Gram
        preconditioner instead of rebuilding them for every C.
        """
        X, y = validate_data(self, X, y, dtype=[np.float64, np.float32], order="C",
                             y_numeric=False)  # fmt: skip
        check_classification_targets(y)
        classes, y_index = np.unique(y, return_inverse=True)
        if len(classes) < 2:
            raise ValueError(f"{type(self).__name__} needs samples of at least 2 classes in the "
                             f"data, but the data contains only one class: {classes[0]!r}")
        self.classes_ = classes
        kind = self._loss_kind(len(classes))
        device = resolve_device(self.device, owner=type(self).__name__)
        dtype = torch.float32 if self.dtype == "float32" else torch.float64
        n_threads = _n_threads(self.n_threads, device, X.shape[0] * X.shape[1] * len(classes))
        with _torch_threads(n_threads):
            # A read-only array (a memmap) would share memory torch may not write: copy it.
            Xt = torch.as_tensor(X if X.flags.writeable else X.copy()).to(device, dtype)
            target = self._target(kind, y_index, len(classes), device, dtype)
            k = _target_width(kind, classes)
            if init is not None and init[0].shape == (k, X.shape[1]):
                W = torch.as_tensor(init[0]).to(device, dtype).clone()
                b = torch.as_tensor(init[1]).to(device, dtype).clone()
            else:
                W = torch.zeros(k, X.shape[1], device=device, dtype=dtype)
                b = torch.zeros(k, device=device, dtype=dtype)
            if kind == "squared_hinge":
                n_iter, converged = self._newton(Xt, target, W, b, shared)
            else:
                n_iter, converged = _lbfgs(
                    kind, Xt, target, W, b, C=float(self.C), fit_intercept=self.fit_intercept,
                    penalize_intercept=self._penalize_intercept, tol=float(self.tol),
                    max_iter=int(self.max_iter), smoothing=self._smoothing(),
                    warm=init is not None,
                    memory=None if shared is None else shared.setdefault("lbfgs", {}),
                )  # fmt: skip
            W64 = W.detach().to("cpu", torch.float64).numpy()
            b64 = b.detach().to("cpu", torch.float64).numpy()
        # The solution in full (k, d) form, kept for warm starts along a path.
        self._solution = (W64.copy(), b64.copy())
        if kind == "crammer_singer" and len(classes) == 2:
            # scikit-learn's binary convention: one row, the score of classes_[1].
            W64, b64 = W64[1:] - W64[:1], b64[1:] - b64[:1]
        self.coef_ = W64
        self.intercept_ = b64 if self.fit_intercept else np.zeros(len(b64))
        self.n_iter_ = n_iter
        self._converged = converged
        if not converged:
            solver = "Newton-CG" if kind == "squared_hinge" else "L-BFGS"
            warnings.warn(f"{type(self).__name__} ({solver}) did not converge in "
                          f"{self.max_iter} iterations: increase max_iter, or scale the "
                          "features (make_classifier(..., scale='standard'))",
                          ConvergenceWarning, stacklevel=3)  # fmt: skip
        return self

    def _newton(self, Xt: torch.Tensor, target: torch.Tensor, W: torch.Tensor, b: torch.Tensor,
                shared: dict | None) -> tuple[int, bool]:
        """The one-vs-rest squared hinge by truncated Newton, the intercept a weight of ``[X, 1]``
        (liblinear's penalised bias); ``W`` and ``b`` are updated in place."""
        shared = {} if shared is None else shared
        # One path, one matrix: the key only guards against a caller mixing them up.
        key = (tuple(Xt.shape), Xt.dtype, Xt.device, self.fit_intercept)
        if shared.get("key") != key:
            Xa = with_bias_column(Xt) if self.fit_intercept else Xt
            shared.update(key=key, X=Xa, preconditioner=GramPreconditioner.of(Xa))
        Wa = torch.cat([W, b[:, None]], dim=1) if self.fit_intercept else W.clone()
        n_iter, converged, self._n_products = newton_squared_hinge(
            shared["X"], target, Wa, C=float(self.C), tol=float(self.tol),
            max_iter=int(self.max_iter), preconditioner=shared["preconditioner"])
        W.copy_(Wa[:, : W.shape[1]])
        if self.fit_intercept:
            b.copy_(Wa[:, -1])
        return n_iter, converged

    @staticmethod
    def _target(kind: str, y_index: np.ndarray, n_classes: int, device, dtype) -> torch.Tensor:
        if kind in ("logistic", "crammer_singer"):
            return torch.as_tensor(y_index, dtype=torch.long, device=device)
        if n_classes == 2:
            signs = np.where(y_index == 1, 1.0, -1.0)[:, None]
        else:
            signs = np.where(y_index[:, None] == np.arange(n_classes), 1.0, -1.0)
        return torch.as_tensor(signs, dtype=dtype, device=device)

    def decision_function(self, X) -> np.ndarray:
        """Scores ``X @ coef_.T + intercept_``: shape (n,) for two classes, else (n, k).

        Computed in NumPy (float64) from the fitted arrays, so any library that folds
        ``coef_`` and ``intercept_`` (``featclf.serving``) predicts exactly as this does.
        """
        check_is_fitted(self)
        X = validate_data(self, X, dtype=[np.float64, np.float32], reset=False)
        scores = X @ self.coef_.T.astype(X.dtype, copy=False) + self.intercept_
        return scores.ravel() if scores.shape[1] == 1 else scores

    def predict(self, X) -> np.ndarray:
        """The class of the largest score (binary: of a positive score, ``classes_[1]``)."""
        scores = self.decision_function(X)
        index = (scores > 0).astype(int) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[index]


def _target_width(kind: str, classes: np.ndarray) -> int:
    """Rows of ``W`` for a loss: one per class, one for a binary logistic / OvR problem.

    (A binary Crammer-Singer problem keeps its two rows while solving; ``fit`` then folds
    them into scikit-learn's one.)
    """
    return 1 if len(classes) == 2 and kind in ("logistic_binary", "squared_hinge") else len(classes)


class TorchLogisticRegression(_TorchLinear):
    """Multinomial logistic regression solved in torch (L-BFGS, full batch, CPU or CUDA).

    Minimises ``0.5 ||W||^2 + C * sum_i log_loss_i``: the objective of scikit-learn's
    ``LogisticRegression(C=C, solver="lbfgs")`` (binary: one sigmoid score, as there).

    Parameters
    ----------
    C : float, default=1.0
        Inverse L2 regularisation strength, as in scikit-learn.
    fit_intercept : bool, default=True
        Fit an (unpenalised) intercept.
    tol : float, default=1e-4
        Stop when the largest gradient entry of the objective divided by ``C * n`` is below.
    max_iter : int, default=1000
        L-BFGS iteration limit (a ``ConvergenceWarning`` when reached).
    device : str or torch.device, default="auto"
        ``"auto"`` (``FEATCLF_DEVICE``, else CUDA when available, else CPU), ``"cpu"``,
        ``"cuda"``.
    dtype : {"float32", "float64"}, default="float32"
        Arithmetic of the solver; predictions are computed in float64 from ``coef_``.
    n_threads : int or None, default=None
        torch CPU threads during the fit, restored afterwards. None: one thread when a matrix
        product is small (rows x features x classes < 2**24, where threading costs more than
        it saves), else ``torch.get_num_threads()`` (the physical cores).

    Attributes
    ----------
    classes_, coef_ (k, d) or (1, d), intercept_, n_iter_, n_features_in_

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from featclf.linear import TorchLogisticRegression
    >>> X, y = load_iris(return_X_y=True)
    >>> clf = TorchLogisticRegression(C=1.0, device="cpu").fit(X, y)
    >>> clf.coef_.shape, round(clf.score(X, y), 2)
    ((3, 4), 0.97)
    >>> clf.predict_proba(X[:1]).sum().round(6)
    np.float64(1.0)
    """

    _parameter_constraints = _CONSTRAINTS

    def __init__(self, C: float = 1.0, *, fit_intercept: bool = True, tol: float = 1e-4,
                 max_iter: int = 1000, device: str | torch.device = "auto",
                 dtype: str = "float32", n_threads: int | None = None) -> None:  # fmt: skip
        self.C = C
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.device = device
        self.dtype = dtype
        self.n_threads = n_threads

    def _loss_kind(self, n_classes: int) -> str:
        return "logistic_binary" if n_classes == 2 else "logistic"

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (softmax of the scores; binary: sigmoid), shape (n, k)."""
        scores = self.decision_function(X)
        if scores.ndim == 1:
            p = 1.0 / (1.0 + np.exp(-scores))
            return np.column_stack([1.0 - p, p])
        return softmax(scores.astype(np.float64, copy=True))

    def predict_log_proba(self, X) -> np.ndarray:
        """Logarithm of :meth:`predict_proba`."""
        return np.log(self.predict_proba(X))


class TorchLinearSVC(_TorchLinear):
    """Linear SVM solved in torch: squared hinge one-vs-rest, or Crammer-Singer.

    ``multi_class="ovr"`` minimises ``0.5 ||w_j||^2 + C * sum_i max(0, 1 - y_ij s_ij)^2`` for
    every class ``j``: the objective of ``LinearSVC(C=C, loss="squared_hinge")``, solved as
    liblinear's primal solver does, by truncated Newton (all k independent problems side by
    side, one matrix product for all; see :mod:`featclf.linear._newton`), a handful of Newton
    steps at any C. ``"crammer_singer"`` is one joint problem, solved by L-BFGS:
    ``0.5 ||W||^2 + C * sum_i h_i`` with the Crammer-Singer hinge
    ``max_r (1[r != y_i] + s_ir - s_iy_i)`` replaced by its smooth upper bound
    ``smoothing * logsumexp_r(.../smoothing)`` (at most ``smoothing * log k`` above it), so that
    L-BFGS applies: the hinge itself has kinks where L-BFGS stalls.

    Parameters
    ----------
    C : float, default=1.0
        Inverse regularisation strength, as in scikit-learn.
    multi_class : {"ovr", "crammer_singer"}, default="ovr"
        Which multiclass SVM.
    smoothing : float, default=0.05
        Temperature of the smoothed Crammer-Singer hinge (ignored for ``"ovr"``); smaller is
        closer to the hinge and slower to solve.
    tol : float, default=1e-5
        As in :class:`TorchLogisticRegression`, tighter: at a large C the squared hinge's
        objective is ill-conditioned, and at 1e-4 the fit stops short of liblinear's solution
        (measured with L-BFGS, the solver before Newton: 0.4 points of accuracy apart at C=100
        on MNIST-5k features; 0.2 at 1e-5).
    max_iter : int, default=1000
        Newton steps (``"ovr"``) or L-BFGS iterations (``"crammer_singer"``) at most; a
        ``ConvergenceWarning`` when reached.
    fit_intercept, device, dtype, n_threads
        As in :class:`TorchLogisticRegression`. The intercept is penalised like a weight, as
        liblinear does (``LinearSVC(intercept_scaling=1)``).

    Attributes
    ----------
    classes_, coef_ (k, d) or (1, d), intercept_, n_iter_, n_features_in_

    Examples
    --------
    >>> from sklearn.datasets import load_iris
    >>> from featclf.linear import TorchLinearSVC
    >>> X, y = load_iris(return_X_y=True)
    >>> svm = TorchLinearSVC(C=1.0, device="cpu").fit(X, y)
    >>> svm.decision_function(X).shape, svm.score(X, y) > 0.9
    ((150, 3), True)
    >>> TorchLinearSVC(multi_class="crammer_singer", device="cpu").fit(X, y).score(X, y) > 0.9
    True
    """

    _parameter_constraints = {
        **_CONSTRAINTS,
        "multi_class": [StrOptions({"ovr", "crammer_singer"})],
        "smoothing": [Interval(Real, 0, None, closed="neither")],
    }

    def __init__(self, C: float = 1.0, *, multi_class: str = "ovr", smoothing: float = 0.05,
                 fit_intercept: bool = True, tol: float = 1e-5, max_iter: int = 1000,
                 device: str | torch.device = "auto", dtype: str = "float32",
                 n_threads: int | None = None) -> None:  # fmt: skip
        self.C = C
        self.multi_class = multi_class
        self.smoothing = smoothing
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.device = device
        self.dtype = dtype
        self.n_threads = n_threads

    _penalize_intercept = True

    def _loss_kind(self, n_classes: int) -> str:
        return "squared_hinge" if self.multi_class == "ovr" else "crammer_singer"

    def _path_start(self, previous, current):
        """One-vs-rest: half a step on along the path, ``w_i + (w_i - w_{i-1}) / 2``.

        On a log-spaced grid the Newton solver's solutions move smoothly with log C; measured
        on the 45-C probe path (10k x 512 rows, 100 classes) this start costs 16% less than
        the last solution, a whole step on (``w_i + (w_i - w_{i-1})``) 35% more (it
        overshoots where the path bends).
        """
        if self.multi_class != "ovr" or previous is None or previous[0].shape != current[0].shape:
            return current
        return (current[0] + 0.5 * (current[0] - previous[0]),
                current[1] + 0.5 * (current[1] - previous[1]))

    def _smoothing(self) -> float:
        return float(self.smoothing)
