"""Where the time of ``featclf compare`` goes: training, extraction, classifiers, report.

Runs :func:`featclf.compare.compare` once, the way ``featclf compare`` does (``n_jobs=1``,
default classifiers and C grids), then :func:`featclf.report.write_report`, and splits the wall
time into phases from the :class:`~featclf.comparison.Comparison`'s ``timings`` table:

* ``training``: the softmax networks (rows of phase ``training``);
* ``extraction``: the headless forward over every image, every layer at once (``extraction``);
* ``classifier:<name>``: each classifier's C search + per-C refits + scoring (``classifier``);
* ``other``: what ``compare`` spent outside those (loading, splitting, paired statistics);
* ``report``: ``write_report`` (Markdown, HTML, CSV, PNGs).

Full mode is ``make demo``'s job (MNIST-5k, lenet5 + seed_cnn, their recipes); ``--quick`` is
1,000 MNIST images, lenet5, 2 epochs; ``--smoke`` 300 8x8 digits, 1 epoch, logistic only.
When ``featclf.compare`` cannot be imported the script says so and writes a JSON that records
the skip.

Run: ``python benchmarks/compare_phases.py [--quick | --smoke] [--out-dir DIR]``.
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from collections import defaultdict

import common
import numpy as np

NAME = "compare_phases"

SETTINGS = {
    "full": dict(data="mnist5k", per_class=None, models=None, epochs=None, compare_options={}),
    "quick": dict(data="mnist5k", per_class=100, models=["lenet5"], epochs=2,
                  compare_options={}),
    "smoke": dict(data="digits", per_class=30, models=["lenet5"], epochs=1,
                  compare_options=dict(classifiers=["logistic"], c_grids=[1.0], cv=2,
                                       n_resamples=100)),
}


def load_subset(name: str, per_class: int | None):
    """The built-in data set ``name``, or its first ``per_class`` images of every class."""
    from featclf.data import load_digits_images, load_mnist5k

    if per_class is None:
        return name
    X, y = (load_mnist5k if name == "mnist5k" else load_digits_images)(return_X_y=True)
    idx = np.concatenate([np.flatnonzero(y == c)[:per_class] for c in np.unique(y)])
    return X[idx], y[idx]


def phase_of(row) -> str:
    """The phase of one row of ``Comparison.timings``."""
    return f"classifier:{row.classifier}" if row.phase == "classifier" else row.phase


def phases_from(comparison, compare_wall_s: float) -> dict[str, float]:
    """Seconds per phase from the run's timings (or its columns when timings are missing)."""
    results, timings = comparison.results, comparison.timings
    total = float(comparison.seconds) if comparison.seconds == comparison.seconds else (
        compare_wall_s)  # fmt: skip
    phases: dict[str, float] = defaultdict(float)
    if timings is not None and len(timings):
        for row in timings.itertuples(index=False):
            phases[phase_of(row)] += float(row.seconds)
    else:  # fall back to the documented columns
        soft = results["classifier"].astype(str).str.startswith("softmax")
        phases["training"] = float(results.loc[soft, "fit_time_s"].sum())
        extract = results.loc[~soft].drop_duplicates(["model", "layer"])["extract_time_s"]
        phases["extraction"] = float(extract.sum())
        for name, group in results.loc[~soft].groupby("classifier"):
            phases[f"classifier:{name}"] = float(
                group["fit_time_s"].sum() + group["predict_time_s"].sum())
    phases["other"] = max(0.0, total - sum(phases.values()))
    return dict(phases)


def per_classifier(results) -> list[dict]:
    """Fit/predict seconds of each classifier: the selected C and the mean over its grid."""
    rows = []
    for (model, layer, name), group in results.groupby(["model", "layer", "classifier"],
                                                       sort=False):
        selected = group[group["selected"].astype(bool)]
        pick = selected.iloc[0] if len(selected) else group.iloc[0]
        rows.append({
            "model": model, "layer": layer, "classifier": name, "n_C": int(len(group)),
            "selected_C": None if pick["C"] != pick["C"] else float(pick["C"]),
            "fit_s_selected": float(pick["fit_time_s"]),
            "fit_s_mean_over_C": float(group["fit_time_s"].mean()),
            "predict_s_selected": float(pick["predict_time_s"]),
            "accuracy_selected": float(pick["accuracy"]),
        })
    return rows


