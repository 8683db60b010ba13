"""Specification of the report's verdict: chosen by CV, two tests that must agree, honest limits.

The comparisons are built from prediction vectors with featclf.stats (what a compare run
computes), so no network or classifier is trained here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from featclf.comparison import Comparison, ResultKey
from featclf.errors import cli_messages
from featclf.report import verdict
from featclf.report._verdict_text import report_warnings
from featclf.stats import (
    bootstrap_accuracy_ci,
    bootstrap_accuracy_diff,
    mcnemar,
    mcnemar_sample_size,
)

N_CLASSES = 10


def predictions(n: int, *, both_right: int, b: int, c: int) -> tuple[np.ndarray, ...]:
    """Labels, softmax and SVM predictions on ``n`` images with the given agreement counts.

    ``b``: the SVM right and the softmax head wrong; ``c``: the softmax head right and the SVM
    wrong; the rest both wrong (with different wrong labels).
    """
    both_wrong = n - both_right - b - c
    assert both_wrong >= 0
    svm_right = np.repeat([True, True, False, False], [both_right, b, c, both_wrong])
    softmax_right = np.repeat([True, False, True, False], [both_right, b, c, both_wrong])
    y = np.arange(n) % N_CLASSES
    svm = np.where(svm_right, y, (y + 1) % N_CLASSES)
    softmax = np.where(softmax_right, y, (y + 2) % N_CLASSES)
    return y, softmax, svm


def row(classifier: str, y: np.ndarray, pred: np.ndarray, reference: np.ndarray | None, *,
        C: float = float("nan"), cv: float = float("nan"),
        selected: bool = True) -> dict:  # fmt: skip
    """One results row as compare computes it: accuracy, its interval, the paired statistics."""
    accuracy = bootstrap_accuracy_ci(y, pred, n_resamples=500)
    out = {"dataset": "digits", "model": "lenet5", "layer": "penultimate",
           "classifier": classifier, "C": C, "selected": selected, "cv_accuracy": cv,
           "accuracy": accuracy.estimate, "accuracy_ci_low": accuracy.ci_low,
           "accuracy_ci_high": accuracy.ci_high, "n_test": len(y)}  # fmt: skip
    if reference is not None:
        diff = bootstrap_accuracy_diff(y, pred, reference, n_resamples=500)
        test = mcnemar(y, pred, reference)
        out |= {"diff_vs_softmax": diff.diff, "diff_ci_low": diff.ci_low,
                "diff_ci_high": diff.ci_high, "mcnemar_b": test.b, "mcnemar_c": test.c,
                "mcnemar_p": test.pvalue}  # fmt: skip
    return out


def comparison(y: np.ndarray, softmax: np.ndarray, rivals: dict[str, tuple], *,
               classes: bool = True, setup: dict | None = None) -> Comparison:  # fmt: skip
    """A Comparison of the softmax head and ``rivals``: name -> (pred, C, cv_accuracy)."""
    rows = [row("softmax", y, softmax, None)]
    preds = {ResultKey("lenet5", "penultimate", "softmax"): softmax}
    for name, (pred, C, cv) in rivals.items():
        rows.append(row(name, y, pred, softmax, C=C, cv=cv))
        preds[ResultKey("lenet5", "penultimate", name)] = pred
    return Comparison(pd.DataFrame(rows), predictions=preds, y_true=y,
                      classes=np.arange(N_CLASSES) if classes else None,
                      setup=setup or {})  # fmt: skip


# --------------------------------------------------------------------------- inconclusive


def test_twelve_noisy_test_images_are_inconclusive_and_say_how_many_it_would_take():
    # 12 test images; the SVM is right on 8, the softmax head on 7; 5 discordant pairs.
    y, softmax, svm = predictions(12, both_right=5, b=3, c=2)
    text = verdict(comparison(y, softmax, {"linear_svm": (svm, 1.0, 0.7)}))
    # Connor's formula by hand: psi = 5/12, delta = 0.03, z = 1.959964 and 0.841621:
    # (1.959964 * 0.645497 + 0.841621 * 0.644800)**2 / 0.0009 = 3631.4 -> 3632.
    assert mcnemar_sample_size(5 / 12, 0.03) == 3632
    assert ": inconclusive — the 95% CI contains zero and McNemar's p is not below 0.05" in text
    assert ("with 12 test images a difference of 3 points cannot be detected; it would take "
            "about 3632 (80% power at the 5% level, as one is right and the other wrong on 5 of "
            "the 12 test images).") in text  # fmt: skip
    assert "no detectable difference" not in text and "matches" not in text


def test_a_significant_win_over_a_softmax_head_at_chance_is_inconclusive():
    # The case: 12 test images, the softmax head at chance, McNemar p = 0.031.
    y, softmax, svm = predictions(12, both_right=1, b=6, c=0)
    run = comparison(y, softmax, {"linear_svm": (svm, 1.0, 0.8)})
    svm_row = run.results.iloc[1]
    assert svm_row["mcnemar_p"] == pytest.approx(0.03125)
    assert svm_row["diff_ci_low"] > 0  # both tests would call it a win
    text = verdict(run)
    assert ("inconclusive — the softmax head is near chance (accuracy 0.083; chance is 0.100 "
            "with 10 classes), so a difference from it says nothing about the features.") in text
    assert "better" not in text


def test_near_chance_is_judged_by_the_interval_reaching_chance_too():
    # 1,000 images: the softmax head right on 200 (chance 0.1 + 0.1), the SVM on 900.
    y, softmax, svm = predictions(1000, both_right=200, b=700, c=0)
    run = comparison(y, softmax, {"linear_svm": (svm, 1.0, 0.9)})
    assert "the SVM is better than the softmax head" in verdict(run)
    run.results.loc[0, "accuracy_ci_low"] = 0.099  # an interval down to chance
    assert ("inconclusive — the softmax head is near chance (accuracy 0.200, its interval "
            "reaching down to 0.099; chance is 0.100 with 10 classes)") in verdict(run)


def test_the_number_of_classes_comes_from_the_setup_when_the_comparison_has_none():
    y, softmax, svm = predictions(100, both_right=5, b=60, c=0)  # softmax 0.05, chance 0.1
    setup = {"classes": "0 40 train / 10 test; 1 40 train / 10 test (10 classes)"}
    text = verdict(comparison(y, softmax, {"linear_svm": (svm, 1.0, 0.6)}, classes=False,
                              setup=setup))  # fmt: skip
    assert "near chance (accuracy 0.050; chance is 0.100 with 10 classes)" in text
    unknown = verdict(comparison(y, softmax, {"linear_svm": (svm, 1.0, 0.6)}, classes=False))
    assert "near chance" not in unknown and "the SVM is better" in unknown


# --------------------------------------------------------------------------- chosen by CV


def test_the_headline_svm_is_the_cv_best_not_the_test_best():
    y, softmax, linear = predictions(1000, both_right=900, b=10, c=10)
    _, _, rbf = predictions(1000, both_right=900, b=80, c=10)  # far better on the test set
    run = comparison(y, softmax, {"linear_svm": (linear, 1.0, 0.95), "rbf_svm": (rbf, 10.0, 0.93)})
    text = verdict(run)
    assert text.startswith(
        "On digits, the linear SVM on lenet5's penultimate features (C=1, chosen among 2 SVMs "
        "by cross-validation accuracy, 0.950) reached 0.910 test accuracy vs 0.910 for the "
        "softmax head"
    )
    assert "RBF SVM" not in text and "0.980" not in text
    # Swap the cross-validation accuracies: now the RBF SVM is the one compared.
    run.results["cv_accuracy"] = [np.nan, 0.93, 0.95]
    assert verdict(run).startswith("On digits, the RBF SVM on lenet5's penultimate features "
                                   "(C=10, chosen among 2 SVMs by cross-validation accuracy, "
                                   "0.950) reached 0.980 test accuracy")  # fmt: skip


def test_cv_ties_go_to_the_first_svm_in_classifier_order_and_missing_cv_ranks_last():
    y, softmax, a = predictions(200, both_right=150, b=5, c=5)
    _, _, b = predictions(200, both_right=150, b=30, c=5)
    run = comparison(y, softmax, {"rbf_svm": (b, 10.0, 0.9), "crammer_singer_svm": (a, 1.0, 0.9)})
    assert "the Crammer-Singer SVM on" in verdict(run)  # the registry lists it before the RBF
    run.results.loc[run.results["classifier"] == "crammer_singer_svm", "cv_accuracy"] = np.nan
    assert "the RBF SVM on" in verdict(run)
    run.results["cv_accuracy"] = np.nan
    text = verdict(run)
    assert ("the Crammer-Singer SVM on lenet5's penultimate features (C=1, no cross-validation "
            "accuracy was recorded, so the first in featclf's classifier order is shown)") in text


# --------------------------------------------------------------------------- two tests agree


@pytest.mark.parametrize(("b", "c", "word"), [(60, 20, "better"), (20, 60, "worse")])
def test_better_or_worse_when_the_interval_and_mcnemar_agree(b, c, word):
    y, softmax, svm = predictions(1000, both_right=800, b=b, c=c)
    run = comparison(y, softmax, {"linear_svm": (svm, 1.0, 0.9)})
    svm_row = run.results.iloc[1]
    assert svm_row["mcnemar_p"] < 0.05
    assert not svm_row["diff_ci_low"] <= 0 <= svm_row["diff_ci_high"]
    assert verdict(run).endswith(f": the SVM is {word} than the softmax head (the 95% CI "
                                 "excludes zero and McNemar's p is below 0.05).")  # fmt: skip


@pytest.mark.parametrize(
    ("ci", "p", "why"),
    [
        ((0.001, 0.02), 0.08, "the 95% CI excludes zero but McNemar's p is not below 0.05"),
        ((-0.002, 0.02), 0.03, "the 95% CI contains zero but McNemar's p is below 0.05"),
        ((0.001, 0.02), np.nan, "the 95% CI excludes zero but no McNemar test was recorded"),
    ],
)
def test_disagreeing_tests_give_no_detectable_difference(ci, p, why):
    y, softmax, svm = predictions(2000, both_right=1800, b=25, c=15)
    run = comparison(y, softmax, {"linear_svm": (svm, 1.0, 0.9)})
    run.results.loc[1, ["diff_ci_low", "diff_ci_high", "mcnemar_p"]] = [*ci, p]
    text = verdict(run)
    assert text.endswith(
        f": no detectable difference — {why}; 2000 test images suffice to detect a difference "
        "of 3 points (80% power at the 5% level, as one is right and the other wrong on 40 of "
        "the 2000 test images)."
    )
    assert mcnemar_sample_size(40 / 2000, 0.03) == 260 <= 2000
    assert "better" not in text and "worse" not in text and "matches" not in text


def test_neither_test_finding_a_difference_on_enough_images_is_no_detectable_difference():
    y, softmax, svm = predictions(2000, both_right=1800, b=22, c=18)
    text = verdict(comparison(y, softmax, {"linear_svm": (svm, 1.0, 0.9)}))
    assert (": no detectable difference — the 95% CI contains zero and McNemar's p is not "
            "below 0.05; 2000 test images suffice to detect a difference of 3 points") in text


# --------------------------------------------------------------------------- C at a grid edge


def swept(C_selected: float, grid: list[float], classifier: str = "rbf_svm") -> Comparison:
    """A comparison whose ``classifier`` swept ``grid`` and selected ``C_selected``."""
    y, softmax, svm = predictions(1000, both_right=800, b=60, c=20)
    rows = [row("softmax", y, softmax, None)]
    rows += [row(classifier, y, svm, softmax, C=C, cv=0.9, selected=C == C_selected)
             for C in grid]  # fmt: skip
    return Comparison(pd.DataFrame(rows), y_true=y, classes=np.arange(N_CLASSES))


RBF_GRID = [0.1, 1.0, 10.0, 100.0]


def test_a_selected_C_at_the_top_of_its_grid_is_warned_about():
    run = swept(100.0, RBF_GRID)
    warning = ("C=100 is the largest value tried for the RBF SVM on lenet5's penultimate "
               "features; a larger C might do better (extend the grid, c_grids).")  # fmt: skip
    assert report_warnings(run) == [warning]
    assert verdict(run).endswith(f"Warning: {warning}")
    with cli_messages():
        assert report_warnings(run)[0].endswith("(extend the grid, --c-grids).")


def test_a_selected_C_at_the_bottom_of_its_grid_is_warned_about():
    (warning,) = report_warnings(swept(0.1, RBF_GRID, "linear_svm"))
    assert warning.startswith("C=0.1 is the smallest value tried for the linear SVM on lenet5's "
                              "penultimate features; a smaller C might do better")  # fmt: skip


@pytest.mark.parametrize(("C", "grid"), [(1.0, RBF_GRID), (10.0, RBF_GRID), (1.0, [1.0])])
def test_no_warning_inside_the_grid_or_for_a_single_C(C, grid):
    run = swept(C, grid)
    assert report_warnings(run) == []
    assert "Warning" not in verdict(run)


def test_the_grid_is_read_from_the_rows_of_the_sweep():
    """A coarser grid moves the edge: C=10 is inside 0.1..100 but the top of 0.1..10."""
    assert report_warnings(swept(10.0, RBF_GRID)) == []
    (warning,) = report_warnings(swept(10.0, [0.1, 1.0, 10.0]))
    assert warning.startswith("C=10 is the largest value tried for the RBF SVM")
