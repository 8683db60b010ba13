"""Specification of featclf.linear: torch linear classifiers with scikit-learn's objectives."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.base import clone
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from sklearn.utils.estimator_checks import check_estimator

from featclf.linear import (
    PROBE_GRID,
    LinearProbe,
    TorchLinearSVC,
    TorchLogisticRegression,
    regularization_path,
)
from featclf.linear._solver import _loss_and_grad
from featclf.params import InvalidParameterError
from featclf.sweep import Features, sweep

ROOT = Path(__file__).resolve().parents[1]
LENET5 = ROOT / "artifacts" / "models" / "lenet5-mnist5k.pt"


@pytest.fixture(scope="module")
def digits():
    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X, y, test_size=0.3, stratify=y,
                                                        random_state=0)  # fmt: skip
    scaler = StandardScaler().fit(X_train)
    return scaler.transform(X_train), scaler.transform(X_test), y_train, y_test


def _logistic_objective(W, b, X, y, C):
    S = X @ W.T + b
    S = S - S.max(axis=1, keepdims=True)
    log_p = S - np.log(np.exp(S).sum(axis=1, keepdims=True))
    return 0.5 * (W * W).sum() - C * log_p[np.arange(len(y)), y].sum()


def _squared_hinge_objective(W, b, X, y, C):
    """liblinear's: the bias is a weight of a constant feature, penalised too."""
    Y = np.where(y[:, None] == np.arange(W.shape[0]), 1.0, -1.0)
    slack = np.maximum(0.0, 1.0 - Y * (X @ W.T + b))
    return 0.5 * ((W * W).sum() + (b * b).sum()) + C * (slack * slack).sum()


# max_iter=50: the checks' data are unscaled, where L-BFGS needs hundreds of iterations to
# converge; the contracts do not depend on how far it gets.
@pytest.mark.parametrize("estimator", [
    TorchLogisticRegression(device="cpu", max_iter=50),
    TorchLinearSVC(device="cpu", max_iter=50),
    TorchLinearSVC(multi_class="crammer_singer", device="cpu", max_iter=50),
    LinearProbe(TorchLogisticRegression(device="cpu", max_iter=50), Cs=[0.01, 1.0]),
], ids=["logistic", "svm_ovr", "svm_crammer_singer", "probe"])  # fmt: skip
def test_check_estimator_passes(estimator):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check_estimator(estimator)


@pytest.mark.parametrize("C", [0.01, 1.0])
def test_logistic_minimises_scikit_learns_objective_at_the_same_C(digits, C):
    X, _, y, _ = digits
    ours = TorchLogisticRegression(C=C, dtype="float64", tol=1e-6, device="cpu").fit(X, y)
    theirs = LogisticRegression(C=C, tol=1e-8, max_iter=10_000).fit(X, y)
    f_ours = _logistic_objective(ours.coef_, ours.intercept_, X, y, C)
    f_theirs = _logistic_objective(theirs.coef_, theirs.intercept_, X, y, C)
    assert f_ours == pytest.approx(f_theirs, rel=1e-5)
    np.testing.assert_allclose(ours.coef_, theirs.coef_, atol=2e-3 * np.abs(theirs.coef_).max())


@pytest.mark.parametrize("C", [0.01, 1.0])
def test_ovr_svm_minimises_linear_svcs_objective_at_the_same_C(digits, C):
    X, _, y, _ = digits
    ours = TorchLinearSVC(C=C, dtype="float64", tol=1e-7, max_iter=5000, device="cpu").fit(X, y)
    theirs = LinearSVC(C=C, tol=1e-8, max_iter=100_000).fit(X, y)
    f_ours = _squared_hinge_objective(ours.coef_, ours.intercept_, X, y, C)
    f_theirs = _squared_hinge_objective(theirs.coef_, theirs.intercept_, X, y, C)
    assert f_ours == pytest.approx(f_theirs, rel=1e-4)


