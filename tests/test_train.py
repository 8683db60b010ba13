"""SoftmaxClassifier: the CNN trained end to end, its checkpoints, and ``featclf train``."""

from __future__ import annotations

import json
import math
import os

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
from featclf.errors import cli_messages
from featclf.model_selection import split_indices, split_train_test
from featclf.models import get_model, load_network, read_checkpoint, save_checkpoint
from featclf.models.weights import WeightsError
from featclf.train import (
    FINE_TUNE_RECIPE,
    HISTORY_COLUMNS,
    SoftmaxClassifier,
    TrainingDivergedError,
    lr_factor,
    recipe_family,
    recipe_for,
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
    return SoftmaxClassifier("lenet5", epochs=2, random_state=0, device="cpu").fit(X[:400],
                                                                                    y[:400])


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
    # The Keras recipe of seed 000, spelled out (also what seed_cnn's defaults resolve to).
    seed = dict(optimizer="sgd", lr=0.05, lr_decay=1e-6, momentum=0.9, nesterov=True,
                batch_size=100)
    clf = SoftmaxClassifier("seed_cnn", epochs=10, validation_fraction=0.2, random_state=0,
                            **seed)
    clf.fit(X_train, y_train)
    assert {k: clf.recipe_[k] for k in seed} == seed
    assert {k: recipe_for("seed_cnn")[k] for k in seed} == seed
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
    params = dict(model="lenet5", epochs=2, device="cpu")
    runs = [SoftmaxClassifier(**params, random_state=3).fit(X[:300], y[:300]) for _ in range(2)]
    np.testing.assert_array_equal(runs[0].predict_proba(X[300:]), runs[1].predict_proba(X[300:]))
    pd.testing.assert_frame_equal(runs[0].history_.drop(columns="seconds"),
                                  runs[1].history_.drop(columns="seconds"))
    other = SoftmaxClassifier(**params, random_state=4).fit(X[:300], y[:300])
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
    # lr 0.5 overfits: the val loss rises (but does not explode)
    params = dict(model="lenet5", lr=0.5, random_state=0, device="cpu")
    stopped = SoftmaxClassifier(epochs=10, early_stopping=2, **params).fit(X[:300], y[:300])
    assert stopped.n_epochs_ < 10
    best = int(stopped.history_["val_loss"].idxmin()) + 1
    assert stopped.n_epochs_ == best + 2
    # Training is deterministic, so a run of exactly `best` epochs is the restored network.
    reference = SoftmaxClassifier(epochs=best, **params).fit(X[:300], y[:300])
    np.testing.assert_array_equal(stopped.predict_proba(X[300:]),
                                  reference.predict_proba(X[300:]))


# ------------------------------------------------------------------ recipes per model family

def photo_shapes(n: int, seed: int, size: int = 32) -> tuple[np.ndarray, np.ndarray]:
    """Photo-like RGB images: a square, a disc or a bar of a random bright colour at a random
    place on a dark, noisy background (three classes, in turn)."""
    rng = np.random.default_rng(seed)
    X = rng.integers(0, 50, size=(n, size, size, 3), dtype=np.uint8)
    y = np.array(["square", "disc", "bar"])[np.arange(n) % 3]
    rows, cols = np.mgrid[:size, :size]
    for i, label in enumerate(y):
        r, c = rng.integers(size // 3, 2 * size // 3, 2)
        mask = {"square": (abs(rows - r) < 6) & (abs(cols - c) < 6),
                "disc": (rows - r) ** 2 + (cols - c) ** 2 < 36,
                "bar": (abs(rows - r) < 2) & (abs(cols - c) < 10)}[label]
        X[i][mask] = rng.integers(120, 256, 3)
    return X, y


#: The seed optimiser as compare trained with it before recipes moved to featclf.train.
OLD_SEED_RECIPE = {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True,
                   "lr_decay": 1e-6, "batch_size": 100, "validation_fraction": 0.0}


def test_seed_recipes_are_the_ones_compare_trained_with():
    for model, epochs in [("lenet5", 15), ("seed_cnn", 10)]:
        recipe = recipe_for(model)
        assert {k: recipe[k] for k in OLD_SEED_RECIPE} == OLD_SEED_RECIPE
        assert recipe["epochs"] == epochs
        # what the classifier's parameters defaulted to before: no schedule, no warm-up
        assert (recipe["lr_schedule"], recipe["weight_decay"], recipe["warmup"],
                recipe["head_lr"]) == (None, 0.0, 0.0, None)
        assert set(recipe) <= set(SoftmaxClassifier().get_params())
    assert recipe_for("lenet5") is not recipe_for("lenet5")  # callers may change their copy


def test_default_parameters_train_seed_networks_exactly_as_the_old_defaults(digits):
    X, y = digits
    old = dict(optimizer="sgd", lr=0.05, lr_decay=1e-6, lr_schedule=None, weight_decay=0.0,
               batch_size=100)
    auto = SoftmaxClassifier("lenet5", epochs=2, random_state=0, device="cpu").fit(X[:300],
                                                                                    y[:300])
    given = SoftmaxClassifier("lenet5", epochs=2, random_state=0, device="cpu", **old).fit(
        X[:300], y[:300])
    np.testing.assert_array_equal(auto.predict_proba(X[300:]), given.predict_proba(X[300:]))
    assert auto.recipe_ == given.recipe_ == {**old, "head_lr": None, "momentum": 0.9,
                                             "nesterov": True, "warmup": 0.0}
    # A custom module trains from scratch too: the seed recipe
    tiny = SoftmaxClassifier(TinyNet(), epochs=1, random_state=0).fit(X[:100], y[:100])
    assert tiny.recipe_ == auto.recipe_


def test_torchvision_architectures_get_the_fine_tuning_recipe():
    for model in ("resnet18", "mobilenet_v3_small", load_network("resnet18", "random")):
        assert recipe_family(model) == "fine-tune"
        recipe = recipe_for(model)
        assert recipe == FINE_TUNE_RECIPE
        assert (recipe["optimizer"], recipe["lr"], recipe["head_lr"], recipe["lr_schedule"],
                recipe["warmup"]) == ("adamw", 1e-4, 1e-3, "cosine", 0.1)
    assert recipe_family(load_network("lenet5")) == recipe_family(TinyNet()) == "seed"
    with pytest.raises(ValueError, match="Did you mean 'resnet18'"):
        recipe_for("resnt18")


@pytest.fixture(scope="module")
def resnet18_weights(tmp_path_factory):
    path = tmp_path_factory.mktemp("weights") / "resnet18-random.pt"
    torch.manual_seed(0)
    torch.save(get_model("resnet18", weights="random").state_dict(), path)
    return path


def test_fine_tuning_recipe_converges_on_small_photos_where_the_seed_recipe_diverged(
        resnet18_weights):
    X, y = photo_shapes(36, seed=0)
    params = dict(model="resnet18", weights=resnet18_weights, epochs=6, batch_size=12,
                  validation_fraction=0.25, random_state=0, device="cpu",
                  preprocess=ImagePreprocess(32, 3, IMAGENET_MEAN, IMAGENET_STD))
    clf = SoftmaxClassifier(**params).fit(X, y)
    assert clf.recipe_ == {k: v for k, v in FINE_TUNE_RECIPE.items()
                           if k not in ("epochs", "validation_fraction", "batch_size")} | {
        "batch_size": 12}
    loss = clf.history_["train_loss"].to_numpy()
    assert np.isfinite(clf.history_[["train_loss", "val_loss"]].to_numpy()).all()
    assert loss[-1] < 0.5 < loss[0]  # from above chance (ln 3 = 1.1) to well below it
    assert clf.history_["val_loss"].max() < 2 * math.log(3)  # no explosion on held-out photos
    # cosine: the backbone's rate falls from 1e-4 after warm-up (the last step of each epoch)
    lr = clf.history_["lr"].to_numpy()
    assert lr[0] == 1e-4 and lr[-1] < lr[1] < lr[0]  # warm-up (2 of 18 steps) ends in epoch 1
    # The seed (MNIST) recipe on the same photos: the training loss falls, but the validation
    # loss explodes (1e4: batch-norm statistics wrecked); stopped, saying what to change.
    with pytest.raises(TrainingDivergedError, match=r"diverged at epoch 1 \(validation loss "
                       r"[0-9.e+]+, .*lower lr=0.05 \(e.g. lr=0.005\)"):
        old_defaults = {"head_lr": None, "lr_schedule": None, "weight_decay": 0.0, "warmup": 0.0}
        SoftmaxClassifier(**params | old_defaults | {k: v for k, v in OLD_SEED_RECIPE.items()
                                                     if k not in params}).fit(X, y)


def test_warmup_rises_linearly_then_the_schedule_runs(digits):
    X, y = digits
    clf = SoftmaxClassifier(TinyNet(), epochs=4, batch_size=50, lr=0.1, lr_decay=0.0,
                            warmup=0.5, lr_schedule="step", validation_fraction=0,
                            random_state=0).fit(X[:200], y[:200])
    # 16 steps, 8 of warm-up: the last step of epoch e is step 4e - 1; "step" runs on the 8
    # steps after warm-up (x0.1 after 4 of them, again after 6)
    np.testing.assert_allclose(clf.history_["lr"], [0.1 * 4 / 9, 0.1 * 8 / 9, 0.1, 0.001],
                               rtol=1e-12)


def test_head_lr_is_the_heads_own_rate(digits):
    X, y = digits
    net = TinyNet()
    clf = SoftmaxClassifier(net, epochs=1, lr=0.1, head_lr=0.0, validation_fraction=0,
                            random_state=0).fit(X[:200], y[:200])
    assert torch.equal(clf.module_.fc.weight, net.fc.weight)  # the head did not move...
    assert not torch.equal(clf.module_.hidden[0].weight, net.hidden[0].weight)  # the rest did
    frozen = SoftmaxClassifier(net, epochs=1, lr=0.0, head_lr=0.1, freeze_backbone=True,
                               validation_fraction=0, random_state=0).fit(X[:200], y[:200])
    assert not torch.equal(frozen.module_.fc.weight, net.fc.weight)  # a probe at head_lr
    assert torch.equal(frozen.module_.hidden[0].weight, net.hidden[0].weight)


# ------------------------------------------------------------------ divergence and class counts

def test_an_exploding_loss_stops_training_naming_the_learning_rate(digits):
    X, y = digits
    clf = SoftmaxClassifier("lenet5", lr=50.0, epochs=5, random_state=0, device="cpu")
    with pytest.raises(TrainingDivergedError, match=r"training diverged at epoch 1 \(loss "
                       r"[0-9.]+, [0-9.]+ times the starting .*lower lr=50.0 \(e.g. lr=5.0\)"):
        clf.fit(X[:300], y[:300])
    assert not hasattr(clf, "module_")  # nothing half-trained left behind as fitted
    # lr=2 rises more slowly: stopped at its third epoch, not after all ten
    with pytest.raises(ValueError, match="diverged at epoch 3"):
        SoftmaxClassifier("lenet5", lr=2.0, epochs=10, random_state=0, device="cpu").fit(
            X[:300], y[:300])
    # a loss beyond float range stops at once; under the CLI the hint is the flag
    with cli_messages(), pytest.raises(FloatingPointError, match=r"epoch 1 \(loss .*"
                                       r"lower --lr 1e\+36 \(e.g. --lr 1e\+35\)"):
        SoftmaxClassifier("lenet5", lr=1e36, epochs=5, random_state=0, device="cpu").fit(
            X[:300], y[:300])


def test_one_class_is_refused_before_any_training(digits):
    X, y = digits
    batches: list[int] = []

    def record(batch):
        batches.append(len(batch))
        return batch

    only_ones = X[y == 1]
    clf = SoftmaxClassifier(TinyNet(), augment=record, epochs=1, random_state=0)
    with pytest.raises(ValueError, match=r"training needs at least two classes; every image "
                       rf"\({len(only_ones)}\) is of class 1"):
        clf.fit(only_ones, np.ones(len(only_ones), dtype=int))
    assert batches == [] and not hasattr(clf, "recipe_")  # no network built, no batch seen
    clf.set_params(validation_fraction=0).fit(X[:100], y[:100])
    assert sum(batches) == 100  # the same recorder sees the batches of a run that trains


def test_too_few_images_per_class_for_the_validation_split_is_refused(digits):
    X, y = digits
    two_each = np.concatenate([np.flatnonzero(y == c)[:2] for c in (3, 5)])
    five_each = np.concatenate([np.flatnonzero(y == c)[:5] for c in (3, 5)])
    clf = SoftmaxClassifier("lenet5", epochs=1, random_state=0)
    with pytest.raises(ValueError, match=r"needs at least 5 images of each class; class 3 has "
                       r"2, class 5 has 2.*validation_fraction=0.2 holds out one image in 5.*"
                       r"or validation_fraction=0.0 to train on all"):
        clf.fit(X[two_each], y[two_each])
    assert not hasattr(clf, "recipe_")  # refused before the recipe, the network or a batch
    # five of each: one per class to validate on; without validation two of each train
    assert sorted(clf.fit(X[five_each], y[five_each]).classes_) == [3, 5]
    assert len(clf.history_) == 1 and clf.history_["val_accuracy"].notna().all()
    clf.set_params(validation_fraction=0).fit(X[two_each], y[two_each])
    assert clf.history_["val_loss"].isna().all()
    with pytest.raises(ValueError, match="needs at least 2 images of each class"):
        clf.set_params(validation_fraction=0.5).fit(X[two_each[1:]], y[two_each[1:]])


@pytest.mark.parametrize("params, match", [
    ({"optimizer": "rmsprop"}, r"The 'optimizer' parameter of SoftmaxClassifier must be None "
                               r"or a str among \{.*\}. Got 'rmsprop' instead."),
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
        SoftmaxClassifier(**params).fit(X[:100], y[:100])


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


def test_image_shape_reads_rows_as_non_square_rgb_images(tmp_path):
    X, y = cats_and_dogs(60, seed=0)  # (60, 16, 16, 3)
    rows = X[:, :, :8].reshape(60, -1)  # the left halves, 16x8 RGB, flattened channels last
    params = dict(model=TinyNet(in_channels=3), epochs=2, batch_size=20, random_state=0,
                  device="cpu")
    flat = SoftmaxClassifier(image_shape=(16, -1, 3), **params).fit(rows, y)
    images = SoftmaxClassifier(**params).fit(X[:, :, :8], y)
    assert flat.n_features_in_ == 16 * 8 * 3
    assert flat.preprocess_ == images.preprocess_ == ImagePreprocess((16, 8), 3, (0.0,) * 3,
                                                                     (1.0,) * 3)
    np.testing.assert_array_equal(flat.predict_proba(rows), images.predict_proba(X[:, :, :8]))
    with pytest.raises(ValueError, match=r"X has 48 features, but SoftmaxClassifier is "
                       r"expecting 384 features as input \(flattened images of shape "
                       r"\(16, -1, 3\)\)"):
        flat.predict(rows[:, :48])
    path = tmp_path / "rows.pt"
    custom = SoftmaxClassifier("lenet5", image_shape=(16, -1, 3), epochs=1, random_state=0,
                               device="cpu").fit(rows, y)
    again = SoftmaxClassifier.load(custom.save(path))
    assert again.image_shape == (16, -1, 3)
    np.testing.assert_array_equal(again.predict_proba(rows), custom.predict_proba(rows))


def test_model_ready_input_with_preprocess_none_is_not_preprocessed_again(digits, tmp_path):
    X, y = digits
    pre = ImagePreprocess(28, 1, (0.1307,), (0.3081,))
    ready = pre(torch.from_numpy(X).unsqueeze(1)).numpy()  # float (n, 1, 28, 28)
    params = dict(model="lenet5", epochs=1, random_state=0, device="cpu")
    on_pixels = SoftmaxClassifier(**params).fit(X[:300], y[:300])
    on_ready = SoftmaxClassifier(preprocess=None, **params).fit(ready[:300], y[:300])
    np.testing.assert_allclose(on_ready.predict_proba(ready[300:]),
                               on_pixels.predict_proba(X[300:]), atol=1e-6)
    assert on_ready.preprocess_ is None
    again = SoftmaxClassifier.load(on_ready.save(tmp_path / "ready.pt"))
    np.testing.assert_array_equal(again.predict_proba(ready[300:]),
                                  on_ready.predict_proba(ready[300:]))
    # normalised values are not pixels: "auto" refuses them rather than preprocess them twice
    with pytest.raises(ValueError, match="preprocess=None"):
        SoftmaxClassifier(**params).fit(ready[:300], y[:300])


def test_image_files_train_like_the_same_pixels_in_memory(tmp_path, digits, monkeypatch):
    X, y = digits
    X, y = X[:120], y[:120]
    for i, (img, label) in enumerate(zip(X, y)):
        write_image(tmp_path / "imgs" / str(label) / f"{i:04d}.png", img)
    files = image_files(tmp_path / "imgs")
    order = np.argsort([int(p.rsplit("/", 1)[1][:4]) for p in files.paths])
    files = files[order]
    np.testing.assert_array_equal(files.labels, y)
    params = dict(model=TinyNet(), epochs=2, batch_size=32, random_state=0, device="cpu")
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
                            random_state=0, device="cpu").fit(X[:200], y[:200])
    pre = clf.preprocess_
    resized = pre.to_float(torch.from_numpy(X[:200]).unsqueeze(1))  # 8x8 → 28x28 in [0, 1]
    assert pre.mean[0] == pytest.approx(float(resized.mean()), rel=1e-5)
    assert pre.std[0] == pytest.approx(float(resized.std(unbiased=False)), rel=1e-4)
    assert pre.mean != MNIST_MEAN
    # the fitted statistics travel with the classifier: prediction standardises the same way
    with torch.inference_mode():
        by_hand = clf.module_(pre(torch.from_numpy(X[200:210]).unsqueeze(1))).softmax(1)
    np.testing.assert_allclose(clf.predict_proba(X[200:210]), by_hand.numpy(), atol=1e-6)


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

@pytest.mark.parametrize("freeze", [True, False])
def test_freeze_backbone_trains_only_the_head(freeze, resnet18_weights):
    X, y = cats_and_dogs(8, seed=0)
    params = dict(model="resnet18", weights=resnet18_weights, epochs=1, batch_size=8,
                  validation_fraction=0, freeze_backbone=freeze, random_state=0, head_lr=None,
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
    clf = SoftmaxClassifier("lenet5", epochs=2, batch_size=16, random_state=0,
                            device="cpu").fit(X, y)
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


def test_save_writes_a_new_file_and_renames_it_into_place(tmp_path, lenet_on_digits, digits):
    X, y = digits
    path = tmp_path / "model.pt"
    first = SoftmaxClassifier("lenet5", epochs=1, random_state=1, device="cpu").fit(X[:100],
                                                                                     y[:100])
    first.save(path)
    os.link(path, tmp_path / "old.pt")  # a second name for the first checkpoint's file
    inode = os.stat(path).st_ino
    lenet_on_digits.save(path)
    # Written beside it and renamed over it (os.replace), not rewritten in place: a reader
    # holding the old file, or a save killed half-way, never sees a half-written checkpoint.
    assert os.stat(path).st_ino != inode
    np.testing.assert_array_equal(SoftmaxClassifier.load(tmp_path / "old.pt").predict_proba(
        X[400:]), first.predict_proba(X[400:]))
    np.testing.assert_array_equal(SoftmaxClassifier.load(path).predict_proba(X[400:]),
                                  lenet_on_digits.predict_proba(X[400:]))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.pt", "old.pt"]  # no temp file


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
    features = extract.DeepFeatureExtractor(model=str(path), device="cpu").fit().transform(
        X[:30])
    # the trained network's penultimate activations: the input of its head, by hand
    seen = []
    head = lenet_on_digits.module_.get_submodule(lenet_on_digits.head_)
    hook = head.register_forward_hook(lambda module, args, out: seen.append(args[0]))
    with torch.inference_mode():
        lenet_on_digits.module_(lenet_on_digits.preprocess_(torch.from_numpy(X[:30]).unsqueeze(1)))
    hook.remove()
    np.testing.assert_allclose(features, seen[0].numpy(), rtol=1e-5, atol=1e-5)


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
    cont = SoftmaxClassifier("lenet5", weights=path, lr=0.0, epochs=1, random_state=0, device="cpu")
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
    score = clf.score(X_test, y_test)
    assert score > 0.5  # one epoch of LeNet-5 on 4,000 digits
    assert f"test accuracy   {score:.4f} on {len(y_test)}" in printed.out  # what it printed
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
    # a data folder that is not there: a runtime failure (exit 1), named, no traceback
    assert featclf_main(["train", "--data", str(tmp_path / "nowhere"), "--out",
                         str(out)]) == 1
    err = capsys.readouterr().err
    assert f"--data {tmp_path / 'nowhere'}: not a built-in data set" in err
    assert "Traceback" not in err


# ------------------------------------------------------------------ on a GPU (skipped without CUDA)

@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_training_on_cuda_under_autocast_learns_and_predicts(precision):
    X, y = cats_and_dogs(160, seed=0)
    X_test, y_test = cats_and_dogs(60, seed=1)
    clf = SoftmaxClassifier("lenet5", epochs=8, lr=0.05, batch_size=16, device="cuda",
                            precision=precision, random_state=0).fit(X, y)
    loss = clf.history_["train_loss"].to_numpy()
    assert np.isfinite(loss).all() and loss[-1] < 0.5 * loss[0]
    assert all(p.device.type == "cpu" for p in clf.module_.parameters())  # stored on the CPU
    assert all(p.dtype == torch.float32 for p in clf.module_.parameters())  # autocast: fp32
    proba = clf.predict_proba(X_test)  # weights, low-precision compute
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-6)
    assert clf.score(X_test, y_test) >= 0.9  # as on the CPU in fp32


@pytest.mark.gpu
def test_fp16_on_cuda_steps_through_a_grad_scaler(digits):
    from featclf.train.loop import Pipeline, Recipe, Run

    X, y = digits
    cuda = torch.device("cuda")
    module = get_model("lenet5")
    pre = ImagePreprocess(28, 1, (0.1307,), (0.3081,))
    images = pre(torch.from_numpy(X[:200]).unsqueeze(1)).to(cuda)
    labels = torch.as_tensor(y[:200]).to(cuda)
    recipe = Recipe(epochs=10, batch_size=50, optimizer="sgd", lr=0.1, momentum=0.9,
                    nesterov=True, lr_decay=0.0, lr_schedule=None, weight_decay=0.0,
                    freeze_backbone=False, num_workers=0, progress=False)
    run = Run.start(recipe, module, "output", 200, Pipeline(None, None, None), cuda, "fp16")
    assert run.scaler.is_enabled()
    start_scale = run.scaler.get_scale()
    losses = [run.train_step(images[i:i + 50], labels[i:i + 50])[0] / 50
              for _ in range(10) for i in range(0, 200, 50)]
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-4:]) < 0.8 * np.mean(losses[:4])  # it learns (the last epoch)
    # the scale the fp16 gradients were multiplied by: 2**16 at the start, halved on overflow
    assert start_scale == 2.0**16 and 1.0 <= run.scaler.get_scale() <= 2.0**16
    bf16 = Run.start(recipe, get_model("lenet5"), "output", 200, Pipeline(None, None, None),
                     cuda, "bf16")
    assert not bf16.scaler.is_enabled()  # bf16 keeps fp32's range: no scaling


@pytest.mark.gpu
def test_cuda_fp32_predictions_match_the_cpu(lenet_on_digits, digits, monkeypatch):
    X, _ = digits
    # TF32 (on by default for cuDNN convolutions) would round to 10 mantissa bits
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    on_cpu = clone_fitted(lenet_on_digits, device="cpu", precision="fp32").predict_proba(X[400:])
    gpu = clone_fitted(lenet_on_digits, device="cuda", precision="fp32")
    np.testing.assert_allclose(gpu.predict_proba(X[400:]), on_cpu, atol=1e-5)
    np.testing.assert_array_equal(gpu.predict(X[400:]), lenet_on_digits.predict(X[400:]))
    assert gpu._runner().device.type == "cuda"
    assert next(gpu.module_.parameters()).device.type == "cpu"  # a copy runs on the GPU


def clone_fitted(clf: SoftmaxClassifier, **params) -> SoftmaxClassifier:
    """A copy of a fitted classifier with other (device) parameters: its pickle, re-set."""
    import pickle

    return pickle.loads(pickle.dumps(clf)).set_params(**params)
