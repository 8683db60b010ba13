"""Classifier fit time vs number of samples on 512-d standardised deep-feature-like matrices.

Which scikit-learn classifier to put after the headless CNN, and when. For n = 1k ... 50k
samples of 512 features (10 classes) it fits ``LinearSVC(dual="auto")``,
``LogisticRegression(lbfgs)``, ``SGDClassifier(hinge)`` and the RBF ``SVC``, and records fit
time, solver iterations and held-out accuracy. A classifier stops at the first size whose fit
would break the per-fit limit (judged from its previous size; nothing is extrapolated into the
results: larger sizes are recorded as skipped). LinearSVC's and logistic regression's fit time
against C is measured at the smallest size. Then 100 classes at one size (20 with ``--quick``,
all at C=0.1):
``LinearSVC`` (liblinear's one-vs-rest, one thread) vs ``OneVsRestClassifier(LinearSVC,
n_jobs=2)`` vs ``LogisticRegression`` vs ``SGDClassifier(n_jobs=2)``. The output ends with a
table of which to pick when.

Features come from a generator shaped like a CNN's penultimate layer: class means in a
64-d latent space, a random linear map to 512-d, noise, then ReLU (non-negative, correlated,
low intrinsic dimension), standardised as featclf's pipelines do (``scale="standard"``).

Run: ``python benchmarks/classifier_fit.py [--quick | --smoke] [--out-dir DIR]``.
"""

from __future__ import annotations

import math
import sys
import time
import warnings
from collections.abc import Callable

import common
import numpy as np
from joblib import Parallel, delayed
from sklearn.base import BaseEstimator
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.multiclass import OneVsRestClassifier
from sklearn.preprocessing import StandardScaler
from sklearn.svm import SVC, LinearSVC
from threadpoolctl import threadpool_limits

NAME = "classifier_fit"
N_FEATURES = 512  # resnet18's feature size; --smoke uses fewer to stay fast
LATENT_DIM = 64
# Fits shorter than this are repeated (median of 3): one run of a 50 ms fit is mostly noise.
REPEAT_BELOW_S = 1.0
# How a fit's time grows with n, used only to decide whether the next size fits the limit:
# kernel SVMs are about quadratic in n, the linear solvers about linear.
GROWTH_EXPONENT = {"rbf_svc": 2.0}
# BLAS threads per fit, as featclf.compare runs its fits: lbfgs on these matrices is many times
# slower with 2 OpenBLAS threads on 2 cores (measured below, "blas_threads").
BLAS_THREADS = 1
# C of the many-class case: a mid-grid value where liblinear converges in tens of iterations.
# At C=1 near-separable features make each one-vs-rest problem take seconds (c_sensitivity),
# which would measure convergence, not the one-thread-vs-parallel question asked here.
MANY_CLASSES_C = 0.1
# A classifier within this many accuracy points of the best counts as "as accurate".
ACCURACY_TIE = 0.01

SETTINGS = {
    # per_fit_limit_s: one fit of the sweep; budget_s: the whole sweep; many_limit_s: one
    # many-class fit (judged from one timed one-vs-rest sub-problem before fitting them all).
    "full": dict(sizes=(1_000, 2_000, 5_000, 10_000, 20_000, 50_000), n_test=5_000,
                 n_features=N_FEATURES, per_fit_limit_s=60.0, budget_s=3_600.0,
                 many_classes=100, many_n=20_000, many_limit_s=900.0),
    # 20 classes, not 100, in quick mode: LinearSVC's 100 one-vs-rest problems take minutes.
    "quick": dict(sizes=(1_000, 2_000, 5_000, 10_000), n_test=2_000, n_features=N_FEATURES,
                  per_fit_limit_s=30.0, budget_s=110.0, many_classes=20, many_n=2_000,
                  many_limit_s=25.0),
    "smoke": dict(sizes=(200, 400), n_test=200, n_features=32, per_fit_limit_s=10.0,
                  budget_s=60.0, many_classes=10, many_n=300, many_limit_s=10.0),
}