def test_ovr_svm_is_solved_by_newton_in_few_steps_where_lbfgs_needs_hundreds(digits):
    """At C=1 (ill-conditioned: digits are nearly separable) truncated Newton reaches
    LinearSVC's objective in a few dozen steps; L-BFGS on the same objective and tolerance takes
    hundreds (measured: 28 and 427)."""
    from featclf.linear._solver import _lbfgs

    X, _, y, _ = digits
    C = 1.0
    ours = TorchLinearSVC(C=C, dtype="float64", tol=1e-7, device="cpu").fit(X, y)
    theirs = LinearSVC(C=C, tol=1e-8, max_iter=200_000).fit(X, y)
    f_ours = _squared_hinge_objective(ours.coef_, ours.intercept_, X, y, C)
    f_theirs = _squared_hinge_objective(theirs.coef_, theirs.intercept_, X, y, C)
    assert f_ours <= f_theirs * (1 + 1e-4)
    assert ours.n_iter_ <= 60
    Xt = torch.as_tensor(X)
    signs = torch.as_tensor(np.where(y[:, None] == np.arange(10), 1.0, -1.0))
    W, b = torch.zeros(10, X.shape[1], dtype=torch.float64), torch.zeros(10, dtype=torch.float64)
    lbfgs_iter, _ = _lbfgs("squared_hinge", Xt, signs, W, b, C=C, fit_intercept=True,
                           penalize_intercept=True, tol=1e-7, max_iter=20_000, smoothing=1.0)
    assert lbfgs_iter > 5 * ours.n_iter_, (lbfgs_iter, ours.n_iter_)


def test_ovr_svm_path_matches_cold_fits_with_less_work(digits):
    """The path's shared preconditioner and extrapolated starts change the cost, not the answer."""
    X, _, y, _ = digits
    grid = list(np.logspace(-3, 1, 5))
    est = TorchLinearSVC(dtype="float64", tol=1e-7, device="cpu")
    path = regularization_path(est, X, y, grid)
    cold = [clone(est).set_params(C=C).fit(X, y) for C in grid]
    for step, fit in zip(path, cold):
        f_path = _squared_hinge_objective(step.estimator.coef_, step.estimator.intercept_, X, y,
                                          step.C)  # fmt: skip
        f_cold = _squared_hinge_objective(fit.coef_, fit.intercept_, X, y, step.C)
        assert f_path == pytest.approx(f_cold, rel=1e-4)
    # The work: Hessian-vector products of CG (measured: 18k on the path, 25k from zero; the
    # same count, were the starts or the shared preconditioner not used).
    assert sum(s.estimator._n_products for s in path) < 0.85 * sum(f._n_products for f in cold)


def test_newton_on_the_rows_in_some_margin_equals_newton_on_all_rows(digits, monkeypatch):
    """CG's copy of the rows inside some margin (large C: few are) gives the same solution."""
    from featclf.linear import _newton

    X, _, y, _ = digits
    Xa = _newton.with_bias_column(torch.as_tensor(X))
    Y = torch.as_tensor(np.where(y[:, None] == np.arange(10), 1.0, -1.0))
    solutions = {}
    for below in (0.0, 1.01):  # never / always work on the copy
        monkeypatch.setattr(_newton, "_SUBSET_BELOW", below)
        W = torch.zeros(10, Xa.shape[1], dtype=torch.float64)
        steps, converged, _ = _newton.newton_squared_hinge(Xa, Y, W, C=1.0, tol=1e-8,
                                                           max_iter=500)  # fmt: skip
        assert converged
        solutions[below] = W
    torch.testing.assert_close(solutions[0.0], solutions[1.01], rtol=0.0, atol=1e-5)
    # The copy left rows out: at the solution, some rows are in no problem's margin.
    in_a_margin = ((1.0 - Y * (Xa @ solutions[0.0].T)) > 0).any(dim=1)
    assert 0.05 < 1.0 - float(in_a_margin.double().mean())


