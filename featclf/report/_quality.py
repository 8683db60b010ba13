"""How good each selected classifier is beyond its accuracy: per class, calibration, training.

Per-class precision, recall and F1 (scikit-learn's ``classification_report``), the top-label
expected calibration error of every classifier whose scores are probabilities, and the plots
that go with them: each softmax network's training curves and a reliability diagram per
model/layer. Everything is computed from a :class:`~featclf.comparison.Comparison`'s stored
test predictions, scores and training histories; nothing is refitted.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from sklearn.metrics import classification_report

from featclf.comparison import Comparison, ResultKey
from featclf.report._plots import _new_figure
from featclf.report._tables import _color, _finite, _groups, _name, _safe

__all__ = ["expected_calibration_error"]

# Beyond this many classes, or this many classifiers, the per-class table shows F1 only:
# three numbers per classifier per class would no longer fit across a page.
_FULL_TABLE_MAX_CLASSES = 20
_FULL_TABLE_MAX_CLASSIFIERS = 3
_AVERAGES = ("macro avg", "weighted avg")


def expected_calibration_error(
    y_true: Sequence[Any],
    y_pred: Sequence[Any],
    confidence: Sequence[float],
    *,
    n_bins: int = 10,
) -> float:
    """Top-label expected calibration error: confidence of the predicted class vs correctness.

    The confidences (the probability a classifier gave the class it predicted) are put into
    ``n_bins`` equal-width bins over [0, 1] (bin ``b`` holds ``(b/n, (b+1)/n]``, the first one
    0 too); ECE is the mean over bins of ``|accuracy - mean confidence|`` weighted by the
    fraction of images in the bin. 0 is perfectly calibrated. Only the predicted class's
    probability counts (the top-label ECE), not the whole probability vector.

    Here the four images fall in four bins; the third is wrong at 0.6:
    ``(0.1 + 0.2 + 0.6 + 0.05) / 4``.

    Parameters
    ----------
    y_true, y_pred : array-like of shape (n,)
        True and predicted labels.
    confidence : array-like of shape (n,)
        Probability of each predicted label, in [0, 1].
    n_bins : int, default=10
        Number of equal-width bins.

    Returns
    -------
    float
        The expected calibration error, in [0, 1] (NaN for no images).

    Examples
    --------
    >>> from featclf.report._quality import expected_calibration_error
    >>> round(expected_calibration_error([0, 1, 1, 0], [0, 1, 0, 0], [0.9, 0.8, 0.6, 0.95]), 4)
    0.2375
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    conf = np.asarray(confidence, dtype=np.float64)
    if not (len(y_true) == len(y_pred) == len(conf)):
        raise ValueError(
            f"y_true, y_pred and confidence must have the same length, got {len(y_true)}, "
            f"{len(y_pred)} and {len(conf)}."
        )
    if len(conf) == 0:
        return math.nan
    correct = (y_true == y_pred).astype(np.float64)
    bins = _bin_index(conf, n_bins)
    total = 0.0
    for b in np.unique(bins):
        inside = bins == b
        total += inside.mean() * abs(correct[inside].mean() - conf[inside].mean())
    return float(total)


def _bin_index(conf: np.ndarray, n_bins: int) -> np.ndarray:
    """Equal-width bin of each confidence: (b/n, (b+1)/n] is bin b, 0 goes to bin 0."""
    return np.clip(np.ceil(conf * n_bins - 1e-9).astype(int) - 1, 0, n_bins - 1)


def _selected_keys(df: pd.DataFrame, comparison: Comparison) -> list[tuple[str, str, list[str]]]:
    """(model, layer, classifiers with test predictions of every test image) per group."""
    n = None if comparison.y_true is None else len(comparison.y_true)
    groups = []
    for model, layer, rows in _groups(df):
        names = [
            str(c) for c in dict.fromkeys(rows[rows["selected"]]["classifier"])
            if (pred := comparison.prediction(model, layer, str(c))) is not None
            and len(pred) == n
        ]  # fmt: skip
        if names:
            groups.append((model, layer, names))
    return groups


