"""Run every benchmark script, each in its own process with a time budget, then summarise.

``make bench`` runs this. Every ``benchmarks/*.py`` except ``common.py`` and this file runs in
sequence as ``python <script> --quick`` (``--full`` drops ``--quick``), with a per-script
timeout and one deadline for the whole run (under 10 minutes on 2 cores by default). A script
that does not exist yet is skipped with a message. Then ``artifacts/benchmarks/README.md``
summarises the latest JSON of every script (whatever its JSON holds: its ``headline`` numbers
and ``recommendations``), with two plots:

* ``throughput_vs_batch.png``: from ``extract_throughput.json`` when it has a batch-size sweep;
* ``fit_time_vs_n.png``: classifier fit time vs samples, log-log, from ``classifier_fit.json``.

``--report-only`` rewrites the README and plots from the JSON already there.

Run: ``python benchmarks/run_all.py [--full] [--report-only] [--out-dir DIR]``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common

BENCH_DIR = Path(__file__).resolve().parent
NOT_SCRIPTS = {"common.py", "run_all.py"}
#: The suite of issue 11; a missing one is reported and skipped.
EXPECTED = ("decode_throughput", "extract_throughput", "store_hit", "rerun_walk",
            "compare_phases", "cli_startup", "classifier_fit", "linear_solvers")
#: Too long for the 10-minute quick run (scikit-learn's LinearSVC alone takes minutes at
#: 10k x 512 x 100 classes): run by hand, or with --full; their latest JSON is still summarised.
ONLY_FULL = {"linear_solvers": "python benchmarks/linear_solvers.py --case 50000x512x100"}
#: Run after every other script: it stops early by itself, so it takes whatever time is left.
RUN_LAST = ("classifier_fit",)
#: Seconds each script may take with --quick (scripts not named here get DEFAULT_BUDGET_S).
# About twice what each takes on 2 idle cores; they add up to more than the deadline, so when
# the machine is loaded every script gets a share (see QUICK_DEADLINE_S).
QUICK_BUDGET_S = {"decode_throughput": 80, "extract_throughput": 240, "store_hit": 70,
                  "compare_phases": 100, "ray_scaling": 70, "cli_startup": 60,
                  "classifier_fit": 150, "rerun_walk": 60}
DEFAULT_BUDGET_S = 90
#: The whole quick run ends within this many seconds (make bench < 10 min): each script's
#: timeout is its budget, or its budget's share of the time left when the budgets of the
#: scripts still to run add up to more than that.
QUICK_DEADLINE_S = 560
# Below this much time left, a script is not started at all.
MIN_START_S = 20
# Plot/README headline keys that mean "how fast": used to find a throughput in foreign JSON.
RATE_KEYS = ("img_per_s", "images_per_s", "img_s", "imgs_per_s", "throughput", "items_per_s")
BATCH_KEYS = ("batch_size", "batch")


def discover() -> list[str]:
    """Script names to run: the expected suite in order, then any others, then RUN_LAST."""
    found = sorted(p.stem for p in BENCH_DIR.glob("*.py") if p.name not in NOT_SCRIPTS)
    order = [n for n in EXPECTED if n in found] + [n for n in found if n not in EXPECTED]
    return [n for n in order if n not in RUN_LAST] + [n for n in order if n in RUN_LAST]


def run_script(name: str, *, mode_flags: list[str], out_dir: Path, timeout: float) -> dict:
    """Run one script in its own process group; kill the whole group on timeout."""
    cmd = [sys.executable, str(BENCH_DIR / f"{name}.py"), *mode_flags, "--out-dir", str(out_dir)]
    env = {**os.environ, common.TIME_BUDGET_ENV: f"{timeout:.0f}"}
    print(f"\n=== {name} (budget {timeout:.0f} s): {' '.join(cmd[1:])}", flush=True)
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, start_new_session=True)
    try:
        rc = proc.wait(timeout=timeout)
        status = "ok" if rc == 0 else f"failed (exit {rc})"
    except subprocess.TimeoutExpired:
        # The script's DataLoader/joblib/Ray workers are in its session: end them all.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        status = f"timed out after {timeout:.0f} s"
    seconds = time.perf_counter() - start
    print(f"=== {name}: {status} in {seconds:.1f} s", flush=True)
    return {"script": name, "status": status, "seconds": seconds}


def run_suite(args: argparse.Namespace) -> list[dict]:
    """Run the scripts within the budgets; return one status row per script."""
    names = discover()
    mode_flags = [] if args.full else ["--quick"]
    deadline = None if args.full else QUICK_DEADLINE_S
    started = time.perf_counter()
    rows = []
    for missing in (n for n in EXPECTED if n not in names):
        print(f"skipping {missing}: benchmarks/{missing}.py does not exist yet", flush=True)
        rows.append({"script": missing, "status": "skipped: script does not exist yet",
                     "seconds": 0.0})
    def budget_of(name: str) -> float:
        return float(args.per_script_timeout or
                     (3600 if args.full else QUICK_BUDGET_S.get(name, DEFAULT_BUDGET_S)))

    if not args.full:
        for name, command in ONLY_FULL.items():
            print(f"skipping {name} in the quick run: it takes longer; run `{command}`",
                  flush=True)
            rows.append({"script": name, "status": f"skipped (long): run `{command}`",
                         "seconds": 0.0})
        names = [n for n in names if n not in ONLY_FULL]
    for i, name in enumerate(names):
        budget = budget_of(name)
        if deadline is not None:
            left = deadline - (time.perf_counter() - started)
            if left < MIN_START_S:
                print(f"skipping {name}: only {left:.0f} s of the {deadline} s run budget left",
                      flush=True)
                rows.append({"script": name, "status": "skipped: run budget spent",
                             "seconds": 0.0})
                continue
            # Leave the scripts after this one their share of what is left.
            still_to_run = sum(budget_of(n) for n in names[i:])
            budget = min(budget, left * budget / max(still_to_run, left))
        rows.append(run_script(name, mode_flags=mode_flags, out_dir=args.out_dir,
                               timeout=budget))
    return rows


# --------------------------------------------------------------------------- reading results


def load_results(out_dir: Path) -> dict[str, dict]:
    """Every ``<name>.json`` in ``out_dir`` (except run_all's own), by benchmark name."""
    docs = {}
    order = {name: i for i, name in enumerate(EXPECTED)}
    paths = sorted(out_dir.glob("*.json"), key=lambda p: (order.get(p.stem, len(order)), p.stem))
    for path in paths:
        if path.stem == "run_all":
            continue
        try:
            docs[path.stem] = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            docs[path.stem] = {"unreadable": f"{path.name}: {exc}"}
    return docs


def numeric_leaves(obj: Any, prefix: str = "") -> list[tuple[str, float]]:
    """(dotted key, number) for every number in a nested JSON document."""
    out: list[tuple[str, float]] = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            out += numeric_leaves(value, f"{prefix}.{key}" if prefix else str(key))
    elif isinstance(obj, list):
        for i, value in enumerate(obj):
            out += numeric_leaves(value, f"{prefix}[{i}]")
    elif isinstance(obj, int | float) and not isinstance(obj, bool):
        out.append((prefix, float(obj)))
    return out


def headline_of(doc: dict) -> dict[str, Any]:
    """What to show of one benchmark: its ``headline``, else its ratio-like numbers."""
    if isinstance(doc.get("headline"), dict) and doc["headline"]:
        return doc["headline"]
    words = ("ratio", "speedup", "_over_", "/", "per_s", "img_s")
    found = [(k, v) for k, v in numeric_leaves(doc.get("results", doc))
             if any(w in k.lower() for w in words)]
    return dict(found[:12])


def record_lists(obj: Any) -> list[list[dict]]:
    """Every list of dicts (records) anywhere in a JSON document."""
    out: list[list[dict]] = []
    if isinstance(obj, list):
        if obj and all(isinstance(x, dict) for x in obj):
            out.append(obj)
        for x in obj:
            out += record_lists(x)
    elif isinstance(obj, dict):
        for value in obj.values():
            out += record_lists(value)
    return out


def series_label(record: dict, batch: str) -> str:
    """What tells one series of a sweep from another: the record's text fields."""
    return " ".join(str(v) for k, v in record.items() if isinstance(v, str) and k != batch)


def batch_sweep(doc: dict) -> tuple[str, str, list[dict]] | None:
    """(batch key, rate key, records) of the first batch-size sweep in ``doc``, if any.

    A sweep needs one series (same text fields, e.g. model and device) measured at two or more
    batch sizes; one batch size per device is not a sweep.
    """
    for records in record_lists(doc.get("results", doc)):
        keys = set().union(*(r.keys() for r in records))
        batch = next((k for k in BATCH_KEYS if k in keys), None)
        rate = next((k for k in sorted(keys) for w in RATE_KEYS if k == w or k.endswith(w)),
                    None)
        if not (batch and rate):
            continue
        sizes: dict[str, set] = {}
        for r in records:
            sizes.setdefault(series_label(r, batch), set()).add(r.get(batch))
        if any(len(v) >= 2 for v in sizes.values()):
            return batch, rate, records
    return None


# --------------------------------------------------------------------------- plots


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save_log_plot(plt, fig, ax, path: Path, *, title: str, legend_size: int) -> str:
    """Log y axis, title, grid and legend; save ``path`` and close the figure."""
    ax.set_yscale("log")
    ax.set_title(title)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=legend_size)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"wrote {path.name}"


