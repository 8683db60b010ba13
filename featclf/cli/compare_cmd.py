"""``featclf compare``: the main job, softmax vs SVMs vs logistic regression, written as a report.

With no arguments it runs the experiment ``make demo`` runs: MNIST-5k (4,000 training / 1,000
test images), lenet5 and seed_cnn, their penultimate features, every classifier, the report in
``artifacts/reports/mnist5k/``.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from featclf.cli._data import add_data_arguments, image_files_from_args
from featclf.cli.extract_cmd import POOLINGS

if TYPE_CHECKING:  # the command imports featclf.compare (and torch) only when it runs
    import pandas as pd

    from featclf.comparison import Comparison
    from featclf.repeats import RepeatedComparison

#: The classifiers of :data:`featclf.pipelines.CLASSIFIERS`, named here so that building the
#: parser imports no scikit-learn (``featclf --help`` stays fast); a test keeps them equal.
CLASSIFIER_NAMES: tuple[str, ...] = ("linear_svm", "crammer_singer_svm", "rbf_svm", "logistic")
BUILTIN_DATA: tuple[str, ...] = ("mnist5k", "digits")

#: What ``--quick`` changes: a smoke run in well under a minute.
QUICK = {"epochs": 3, "cv": 2, "n_resamples": 500}


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``featclf compare``."""
    p = sub.add_parser(
        "compare",
        help="softmax vs SVM vs logistic regression on identical splits (the main job)",
        description="Train each network with its softmax head on the training split, extract "
        "its features (penultimate layer or --layer) for the training and test images, sweep C "
        "for linear, Crammer-Singer and RBF SVMs and logistic regression (C chosen by "
        "cross-validation on the training features), and compare everything on the same test "
        "images: accuracy with bootstrap intervals, macro-F1, log-loss, McNemar's test, times. "
        "Writes report.md, report.html, results.csv and PNG plots to --out. A folder with "
        "train/ and test/ (or val/) subfolders, a CSV with a split column, or --test-data is "
        "used as its own split instead of a random one.",
    )
    p.add_argument("--data", default="mnist5k", metavar="mnist5k|digits|DIR|CSV",
                   help="built-in data set (mnist5k, digits), a folder of images in class "
                   "subfolders, or a CSV file of image paths and labels (default: mnist5k)")
    add_data_arguments(p, test_data=True)
    p.add_argument("--on-error", choices=("raise", "skip"), default="raise",
                   help="what to do with an image file that cannot be read: stop (raise, "
                   "default) or leave it out and list it in the report (skip)")
    p.add_argument("--model", action="append", dest="models", metavar="NAME",
                   help="network to train and extract from; repeat for several (default: "
                   "lenet5 and seed_cnn, or the --weights checkpoint's model)")  # fmt: skip
    p.add_argument("--weights", metavar="CHECKPOINT",
                   help="transfer: use this pre-trained network, frozen, as the feature "
                   "extractor; baselines are softmax from scratch and fine-tuning")  # fmt: skip
    p.add_argument("--layer", action="append", dest="layers", metavar="NODE",
                   help="layer to take features from (graph node name, e.g. c5, f6; "
                   "'penultimate' = the head's input); repeat to sweep layers")  # fmt: skip
    p.add_argument("--classifier", action="append", dest="classifiers", choices=CLASSIFIER_NAMES,
                   help="classifier to run; repeat for several (default: all)")  # fmt: skip
    p.add_argument("--epochs", type=int, help="epochs of every network (default: per-model "
                   "recipe: lenet5 15, seed_cnn and torchvision models 10)")  # fmt: skip
    p.add_argument("--augment", choices=("seed",),
                   help="train the softmax networks on augmented images (seed: random "
                   "rotations, shifts and flips, and per-channel normalisation); with --views, "
                   "the other classifiers also learn from augmented views; default none")
    p.add_argument("--views", type=_count(0), default=0, metavar="K",
                   help="with --augment: also fit the SVMs and logistic regression on K "
                   "augmented views of every training image (each view's features cached in "
                   "the feature store), tested on the clean test images (default 0)")
    p.add_argument("--solver", choices=("auto", "sklearn", "torch"), default="auto",
                   help="how the linear classifiers are fitted: scikit-learn's solvers, "
                   "featclf's torch solvers (a warm-started path over the C grid), or auto "
                   "(torch for large problems; default)")  # fmt: skip
    p.add_argument("--split", default="0.2", metavar="TEST|TRAIN,VAL,TEST",
                   help="fraction of the images held out for testing (default 0.2), or the "
                   "train, validation and test fractions, e.g. 0.65,0.25,0.1 (C is then chosen "
                   "on the validation images); not used when the data has its own split")
    p.add_argument("--cv", type=int, default=3, help="cross-validation folds that choose C "
                   "(default 3)")  # fmt: skip
    p.add_argument("--c-grids", action="append", type=_c_grid, metavar="CLASSIFIER=C,C,...",
                   help="the values of C to try for one classifier, e.g. rbf_svm=1,10,100,1000 "
                   "(repeatable; default: each classifier's own grid)")  # fmt: skip
    p.add_argument("--pooling", default="avg", choices=POOLINGS,
                   help="how convolutional maps (avg, max, flatten) or transformer tokens (cls, "
                   "mean) become vectors; +l2 normalises each vector (default avg)")  # fmt: skip
    p.add_argument("--pca", type=_pca, metavar="N|FRACTION",
                   help="reduce the features with PCA before each classifier: a number of "
                   "components, or the fraction of variance to keep")  # fmt: skip
    p.add_argument("--whiten", action="store_true", help="whiten the PCA components (--pca)")
    p.add_argument("--n-jobs", type=int, default=1,
                   help="parallel fits of the C search (joblib; -1 = all cores; default 1)")
    p.add_argument("--engine", choices=("local", "ray"), default="local",
                   help="where the grid searches over C run: joblib on this machine (local, "
                   "default) or a Ray cluster through joblib's Ray backend (needs featclf[ray]; "
                   "--n-jobs then defaults to every CPU of the cluster)")
    p.add_argument("--address", default=None, metavar="auto|ray://HOST:10001",
                   help="Ray cluster to join with --engine ray (default: start a local one)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--store", metavar="DIR",
                   help="feature store: every extraction reads its vectors from DIR and "
                   "writes the missing ones, so a second identical run computes none (the "
                   "networks are still trained, with the same random seed)")  # fmt: skip
    p.add_argument("--random-state", type=int, default=0, metavar="N",
                   help="random seed of the split, the training and the statistics (default 0)")
    p.add_argument("--repeats", type=_count(1), default=1, metavar="K",
                   help="run the whole comparison on K stratified splits seeded N, N+1, ... "
                   "(--random-state N) and report each classifier's test accuracy as mean ± "
                   "standard deviation and how many splits' verdicts said better, worse, no "
                   "detectable difference or inconclusive (a Repeated splits section and "
                   "repeats.csv; the rest of the report and the saved model are the first "
                   "split's); default 1")
    p.add_argument("--quick", action="store_true",
                   help=f"smoke run: {QUICK['epochs']} epochs, {QUICK['cv']}-fold CV, every "
                   f"other C, {QUICK['n_resamples']} bootstrap resamples")  # fmt: skip
    p.add_argument("--title", help="report title (default names the data set)")
    p.add_argument("--out", metavar="DIR",
                   help="report directory (default: artifacts/reports/<data set name>)")
    p.add_argument("--save-model", metavar="DIR",
                   help="where to save the fitted winner (the network and the classifier the "
                   "verdict compares, chosen by cross-validation) for featclf predict "
                   "(default: <report directory>/model)")  # fmt: skip
    p.add_argument("--no-save-model", action="store_true",
                   help="do not save the fitted winner")
    p.set_defaults(func=run)


