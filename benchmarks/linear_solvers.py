"""featclf.linear's torch solvers vs scikit-learn's on deep-feature-like matrices, in one run.

For 50k x 512 standardised features with 10 and 100 classes (``--quick``: 10k rows) it times,
side by side: one fit at C=0.1 of ``LogisticRegression(lbfgs)``, ``LinearSVC`` (liblinear,
one-vs-rest), ``TorchLogisticRegression`` and ``TorchLinearSVC``; and the whole 45-value probe
grid (C from 1e-6 to 1e5, :data:`featclf.linear.PROBE_GRID`) fitted warm-started by
:func:`featclf.linear.regularization_path`, for both torch classifiers. Held-out accuracy for
every fit (and the best along each path). scikit-learn's grids are not run: 45 LinearSVC fits
at 100 classes take hours here; nothing is extrapolated. The limit featclf's numbers are ratios
of is scikit-learn's own solver on the same matrix, in the same run. The GPU cases (200k and
1M x 2048 x 1000 classes, float32 on CUDA; the target: 1M in <= 30 s) run only on a GPU and
are recorded as skipped on a CPU; ``--gpu-only`` runs them alone (``make bench-gpu``, into
``artifacts/benchmarks/gpu/``; with ``--case``, the cases given), and ``--gpu-device cpu``
runs that path on the CPU, to check the script where no GPU is lent.

C=0.1 for the single fits is mid-grid, where liblinear converges fastest (classifier_fit.py's
many-class case uses it too): the hardest LinearSVC time for the grid to beat.

The JSON names the kernels that ran: threadpoolctl's view (NumPy's BLAS, which scikit-learn
uses, and OpenMP) and torch's own (``torch.__config__``: MKL, statically linked, which
threadpoolctl cannot see), with the thread counts of each.

Run: ``python benchmarks/linear_solvers.py [--quick | --smoke] [--case NxDxK ...]
[--gpu-only [--gpu-device DEV]] [--out-dir DIR]`` (``--case 50000x512x100``: only that CPU
case, e.g. the target's, when time is short).
"""

from __future__ import annotations

import re
import sys
import time
import warnings

import common
import numpy as np
import torch
from classifier_fit import deep_like_features
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from threadpoolctl import threadpool_info, threadpool_limits

from featclf.linear import PROBE_GRID, TorchLinearSVC, TorchLogisticRegression, regularization_path

NAME = "linear_solvers"
C_ONE = 0.1
# scikit-learn's fits run with one BLAS thread, as featclf.compare runs them (lbfgs on these
# matrices is slower with 2 OpenBLAS threads on 2 cores: classifier_fit.json).
SKLEARN_BLAS_THREADS = 1
# torch's fits run with one thread too: liblinear is single-threaded, so the ratios compare
# the algorithms, not the cores, and do not depend on what else runs on a shared machine
# (on 2 busy cores a 2-thread OpenMP team is slower than one thread: measured 0.08 vs 0.16 s
# per gradient at 10k x 512 x 100). On idle cores torch's products scale with the threads.
TORCH_THREADS = 1

SETTINGS = {
    "full": dict(cases=[(50_000, 512, 10), (50_000, 512, 100)], n_test=10_000,
                 grid=PROBE_GRID, gpu_cases=[(200_000, 2048, 1000), (1_000_000, 2048, 1000)]),
    "quick": dict(cases=[(10_000, 512, 10), (10_000, 512, 100)], n_test=5_000,
                  grid=PROBE_GRID, gpu_cases=[(50_000, 2048, 1000)]),
    "smoke": dict(cases=[(600, 32, 5)], n_test=300, grid=PROBE_GRID[::5],
                  gpu_cases=[(400, 16, 4)]),
}


def kernels() -> dict:
    """Which BLAS / threading libraries ran, and with how many threads."""
    config = torch.__config__.show()
    blas = re.search(r"BLAS_INFO=(\w+)", config)
    mkl = re.search(r"Math Kernel Library Version ([^\n]+)", config)
    return {
        "threadpoolctl": [{k: lib.get(k) for k in ("user_api", "internal_api", "version",
                                                    "num_threads", "architecture", "prefix")}
                          for lib in threadpool_info()],  # fmt: skip
        "torch_blas": blas.group(1) if blas else None,
        "torch_mkl": mkl.group(1).strip() if mkl else None,
        "torch_parallel_backend": re.search(r"ATen parallel backend: (\w+)",
                                            torch.__config__.parallel_info()).group(1),
        "torch_threads_default": torch.get_num_threads(),
        "torch_threads_used": TORCH_THREADS,
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "sklearn_blas_threads": SKLEARN_BLAS_THREADS,
    }


def timed_fit(estimator, X, y, X_test, y_test) -> dict:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        start = time.perf_counter()
        estimator.fit(X, y)
        seconds = time.perf_counter() - start
    n_iter = getattr(estimator, "n_iter_", None)
    return {"fit_s": seconds, "test_accuracy": float(estimator.score(X_test, y_test)),
            "n_iter": int(np.max(n_iter)) if n_iter is not None else None,
            "converged": not any(issubclass(w.category, ConvergenceWarning) for w in caught)}