def deep_like_features(n: int, n_classes: int, *, n_features: int = N_FEATURES, seed: int = 0,
                       separation: float = 0.5) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float32 rows of non-negative, correlated features with ``n_classes`` labels.

    ``separation`` scales the distance between class means in the latent space; 0.5 gives
    held-out accuracies of about 90-96 % for linear models at 10 classes, like deep features of
    a decent CNN.
    """
    rng = np.random.default_rng(seed)
    means = rng.normal(0.0, separation, size=(n_classes, LATENT_DIM))
    mixing = rng.normal(0.0, 1.0 / math.sqrt(LATENT_DIM), size=(LATENT_DIM, n_features))
    bias = rng.normal(0.0, 0.5, size=n_features)
    y = rng.integers(0, n_classes, size=n)
    latent = means[y] + rng.normal(size=(n, LATENT_DIM))
    X = np.maximum(latent @ mixing + bias + 0.3 * rng.normal(size=(n, n_features)), 0.0)
    return X.astype(np.float32), y


def classifiers() -> dict[str, Callable[[], BaseEstimator]]:
    """The 10-class candidates, with featclf's settings (``featclf.pipelines``)."""
    return {
        "linear_svc": lambda: LinearSVC(dual="auto", C=1.0, max_iter=10_000, random_state=0),
        "logistic_lbfgs": lambda: LogisticRegression(C=1.0, solver="lbfgs", max_iter=1_000),
        "sgd_hinge": lambda: SGDClassifier(loss="hinge", random_state=0),
        "rbf_svc": lambda: SVC(kernel="rbf", C=1.0, gamma="scale"),
    }


def many_class_candidates(n_jobs: int, C: float) -> dict[str, Callable[[], BaseEstimator]]:
    """The candidates for the many-class case."""
    return {
        "linear_svc": lambda: LinearSVC(dual="auto", C=C, max_iter=10_000, random_state=0),
        f"ovr_linear_svc_n_jobs{n_jobs}": lambda: OneVsRestClassifier(
            LinearSVC(dual="auto", C=C, max_iter=10_000, random_state=0), n_jobs=n_jobs),
        "logistic_lbfgs": lambda: LogisticRegression(C=C, solver="lbfgs", max_iter=1_000),
        f"sgd_hinge_n_jobs{n_jobs}": lambda: SGDClassifier(loss="hinge", random_state=0,
                                                            n_jobs=n_jobs),
    }


def n_iterations(est: BaseEstimator) -> int | None:
    """The solver's iteration count (the largest over one-vs-rest sub-problems)."""
    if isinstance(est, OneVsRestClassifier):
        its = [n_iterations(e) for e in est.estimators_]
        return max((i for i in its if i is not None), default=None)
    it = getattr(est, "n_iter_", None)
    if it is None:
        return None
    return int(np.max(it))


def fit_once(make: Callable[[], BaseEstimator], X: np.ndarray, y: np.ndarray,
             X_test: np.ndarray, y_test: np.ndarray, *, blas_threads: int = BLAS_THREADS) -> dict:
    """Fit (repeating fast fits), then score on the held-out rows."""
    times: list[float] = []
    while True:
        est = make()
        with warnings.catch_warnings(record=True) as caught, \
                threadpool_limits(limits=blas_threads, user_api="blas"):
            warnings.simplefilter("always", ConvergenceWarning)
            start = time.perf_counter()
            est.fit(X, y)
            times.append(time.perf_counter() - start)
        if times[0] >= REPEAT_BELOW_S or len(times) == 3:
            break
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    return {"fit_s": float(np.median(times)), "fit_repeats": len(times),
            "n_iter": n_iterations(est), "converged": converged,
            "test_accuracy": float(est.score(X_test, y_test))}


def would_exceed(name: str, last: dict | None, n: int, limit: float) -> bool:
    """Whether a fit at ``n`` likely breaks ``limit``, judged from the previous size's fit."""
    if last is None:
        return False
    growth = (n / last["n"]) ** GROWTH_EXPONENT.get(name, 1.0)
    return last["fit_s"] >= limit or last["fit_s"] * growth > limit


def one_vs_rest_probe(X: np.ndarray, y: np.ndarray, *, C: float = 1.0,
                      blas_threads: int = BLAS_THREADS) -> float:
    """Seconds of one of LinearSVC's one-vs-rest problems (the first class against the rest).

    liblinear solves one binary problem per class, one after another; timing one before
    starting all of them keeps a run inside its limits without guessing.
    """
    with threadpool_limits(limits=blas_threads, user_api="blas"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = time.perf_counter()
        LinearSVC(dual="auto", C=C, max_iter=10_000, random_state=0).fit(X, y == np.min(y))
        return time.perf_counter() - start


def scaling_exponent(points: list[dict]) -> float | None:
    """Least-squares slope of log(fit time) vs log(n) over the measured points (>= 3 needed)."""
    pts = [(p["n"], p["fit_s"]) for p in points if p["fit_s"] > 0]
    if len(pts) < 3:
        return None
    n, t = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(n, t, 1)[0])


