"""Specification of featclf.stats: McNemar's test and paired bootstrap intervals, known answers."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest

import featclf.stats
from featclf.stats import (
    BootstrapResult,
    McNemarResult,
    bootstrap_accuracy_ci,
    bootstrap_accuracy_diff,
    mcnemar,
    mcnemar_sample_size,
)


def paired_predictions(
    *, both_right: int = 0, b: int = 0, c: int = 0, both_wrong: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Labels and two prediction vectors with exactly the given agreement counts.

    ``b``: A right and B wrong; ``c``: A wrong and B right.
    """
    counts = (both_right, b, c, both_wrong)
    a_right = np.repeat([True, True, False, False], counts)
    b_right = np.repeat([True, False, True, False], counts)
    y_true = np.arange(a_right.size) % 3
    pred_a = np.where(a_right, y_true, (y_true + 1) % 3)
    pred_b = np.where(b_right, y_true, (y_true + 2) % 3)
    return y_true, pred_a, pred_b


def exact_two_sided(b: int, c: int) -> float:
    """Two-sided exact binomial p-value with p = 0.5, summed by hand."""
    n, k = b + c, min(b, c)
    return min(1.0, 2 * sum(math.comb(n, i) for i in range(k + 1)) / 2**n)


# --------------------------------------------------------------------------- McNemar


def test_ten_discordant_pairs_all_one_way_give_exact_p_of_2_over_1024():
    result = mcnemar(*paired_predictions(both_right=50, b=10, c=0, both_wrong=5))
    assert (result.b, result.c, result.method) == (10, 0, "exact")
    assert result.pvalue == pytest.approx(2 * 0.5**10) == 0.001953125
    assert result.statistic == 0.0


def test_equal_discordant_counts_give_p_of_one():
    assert mcnemar(*paired_predictions(b=7, c=7)).pvalue == pytest.approx(1.0)
    large = mcnemar(*paired_predictions(b=40, c=40))
    assert large.method == "chi2-cc"
    assert (large.statistic, large.pvalue) == (0.0, 1.0)


def test_large_case_matches_hand_computed_chi2_with_continuity_correction():
    result = mcnemar(*paired_predictions(both_right=900, b=40, c=15, both_wrong=45))
    assert (result.b, result.c, result.method) == (40, 15, "chi2-cc")
    statistic = (abs(40 - 15) - 1) ** 2 / (40 + 15)  # 576 / 55
    assert result.statistic == pytest.approx(10.472727272727273)
    assert result.statistic == pytest.approx(statistic)
    # Chi-square with one degree of freedom: P(X > x) = erfc(sqrt(x / 2)).
    assert result.pvalue == pytest.approx(math.erfc(math.sqrt(statistic / 2)), rel=1e-12)
    assert result.pvalue == pytest.approx(0.0012115, rel=1e-4)


def test_exact_is_used_below_25_discordant_pairs_and_chi2_from_25():
    assert mcnemar(*paired_predictions(b=20, c=4)).method == "exact"
    assert mcnemar(*paired_predictions(b=20, c=5)).method == "chi2-cc"


def test_exact_option_overrides_the_automatic_choice():
    forced_exact = mcnemar(*paired_predictions(b=40, c=15), exact=True)
    assert forced_exact.method == "exact"
    assert forced_exact.pvalue == pytest.approx(exact_two_sided(40, 15), rel=1e-9)
    forced_chi2 = mcnemar(*paired_predictions(b=6, c=1), exact=False)
    assert forced_chi2.method == "chi2-cc"
    assert forced_chi2.statistic == pytest.approx(16 / 7)


@pytest.mark.parametrize("b, c", [(3, 0), (5, 2), (1, 12), (9, 9)])
def test_exact_pvalues_match_the_binomial_sum(b, c):
    assert mcnemar(*paired_predictions(both_right=5, b=b, c=c)).pvalue == pytest.approx(
        exact_two_sided(b, c), rel=1e-9
    )


@pytest.mark.parametrize("exact", [None, True, False])
def test_classifiers_that_never_disagree_give_p_of_one(exact):
    result = mcnemar(*paired_predictions(both_right=30, both_wrong=10), exact=exact)
    assert (result.b, result.c, result.pvalue) == (0, 0, 1.0)


def test_the_test_is_symmetric_in_its_classifiers():
    y_true, pred_a, pred_b = paired_predictions(both_right=10, b=9, c=2)
    forward, backward = mcnemar(y_true, pred_a, pred_b), mcnemar(y_true, pred_b, pred_a)
    assert (backward.b, backward.c) == (forward.c, forward.b)
    assert backward.pvalue == pytest.approx(forward.pvalue)


