"""The classifier registry, and the scikit-learn pipelines that classify deep features.

:data:`REGISTRY` is the one place a classifier name is defined: its report label and colour,
its builder, its C range and whether it is an SVM (:class:`ClassifierSpec`). ``featclf.compare``,
``featclf.report`` and ``featclf compare`` read it.

Every builder returns a plain :class:`sklearn.pipeline.Pipeline` whose steps have fixed names,
so one parameter grid fits all of them::

    l2     Normalizer()                       (l2_normalize=True)
    scale  StandardScaler()                   (scale="standard")
    pca    PCA(n_components=pca, whiten=...)  (pca is not None)
    clf    the classifier                     (always; its C is ``clf__C``)
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from numbers import Integral, Real
from typing import Any, Literal

import numpy as np
from sklearn.base import BaseEstimator
from sklearn.calibration import CalibratedClassifierCV
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.svm import SVC, LinearSVC

from featclf.params import Interval, InvalidParameterError, StrOptions, check_params

__all__ = [
    "BASELINES",
    "CLASSIFIERS",
    "REGISTRY",
    "SVM_KINDS",
    "ClassifierSpec",
    "c_grid",
    "classifier_spec",
    "make_classifier",
    "make_logistic",
    "make_svm",
]


@dataclass(frozen=True)
class ClassifierSpec:
    """Everything featclf knows about one classifier name: how to build it and show it.

    Attributes
    ----------
    name : str
        The name in ``compare(classifiers=...)``, ``featclf compare --classifier`` and the
        ``classifier`` column of the results.
    label : str
        Its name in reports ("linear SVM").
    color : str
        Its matplotlib colour in every plot.
    builder : callable or None
        ``builder(C, **options) -> Pipeline``; None for a softmax baseline (the CNN itself,
        :class:`featclf.train.SoftmaxClassifier`).
    c_range : tuple of int or None
        log10 of the smallest and largest C of its sweep (:func:`c_grid`); None without a C.
    is_svm : bool
        Whether it is a support vector machine (the report's verdict compares the best SVM with
        the softmax head).
    torch : bool
        Whether its builder takes ``solver="torch"`` (a :mod:`featclf.linear` twin solved in
        torch, warm-started along the C grid by :func:`featclf.sweep.sweep`).
    """

    name: str
    label: str
    color: str
    builder: Callable[..., Pipeline] | None = None
    c_range: tuple[int, int] | None = None
    is_svm: bool = False
    torch: bool = False


# LinearSVC (liblinear) on unnormalised deep features often needs more than its default 1000.
_LINEAR_SVC_MAX_ITER = 10_000

def _preprocessing(
    *,
    scale: Literal["standard"] | None,
    l2_normalize: bool,
    pca: int | float | str | None,
    whiten: bool,
    random_state: int | None,
) -> list[tuple[str, BaseEstimator]]:
    """Build the steps before the classifier (shared by every builder)."""
    if whiten and pca is None:
        raise ValueError(
            "whiten=True needs a PCA step: pass pca=<n_components> (an int, a variance fraction "
            "in (0, 1), or 'mle') together with whiten=True."
        )
    steps: list[tuple[str, BaseEstimator]] = []
    if l2_normalize:
        steps.append(("l2", Normalizer(norm="l2")))
    if scale == "standard":
        steps.append(("scale", StandardScaler()))
    if pca is not None:
        steps.append(("pca", PCA(n_components=pca, whiten=whiten, random_state=random_state)))
    return steps


_COMMON_CONSTRAINTS: dict[str, list] = {
    "C": [Interval(Real, 0, None, closed="neither")],
    "scale": [StrOptions({"standard"}), None],
    "l2_normalize": ["boolean"],
    "pca": [Interval(Integral, 1, None, closed="left"), Interval(Real, 0, 1, closed="neither"),
            StrOptions({"mle"}), None],
    "whiten": ["boolean"],
    "random_state": ["random_state"],
}  # fmt: skip
_SOLVERS = ("sklearn", "torch")
_COMMON_CONSTRAINTS["solver"] = [StrOptions(set(_SOLVERS))]
_SVM_CONSTRAINTS = {
    **_COMMON_CONSTRAINTS,
    "kind": [StrOptions({"linear", "crammer_singer", "rbf"})],
    "probability": ["boolean"],
    "max_iter": [Interval(Integral, 1, None, closed="left"), None],
}
_LOGISTIC_CONSTRAINTS = {
    **_COMMON_CONSTRAINTS, "max_iter": [Interval(Integral, 1, None, closed="left")],
}  # fmt: skip


def make_svm(
    kind: str = "linear",
    C: float = 1.0,
    *,
    scale: Literal["standard"] | None = "standard",
    l2_normalize: bool = False,
    pca: int | float | str | None = None,
    whiten: bool = False,
    probability: bool = False,
    random_state: int | None = 0,
    max_iter: int | None = None,
    solver: Literal["sklearn", "torch"] = "sklearn",
) -> Pipeline:
    """Build a support-vector-machine pipeline for feature vectors.

    Parameters
    ----------
    kind : {"linear", "crammer_singer", "rbf"}, default="linear"
        ``"linear"``: :class:`~sklearn.svm.LinearSVC`, one-vs-rest, ``dual="auto"``.
        ``"crammer_singer"``: ``LinearSVC(multi_class="crammer_singer")``, one joint multiclass
        problem. ``"rbf"``: ``SVC(kernel="rbf", gamma="scale")`` (libsvm, one-vs-one).
    C : float, default=1.0
        Inverse regularisation strength; the grid parameter is ``clf__C``.
    scale : {"standard"} or None, default="standard"
        ``"standard"`` adds a ``StandardScaler`` step named ``scale``; None skips it.
    l2_normalize : bool, default=False
        Add a ``Normalizer()`` step named ``l2`` first (each vector scaled to unit L2 norm).
    pca : int, float, "mle" or None, default=None
        Add a ``PCA(n_components=pca)`` step named ``pca`` after scaling.
    whiten : bool, default=False
        Whiten the PCA components; needs ``pca``.
    probability : bool, default=False
        Only for ``kind="rbf"``: wrap the SVC in
        ``CalibratedClassifierCV(SVC(...), method="sigmoid", ensemble=False)`` (Platt scaling with
        5-fold CV, what ``SVC(probability=True)`` did; that option is deprecated in
        scikit-learn 1.9) so the pipeline has ``predict_proba``. The grid parameter then is
        ``clf__estimator__C``.
    random_state : int or None, default=0
        Seed of the classifier and of PCA's randomised solver.
    max_iter : int or None, default=None
        Iteration limit of the solver; None means 10 000 for ``LinearSVC``, no limit for
        ``SVC`` and 1000 L-BFGS iterations for ``solver="torch"``.
    solver : {"sklearn", "torch"}, default="sklearn"
        ``"torch"``: the linear kinds become :class:`featclf.linear.TorchLinearSVC` (same
        objective and C, squared hinge one-vs-rest or smoothed Crammer-Singer, solved by
        L-BFGS on all CPU threads or a GPU). Not available for ``kind="rbf"``.

    Returns
    -------
    sklearn.pipeline.Pipeline
        Unfitted; the classifier is the step named ``clf``.

    Examples
    --------
    >>> from featclf.pipelines import make_svm
    >>> pipe = make_svm("linear", C=0.1, pca=32, whiten=True)
    >>> list(pipe.named_steps)
    ['scale', 'pca', 'clf']
    >>> pipe.get_params()["clf__C"]
    0.1
    >>> make_svm("rbf", scale=None).named_steps["clf"]
    SVC(random_state=0)
    """
    check_params(_SVM_CONSTRAINTS, {
        "kind": kind, "C": C, "scale": scale, "l2_normalize": l2_normalize, "pca": pca,
        "whiten": whiten, "probability": probability, "random_state": random_state,
        "max_iter": max_iter, "solver": solver}, "make_svm")  # fmt: skip
    if probability and kind != "rbf":
        raise ValueError(
            f"probability=True is only available for kind='rbf', not {kind!r}; use "
            "make_logistic() for a linear model with probabilities."
        )
    steps = _preprocessing(
        scale=scale, l2_normalize=l2_normalize, pca=pca, whiten=whiten, random_state=random_state
    )
    if solver == "torch" and kind == "rbf":
        raise ValueError("solver='torch' solves linear SVMs only; kind='rbf' needs "
                         "solver='sklearn' (libsvm)")
    clf: BaseEstimator
    if solver == "torch":
        from featclf.linear import TorchLinearSVC  # torch costs seconds to import: only here

        clf = TorchLinearSVC(C=C, multi_class="crammer_singer" if kind == "crammer_singer"
                             else "ovr", max_iter=1000 if max_iter is None else max_iter)
    elif kind == "rbf":
        clf = SVC(
            C=C,
            kernel="rbf",
            gamma="scale",
            random_state=random_state,
            max_iter=-1 if max_iter is None else max_iter,
        )
        if probability:
            clf = CalibratedClassifierCV(clf, method="sigmoid", cv=5, ensemble=False)
    else:
        clf = LinearSVC(
            C=C,
            dual="auto",
            random_state=random_state,
            multi_class="crammer_singer" if kind == "crammer_singer" else "ovr",
            max_iter=_LINEAR_SVC_MAX_ITER if max_iter is None else max_iter,
        )
    return Pipeline([*steps, ("clf", clf)])


def make_logistic(
    C: float = 1.0,
    *,
    scale: Literal["standard"] | None = "standard",
    l2_normalize: bool = False,
    pca: int | float | str | None = None,
    whiten: bool = False,
    max_iter: int = 1000,
    random_state: int | None = 0,
    solver: Literal["sklearn", "torch"] = "sklearn",
) -> Pipeline:
    """Build a multinomial logistic-regression pipeline for feature vectors.

    A softmax layer trained on frozen features: the linear counterpart of the CNN's own head.

    Parameters
    ----------
    C : float, default=1.0
        Inverse L2 regularisation strength; the grid parameter is ``clf__C``.
    scale : {"standard"} or None, default="standard"
        ``"standard"`` adds a ``StandardScaler`` step named ``scale``; None skips it.
    l2_normalize : bool, default=False
        Add a ``Normalizer()`` step named ``l2`` first.
    pca : int, float, "mle" or None, default=None
        Add a ``PCA(n_components=pca)`` step named ``pca`` after scaling.
    whiten : bool, default=False
        Whiten the PCA components; needs ``pca``.
    max_iter : int, default=1000
        Iteration limit of the lbfgs solver.
    random_state : int or None, default=0
        Seed passed to the estimators.
    solver : {"sklearn", "torch"}, default="sklearn"
        ``"torch"``: :class:`featclf.linear.TorchLogisticRegression` (the same objective and
        C, L-BFGS on all CPU threads or a GPU) instead of ``LogisticRegression``.

    Returns
    -------
    sklearn.pipeline.Pipeline
        Unfitted; ``LogisticRegression(solver="lbfgs")`` (multinomial for more than two
        classes) is the step named ``clf``.

    Examples
    --------
    >>> from featclf.pipelines import make_logistic
    >>> pipe = make_logistic(C=10.0, l2_normalize=True)
    >>> list(pipe.named_steps)
    ['l2', 'scale', 'clf']
    >>> pipe.named_steps["clf"].solver
    'lbfgs'
    >>> make_logistic(C=0.5, solver="torch").named_steps["clf"]
    TorchLogisticRegression(C=0.5)
    """
    check_params(_LOGISTIC_CONSTRAINTS, {
        "C": C, "scale": scale, "l2_normalize": l2_normalize, "pca": pca, "whiten": whiten,
        "max_iter": max_iter, "random_state": random_state, "solver": solver},
        "make_logistic")  # fmt: skip
    steps = _preprocessing(
        scale=scale, l2_normalize=l2_normalize, pca=pca, whiten=whiten, random_state=random_state
    )
    # lbfgs fits the multinomial (softmax) loss for multiclass targets; the `multi_class`
    # parameter that used to say so is deprecated (scikit-learn 1.5) and then removed.
    if solver == "torch":
        from featclf.linear import TorchLogisticRegression

        return Pipeline([*steps, ("clf", TorchLogisticRegression(C=C, max_iter=max_iter))])
    clf = LogisticRegression(C=C, solver="lbfgs", max_iter=max_iter, random_state=random_state)
    return Pipeline([*steps, ("clf", clf)])


def c_grid(kind: str, *, per_decade: int = 1) -> list[float]:
    """Return the log-spaced values of C to sweep for a classifier.

    Parameters
    ----------
    kind : str
        A name from :data:`CLASSIFIERS` (``"linear_svm"``, ``"logistic"``, ...) or an SVM kind
        (``"linear"``, ``"crammer_singer"``, ``"rbf"``). The range is the registry's
        ``c_range``: linear models sweep 1e-3 .. 1e2, the RBF SVM 1e-1 .. 1e3.
    per_decade : int, default=1
        Number of values per factor of ten.

    Returns
    -------
    list of float
        Increasing values of C, rounded to 6 significant digits.

    Examples
    --------
    >>> from featclf.pipelines import c_grid
    >>> c_grid("linear")
    [0.001, 0.01, 0.1, 1.0, 10.0, 100.0]
    >>> c_grid("rbf_svm", per_decade=2)[:3]
    [0.1, 0.316228, 1.0]
    """
    valid = [*CLASSIFIERS, *SVM_KINDS]
    check_params({"kind": [StrOptions(set(valid))],
                  "per_decade": [Interval(Integral, 1, None, closed="left")]},
                 {"kind": kind, "per_decade": per_decade}, "c_grid")  # fmt: skip
    spec = REGISTRY[f"{kind}_svm" if kind in SVM_KINDS else kind]
    low, high = spec.c_range
    values = np.logspace(low, high, (high - low) * per_decade + 1)
    return [float(f"{value:.6g}") for value in values]


def classifier_spec(name: str) -> ClassifierSpec:
    """The registry entry of a classifier or softmax-baseline name.

    Parameters
    ----------
    name : str
        A key of :data:`REGISTRY`.

    Returns
    -------
    ClassifierSpec

    Examples
    --------
    >>> from featclf.pipelines import classifier_spec
    >>> spec = classifier_spec("rbf_svm")
    >>> spec.label, spec.color, spec.is_svm, spec.c_range
    ('RBF SVM', 'tab:green', True, (-1, 3))
    """
    check_params({"name": [StrOptions(set(REGISTRY))]}, {"name": name}, "classifier_spec")
    return REGISTRY[name]


def make_classifier(name: str, C: float = 1.0, **kwargs: Any) -> Pipeline:
    """Build the pipeline for one of the classifier names in :data:`CLASSIFIERS`.

    Parameters
    ----------
    name : {"linear_svm", "crammer_singer_svm", "rbf_svm", "logistic"}
        Which classifier.
    C : float, default=1.0
        Inverse regularisation strength (``clf__C``).
    **kwargs
        Keyword options of :func:`make_svm` or :func:`make_logistic` (``scale``, ``pca``, ...).

    Returns
    -------
    sklearn.pipeline.Pipeline
        Unfitted pipeline whose classifier is the step named ``clf``.

    Examples
    --------
    >>> from featclf.pipelines import CLASSIFIERS, make_classifier
    >>> [type(make_classifier(n).named_steps["clf"]).__name__ for n in CLASSIFIERS]
    ['LinearSVC', 'LinearSVC', 'SVC', 'LogisticRegression']
    """
    try:
        check_params({"name": [StrOptions(set(CLASSIFIERS))]}, {"name": name}, "make_classifier")
    except InvalidParameterError as error:
        if name in BASELINES:
            raise InvalidParameterError(
                f"{error} The softmax head is the CNN itself: use featclf.SoftmaxClassifier."
            ) from None
        raise
    return REGISTRY[name].builder(C, **kwargs)


#: Every name featclf reports, in report order: the softmax baselines, then the classifiers of
#: deep features. The one place their labels, colours, builders and C ranges are written.
REGISTRY: dict[str, ClassifierSpec] = {
    spec.name: spec
    for spec in (
        ClassifierSpec("softmax", "softmax head", "black"),
        # A transfer run's pre-trained network fine-tuned on the data (compare with weights=);
        # "softmax" is then the network trained from scratch, still the reference.
        ClassifierSpec("softmax_finetune", "fine-tuned softmax network", "tab:gray"),
        ClassifierSpec("linear_svm", "linear SVM", "tab:blue", partial(make_svm, "linear"),
                       (-3, 2), is_svm=True, torch=True),
        ClassifierSpec("crammer_singer_svm", "Crammer-Singer SVM", "tab:orange",
                       partial(make_svm, "crammer_singer"), (-3, 2), is_svm=True, torch=True),
        ClassifierSpec("rbf_svm", "RBF SVM", "tab:green", partial(make_svm, "rbf"), (-1, 3),
                       is_svm=True),
        ClassifierSpec("logistic", "logistic regression", "tab:purple", make_logistic, (-3, 2),
                       torch=True),
    )
}  # fmt: skip

#: The classifier names :func:`make_classifier` accepts (and ``featclf.compare`` sweeps).
CLASSIFIERS: tuple[str, ...] = tuple(n for n, s in REGISTRY.items() if s.builder is not None)

#: The softmax baselines: the CNN's own head, trained from scratch or fine-tuned.
BASELINES: tuple[str, ...] = tuple(n for n, s in REGISTRY.items() if s.builder is None)

#: The ``kind`` values :func:`make_svm` accepts.
SVM_KINDS: tuple[str, ...] = ("linear", "crammer_singer", "rbf")
