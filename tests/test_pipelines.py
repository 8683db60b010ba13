"""Specification of featclf.pipelines: the SVM / logistic pipelines used on deep features."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, train_test_split
from sklearn.svm import SVC, LinearSVC

from featclf.pipelines import (
    BASELINES,
    CLASSIFIERS,
    REGISTRY,
    SVM_KINDS,
    c_grid,
    classifier_spec,
    make_classifier,
    make_logistic,
    make_svm,
)


@pytest.fixture(scope="module")
def digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    return train_test_split(X, y, test_size=0.3, stratify=y, random_state=0)


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_every_classifier_exceeds_90_percent_on_digits(name, digits):
    X_train, X_test, y_train, y_test = digits
    pipe = make_classifier(name, C=1.0).fit(X_train, y_train)
    assert pipe.score(X_test, y_test) > 0.9


def test_rbf_svm_with_pca_whitening_and_l2_exceeds_90_percent_on_digits(digits):
    X_train, X_test, y_train, y_test = digits
    pipe = make_svm("rbf", C=10.0, l2_normalize=True, pca=30, whiten=True).fit(X_train, y_train)
    assert pipe.score(X_test, y_test) > 0.9


def test_default_steps_are_scaler_then_classifier():
    assert list(make_svm().named_steps) == ["scale", "clf"]
    assert list(make_logistic().named_steps) == ["scale", "clf"]


def test_all_options_add_named_steps_in_order():
    pipe = make_svm("linear", l2_normalize=True, pca=20, whiten=True)
    assert list(pipe.named_steps) == ["l2", "scale", "pca", "clf"]
    assert pipe.named_steps["l2"].norm == "l2"
    assert pipe.named_steps["pca"].n_components == 20
    assert pipe.named_steps["pca"].whiten is True


def test_scale_none_leaves_only_the_classifier():
    assert list(make_svm("rbf", scale=None).named_steps) == ["clf"]
    assert list(make_logistic(scale=None, pca=5).named_steps) == ["pca", "clf"]


def test_l2_step_gives_unit_norm_rows(digits):
    X_train = digits[0]
    pipe = make_svm(l2_normalize=True, scale=None).fit(X_train, digits[2])
    norms = np.linalg.norm(pipe[:-1].transform(X_train[:50]), axis=1)
    np.testing.assert_allclose(norms, 1.0)


def test_pca_whitening_gives_unit_variance_components(digits):
    X_train, _, y_train, _ = digits
    pipe = make_logistic(pca=10, whiten=True).fit(X_train, y_train)
    components = pipe[:-1].transform(X_train)
    assert components.shape == (len(X_train), 10)
    np.testing.assert_allclose(components.std(axis=0, ddof=1), 1.0, rtol=1e-6)


def test_kinds_map_to_the_documented_estimators():
    linear = make_svm("linear", C=0.5).named_steps["clf"]
    assert isinstance(linear, LinearSVC)
    assert (linear.multi_class, linear.dual, linear.C) == ("ovr", "auto", 0.5)
    crammer = make_svm("crammer_singer").named_steps["clf"]
    assert isinstance(crammer, LinearSVC) and crammer.multi_class == "crammer_singer"
    rbf = make_svm("rbf", C=3.0).named_steps["clf"]
    assert isinstance(rbf, SVC)
    assert (rbf.kernel, rbf.gamma, rbf.C) == ("rbf", "scale", 3.0)
    assert not hasattr(make_svm("rbf"), "predict_proba")
    logistic = make_logistic(C=2.0, max_iter=50).named_steps["clf"]
    assert isinstance(logistic, LogisticRegression)
    assert (logistic.solver, logistic.C, logistic.max_iter) == ("lbfgs", 2.0, 50)


def test_rbf_probability_option_gives_normalised_probabilities(digits):
    X_train, X_test, y_train, _ = digits
    pipe = make_svm("rbf", probability=True)
    assert "clf__estimator__C" in pipe.get_params()
    proba = pipe.fit(X_train[:400], y_train[:400]).predict_proba(X_test[:20])
    assert proba.shape == (20, 10)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0)


def test_probability_on_a_linear_svm_is_refused():
    with pytest.raises(ValueError, match="only available for kind='rbf'"):
        make_svm("linear", probability=True)


def test_random_state_and_max_iter_reach_the_estimators():
    pipe = make_svm("linear", pca=5, random_state=7, max_iter=123)
    assert pipe.named_steps["clf"].random_state == 7
    assert pipe.named_steps["clf"].max_iter == 123
    assert pipe.named_steps["pca"].random_state == 7
    assert make_svm("rbf").named_steps["clf"].max_iter == -1


def test_clone_keeps_every_parameter():
    pipe = make_svm("crammer_singer", C=0.01, l2_normalize=True, pca=8)
    cloned = clone(pipe)
    assert cloned is not pipe
    assert cloned.get_params()["clf__C"] == 0.01
    assert list(cloned.named_steps) == ["l2", "scale", "pca", "clf"]
    assert cloned.named_steps["clf"].multi_class == "crammer_singer"


def test_grid_search_over_clf_C_in_parallel(digits):
    X_train, X_test, y_train, y_test = digits
    grid = c_grid("linear")
    search = GridSearchCV(make_svm("linear"), {"clf__C": grid}, cv=3, n_jobs=2)
    search.fit(X_train[:600], y_train[:600])
    assert search.best_params_["clf__C"] in grid
    assert len(search.cv_results_["mean_test_score"]) == len(grid)
    assert search.score(X_test, y_test) > 0.9


def test_bad_kind_error_lists_the_valid_kinds():
    with pytest.raises(ValueError, match="'poly'") as error:
        make_svm("poly")
    for kind in SVM_KINDS:
        assert repr(kind) in str(error.value)


def test_unknown_classifier_name_is_refused_with_the_valid_names():
    with pytest.raises(ValueError, match="The 'name' parameter of make_classifier") as error:
        make_classifier("svm")
    for name in CLASSIFIERS:
        assert repr(name) in str(error.value)
    with pytest.raises(ValueError, match="SoftmaxClassifier"):
        make_classifier("softmax")


def test_whiten_without_pca_is_refused():
    with pytest.raises(ValueError, match="whiten=True needs a PCA step"):
        make_svm(whiten=True)


def test_unknown_scale_is_refused():
    with pytest.raises(ValueError, match="The 'scale' parameter of make_logistic .* Got 'minmax'"):
        make_logistic(scale="minmax")


def test_make_classifier_forwards_options():
    pipe = make_classifier("rbf_svm", C=5.0, pca=12)
    assert list(pipe.named_steps) == ["scale", "pca", "clf"]
    assert pipe.get_params()["clf__C"] == 5.0
    assert make_classifier("logistic", max_iter=10).named_steps["clf"].max_iter == 10


def test_c_grids_are_log_spaced_over_the_documented_ranges():
    assert c_grid("linear") == [0.001, 0.01, 0.1, 1.0, 10.0, 100.0]
    assert c_grid("linear_svm") == c_grid("linear") == c_grid("crammer_singer_svm")
    assert c_grid("logistic") == [0.001, 0.01, 0.1, 1.0, 10.0, 100.0]
    assert c_grid("rbf") == [0.1, 1.0, 10.0, 100.0, 1000.0]
    fine = c_grid("rbf_svm", per_decade=4)
    assert len(fine) == 17 and fine[0] == 0.1 and fine[-1] == 1000.0
    np.testing.assert_allclose(np.diff(np.log10(fine)), 0.25, rtol=1e-5)


def test_c_grid_for_unknown_kind_is_refused():
    with pytest.raises(ValueError, match="The 'kind' parameter of c_grid .* Got 'softmax'"):
        c_grid("softmax")
    with pytest.raises(ValueError, match="The 'per_decade' parameter of c_grid .* Got 0"):
        c_grid("linear", per_decade=0)


@pytest.mark.parametrize(
    ("builder", "options", "name"),
    [
        (make_svm, {"C": 0.0}, "C"),
        (make_svm, {"pca": -1}, "pca"),
        (make_svm, {"max_iter": 0}, "max_iter"),
        (make_logistic, {"l2_normalize": "yes"}, "l2_normalize"),
    ],
)
def test_invalid_builder_parameters_get_scikit_learns_wording(builder, options, name):
    value = next(iter(options.values()))
    pattern = f"The '{name}' parameter of {builder.__name__} must be .* Got {value!r} instead."
    with pytest.raises(ValueError, match=pattern):
        builder(**options)


def test_the_registry_names_every_reported_classifier_once():
    assert CLASSIFIERS == ("linear_svm", "crammer_singer_svm", "rbf_svm", "logistic")
    assert BASELINES == ("softmax", "softmax_finetune")
    assert list(REGISTRY) == [*BASELINES, *CLASSIFIERS]
    assert len({spec.color for spec in REGISTRY.values()}) == len(REGISTRY)
    assert [n for n, spec in REGISTRY.items() if spec.is_svm] == [
        "linear_svm", "crammer_singer_svm", "rbf_svm"]  # fmt: skip
    for name in CLASSIFIERS:  # the registry's builder and C range are what the API uses
        spec = classifier_spec(name)
        assert type(spec.builder(2.0)[-1]) is type(make_classifier(name)[-1])
        assert c_grid(name)[0] == 10.0 ** spec.c_range[0]
        assert c_grid(name)[-1] == 10.0 ** spec.c_range[1]
    assert classifier_spec("softmax").builder is None
    with pytest.raises(ValueError, match="The 'name' parameter of classifier_spec"):
        classifier_spec("svm")


@pytest.mark.parametrize(("name", "multi_class"), [
    ("linear_svm", "ovr"), ("crammer_singer_svm", "crammer_singer"), ("logistic", None),
])  # fmt: skip
def test_solver_torch_builds_the_torch_twin_with_the_same_steps_and_C(digits, name,
                                                                      multi_class):
    from featclf.linear import TorchLinearSVC, TorchLogisticRegression

    pipe = make_classifier(name, C=0.5, pca=20, solver="torch")
    assert list(pipe.named_steps) == ["scale", "pca", "clf"]
    clf = pipe.named_steps["clf"]
    assert isinstance(clf, TorchLogisticRegression if multi_class is None else TorchLinearSVC)
    assert clf.C == 0.5 and getattr(clf, "multi_class", None) == multi_class
    assert REGISTRY[name].torch
    X_train, X_test, y_train, y_test = digits
    assert pipe.fit(X_train, y_train).score(X_test, y_test) > 0.9


def test_solver_torch_is_refused_for_the_rbf_svm_and_unknown_solvers():
    assert not REGISTRY["rbf_svm"].torch
    with pytest.raises(ValueError, match="solver='torch' solves linear SVMs only"):
        make_svm("rbf", solver="torch")
    with pytest.raises(ValueError, match="The 'solver' parameter of make_logistic .* 'cuml'"):
        make_logistic(solver="cuml")