def skip(args, reason: str) -> int:
    """Record that the benchmark could not run, with the reason, and exit successfully."""
    print(f"compare_phases skipped: {reason}")
    path = common.write_json(NAME, {"mode": args.mode, "skipped": reason,
                                    "headline": {"skipped": reason}}, args.out_dir)
    print(f"wrote {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    cfg = SETTINGS[args.mode]
    try:
        from featclf.compare import compare
        from featclf.report import write_report
    except ImportError as exc:
        return skip(args, f"featclf.compare or featclf.report cannot be imported ({exc})")

    data = load_subset(cfg["data"], cfg["per_class"])
    n_images = 5000 if isinstance(data, str) else len(data[1])
    options = dict(cfg["compare_options"])
    if cfg["models"] is not None:
        options["models"] = cfg["models"]
    if cfg["epochs"] is not None:
        options["epochs"] = cfg["epochs"]
    print(f"compare on {cfg['data']} ({n_images} images), options {options}", flush=True)
    start = time.perf_counter()
    comparison = compare(data, n_jobs=1, device="cpu", random_state=0, **options)
    results = comparison.results
    compare_wall = time.perf_counter() - start
    with tempfile.TemporaryDirectory(prefix="featclf-bench-report-") as tmp:
        start = time.perf_counter()
        write_report(comparison, tmp)
        report_s = time.perf_counter() - start

    phases = phases_from(comparison, compare_wall)
    phases["report"] = report_s
    total = compare_wall + report_s
    phase_rows = [{"phase": k, "seconds": v, "share": v / total}
                  for k, v in sorted(phases.items(), key=lambda kv: -kv[1])]
    classifier_rows = per_classifier(results)
    extract = results.loc[results["extract_images_per_s"].notna(), "extract_images_per_s"]
    extract_rate = float(extract.iloc[0]) if len(extract) else math.nan

    common.print_table(f"featclf compare phases ({total:.1f} s in all)", phase_rows,
                       ["phase", "seconds", "share"])
    common.print_table("Per classifier (selected C and mean over the C grid)", classifier_rows,
                       ["model", "classifier", "n_C", "selected_C", "fit_s_selected",
                        "fit_s_mean_over_C", "predict_s_selected", "accuracy_selected"])
    dominant = phase_rows[0]
    classifier_total = sum(v for k, v in phases.items() if k.startswith("classifier:"))
    headline = {
        "total s (compare + report)": total,
        "dominant phase": f"{dominant['phase']} ({dominant['share']:.0%})",
        "training share": phases.get("training", 0.0) / total,
        "extraction share": phases.get("extraction", 0.0) / total,
        "classifiers share": classifier_total / total,
        "report share": report_s / total,
        "extraction img/s": extract_rate,
    }
    recs = [f"The largest phase is {dominant['phase']} at {dominant['share']:.0%} of "
            f"{total:.1f} s; speeding up the others changes the total by at most "
            f"{1 - dominant['share']:.0%}."]
    slowest = max((r for r in phase_rows if r["phase"].startswith("classifier:")),
                  key=lambda r: r["seconds"], default=None)
    if slowest is not None:
        recs.append(f"Slowest classifier sweep: {slowest['phase'].split(':', 1)[1]} "
                    f"({slowest['seconds']:.1f} s, {slowest['share']:.0%}); the CLI's --n-jobs "
                    "parallelises the C search across cores.")
    path = common.write_json(NAME, {
        "mode": args.mode,
        "config": {"data": cfg["data"], "n_images": n_images, "n_jobs": 1, "device": "cpu",
                   **{k: v for k, v in options.items()},
                   "compare_config": dict(comparison.setup)},
        "results": {"phases": phase_rows, "classifiers": classifier_rows,
                    "compare_wall_s": compare_wall, "report_s": report_s,
                    "timings": comparison.timings.to_dict(orient="records")},
        "headline": headline,
        "recommendations": recs,
    }, args.out_dir)
    print("\n" + "\n".join(f"- {r}" for r in recs))
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