def plot_extraction_sweep(doc: dict, path: Path) -> str | None:
    """extract_throughput's own layout: extractor (uint8 input) and bare forward img/s against
    batch size per model and device, JPEG-folder runs as single points. None: not that layout."""
    res = doc.get("results")
    rows = res.get("in_memory") if isinstance(res, dict) else None
    if not rows or len({r.get("batch_size") for r in rows}) < 2:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7.5, 4.8))
    colours = iter(plt.rcParams["axes.prop_cycle"].by_key()["color"] * 4)
    for key in dict.fromkeys((r["model"], r["device"]) for r in rows):
        pts = sorted((r["batch_size"], r["extractor_uint8_img_per_s"], r["bare_img_per_s"])
                     for r in rows if (r["model"], r["device"]) == key)
        colour = next(colours)
        xs = [p[0] for p in pts]
        ax.plot(xs, [p[1] for p in pts], marker="o", color=colour,
                label=f"{key[0]} {key[1]}: extractor, uint8 images")
        ax.plot(xs, [p[2] for p in pts], linestyle="--", color=colour, alpha=0.6,
                label=f"{key[0]} {key[1]}: bare forward")
        for j in (r for r in res.get("jpeg_folder") or [] if (r["model"], r["device"]) == key):
            ax.scatter([j["batch_size"]], [j["extractor_img_per_s"]], color=colour,
                       marker="^" if j["workers"] else "s", zorder=3,
                       label=f"{key[0]} {key[1]}: JPEG files, {j['workers']} workers")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("batch size")
    ax.set_ylabel("images / s")
    return _save_log_plot(plt, fig, ax, path, legend_size=7,
                          title=f"Extraction throughput vs batch size ({doc.get('mode', '?')} run)")


