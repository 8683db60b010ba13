"""One torch module from a fitted extractor and a linear classifier: it must agree with
scikit-learn on every test image, in eager mode, from a TorchScript file and from ONNX."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler
from sklearn.svm import LinearSVC

from featclf.data import load_mnist5k
from featclf.extract import DeepFeatureExtractor
from featclf.pipelines import make_classifier, make_logistic, make_svm
from featclf.serving import load_torchscript, save_onnx, save_torchscript, to_torch
from featclf.train import SoftmaxClassifier

LINEAR = ["logistic", "linear_svm", "crammer_singer_svm"]


@pytest.fixture(scope="module")
def digits():
    """600 training and 200 test digits of MNIST-5k (sorted by class: sampled per class)."""
    X, y = load_mnist5k(return_X_y=True)
    rng = np.random.default_rng(0)
    train, test = [], []
    for c in range(10):
        rows = rng.permutation(np.flatnonzero(y == c))
        train.append(rows[:60])
        test.append(rows[60:80])
    train, test = np.concatenate(train), rng.permutation(np.concatenate(test))
    return X[train], y[train], X[test], y[test]


@pytest.fixture(scope="module")
def extractor(digits):
    """A lenet5 trained for two epochs, headless, on the CPU (scores compared to 1e-4)."""
    X, y, _, _ = digits
    net = SoftmaxClassifier("lenet5", epochs=2, random_state=0, device="cpu").fit(X, y)
    return DeepFeatureExtractor(net, device="cpu").fit()


@pytest.fixture(scope="module")
def features(digits, extractor):
    X, _, X_test, _ = digits
    return extractor.transform(X), extractor.transform(X_test)


def pixels(X: np.ndarray) -> torch.Tensor:
    """(N, 28, 28) uint8 digits as the module's (N, 1, 28, 28) uint8 input."""
    return torch.from_numpy(X).unsqueeze(1)


def scores_of(model, images) -> np.ndarray:
    with torch.inference_mode():
        return model(images).numpy()


def sklearn_scores(pipe, F) -> np.ndarray:
    """decision_function as the module's columns: a binary score s becomes [-s, s]."""
    d = pipe.decision_function(F)
    return np.stack([-d, d], axis=1) if d.ndim == 1 else d


@pytest.mark.parametrize("solver", ["sklearn", "torch"])  # torch: featclf.linear's estimators
@pytest.mark.parametrize("name", LINEAR)
def test_folded_module_predicts_like_the_pipeline_on_every_test_image(name, solver, digits,
                                                                      extractor, features):
    _, y, X_test, _ = digits
    F, F_test = features
    pipe = make_classifier(name, C=0.1, solver=solver).fit(F, y)
    assert type(pipe.named_steps["clf"]).__name__.startswith("Torch") == (solver == "torch")
    assert "scale" in pipe.named_steps  # the scaler is what gets folded
    model = to_torch(extractor, pipe)
    scores = scores_of(model, pixels(X_test))
    expected = pipe.predict(F_test)
    np.testing.assert_array_equal(model.classes_[scores.argmax(1)], expected)
    np.testing.assert_array_equal(model.predict(pixels(X_test)), expected)
    np.testing.assert_allclose(scores, pipe.decision_function(F_test), atol=1e-4, rtol=0)
    # Enough signal that 100% agreement is not agreement on one constant class.
    assert len(np.unique(expected)) == 10


@pytest.mark.parametrize("name", LINEAR)
def test_binary_classifier_with_one_score_column_predicts_its_labels(name, digits, extractor,
                                                                     features):
    _, y, X_test, _ = digits
    F, F_test = features
    labels = np.where(y < 5, "low", "high")
    pipe = make_classifier(name, C=0.1).fit(F, labels)
    assert pipe.named_steps["clf"].coef_.shape[0] == 1  # scikit-learn's single column
    model = to_torch(extractor, pipe)
    scores = scores_of(model, pixels(X_test))
    expected = pipe.predict(F_test)
    assert set(expected) == {"low", "high"}
    np.testing.assert_array_equal(model.classes_[scores.argmax(1)], expected)
    np.testing.assert_allclose(scores, sklearn_scores(pipe, F_test), atol=1e-4, rtol=0)


def test_uint8_float_and_model_ready_inputs_give_the_same_scores(digits, extractor, features):
    _, y, X_test, _ = digits
    pipe = make_logistic().fit(features[0], y)
    uint8 = pixels(X_test[:50])
    expected = sklearn_scores(pipe, features[1][:50])
    with_pre = to_torch(extractor, pipe)
    np.testing.assert_allclose(scores_of(with_pre, uint8), expected, atol=1e-4, rtol=0)
    np.testing.assert_allclose(scores_of(with_pre, uint8.float() / 255), expected, atol=1e-4,
                               rtol=0)
    ready = extractor.preprocess_(uint8)
    model_ready = to_torch(extractor, pipe, preprocess=False)
    np.testing.assert_allclose(scores_of(model_ready, ready), expected, atol=1e-4, rtol=0)
    # Raw pixels given to the model-ready module are a different input: different scores.
    assert np.abs(scores_of(model_ready, uint8.float()) - expected).max() > 1e-2


def test_l2_normalizer_and_whitened_pca_steps_fold_too(digits, extractor, features):
    _, y, X_test, _ = digits
    F, F_test = features
    pipe = make_svm("linear", C=0.1, l2_normalize=True, pca=20, whiten=True).fit(F, y)
    assert list(pipe.named_steps) == ["l2", "scale", "pca", "clf"]
    model = to_torch(extractor, pipe)
    scores = scores_of(model, pixels(X_test))
    np.testing.assert_array_equal(model.classes_[scores.argmax(1)], pipe.predict(F_test))
    np.testing.assert_allclose(scores, pipe.decision_function(F_test), atol=1e-4, rtol=0)