@pytest.fixture(scope="module")
def mnist_features():
    """Real features: the committed LeNet-5 (trained on MNIST-5k), penultimate layer, 84-d."""
    from featclf.data import load_mnist5k
    from featclf.extract import DeepFeatureExtractor

    X, y = load_mnist5k(return_X_y=True)
    F = DeepFeatureExtractor(str(LENET5), device="cpu", progress=False).fit_transform(X)
    F_train, F_test, y_train, y_test = train_test_split(F, y, test_size=0.2, stratify=y,
                                                        random_state=0)  # fmt: skip
    scaler = StandardScaler().fit(F_train)
    return scaler.transform(F_train), scaler.transform(F_test), y_train, y_test


@pytest.mark.slow
def test_accuracy_within_half_a_point_of_scikit_learn_on_mnist5k_features(mnist_features):
    X, X_test, y, y_test = mnist_features
    grid = [1e-2, 1.0]
    pairs = {
        "logistic": (TorchLogisticRegression(device="cpu"),
                     lambda C: LogisticRegression(C=C, max_iter=5000)),
        "ovr": (TorchLinearSVC(device="cpu"), lambda C: LinearSVC(C=C, max_iter=10_000)),
        "crammer_singer": (TorchLinearSVC(multi_class="crammer_singer", device="cpu"),
                           lambda C: LinearSVC(C=C, multi_class="crammer_singer",
                                               max_iter=10_000)),
    }  # fmt: skip
    gaps = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        for name, (ours, make_theirs) in pairs.items():
            for step in regularization_path(ours, X, y, grid):
                theirs = make_theirs(step.C).fit(X, y)
                gaps[name, step.C] = step.estimator.score(X_test, y_test) - theirs.score(
                    X_test, y_test)
    assert len(gaps) == 6
    assert max(abs(g) for g in gaps.values()) <= 0.005, gaps


def test_path_matches_independent_fits_with_fewer_iterations(digits):
    X, X_test, y, _ = digits
    # tol=1e-6: at the default 1e-4 a large C's fits from zero stop up to 65 % above the
    # optimum (C = 1000 here), so two correct fits need not agree to 1e-3 (see below).
    grid = [1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0]
    path = regularization_path(TorchLogisticRegression(device="cpu", tol=1e-6), X, y,
                               grid[::-1])  # fmt: skip
    assert [step.C for step in path] == grid[::-1]  # the caller's order
    cold = {C: TorchLogisticRegression(C=C, device="cpu", tol=1e-6).fit(X, y) for C in grid}
    for step in path:
        f_path = _logistic_objective(step.estimator.coef_, step.estimator.intercept_, X, y,
                                     step.C)  # fmt: skip
        f_cold = _logistic_objective(cold[step.C].coef_, cold[step.C].intercept_, X, y, step.C)
        assert f_path == pytest.approx(f_cold, rel=1e-3)
        assert step.estimator.C == step.C
    # Warm starts: the whole path takes fewer L-BFGS iterations than the fits from zero.
    assert sum(s.n_iter for s in path) < 0.8 * sum(e.n_iter_ for e in cold.values())


def test_a_warm_start_already_within_tol_still_solves_its_own_C(digits):
    # At a large C the objective is nearly flat: the previous C's solution has every gradient
    # entry below tol already, and a fit that stopped there would return it for every C.
    X, _, y, _ = digits
    path = regularization_path(TorchLogisticRegression(device="cpu"), X, y, [10.0, 100.0, 1e3])

    def objective(estimator, C):
        return _logistic_objective(estimator.coef_, estimator.intercept_, X, y, C)

    for before, step in zip(path, path[1:]):
        cold = TorchLogisticRegression(C=step.C, device="cpu").fit(X, y)
        # Well below its start (the previous solution, scored at this C) and no worse than a
        # fit from zero, which the same tolerance stops far above the optimum.
        assert objective(step.estimator, step.C) < 0.95 * objective(before.estimator, step.C)
        assert objective(step.estimator, step.C) <= objective(cold, step.C)


