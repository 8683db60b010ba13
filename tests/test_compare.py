"""Specification of featclf.compare and ``featclf compare``: the softmax-vs-SVM experiment.

Every test runs the real experiment (real networks trained for a couple of epochs, real
scikit-learn searches) on a small configuration: 600 MNIST-5k digits, 2 epochs, 2 values of C
per classifier, 2-fold cross-validation.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import log_loss

from featclf.cli import main
from featclf.compare import (
    RESULT_COLUMNS,
    TIMING_COLUMNS,
    compare,
    load_data,
    training_recipe,
)
from featclf.comparison import Comparison, ResultKey
from featclf.data import load_digits_images, load_mnist5k
from featclf.linear import TorchLogisticRegression
from featclf.model_selection import make_split
from featclf.pipelines import CLASSIFIERS
from featclf.report import verdict, write_report
from featclf.train import SoftmaxClassifier

SMALL = {
    "epochs": 2,
    "cv": 2,
    "c_grids": {
        "linear_svm": [0.01, 1.0],
        "crammer_singer_svm": [0.01, 1.0],
        "rbf_svm": [1.0, 10.0],
        "logistic": [0.1, 1.0],
    },
    "n_resamples": 200,
    "random_state": 0,
}


@pytest.fixture(scope="module")
def mnist600() -> tuple[np.ndarray, np.ndarray]:
    """600 MNIST-5k digits, 60 per class."""
    X, y = load_mnist5k(return_X_y=True)
    idx = np.concatenate([np.flatnonzero(y == c)[:60] for c in range(10)])
    return X[idx], y[idx]


@pytest.fixture(scope="module")
def comparison(mnist600) -> Comparison:
    """The small experiment: lenet5 and seed_cnn, every classifier."""
    return compare(mnist600, **SMALL)


@pytest.fixture(scope="module")
def results(comparison) -> pd.DataFrame:
    """Its results table."""
    return comparison.results


def _histories(comparison: Comparison) -> dict[tuple[str, str], pd.DataFrame]:
    """Per-epoch training histories without their timing column."""
    return {key: history.drop(columns="seconds")
            for key, history in comparison.histories.items()}  # fmt: skip


def _assert_same_training(a: Comparison, b: Comparison) -> None:
    """Both runs trained the same networks: equal loss and accuracy in every epoch."""
    first, second = _histories(a), _histories(b)
    assert first.keys() == second.keys()
    for key in first:
        pd.testing.assert_frame_equal(first[key], second[key])


def _training_columns(df: pd.DataFrame) -> pd.DataFrame:
    """What training and C selection decide; nothing here may depend on the test images."""
    return df[["model", "layer", "classifier", "C", "selected", "cv_accuracy", "n_train",
               "n_features"]]  # fmt: skip


# --------------------------------------------------------------------------- the results table


def test_rows_for_every_classifier_of_both_seed_networks(results):
    assert list(results.columns) == list(RESULT_COLUMNS)
    assert set(results["model"]) == {"lenet5", "seed_cnn"}
    assert set(results["layer"]) == {"penultimate"}
    for model, rows in results.groupby("model"):
        assert set(rows["classifier"]) == {"softmax", *CLASSIFIERS}
        assert (rows["classifier"] == "softmax").sum() == 1
        for classifier in CLASSIFIERS:  # the whole C grid, one row per C
            swept = rows[rows["classifier"] == classifier]
            assert swept["C"].tolist() == SMALL["c_grids"][classifier]
        expected_dim = {"lenet5": 84, "seed_cnn": 128}[model]
        assert set(rows.loc[rows["classifier"] != "softmax", "n_features"]) == {expected_dim}
    assert set(results["n_train"]) == {480} and set(results["n_test"]) == {120}
    assert set(results["dataset"]) == {"custom"}


def test_every_row_has_accuracy_f1_interval_and_times(results):
    assert results["accuracy"].between(0, 1).all()
    assert results["macro_f1"].between(0, 1).all()
    assert (results["accuracy_ci_low"] <= results["accuracy"]).all()
    assert (results["accuracy"] <= results["accuracy_ci_high"]).all()
    assert (results["accuracy_ci_low"] < results["accuracy_ci_high"]).all()
    assert (results["fit_time_s"] > 0).all() and (results["predict_time_s"] > 0).all()
    features = results[results["classifier"] != "softmax"]
    assert (features["extract_time_s"] > 0).all()
    assert (features["extract_images_per_s"] > 0).all()
    # Log-loss exists exactly where probabilities do: the softmax head and logistic regression.
    has_proba = results["classifier"].isin(["softmax", "logistic"])
    assert results.loc[has_proba, "log_loss"].gt(0).all()
    assert results.loc[~has_proba, "log_loss"].isna().all()


def test_paired_statistics_compare_each_classifier_with_the_softmax_head(comparison, results):
    y_true = comparison.y_true
    for model, rows in results.groupby("model"):
        softmax = rows[rows["classifier"] == "softmax"].iloc[0]
        assert math.isnan(softmax["mcnemar_p"]) and math.isnan(softmax["diff_vs_softmax"])
        softmax_pred = comparison.predictions[ResultKey(model, "penultimate", "softmax")]
        assert np.mean(softmax_pred == y_true) == pytest.approx(softmax["accuracy"])
        others = rows[rows["classifier"] != "softmax"]
        assert others["mcnemar_p"].between(0, 1).all()
        diff = others["accuracy"] - softmax["accuracy"]
        np.testing.assert_allclose(others["diff_vs_softmax"], diff, atol=1e-12)
        # McNemar's discordant counts give the same difference: (b - c) / n.
        np.testing.assert_allclose((others["mcnemar_b"] - others["mcnemar_c"]) / len(y_true),
                                   diff, atol=1e-12)  # fmt: skip
        assert (others["diff_ci_low"] <= others["diff_vs_softmax"]).all()
        assert (others["diff_vs_softmax"] <= others["diff_ci_high"]).all()
        for _, row in others[others["selected"]].iterrows():
            pred = comparison.predictions[model, "penultimate", row["classifier"]]
            assert np.mean(pred == y_true) == pytest.approx(row["accuracy"])


def test_selected_C_is_the_cross_validation_choice_not_the_test_choice(results):
    swept = results[results["classifier"] != "softmax"]
    for _, rows in swept.groupby(["model", "classifier"]):
        assert rows["selected"].sum() == 1
        best_cv = rows["cv_accuracy"].to_numpy().argmax()  # ties: the first (smallest C)
        assert rows["selected"].to_numpy().nonzero()[0][0] == best_cv


def test_write_report_on_compare_results_writes_every_file(comparison, results, tmp_path):
    paths = write_report(comparison, tmp_path / "report")
    assert set(paths) == {"results.csv", "report.md", "report.html", "accuracy.png",
                          "c_curve.png", "confusion_lenet5_penultimate.png",
                          "confusion_seed_cnn_penultimate.png", "predictions.csv",
                          "predictions.parquet", "training_lenet5.png", "training_seed_cnn.png",
                          "reliability_lenet5_penultimate.png",
                          "reliability_seed_cnn_penultimate.png"}  # fmt: skip
    for path in paths.values():
        assert path.stat().st_size > 0
    written = pd.read_csv(paths["results.csv"])
    assert len(written) == len(results)
    text = paths["report.md"].read_text(encoding="utf-8")
    assert "lenet5" in text and "seed_cnn" in text and "McNemar" in text
    assert verdict(comparison).split(",")[0] in text


# --------------------------------------------------------------------------- reproducibility


def test_the_same_seed_reproduces_every_number_but_the_timings(comparison, mnist600):
    again = compare(mnist600, **SMALL)
    _assert_same_report(comparison, again)
    _assert_same_training(again, comparison)


def _assert_same_report(a: Comparison, b: Comparison) -> None:
    """Every number but the timings, every prediction, the split and the setup are equal."""
    pd.testing.assert_frame_equal(a.results.drop(columns=list(TIMING_COLUMNS)),
                                  b.results.drop(columns=list(TIMING_COLUMNS)))  # fmt: skip
    assert a.predictions.keys() == b.predictions.keys()
    for key, pred in a.predictions.items():
        np.testing.assert_array_equal(b.predictions[key], pred, err_msg=str(key))
    for part in ("train", "validation", "test"):
        np.testing.assert_array_equal(getattr(a.split, part), getattr(b.split, part))
    np.testing.assert_array_equal(a.y_true, b.y_true)
    np.testing.assert_array_equal(a.classes, b.classes)
    assert a.setup == b.setup


# --------------------------------------------------------------------------- leakage


def test_split_is_stratified_and_the_parts_are_disjoint(comparison, mnist600):
    _, y = mnist600
    split = comparison.split
    train, test = split.train, split.test
    assert len(split.validation) == 0
    assert not set(train) & set(test)
    assert sorted([*train, *test]) == list(range(len(y)))
    assert np.bincount(y[test]).tolist() == [12] * 10
    assert comparison.y_true.tolist() == y[test].tolist()


def test_make_split_seed001_has_three_disjoint_stratified_parts():
    y = np.repeat(np.arange(10), 100)
    parts = make_split(y, "seed001", random_state=3)
    assert (len(parts.train), len(parts.validation), len(parts.test)) == (650, 250, 100)
    assert sorted([*parts.train, *parts.validation, *parts.test]) == list(range(1000))
    assert np.bincount(y[parts.test]).tolist() == [10] * 10
    assert np.bincount(y[parts.validation]).tolist() == [25] * 10
    same = make_split(y, (0.65, 0.25, 0.10), random_state=3)
    assert np.array_equal(same.train, parts.train) and np.array_equal(same.test, parts.test)
    assert not np.array_equal(make_split(y, "seed001", random_state=4).test, parts.test)


def test_test_images_never_reach_training_or_C_selection(comparison, results, mnist600):
    """Replace every test image by noise: training and C selection must not notice."""
    X, y = mnist600
    test = comparison.split.test
    garbage = X.copy()
    garbage[test] = np.random.default_rng(1).integers(0, 256, size=X[test].shape, dtype=np.uint8)
    noisy_run = compare((garbage, y), **SMALL)
    noisy = noisy_run.results

    for part in ("train", "validation", "test"):
        np.testing.assert_array_equal(getattr(noisy_run.split, part),
                                      getattr(comparison.split, part))  # fmt: skip
    # The networks trained identically (same loss and accuracy every epoch) ...
    _assert_same_training(noisy_run, comparison)
    # ... and cross-validation on the training features chose the same C with the same scores.
    pd.testing.assert_frame_equal(_training_columns(noisy), _training_columns(results))
    # The test images are what the test metrics measure: noise is classified near chance.
    softmax = noisy[noisy["classifier"] == "softmax"]
    assert (softmax["accuracy"] < 0.5).all()
    assert (noisy["accuracy"] != results["accuracy"]).any()


# --------------------------------------------------------------------------- transfer, layers


@pytest.fixture(scope="module")
def mnist_checkpoint(tmp_path_factory, mnist600) -> str:
    """A lenet5 trained (briefly) on MNIST digits, saved as a featclf checkpoint."""
    X, y = mnist600
    clf = SoftmaxClassifier("lenet5", epochs=2, validation_fraction=0.0, random_state=0)
    path = tmp_path_factory.mktemp("weights") / "lenet5-mnist.pt"
    return str(clf.fit(X, y).save(path))


def test_transfer_compares_frozen_features_with_scratch_and_fine_tuning(mnist_checkpoint):
    X, y = load_digits_images(return_X_y=True)
    run = compare((X[:400], y[:400]), weights=mnist_checkpoint, classifiers=["logistic"],
                  epochs=1, cv=2, c_grids=[1.0], n_resamples=100, dataset="digits")
    results = run.results
    assert results["model"].unique().tolist() == ["lenet5"]  # from the checkpoint
    assert results["classifier"].tolist() == ["softmax", "softmax_finetune", "logistic"]
    scratch, finetuned, logistic = (row for _, row in results.iterrows())
    assert finetuned["diff_vs_softmax"] == pytest.approx(finetuned["accuracy"]
                                                         - scratch["accuracy"])
    assert 0 <= logistic["mcnemar_p"] <= 1
    assert run.setup["pre-trained weights"] == {"lenet5": mnist_checkpoint}
    assert set(run.histories) == {("lenet5", "softmax"), ("lenet5", "softmax_finetune")}
    text = verdict(run)
    assert "trained from scratch" in text and "Fine-tuning the pre-trained lenet5" in text
    with pytest.raises(ValueError, match="checkpoint of (model )?'lenet5', not 'seed_cnn'"):
        compare((X[:400], y[:400]), models=["seed_cnn"], weights=mnist_checkpoint)


def test_transfer_features_come_from_the_pretrained_network(mnist_checkpoint):
    """Frozen features do not depend on how long the baselines train."""
    X, y = load_digits_images(return_X_y=True)
    runs = [
        compare((X[:300], y[:300]), weights=mnist_checkpoint, classifiers=["rbf_svm"],
                epochs=epochs, cv=2, c_grids=[1.0, 10.0], n_resamples=50)
        for epochs in (1, 2)
    ]  # fmt: skip
    svm = [r.results[r.results["classifier"] == "rbf_svm"].reset_index(drop=True)
           for r in runs]  # fmt: skip
    pd.testing.assert_frame_equal(svm[0][["C", "cv_accuracy", "accuracy"]],
                                  svm[1][["C", "cv_accuracy", "accuracy"]])  # fmt: skip
    softmax = [r.results.loc[r.results["classifier"] == "softmax", "fit_time_s"].item()
               for r in runs]  # fmt: skip
    assert all(t > 0 for t in softmax)
    assert len(runs[0].histories["lenet5", "softmax"]["epoch"]) == 1
    assert len(runs[1].histories["lenet5", "softmax"]["epoch"]) == 2


def test_layer_sweep_gives_one_group_per_layer(mnist600):
    X, y = mnist600
    run = compare((X[:300], y[:300]), models=["lenet5"], layers=[None, "c5", "c3"],
                  classifiers=["logistic"], epochs=1, cv=2, c_grids=[1.0],
                  n_resamples=50)  # fmt: skip
    results = run.results
    assert results["layer"].unique().tolist() == ["penultimate", "c5", "c3"]
    features = results[results["classifier"] == "logistic"].set_index("layer")["n_features"]
    assert features.to_dict() == {"penultimate": 84, "c5": 120, "c3": 16}
    # One softmax network serves every layer: its row repeats with the same numbers.
    softmax = results[results["classifier"] == "softmax"]
    assert softmax["accuracy"].nunique() == 1 and len(softmax) == 3
    # One extractor serves every layer: one extraction of the 300 images, not three.
    extraction = run.timings[run.timings["phase"] == "extraction"]
    assert extraction[["model", "layer", "n_computed", "n_reused"]].values.tolist() == [
        ["lenet5", "penultimate,c5,c3,logits", 300, 0]]  # fmt: skip
    # ... and its features are each layer's own, as a one-layer extractor gives them.
    logistic = results[results["classifier"] == "logistic"].set_index("layer")
    alone = compare((X[:300], y[:300]), models=["lenet5"], layers=["c5"],
                    classifiers=["logistic"], epochs=1, cv=2, c_grids=[1.0],
                    n_resamples=50).results  # fmt: skip
    alone = alone[alone["classifier"] == "logistic"].set_index("layer")
    assert alone.loc["c5", "cv_accuracy"] == logistic.loc["c5", "cv_accuracy"]
    assert alone.loc["c5", "accuracy"] == logistic.loc["c5", "accuracy"]


def test_softmax_is_scored_from_the_logits_of_the_one_extraction(mnist600):
    """The softmax head's predictions come from the same forward that gives every layer's
    features: the trained network itself never runs on the test images again, and the
    predictions and probabilities are exactly those of SoftmaxClassifier.predict(_proba)."""
    X, y = mnist600
    calls: list[tuple[int, int]] = []

    def count(module, args):
        # Inference forwards of real tensors only: not training, not FX tracing's proxies.
        if not module.training and args and isinstance(args[0], torch.Tensor):
            calls.append((id(module), int(args[0].shape[0])))

    # Pre-hooks run outermost first: calls[0] is the root of the first inference forward.
    hook = torch.nn.modules.module.register_module_forward_pre_hook(count)
    try:
        run = compare((X[:300], y[:300]), models=["lenet5"], layers=[None, "c5"],
                      classifiers=["logistic"], epochs=1, cv=2, c_grids=[1.0],
                      n_resamples=50)  # fmt: skip
    finally:
        hook.remove()
    softmax = run.networks["lenet5"]
    test = X[:300][run.split.test]
    pred = run.predictions["lenet5", "penultimate", "softmax"]
    np.testing.assert_array_equal(pred, softmax.predict(test))
    proba = softmax.predict_proba(test)
    kept = proba[np.arange(len(pred)), np.searchsorted(softmax.classes_, pred)]
    # The same network and weights; the extractor runs it channels-last on the CPU (faster),
    # the classifier contiguous, so the logits agree to float32 rounding (~1e-7), not bits.
    np.testing.assert_allclose(run.scores["lenet5", "penultimate", "softmax"], kept,
                               rtol=1e-6)  # fmt: skip
    row = run.results[run.results["classifier"] == "softmax"].iloc[0]
    assert row["accuracy"] == np.mean(softmax.predict(test) == y[:300][run.split.test])
    assert row["log_loss"] == pytest.approx(log_loss(y[:300][run.split.test], proba,
                                                     labels=softmax.classes_), rel=1e-6)
    # The calls above (predict, predict_proba) came after the hook was removed: during
    # compare, the trained module ran no inference forward at all ...
    assert id(softmax.module_) not in {module for module, _ in calls}
    # ... and the feature network (layers c5, penultimate and the logits) ran once per batch:
    # a one-image probe of the widths, then the 240 training and the 60 test images.
    extraction = run.timings[run.timings["phase"] == "extraction"]
    assert extraction["layer"].tolist() == ["penultimate,c5,logits"]
    roots = [n for module, n in calls if module == calls[0][0]]
    assert roots == [1, 240, 60]


def test_solver_torch_fits_the_linear_classifiers_with_featclf_linear(mnist600):
    X, y = mnist600
    run = compare((X[:300], y[:300]), models=["lenet5"], classifiers=["logistic", "rbf_svm"],
                  epochs=1, cv=2, c_grids={"logistic": [0.1, 1.0], "rbf_svm": [1.0]},
                  n_resamples=50, solver="torch")  # fmt: skip
    swept = run.results[run.results["classifier"] != "softmax"]
    solvers = swept.groupby("classifier")["solver"].agg(set).to_dict()
    # The RBF SVM has no torch twin: scikit-learn fits it whatever is asked.
    assert solvers == {"logistic": {"torch"}, "rbf_svm": {"sklearn"}}
    fitted = run.estimators["lenet5", "penultimate", "logistic"].named_steps["clf"]
    assert isinstance(fitted, TorchLogisticRegression)
    assert run.setup["solver"] == "torch"


# --------------------------------------------------------------------------- the command


def _digit_folder(root, n: int = 200):
    """Scikit-learn digits as PNG files named LABEL.N.png (the seed's layout)."""
    X, y = load_digits_images(return_X_y=True)
    root.mkdir()
    for i in range(n):
        Image.fromarray(X[i]).save(root / f"{y[i]}.{i}.png")
    return root


def test_cli_compare_writes_a_report_directory(tmp_path, capsys):
    images = _digit_folder(tmp_path / "digits")
    out = tmp_path / "report"
    code = main(["compare", "--data", str(images), "--model", "lenet5", "--layer", "penultimate",
                 "--layer", "c5", "--classifier", "logistic", "--classifier", "rbf_svm",
                 "--epochs", "1", "--split", "seed001", "--pca", "8", "--whiten", "--quick",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    assert {p.name for p in out.iterdir()} >= {"report.md", "report.html", "results.csv",
                                               "accuracy.png", "c_curve.png"}  # fmt: skip
    written = pd.read_csv(out / "results.csv")
    assert set(written["layer"]) == {"penultimate", "c5"}
    assert set(written["n_test"]) == {20}  # seed001: 10% of 200
    # With a validation part, the softmax row's cv_accuracy is its validation accuracy.
    assert written.loc[written["classifier"] == "softmax", "cv_accuracy"].notna().all()
    assert "classifier options: pca=8, whiten=True" in (out / "report.md").read_text("utf-8")
    printed = capsys.readouterr()
    assert "total time" in printed.out and "McNemar p" in printed.out
    assert "lenet5/c5: logistic: choosing C" in printed.err


def _without_timings(report_md: str) -> str:
    """A report's Markdown without what measures time: the tables' last three columns (fit,
    predict and extraction seconds) and the extraction speed in each group's note."""
    lines = []
    for line in report_md.splitlines():
        if line.startswith("|"):
            line = "|".join(line.split("|")[:-4]) + "|"
        lines.append(re.sub(r"feature extraction \S+ s \([^)]*images/s\)", "extraction",
                            line))  # fmt: skip
    return "\n".join(lines)


def test_cli_compare_twice_with_a_store_computes_nothing_the_second_time(tmp_path, capsys):
    images = _digit_folder(tmp_path / "digits", n=120)
    store = tmp_path / "store"
    command = ["compare", "--data", str(images), "--model", "lenet5", "--layer", "penultimate",
               "--layer", "c5", "--classifier", "logistic", "--epochs", "1", "--quick",
               "--store", str(store)]  # fmt: skip
    logs, outs = [], [tmp_path / "first", tmp_path / "second"]
    for out in outs:
        assert main([*command, "--out", str(out)]) == 0
        logs.append(capsys.readouterr().err)
    # 120 images (96 train + 24 test), both layers from one forward pass per batch.
    assert "lenet5: feature vectors of 120 images: 120 computed, 0 reused" in logs[0]
    assert "lenet5: feature vectors of 120 images: 0 computed, 120 reused" in logs[1]
    first, second = (pd.read_csv(out / "results.csv") for out in outs)
    assert set(first["layer"]) == {"penultimate", "c5"}
    pd.testing.assert_frame_equal(first.drop(columns=list(TIMING_COLUMNS)),
                                  second.drop(columns=list(TIMING_COLUMNS)))  # fmt: skip
    reports = [(out / "report.md").read_text("utf-8") for out in outs]
    assert f"feature store: {store}" in reports[0]
    assert _without_timings(reports[0]) == _without_timings(reports[1])
    for name in ("accuracy.png", "c_curve.png", "confusion_lenet5_c5.png"):
        assert (outs[0] / name).read_bytes() == (outs[1] / name).read_bytes(), name


def test_compare_with_a_store_gives_the_numbers_of_a_run_without(tmp_path):
    X, y = load_digits_images(return_X_y=True)
    options = {"models": ["lenet5"], "classifiers": ["rbf_svm"], "epochs": 1, "cv": 2,
               "c_grids": [1.0, 10.0], "n_resamples": 50}  # fmt: skip
    plain = compare((X[:200], y[:200]), **options)
    cached = compare((X[:200], y[:200]), store=tmp_path / "store", **options)
    again = compare((X[:200], y[:200]), store=tmp_path / "store", **options)
    extraction = [run.timings.set_index("phase").loc["extraction", ["n_computed", "n_reused"]]
                  for run in (plain, cached, again)]  # fmt: skip
    assert [e.tolist() for e in extraction] == [[200, 0], [200, 0], [0, 200]]
    for run in (cached, again):
        pd.testing.assert_frame_equal(plain.results.drop(columns=list(TIMING_COLUMNS)),
                                      run.results.drop(columns=list(TIMING_COLUMNS)))  # fmt: skip


def test_cli_reports_a_missing_data_folder_with_exit_code_1(tmp_path, capsys):
    code = main(["compare", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")])
    assert code == 1  # a runtime failure (a usage error would be 2)
    assert "nowhere" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


# --------------------------------------------------------------------------- argument errors


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"split": 1.5}, "split"),
        ({"split": (0.5, 0.3)}, "sum to 1"),
        ({"split": "seed002"}, "seed001"),
        ({"classifiers": ["softmax"]}, "classifiers"),
        ({"models": ["lenet6"]}, "lenet5"),
        ({"cv": 1}, "The 'cv' parameter of compare must be an int in the range"),
        ({"n_resamples": 0}, "The 'n_resamples' parameter of compare"),
        ({"confidence": 1.5}, "The 'confidence' parameter of compare"),
        ({"pooling": "median"}, "The 'pooling' parameter of compare"),
        ({"store": 3}, "The 'store' parameter of compare"),
        ({"layers": ["c5", "c5"]}, "c5 named twice"),
        ({"models": ["lenet5"], "layers": ["c9"]}, "c5"),
        ({"c_grids": {"logistic": [0.0]}}, "positive"),
        ({"train_options": {"learning_rate": 0.1}}, "learning_rate"),
        ({"classifier_options": {"whiten": True}}, "whiten=True needs a PCA step"),
        ({"views": 4}, "views are augmented copies of the training images: pass augment='seed'"),
        ({"views": -1}, "The 'views' parameter of compare must be an int in the range"),
        ({"augment": "flip"}, "The 'augment' parameter of compare must be"),
        ({"augment": "seed", "train_options": {"augment": print}}, "give the augmentation once"),
        ({"solver": "cuml"}, "The 'solver' parameter of compare must be a str among"),
    ],
)
def test_bad_arguments_are_refused_before_any_training(options, message):
    X, y = load_digits_images(return_X_y=True)
    with pytest.raises(ValueError, match=message):
        compare((X[:100], y[:100]), **options)


def test_load_data_reads_folders_and_refuses_unlabelled_ones(tmp_path):
    name, files, labels = load_data(_digit_folder(tmp_path / "seed_digits", n=30))
    assert name == "seed_digits" and len(files) == 30
    assert sorted(set(labels.tolist())) == list(range(10))
    unlabelled = tmp_path / "unlabelled"
    unlabelled.mkdir()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(unlabelled / "img.png")
    with pytest.raises(ValueError, match="needs labels, but the file names carry no label"):
        load_data(unlabelled)
    with pytest.raises(FileNotFoundError, match="mnist6k"):
        load_data("mnist6k")


def test_training_recipes_follow_the_seed():
    seed = training_recipe("seed_cnn")
    assert {k: seed[k] for k in ("optimizer", "lr", "momentum", "nesterov", "lr_decay",
                                 "batch_size", "epochs")} == {
        "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "lr_decay": 1e-6,
        "batch_size": 100, "epochs": 10}  # fmt: skip
    assert training_recipe("lenet5", options={"augment": "seed"})["augment"] == "seed"


def test_training_recipe_is_the_model_familys_recipe_on_every_training_image():
    from featclf.train import recipe_for

    for model in ("lenet5", "seed_cnn", "resnet18"):
        assert training_recipe(model) == {**recipe_for(model), "validation_fraction": 0.0}
    assert training_recipe("resnet18")["optimizer"] != training_recipe("lenet5")["optimizer"]
    assert training_recipe("resnet18", epochs=2)["epochs"] == 2


def test_cli_c_grids_sets_the_grid_and_a_c_at_its_edge_is_warned_about_in_cli_words(tmp_path):
    images = _digit_folder(tmp_path / "digits")
    out = tmp_path / "report"
    code = main(["compare", "--data", str(images), "--model", "lenet5", "--classifier",
                 "logistic", "--epochs", "1", "--quick", "--c-grids", "logistic=1e-4,2e-4",
                 "--out", str(out)])  # fmt: skip
    assert code == 0
    written = pd.read_csv(out / "results.csv")
    logistic = written[written["classifier"] == "logistic"]
    assert sorted(logistic["C"]) == [1e-4, 2e-4]  # the grid given, not the default one
    chosen = float(logistic.loc[logistic["selected"], "C"].iloc[0])
    report = (out / "report.md").read_text("utf-8")
    warnings = report[report.index("## Warnings"):report.index("## Setup")]
    edge = "largest" if chosen == 2e-4 else "smallest"
    assert f"C={chosen:g} is the {edge} value tried for the logistic regression" in warnings
    assert "--c-grids" in warnings and "c_grids" not in warnings.replace("--c-grids", "")


def test_cli_c_grids_refuses_a_malformed_grid_as_a_usage_error(capsys):
    assert main(["compare", "--c-grids", "logistic=0,1"]) == 2
    assert "is not CLASSIFIER=C,C,..." in capsys.readouterr().err
