"""SoftmaxClassifier: the CNN trained end to end, its checkpoints, and ``featclf train``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from imagefile_helpers import write_image
from sklearn.exceptions import NotFittedError
from sklearn.model_selection import train_test_split
from torch import nn

from featclf.cli import main as featclf_main
from featclf.data import ImagePreprocess, image_files, load_digits_images, load_mnist5k
from featclf.data.transforms import IMAGENET_MEAN, IMAGENET_STD, MNIST_MEAN
from featclf.model_selection import split_indices, split_train_test
from featclf.models import get_model, read_checkpoint, save_checkpoint
from featclf.models.weights import WeightsError
from featclf.train import (
    HISTORY_COLUMNS,
    SoftmaxClassifier,
    lr_factor,
)


class TinyNet(nn.Module):
    """A small CNN for any image size: conv → pooled to 4x4 → two Linear layers."""

    def __init__(self, in_channels: int = 1, num_classes: int = 10) -> None:
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(),
                                      nn.AdaptiveAvgPool2d(4), nn.Flatten())
        self.hidden = nn.Sequential(nn.Linear(128, 32), nn.ReLU())
        self.fc = nn.Linear(32, num_classes)

    def forward(self, x):
        return self.fc(self.hidden(self.features(x)))


@pytest.fixture(scope="module")
def digits():
    """600 of scikit-learn's 8x8 digits (uint8) and their labels."""
    X, y = load_digits_images(return_X_y=True)
    return X[:600], y[:600]