@pytest.mark.parametrize("kind", ["logistic", "crammer_singer", "logistic_binary"])
def test_losses_take_no_subnormal_exponentials_and_stay_exact(kind):
    # Scores 100 apart, as at a large C: their exponentials would be subnormal float32, whose
    # arithmetic is up to 100x slower on x86 CPUs.
    if kind == "logistic_binary":  # margins of 88: sigmoid(-88) is a subnormal float32
        S = torch.tensor([[88.0], [-88.0], [0.5]])
        target = torch.tensor([[1.0], [-1.0], [-1.0]])
    elif kind == "logistic":  # exp(-90), exp(-95): subnormal
        S = torch.tensor([[0.0, -90.0, -200.0], [50.0, -45.0, 0.0], [1.0, 2.0, 3.0]])
        target = torch.tensor([0, 2, 1])
    else:  # smoothed by 0.05: a margin 4.5 short is exp(-90)
        S = torch.tensor([[0.0, -5.5, -200.0], [2.0, -3.0, 0.0], [1.0, 2.0, 3.0]])
        target = torch.tensor([0, 2, 1])
    loss, G = _loss_and_grad(kind, S, target, 0.05)
    tiny = torch.finfo(torch.float32).tiny
    assert not ((G != 0) & (G.abs() < tiny)).any(), G
    # The same loss and gradient as float64 arithmetic without the floor, to float32 precision.
    S64 = S.double().requires_grad_()
    if kind == "logistic":
        ref = torch.nn.functional.cross_entropy(S64, target, reduction="sum")
    elif kind == "logistic_binary":
        ref = torch.nn.functional.softplus(-target.double() * S64).sum()
    else:
        onehot = torch.nn.functional.one_hot(target, 3).double()
        Z = (1.0 - onehot + S64 - S64.gather(1, target[:, None])) / 0.05
        ref = 0.05 * (torch.logsumexp(Z, 1) - (Z * onehot).sum(1)).sum()
    ref.backward()
    assert float(loss) == pytest.approx(ref.item(), rel=1e-6, abs=1e-6)
    assert torch.allclose(G.double(), S64.grad, rtol=1e-5, atol=1e-6)


def test_binary_problems_follow_scikit_learns_one_row_convention():
    X, y = load_digits(n_class=2, return_X_y=True)
    labels = np.where(y == 1, "one", "zero")
    for est in (TorchLogisticRegression(device="cpu"), TorchLinearSVC(device="cpu"),
                TorchLinearSVC(multi_class="crammer_singer", device="cpu")):
        est.fit(X, labels)
        assert est.coef_.shape == (1, 64) and est.intercept_.shape == (1,)
        scores = est.decision_function(X)
        np.testing.assert_allclose(scores, (X @ est.coef_.T + est.intercept_).ravel())
        # A positive score is classes_[1] ("zero" sorts after "one").
        assert list(est.classes_) == ["one", "zero"]
        np.testing.assert_array_equal(est.predict(X), np.where(scores > 0, "zero", "one"))
        assert est.score(X, labels) > 0.98


def test_multiclass_predict_is_the_argmax_of_coef_and_intercept(digits):
    X, X_test, y, y_test = digits
    for est in (TorchLogisticRegression(device="cpu"),
                TorchLinearSVC(multi_class="crammer_singer", device="cpu")):
        est.fit(X, y)
        scores = X_test @ est.coef_.T + est.intercept_
        np.testing.assert_array_equal(est.predict(X_test), est.classes_[scores.argmax(1)])
    proba = TorchLogisticRegression(device="cpu").fit(X, y).predict_proba(X_test)
    np.testing.assert_allclose(proba.sum(1), 1.0)