def test_string_labels_and_lists_are_accepted():
    result = mcnemar(["cat", "dog", "cat"], ["cat", "dog", "dog"], ["dog", "dog", "cat"])
    assert (result.b, result.c) == (1, 1)


def test_inputs_of_different_lengths_are_refused():
    with pytest.raises(ValueError, match="inconsistent numbers of samples"):
        mcnemar([0, 1, 2], [0, 1, 2], [0, 1])


def test_results_are_frozen_dataclasses():
    result = mcnemar(*paired_predictions(b=1))
    assert isinstance(result, McNemarResult)
    with pytest.raises(dataclasses.FrozenInstanceError):
        result.pvalue = 0.0  # type: ignore[misc]


# --------------------------------------------------------------------------- bootstrap


def test_identical_predictions_give_zero_difference_and_a_zero_interval():
    y_true, pred_a, _ = paired_predictions(both_right=80, both_wrong=20)
    result = bootstrap_accuracy_diff(y_true, pred_a, pred_a.copy())
    assert (result.diff, result.ci_low, result.ci_high) == (0.0, 0.0, 0.0)


def test_always_right_against_always_wrong_gives_difference_one_and_interval_one():
    y_true, pred_a, pred_b = paired_predictions(b=200)
    result = bootstrap_accuracy_diff(y_true, pred_a, pred_b, n_resamples=500)
    assert (result.diff, result.ci_low, result.ci_high) == (1.0, 1.0, 1.0)
    assert result.n_resamples == 500


def test_difference_is_accuracy_a_minus_accuracy_b_and_inside_its_interval():
    y_true, pred_a, pred_b = paired_predictions(both_right=700, b=60, c=30, both_wrong=210)
    result = bootstrap_accuracy_diff(y_true, pred_a, pred_b)
    assert result.diff == pytest.approx(0.76 - 0.73)
    assert result.estimate == result.diff
    assert result.ci_low < result.diff < result.ci_high
    assert result.ci_low > 0  # 60 vs 30 discordant pairs is a clear difference
    # Paired difference of proportions: sd = sqrt((b + c)/n - diff**2) / sqrt(n).
    half_width = 1.96 * math.sqrt(0.09 - 0.03**2) / math.sqrt(1000)
    assert result.ci_high - result.ci_low == pytest.approx(2 * half_width, rel=0.1)


def test_same_random_state_gives_the_same_interval():
    data = paired_predictions(both_right=300, b=25, c=20, both_wrong=55)
    first = bootstrap_accuracy_diff(*data, random_state=3)
    assert bootstrap_accuracy_diff(*data, random_state=3) == first
    assert bootstrap_accuracy_diff(*data, random_state=np.random.default_rng(3)) == first


def test_higher_confidence_gives_a_wider_interval():
    data = paired_predictions(both_right=300, b=25, c=20, both_wrong=55)
    narrow = bootstrap_accuracy_diff(*data, confidence=0.5)
    wide = bootstrap_accuracy_diff(*data, confidence=0.99)
    assert wide.ci_low < narrow.ci_low < narrow.ci_high < wide.ci_high
    assert (narrow.confidence, wide.confidence) == (0.5, 0.99)


def test_accuracy_interval_matches_the_normal_approximation_across_many_chunks(monkeypatch):
    # 300 samples with 1000-element chunks: 3 resamples per chunk, hundreds of chunks.
    monkeypatch.setattr(featclf.stats, "_CHUNK_ELEMENTS", 1000)
    y_true, pred, _ = paired_predictions(both_right=240, c=60)
    result = bootstrap_accuracy_ci(y_true, pred, n_resamples=4000)
    assert result.estimate == 0.8
    half_width = 1.96 * math.sqrt(0.8 * 0.2 / 300)
    assert result.ci_low == pytest.approx(0.8 - half_width, abs=0.01)
    assert result.ci_high == pytest.approx(0.8 + half_width, abs=0.01)


def test_perfect_classifier_has_accuracy_interval_one_to_one():
    result = bootstrap_accuracy_ci(["a", "b", "c"] * 10, ["a", "b", "c"] * 10)
    assert isinstance(result, BootstrapResult)
    assert (result.estimate, result.ci_low, result.ci_high) == (1.0, 1.0, 1.0)