def plot_throughput_vs_batch(doc: dict, path: Path) -> str:
    """Throughput against batch size, one line per series; returns what was done."""
    own = plot_extraction_sweep(doc, path)
    if own is not None:
        return own
    sweep = batch_sweep(doc)
    if sweep is None:
        if path.exists():
            path.unlink()  # a plot from an older JSON would contradict the README
        return "skipped: extract_throughput.json has no batch-size sweep"
    batch, rate, records = sweep
    series: dict[str, list[tuple[float, float]]] = {}
    for r in records:
        if isinstance(r.get(batch), int | float) and isinstance(r.get(rate), int | float):
            series.setdefault(series_label(r, batch) or rate, []).append((r[batch], r[rate]))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for label, pts in sorted(series.items()):
        pts.sort()
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xscale("log", base=2)
    ax.set_xlabel(batch)
    ax.set_ylabel(rate)
    ax.set_title("Extraction throughput vs batch size")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return f"wrote {path.name}"


def plot_fit_time_vs_n(doc: dict, path: Path) -> str:
    """Classifier fit time vs samples, log-log; returns what was done."""
    rows = doc.get("results", {}).get("fit_vs_n") or []
    if not rows:
        return "skipped: classifier_fit.json has no fit_vs_n rows"
    skipped = doc.get("results", {}).get("skipped") or {}
    config = doc.get("config", {})
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in dict.fromkeys(r["classifier"] for r in rows):
        pts = sorted((r["n"], r["fit_s"]) for r in rows if r["classifier"] == name)
        label = f"{name} (stopped: limit)" if name in skipped else name
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.set_xscale("log")
    ax.set_xlabel(f"training samples ({config.get('n_features', '?')} features, "
                  f"{config.get('n_classes', '?')} classes)")
    ax.set_ylabel("fit time (s)")
    return _save_log_plot(plt, fig, ax, path, legend_size=8,
                          title=f"Classifier fit time vs n ({doc.get('mode', '?')} run)")