def run_sweep(cfg: dict, n_jobs: int, started: float
              ) -> tuple[list[dict], dict[str, str], dict[int, float]]:
    """Fit every classifier at every size within the limits.

    Returns the rows, the skip reasons, and LinearSVC's one-vs-rest probe seconds per size.
    """
    sizes = cfg["sizes"]
    X_all, y_all = deep_like_features(max(sizes) + cfg["n_test"], 10,
                                      n_features=cfg["n_features"], seed=0)
    X_test_raw, y_test = X_all[-cfg["n_test"]:], y_all[-cfg["n_test"]:]
    rows: list[dict] = []
    skipped: dict[str, str] = {}
    probes: dict[int, float] = {}
    last: dict[str, dict] = {}
    for n in sizes:
        # Nested training sets: each size is a prefix of the next, scaled on its own rows.
        scaler = StandardScaler().fit(X_all[:n])
        X, X_test = scaler.transform(X_all[:n]), scaler.transform(X_test_raw)
        for name, make in classifiers().items():
            if name in skipped:
                continue
            if time.perf_counter() - started > cfg["budget_s"]:
                skipped[name] = (f"skipped from n={n}: the script's {cfg['budget_s']:.0f} s "
                                 "budget was spent")
                continue
            if would_exceed(name, last.get(name), n, cfg["per_fit_limit_s"]):
                prev = last[name]
                skipped[name] = (f"skipped above n={prev['n']}: its fit took "
                                 f"{prev['fit_s']:.1f} s there; n={n} would likely exceed the "
                                 f"{cfg['per_fit_limit_s']:.0f} s per-fit limit")
                continue
            if name == "linear_svc":
                probe = probes[n] = one_vs_rest_probe(X, y_all[:n])
                if probe * 10 > cfg["per_fit_limit_s"]:
                    skipped[name] = (f"skipped from n={n}: one of its 10 one-vs-rest problems "
                                     f"took {probe:.1f} s there, so all 10 exceed the "
                                     f"{cfg['per_fit_limit_s']:.0f} s per-fit limit")
                    continue
            row = {"classifier": name, "n": n, **fit_once(make, X, y_all[:n], X_test, y_test)}
            rows.append(row)
            last[name] = row
            print(f"  n={n:>6} {name:<16} fit {row['fit_s']:7.2f} s  "
                  f"acc {row['test_accuracy']:.3f}  iters {row['n_iter']}", flush=True)
    return rows, skipped, probes


def run_many_classes(cfg: dict, n_jobs: int) -> tuple[list[dict], dict]:
    """The many-class case at one size: rows, plus the one-vs-rest probe and any skip."""
    n, k = cfg["many_n"], cfg["many_classes"]
    X_all, y_all = deep_like_features(n + cfg["n_test"], k, n_features=cfg["n_features"],
                                      seed=1)
    scaler = StandardScaler().fit(X_all[:n])
    X, X_test = scaler.transform(X_all[:n]), scaler.transform(X_all[n:])
    y, y_test = y_all[:n], y_all[n:]
    probe_s = one_vs_rest_probe(X, y, C=MANY_CLASSES_C)
    info: dict = {"one_vs_rest_subproblem_s": probe_s, "skipped": None}
    if probe_s * k > cfg["many_limit_s"]:
        info["skipped"] = (f"LinearSVC variants skipped: one of the {k} one-vs-rest problems "
                           f"took {probe_s:.1f} s, over the {cfg['many_limit_s']:.0f} s limit "
                           f"for {k} of them")
        print(f"  {info['skipped']}", flush=True)
    # Start joblib's worker pool untimed: a C sweep reuses it, so its start-up is not a fit cost.
    Parallel(n_jobs=n_jobs)(delayed(abs)(-i) for i in range(n_jobs))
    rows = []
    for name, make in many_class_candidates(n_jobs, MANY_CLASSES_C).items():
        if info["skipped"] and "linear_svc" in name:
            continue
        row = {"classifier": name, "n": n, "n_classes": k, "C": MANY_CLASSES_C,
               **fit_once(make, X, y, X_test, y_test)}
        rows.append(row)
        print(f"  {k} classes n={n} {name:<24} fit {row['fit_s']:7.2f} s  "
              f"acc {row['test_accuracy']:.3f}", flush=True)
    base = next((r["fit_s"] for r in rows if r["classifier"] == "linear_svc"), None)
    for r in rows:
        r["speedup_vs_linear_svc"] = base / r["fit_s"] if base and r["fit_s"] > 0 else None
    return rows, info


