"""Turn a :class:`~featclf.comparison.Comparison` into a report: Markdown, HTML, CSV, PNG plots.

The report opens with a verdict computed from the numbers (is the SVM chosen by cross-validation
on the deep features better, worse or no different from the CNN's own softmax head, or is the
test set too small to tell?), then warnings (a C at the edge of its grid), the setup, a table of the
selected classifiers per model/layer, per-class precision/recall/F1, the calibration of the
probabilistic classifiers, the plots (row-normalised confusion matrices, training curves,
reliability diagrams) and, when the test images are files, a gallery of thumbnails. A repeated
comparison (:func:`featclf.repeats.compare_repeated`; ``write_report(..., repeats=)``) adds a
"Repeated splits" section: mean ± standard deviation over the splits and the verdict's spread.
``report.html`` is self-contained (plots and thumbnails embedded as base64 PNG); ``report.md``
links the PNG files next to it.

Plots are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas, never through
``pyplot``'s global state, so writing a report neither changes the caller's backend nor leaves
figures open. The verdict and the tables are in :mod:`featclf.report._tables`, the plots in
:mod:`featclf.report._plots`, the per-image predictions in :mod:`featclf.report._predictions`,
the per-class, calibration and training sections in :mod:`featclf.report._quality`, the
thumbnails in :mod:`featclf.report._gallery`; this module lays them out and writes the files.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd

from featclf.comparison import Comparison
from featclf.errors import option
from featclf.report._gallery import gallery_rows
from featclf.report._plots import _plot_accuracy, _plot_c_curve, _plot_confusions
from featclf.report._predictions import PREDICTION_COLUMNS, predictions_table, write_predictions
from featclf.report._quality import (
    calibration_display,
    calibration_table,
    per_class_reports,
    per_class_table,
    plot_reliability,
    plot_training,
)
from featclf.report._render import Block, _render_html, _render_markdown
from featclf.report._repeats import REPEAT_COLUMNS, repeats_blocks, spread_sentence
from featclf.report._tables import (
    _DASH,
    SUMMARY_COLUMNS,
    _check_comparison,
    _ci_label,
    _dataset,
    _display_table,
    _group_note,
    _groups,
    _prepare,
    _setup_items,
    _verdict,
    report_warnings,
    setup_summary,
    summary_table,
    verdict,
)

__all__ = [
    "PREDICTION_COLUMNS", "REPEAT_COLUMNS", "SUMMARY_COLUMNS", "predictions_table",
    "setup_summary", "summary_table", "verdict", "write_report",
]  # fmt: skip

# --------------------------------------------------------------------------- blocks


def _quality_blocks(
    df: pd.DataFrame, comparison: Comparison, calibration: pd.DataFrame
) -> list[Block]:
    """The per-class tables and the calibration table."""
    blocks: list[Block] = []
    reports = per_class_reports(df, comparison)
    if reports:
        blocks += [("h", 2, "Per class"),
                   ("p", "Precision (P), recall (R) and F1 of each class on the test set, for each "
                    "selected classifier (scikit-learn's classification_report); support is the "
                    "number of test images of the class. With many classes or classifiers only "
                    "F1 is shown.")]  # fmt: skip
        for model, layer, group in reports:
            blocks += [("h", 3, f"{model} {_DASH} {layer}"), ("table", per_class_table(group))]
    if not calibration.empty:
        blocks += [("h", 2, "Calibration"),
                   ("p", "How far each probabilistic classifier's confidence is from its accuracy "
                    "on the test set. The top-label expected calibration error (ECE) bins the "
                    "probability of the predicted class into 10 equal-width bins and averages "
                    "|accuracy - mean confidence| over the bins, weighted by their share of the "
                    "test images (0 is perfectly calibrated); log-loss uses every class's "
                    "probability. SVMs without probabilities are left out."),
                   ("table", calibration_display(calibration))]  # fmt: skip
    return blocks


def _caption(name: str, ci_label: str) -> str:
    """The caption of one plot, by its file name."""
    if name == "accuracy.png":
        return f"Test accuracy of the selected classifiers ({ci_label})."
    if name == "c_curve.png":
        return ("Accuracy against C: test (solid), cross-validation on the training features "
                "(dotted), the C chosen by CV (star), the softmax head (dashed).")
    if name.startswith("training_"):
        return ("Training of the softmax network: loss and accuracy per epoch, on the training "
                "images (solid) and the validation images (dashed) where held out.")
    if name.startswith("reliability_"):
        return ("Reliability diagram: accuracy against mean confidence in each of 10 "
                "equal-width bins of the predicted class's probability (the diagonal is "
                "perfect calibration).")
    return ("Confusion matrices on the test set, normalised by row (each true class's row "
            "sums to 1): the softmax head and the SVM chosen by cross-validation.")


def _blocks(
    df: pd.DataFrame, comparison: Comparison, title: str | None, images: list[str],
    files: Sequence[str] = (), quality: Sequence[Block] = (),
    repeats: pd.DataFrame | None = None,
) -> list[Block]:
    """The report's content, independent of the output format."""
    config = dict(comparison.setup)
    dataset, ci_label = _dataset(df, config), _ci_label(config)
    blocks: list[Block] = [
        ("h", 1, title or f"Deep-feature classifiers vs the softmax head on {dataset}")
    ]
    n_classes = None if comparison.classes is None else len(comparison.classes)
    blocks.append(("p", _verdict(df, config, n_classes) or "No classifier results to compare."))
    spread = spread_sentence(repeats) if repeats is not None else None
    if spread:
        blocks.append(("p", spread))
    warnings = report_warnings(comparison)
    if warnings:
        blocks += [("h", 2, "Warnings"), ("ul", warnings)]
    blocks += [("h", 2, "Setup"), ("ul", _setup_items(df, config, comparison.classes))]
    if comparison.skipped:
        blocks += [("h", 2, "Skipped images"),
                   ("p", f"{len(comparison.skipped)} image files could not be read and were "
                    f"left out before the split ({option('on_error', 'skip')}):"),
                   ("ul", [f"{path}: {reason}" for path, reason in comparison.skipped])]
    blocks.append(("h", 2, "Results"))
    intervals = ci_label.replace("CI", "bootstrap percentile intervals")
    method = (
        "Selected classifiers per model and layer: C chosen by cross-validation on the "
        f"training features. Intervals are {intervals} over the test images; Δ is the "
        "classifier's accuracy minus the softmax head's, on the same test images (paired), and "
        "McNemar's test compares their errors. The full C sweep is in results.csv."
    )
    blocks.append(("p", method))
    if files:
        blocks.append(("links", "Every test image's prediction by each selected classifier "
                       "(the class, its probability or decision score, right or wrong; one row "
                       "per image and classifier) is in ", files, "."))
    for model, layer, rows in _groups(df):
        blocks.append(("h", 3, f"{model} {_DASH} {layer}"))
        note = _group_note(rows)
        if note:
            blocks.append(("p", note))
        selected = rows[rows["selected"]]
        if selected.empty:
            blocks.append(("p", "No row is marked selected."))
        else:
            blocks.append(("table", _display_table(selected, ci_label)))
    if repeats is not None:
        blocks += repeats_blocks(repeats, ci_label)
    blocks += list(quality)
    if images:
        blocks.append(("h", 2, "Plots"))
        blocks += [("img", name, _caption(name, ci_label)) for name in images]
    gallery = gallery_rows(df, comparison)
    if gallery:
        blocks += [("h", 2, "Test images"),
                   ("p", "Test images worth a look: those each classifier got wrong with the "
                    "highest score of the class it predicted, and those where the softmax head "
                    "and the SVM chosen by cross-validation disagree (one right, the other "
                    "wrong). Each caption gives the file, its true class and both predictions.")]
        for heading, thumbs in gallery:
            blocks += [("h", 3, heading), ("gallery", thumbs)]
    return blocks


