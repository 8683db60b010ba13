"""``compare(augment="seed", views=K)``: classifiers on clean features and on cached views.

One small real experiment (300 scikit-learn digits, lenet5 trained one epoch with the seed
augmentation, 2 views of each training image, logistic regression and the linear SVM), run
twice over one feature store; the second run must compute no view.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.model_selection import StratifiedGroupKFold

from featclf._views_arms import training_set
from featclf.compare import TIMING_COLUMNS, compare
from featclf.comparison import ResultKey, views_label
from featclf.data import load_digits_images
from featclf.extract import DeepFeatureExtractor
from featclf.extract.views import extract_views
from featclf.report import write_report
from featclf.sweep import Features, sweep
from featclf.winner import load_winner, save_winner

pytestmark = pytest.mark.slow  # two compare runs with augmented training and views: ~20 s

GRID = [0.1, 1.0]
OPTIONS = {"models": ["lenet5"], "classifiers": ["logistic", "linear_svm"], "epochs": 1,
           "cv": 2, "c_grids": GRID, "n_resamples": 100, "device": "cpu", "augment": "seed",
           "views": 2}  # fmt: skip
VIEWS = views_label("penultimate", 2)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_digits_images(return_X_y=True)
    return X[:300], y[:300]


@pytest.fixture(scope="module")
def runs(digits, tmp_path_factory):
    """The same comparison twice over one feature store, and the store's folder."""
    store = tmp_path_factory.mktemp("views") / "store"
    return [compare(digits, store=store, **OPTIONS) for _ in range(2)], store


def test_views_arms_train_on_the_clean_features_and_every_view(runs):
    run = runs[0][0]
    results = run.results
    assert results["layer"].unique().tolist() == ["penultimate", VIEWS]
    for classifier in ("logistic", "linear_svm"):
        clean = run.estimators["lenet5", "penultimate", classifier]
        views = run.estimators["lenet5", VIEWS, classifier]
        # 240 training images: the clean arm fits 240 rows, the views arm 240 x (1 + 2).
        assert clean.named_steps["scale"].n_samples_seen_ == 240
        assert views.named_steps["scale"].n_samples_seen_ == 240 * 3
        assert not np.array_equal(clean.named_steps["scale"].mean_,
                                  views.named_steps["scale"].mean_)  # fmt: skip
        rows = results[(results["layer"] == VIEWS) & (results["classifier"] == classifier)]
        assert rows["C"].tolist() == GRID and rows["selected"].sum() == 1
    # Every arm is tested on the same 60 clean test images, paired with the same softmax head.
    arm = results[(results["layer"] == VIEWS) & (results["classifier"] != "softmax")]
    assert set(arm["n_test"]) == {60} and set(arm["n_train"]) == {240}
    assert (arm["accuracy_ci_low"] < arm["accuracy_ci_high"]).all()
    assert arm[["diff_vs_softmax", "diff_ci_low", "diff_ci_high", "mcnemar_p"]].notna().all().all()
    softmax = results[results["classifier"] == "softmax"]
    assert softmax["layer"].tolist() == ["penultimate", VIEWS]
    assert softmax["accuracy"].nunique() == 1
    np.testing.assert_array_equal(run.predictions["lenet5", VIEWS, "softmax"],
                                  run.predictions["lenet5", "penultimate", "softmax"])
    # The softmax network itself trained with the seed augmentation.
    assert run.networks["lenet5"].augment == "seed"
    assert "augment=seed" in run.setup["softmax training"]["lenet5"]
    assert "2 augmented views" in run.setup["augmentation"]
    assert "RandomAffine" in run.setup["views"]