def test_a_whole_fitted_pipeline_or_grid_search_is_accepted(digits, extractor, features):
    X, y, X_test, _ = digits
    full = make_pipeline(extractor, StandardScaler(), LinearSVC(C=0.05)).fit(X, y)
    model = to_torch(full)
    np.testing.assert_array_equal(model.predict(pixels(X_test)), full.predict(X_test))
    search = GridSearchCV(make_logistic(), {"clf__C": [0.01, 1.0]}, cv=2).fit(features[0], y)
    model = to_torch(extractor, search)
    np.testing.assert_array_equal(model.predict(pixels(X_test)), search.predict(features[1]))


def test_several_layers_side_by_side_match_the_extractors_columns(digits):
    X, y, X_test, _ = digits
    ext = DeepFeatureExtractor("lenet5", weights="random", layer=["c5", "penultimate"],
                               device="cpu").fit()
    F, F_test = ext.transform(X), ext.transform(X_test)
    assert F.shape[1] == 120 + 84
    pipe = make_logistic(C=0.1).fit(F, y)
    model = to_torch(ext, pipe)
    scores = scores_of(model, pixels(X_test))
    np.testing.assert_array_equal(model.classes_[scores.argmax(1)], pipe.predict(F_test))
    np.testing.assert_allclose(scores, pipe.decision_function(F_test), atol=1e-4, rtol=0)


def test_rbf_svm_is_refused_naming_it(digits, extractor, features):
    _, y, _, _ = digits
    rbf = make_svm("rbf").fit(features[0][:200], y[:200])
    with pytest.raises(TypeError, match=r"SVC \(kernel='rbf'.*not a linear classifier"):
        to_torch(extractor, rbf)
    calibrated = make_svm("rbf", probability=True).fit(features[0][:200], y[:200])
    with pytest.raises(TypeError, match="CalibratedClassifierCV.*not a linear classifier"):
        to_torch(extractor, calibrated)


def test_steps_that_cannot_fold_and_other_widths_are_refused(digits, extractor, features):
    _, y, _, _ = digits
    squared = make_pipeline(FunctionTransformer(np.square), LinearSVC()).fit(features[0], y)
    with pytest.raises(TypeError, match="'functiontransformer' .*cannot be folded"):
        to_torch(extractor, squared)
    narrow = make_logistic().fit(features[0][:, :10], y)
    with pytest.raises(ValueError, match="fitted on 10 features, but the extractor gives 84"):
        to_torch(extractor, narrow)


def test_torchscript_file_reloads_in_a_process_without_sklearn(tmp_path, digits, extractor,
                                                               features):
    _, y, X_test, _ = digits
    pipe = make_svm("crammer_singer", C=0.1).fit(features[0], y)
    expected = pipe.predict(features[1])
    images = pixels(X_test)
    path = save_torchscript(to_torch(extractor, pipe), tmp_path / "digits.pt",
                            example=images[:3])
    module, classes = load_torchscript(path)
    np.testing.assert_array_equal(classes, pipe.classes_)
    scores = scores_of(module, images)  # 200 images through a file traced on 3
    np.testing.assert_array_equal(classes[scores.argmax(1)], expected)
    np.testing.assert_allclose(scores, pipe.decision_function(features[1]), atol=1e-4, rtol=0)
    # The scripted preprocessing kept its dtype test: floats in [0, 1] work in the same file.
    floats = scores_of(module, images.float() / 255)
    np.testing.assert_array_equal(classes[floats.argmax(1)], expected)
    # Serving needs torch only: a new process loads the file without featclf or scikit-learn.
    np.save(tmp_path / "images.npy", X_test)
    code = (
        "import sys, numpy as np, torch\n"
        f"m = torch.jit.load({str(path)!r})\n"
        f"x = torch.from_numpy(np.load({str(tmp_path / 'images.npy')!r})).unsqueeze(1)\n"
        f"np.save({str(tmp_path / 'argmax.npy')!r}, m(x).argmax(1).numpy())\n"
        "assert 'sklearn' not in sys.modules and 'featclf' not in sys.modules\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    np.testing.assert_array_equal(classes[np.load(tmp_path / "argmax.npy")], expected)


def test_onnx_file_runs_in_onnxruntime_like_the_pipeline(tmp_path, digits, extractor, features):
    pytest.importorskip("onnxscript")
    ort = pytest.importorskip("onnxruntime")
    _, y, X_test, _ = digits
    labels = np.asarray([f"digit {d}" for d in y])
    pipe = make_logistic(C=0.1).fit(features[0], labels)
    expected = pipe.predict(features[1])
    path = save_onnx(to_torch(extractor, pipe), tmp_path / "digits.onnx",
                     example=pixels(X_test[:4]))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    scores = session.run(["scores"], {"images": X_test[:, None]})[0]  # 200 images, not 4
    meta = json.loads(session.get_modelmeta().custom_metadata_map["featclf_classes"])
    classes = np.asarray(meta["classes"])
    np.testing.assert_array_equal(classes, pipe.classes_)
    np.testing.assert_array_equal(classes[scores.argmax(1)], expected)
    np.testing.assert_allclose(scores, pipe.decision_function(features[1]), atol=1e-4, rtol=0)