def test_linear_probe_chooses_on_validation_and_refits_on_all_rows(digits):
    X, X_test, y, y_test = digits
    grid = [1e-5, 1e-3, 1e-1, 10.0]
    # (tol=1e-6: solutions tight enough for two ways of reaching one to agree to 1e-3)
    probe = LinearProbe(TorchLogisticRegression(device="cpu", tol=1e-6), Cs=grid,
                        random_state=0).fit(X, y)  # fmt: skip
    assert probe.validation_scores_.shape == (4,)
    best = probe.validation_scores_.max()
    assert probe.C_ == min(C for C, s in zip(grid, probe.validation_scores_) if s == best)
    assert probe.validation_scores_[0] < best  # 1e-5 underfits: the choice mattered
    # Refit on train + validation: the same solution as a fresh fit at C_ on all rows.
    fresh = TorchLogisticRegression(C=probe.C_, device="cpu", tol=1e-6).fit(X, y)
    f_probe = _logistic_objective(probe.coef_, probe.intercept_, X, y, probe.C_)
    assert f_probe == pytest.approx(_logistic_objective(fresh.coef_, fresh.intercept_, X, y,
                                                        probe.C_), rel=1e-3)  # fmt: skip
    assert len(PROBE_GRID) == 45 and PROBE_GRID[0] == pytest.approx(1e-6)
    assert PROBE_GRID[-1] == pytest.approx(1e5)
    assert not hasattr(LinearProbe(TorchLinearSVC()), "predict_proba")


def test_too_few_iterations_warn_and_bad_parameters_are_refused(digits):
    X, _, y, _ = digits
    with pytest.warns(ConvergenceWarning, match="max_iter"):
        TorchLinearSVC(C=10.0, max_iter=2, device="cpu").fit(X, y)
    with pytest.raises(InvalidParameterError, match="'multi_class' parameter of TorchLinearSVC"):
        TorchLinearSVC(multi_class="ovo").fit(X, y)
    with pytest.raises(InvalidParameterError, match="'C' parameter of TorchLogisticRegression"):
        TorchLogisticRegression(C=0).fit(X, y)
    with pytest.raises(ValueError, match="at least 2 classes"):
        TorchLogisticRegression(device="cpu").fit(X[:5], np.zeros(5))


def _sweep(F, y, *, solver, groups=None, grid=(0.01, 1.0), name="logistic"):
    half = len(y) // 2
    features = Features(F[:half], F[:0], F[half:], seconds=1.0)
    return sweep(name, features, y[:half], y[:0], y[half:], np.unique(y), grid=list(grid),
                 options={}, cv=3, n_jobs=None, random_state=0, n_resamples=50,
                 confidence=0.95, solver=solver, groups=groups)  # fmt: skip