# --------------------------------------------------------------------------- README


def _extra_tables(name: str, doc: dict) -> list[str]:
    """Detail tables of the benchmarks whose JSON layout this file knows."""
    res = doc.get("results", {})
    md = []
    if name == "decode_throughput" and res:
        decode = [{"path": k, **v} for k, v in res.get("decode", {}).items()
                  if isinstance(v, dict)]
        md += ["Per image, one thread:", "",
               common.format_table(decode, ["path", "ms_per_img", "img_per_s"], markdown=True),
               ""]
        fwd = [{"model": k, **v} for k, v in res.get("forward", {}).items()]
        md += ["Bare forward (batch 32, 224 px, channels_last, 2 threads):", "",
               common.format_table(fwd, ["model", "img_per_s", "ms_per_batch"], markdown=True),
               ""]
        md += ["Bottleneck of a JPEG job (decode ceiling = max(1, workers) x single-core rate):",
               "", common.format_table(res.get("bottleneck", []),
                                       ["model", "decode_path", "workers",
                                        "decode_ceiling_img_s", "forward_img_s", "bottleneck",
                                        "shared_cpu_estimate_img_s"], markdown=True), ""]
        if res.get("end_to_end"):
            md += ["Measured end to end (FileSource.iter_batches + bare forward):", "",
                   common.format_table(res["end_to_end"], markdown=True), ""]
    elif name == "classifier_fit" and res:
        table = doc.get("recommendation_table") or []
        if table:
            md += ["Which to pick when:", "",
                   common.format_table(table, ["situation", "pick", "why"], markdown=True), ""]
        if res.get("c_sensitivity"):
            md += ["Fit time against C (smallest n):", "",
                   common.format_table(res["c_sensitivity"],
                                       ["classifier", "n", "C", "fit_s", "n_iter",
                                        "test_accuracy", "one_vs_rest_subproblem_s"],
                                       markdown=True), ""]
        if res.get("blas_threads"):
            md += ["lbfgs with 1 vs 2 BLAS threads:", "",
                   common.format_table(res["blas_threads"],
                                       ["classifier", "n", "blas_threads", "fit_s",
                                        "slowdown_vs_1_thread"], markdown=True), ""]
        md += ["Fit time vs n (10 classes):", "",
               common.format_table(res.get("fit_vs_n", []),
                                   ["classifier", "n", "fit_s", "n_iter", "converged",
                                    "test_accuracy"], markdown=True), ""]
        for clf, why in (res.get("skipped") or {}).items():
            md.append(f"- {clf}: {why}")
        if res.get("many_classes"):
            md += ["", "Many classes:", "",
                   common.format_table(res["many_classes"],
                                       ["classifier", "n_classes", "n", "fit_s",
                                        "speedup_vs_linear_svc", "test_accuracy"],
                                       markdown=True), ""]
    elif name == "extract_throughput" and isinstance(res, dict) and res.get("in_memory"):
        md += ["In memory (extractor vs the bare headless forward on the same batches):", "",
               common.format_table(res["in_memory"], [
                   "model", "device", "precision", "batch_size", "bare_img_per_s",
                   "extractor_tensor_img_per_s", "extractor_uint8_img_per_s", "ratio_tensor",
                   "ratio_uint8", "overhead_share_uint8"], markdown=True), ""]
        if res.get("jpeg_folder"):
            md += ["From a folder of 500x375 JPEGs (limit: the lower of decode ceiling and bare "
                   "forward; with 0 workers their times add):", "",
                   common.format_table(res["jpeg_folder"], [
                       "model", "device", "workers", "bare_img_per_s",
                       "decode_ceiling_img_per_s", "limit_img_per_s", "extractor_img_per_s",
                       "ratio_vs_limit", "ratio_vs_bare", "bottleneck"], markdown=True), ""]
        if res.get("compile"):
            md += ["`compile=True` (compilation time excluded from img/s):", "",
                   common.format_table(res["compile"], [
                       "model", "device", "batch_size", "compile_seconds", "compiled_img_per_s",
                       "eager_extractor_img_per_s", "compiled_over_eager_extractor",
                       "compiled_over_bare", "break_even_images"], markdown=True), ""]
    elif name == "cli_startup" and res.get("timings"):
        rows = [{"command": k, **v} for k, v in res["timings"].items()]
        md += ["Start-up of a fresh interpreter (median of interleaved runs):", "",
               common.format_table(rows, ["command", "median_s", "min_s", "max_s",
                                         "cpu_median_s", "repeats"],
                                   markdown=True), ""]
        md += [f"- `{k}` imports: {', '.join(v) or 'none of the watched modules'}"
               for k, v in res.get("imports", {}).items()] + [""]
    elif name == "compare_phases" and res:
        md += ["Phases:", "", common.format_table(res.get("phases", []),
                                                  ["phase", "seconds", "share"],
                                                  markdown=True), ""]
    return md