def per_class_reports(
    df: pd.DataFrame, comparison: Comparison
) -> list[tuple[str, str, dict[str, dict]]]:
    """``classification_report(output_dict=True)`` of each selected classifier, per group."""
    if comparison.y_true is None:
        return []
    labels = None if comparison.classes is None else list(comparison.classes)
    out = []
    for model, layer, names in _selected_keys(df, comparison):
        reports = {
            name: classification_report(
                comparison.y_true, comparison.prediction(model, layer, name), labels=labels,
                output_dict=True, zero_division=0,
            )
            for name in names
        }  # fmt: skip
        out.append((model, layer, reports))
    return out


def per_class_table(reports: dict[str, dict]) -> pd.DataFrame:
    """One group's per-class table: a row per class (then the averages), columns per classifier.

    Columns ``class``, then ``<classifier> P``, ``R``, ``F1`` for each classifier (F1 only when
    there are many classes or classifiers), then ``support``; numbers are strings to 3 places.
    """
    first = next(iter(reports.values()))
    classes = [k for k in first if k not in (*_AVERAGES, "accuracy", "micro avg")]
    full = len(classes) <= _FULL_TABLE_MAX_CLASSES and len(reports) <= _FULL_TABLE_MAX_CLASSIFIERS
    metrics = (
        [("precision", "P"), ("recall", "R"), ("f1-score", "F1")] if full else [("f1-score", "F1")]
    )
    rows = []
    for label in (*classes, *_AVERAGES):
        row: dict[str, str] = {"class": label}
        for name, report in reports.items():
            for key, short in metrics:
                row[f"{_name(name)} {short}"] = f"{report[label][key]:.3f}"
        row["support"] = str(int(first[label]["support"]))
        rows.append(row)
    return pd.DataFrame(rows)


def calibration_table(df: pd.DataFrame, comparison: Comparison, n_bins: int = 10) -> pd.DataFrame:
    """Top-label ECE (and log-loss when recorded) of each probabilistic selected classifier."""
    rows = []
    for model, layer, names in _selected_keys(df, comparison):
        group = df[(df["model"] == model) & (df["layer"] == layer) & df["selected"]]
        for name in names:
            key = ResultKey(model, layer, name)
            if comparison.score_kinds.get(key) != "probability" or key not in comparison.scores:
                continue
            pred, conf = comparison.predictions[key], comparison.scores[key]
            if len(conf) != len(pred):
                continue
            loss = group.loc[group["classifier"] == name, "log_loss"]
            rows.append({
                "model": model, "layer": layer, "classifier": name,
                "ece": expected_calibration_error(comparison.y_true, pred, conf, n_bins=n_bins),
                "mean_confidence": float(np.mean(conf)),
                "accuracy": float(np.mean(pred == comparison.y_true)),
                "log_loss": float(loss.iloc[0]) if len(loss) and _finite(loss.iloc[0])
                else math.nan,
            })  # fmt: skip
    return pd.DataFrame(rows, columns=["model", "layer", "classifier", "ece", "mean_confidence",
                                       "accuracy", "log_loss"])  # fmt: skip


def calibration_display(table: pd.DataFrame) -> pd.DataFrame:
    """The calibration table as the report shows it."""
    return pd.DataFrame({
        "model / layer": [f"{m} / {ly}" for m, ly in zip(table["model"], table["layer"])],
        "classifier": [_name(c) for c in table["classifier"]],
        "top-label ECE": [f"{v:.3f}" for v in table["ece"]],
        "mean confidence": [f"{v:.3f}" for v in table["mean_confidence"]],
        "accuracy": [f"{v:.3f}" for v in table["accuracy"]],
        "log-loss": [f"{v:.3f}" if _finite(v) else "\u2014" for v in table["log_loss"]],
    })  # fmt: skip