def _count(lowest: int) -> Callable[[str], int]:
    """An argparse type: a whole number >= ``lowest`` (a usage error otherwise).

    Examples
    --------
    >>> _count(1)("3")
    3
    """

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = lowest - 1
        if value < lowest:
            raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= {lowest}")
        return value

    return parse


def _pca(text: str) -> int | float:
    """Parse ``--pca``: a number of components (``32``) or a variance fraction (``0.95``)."""
    value = float(text)
    return int(value) if value >= 1 and value.is_integer() else value


def _split(text: str) -> float | tuple[float, ...] | str:
    """Parse ``--split``: ``0.2`` or ``0.65,0.25,0.1`` (``seed001``, the old name of the
    latter, still works)."""
    if text == "seed001":
        return text
    try:
        values = tuple(float(part) for part in text.split(","))
    except ValueError:
        raise ValueError(f"--split {text!r}: pass a test fraction (0.2) or comma-separated "
                         "train, validation and test fractions (0.65,0.25,0.1)") from None
    return values[0] if len(values) == 1 else values


def _format_summary(summary: pd.DataFrame) -> str:
    """The selected rows as an aligned text table."""
    import pandas as pd

    def num(value: object, spec: str) -> str:
        return format(float(value), spec) if value is not None and not pd.isna(value) else "-"

    def pvalue(value: object) -> str:
        if value is None or pd.isna(value):
            return "-"
        return "<0.001" if float(value) < 0.001 else f"{float(value):.3f}"

    table = pd.DataFrame({
        "model": summary["model"],
        "layer": summary["layer"],
        "classifier": summary["classifier"],
        "C": [num(c, "g") for c in summary["C"]],
        "accuracy [95% CI]": [
            f"{num(a, '.4f')} [{num(lo, '.3f')}, {num(hi, '.3f')}]"
            for a, lo, hi in zip(summary["accuracy"], summary["accuracy_ci_low"],
                                 summary["accuracy_ci_high"])
        ],
        "macro-F1": [num(v, ".4f") for v in summary["macro_f1"]],
        "log-loss": [num(v, ".3f") for v in summary["log_loss"]],
        "diff vs softmax [95% CI]": [
            "-" if pd.isna(d) else f"{d:+.4f} [{lo:+.3f}, {hi:+.3f}]"
            for d, lo, hi in zip(summary["diff_vs_softmax"], summary["diff_ci_low"],
                                 summary["diff_ci_high"])
        ],
        "McNemar p": [pvalue(p) for p in summary["mcnemar_p"]],
        "fit s": [num(v, ".2f") for v in summary["fit_time_s"]],
    })  # fmt: skip
    return table.to_string(index=False)