def run_c_sensitivity(cfg: dict, sweep: list[dict], probes: dict[int, float]) -> list[dict]:
    """LinearSVC and logistic fit time against C at the smallest size (C=1 from the sweep).

    ``compare`` sweeps C over several decades; the large values are where the time goes. When
    the sweep skipped LinearSVC at C=1, its row carries the one-vs-rest probe time instead.
    """
    n = cfg["sizes"][0]
    X_all, y_all = deep_like_features(n + cfg["n_test"], 10, n_features=cfg["n_features"],
                                      seed=0)
    scaler = StandardScaler().fit(X_all[:n])
    X, X_test = scaler.transform(X_all[:n]), scaler.transform(X_all[-cfg["n_test"]:])
    y, y_test = y_all[:n], y_all[-cfg["n_test"]:]
    makers = {"linear_svc": lambda C: LinearSVC(dual="auto", C=C, max_iter=10_000,
                                                 random_state=0),
              "logistic_lbfgs": lambda C: LogisticRegression(C=C, solver="lbfgs",
                                                             max_iter=1_000)}
    rows = []
    for name, make in makers.items():
        for C in (0.01, 0.1):
            rows.append({"classifier": name, "n": n, "C": C,
                         **fit_once(lambda C=C, make=make: make(C), X, y, X_test, y_test)})
        at_one = next((r for r in sweep if r["classifier"] == name and r["n"] == n), None)
        if at_one is not None:
            rows.append({**at_one, "C": 1.0})
        elif name == "linear_svc" and n in probes:
            rows.append({"classifier": name, "n": n, "C": 1.0, "fit_s": None,
                         "one_vs_rest_subproblem_s": probes[n]})
    return rows


def run_blas_threads(cfg: dict) -> list[dict]:
    """Logistic regression (lbfgs, BLAS-bound) with 1 vs 2 BLAS threads at the second size."""
    n = cfg["sizes"][min(1, len(cfg["sizes"]) - 1)]
    X_all, y_all = deep_like_features(n + cfg["n_test"], 10, n_features=cfg["n_features"],
                                      seed=0)
    scaler = StandardScaler().fit(X_all[:n])
    X, X_test = scaler.transform(X_all[:n]), scaler.transform(X_all[-cfg["n_test"]:])
    rows = []
    for threads in (1, 2):
        rows.append({"classifier": "logistic_lbfgs", "n": n, "blas_threads": threads,
                     **fit_once(lambda: LogisticRegression(solver="lbfgs", max_iter=1_000),
                                X, y_all[:n], X_test, y_all[-cfg["n_test"]:],
                                blas_threads=threads)})
    rows[1]["slowdown_vs_1_thread"] = rows[1]["fit_s"] / rows[0]["fit_s"]
    return rows


