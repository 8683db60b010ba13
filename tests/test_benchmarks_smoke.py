"""The benchmark scripts run end to end at tiny sizes and write the JSON run_all.py reads.

Each script runs as ``make bench`` runs it (a subprocess, ``python benchmarks/<name>.py``) with
``--smoke --out-dir <tmp>``. Nothing here asserts a time: the numbers at smoke sizes are
meaningless; the tests check that the scripts run and that their JSON has the documented shape.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parent.parent / "benchmarks"
COMMON_KEYS = {"benchmark", "created", "machine", "mode", "headline"}
MACHINE_KEYS = {"platform", "python", "cpu_count", "torch", "torchvision", "sklearn", "device",
                "gpu"}


def run_benchmark(name: str, out_dir: Path, *extra: str, timeout: float = 240) -> None:
    proc = subprocess.run([sys.executable, str(BENCH / f"{name}.py"), *extra, "--out-dir",
                           str(out_dir)], capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"


@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory) -> Path:
    """One smoke run of each script owned by this suite, into one directory."""
    out = tmp_path_factory.mktemp("bench")
    for name in ("decode_throughput", "classifier_fit", "compare_phases", "extract_throughput",
                 "store_hit", "rerun_walk", "linear_solvers"):
        run_benchmark(name, out, "--smoke")
    return out


def read(out: Path, name: str) -> dict:
    doc = json.loads((out / f"{name}.json").read_text())
    assert COMMON_KEYS <= set(doc), f"{name}.json lacks {COMMON_KEYS - set(doc)}"
    assert MACHINE_KEYS <= set(doc["machine"])
    assert doc["benchmark"] == name and doc["mode"] == "smoke"
    return doc


@pytest.mark.slow
def test_decode_throughput_names_a_bottleneck_per_model_and_worker_count(smoke_dir):
    doc = read(smoke_dir, "decode_throughput")
    res = doc["results"]
    assert {"pillow+featclf", "torchvision.io+v2", "pillow decode only",
            "torchvision.io decode only"} <= set(res["decode"])
    assert all(v["ms_per_img"] > 0 for v in res["decode"].values() if isinstance(v, dict))
    assert set(res["forward"]) == {"alexnet", "resnet18", "resnet50"}
    combos = {(r["model"], r["decode_path"], r["workers"]) for r in res["bottleneck"]}
    assert len(combos) == 3 * 2 * 2
    assert {r["bottleneck"] for r in res["bottleneck"]} <= {"decode", "forward"}
    assert {r["workers"] for r in res["end_to_end"]} == {0, 2}
    assert doc["recommendations"] and doc["config"]["decode_threads"] == 1
    photos = res["camera_photos"]  # full-size decode vs jpeg_draft on large JPEGs
    assert photos["full_decode_ms_per_img"] > 0 and photos["jpeg_draft_ms_per_img"] > 0
    assert {photos["full_decode_resnet18_bottleneck"],
            photos["jpeg_draft_resnet18_bottleneck"]} <= {"decode", "forward"}


@pytest.mark.slow
def test_classifier_fit_records_every_classifier_and_a_recommendation_table(smoke_dir):
    doc = read(smoke_dir, "classifier_fit")
    res = doc["results"]
    fitted = {r["classifier"] for r in res["fit_vs_n"]}
    assert fitted == {"linear_svc", "logistic_lbfgs", "sgd_hinge", "rbf_svc"}
    assert all({"n", "fit_s", "test_accuracy", "converged"} <= set(r) for r in res["fit_vs_n"])
    assert {r["n"] for r in res["fit_vs_n"]} == set(doc["config"]["sizes"])
    assert any(r["classifier"].startswith("ovr_linear_svc") for r in res["many_classes"])
    assert all(r["speedup_vs_linear_svc"] > 0 for r in res["many_classes"])
    table = doc["recommendation_table"]
    assert table and all({"situation", "pick", "why"} <= set(r) for r in table)


@pytest.mark.slow
def test_compare_phases_splits_the_time_into_phases_or_records_why_not(smoke_dir):
    doc = read(smoke_dir, "compare_phases")
    if "skipped" in doc:  # featclf.compare missing: the skip must say so
        assert "featclf.compare" in doc["skipped"]
        return
    phases = {r["phase"]: r["seconds"] for r in doc["results"]["phases"]}
    assert {"training", "extraction", "report", "classifier:logistic"} <= set(phases)
    assert all(s >= 0 for s in phases.values())
    shares = sum(r["share"] for r in doc["results"]["phases"])
    assert shares == pytest.approx(1.0, abs=0.02)
    assert {r["classifier"] for r in doc["results"]["classifiers"]} == {"softmax", "logistic"}


@pytest.mark.slow
def test_extract_throughput_sweeps_batches_and_names_the_jpeg_bottleneck(smoke_dir):
    doc = read(smoke_dir, "extract_throughput")
    res = doc["results"]
    memory = res["in_memory"]
    assert {r["batch_size"] for r in memory} == set(doc["config"]["cpu_batches"])
    for r in memory:
        assert r["bare_img_per_s"] > 0 and r["ratio_tensor"] > 0 and r["ratio_uint8"] > 0
        assert r["max_abs_diff_vs_bare"] < 1e-3  # the extractor computes what the bare net does
    jpeg = res["jpeg_folder"]
    assert [r["workers"] for r in jpeg] == list(doc["config"]["workers"])
    for r in jpeg:
        assert r["limit_img_per_s"] <= min(r["bare_img_per_s"], r["decode_ceiling_img_per_s"])
        assert r["bottleneck"] and r["ratio_vs_limit"] > 0 and r["max_abs_diff_vs_bare"] < 1e-3
    assert any("JPEG" in k for k in doc["headline"]) and doc["recommendations"]


@pytest.mark.slow
def test_store_hit_compares_with_numpy_on_the_same_bytes(smoke_dir):
    doc = read(smoke_dir, "store_hit")
    assert {"hit/np.load first read", "hit/np.load reopened", "open ms",
            "write/np.save"} <= set(doc["headline"])
    assert all(v > 0 for v in doc["headline"].values() if isinstance(v, int | float))
    for row in doc["results"]["scale"]:  # each call timed after the wait for quiet and without
        assert len(row["times_s"]["hit"]) == len(row["times_s"]["hit_as_started"])
        assert {"hit", "np_load"} <= set(row["quiet_wait_ms"])
        assert "hit_as_started" not in row["quiet_wait_ms"]
        assert row["hit_as_started_over_np_load_as_started"] == pytest.approx(
            row["hit_as_started_ms"] / row["np_load_as_started_ms"])


@pytest.mark.slow
def test_run_all_plots_the_extraction_sweep_with_its_jpeg_points(smoke_dir, tmp_path):
    for path in smoke_dir.glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text())
    run_benchmark("run_all", tmp_path, "--report-only", timeout=120)
    readme = (tmp_path / "README.md").read_text()
    assert "From a folder of 500x375 JPEGs" in readme and "ratio_vs_limit" in readme
    assert "![throughput vs batch](throughput_vs_batch.png)" in readme
    assert (tmp_path / "throughput_vs_batch.png").stat().st_size > 0


@pytest.mark.slow
def test_run_all_report_summarises_every_json_and_plots_fit_time(smoke_dir, tmp_path):
    # A foreign benchmark's JSON with a batch sweep, shaped unlike ours: read generically.
    foreign = {"benchmark": "extract_throughput", "mode": "smoke", "machine": {},
               "results": {"sweep": [{"model": "resnet18", "batch_size": b, "img_per_s": 10.0 * b}
                                     for b in (1, 8, 32)]},
               "headline": {"extractor/bare forward": 0.97}}
    for path in smoke_dir.glob("*.json"):
        (tmp_path / path.name).write_text(path.read_text())
    (tmp_path / "extract_throughput.json").write_text(json.dumps(foreign))
    run_benchmark("run_all", tmp_path, "--report-only", timeout=120)
    readme = (tmp_path / "README.md").read_text()
    for name in ("decode_throughput", "classifier_fit", "compare_phases", "extract_throughput"):
        assert f"## {name}" in readme
    assert "extractor/bare forward" in readme and "Which to pick when" in readme
    assert (tmp_path / "fit_time_vs_n.png").stat().st_size > 0
    assert (tmp_path / "throughput_vs_batch.png").stat().st_size > 0


@pytest.mark.slow
def test_cli_startup_times_help_against_python_and_torch_and_reports_it(tmp_path):
    run_benchmark("cli_startup", tmp_path, "--smoke", timeout=300)
    doc = read(tmp_path, "cli_startup")
    timings = doc["results"]["timings"]
    assert set(timings) == {"python -c pass", "featclf --help", "featclf store info",
                            "python -c 'import torch'"}
    assert all(t["repeats"] == 1 and t["median_s"] > 0 and t["cpu_median_s"] >= 0
               for t in timings.values())
    # The imports are facts, not timings: --help and store info load none of the heavy three.
    imports = doc["results"]["imports"]
    assert set(imports) == {"featclf --help", "featclf store info"}
    assert all(not {"torch", "torchvision", "sklearn"} & set(v) for v in imports.values())
    assert doc["headline"]["--help imports"] == "no torch/torchvision/sklearn"
    assert doc["headline"]["--help over import torch"] == pytest.approx(
        timings["featclf --help"]["median_s"] / timings["python -c 'import torch'"]["median_s"])
    run_benchmark("run_all", tmp_path, "--report-only", timeout=120)
    readme = (tmp_path / "README.md").read_text()
    assert "## cli_startup" in readme and "Start-up of a fresh interpreter" in readme


@pytest.mark.slow
def test_rerun_walk_counts_opens_and_times_the_rerun_against_a_stat_walk(smoke_dir):
    doc = read(smoke_dir, "rerun_walk")
    res = doc["results"]
    # Every file opened once by the first run and none by the cached rerun (counted opens).
    assert res["first_run"]["image_opens"] == res["files"] and res["rerun_image_opens"] == 0
    timings = res["timings"]
    assert res["rerun_over_stat_walk"] == pytest.approx(
        timings["cached_rerun"]["median_s"] / timings["stat_walk"]["median_s"])
    assert res["read_and_hash_over_rerun"] == pytest.approx(
        timings["read_and_hash"]["median_s"] / timings["cached_rerun"]["median_s"])


@pytest.mark.slow
def test_linear_solvers_time_one_fit_and_the_grid_against_scikit_learn(smoke_dir):
    doc = read(smoke_dir, "linear_solvers")
    (case,) = doc["results"]["cases"]
    fits, paths = case["fits"], case["paths"]
    assert set(fits) == {"sklearn_logistic_lbfgs", "sklearn_linear_svc", "torch_logistic",
                         "torch_linear_svc"}
    for name, path in paths.items():
        assert len(path["iterations"]) == len(path["test_accuracy"]) == path["grid_size"]
        assert path["total_s"] >= sum(path["step_s"])  # the grid's time is its steps' and more
        one_fit = fits[name.removesuffix("_all_threads")]["fit_s"]
        assert path["path_over_one_fit"] == pytest.approx(path["total_s"] / one_fit)
    ratios = case["ratios"]
    assert ratios["torch_svm_path_over_one_linear_svc_fit"] == pytest.approx(
        paths["torch_linear_svc"]["total_s"] / fits["sklearn_linear_svc"]["fit_s"])
    # The same C, the same data: both solvers agree on the test accuracy to half a point.
    assert abs(fits["torch_logistic"]["test_accuracy"]
               - fits["sklearn_logistic_lbfgs"]["test_accuracy"]) <= 0.005
    assert {"threadpoolctl"} <= set(doc["kernels"])


@pytest.mark.slow
def test_the_gpu_solver_cases_run_alone_and_can_be_checked_on_the_cpu(tmp_path):
    # `make bench-gpu` runs `linear_solvers.py --gpu-only`: where no GPU is lent, its cases are
    # recorded as skipped, and `--gpu-device cpu` runs the very same path here.
    run_benchmark("linear_solvers", tmp_path / "none", "--smoke", "--gpu-only")
    doc = read(tmp_path / "none", "linear_solvers")
    assert doc["results"]["cases"] == [] and list(doc["results"]["skipped"]) == ["400x16x4"]
    run_benchmark("linear_solvers", tmp_path / "cpu", "--smoke", "--gpu-only", "--gpu-device",
                  "cpu")
    (case,) = read(tmp_path / "cpu", "linear_solvers")["results"]["cases"]
    assert (case["n"], case["n_features"], case["n_classes"]) == (400, 16, 4)
    assert set(case["fits"]) == {"torch_logistic", "torch_linear_svc"}  # featclf's alone
    assert all(fit["test_accuracy"] > 0.5 for fit in case["fits"].values())  # chance: 0.25
    assert set(case["paths"]) == {"torch_logistic", "torch_linear_svc"}


def test_gpu_cases_are_standardised_in_place_by_the_training_rows():
    sys.path.insert(0, str(BENCH))
    try:
        from linear_solvers import _standardised
    finally:
        sys.path.remove(str(BENCH))
    rng = np.random.default_rng(0)
    X = (rng.normal(3.0, 2.0, size=(300, 5)) * [1, 2, 3, 4, 0]).astype(np.float32)
    raw = X.copy()
    train, test = _standardised(X, 200)
    assert train.base is not None and np.shares_memory(train, X)  # no copy of the matrix
    mean, std = raw[:200].mean(axis=0), raw[:200].std(axis=0)
    std[std == 0] = 1.0  # (a constant column stays as it is, centred)
    np.testing.assert_allclose(train, (raw[:200] - mean) / std, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(test, (raw[200:] - mean) / std, rtol=1e-5, atol=1e-5)