@pytest.mark.parametrize(
    "options, message",
    [
        ({"confidence": 1.0}, "The 'confidence' parameter of bootstrap_accuracy_diff must be a "
                              r"float in the range \(0(\.0)?, 1(\.0)?\). Got 1.0 instead."),
        ({"n_resamples": 0}, "The 'n_resamples' parameter of bootstrap_accuracy_diff must be an "
                             r"int in the range \[1, inf\). Got 0 instead."),
        ({"n_resamples": 2.5}, "The 'n_resamples' parameter of bootstrap_accuracy_diff"),
    ],
)
def test_invalid_bootstrap_options_are_refused(options, message):
    with pytest.raises(ValueError, match=message):
        bootstrap_accuracy_diff([0, 1], [0, 1], [1, 1], **options)


def test_empty_test_set_is_refused():
    with pytest.raises(ValueError, match="empty test set"):
        bootstrap_accuracy_ci([], [])


# --------------------------------------------------------------------------- sample size


def connor_by_hand(psi: float, delta: float) -> float:
    """Connor (1987) with the normal quantiles written out (alpha 0.05 two-sided, power 0.8)."""
    z_alpha, z_beta = 1.959963985, 0.841621234
    return (z_alpha * math.sqrt(psi) + z_beta * math.sqrt(psi - delta**2)) ** 2 / delta**2


@pytest.mark.parametrize(("psi", "delta", "expected"),
                         [(0.1, 0.03, 870), (0.2, 0.05, 626), (5 / 12, 0.03, 3632)])
def test_sample_size_matches_connors_formula_by_hand(psi, delta, expected):
    # (1.959964 * sqrt(0.1) + 0.841621 * sqrt(0.0991))**2 / 0.0009 = 869.7 -> 870;
    # (1.959964 * sqrt(0.2) + 0.841621 * sqrt(0.1975))**2 / 0.0025 = 625.5 -> 626.
    assert math.ceil(connor_by_hand(psi, delta)) == expected
    assert mcnemar_sample_size(psi, delta) == expected


def test_sample_size_gives_the_asked_power_in_simulated_paired_test_sets():
    """n pairs with discordance 0.1 and a true difference of 3 points: McNemar's test (the
    uncorrected chi-square the formula assumes) rejects at 5% in about 80% of test sets."""
    psi, delta = 0.1, 0.03
    n = mcnemar_sample_size(psi, delta)
    rng = np.random.default_rng(0)

    def power(n_pairs: int) -> float:
        counts = rng.multinomial(n_pairs, [(psi + delta) / 2, (psi - delta) / 2,
                                           1 - psi], size=4000)  # fmt: skip
        b, c = counts[:, 0], counts[:, 1]
        statistic = (b - c) ** 2 / np.maximum(b + c, 1)
        return float(np.mean(statistic > 3.841458821))  # chi2(1) at 0.95

    assert 0.77 < power(n) < 0.83
    assert power(n // 2) < 0.6  # half the images: clearly underpowered


def test_sample_size_grows_with_power_and_discordance_and_shrinks_with_the_difference():
    base = mcnemar_sample_size(0.1, 0.03)
    assert mcnemar_sample_size(0.1, 0.03, power=0.9) > base
    assert mcnemar_sample_size(0.1, 0.03, alpha=0.01) > base
    assert mcnemar_sample_size(0.2, 0.03) > base > mcnemar_sample_size(0.1, 0.05)


def test_discordance_below_the_difference_is_raised_to_it():
    # A 3-point difference means at least 3% discordant images: 0 and 0.01 count as 0.03.
    assert mcnemar_sample_size(0.0, 0.03) == mcnemar_sample_size(0.01, 0.03) == 260
    assert math.ceil(connor_by_hand(0.03, 0.03)) == 260


@pytest.mark.parametrize(
    ("args", "options", "message"),
    [
        ((1.5, 0.03), {}, "The 'discordance' parameter of mcnemar_sample_size must be a float"),
        ((0.1, 0.0), {}, "The 'difference' parameter of mcnemar_sample_size must be a float"),
        ((0.1, 0.03), {"power": 1.0}, "The 'power' parameter of mcnemar_sample_size"),
        ((0.1, 0.03), {"alpha": 0.0}, "The 'alpha' parameter of mcnemar_sample_size"),
    ],
)
def test_invalid_sample_size_options_are_refused(args, options, message):
    with pytest.raises(ValueError, match=message):
        mcnemar_sample_size(*args, **options)