def _standardised(X: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test rows scaled by the training rows' statistics, in float32 blocks (at
    1M x 2048, StandardScaler's float64 copies would need 50 GB)."""
    mean = X[:n].mean(axis=0, dtype=np.float64)
    scale = X[:n].std(axis=0, dtype=np.float64)
    scale[scale == 0] = 1.0
    for start in range(0, len(X), 65536):
        block = X[start:start + 65536]
        block -= mean.astype(np.float32)
        block /= scale.astype(np.float32)
    return X[:n], X[n:]


def run_case(n: int, d: int, k: int, cfg: dict, device: str, *, gpu_case: bool = False
             ) -> dict:
    """One case: scikit-learn's fits beside featclf's (a CPU case), or featclf's alone on
    ``device`` (a GPU case: ``gpu_case``)."""
    X, y = deep_like_features(n + cfg["n_test"], k, n_features=d, seed=0)
    if not gpu_case:
        scaler = StandardScaler().fit(X[:n])
        X_train = scaler.transform(X[:n]).astype(np.float32)
        X_test = scaler.transform(X[n:]).astype(np.float32)
    else:
        X_train, X_test = _standardised(X, n)
    y_train, y_test = y[:n], y[n:]
    out: dict = {"n": n, "n_features": d, "n_classes": k, "n_test": cfg["n_test"], "C": C_ONE,
                 "device": device}
    torch_est = {
        "torch_logistic": TorchLogisticRegression(C=C_ONE, device=device,
                                                  n_threads=TORCH_THREADS),
        "torch_linear_svc": TorchLinearSVC(C=C_ONE, device=device, n_threads=TORCH_THREADS),
    }
    fits = {}
    if not gpu_case:
        with threadpool_limits(limits=SKLEARN_BLAS_THREADS, user_api="blas"):
            fits["sklearn_logistic_lbfgs"] = timed_fit(
                LogisticRegression(C=C_ONE, solver="lbfgs", max_iter=1000), X_train, y_train,
                X_test, y_test)
            print(f"  sklearn logistic: {fits['sklearn_logistic_lbfgs']}", flush=True)
            fits["sklearn_linear_svc"] = timed_fit(
                LinearSVC(C=C_ONE, dual="auto", max_iter=10_000, random_state=0), X_train,
                y_train, X_test, y_test)
            print(f"  sklearn LinearSVC: {fits['sklearn_linear_svc']}", flush=True)
    for name, est in torch_est.items():
        fits[name] = timed_fit(est, X_train, y_train, X_test, y_test)
        print(f"  {name}: {fits[name]}", flush=True)
    paths = {}
    runs = dict(torch_est)
    threads = torch.get_num_threads()
    if threads > TORCH_THREADS and not gpu_case:
        # featclf's default: all of torch's threads for a large fit (LinearSVC has one).
        runs["torch_linear_svc_all_threads"] = TorchLinearSVC(device=device)
    for name, est in runs.items():
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ConvergenceWarning)
            path = regularization_path(est, X_train, y_train, cfg["grid"])
        seconds = time.perf_counter() - start
        acc = [float(s.estimator.score(X_test, y_test)) for s in path]
        best = int(np.argmax(acc))
        one_fit = fits[name.removesuffix("_all_threads")]["fit_s"]  # (the one-thread fit)
        paths[name] = {
            "threads": est.n_threads or threads,
            "grid_size": len(path), "C_min": path[0].C, "C_max": path[-1].C,
            "total_s": seconds, "total_iterations": sum(s.n_iter for s in path),
            "iterations": [s.n_iter for s in path], "step_s": [s.seconds for s in path],
            # Newton-CG's work (one-vs-rest SVM): Hessian-vector products, all classes summed
            "hessian_vector_products": [getattr(s.estimator, "_n_products", None) for s in path],
            "converged": sum(s.converged for s in path), "test_accuracy": acc,
            "best_C": path[best].C, "best_test_accuracy": acc[best],
            "one_fit_s": one_fit, "path_over_one_fit": seconds / one_fit,
        }  # fmt: skip
        print(f"  {name} path of {len(path)} C: {seconds:.1f} s, "
              f"{paths[name]['total_iterations']} iterations, best accuracy {acc[best]:.4f} "
              f"at C={path[best].C:g}", flush=True)
    out["fits"], out["paths"] = fits, paths
    ratios = {}
    if "sklearn_linear_svc" in fits:
        svc = fits["sklearn_linear_svc"]["fit_s"]
        ratios["torch_svm_path_over_one_linear_svc_fit"] = (
            paths["torch_linear_svc"]["total_s"] / svc)
        ratios["torch_logistic_path_over_one_linear_svc_fit"] = (
            paths["torch_logistic"]["total_s"] / svc)
        if "torch_linear_svc_all_threads" in paths:
            ratios["torch_svm_path_all_threads_over_one_linear_svc_fit"] = (
                paths["torch_linear_svc_all_threads"]["total_s"] / svc)
        ratios["torch_svm_one_fit_speedup_vs_linear_svc"] = svc / fits["torch_linear_svc"]["fit_s"]
        lr = fits["sklearn_logistic_lbfgs"]["fit_s"]
        ratios["torch_logistic_one_fit_speedup_vs_lbfgs"] = lr / fits["torch_logistic"]["fit_s"]
        ratios["torch_logistic_path_over_one_lbfgs_fit"] = paths["torch_logistic"]["total_s"] / lr
        ratios["accuracy_points_torch_minus_sklearn_logistic"] = 100 * (
            fits["torch_logistic"]["test_accuracy"]
            - fits["sklearn_logistic_lbfgs"]["test_accuracy"])
        ratios["accuracy_points_torch_minus_sklearn_svm"] = 100 * (
            fits["torch_linear_svc"]["test_accuracy"] - fits["sklearn_linear_svc"]["test_accuracy"])
    out["ratios"] = ratios
    return out