def test_views_cross_validation_is_grouped_by_image(runs, digits):
    """The views arm's CV accuracies are those of a sweep whose folds keep each image's clean
    row and views together, and score the held-out images' clean rows only, rebuilt here from
    the store the comparison wrote."""
    (run, _), store = runs
    X, y = digits
    train, test = run.split.train, run.split.test
    extractor = DeepFeatureExtractor(run.networks["lenet5"], store=store, batch_size=256,
                                     device="cpu").fit()  # fmt: skip
    views = extract_views(extractor, X[train], augment="seed", n_views=2, random_state=0)
    assert (views.n_computed, views.n_reused) == (0, 480)  # compare stored every view
    clean = extractor.extract(X[train])
    assert clean.n_computed == 0
    F, labels, groups = training_set(clean.features, views.block("penultimate"), views.indices,
                                     y[train])  # fmt: skip
    assert F.shape == (720, 84)
    # Each view keeps its image's label; the groups name the image.
    assert (labels == y[train][groups]).all()
    assert np.bincount(groups).tolist() == [3] * 240
    for fit, held_out in StratifiedGroupKFold(2, shuffle=True, random_state=0).split(
            F, labels, groups):  # fmt: skip
        assert not set(groups[fit]) & set(groups[held_out])
    features = Features(F, F[:0], extractor.extract(X[test]).features, 1.0)
    options = {"grid": GRID, "options": {}, "cv": 2, "n_jobs": None, "random_state": 0,
               "n_resamples": 100, "confidence": 0.95}  # fmt: skip
    clean_rows = np.arange(len(F)) < len(train)
    grouped = sweep("logistic", features, labels, y[:0], y[test], run.classes, groups=groups,
                    scored=clean_rows, **options)  # fmt: skip
    ungrouped = sweep("logistic", features, labels, y[:0], y[test], run.classes,
                      scored=clean_rows, **options)  # fmt: skip
    all_rows = sweep("logistic", features, labels, y[:0], y[test], run.classes, groups=groups,
                     **options)  # fmt: skip
    rows = run.results[(run.results["layer"] == VIEWS) & (run.results["classifier"] == "logistic")]
    assert rows["cv_accuracy"].tolist() == [o.row["cv_accuracy"] for o in grouped]
    # Folds that split an image's views would have scored otherwise (the leak shows), and so
    # would folds that score the held-out views too.
    assert rows["cv_accuracy"].tolist() != [o.row["cv_accuracy"] for o in ungrouped]
    assert rows["cv_accuracy"].tolist() != [o.row["cv_accuracy"] for o in all_rows]
    assert rows["accuracy"].tolist() == [o.row["accuracy"] for o in grouped]


def test_a_second_run_reuses_every_view_and_gives_the_same_numbers(runs):
    (first, second), _ = runs
    counts = [run.timings.set_index("phase").loc[["extraction", "views"],
                                                 ["n_computed", "n_reused"]].values.tolist()
              for run in (first, second)]  # fmt: skip
    assert counts == [[[300, 0], [480, 0]], [[0, 300], [0, 480]]]
    pd.testing.assert_frame_equal(first.results.drop(columns=list(TIMING_COLUMNS)),
                                  second.results.drop(columns=list(TIMING_COLUMNS)))
    for key, pred in first.predictions.items():
        np.testing.assert_array_equal(pred, second.predictions[key])


def test_the_report_shows_the_views_arm_and_its_winner_classifies_clean_features(runs, digits,
                                                                                 tmp_path):
    run = runs[0][0]
    X, y = digits
    write_report(run, tmp_path / "report")
    text = (tmp_path / "report" / "report.md").read_text("utf-8")
    assert f"lenet5 — {VIEWS}" in text and "2 augmented views of each" in text
    written = pd.read_csv(tmp_path / "report" / "results.csv")
    assert VIEWS in set(written["layer"])
    save_winner(run, tmp_path / "model", layer=VIEWS, classifier="logistic")
    winner = load_winner(tmp_path / "model", device="cpu")
    assert (winner.manifest["layer"], winner.manifest["views"]) == ("penultimate", 2)
    np.testing.assert_array_equal(winner.predict(X[run.split.test]),
                                  run.predictions[ResultKey("lenet5", VIEWS, "logistic")])
