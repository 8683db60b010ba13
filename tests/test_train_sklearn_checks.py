"""SoftmaxClassifier against scikit-learn's estimator checks, and the same contracts on images.

Most of scikit-learn's checks fit on small tabular data of 2, 3, 5 or 10 features. An image
classifier reads a 2-D ``X`` as flattened square images ``(n, s*s)``, so those checks cannot
apply; they are listed with the reason, and the contract each one guards is tested below on
real (flattened 8x8) images instead.
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.model_selection import cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import FunctionTransformer
from sklearn.utils.estimator_checks import parametrize_with_checks
from torch import nn

from featclf.data import load_digits_images
from featclf.train import SoftmaxClassifier

NOT_SQUARE = ("fits on tabular data with 2, 3, 5 or 10 features; a 2-D X is read as flattened "
              "square images (n, s*s), so these shapes are refused with a ValueError")
EXPECTED_FAILED_CHECKS = {
    **{name: NOT_SQUARE for name in [
        "check_classifiers_classes",
        "check_classifiers_one_label",
        "check_classifiers_train",
        "check_dict_unchanged",
        "check_dont_overwrite_parameters",
        "check_estimators_dtypes",
        "check_estimators_fit_returns_self",
        "check_estimators_nan_inf",
        "check_estimators_overwrite_params",
        "check_estimators_pickle",
        "check_f_contiguous_array_estimator",
        "check_fit2d_1sample",
        "check_fit2d_predict1d",
        "check_fit_check_is_fitted",
        "check_fit_idempotent",
        "check_fit_score_takes_y",
        "check_methods_sample_order_invariance",
        "check_methods_subset_invariance",
        "check_n_features_in",
        "check_pipeline_consistency",
        "check_readonly_memmap_input",
        "check_supervised_y_2d",
    ]},
    "check_dtype_object": "X of dtype object: images are numeric arrays or file paths",
    "check_classifier_data_not_an_array": "passes X as a non-array object with __array__; image "
    "inputs are arrays, tensors, path lists or ImageFiles (and its X has 3 features)",
}


class TinyCNN(nn.Sequential):
    """A CNN for any image size: conv → 2x2 average → Linear; its head is resized at fit."""

    def __init__(self) -> None:
        super().__init__(nn.Conv2d(1, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2),
                         nn.Flatten(), nn.Linear(16, 2))

    def __repr__(self) -> str:  # short test ids
        return "TinyCNN()"


def small_classifier(**params) -> SoftmaxClassifier:
    torch.manual_seed(0)
    settings = dict(epochs=2, batch_size=32, lr=0.1, validation_fraction=0, random_state=0)
    return SoftmaxClassifier(TinyCNN(), **{**settings, **params})


@parametrize_with_checks([small_classifier()],
                         expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


# The contracts of the checks above that cannot run, on flattened 8x8 digit images.

@pytest.fixture(scope="module")
def flat_digits():
    X, y = load_digits_images(return_X_y=True)
    return X[:300].reshape(300, 64), y[:300]


@pytest.fixture(scope="module")
def fitted(flat_digits):
    X, y = flat_digits
    return small_classifier().fit(X[:200], y[:200])


def test_fit_returns_self_and_leaves_parameters_unchanged(flat_digits):
    X, y = flat_digits
    clf = small_classifier()
    before = {k: pickle.dumps(v) for k, v in clf.get_params().items()}
    assert clf.fit(X[:100], y[:100]) is clf
    assert {k: pickle.dumps(v) for k, v in clf.get_params().items()} == before
    public = {k for k in vars(clf) if not k.startswith("_")}
    assert public - set(before) <= {"classes_", "module_", "network_", "history_",
                                    "model_name_", "head_", "preprocess_", "n_epochs_",
                                    "n_features_in_", "skipped_"}


def test_pickle_round_trip_predicts_the_same(fitted, flat_digits):
    X, _ = flat_digits
    again = pickle.loads(pickle.dumps(fitted))
    np.testing.assert_array_equal(again.predict_proba(X[200:]), fitted.predict_proba(X[200:]))


def test_refit_is_idempotent_and_clone_is_unfitted(fitted, flat_digits):
    X, y = flat_digits
    copy = clone(fitted)
    assert not hasattr(copy, "module_")
    copy.fit(X[:200], y[:200]).fit(X[:200], y[:200])
    np.testing.assert_array_equal(copy.predict_proba(X[200:]), fitted.predict_proba(X[200:]))


def test_predictions_do_not_depend_on_order_or_subset(fitted, flat_digits):
    X, _ = flat_digits
    full = fitted.predict_proba(X)
    order = np.random.default_rng(0).permutation(len(X))
    np.testing.assert_allclose(fitted.predict_proba(X[order]), full[order], atol=1e-6)
    np.testing.assert_allclose(fitted.predict_proba(X[7:19]), full[7:19], atol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.int64, np.float32, np.float64])
def test_dtypes_memory_layouts_and_readonly_inputs(dtype, fitted, flat_digits):
    X, _ = flat_digits
    X = X[200:]
    scaled = X.astype(dtype) / 255 if np.dtype(dtype).kind == "f" else X.astype(dtype)
    expected = fitted.predict_proba(X)
    fortran = np.asfortranarray(scaled)
    readonly = scaled.copy()
    readonly.flags.writeable = False
    for variant in (scaled, fortran, readonly):
        np.testing.assert_allclose(fitted.predict_proba(variant), expected, atol=1e-5)


def test_nan_and_wrong_width_inputs_are_refused(fitted, flat_digits):
    X, _ = flat_digits
    bad = X[:4].astype(np.float32) / 255
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="NaN or infinity"):
        fitted.predict(bad)
    with pytest.raises(ValueError, match="expecting 64 features"):
        fitted.predict(X[:4, :49])


def test_works_in_a_pipeline_and_cross_validation(flat_digits):
    X, y = flat_digits
    pipe = make_pipeline(FunctionTransformer(lambda a: 255 - a), small_classifier(epochs=1))
    scores = cross_val_score(pipe, X[:150], y[:150], cv=2)
    assert scores.shape == (2,) and np.isfinite(scores).all()


def test_tags_declare_image_inputs():
    tags = small_classifier().__sklearn_tags__()
    assert tags.estimator_type == "classifier"
    assert tags.input_tags.two_d_array and tags.input_tags.three_d_array
    assert not SoftmaxClassifier(device="cpu").__sklearn_tags__().non_deterministic