@pytest.mark.parametrize("name", ["logistic", "linear_svm", "crammer_singer_svm"])
def test_torch_sweep_agrees_with_the_scikit_learn_sweep(digits, name):
    X, X_test, y, y_test = digits
    F, labels = np.concatenate([X, X_test]), np.concatenate([y, y_test])
    torch_rows = _sweep(F, labels, solver="torch", name=name)
    sk_rows = _sweep(F, labels, solver="sklearn", name=name)
    assert {o.row["solver"] for o in torch_rows} == {"torch"}
    assert {o.row["solver"] for o in sk_rows} == {"sklearn"}
    chosen = next(o for o in torch_rows if o.row["selected"])
    assert type(chosen.estimator.named_steps["clf"]).__name__.startswith("Torch")
    for ours, theirs in zip(torch_rows, sk_rows):
        assert abs(ours.row["cv_accuracy"] - theirs.row["cv_accuracy"]) <= 0.02
        assert abs(ours.row["accuracy"] - theirs.row["accuracy"]) <= 0.02
    np.testing.assert_array_equal(chosen.pred, chosen.estimator.predict(F[len(labels) // 2:]))


@pytest.mark.parametrize("solver", ["sklearn", "torch"])
def test_groups_keep_every_images_views_in_one_fold(solver):
    # 60 "images" with random labels (nothing to learn), 4 near-identical views each: folds
    # that split an image's views score its memorised twins (high CV accuracy); grouped folds
    # only ever score unseen images, so CV accuracy is chance.
    rng = np.random.default_rng(0)
    images = rng.normal(size=(120, 200))
    labels = rng.integers(0, 2, size=120)
    F = np.repeat(images, 4, axis=0) + 0.01 * rng.normal(size=(480, 200))
    y = np.repeat(labels, 4)
    group = np.repeat(np.arange(120), 4)
    # The first half of the rows (images 0..59) is the training part in _sweep.
    grouped = _sweep(F, y, solver=solver, groups=group[:240], grid=[100.0])
    leaky = _sweep(F, y, solver=solver, grid=[100.0])
    assert leaky[0].row["cv_accuracy"] > 0.9
    assert grouped[0].row["cv_accuracy"] < 0.75
    with pytest.raises(ValueError, match="groups has shape .10,.: give one per training row"):
        _sweep(F, y, solver=solver, groups=group[:10])


@pytest.mark.parametrize("solver", ["sklearn", "torch"])
def test_scored_rows_are_what_held_out_folds_score(digits, solver):
    """Views (here: noise with random labels) are trained on, never scored: CV accuracy is
    the clean rows', as the test is; the fits themselves do not change."""
    X, X_test, y, y_test = digits
    rng = np.random.default_rng(0)
    views = rng.normal(size=(len(X), X.shape[1]))
    F = np.concatenate([X, views, X_test])
    labels = np.concatenate([y, rng.permutation(y), y_test])
    n_train = 2 * len(X)
    features = Features(F[:n_train], F[:0], F[n_train:], seconds=1.0)
    group = np.r_[np.arange(len(X)), np.arange(len(X))]
    clean = np.arange(n_train) < len(X)
    rows = {}
    for name, scored in (("all", None), ("clean", clean)):
        rows[name] = sweep("logistic", features, labels[:n_train], y[:0], y_test, np.unique(y),
                           grid=[0.1], options={}, cv=3, n_jobs=None, random_state=0,
                           n_resamples=50, confidence=0.95, solver=solver, groups=group,
                           scored=scored)[0].row  # fmt: skip
    assert rows["clean"]["cv_accuracy"] > rows["all"]["cv_accuracy"] + 0.3
    assert rows["clean"]["cv_accuracy"] > 0.9
    assert rows["clean"]["accuracy"] == rows["all"]["accuracy"]


def test_auto_solver_uses_scikit_learn_on_small_matrices(digits):
    X, X_test, y, y_test = digits
    rows = _sweep(np.concatenate([X, X_test]), np.concatenate([y, y_test]), solver="auto")
    assert {o.row["solver"] for o in rows} == {"sklearn"}
    rbf = _sweep(np.concatenate([X, X_test]), np.concatenate([y, y_test]), solver="torch",
                 name="rbf_svm", grid=[1.0])  # fmt: skip
    assert rbf[0].row["solver"] == "sklearn"  # no torch twin: scikit-learn, not an error
    with pytest.raises(InvalidParameterError, match="'solver' parameter of sweep"):
        _sweep(X, y, solver="cuml")


@pytest.mark.gpu
def test_cuda_float32_fit_matches_the_cpu_fit(digits):
    X, X_test, y, _ = digits
    for est in (TorchLogisticRegression(C=0.1), TorchLinearSVC(C=0.1)):
        cpu = clone(est).set_params(device="cpu").fit(X, y)
        cpu_pred = cpu.predict(X_test)
        gpu = clone(est).set_params(device="cuda").fit(X, y)
        assert np.mean(gpu.predict(X_test) == cpu_pred) >= 0.99
        np.testing.assert_allclose(gpu.coef_, cpu.coef_, atol=1e-2 * np.abs(cpu.coef_).max())
    assert torch.cuda.is_available()