def write_readme(out_dir: Path, runs: list[dict] | None, wall_s: float | None,
                 plots: dict[str, str]) -> Path:
    """Write ``out_dir/README.md`` from the JSON files there."""
    docs = load_results(out_dir)
    info = common.machine_info()
    now = _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")
    md = ["# featclf benchmarks", "",
          f"Written {now} by `benchmarks/run_all.py` from the JSON files beside this README.",
          "Numbers that decide anything are ratios measured within one run: the machines are "
          "shared, so absolute times move with the load (`load_avg_1m` below).", "",
          f"Machine: {info['platform']}, {info['cpu_count']} CPUs, device {info['device']}"
          + (f" ({info['gpu']})" if info["gpu"] else "")
          + f"; Python {info['python']}, torch {info['torch']}, torchvision "
          f"{info['torchvision']}, scikit-learn {info['sklearn']}.", ""]
    if runs is not None:
        md += [f"## Last run ({wall_s:.0f} s wall)" if wall_s is not None else "## Last run", "",
               common.format_table(runs, ["script", "status", "seconds"], markdown=True), ""]
    status = {r["script"]: r["status"] for r in runs or []}
    for name, doc in docs.items():
        md += [f"## {name}", ""]
        if status.get(name, "ok") != "ok":
            md += [f"**Not from the last run** (its status: {status[name]}): the numbers below "
                   "are from an earlier run.", ""]
        if "unreadable" in doc:
            md += [f"Unreadable: {doc['unreadable']}", ""]
            continue
        machine = doc.get("machine", {})
        md += [f"Mode `{doc.get('mode', '?')}`, written {doc.get('created', '?')}, "
               f"load_avg_1m {machine.get('load_avg_1m', '?')} on {machine.get('cpu_count', '?')}"
               f" CPUs ({machine.get('device', '?')}"
               + (f", {machine['gpu']}" if machine.get("gpu") else "") + ").", ""]
        load, cpus = machine.get("load_avg_1m"), machine.get("cpu_count")
        if isinstance(load, int | float) and isinstance(cpus, int) and load > cpus:
            md += [f"**Busy machine** (load {load:g} on {cpus} CPUs): other work shared the "
                   "cores, so absolute times are slow and parallel speedups understated.", ""]
        if doc.get("skipped"):
            md += [f"Skipped: {doc['skipped']}", ""]
            continue
        head = headline_of(doc)
        if head:
            md += [common.format_table([{"headline": k, "value": v} for k, v in head.items()],
                                       ["headline", "value"], markdown=True), ""]
        recs = doc.get("recommendations") or []
        if recs and not doc.get("recommendation_table"):  # the table says the same, better
            md += ["Findings:", ""] + [f"- {r}" for r in recs] + [""]
        md += _extra_tables(name, doc)
        if name == "extract_throughput" and (out_dir / "throughput_vs_batch.png").exists():
            md += ["![throughput vs batch](throughput_vs_batch.png)", ""]
        if name == "classifier_fit" and (out_dir / "fit_time_vs_n.png").exists():
            md += ["![fit time vs n](fit_time_vs_n.png)", ""]
    for name, state in status.items():
        if name not in docs:
            md += [f"## {name}", "", f"No results: {state}.", ""]
    if plots:
        md += ["## Plots", ""] + [f"- {k}: {v}" for k, v in plots.items()] + [""]
    path = out_dir / "README.md"
    path.write_text("\n".join(md))
    return path


