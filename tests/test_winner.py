"""The fitted winner of a comparison: kept, saved, reloaded in a new process, used by predict."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from featclf.cli import main
from featclf.compare import compare
from featclf.comparison import Comparison, ResultKey
from featclf.data import load_mnist5k
from featclf.winner import choose_winner, load_winner, save_winner

pytestmark = pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")


@pytest.fixture(scope="module")
def mnist_run():
    """A real, short comparison on 600 MNIST digits spread over every class (sorted data)."""
    X, y = load_mnist5k(return_X_y=True)
    rows = np.linspace(0, len(y) - 1, 600).astype(int)
    X, y = X[rows], y[rows]
    comparison = compare((X, y), models=["lenet5"], epochs=2, cv=2,
                         classifiers=["linear_svm", "logistic"], n_resamples=200,
                         device="cpu")  # fmt: skip
    return comparison, X, y


def test_compare_keeps_the_fitted_estimators_and_network(mnist_run):
    comparison, X, _ = mnist_run
    keys = {ResultKey("lenet5", "penultimate", c) for c in ("softmax", "linear_svm", "logistic")}
    assert set(comparison.estimators) == keys
    softmax = comparison.estimators["lenet5", "penultimate", "softmax"]
    # The softmax baseline is the network the features came from.
    assert comparison.networks["lenet5"] is softmax
    test = X[comparison.split.test]
    np.testing.assert_array_equal(softmax.predict(test),
                                  comparison.prediction("lenet5", "penultimate", "softmax"))
    logistic = comparison.estimators["lenet5", "penultimate", "logistic"]
    selected = comparison.results.query("classifier == 'logistic' and selected")
    assert logistic.get_params()["clf__C"] == selected["C"].item()


def test_saved_winner_reloads_in_a_new_process_with_the_same_predictions(mnist_run, tmp_path):
    comparison, X, _ = mnist_run
    manifest = json.loads(save_winner(comparison, tmp_path / "model").read_text())
    # The verdict's rule: the only SVM here, whatever logistic regression's accuracies.
    assert manifest["classifier"] == "linear_svm"
    selected = comparison.results.query("classifier == 'linear_svm' and selected")
    assert manifest["C"] == selected["C"].item()
    assert manifest["cv_accuracy"] == selected["cv_accuracy"].item()
    assert manifest["classes"] == list(range(10))
    assert manifest["pooling"] == "avg" and manifest["layer"] == "penultimate"
    assert manifest["weights"] == comparison.setup["weights"]["lenet5"]
    assert sorted(os.listdir(tmp_path / "model")) == ["classifier.joblib", "network.pt",
                                                      "winner.json"]
    np.save(tmp_path / "test.npy", X[comparison.split.test])
    code = ("import sys, numpy as np; from featclf.winner import load_winner; "
            "w = load_winner(sys.argv[1], device='cpu'); "
            "np.save(sys.argv[3], w.predict(np.load(sys.argv[2])))")
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "model"),
                    str(tmp_path / "test.npy"), str(tmp_path / "pred.npy")],
                   check=True, env={**os.environ, "FEATCLF_OFFLINE": "1"}, timeout=120)
    predicted = np.load(tmp_path / "pred.npy")
    stored = comparison.prediction("lenet5", "penultimate", "linear_svm")
    np.testing.assert_array_equal(predicted, stored)
    # A real classifier, not a constant: most classes predicted, well above chance (0.1).
    assert len(set(stored.tolist())) >= 8 and np.mean(stored == comparison.y_true) > 0.5


def test_logistic_winner_gives_probabilities_equal_to_the_stored_scores(mnist_run, tmp_path):
    comparison, X, _ = mnist_run
    save_winner(comparison, tmp_path, classifier="logistic")
    winner = load_winner(tmp_path, device="cpu")
    test = X[comparison.split.test]
    key = ResultKey("lenet5", "penultimate", "logistic")
    proba = winner.predict_proba(test)
    np.testing.assert_array_equal(winner.classes_[proba.argmax(axis=1)],
                                  comparison.predictions[key])
    np.testing.assert_allclose(proba.max(axis=1), comparison.scores[key], rtol=1e-6)
    np.testing.assert_array_equal(winner.predict(test), comparison.predictions[key])


def test_featclf_predict_writes_the_winners_predictions(mnist_run, tmp_path, capsys):
    comparison, X, _ = mnist_run
    save_winner(comparison, tmp_path / "model")
    folder = tmp_path / "images"
    (folder / "sub").mkdir(parents=True)
    for i, row in enumerate(comparison.split.test[:7]):
        where = folder / "sub" if i % 2 else folder
        Image.fromarray(X[row]).save(where / f"digit{i:02d}.png")
    out = tmp_path / "out" / "predictions.csv"
    code = main(["predict", "--model", str(tmp_path / "model"), "--images", str(folder),
                 "--out", str(out), "--no-progress", "--device", "cpu"])
    assert code == 0
    table = pd.read_csv(out)
    assert list(table.columns) == ["path", "predicted", "score"]  # an SVM: decision scores
    assert len(table) == 7
    winner = load_winner(tmp_path / "model", device="cpu")
    paths = table["path"].tolist()
    np.testing.assert_array_equal(table["predicted"].to_numpy(), winner.predict(paths))
    decision = winner.decision_function(paths)
    np.testing.assert_allclose(table["score"].to_numpy(), decision.max(axis=1), rtol=1e-5)
    # PNG round trip of uint8 pixels: the same images, hence the comparison's predictions.
    stored = comparison.prediction("lenet5", "penultimate", "linear_svm")[:7]
    by_name = dict(zip([os.path.basename(p) for p in paths], table["predicted"]))
    assert [by_name[f"digit{i:02d}.png"] for i in range(7)] == stored.tolist()
    assert "7 images classified" in capsys.readouterr().out


def test_predict_without_a_saved_model_names_the_file(tmp_path, capsys):
    (tmp_path / "images").mkdir()
    code = main(["predict", "--model", str(tmp_path / "nothing"), "--images",
                 str(tmp_path / "images"), "--out", str(tmp_path / "p.csv")])
    assert code == 1
    assert "winner.json" in capsys.readouterr().err
    assert not (tmp_path / "p.csv").exists()


def _table(cv: dict[str, float], test: dict[str, float]) -> Comparison:
    names = list(cv)
    results = pd.DataFrame({
        "model": "m", "layer": "penultimate", "classifier": ["softmax", *names],
        "selected": True, "C": [np.nan] + [1.0] * len(names),
        "cv_accuracy": [0.5, *cv.values()], "accuracy": [0.99, *test.values()],
    })  # fmt: skip
    return Comparison(results)


def test_the_winner_is_chosen_by_cross_validation_not_test_accuracy():
    comparison = _table({"linear_svm": 0.80, "rbf_svm": 0.90, "logistic": 0.95},
                        {"linear_svm": 0.97, "rbf_svm": 0.85, "logistic": 0.99})
    # The SVMs only (the verdict's rival), the softmax head never; CV decides, not the test.
    assert choose_winner(comparison) == ("m", "penultimate", "rbf_svm")
    assert choose_winner(comparison, classifier="logistic").classifier == "logistic"
    # Ties go to featclf's classifier order: the linear SVM before the RBF SVM.
    tie = _table({"rbf_svm": 0.9, "linear_svm": 0.9}, {"rbf_svm": 0.9, "linear_svm": 0.8})
    assert choose_winner(tie).classifier == "linear_svm"
    # No SVM: the best other classifier.
    assert choose_winner(_table({"logistic": 0.7}, {"logistic": 0.6})).classifier == "logistic"


def test_save_winner_refuses_a_comparison_without_fitted_objects(tmp_path):
    comparison = _table({"linear_svm": 0.8}, {"linear_svm": 0.9})
    with pytest.raises(ValueError, match="kept no fitted linear_svm"):
        save_winner(comparison, tmp_path)
    with pytest.raises(ValueError, match="no selected classifier matches"):
        choose_winner(comparison, model="other")
    assert not (tmp_path / "winner.json").exists()


def test_transfer_winner_saves_the_frozen_network(tmp_path):
    # A transfer run's features come from a pre-trained network (a Network, not a softmax
    # classifier): it is saved as a featclf checkpoint and reloaded as the extractor.
    from featclf.data import load_digits_images
    from featclf.train import SoftmaxClassifier

    X, y = load_digits_images(return_X_y=True)
    source = SoftmaxClassifier("lenet5", epochs=1, device="cpu", random_state=0).fit(X[:200],
                                                                                     y[:200])
    source.save(tmp_path / "pretrained.pt")
    comparison = compare((X[200:400], y[200:400]), weights=tmp_path / "pretrained.pt",
                         epochs=1, cv=2, classifiers=["logistic"], c_grids=[1.0],
                         n_resamples=50, device="cpu")  # fmt: skip
    manifest = json.loads(save_winner(comparison, tmp_path / "model").read_text())
    assert manifest["network_kind"] == "network" and manifest["classifier"] == "logistic"
    winner = load_winner(tmp_path / "model", device="cpu")
    test = X[200:400][comparison.split.test]
    np.testing.assert_array_equal(winner.predict(test),
                                  comparison.prediction("lenet5", "penultimate", "logistic"))


def test_featclf_compare_saves_the_winner_that_featclf_predict_applies(tmp_path, capsys):
    # End to end in the shell's terms: compare on a folder saves <out>/model by default;
    # predict on a CSV of the test images reproduces the report's predictions of the winner.
    X, y = load_mnist5k(return_X_y=True)
    data = tmp_path / "digits"
    for digit in (0, 1, 7):
        (data / str(digit)).mkdir(parents=True)
        for i, row in enumerate(np.flatnonzero(y == digit)[:30]):
            Image.fromarray(X[row]).save(data / str(digit) / f"{i:02d}.png")
    out = tmp_path / "report"
    assert main(["compare", "--data", str(data), "--model", "lenet5", "--epochs", "1",
                 "--cv", "2", "--classifier", "linear_svm", "--classifier", "logistic",
                 "--c-grids", "linear_svm=0.1,1", "--c-grids", "logistic=1",
                 "--device", "cpu", "--out", str(out)]) == 0  # fmt: skip
    assert f"model: {out / 'model'}/" in capsys.readouterr().out
    manifest = json.loads((out / "model" / "winner.json").read_text())
    assert manifest["classifier"] == "linear_svm"
    report = pd.read_csv(out / "predictions.csv")
    svm = report[report["classifier"] == "linear_svm"]
    pd.DataFrame({"path": svm["image"]}).to_csv(tmp_path / "test.csv", index=False)
    assert main(["predict", "--model", str(out / "model"), "--images", str(tmp_path / "test.csv"),
                 "--out", str(tmp_path / "predictions.csv"), "--device", "cpu"]) == 0
    predicted = pd.read_csv(tmp_path / "predictions.csv")
    assert predicted["path"].tolist() == svm["image"].tolist()
    np.testing.assert_array_equal(predicted["predicted"].to_numpy(), svm["predicted"].to_numpy())
    np.testing.assert_allclose(predicted["score"].to_numpy(), svm["score"].to_numpy(), rtol=1e-5)
    # Not trivially equal: the SVM's accuracy in the report is that of these predictions.
    accuracy = (predicted["predicted"].to_numpy() == svm["true_label"].to_numpy()).mean()
    results = pd.read_csv(out / "results.csv").query("classifier == 'linear_svm' and selected")
    assert accuracy == pytest.approx(results["accuracy"].item())


def test_softmax_winner_is_the_network_alone(mnist_run, tmp_path):
    comparison, X, _ = mnist_run
    manifest = json.loads(save_winner(comparison, tmp_path, classifier="softmax").read_text())
    assert manifest["classifier_file"] is None
    assert not (tmp_path / "classifier.joblib").exists()
    winner = load_winner(tmp_path, device="cpu")
    test = X[comparison.split.test]
    key = ResultKey("lenet5", "penultimate", "softmax")
    np.testing.assert_array_equal(winner.predict(test), comparison.predictions[key])
    np.testing.assert_allclose(winner.predict_proba(test).max(axis=1), comparison.scores[key],
                               rtol=1e-5)