def cats_and_dogs(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """16x16 RGB images: a "cat" has a bright blob top-left, a "dog" bottom-right."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 60, size=(n, 16, 16, 3), dtype=np.uint8)
    y = np.where(np.arange(n) % 2 == 0, "cat", "dog")
    for i, label in enumerate(y):
        r, c = (rng.integers(1, 5), rng.integers(1, 5)) if label == "cat" else \
            (rng.integers(9, 13), rng.integers(9, 13))
        X[i, r:r + 4, c:c + 4] = 230
    return X, y


@pytest.fixture(scope="module")
def lenet_on_digits(digits):
    X, y = digits
    return SoftmaxClassifier("lenet5", epochs=2, random_state=0).fit(X[:400], y[:400])


# ------------------------------------------------------------------ the seed recipes on MNIST-5k

@pytest.fixture(scope="module")
def mnist5k_split():
    X, y = load_mnist5k(return_X_y=True)
    return split_train_test(X, y, test_size=0.2, random_state=0)


@pytest.mark.slow
def test_lenet5_reaches_95_percent_on_mnist5k(mnist5k_split):
    X_train, X_test, y_train, y_test = mnist5k_split
    clf = SoftmaxClassifier("lenet5", epochs=15, random_state=0).fit(X_train, y_train)
    assert clf.score(X_test, y_test) >= 0.95
    assert len(clf.history_) == 15


@pytest.mark.slow
def test_seed_cnn_with_the_seed_recipe_reaches_90_percent_on_mnist5k(mnist5k_split):
    X_train, X_test, y_train, y_test = mnist5k_split
    # The Keras recipe of seed 000, spelled out (these are also the defaults).
    clf = SoftmaxClassifier("seed_cnn", optimizer="sgd", lr=0.05, lr_decay=1e-6, momentum=0.9,
                            nesterov=True, batch_size=100, epochs=10, validation_fraction=0.2,
                            random_state=0)
    assert clf.get_params() == SoftmaxClassifier("seed_cnn", random_state=0).get_params()
    clf.fit(X_train, y_train)
    assert clf.score(X_test, y_test) >= 0.90
    assert clf.history_["val_accuracy"].notna().all()


def test_split_is_sklearns_stratified_split(mnist5k_split):
    X, y = load_mnist5k(return_X_y=True)
    expected = train_test_split(X, y, test_size=0.2, stratify=y, random_state=0)
    for got, want in zip(mnist5k_split, expected):
        np.testing.assert_array_equal(got, want)
    train, test = split_indices(y)
    np.testing.assert_array_equal(X[test], expected[1])
    assert np.bincount(y[train]).tolist() == [400] * 10


# ------------------------------------------------------------------ labels, probabilities, history

def test_string_labels_are_learned_and_predicted():
    X, y = cats_and_dogs(160, seed=0)
    X_test, y_test = cats_and_dogs(60, seed=1)
    clf = SoftmaxClassifier("lenet5", epochs=8, lr=0.05, batch_size=16, random_state=0)
    clf.fit(X, y)
    assert clf.classes_.tolist() == ["cat", "dog"]
    assert set(clf.predict(X_test)) <= {"cat", "dog"}
    assert clf.score(X_test, y_test) >= 0.9


def test_predict_proba_rows_sum_to_one(lenet_on_digits, digits):
    X, y = digits
    proba = lenet_on_digits.predict_proba(X[400:])
    assert proba.shape == (200, 10) and proba.dtype == np.float64
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-12)
    np.testing.assert_array_equal(lenet_on_digits.classes_[proba.argmax(1)],
                                  lenet_on_digits.predict(X[400:]))


def test_fitted_attributes(lenet_on_digits):
    clf = lenet_on_digits
    assert list(clf.history_.columns) == list(HISTORY_COLUMNS)
    assert clf.history_["epoch"].tolist() == [1, 2]
    assert clf.model_name_ == "lenet5" and clf.head_ == "output"
    assert clf.preprocess_ == ImagePreprocess(28, 1, (0.1307,), (0.3081,))
    assert not clf.module_.training
    assert all(p.device.type == "cpu" for p in clf.module_.parameters())
    assert not hasattr(clf, "n_features_in_")  # (n, 8, 8) input has no feature count


def test_predict_before_fit_raises():
    with pytest.raises(NotFittedError):
        SoftmaxClassifier().predict(np.zeros((2, 28, 28), dtype=np.uint8))


def test_same_random_state_gives_identical_predictions_and_history(digits):
    X, y = digits
    runs = [SoftmaxClassifier("lenet5", epochs=2, random_state=3).fit(X[:300], y[:300])
            for _ in range(2)]
    np.testing.assert_array_equal(runs[0].predict_proba(X[300:]), runs[1].predict_proba(X[300:]))
    pd.testing.assert_frame_equal(runs[0].history_.drop(columns="seconds"),
                                  runs[1].history_.drop(columns="seconds"))
    other = SoftmaxClassifier("lenet5", epochs=2, random_state=4).fit(X[:300], y[:300])
    assert not np.array_equal(other.predict_proba(X[300:]), runs[0].predict_proba(X[300:]))


def test_fit_leaves_the_global_torch_random_state_alone(digits):
    X, y = digits
    clf = SoftmaxClassifier(TinyNet(), augment="seed", epochs=1, random_state=0)
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    clf.fit(X[:100], y[:100])
    assert torch.equal(torch.rand(3), expected)


# ------------------------------------------------------------------ optimisation options

def test_lr_decay_is_keras_time_based_decay_per_batch(digits):
    X, y = digits
    clf = SoftmaxClassifier(TinyNet(), epochs=3, batch_size=50, lr=0.1, lr_decay=0.01,
                            validation_fraction=0, random_state=0).fit(X[:200], y[:200])
    # 4 batches per epoch; the last batch of epoch e is optimizer step 4e - 1 (counted from 0)
    expected = [0.1 / (1 + 0.01 * (4 * e - 1)) for e in (1, 2, 3)]
    np.testing.assert_allclose(clf.history_["lr"], expected, rtol=1e-12)
    assert clf.history_["val_loss"].isna().all()


def test_cosine_and_step_schedules():
    assert lr_factor(100, decay=0.0, schedule="cosine", total_steps=100) == pytest.approx(0.0)
    assert lr_factor(50, decay=0.0, schedule="cosine", total_steps=100) == pytest.approx(0.5)
    assert lr_factor(49, decay=0.0, schedule="step", total_steps=100) == 1.0
    assert lr_factor(50, decay=0.0, schedule="step", total_steps=100) == pytest.approx(0.1)
    assert lr_factor(10, decay=0.1, schedule=None, total_steps=100) == pytest.approx(0.5)


def test_adam_with_cosine_schedule_trains(digits):
    X, y = digits
    clf = SoftmaxClassifier(TinyNet(), optimizer="adam", lr=0.01, lr_schedule="cosine",
                            epochs=3, random_state=0).fit(X[:400], y[:400])
    assert clf.history_["lr"].iloc[-1] < 0.01 * 0.1  # the cosine approaches zero
    assert clf.history_["train_loss"].iloc[-1] < clf.history_["train_loss"].iloc[0]


def test_early_stopping_restores_the_best_epoch(digits):
    X, y = digits
    params = dict(model="lenet5", lr=0.5, random_state=0)  # lr 0.5 diverges: val loss rises
    stopped = SoftmaxClassifier(epochs=10, early_stopping=2, **params).fit(X[:300], y[:300])
    assert stopped.n_epochs_ < 10
    best = int(stopped.history_["val_loss"].idxmin()) + 1
    assert stopped.n_epochs_ == best + 2
    # Training is deterministic, so a run of exactly `best` epochs is the restored network.
    reference = SoftmaxClassifier(epochs=best, **params).fit(X[:300], y[:300])
    np.testing.assert_array_equal(stopped.predict_proba(X[300:]),
                                  reference.predict_proba(X[300:]))


@pytest.mark.parametrize("params, match", [
    ({"optimizer": "rmsprop"}, r"The 'optimizer' parameter of SoftmaxClassifier must be a "
                               r"str among \{.*\}. Got 'rmsprop' instead."),
    ({"epochs": 0}, r"The 'epochs' parameter of SoftmaxClassifier must be an int in the range "
                    r"\[1, inf\). Got 0 instead."),
    ({"epochs": True}, r"The 'epochs' parameter of SoftmaxClassifier .* Got True instead."),
    ({"lr": float("nan")}, r"The 'lr' parameter of SoftmaxClassifier .* Got nan instead."),
    ({"early_stopping": True}, r"The 'early_stopping' parameter of SoftmaxClassifier must be "
                               r"None, .*Got True instead."),
    ({"early_stopping": 3, "validation_fraction": 0}, "set validation_fraction > 0"),
    ({"validation_fraction": 1.0}, r"The 'validation_fraction' parameter of SoftmaxClassifier "
                                   r"must be a float in the range \[0.0, 1.0\). Got 1.0"),
    ({"augment": "heavy"}, r"The 'augment' parameter of SoftmaxClassifier .*Got 'heavy'"),
    ({"model": "resnt18"}, "Did you mean 'resnet18'"),
    ({"model": 3}, "model=3 is not a network"),
])
def test_bad_parameters_are_named_in_the_error(params, match, digits):
    X, y = digits
    with pytest.raises(ValueError, match=match):
        SoftmaxClassifier(**params).fit(X[:20], y[:20])


# ------------------------------------------------------------------ inputs and augmentation

def test_custom_module_is_copied_and_its_head_resized(digits):
    X, y = digits
    net = TinyNet(num_classes=7)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    clf = SoftmaxClassifier(net, epochs=1, random_state=0).fit(X[:200], y[:200])
    assert clf.module_.fc.out_features == 10 and net.fc.out_features == 7
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert clf.model_name_ is None and clf.head_ == "fc"
    # "auto" preprocessing of a custom module: pixels to [0, 1] at the training size
    assert clf.preprocess_ == ImagePreprocess((8, 8), 1, (0.0,), (1.0,))


def test_flattened_square_images_set_n_features_in(digits):
    X, y = digits
    flat = X.reshape(len(X), 64)
    clf = SoftmaxClassifier(TinyNet(), epochs=1, random_state=0).fit(flat[:200], y[:200])
    assert clf.n_features_in_ == 64
    np.testing.assert_array_equal(clf.predict(flat[200:]), clf.predict(X[200:]))
    with pytest.raises(ValueError, match="X has 16 features, but SoftmaxClassifier is "
                       "expecting 64"):
        clf.predict(flat[:5, :16])


def test_model_ready_float_input_is_not_preprocessed_again(digits):
    X, y = digits
    pre = ImagePreprocess(28, 1, (0.1307,), (0.3081,))
    ready = pre(torch.from_numpy(X).unsqueeze(1)).numpy()  # float (n, 1, 28, 28)
    on_pixels = SoftmaxClassifier("lenet5", epochs=1, random_state=0).fit(X[:300], y[:300])
    on_ready = SoftmaxClassifier("lenet5", epochs=1, random_state=0).fit(ready[:300], y[:300])
    np.testing.assert_allclose(on_ready.predict_proba(ready[300:]),
                               on_pixels.predict_proba(X[300:]), atol=1e-6)


def test_image_files_train_like_the_same_pixels_in_memory(tmp_path, digits, monkeypatch):
    X, y = digits
    X, y = X[:120], y[:120]
    for i, (img, label) in enumerate(zip(X, y)):
        write_image(tmp_path / "imgs" / str(label) / f"{i:04d}.png", img)
    files = image_files(tmp_path / "imgs")
    order = np.argsort([int(p.rsplit("/", 1)[1][:4]) for p in files.paths])
    files = files[order]
    np.testing.assert_array_equal(files.labels, y)
    params = dict(model=TinyNet(), epochs=2, batch_size=32, random_state=0)
    from_files = SoftmaxClassifier(**params).fit(files, files.labels)
    from_array = SoftmaxClassifier(**params).fit(X, y)
    np.testing.assert_array_equal(from_files.predict_proba(files), from_array.predict_proba(X))
    # Too big for memory: decoded again every epoch, in the same shuffled order.
    monkeypatch.setattr("featclf.train.loop.IN_MEMORY_LIMIT_BYTES", 0)
    streamed = SoftmaxClassifier(**params).fit(files, files.labels)
    np.testing.assert_allclose(streamed.predict_proba(files), from_array.predict_proba(X),
                               atol=1e-6)
    pd.testing.assert_frame_equal(streamed.history_.drop(columns="seconds"),
                                  from_array.history_.drop(columns="seconds"))


def test_seed_augmentation_fits_featurewise_normalisation(digits):
    X, y = digits
    clf = SoftmaxClassifier("lenet5", augment="seed", epochs=1, validation_fraction=0,
                            random_state=0).fit(X[:200], y[:200])
    pre = clf.preprocess_
    resized = pre.to_float(torch.from_numpy(X[:200]).unsqueeze(1))  # 8x8 → 28x28 in [0, 1]
    assert pre.mean[0] == pytest.approx(float(resized.mean()), rel=1e-5)
    assert pre.std[0] == pytest.approx(float(resized.std(unbiased=False)), rel=1e-4)
    assert pre.mean != MNIST_MEAN
    # the fitted statistics travel with the classifier: prediction standardises the same way
    np.testing.assert_allclose(clf.predict_proba(X[200:210]), clf.predict_proba(
        pre(torch.from_numpy(X[200:210]).unsqueeze(1)).numpy()), atol=1e-6)


def test_callable_augmentation_sees_only_training_batches(digits):
    X, y = digits
    seen: list[tuple] = []

    def flip(batch: torch.Tensor) -> torch.Tensor:
        seen.append((tuple(batch.shape), batch.dtype, float(batch.min()), float(batch.max())))
        return batch.flip(-1)

    SoftmaxClassifier(TinyNet(), augment=flip, epochs=2, batch_size=40, validation_fraction=0.2,
                      random_state=0).fit(X[:200], y[:200])
    assert len(seen) == 2 * 4  # 160 training images, 4 batches, 2 epochs; none for validation
    assert all(shape[1:] == (1, 8, 8) and dtype == torch.float32 and 0 <= lo <= hi <= 1
               for shape, dtype, lo, hi in seen)  # float images in [0, 1], before normalising


# ------------------------------------------------------------------ fine-tuning a backbone

@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet18-random.pt"
    torch.manual_seed(0)
    torch.save(get_model("resnet18").state_dict(), path)
    return path


@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_backbone_trains_only_the_head(freeze, resnet18_weights):
    X, y = cats_and_dogs(8, seed=0)
    params = dict(model="resnet18", weights=resnet18_weights, epochs=1, batch_size=8,
                  validation_fraction=0, freeze_backbone=freeze, random_state=0,
                  preprocess=ImagePreprocess(32, 3, IMAGENET_MEAN, IMAGENET_STD))
    trained = SoftmaxClassifier(lr=0.01, **params).fit(X, y).module_.state_dict()
    original = torch.load(resnet18_weights, weights_only=True)
    assert trained["fc.weight"].shape == (2, 512)
    backbone = [k for k in trained if not k.startswith("fc.")]
    changed = [k for k in backbone if not torch.equal(trained[k], original[k])]
    if freeze:
        assert changed == []  # weights and batch-norm statistics alike
        # ... while the new head moved away from its initialisation (what lr=0 leaves)
        untrained = SoftmaxClassifier(lr=0.0, **params).fit(X, y).module_.state_dict()
        assert not torch.equal(trained["fc.weight"], untrained["fc.weight"])
    else:
        assert "conv1.weight" in changed and "layer4.1.bn2.running_mean" in changed


# ------------------------------------------------------------------ checkpoints

@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_checkpoint_round_trip_predicts_identically(suffix, tmp_path):
    X, y = cats_and_dogs(80, seed=0)
    clf = SoftmaxClassifier("lenet5", epochs=2, batch_size=16, random_state=0).fit(X, y)
    path = clf.save(tmp_path / f"catdog{suffix}")
    again = SoftmaxClassifier.load(path)
    np.testing.assert_array_equal(again.predict(X), clf.predict(X))
    np.testing.assert_array_equal(again.predict_proba(X), clf.predict_proba(X))
    assert again.classes_.tolist() == ["cat", "dog"]
    assert again.get_params() == clf.get_params()
    pd.testing.assert_frame_equal(again.history_, clf.history_, check_dtype=False)
    meta = read_checkpoint(path).metadata
    assert {"model", "num_classes", "classes", "preprocess", "head", "featclf_version",
            "torch_version", "params", "history"} <= set(meta)
    assert (meta["model"], meta["num_classes"], meta["head"]) == ("lenet5", 2, "output")
    assert meta["preprocess"] == clf.preprocess_.to_dict()
    json.dumps(meta, allow_nan=False)  # plain JSON


def test_integer_classes_stay_integers_and_get_model_reads_the_checkpoint(tmp_path,
                                                                           lenet_on_digits,
                                                                           digits):
    X, _ = digits
    path = lenet_on_digits.save(tmp_path / "lenet5-digits.pt")
    payload = torch.load(path, weights_only=True)
    assert json.loads(payload["metadata"])["classes"] == list(range(10))
    net = get_model("lenet5", weights=path)
    x = lenet_on_digits.preprocess_(torch.from_numpy(X[:20]).unsqueeze(1))
    with torch.inference_mode():
        assert torch.equal(net(x), lenet_on_digits.module_(x))
    assert SoftmaxClassifier.load(path).predict(X[:20]).dtype.kind == "i"


def test_deep_feature_extractor_accepts_the_checkpoint(tmp_path, lenet_on_digits, digits):
    extract = pytest.importorskip("featclf.extract",
                                  reason="featclf.extract (DeepFeatureExtractor) not written yet")
    X, _ = digits
    path = lenet_on_digits.save(tmp_path / "lenet5.pt")
    features = extract.DeepFeatureExtractor(model=str(path)).fit().transform(X[:30])
    assert features.shape == (30, 84)


def test_custom_module_checkpoint_cannot_be_loaded_as_a_classifier(tmp_path, digits):
    X, y = digits
    clf = SoftmaxClassifier(TinyNet(), epochs=1, random_state=0).fit(X[:100], y[:100])
    path = clf.save(tmp_path / "tiny.pt")
    assert read_checkpoint(path).metadata["model"] is None
    with pytest.raises(ValueError, match="holds a custom nn.Module, not a zoo model"):
        SoftmaxClassifier.load(path)


def test_bare_weights_are_not_a_classifier_checkpoint(tmp_path):
    path = tmp_path / "bare.pt"
    save_checkpoint(path, get_model("lenet5").state_dict(), {"model": "lenet5"})
    with pytest.raises(WeightsError, match="not a SoftmaxClassifier checkpoint"):
        SoftmaxClassifier.load(path)


def test_training_continues_from_a_saved_checkpoint(tmp_path, lenet_on_digits, digits):
    X, y = digits
    path = lenet_on_digits.save(tmp_path / "start.pt")
    cont = SoftmaxClassifier("lenet5", weights=path, lr=0.0, epochs=1, random_state=0)
    cont.fit(X[:100], y[:100])  # lr 0: the network stays the saved one
    np.testing.assert_array_equal(cont.predict_proba(X[400:]),
                                  lenet_on_digits.predict_proba(X[400:]))


# ------------------------------------------------------------------ the command

def test_featclf_train_command_writes_a_checkpoint(tmp_path, capsys):
    out = tmp_path / "lenet5-mnist5k.pt"
    code = featclf_main(["train", "--model", "lenet5", "--data", "mnist5k", "--epochs", "1",
                         "--out", str(out), "--random-state", "0"])
    assert code == 0
    printed = capsys.readouterr()
    assert "test accuracy" in printed.out and str(out) in printed.out
    assert "epoch 1/1: loss=" in printed.err  # one line per epoch
    clf = SoftmaxClassifier.load(out)
    _, X_test, _, y_test = split_train_test(*load_mnist5k(return_X_y=True))
    assert clf.score(X_test, y_test) > 0.5
    assert clf.get_params()["random_state"] == 0
    assert clf.get_params()["progress"] is False  # a display choice, not stored


def test_featclf_train_on_an_image_folder(tmp_path, capsys):
    X, y = cats_and_dogs(40, seed=0)
    for i, (img, label) in enumerate(zip(X, y)):
        write_image(tmp_path / "pets" / f"{label}.{i}.png", img)
    out = tmp_path / "pets.safetensors"
    assert featclf_main(["train", "--model", "lenet5", "--data", str(tmp_path / "pets"),
                         "--epochs", "1", "--batch-size", "8", "--out", str(out),
                         "--no-progress"]) == 0
    assert SoftmaxClassifier.load(out).classes_.tolist() == ["cat", "dog"]
    assert featclf_main(["train", "--data", str(tmp_path / "nowhere"), "--out",
                         str(out)]) == 2
    assert "not a built-in data set" in capsys.readouterr().err