def _format_repeats(repeated: RepeatedComparison) -> str:
    """Mean ± sd per selected classifier over the splits, and the spread of the verdict."""
    from featclf.report._repeats import OUTCOMES, repeats_summary, verdict_spread

    summary = repeats_summary(repeated.splits)
    table = summary[["model", "layer", "classifier"]].assign(**{
        f"accuracy over {len(repeated.seeds)} splits (mean ± sd)": [
            f"{m:.4f} ± {s:.4f}" for m, s in zip(summary["accuracy_mean"],
                                                 summary["accuracy_sd"])],
        "min": summary["accuracy_min"].map("{:.4f}".format),
        "max": summary["accuracy_max"].map("{:.4f}".format),
    })  # fmt: skip
    lines = [table.to_string(index=False), ""]
    for _, row in verdict_spread(repeated.splits).iterrows():
        counts = ", ".join(f"{o} {int(row[o])}" for o in OUTCOMES if row[o])
        lines.append(f"verdict over {int(row['n_splits'])} splits, {row['model']}/{row['layer']}: "
                     f"{counts} (compared: {row['compared']})")
    return "\n".join(lines)


def _c_grid(text: str) -> tuple[str, list[float]]:
    """``rbf_svm=1,10,100`` -> ``("rbf_svm", [1.0, 10.0, 100.0])`` (argparse type of --c-grids).

    Examples
    --------
    >>> _c_grid("logistic=0.1,1")
    ('logistic', [0.1, 1.0])
    """
    name, sep, values = text.partition("=")
    try:
        grid = [float(v) for v in values.split(",")] if sep and values else []
    except ValueError:
        grid = []
    if name not in CLASSIFIER_NAMES or not grid or min(grid) <= 0:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not CLASSIFIER=C,C,... with CLASSIFIER one of "
            f"{', '.join(CLASSIFIER_NAMES)} and positive values of C")
    return name, grid