def reliability_figure(
    comparison: Comparison, model: str, layer: str, names: Sequence[str], n_bins: int = 10
) -> Figure:
    """Reliability diagram: accuracy against mean confidence per bin, one line per classifier."""
    figure = _new_figure(7.4, 4.6)
    ax = figure.add_subplot()
    ax.plot([0, 1], [0, 1], color="0.6", ls="--", lw=1, label="perfectly calibrated")
    every = list(names)
    for name in names:
        key = ResultKey(model, layer, name)
        conf = comparison.scores[key]
        correct = (comparison.predictions[key] == comparison.y_true).astype(np.float64)
        bins = _bin_index(conf, n_bins)
        used = np.unique(bins)
        ax.plot([conf[bins == b].mean() for b in used], [correct[bins == b].mean() for b in used],
                "-o", color=_color(name, every), markersize=4, label=_name(name))  # fmt: skip
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.02)
    ax.set_xlabel("confidence (probability of the predicted class)")
    ax.set_ylabel("accuracy")
    # Two lines: a long layer label ("penultimate + 4 views") must not run under the legend.
    ax.set_title(f"Reliability, {model} / {layer}\n(test set, {n_bins} bins)")
    ax.grid(alpha=0.3)
    figure.legend(loc="outside right upper", fontsize="small")
    return figure


def plot_reliability(table: pd.DataFrame, comparison: Comparison, out: Path) -> dict[str, Path]:
    """A reliability diagram per model/layer with a probabilistic classifier."""
    written: dict[str, Path] = {}
    for (model, layer), rows in table.groupby(["model", "layer"], sort=False):
        figure = reliability_figure(comparison, str(model), str(layer), list(rows["classifier"]))
        name = f"reliability_{_safe(str(model))}_{_safe(str(layer))}.png"
        figure.savefig(out / name)
        written[name] = out / name
    return written


def training_figure(model: str, histories: dict[str, pd.DataFrame]) -> Figure:
    """Loss and accuracy per epoch of one model's softmax networks, train and validation.

    ``histories`` maps the baseline name (``softmax``, ``softmax_finetune``) to its
    ``SoftmaxClassifier.history_``; validation curves are drawn only where recorded.
    """
    figure = _new_figure(11.0, 4.0)
    loss_ax, acc_ax = figure.subplots(1, 2)
    every = list(histories)
    for baseline, history in histories.items():
        color = _color(baseline, every)
        epochs = history["epoch"].to_numpy()
        for ax, what in ((loss_ax, "loss"), (acc_ax, "accuracy")):
            for split, style in (("train", "-"), ("val", "--")):
                column = f"{split}_{what}"
                if column not in history:
                    continue
                values = pd.to_numeric(history[column], errors="coerce").to_numpy(np.float64)
                keep = np.isfinite(values)
                if keep.any():
                    label = f"{_name(baseline)}, {'training' if split == 'train' else 'validation'}"
                    ax.plot(epochs[keep], values[keep], style, marker="o", markersize=3,
                            color=color, label=label)  # fmt: skip
    loss_ax.set_ylabel("cross-entropy loss")
    acc_ax.set_ylabel("accuracy")
    for ax in (loss_ax, acc_ax):
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.grid(alpha=0.3)
    figure.suptitle(f"Training of the softmax network, {model}")
    figure.legend(*loss_ax.get_legend_handles_labels(), loc="outside right upper",
                  fontsize="small")  # fmt: skip
    return figure


def plot_training(comparison: Comparison, out: Path) -> dict[str, Path]:
    """``training_<model>.png`` for each model with a recorded training history."""
    by_model: dict[str, dict[str, pd.DataFrame]] = {}
    for (model, baseline), history in comparison.histories.items():
        if isinstance(history, pd.DataFrame) and "epoch" in history and len(history):
            by_model.setdefault(str(model), {})[str(baseline)] = history
    written: dict[str, Path] = {}
    for model, histories in by_model.items():
        name = f"training_{_safe(model)}.png"
        training_figure(model, histories).savefig(out / name)
        written[name] = out / name
    return written