def recommend(rows: list[dict], skipped: dict[str, str], many: list[dict],
              c_rows: list[dict], blas: list[dict], n_jobs: int) -> list[dict]:
    """Which classifier to pick when, from the measurements only."""
    table = []
    linear_rows = [r for r in rows if r["classifier"] != "rbf_svc"]
    by_n: dict[int, list[dict]] = {}
    for r in linear_rows:
        by_n.setdefault(r["n"], []).append(r)
    # Compare where the most linear classifiers were measured (the largest such n).
    compared_n = max(by_n, key=lambda n: (len(by_n[n]), n))
    linear = by_n[compared_n]
    best_acc = max(r["test_accuracy"] for r in linear)
    good = [r for r in linear if r["test_accuracy"] >= best_acc - ACCURACY_TIE]
    default = min(good, key=lambda r: r["fit_s"])
    others = ", ".join(f"{r['classifier']} {r['fit_s']:.2f} s (acc {r['test_accuracy']:.3f})"
                       for r in linear if r is not default)
    stopped = ", ".join(f"{name} stopped at n={max(r['n'] for r in by_clf)}"
                        for name in skipped if name != "rbf_svc"
                        for by_clf in [[r for r in linear_rows if r["classifier"] == name]]
                        if by_clf)
    table.append({
        "situation": "10 classes, any n",
        "pick": default["classifier"],
        "why": f"at n={compared_n} the fastest linear fit within {ACCURACY_TIE:.0%} of the best "
               f"linear accuracy: {default['fit_s']:.2f} s, acc {default['test_accuracy']:.3f}"
               + (f"; {others}" if others else "") + (f"; {stopped} (time limits)"
                                                      if stopped else ""),
    })
    linear_sizes = {r["n"] for r in linear_rows}
    rbf = [r for r in rows if r["classifier"] == "rbf_svc" and r["n"] in linear_sizes]
    if rbf:
        top = max(rbf, key=lambda r: r["n"])
        same_n = [r for r in linear_rows if r["n"] == top["n"]]
        lin_best = max(same_n, key=lambda r: r["test_accuracy"])
        gain = top["test_accuracy"] - lin_best["test_accuracy"]
        limit_note = skipped.get("rbf_svc", "no size skipped")
        table.append({
            "situation": f"best accuracy, n <= {top['n']}",
            "pick": "rbf_svc" if gain > ACCURACY_TIE / 2 else lin_best["classifier"],
            "why": f"at n={top['n']} RBF SVC acc {top['test_accuracy']:.3f} in "
                   f"{top['fit_s']:.1f} s vs {lin_best['classifier']} "
                   f"{lin_best['test_accuracy']:.3f} in "
                   f"{lin_best['fit_s']:.2f} s; RBF {limit_note}",
        })
    if many:
        k = many[0]["n_classes"]
        best = max(r["test_accuracy"] for r in many)
        fast = min((r for r in many if r["test_accuracy"] >= best - ACCURACY_TIE),
                   key=lambda r: r["fit_s"])
        single = next((r for r in many if r["classifier"] == "linear_svc"), None)
        table.append({
            "situation": f"{k} classes (n={many[0]['n']})",
            "pick": fast["classifier"],
            "why": f"fastest within {ACCURACY_TIE:.0%} of the best accuracy: {fast['fit_s']:.2f} s,"
                   f" acc {fast['test_accuracy']:.3f}; single-thread LinearSVC "
                   + (f"{single['fit_s']:.2f} s" if single else "skipped (too slow)"),
        })
        ovr = next((r for r in many if r["classifier"].startswith("ovr_linear_svc")), None)
        if ovr is not None and ovr["speedup_vs_linear_svc"]:
            table.append({
                "situation": f"hinge-loss SVM wanted, many classes, {n_jobs} cores",
                "pick": ovr["classifier"] if ovr["speedup_vs_linear_svc"] > 1 else "linear_svc",
                "why": f"OneVsRestClassifier(LinearSVC, n_jobs={n_jobs}) is "
                       f"{ovr['speedup_vs_linear_svc']:.2f}x LinearSVC's own one-thread OvR at "
                       f"{k} classes with the same models",
            })
    svc_c = sorted((r for r in c_rows if r["classifier"] == "linear_svc"), key=lambda r: r["C"])
    if len(svc_c) >= 2:
        lo, hi = svc_c[0], svc_c[-1]
        if hi["fit_s"] is None:  # the C=1 fit was skipped: one sub-problem alone was measured
            sub = hi["one_vs_rest_subproblem_s"]
            steep = sub >= lo["fit_s"]  # one sub-problem outlasts a whole low-C fit
            detail = (f"at C={hi['C']:g} one of its 10 one-vs-rest problems alone took "
                      f"{sub:.2f} s (the whole fit was skipped)")
        else:
            steep = hi["fit_s"] >= 5 * lo["fit_s"]
            detail = (f"{hi['fit_s']:.2f} s at C={hi['C']:g} (acc {hi['test_accuracy']:.3f}, "
                      f"{hi['n_iter']} iterations)")
        table.append({
            "situation": "LinearSVC in a C sweep",
            "pick": "few large C values (they cost the most)" if steep else "any C grid",
            "why": f"at n={lo['n']} a whole fit takes {lo['fit_s']:.2f} s at C={lo['C']:g} "
                   f"(acc {lo['test_accuracy']:.3f}); {detail}",
        })
    if len(blas) == 2:
        slow = blas[1]["slowdown_vs_1_thread"]
        table.append({
            "situation": "lbfgs logistic regression on a 2-core machine",
            "pick": "1 BLAS thread per fit (threadpool_limits), parallel fits via n_jobs"
            if slow > 1.2 else "default BLAS threads",
            "why": f"at n={blas[0]['n']} 2 BLAS threads took {blas[1]['fit_s']:.2f} s vs "
                   f"{blas[0]['fit_s']:.2f} s with 1 ({slow:.1f}x)",
        })
    return table


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    cfg = dict(SETTINGS[args.mode])
    if args.time_budget:  # run_all's budget for this script: leave room for the rest
        cfg["budget_s"] = min(cfg["budget_s"], 0.5 * args.time_budget)
        cfg["many_limit_s"] = min(cfg["many_limit_s"], 0.15 * args.time_budget)
    n_jobs = 2
    started = time.perf_counter()
    print(f"10 classes, {cfg['n_features']} features, sizes {list(cfg['sizes'])}", flush=True)
    rows, skipped, probes = run_sweep(cfg, n_jobs, started)
    print(f"C sensitivity at n={cfg['sizes'][0]}", flush=True)
    c_rows = run_c_sensitivity(cfg, rows, probes)
    print(f"{cfg['many_classes']} classes at n={cfg['many_n']}", flush=True)
    many, many_info = run_many_classes(cfg, n_jobs)
    exponents = {name: scaling_exponent([r for r in rows if r["classifier"] == name])
                 for name in classifiers()}
    blas = run_blas_threads(cfg)
    table = recommend(rows, skipped, many, c_rows, blas, n_jobs)

    common.print_table("Fit time vs n (10 classes)", rows,
                       ["classifier", "n", "fit_s", "n_iter", "converged", "test_accuracy"])
    for name, why in skipped.items():
        print(f"  {name}: {why}")
    common.print_table("lbfgs logistic regression: BLAS threads", blas,
                       ["classifier", "n", "blas_threads", "fit_s", "slowdown_vs_1_thread"])
    common.print_table("C sensitivity", c_rows,
                       ["classifier", "n", "C", "fit_s", "n_iter", "converged", "test_accuracy",
                        "one_vs_rest_subproblem_s"])
    common.print_table(f"{cfg['many_classes']} classes", many,
                       ["classifier", "n", "fit_s", "speedup_vs_linear_svc", "test_accuracy"])
    if many_info["skipped"]:
        print(f"  {many_info['skipped']}")
    common.print_table("Which to pick when", table, ["situation", "pick", "why"])

    largest = max(r["n"] for r in rows)
    fit_at = {r["classifier"]: r["fit_s"] for r in rows if r["n"] == largest}
    ref = fit_at.get("logistic_lbfgs")
    headline: dict = {"largest n fitted (10 classes)": largest}
    for name, t in fit_at.items():
        headline[f"{name} fit s at n={largest}"] = t
        if ref and name != "logistic_lbfgs":
            headline[f"{name} / logistic_lbfgs fit-time ratio at n={largest}"] = t / ref
    for r in many:
        if r["classifier"] != "linear_svc" and r["speedup_vs_linear_svc"] is not None:
            headline[f"{r['n_classes']}-class {r['classifier']} speedup vs linear_svc"] = \
                r["speedup_vs_linear_svc"]
    path = common.write_json(NAME, {
        "mode": args.mode,
        "config": {**cfg, "n_classes": 10, "blas_threads": BLAS_THREADS, "latent_dim": LATENT_DIM,
                   "n_jobs": n_jobs, "generator": "deep_like_features (latent Gaussian class "
                   "means -> random linear map -> noise -> ReLU), StandardScaler"},
        "results": {"fit_vs_n": rows, "skipped": skipped, "scaling_exponent": exponents,
                    "many_classes": many, "many_classes_probe": many_info,
                    "c_sensitivity": c_rows, "blas_threads": blas},
        "headline": headline,
        "recommendations": [f"{r['situation']}: {r['pick']} ({r['why']})" for r in table],
        "recommendation_table": table,
        "elapsed_s": time.perf_counter() - started,
    }, args.out_dir)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
