"""The report's plots, drawn on pyplot-free Agg figures (no global state, nothing left open)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.metrics import ConfusionMatrixDisplay, confusion_matrix

from featclf.comparison import Comparison
from featclf.report._tables import (
    _color,
    _finite,
    _groups,
    _name,
    _num,
    _safe,
    _softmax_and_rival,
)


def _new_figure(width: float, height: float) -> Figure:
    """A pyplot-free figure on the Agg canvas."""
    figure = Figure(figsize=(width, height), layout="constrained", dpi=100)
    FigureCanvasAgg(figure)
    return figure


def _plot_accuracy(df: pd.DataFrame, path: Path, ci_label: str) -> None:
    """Test accuracy of each selected classifier with CI error bars, grouped by model/layer."""
    selected = df[df["selected"]]
    groups = list(dict.fromkeys(zip(selected["model"], selected["layer"])))
    classifiers = list(dict.fromkeys(selected["classifier"]))
    figure = _new_figure(min(20.0, max(6.0, 0.45 * len(groups) * len(classifiers) + 3)) + 2.2, 4.5)
    ax = figure.add_subplot()
    width = 0.8 / len(classifiers)
    for j, classifier in enumerate(classifiers):
        rows = selected[selected["classifier"] == classifier]
        xs, ys, below, above = [], [], [], []
        for _, row in rows.iterrows():
            if not _finite(row["accuracy"]):
                continue
            y = float(row["accuracy"])
            low = float(row["accuracy_ci_low"]) if _finite(row["accuracy_ci_low"]) else y
            high = float(row["accuracy_ci_high"]) if _finite(row["accuracy_ci_high"]) else y
            xs.append(groups.index((row["model"], row["layer"])) - 0.4 + width * (j + 0.5))
            ys.append(y)
            below.append(max(y - low, 0.0))
            above.append(max(high - y, 0.0))
        ax.errorbar(
            xs,
            ys,
            yerr=[below, above],
            fmt="o",
            capsize=4,
            markersize=6,
            color=_color(classifier, classifiers),
            label=_name(classifier),
        )
    ax.set_xticks(range(len(groups)), [f"{m}\n{ly}" for m, ly in groups])
    ax.set_xlim(-0.6, len(groups) - 0.4)
    ax.set_ylabel(f"test accuracy ({ci_label})")
    ax.set_title("Test accuracy of the selected classifiers")
    ax.grid(axis="y", alpha=0.3)
    figure.legend(loc="outside right upper", fontsize="small")  # never over the error bars
    figure.savefig(path)


def _plot_c_curve(df: pd.DataFrame, path: Path) -> bool:
    """Test and CV accuracy against C per classifier, one panel per model/layer."""
    swept = df[(df["classifier"] != "softmax") & df["C"].map(_finite)]
    if swept.empty:
        return False
    groups = _groups(df)
    classifiers = list(dict.fromkeys(df["classifier"]))
    ncols = min(3, len(groups))
    nrows = math.ceil(len(groups) / ncols)
    figure = _new_figure(4.6 * ncols + 2.2, 3.6 * nrows)
    axes = figure.subplots(nrows, ncols, squeeze=False).ravel()
    shown: dict[str, Line2D] = {}
    for ax, (model, layer, rows) in zip(axes, groups):
        for classifier, curve in rows[rows["C"].map(_finite)].groupby("classifier", sort=False):
            if classifier == "softmax":
                continue
            color = _color(str(classifier), classifiers)
            curve = curve.sort_values("C")
            ax.plot(curve["C"], curve["accuracy"], "-o", color=color, markersize=4)
            if curve["cv_accuracy"].map(_finite).any():
                ax.plot(curve["C"], curve["cv_accuracy"], ":s", color=color, markersize=3)
            chosen = curve[curve["selected"]]
            ax.plot(chosen["C"], chosen["accuracy"], "*", color=color, markersize=13)
            shown[_name(str(classifier))] = Line2D([], [], color=color, lw=2)
        softmax = rows[(rows["classifier"] == "softmax") & rows["accuracy"].map(_finite)]
        if not softmax.empty:
            ax.axhline(float(softmax["accuracy"].iloc[0]), color="0.3", ls="--", lw=1.2)
        ax.set_xscale("log")
        ax.set_xlabel("C")
        ax.set_ylabel("accuracy")
        ax.set_title(f"{model} / {layer}")
        ax.grid(alpha=0.3)
    for ax in axes[len(groups) :]:
        ax.set_visible(False)
    styles = {
        "test accuracy": Line2D([], [], color="0.4", ls="-", marker="o", markersize=4),
        "CV accuracy (train)": Line2D([], [], color="0.4", ls=":", marker="s", markersize=3),
        "C chosen by CV": Line2D([], [], color="0.4", ls="none", marker="*", markersize=11),
        "softmax head": Line2D([], [], color="0.3", ls="--"),
    }
    handles = {**shown, **styles}
    figure.legend(
        list(handles.values()), list(handles.keys()), loc="outside right upper", fontsize="small"
    )
    figure.savefig(path)
    return True


def _confusion_figure(
    df: pd.DataFrame, comparison: Comparison, model: str, layer: str
) -> tuple[Figure, list[np.ndarray]] | None:
    """Row-normalised confusion matrices of the softmax head and the SVM chosen by CV.

    Returns the figure and the matrices it shows (rows: true class, summing to 1; a class
    absent from the test set is a row of zeros), or None without predictions to show.
    """
    y_true = comparison.y_true
    rows = df[(df["model"] == model) & (df["layer"] == layer)]
    softmax, rival = _softmax_and_rival(rows[rows["selected"]])
    panels = []
    for row in (softmax, rival):
        if row is None:
            continue
        pred = comparison.prediction(model, layer, row["classifier"])
        if pred is not None and y_true is not None and len(pred) == len(y_true):
            panels.append((row, pred))
    if not panels:
        return None
    labels = comparison.classes
    if labels is None:
        labels = np.unique(np.concatenate([y_true, *(pred for _, pred in panels)]))
    n_labels = len(labels)
    figure = _new_figure(5.2 * len(panels), 4.8)
    axes = figure.subplots(1, len(panels), squeeze=False).ravel()
    matrices = []
    for ax, (row, pred) in zip(axes, panels):
        # Row-normalised: each true class's row is where its test images went, so a rare
        # class's errors show as plainly as a common one's.
        matrix = confusion_matrix(y_true, pred, labels=labels, normalize="true")
        matrices.append(matrix)
        ConfusionMatrixDisplay(matrix, display_labels=labels).plot(
            ax=ax,
            colorbar=False,
            cmap="Blues",
            include_values=n_labels <= 20,
            values_format=".2f",
            xticks_rotation="vertical" if n_labels > 10 else "horizontal",
            im_kw={"vmin": 0.0, "vmax": 1.0},
        )
        if n_labels > 30:
            ax.set_xticks([])
            ax.set_yticks([])
        ax.set_title(f"{_name(row['classifier'])}: accuracy {_num(row['accuracy'], '.3f')}")
    figure.suptitle(f"Confusion matrices, {model} / {layer} (test set, each row sums to 1)")
    return figure, matrices


def _plot_confusions(df: pd.DataFrame, comparison: Comparison, out: Path) -> dict[str, Path]:
    """Row-normalised confusion matrices of the softmax head and the best SVM, per model/layer."""
    if comparison.y_true is None or not comparison.predictions:
        return {}
    written: dict[str, Path] = {}
    for model, layer, _ in _groups(df):
        drawn = _confusion_figure(df, comparison, model, layer)
        if drawn is None:
            continue
        name = f"confusion_{_safe(model)}_{_safe(layer)}.png"
        drawn[0].savefig(out / name)
        written[name] = out / name
    return written
