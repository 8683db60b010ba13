"""Turn a :class:`~featclf.comparison.Comparison` into a report: Markdown, HTML, CSV, PNG plots.

The report opens with a verdict computed from the numbers (is the SVM chosen by cross-validation
on the deep features better, worse or no different from the CNN's own softmax head, or is the
test set too small to tell?), then warnings (a C at the edge of its grid), the setup, a table of the
selected classifiers per model/layer, and the plots. ``report.html`` is self-contained (plots
embedded as base64 PNG); ``report.md`` links the PNG files next to it.

Plots are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas, never through
``pyplot``'s global state, so writing a report neither changes the caller's backend nor leaves
figures open. The verdict and the tables are in :mod:`featclf.report._tables`, the plots in
:mod:`featclf.report._plots`, the per-image predictions in :mod:`featclf.report._predictions`;
this module lays them out and writes the files.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pandas as pd

from featclf.comparison import Comparison
from featclf.errors import option
from featclf.report._plots import _plot_accuracy, _plot_c_curve, _plot_confusions
from featclf.report._predictions import PREDICTION_COLUMNS, predictions_table, write_predictions
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
    "PREDICTION_COLUMNS", "SUMMARY_COLUMNS", "predictions_table", "setup_summary",
    "summary_table", "verdict", "write_report",
]  # fmt: skip

_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 72rem;
       margin: 2rem auto; padding: 0 1rem; color: #1f2328; line-height: 1.5; }
h1, h2, h3 { line-height: 1.25; } h2 { border-bottom: 1px solid #d0d7de; padding-bottom: .3rem; }
table { border-collapse: collapse; margin: .5rem 0 1rem; font-size: .9rem; }
th, td { border: 1px solid #d0d7de; padding: .3rem .6rem; text-align: right; }
th { background: #f6f8fa; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1rem 0; } img { max-width: 100%; }
figcaption { color: #59636e; font-size: .9rem; }
"""


# --------------------------------------------------------------------------- rendering

Block = tuple[Any, ...]


def _blocks(
    df: pd.DataFrame, comparison: Comparison, title: str | None, images: list[str],
    files: Sequence[str] = (),
) -> list[Block]:
    """The report's content, independent of the output format."""
    config = dict(comparison.setup)
    dataset, ci_label = _dataset(df, config), _ci_label(config)
    blocks: list[Block] = [
        ("h", 1, title or f"Deep-feature classifiers vs the softmax head on {dataset}")
    ]
    n_classes = None if comparison.classes is None else len(comparison.classes)
    blocks.append(("p", _verdict(df, config, n_classes) or "No classifier results to compare."))
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
    if images:
        blocks.append(("h", 2, "Plots"))
        captions = {
            "accuracy.png": f"Test accuracy of the selected classifiers ({ci_label}).",
            "c_curve.png": "Accuracy against C: test (solid), cross-validation on the training "
            "features (dotted), the C chosen by CV (star), the softmax head (dashed).",
        }
        for name in images:
            caption = captions.get(name) or (
                "Confusion matrices on the test set: the softmax head and the SVM chosen by "
                "cross-validation."
            )
            blocks.append(("img", name, caption))
    return blocks


def _markdown_table(table: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table (first column left-aligned, the others right)."""

    def cell(value: Any) -> str:
        return str(value).replace("|", "\\|")

    lines = [
        "| " + " | ".join(cell(c) for c in table.columns) + " |",
        "|" + "|".join([":---"] + ["---:"] * (len(table.columns) - 1)) + "|",
    ]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in table.itertuples(False)]
    return "\n".join(lines)


def _render_markdown(blocks: list[Block]) -> str:
    """Render the report blocks as Markdown (images linked by relative path)."""
    parts = []
    for kind, *content in blocks:
        if kind == "h":
            parts.append("#" * content[0] + " " + content[1])
        elif kind == "p":
            parts.append(content[0])
        elif kind == "ul":
            parts.append("\n".join(f"- {item}" for item in content[0]))
        elif kind == "table":
            parts.append(_markdown_table(content[0]))
        elif kind == "img":
            parts.append(f"![{content[1]}]({content[0]})\n\n*{content[1]}*")
        elif kind == "links":
            links = " and ".join(f"[{name}]({name})" for name in content[1])
            parts.append(f"{content[0]}{links}{content[2]}")
    return "\n\n".join(parts) + "\n"


def _render_html(blocks: list[Block], title: str, out: Path) -> str:
    """Render the report blocks as one self-contained HTML page (images inlined as base64)."""
    body = []
    for kind, *content in blocks:
        if kind == "h":
            body.append(f"<h{content[0]}>{html.escape(content[1])}</h{content[0]}>")
        elif kind == "p":
            body.append(f"<p>{html.escape(content[0])}</p>")
        elif kind == "ul":
            items = "".join(f"<li>{html.escape(item)}</li>" for item in content[0])
            body.append(f"<ul>{items}</ul>")
        elif kind == "table":
            body.append(content[0].to_html(index=False, border=0, escape=True))
        elif kind == "links":
            links = " and ".join(f'<a href="{html.escape(name)}">{html.escape(name)}</a>'
                                 for name in content[1])  # fmt: skip
            body.append(f"<p>{html.escape(content[0])}{links}{html.escape(content[2])}</p>")
        elif kind == "img":
            data = base64.b64encode((out / content[0]).read_bytes()).decode("ascii")
            caption = html.escape(content[1])
            body.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{caption}">'
                f"<figcaption>{caption}</figcaption></figure>"
            )
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )

# --------------------------------------------------------------------------- entry point


def write_report(
    comparison: Comparison, out_dir: str | Path, *, title: str | None = None
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

    Returns
    -------
    dict of str to pathlib.Path
        File name -> path of every file written: ``results.csv``, ``report.md``,
        ``report.html``, ``accuracy.png``, ``c_curve.png`` (when some row has a C) and, when
        predictions are given, ``confusion_<model>_<layer>.png``, ``predictions.csv`` and
        ``predictions.parquet``.

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

    images: dict[str, Path] = {"accuracy.png": out / "accuracy.png"}
    _plot_accuracy(df, images["accuracy.png"], _ci_label(config))
    if _plot_c_curve(df, out / "c_curve.png"):
        images["c_curve.png"] = out / "c_curve.png"
    images.update(_plot_confusions(df, comparison, out))

    blocks = _blocks(df, comparison, title, list(images),
                     [name for name in paths if name.startswith("predictions.")])
    heading = str(blocks[0][2])
    paths["report.md"] = out / "report.md"
    paths["report.md"].write_text(_render_markdown(blocks), encoding="utf-8")
    paths["report.html"] = out / "report.html"
    paths["report.html"].write_text(_render_html(blocks, heading, out), encoding="utf-8")
    return {**paths, **images}