def make_plots(out_dir: Path) -> dict[str, str]:
    """Both plots, where their JSON exists; returns what happened to each."""
    docs = load_results(out_dir)
    done = {}
    if "extract_throughput" in docs:
        done["throughput_vs_batch.png"] = plot_throughput_vs_batch(
            docs["extract_throughput"], out_dir / "throughput_vs_batch.png")
    else:
        done["throughput_vs_batch.png"] = "skipped: no extract_throughput.json"
    if "classifier_fit" in docs:
        done["fit_time_vs_n.png"] = plot_fit_time_vs_n(docs["classifier_fit"],
                                                       out_dir / "fit_time_vs_n.png")
    else:
        done["fit_time_vs_n.png"] = "skipped: no classifier_fit.json"
    return done


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true",
                        help="full sizes, no run deadline (long: tens of minutes)")
    parser.add_argument("--report-only", action="store_true",
                        help="only rewrite README.md and the plots from the JSON already there")
    parser.add_argument("--per-script-timeout", type=float, metavar="S",
                        help="override every script's time budget")
    parser.add_argument("--out-dir", type=Path, default=common.DEFAULT_OUT_DIR)
    args = parser.parse_args(argv)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    runs, wall = None, None
    status_file = args.out_dir / "run_all.json"
    if args.report_only:
        if status_file.exists():
            saved = json.loads(status_file.read_text())
            runs, wall = saved.get("runs"), saved.get("wall_s")
    else:
        start = time.perf_counter()
        runs = run_suite(args)
        wall = time.perf_counter() - start
        status_file.write_text(json.dumps({"mode": "full" if args.full else "quick",
                                           "wall_s": wall, "runs": runs}, indent=2) + "\n")
    plots = make_plots(args.out_dir)
    readme = write_readme(args.out_dir, runs, wall, plots)
    for name, what in plots.items():
        print(f"{name}: {what}")
    print(f"wrote {readme}")
    if runs is not None:
        print(common.format_table(runs, ["script", "status", "seconds"]))
        print(f"total {wall:.1f} s")
    # A crash is a bug and fails the run; a timeout is the machine's load (reported above).
    failed = [r for r in runs or [] if r["status"].startswith("failed")]
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