def _take_cases(argv: list[str]) -> tuple[list[str], list[tuple[int, int, int]] | None]:
    """Remove ``--case NxDxK`` options (common.parse_args does not know them)."""
    rest, cases = [], []
    items = iter(argv)
    for item in items:
        if item == "--case":
            cases.append(tuple(int(v) for v in next(items).lower().split("x")))
        else:
            rest.append(item)
    return rest, cases or None


def _take_gpu_options(argv: list[str]) -> tuple[list[str], bool, str]:
    """Remove ``--gpu-only`` and ``--gpu-device DEV`` (common.parse_args does not know them)."""
    rest, gpu_only, device = [], False, "cuda"
    items = iter(argv)
    for item in items:
        if item == "--gpu-only":
            gpu_only = True
        elif item == "--gpu-device":
            device = next(items)
        else:
            rest.append(item)
    return rest, gpu_only, device


def main(argv: list[str] | None = None) -> int:
    argv, only = _take_cases(sys.argv[1:] if argv is None else list(argv))
    argv, gpu_only, gpu_device = _take_gpu_options(argv)
    args = common.parse_args(__doc__.splitlines()[0], argv)
    cfg = dict(SETTINGS[args.mode])
    if only:
        cfg["cases"], cfg["gpu_cases"] = ([], only) if gpu_only else (only, [])
    elif gpu_only:
        cfg["cases"] = []
    started = time.perf_counter()
    # The first fit in a process pays torch's one-time start-up; keep it out of the timings.
    TorchLogisticRegression(device="cpu").fit(np.eye(4), [0, 1, 0, 1])
    cases = []
    for n, d, k in cfg["cases"]:
        print(f"{n} x {d}, {k} classes (CPU)", flush=True)
        cases.append(run_case(n, d, k, cfg, "cpu"))
    skipped = {}
    for n, d, k in cfg["gpu_cases"] if gpu_only or args.mode != "smoke" else []:
        if gpu_device == "cpu" or torch.cuda.is_available():
            print(f"{n} x {d}, {k} classes ({gpu_device})", flush=True)
            cases.append(run_case(n, d, k, cfg, gpu_device, gpu_case=True))
        else:
            skipped[f"{n}x{d}x{k}"] = "no CUDA device here; this case runs on a GPU only"
    rows = [{"case": f"{c['n']}x{c['n_features']}x{c['n_classes']}", "solver": name, **fit}
            for c in cases for name, fit in c["fits"].items()]  # fmt: skip
    common.print_table("One fit at C=0.1", rows,
                       ["case", "solver", "fit_s", "n_iter", "converged", "test_accuracy"])
    path_rows = [{"case": f"{c['n']}x{c['n_features']}x{c['n_classes']}", "solver": name,
                  **{k: p[k] for k in ("threads", "grid_size", "total_s", "total_iterations",
                                       "path_over_one_fit", "best_C", "best_test_accuracy")}}
                 for c in cases for name, p in c["paths"].items()]  # fmt: skip
    common.print_table("Whole grid, warm-started", path_rows)
    headline = {}
    for c in cases:
        for key, value in c["ratios"].items():
            headline[f"{c['n']}x{c['n_features']}x{c['n_classes']} {key}"] = value
    for key, value in headline.items():
        print(f"  {key}: {value:.3g}")
    path = common.write_json(NAME, {
        "mode": args.mode,
        "config": {"cases": cfg["cases"], "n_test": cfg["n_test"], "grid": list(cfg["grid"]),
                   "C_one_fit": C_ONE, "generator": "classifier_fit.deep_like_features "
                   "(latent Gaussian class means -> random linear map -> noise -> ReLU), "
                   "StandardScaler fitted on the training rows", "dtype": "float32"},
        "kernels": kernels(),
        "results": {"cases": cases, "skipped": skipped},
        "headline": headline,
        "target": "the whole 45-value grid at 50k x 512 x 100 classes in less time than one "
                  "LinearSVC fit: headline '50000x512x100 torch_svm_path_over_one_linear_svc_fit'"
                  " < 1",
        "elapsed_s": time.perf_counter() - started,
    }, args.out_dir)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
