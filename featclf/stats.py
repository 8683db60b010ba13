"""Paired significance tests and bootstrap intervals for comparing two classifiers on one test set.

Both classifiers must have predicted the *same* test samples in the same order: every function
here is paired, which is what makes a difference of a few tenths of a percent measurable.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from numbers import Integral, Real
from typing import Literal

import numpy as np
from numpy.typing import ArrayLike
from scipy.stats import binomtest, chi2, norm
from sklearn.utils import check_consistent_length, column_or_1d

from featclf.params import Interval, check_params

__all__ = [
    "BootstrapResult",
    "McNemarResult",
    "bootstrap_accuracy_ci",
    "bootstrap_accuracy_diff",
    "mcnemar",
    "mcnemar_sample_size",
]

#: Below this many discordant pairs ``mcnemar`` uses the exact binomial test by default.
EXACT_BELOW = 25

# Largest number of resampled indices held in memory at once (8 MiB of int64).
_CHUNK_ELEMENTS = 2**20


@dataclass(frozen=True)
class McNemarResult:
    """Outcome of McNemar's test on two classifiers' paired predictions.

    Attributes
    ----------
    b : int
        Samples classifier A got right and classifier B got wrong.
    c : int
        Samples classifier A got wrong and classifier B got right.
    statistic : float
        ``min(b, c)`` for the exact test; ``(max(|b - c| - 1, 0))**2 / (b + c)`` for chi2-cc.
    pvalue : float
        Two-sided p-value (1.0 when the classifiers never disagree).
    method : {"exact", "chi2-cc"}
        Exact binomial test, or chi-square (1 dof) with continuity correction.
    """

    b: int
    c: int
    statistic: float
    pvalue: float
    method: Literal["exact", "chi2-cc"]


@dataclass(frozen=True)
class BootstrapResult:
    """A point estimate with a bootstrap percentile confidence interval.

    Attributes
    ----------
    estimate : float
        The statistic on the full data: an accuracy, or a difference of accuracies.
    ci_low, ci_high : float
        Bounds of the percentile interval.
    confidence : float
        Confidence level of the interval, e.g. 0.95.
    n_resamples : int
        Number of bootstrap resamples.
    """

    estimate: float
    ci_low: float
    ci_high: float
    confidence: float
    n_resamples: int

    @property
    def diff(self) -> float:
        """The estimate, under the name used for differences (``acc(a) - acc(b)``)."""
        return self.estimate


def _paired(y_true: ArrayLike, *preds: ArrayLike) -> tuple[np.ndarray, ...]:
    """Validate 1-D label vectors of equal length and return them as arrays."""
    arrays = tuple(column_or_1d(np.asarray(a), warn=True) for a in (y_true, *preds))
    check_consistent_length(*arrays)
    return arrays


def mcnemar(
    y_true: ArrayLike, pred_a: ArrayLike, pred_b: ArrayLike, *, exact: bool | None = None
) -> McNemarResult:
    """Test whether two classifiers have the same error rate on paired predictions.

    Only the discordant samples matter: ``b`` (A right, B wrong) and ``c`` (A wrong, B right).
    Under the null hypothesis each discordant sample is a fair coin flip.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    pred_a, pred_b : array-like of shape (n_samples,)
        Predictions of classifiers A and B on the same samples.
    exact : bool or None, default=None
        True: two-sided exact binomial test, ``scipy.stats.binomtest(b, b + c, 0.5)``.
        False: chi-square test with continuity correction,
        ``chi2.sf((|b - c| - 1)**2 / (b + c), df=1)``. None: exact when ``b + c < 25``.

    Returns
    -------
    McNemarResult
        ``b``, ``c``, ``statistic``, ``pvalue`` and ``method``.

    Examples
    --------
    >>> from featclf.stats import mcnemar
    >>> y = [0, 0, 0, 0, 1, 1, 1, 1]
    >>> result = mcnemar(y, y, [1, 1, 1, 0, 1, 1, 1, 1])
    >>> result.b, result.c, result.method, result.pvalue
    (3, 0, 'exact', 0.25)
    """
    y_true, pred_a, pred_b = _paired(y_true, pred_a, pred_b)
    right_a = pred_a == y_true
    right_b = pred_b == y_true
    b = int(np.count_nonzero(right_a & ~right_b))
    c = int(np.count_nonzero(~right_a & right_b))
    n = b + c
    use_exact = n < EXACT_BELOW if exact is None else bool(exact)
    if use_exact:
        pvalue = 1.0 if n == 0 else float(binomtest(b, n, 0.5).pvalue)
        return McNemarResult(b, c, float(min(b, c)), min(pvalue, 1.0), "exact")
    if n == 0:
        return McNemarResult(b, c, 0.0, 1.0, "chi2-cc")
    # The correction never pushes |b - c| below zero: b == c gives statistic 0 and p = 1.
    statistic = max(abs(b - c) - 1, 0) ** 2 / n
    return McNemarResult(b, c, float(statistic), float(chi2.sf(statistic, df=1)), "chi2-cc")


_BOOTSTRAP_CONSTRAINTS = {
    "n_resamples": [Interval(Integral, 1, None, closed="left")],
    "confidence": [Interval(Real, 0, 1, closed="neither")],
}


def _bootstrap_mean(
    values: np.ndarray,
    *,
    n_resamples: int,
    confidence: float,
    random_state: int | np.random.Generator | None,
    owner: str,
) -> BootstrapResult:
    """Percentile bootstrap interval of the mean of ``values`` (resampling its entries)."""
    check_params(_BOOTSTRAP_CONSTRAINTS, {"n_resamples": n_resamples, "confidence": confidence},
                 owner)  # fmt: skip
    n = values.shape[0]
    if n == 0:
        raise ValueError("Cannot bootstrap an empty test set: y_true has no samples.")
    rng = np.random.default_rng(random_state)
    means = np.concatenate(list(_resampled_means(values, int(n_resamples), rng)))
    alpha = (1 - confidence) / 2
    low, high = np.quantile(means, [alpha, 1 - alpha])
    return BootstrapResult(
        estimate=float(values.mean()),
        ci_low=float(low),
        ci_high=float(high),
        confidence=float(confidence),
        n_resamples=int(n_resamples),
    )


def _resampled_means(
    values: np.ndarray, n_resamples: int, rng: np.random.Generator
) -> Iterator[np.ndarray]:
    """Yield the means of ``n_resamples`` resamples, a memory-bounded chunk at a time."""
    n = values.shape[0]
    chunk = max(1, _CHUNK_ELEMENTS // n)
    for start in range(0, n_resamples, chunk):
        size = min(chunk, n_resamples - start)
        indices = rng.integers(0, n, size=(size, n))
        yield values[indices].mean(axis=1)


def bootstrap_accuracy_diff(
    y_true: ArrayLike,
    pred_a: ArrayLike,
    pred_b: ArrayLike,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    random_state: int | np.random.Generator | None = 0,
) -> BootstrapResult:
    """Bootstrap a confidence interval for the accuracy difference of two classifiers.

    Test samples are resampled with replacement and *paired*: each resample scores both
    classifiers on the same samples. The interval is the percentile interval of the resampled
    differences.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    pred_a, pred_b : array-like of shape (n_samples,)
        Predictions of classifiers A and B on the same samples.
    n_resamples : int, default=2000
        Number of bootstrap resamples.
    confidence : float, default=0.95
        Confidence level of the interval.
    random_state : int, numpy.random.Generator or None, default=0
        Seed of the resampling; the same seed gives the same interval.

    Returns
    -------
    BootstrapResult
        ``diff`` (= ``estimate``, ``accuracy(a) - accuracy(b)`` on all samples), ``ci_low``,
        ``ci_high``.

    Examples
    --------
    >>> from featclf.stats import bootstrap_accuracy_diff
    >>> y = [0, 1, 2, 3] * 25
    >>> result = bootstrap_accuracy_diff(y, y, [0, 1, 2, 0] * 25)
    >>> result.diff
    0.25
    >>> bool(result.ci_low <= result.diff <= result.ci_high)
    True
    """
    y_true, pred_a, pred_b = _paired(y_true, pred_a, pred_b)
    delta = (pred_a == y_true).astype(np.int8) - (pred_b == y_true).astype(np.int8)
    return _bootstrap_mean(
        delta, n_resamples=n_resamples, confidence=confidence, random_state=random_state,
        owner="bootstrap_accuracy_diff",
    )  # fmt: skip


def bootstrap_accuracy_ci(
    y_true: ArrayLike,
    pred: ArrayLike,
    *,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    random_state: int | np.random.Generator | None = 0,
) -> BootstrapResult:
    """Bootstrap a confidence interval for one classifier's accuracy.

    Parameters
    ----------
    y_true : array-like of shape (n_samples,)
        True labels.
    pred : array-like of shape (n_samples,)
        Predicted labels.
    n_resamples : int, default=2000
        Number of bootstrap resamples.
    confidence : float, default=0.95
        Confidence level of the interval.
    random_state : int, numpy.random.Generator or None, default=0
        Seed of the resampling.

    Returns
    -------
    BootstrapResult
        ``estimate`` (the accuracy on all samples), ``ci_low``, ``ci_high``.

    Examples
    --------
    >>> from featclf.stats import bootstrap_accuracy_ci
    >>> result = bootstrap_accuracy_ci([0, 1] * 50, [0, 1] * 45 + [1, 0] * 5)
    >>> result.estimate
    0.9
    >>> bool(0.8 < result.ci_low < 0.9 < result.ci_high < 1.0)
    True
    """
    y_true, pred = _paired(y_true, pred)
    correct = (pred == y_true).astype(np.int8)
    return _bootstrap_mean(
        correct, n_resamples=n_resamples, confidence=confidence, random_state=random_state,
        owner="bootstrap_accuracy_ci",
    )  # fmt: skip


_SAMPLE_SIZE_CONSTRAINTS = {
    "discordance": [Interval(Real, 0, 1, closed="both")],
    "difference": [Interval(Real, 0, 1, closed="right")],
    "alpha": [Interval(Real, 0, 1, closed="neither")],
    "power": [Interval(Real, 0, 1, closed="neither")],
}


def mcnemar_sample_size(
    discordance: float, difference: float, *, alpha: float = 0.05, power: float = 0.8
) -> int:
    """Paired test images McNemar's test needs to detect an accuracy difference.

    Connor's sample size for the paired-sample design: with ``psi`` the share of images on
    which exactly one classifier is right (``(b + c) / n``) and ``delta`` the accuracy
    difference to detect (``(b - c) / n``),

    ``n = (z(1 - alpha/2) sqrt(psi) + z(power) sqrt(psi - delta**2))**2 / delta**2``,

    rounded up, for a two-sided test at level ``alpha``.

    Parameters
    ----------
    discordance : float in [0, 1]
        ``psi``, e.g. the observed ``(mcnemar_b + mcnemar_c) / n_test``. A difference
        ``delta`` needs at least ``delta`` discordant images, so smaller values (a tiny test set
        where the two never disagreed) are raised to ``difference``.
    difference : float in (0, 1]
        ``delta``, the accuracy difference to detect: 0.03 for 3 points.
    alpha : float, default=0.05
        Level of the two-sided test.
    power : float, default=0.8
        Probability of detecting the difference when it is there.

    Returns
    -------
    int
        The number of paired test images.

    References
    ----------
    R. J. Connor, "Sample size for testing differences in proportions for the paired-sample
    design", Biometrics 43(1):207-211, 1987 (the formula of S.-C. Chow, J. Shao and H. Wang,
    *Sample Size Calculations in Clinical Research*, for McNemar's test).

    Examples
    --------
    >>> from featclf.stats import mcnemar_sample_size
    >>> mcnemar_sample_size(0.1, 0.03)  # disagreeing on 10% of images, to detect 3 points
    870
    >>> mcnemar_sample_size(0.0, 0.03)  # never disagreeing: the least discordance of 3 points
    260
    """
    check_params(_SAMPLE_SIZE_CONSTRAINTS, {"discordance": discordance, "difference": difference,
                                            "alpha": alpha, "power": power},
                 "mcnemar_sample_size")  # fmt: skip
    delta = float(difference)
    psi = max(float(discordance), delta)
    z_alpha, z_beta = norm.ppf(1 - alpha / 2), norm.ppf(power)
    n = (z_alpha * np.sqrt(psi) + z_beta * np.sqrt(psi - delta**2)) ** 2 / delta**2
    # Guard the ceiling against float error on an exact integer (1e-9 of an image).
    return int(np.ceil(n - 1e-9))
