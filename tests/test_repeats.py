"""Specification of repeated splits: K seeded comparisons, mean ± sd, the spread of the verdict.

A tiny real transfer comparison (a lenet5 this module trains briefly on MNIST digits and saves,
used frozen on scikit-learn's digits) runs on three splits; the verdict outcomes are checked
against the report's own verdict on comparisons built from prediction vectors.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from featclf.cli import main
from featclf.compare import TIMING_COLUMNS, compare
from featclf.comparison import Comparison, ResultKey
from featclf.data import load_digits_images
from featclf.errors import cli_messages
from featclf.params import InvalidParameterError
from featclf.pipelines import REGISTRY
from featclf.repeats import OUTCOMES, REPEAT_COLUMNS, compare_repeated
from featclf.report import verdict
from featclf.report._repeats import split_verdicts
from featclf.stats import bootstrap_accuracy_ci, bootstrap_accuracy_diff, mcnemar
from featclf.train import SoftmaxClassifier

SEEDS = (5, 6, 7)
KEY = ("lenet5", "penultimate")
OPTIONS = {"classifiers": ["linear_svm", "crammer_singer_svm"], "epochs": 1, "cv": 2,
           "c_grids": [0.1, 1.0], "n_resamples": 100}  # fmt: skip


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, mnist_small) -> str:
    """A lenet5 trained for one epoch on 400 MNIST digits, saved as a featclf checkpoint."""
    X, y = mnist_small
    clf = SoftmaxClassifier("lenet5", epochs=1, validation_fraction=0.0, random_state=0)
    return str(clf.fit(X, y).save(tmp_path_factory.mktemp("weights") / "lenet5.pt"))


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits_images(return_X_y=True)
    return X[:200], y[:200]


@pytest.fixture(scope="module")
def repeated(checkpoint, digits):
    return compare_repeated(digits, repeats=3, random_state=SEEDS[0], weights=checkpoint,
                            **OPTIONS)  # fmt: skip


def test_each_split_has_its_seed_and_its_own_stratified_split(repeated, digits):
    _, y = digits
    assert repeated.seeds == SEEDS
    tests = [np.sort(c.split.test) for c in repeated.comparisons]
    assert [len(t) for t in tests] == [40, 40, 40]
    # Different seeds, different test images; each part stratified (4 of each class).
    for a in range(3):
        assert np.bincount(y[tests[a]], minlength=10).tolist() == [4] * 10
        for b in range(a + 1, 3):
            assert not np.array_equal(tests[a], tests[b])
    assert repeated.splits["seed"].tolist() == [s for s in SEEDS for _ in range(4)]
    assert list(repeated.splits.columns) == list(REPEAT_COLUMNS)


def test_per_split_accuracies_and_their_mean_and_sd_are_numpys(repeated):
    for classifier in ("softmax", "softmax_finetune", "linear_svm", "crammer_singer_svm"):
        # Each split's accuracy, recounted from its own test predictions.
        counted = [float(np.mean(c.prediction(*KEY, classifier) == c.y_true))
                   for c in repeated.comparisons]  # fmt: skip
        accuracies = repeated.accuracies(*KEY, classifier)
        assert accuracies.index.tolist() == list(SEEDS)
        np.testing.assert_allclose(accuracies.to_numpy(), counted, rtol=0, atol=1e-12)
        row = repeated.summary.set_index("classifier").loc[classifier]
        assert row["n_splits"] == 3
        assert row["accuracy_mean"] == pytest.approx(np.mean(counted), abs=1e-12)
        assert row["accuracy_sd"] == pytest.approx(np.std(counted, ddof=1), abs=1e-12)
        assert (row["accuracy_min"], row["accuracy_max"]) == (min(counted), max(counted))
    # The splits do move the numbers: the frozen features' classifiers differ between splits.
    assert repeated.summary.set_index("classifier").loc["linear_svm", "accuracy_sd"] > 0


def test_the_verdict_counts_add_up_to_k_and_are_each_splits_own_verdict(repeated):
    spread = repeated.verdicts
    assert spread[["model", "layer"]].values.tolist() == [list(KEY)]
    assert int(spread.loc[0, list(OUTCOMES)].sum()) == 3 == spread.loc[0, "n_splits"]
    compared = repeated.splits[repeated.splits["compared"]]
    assert len(compared) == 3
    for comparison, (_, row) in zip(repeated.comparisons, compared.iterrows()):
        text = verdict(comparison)
        word = {"better": "is better than", "worse": "is worse than"}.get(row["verdict"],
                                                                           row["verdict"])
        assert f": {word}" in text or f" {word} " in text, (row["verdict"], text)
        # The compared SVM is the one cross-validation ranked first on that split.
        results = comparison.results
        svms = results[results["selected"] & results["classifier"].str.endswith("svm")]
        assert row["cv_accuracy"] == svms["cv_accuracy"].max()
        assert f"the {REGISTRY[row['classifier']].label} on lenet5's" in text
    counts = compared["verdict"].value_counts()
    assert all(int(spread.loc[0, o]) == counts.get(o, 0) for o in OUTCOMES)


def test_frozen_features_are_extracted_once_for_all_splits(repeated):
    extraction = [c.timings.set_index("phase").loc["extraction", ["n_computed", "n_reused"]]
                  .tolist() for c in repeated.comparisons]  # fmt: skip
    assert extraction == [[200, 0], [0, 200], [0, 200]]
    per_split = repeated.splits.drop_duplicates("split")
    assert per_split["n_computed"].tolist() == [200, 0, 0]
    assert "temporary" in repeated.comparisons[1].setup["feature store"]


def test_a_later_split_is_the_plain_compare_with_its_seed(repeated, checkpoint, digits):
    """Reused vectors give the numbers computed ones give; split k is random_state + k."""
    alone = compare(digits, random_state=SEEDS[1], weights=checkpoint, **OPTIONS)
    pd.testing.assert_frame_equal(
        alone.results.drop(columns=list(TIMING_COLUMNS)),
        repeated.comparisons[1].results.drop(columns=list(TIMING_COLUMNS)))


# --------------------------------------------------------------------------- verdict outcomes


def _comparison(n: int, both_right: int, b: int, c: int) -> Comparison:
    """A softmax head and a linear SVM on ``n`` images: b SVM-only right, c softmax-only."""
    y = np.arange(n) % 10
    svm_right = np.repeat([True, True, False, False], [both_right, b, c, n - both_right - b - c])
    softmax_right = np.repeat([True, False, True, False], [both_right, b, c,
                                                           n - both_right - b - c])
    svm, softmax = np.where(svm_right, y, (y + 1) % 10), np.where(softmax_right, y, (y + 2) % 10)
    rows = []
    for name, pred in (("softmax", softmax), ("linear_svm", svm)):
        acc = bootstrap_accuracy_ci(y, pred, n_resamples=500)
        row = {"dataset": "d", "model": "m", "layer": "penultimate", "classifier": name,
               "C": np.nan if name == "softmax" else 1.0, "selected": True,
               "cv_accuracy": np.nan if name == "softmax" else 0.9, "accuracy": acc.estimate,
               "accuracy_ci_low": acc.ci_low, "accuracy_ci_high": acc.ci_high, "n_test": n}
        if name != "softmax":
            diff, test = bootstrap_accuracy_diff(y, pred, softmax, n_resamples=500), mcnemar(
                y, pred, softmax)
            row |= {"diff_vs_softmax": diff.diff, "diff_ci_low": diff.ci_low,
                    "diff_ci_high": diff.ci_high, "mcnemar_b": test.b, "mcnemar_c": test.c,
                    "mcnemar_p": test.pvalue}
        rows.append(row)
    preds = {ResultKey("m", "penultimate", "softmax"): softmax,
             ResultKey("m", "penultimate", "linear_svm"): svm}
    return Comparison(pd.DataFrame(rows), predictions=preds, y_true=y, classes=np.arange(10))


@pytest.mark.parametrize("counts, outcome, words", [
    ((1000, 800, 60, 20), "better", "the SVM is better than"),
    ((1000, 800, 20, 60), "worse", "the SVM is worse than"),
    ((2000, 1800, 22, 18), "no detectable difference", "no detectable difference"),
    ((12, 5, 3, 2), "inconclusive", "inconclusive"),
])  # fmt: skip
def test_each_splits_outcome_is_the_word_of_the_reports_verdict(counts, outcome, words):
    comparison = _comparison(*counts)
    assert words in verdict(comparison)
    assert split_verdicts(comparison) == [
        {"model": "m", "layer": "penultimate", "classifier": "linear_svm", "verdict": outcome}]


# --------------------------------------------------------------------------- bad input, CLI


def _digit_folder(root, n: int, subfolders: bool = False):
    """Scikit-learn digits as PNG files LABEL.N.png (in train/ and test/ when ``subfolders``)."""
    X, y = load_digits_images(return_X_y=True)
    for i in range(n):
        folder = root / ("test" if i % 5 == 0 else "train") if subfolders else root
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(X[i]).save(folder / f"{y[i]}.{i}.png")
    return root


def test_data_with_its_own_split_or_bad_repeats_are_refused_before_training(tmp_path, digits):
    folder = _digit_folder(tmp_path / "split", 50, subfolders=True)
    with pytest.raises(ValueError, match=r"^repeats=2: .*split has its own split \(the folder's "
                       r"own train/ and test/ subfolders\), so every repeat would use the same"):
        compare_repeated(folder, repeats=2, models=["lenet5"])
    with pytest.raises(ValueError, match=r"^repeats=3: test_data='.*test' fixes the test images"):
        compare_repeated(folder / "train", repeats=3, test_data=folder / "test")
    with cli_messages(), pytest.raises(ValueError, match=r"^--repeats 3: --test-data .*test fixes"
                                       r" .*; leave out --test-data to draw"):
        compare_repeated(folder / "train", repeats=3, test_data=folder / "test")
    with pytest.raises(InvalidParameterError, match="The 'repeats' parameter of "
                       r"compare_repeated must be an int in the range \[1, inf\). Got 0"):
        compare_repeated(digits, repeats=0)


@pytest.mark.slow
def test_cli_repeats_write_a_repeated_splits_section_and_repeats_csv(tmp_path, capsys):
    """--repeats, and the flags passed through to compare: --augment, --views, --solver."""
    images = _digit_folder(tmp_path / "digits", 100)
    out = tmp_path / "report"
    code = main(["compare", "--data", str(images), "--model", "lenet5", "--classifier",
                 "logistic", "--epochs", "1", "--quick", "--repeats", "2", "--random-state", "3",
                 "--augment", "seed", "--views", "2", "--solver", "torch", "--no-save-model",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    printed = capsys.readouterr().out
    table = pd.read_csv(out / "repeats.csv")
    assert table["seed"].unique().tolist() == [3, 4]
    assert table[["layer", "classifier"]].drop_duplicates().values.tolist() == [
        ["penultimate", "softmax"], ["penultimate", "logistic"],
        ["penultimate + 2 views", "softmax"], ["penultimate + 2 views", "logistic"]]
    # Without frozen weights each split trains its own network: its features are its own.
    assert (table.drop_duplicates("split")["n_computed"] >= 100).all()
    first = pd.read_csv(out / "results.csv")
    assert set(first.loc[first["classifier"] == "logistic", "solver"]) == {"torch"}
    selected = first[first["selected"]].set_index(["layer", "classifier"])["accuracy"]
    split1 = table[table["split"] == 1].set_index(["layer", "classifier"])["accuracy"]
    assert split1.to_dict() == pytest.approx(selected.to_dict(), abs=1e-12)
    logistic = table.loc[(table["classifier"] == "logistic")
                         & (table["layer"] == "penultimate"), "accuracy"].to_numpy()
    mean_sd = f"{np.mean(logistic):.4f} ± {np.std(logistic, ddof=1):.4f}"
    report = (out / "report.md").read_text("utf-8")
    assert "## Repeated splits" in report and mean_sd in report and mean_sd in printed
    assert "each split trained its own softmax network" in report
    assert "- solver: torch" in report and "augment=seed" in report
    assert "verdict over 2 splits, lenet5/penultimate:" in printed
    assert "verdict over 2 splits, lenet5/penultimate + 2 views:" in printed
    assert "Repeated splits</h2>" in (out / "report.html").read_text("utf-8")


def test_cli_repeats_and_views_must_be_whole_numbers(capsys):
    for flags in (["--repeats", "0"], ["--views", "-1"], ["--repeats", "two"]):
        assert main(["compare", *flags]) == 2
        assert "is not a whole number" in capsys.readouterr().err