# --------------------------------------------------------------------------- entry point


def _check_repeats(repeats: pd.DataFrame) -> pd.DataFrame:
    """Refuse a ``repeats`` table that is not :func:`featclf.repeats.compare_repeated`'s."""
    if not isinstance(repeats, pd.DataFrame):
        raise TypeError(f"repeats must be a pandas DataFrame (RepeatedComparison.splits), got "
                        f"{type(repeats).__name__}.")
    missing = [c for c in REPEAT_COLUMNS if c not in repeats.columns]
    if missing or repeats.empty:
        raise ValueError(
            f"repeats lacks the column(s) {missing} or has no rows; pass the splits table "
            "featclf.repeats.compare_repeated() returns (RepeatedComparison.splits)."
        )
    return repeats


def write_report(
    comparison: Comparison, out_dir: str | Path, *, title: str | None = None,
    repeats: pd.DataFrame | None = None,
) -> dict[str, Path]:
    """Write the comparison report: Markdown, self-contained HTML, CSV and PNG plots.

    Parameters
    ----------
    comparison : Comparison
        What ``featclf.compare.compare`` returns. Its ``results`` table has one row per
        (model, layer, classifier, C) with at least ``model``, ``layer``, ``classifier`` and
        ``accuracy``; the other columns (``selected``, ``C``, ``cv_accuracy``, CI bounds,
        ``macro_f1``, ``log_loss``, times, ``diff_vs_softmax`` and its CI, ``mcnemar_p``, ...)
        are used when present. ``diff_vs_softmax`` is the classifier's accuracy minus the
        softmax head's. Its ``setup`` is printed as the Setup section, with its ``classes``;
        its ``predictions`` and ``y_true`` give the confusion matrices and the per-image
        predictions (both skipped without them).
    out_dir : str or path-like
        Directory to write into; created if needed. Existing files of the same names are
        replaced.
    title : str, optional
        Title of the report; by default one naming the dataset.
    repeats : pandas.DataFrame, optional
        Every split of a repeated comparison (:attr:`featclf.repeats.RepeatedComparison.splits`,
        columns :data:`REPEAT_COLUMNS`), ``comparison`` being its first split: adds a
        "Repeated splits" section (each classifier's test accuracy as mean ± standard
        deviation over the splits, how many splits' verdicts said better / worse / no
        detectable difference / inconclusive, every split's verdict), a sentence under the
        verdict, and ``repeats.csv``.

    Returns
    -------
    dict of str to pathlib.Path
        File name -> path of every file written: ``results.csv``, ``report.md``,
        ``report.html``, ``accuracy.png``, ``c_curve.png`` (when some row has a C) and, when
        predictions are given, ``confusion_<model>_<layer>.png`` (row-normalised),
        ``predictions.csv`` and ``predictions.parquet``; ``training_<model>.png`` for each
        model with a training history, and ``reliability_<model>_<layer>.png`` where some
        selected classifier's scores are probabilities; ``repeats.csv`` with ``repeats``.

    Notes
    -----
    ``predictions.csv`` (and ``predictions.parquet``, the same table) is tidy: one row per
    test image and selected classifier (the softmax head included), columns
    :data:`PREDICTION_COLUMNS`: ``image`` (the file path when the data are files, else the
    image's row position in the data), ``true_label``, ``model``, ``layer``, ``classifier``,
    ``C`` (of the selected row), ``predicted``, ``score`` (the score of the predicted class),
    ``score_kind`` (``"probability"`` from ``predict_proba``, or ``"decision"`` from
    ``decision_function`` for SVMs without probabilities) and ``correct``. The mean of
    ``correct`` per (model, layer, classifier) is that selected row's ``accuracy`` in
    ``results.csv``, exactly. See :func:`predictions_table`.

    Examples
    --------
    >>> import tempfile
    >>> import pandas as pd
    >>> from featclf.comparison import Comparison
    >>> from featclf.report import write_report
    >>> results = pd.DataFrame({
    ...     "dataset": "digits", "model": "lenet5", "layer": "penultimate",
    ...     "classifier": ["softmax", "linear_svm", "linear_svm"], "C": [None, 0.1, 1.0],
    ...     "selected": [True, False, True], "accuracy": [0.958, 0.955, 0.963]})
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     paths = write_report(Comparison(results), tmp, title="Digits")
    ...     text = paths["report.md"].read_text(encoding="utf-8")
    >>> sorted(paths)
    ['accuracy.png', 'c_curve.png', 'report.html', 'report.md', 'results.csv']
    >>> text.splitlines()[0]
    '# Digits'
    """
    comparison = _check_comparison(comparison)
    results = comparison.results
    df = _prepare(results)
    config = dict(comparison.setup)
    table = predictions_table(comparison)  # checked before anything is written
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    paths: dict[str, Path] = {"results.csv": out / "results.csv"}
    results.to_csv(paths["results.csv"], index=False)
    paths.update(write_predictions(table, out))
    if repeats is not None:
        repeats = _check_repeats(repeats)
        paths["repeats.csv"] = out / "repeats.csv"
        repeats.to_csv(paths["repeats.csv"], index=False)

    images: dict[str, Path] = {"accuracy.png": out / "accuracy.png"}
    _plot_accuracy(df, images["accuracy.png"], _ci_label(config))
    if _plot_c_curve(df, out / "c_curve.png"):
        images["c_curve.png"] = out / "c_curve.png"
    images.update(_plot_confusions(df, comparison, out))
    images.update(plot_training(comparison, out))
    calibration = calibration_table(df, comparison)
    images.update(plot_reliability(calibration, comparison, out))

    blocks = _blocks(df, comparison, title, list(images),
                     [name for name in paths if name.startswith("predictions.")],
                     _quality_blocks(df, comparison, calibration), repeats)
    heading = str(blocks[0][2])
    paths["report.md"] = out / "report.md"
    paths["report.md"].write_text(_render_markdown(blocks), encoding="utf-8")
    paths["report.html"] = out / "report.html"
    paths["report.html"].write_text(_render_html(blocks, heading, out), encoding="utf-8")
    return {**paths, **images}
