"""Per-image predictions next to the report: ``predictions.csv`` and ``predictions.parquet``.

One real ``compare`` (lenet5, 2 epochs, 600 MNIST-5k digits) checks that the table reproduces
``results.csv``'s accuracies exactly and lists the test images of the split in order; a tiny
folder of real image files checks that images are named by their paths; the scores of the
predicted class are checked against scikit-learn's own ``predict_proba``/``decision_function``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from imagefile_helpers import write_image

from featclf.compare import compare
from featclf.comparison import Comparison
from featclf.data import image_files, load_mnist5k
from featclf.pipelines import make_classifier
from featclf.report import PREDICTION_COLUMNS, write_report
from featclf.sweep import Features, sweep


@pytest.fixture(scope="module")
def mnist600() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_mnist5k(return_X_y=True)
    return X[:600], y[:600]


@pytest.fixture(scope="module")
def report(mnist600, tmp_path_factory):
    """The README's small comparison, its report, and the two tables read back."""
    comparison = compare(mnist600, models=["lenet5"], epochs=2, cv=2,
                         classifiers=["linear_svm", "logistic"],
                         c_grids={"linear_svm": [0.01, 1.0], "logistic": [0.1, 1.0]},
                         n_resamples=200, random_state=0)  # fmt: skip
    paths = write_report(comparison, tmp_path_factory.mktemp("report"))
    return comparison, paths, pd.read_csv(paths["predictions.csv"])


def test_predictions_csv_reproduces_every_selected_accuracy_exactly(report):
    _, paths, table = report
    assert tuple(table.columns) == PREDICTION_COLUMNS
    results = pd.read_csv(paths["results.csv"])
    selected = results[results["selected"]].set_index(["model", "layer", "classifier"])
    groups = table.groupby(["model", "layer", "classifier"], sort=False)
    assert sorted(groups.groups) == sorted(selected.index)
    assert len(selected) == 3  # softmax, linear_svm, logistic
    for key, rows in groups:
        assert rows["correct"].mean() == selected.loc[key, "accuracy"], key
        assert (rows["correct"] == (rows["predicted"] == rows["true_label"])).all()
        C = rows["C"].unique()
        assert len(C) == 1 and (np.isnan(C[0]) if key[2] == "softmax"
                                else C[0] == selected.loc[key, "C"])  # fmt: skip


def test_true_labels_and_images_are_the_test_split_in_order(report, mnist600):
    comparison, _, table = report
    _, y = mnist600
    test = np.asarray(comparison.split.test)
    for _, rows in table.groupby(["model", "layer", "classifier"]):
        assert rows["true_label"].tolist() == y[test].tolist()
        assert rows["image"].tolist() == test.tolist()  # arrays: row positions in the data


def test_scores_are_probabilities_or_decision_scores_of_the_predicted_class(report):
    comparison, paths, table = report
    kinds = table.groupby("classifier")["score_kind"].unique().map(list).to_dict()
    assert kinds == {"softmax": ["probability"], "logistic": ["probability"],
                     "linear_svm": ["decision"]}  # fmt: skip
    proba = table[table["score_kind"] == "probability"]["score"]
    # The predicted class has the largest of 10 probabilities: at least 1/10, at most 1.
    assert proba.between(0.1, 1.0).all()
    svm = table[table["classifier"] == "linear_svm"]["score"]
    assert svm.notna().all() and not svm.between(0.0, 1.0).all()  # margins, not probabilities
    parquet = pd.read_parquet(paths["predictions.parquet"])
    pd.testing.assert_frame_equal(parquet, table, check_dtype=False)
    text = paths["report.md"].read_text(encoding="utf-8")
    assert "[predictions.csv](predictions.csv)" in text
    assert '<a href="predictions.csv">' in paths["report.html"].read_text(encoding="utf-8")


def test_sweep_scores_equal_scikit_learns_scores_of_the_predicted_class():
    rng = np.random.default_rng(0)
    for n_classes in (3, 2):
        y = np.repeat(np.arange(n_classes), 20)
        F = (rng.normal(size=(len(y), 4)) + y[:, None]).astype(np.float32)
        features = Features(F[::2], F[:0], F[1::2], seconds=0.1)
        for name in ("logistic", "linear_svm"):
            outcomes = sweep(name, features, y[::2], y[:0], y[1::2], np.unique(y), grid=[0.5],
                             options={}, cv=2, n_jobs=None, random_state=0, n_resamples=20,
                             confidence=0.95)  # fmt: skip
            fitted = make_classifier(name, C=0.5).fit(F[::2], y[::2])
            if name == "logistic":
                expected, kind = fitted.predict_proba(F[1::2]).max(axis=1), "probability"
            else:
                decision = fitted.decision_function(F[1::2])
                # Binary: the margin of the predicted class, |decision|; else its column.
                expected = np.abs(decision) if n_classes == 2 else decision.max(axis=1)
                kind = "decision"
            assert outcomes[0].score_kind == kind
            np.testing.assert_allclose(outcomes[0].score, expected, rtol=1e-6)
            assert outcomes[0].pred.tolist() == fitted.predict(F[1::2]).tolist()


def test_images_of_a_folder_are_named_by_their_file_paths(tmp_path):
    rng = np.random.default_rng(0)
    for cls, row in (("dark", slice(0, 14)), ("light", slice(14, 28))):
        for i in range(6):
            array = rng.integers(0, 60, (28, 28), dtype=np.uint8)
            array[row] = 220
            write_image(tmp_path / "photos" / cls / f"{i:03d}.png", array)
    comparison = compare(tmp_path / "photos", models=["lenet5"], classifiers=["logistic"],
                         epochs=1, cv=2, c_grids=[1.0], n_resamples=20, random_state=0)
    paths = write_report(comparison, tmp_path / "report")
    table = pd.read_csv(paths["predictions.csv"])
    files = image_files(tmp_path / "photos")
    expected = [files.paths[i] for i in comparison.split.test]
    for _, rows in table.groupby("classifier"):
        assert rows["image"].tolist() == [str(p) for p in expected]
        # Each file's folder is its class: the true label beside each path is that folder.
        assert [Path(p).parent.name for p in rows["image"]] == rows["true_label"].tolist()


def test_predictions_of_the_wrong_length_are_refused_before_anything_is_written(tmp_path):
    results = pd.DataFrame({"model": "m", "layer": "l", "classifier": ["softmax"],
                            "accuracy": [0.5]})  # fmt: skip
    comparison = Comparison(results, predictions={("m", "l", "softmax"): [0, 1, 1]},
                            y_true=[0, 1])  # fmt: skip
    with pytest.raises(ValueError, match="m/l/softmax: 3 predictions for 2 test labels"):
        write_report(comparison, tmp_path / "report")
    assert not (tmp_path / "report").exists()