def run(args: argparse.Namespace) -> int:
    """Run the comparison, write the report, print the summary; returns the exit code."""
    from featclf.pipelines import c_grid

    started = time.perf_counter()
    options: dict = {"epochs": args.epochs, "cv": args.cv}
    if args.quick:
        options.update(QUICK, epochs=args.epochs or QUICK["epochs"])
        classifiers = args.classifiers or CLASSIFIER_NAMES
        options["c_grids"] = {n: c_grid(n)[::2] for n in classifiers}
    if args.c_grids:
        options["c_grids"] = {**options.get("c_grids", {}), **dict(args.c_grids)}
    engine = contextlib.nullcontext()
    n_jobs = args.n_jobs
    if args.engine == "ray":
        from featclf.distributed import ray_joblib_backend

        engine = ray_joblib_backend(args.address)
        n_jobs = -1 if n_jobs == 1 else n_jobs
    repeated = None
    with engine:
        data, kwargs = _compare_arguments(args, options, n_jobs)
        if args.repeats > 1:
            from featclf.repeats import compare_repeated

            repeated = compare_repeated(data, repeats=args.repeats, **kwargs)
            comparison = repeated.first
        else:
            from featclf.compare import compare

            comparison = compare(data, **kwargs)
    return _finish(args, comparison, started, repeated)


def _compare_arguments(args: argparse.Namespace, options: dict, n_jobs: int
                       ) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """The data and the keyword arguments of ``compare`` the command line asks for."""
    data = args.data
    if data not in BUILTIN_DATA or any(
            getattr(args, f) is not None for f in ("path_column", "label_column", "split_column")):
        data = image_files_from_args(args, data)  # the CSV column flags apply here
    test_data = (image_files_from_args(argparse.Namespace(), args.test_data)
                 if args.test_data is not None else None)  # fmt: skip
    return data, dict(
        test_data=test_data,
        on_error=args.on_error,
        models=args.models,
        layers=args.layers or (None,),
        classifiers=args.classifiers or CLASSIFIER_NAMES,
        weights=args.weights,
        augment=args.augment,
        views=args.views,
        solver=args.solver,
        split=_split(args.split),
        classifier_options={"pca": args.pca, "whiten": args.whiten}
        if args.pca or args.whiten else None,
        pooling=args.pooling,
        n_jobs=n_jobs,
        device=args.device,
        random_state=args.random_state,
        progress=True,
        store=args.store,
        **options,
    )


def _finish(args: argparse.Namespace, comparison: Comparison, started: float,
            repeated: RepeatedComparison | None = None) -> int:  # fmt: skip
    """Write the report and print the summary table, the verdict and the total time."""
    from featclf.report import setup_summary, summary_table, verdict, write_report

    dataset = comparison.results["dataset"].iloc[0]
    out = Path(args.out) if args.out else Path("artifacts", "reports", dataset)
    paths = write_report(comparison, out, title=args.title,
                         repeats=repeated.splits if repeated is not None else None)
    saved = None
    if not args.no_save_model:
        from featclf.winner import save_winner

        try:
            saved = save_winner(comparison, args.save_model or out / "model").parent
        except ValueError as exc:  # nothing to save (no classifier selected): the report stands
            print(f"featclf compare: model not saved: {exc}", file=sys.stderr)
    elapsed = time.perf_counter() - started

    print()
    print(_format_summary(summary_table(comparison)))
    print()
    print(textwrap.fill(verdict(comparison), width=100))
    print()
    if repeated is not None:
        print(_format_repeats(repeated))
        print()
    for line in setup_summary(comparison):  # unwrapped: paths stay whole
        print(line)
    print()
    print(f"report: {out}/ ({', '.join(sorted(paths))})")
    if saved is not None:
        print(f"model: {saved}/ (featclf predict --model {saved} --images DIR)")
    minutes, seconds = divmod(elapsed, 60)
    print(f"total time: {int(minutes)} min {seconds:.1f} s"
          if minutes else f"total time: {seconds:.1f} s")  # fmt: skip
    sys.stdout.flush()
    return 0
