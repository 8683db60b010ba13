"""Turn a ``featclf.compare`` results table into a report: Markdown, HTML, CSV and PNG plots.

The report opens with a verdict computed from the numbers (is the best SVM on the deep features
better, worse or no different from the CNN's own softmax head?), then the setup, a table of the
selected classifiers per model/layer, and the plots. ``report.html`` is self-contained (plots
embedded as base64 PNG); ``report.md`` links the PNG files next to it.

Plots are drawn on :class:`matplotlib.figure.Figure` objects with the Agg canvas, never through
``pyplot``'s global state, so writing a report neither changes the caller's backend nor leaves
figures open.
"""

from __future__ import annotations

import base64
import html
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from sklearn.metrics import ConfusionMatrixDisplay

from featclf.pipelines import CLASSIFIERS

__all__ = ["SUMMARY_COLUMNS", "summary_table", "verdict", "write_report"]

#: Columns of :func:`summary_table`, in order (those missing from the results are left out).
SUMMARY_COLUMNS: tuple[str, ...] = (
    "model",
    "layer",
    "classifier",
    "C",
    "accuracy",
    "accuracy_ci_low",
    "accuracy_ci_high",
    "macro_f1",
    "log_loss",
    "diff_vs_softmax",
    "diff_ci_low",
    "diff_ci_high",
    "mcnemar_p",
    "fit_time_s",
    "predict_time_s",
    "extract_time_s",
)

_REQUIRED = ("model", "layer", "classifier", "accuracy")
_OPTIONAL = (
    "C",
    "cv_accuracy",
    "accuracy_ci_low",
    "accuracy_ci_high",
    "macro_f1",
    "log_loss",
    "fit_time_s",
    "predict_time_s",
    "extract_time_s",
    "extract_images_per_s",
    "n_train",
    "n_test",
    "n_features",
    "diff_vs_softmax",
    "diff_ci_low",
    "diff_ci_high",
    "mcnemar_b",
    "mcnemar_c",
    "mcnemar_p",
)
# "softmax_finetune": a transfer run's pre-trained network fine-tuned on the data (compare with
# weights=...); "softmax" is then the network trained from scratch, still the reference.
_BASELINES = ("softmax", "softmax_finetune")
_ORDER = (*_BASELINES, *CLASSIFIERS)
_SVMS = ("linear_svm", "crammer_singer_svm", "rbf_svm")
_NAMES = {
    "softmax": "softmax head",
    "softmax_finetune": "fine-tuned softmax network",
    "linear_svm": "linear SVM",
    "crammer_singer_svm": "Crammer-Singer SVM",
    "rbf_svm": "RBF SVM",
    "logistic": "logistic regression",
}
_COLORS = {
    "softmax": "black",
    "softmax_finetune": "tab:gray",
    "linear_svm": "tab:blue",
    "crammer_singer_svm": "tab:orange",
    "rbf_svm": "tab:green",
    "logistic": "tab:purple",
}
_EXTRA_COLORS = ("tab:red", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")
_ALPHA = 0.05
_DASH = "\u2014"

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


# --------------------------------------------------------------------------- helpers


def _finite(value: Any) -> bool:
    """True when ``value`` is a finite number (not None, NaN, NA or text)."""
    try:
        return value is not None and not pd.isna(value) and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _num(value: Any, spec: str) -> str:
    """Format a number, or an em dash when it is missing."""
    return format(float(value), spec) if _finite(value) else _DASH


def _signed(value: float) -> str:
    """Format a difference with its sign and 3 decimals (4 when it would round to zero)."""
    return f"{value:+.4f}" if 0 < abs(value) < 0.0005 else f"{value:+.3f}"


def _pvalue(value: Any) -> str:
    """Format a p-value: ``<0.001``, 3 significant digits below 0.1, else 2 decimals."""
    if not _finite(value):
        return _DASH
    p = float(value)
    if p < 0.001:
        return "<0.001"
    return f"{p:.3g}" if p < 0.1 else f"{p:.2f}"


def _seconds(value: Any) -> str:
    """Format a duration in seconds with 3 significant digits."""
    if not _finite(value):
        return _DASH
    return f"{float(value):.0f}" if float(value) >= 100 else f"{float(value):.3g}"


def _name(classifier: str) -> str:
    """Human name of a classifier column value."""
    return _NAMES.get(classifier, classifier.replace("_", " "))


def _color(classifier: str, seen: list[str]) -> str:
    """A stable colour per classifier; unknown names take the next spare colour."""
    if classifier in _COLORS:
        return _COLORS[classifier]
    unknown = [c for c in seen if c not in _COLORS]
    return _EXTRA_COLORS[unknown.index(classifier) % len(_EXTRA_COLORS)]


def _safe(text: str) -> str:
    """A file-name-safe version of a model or layer name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def _prepare(results: pd.DataFrame) -> pd.DataFrame:
    """Validate the results table; return a sorted copy with every optional column present."""
    if not isinstance(results, pd.DataFrame):
        raise TypeError(f"results must be a pandas DataFrame, got {type(results).__name__}.")
    missing = [c for c in _REQUIRED if c not in results.columns]
    if missing:
        raise ValueError(
            f"results lacks the column(s) {missing}; pass the table featclf.compare.compare() "
            f"returns (it needs at least {list(_REQUIRED)})."
        )
    if results.empty:
        raise ValueError("results has no rows: there is nothing to report.")
    df = results.copy()
    df.attrs = {}
    if "dataset" in df and df["dataset"].dropna().nunique() > 1:
        raise ValueError(
            f"results holds several datasets {sorted(df['dataset'].dropna().unique())}; "
            "write one report per dataset (filter the rows by the 'dataset' column)."
        )
    for column in _OPTIONAL:
        if column not in df:
            df[column] = np.nan
    # Missing values count as not selected (`eq` avoids fillna's object downcasting).
    df["selected"] = df["selected"].eq(True) if "selected" in df else True
    for column in ("model", "layer", "classifier"):
        df[column] = df[column].astype(str)
    groups = {g: i for i, g in enumerate(dict.fromkeys(zip(df["model"], df["layer"])))}
    ranks = {c: i for i, c in enumerate(_ORDER)}
    df["_group"] = [groups[g] for g in zip(df["model"], df["layer"])]
    df["_rank"] = [ranks.get(c, len(ranks)) for c in df["classifier"]]
    df = df.sort_values(["_group", "_rank", "classifier", "C"], kind="stable")
    return df.drop(columns=["_group", "_rank"]).reset_index(drop=True)


def _groups(df: pd.DataFrame) -> list[tuple[str, str, pd.DataFrame]]:
    """Split the (prepared) table into (model, layer, rows) in order of appearance."""
    keys = dict.fromkeys(zip(df["model"], df["layer"]))
    return [(m, ly, df[(df["model"] == m) & (df["layer"] == ly)]) for m, ly in keys]


def _softmax_and_rival(selected: pd.DataFrame) -> tuple[pd.Series | None, pd.Series | None]:
    """The softmax row and the best selected SVM row (else the best other classifier)."""
    softmax = selected[selected["classifier"] == "softmax"]
    others = selected[selected["classifier"] != "softmax"]
    svms = others[others["classifier"].isin(_SVMS)]
    pool = svms if not svms.empty else others
    pool = pool[pool["accuracy"].notna()]
    rival = pool.loc[pool["accuracy"].astype(float).idxmax()] if not pool.empty else None
    return (softmax.iloc[0] if not softmax.empty else None), rival


def _dataset(df: pd.DataFrame, config: Mapping[str, Any]) -> str:
    """The dataset's name, from the rows or else the config."""
    if "dataset" in df and df["dataset"].notna().any():
        return str(df["dataset"].dropna().iloc[0])
    return str(config.get("dataset", "this dataset"))


def _ci_label(config: Mapping[str, Any]) -> str:
    """E.g. ``95% CI`` from the config's confidence level (default 0.95)."""
    confidence = config.get("confidence", 0.95)
    return f"{float(confidence) * 100:g}% CI" if _finite(confidence) else "95% CI"


# --------------------------------------------------------------------------- verdict


def _verdict_sentence(
    dataset: str,
    model: str,
    layer: str,
    softmax: pd.Series | None,
    rival: pd.Series | None,
    ci_label: str,
    reference: str = "the softmax head",
) -> str | None:
    """One sentence comparing the best SVM of one model/layer with its softmax head."""
    if rival is None and softmax is None:
        return None
    if rival is None:
        return (
            f"On {dataset}, only the softmax head of {model} was evaluated "
            f"({_num(softmax['accuracy'], '.3f')} accuracy)."
        )
    subject = f"the {_name(rival['classifier'])} on {model}'s {layer} features"
    if softmax is None:
        return (
            f"On {dataset}, {subject} reached {_num(rival['accuracy'], '.3f')} accuracy; "
            "no softmax head was evaluated to compare it with."
        )
    diff = rival["diff_vs_softmax"]
    if not _finite(diff):
        diff = float(rival["accuracy"]) - float(softmax["accuracy"])
    diff = float(diff)
    details = [f"difference {_signed(diff)}"]
    low, high = rival["diff_ci_low"], rival["diff_ci_high"]
    has_ci = _finite(low) and _finite(high)
    if has_ci:
        details[0] += f", {ci_label} [{_signed(float(low))}, {_signed(float(high))}]"
    p = rival["mcnemar_p"]
    if _finite(p):
        details.append("McNemar p " + ("< 0.001" if float(p) < 0.001 else f"= {_pvalue(p)}"))
        significant: bool | None = float(p) < _ALPHA
        test = "at the 5% level"
    elif has_ci:
        significant = not float(low) <= 0.0 <= float(high)
        test = f"(the {ci_label} {'excludes' if significant else 'contains'} zero)"
    else:
        significant = None
        test = ""
    short = "the SVM" if rival["classifier"] in _SVMS else f"the {_name(rival['classifier'])}"
    if significant is None:
        conclusion = "no significance test is available."
    elif significant and diff > 0:
        conclusion = f"{short} is significantly better than {reference} {test}."
    elif significant and diff < 0:
        conclusion = f"{short} is significantly worse than {reference} {test}."
    else:
        conclusion = f"no significant difference {test} {_DASH} {short} matches {reference}."
    return (
        f"On {dataset}, {subject} reached {_num(rival['accuracy'], '.3f')} accuracy vs "
        f"{_num(softmax['accuracy'], '.3f')} for {reference} ({'; '.join(details)}): "
        f"{conclusion}"
    )


def verdict(results: pd.DataFrame) -> str:
    """Summarise, in one paragraph, whether the SVMs beat the softmax head.

    For each model/layer the best selected SVM (highest test accuracy; the best other
    classifier when no SVM was run) is compared with the softmax head: accuracies, the
    difference with its confidence interval, McNemar's p-value, and a conclusion at the 5% level
    (from the p-value, else from whether the interval contains zero).

    Parameters
    ----------
    results : pandas.DataFrame
        The table returned by ``featclf.compare.compare`` (see :func:`write_report`).

    Returns
    -------
    str
        One sentence per model/layer, joined into a paragraph.

    Examples
    --------
    >>> import pandas as pd
    >>> from featclf.report import verdict
    >>> results = pd.DataFrame({
    ...     "dataset": "mnist5k", "model": "lenet5", "layer": "penultimate",
    ...     "classifier": ["softmax", "linear_svm"], "accuracy": [0.958, 0.963],
    ...     "diff_vs_softmax": [None, 0.005], "diff_ci_low": [None, -0.004],
    ...     "diff_ci_high": [None, 0.014], "mcnemar_p": [None, 0.41]})
    >>> print(verdict(results))  # doctest: +NORMALIZE_WHITESPACE
    On mnist5k, the linear SVM on lenet5's penultimate features reached 0.963 accuracy vs 0.958
    for the softmax head (difference +0.005, 95% CI [-0.004, +0.014]; McNemar p = 0.41): no
    significant difference at the 5% level — the SVM matches the softmax head.
    """
    return _verdict(_prepare(results), dict(results.attrs.get("config") or {}))


def _verdict(df: pd.DataFrame, config: Mapping[str, Any]) -> str:
    """The verdict paragraph of a prepared results table."""
    dataset, ci_label = _dataset(df, config), _ci_label(config)
    sentences = []
    for model, layer, rows in _groups(df):
        selected = rows[rows["selected"]]
        softmax, rival = _softmax_and_rival(selected)
        finetuned = selected[selected["classifier"] == "softmax_finetune"]
        # A transfer run: the reference is the network trained from scratch on the data.
        reference = "the softmax network trained from scratch" if len(finetuned) else (
            "the softmax head")
        sentence = _verdict_sentence(dataset, model, layer, softmax, rival, ci_label, reference)
        if sentence:
            sentences.append(sentence)
        if len(finetuned) and softmax is not None:
            sentences.append(_finetune_sentence(model, finetuned.iloc[0], softmax, ci_label))
    return " ".join(sentences)


def _finetune_sentence(model: str, finetuned: pd.Series, softmax: pd.Series,
                       ci_label: str) -> str:
    """One sentence on fine-tuning the pre-trained network vs training it from scratch."""
    details = []
    if _finite(finetuned["diff_vs_softmax"]):
        details.append(f"difference {_signed(float(finetuned['diff_vs_softmax']))}")
        if _finite(finetuned["diff_ci_low"]) and _finite(finetuned["diff_ci_high"]):
            details[0] += (f", {ci_label} [{_signed(float(finetuned['diff_ci_low']))}, "
                           f"{_signed(float(finetuned['diff_ci_high']))}]")
    if _finite(finetuned["mcnemar_p"]):
        p = finetuned["mcnemar_p"]
        details.append("McNemar p " + ("< 0.001" if float(p) < 0.001 else f"= {_pvalue(p)}"))
    shown = f" ({'; '.join(details)})" if details else ""
    return (
        f"Fine-tuning the pre-trained {model} reached {_num(finetuned['accuracy'], '.3f')} "
        f"accuracy vs {_num(softmax['accuracy'], '.3f')} from scratch{shown}."
    )


# --------------------------------------------------------------------------- tables


def summary_table(results: pd.DataFrame) -> pd.DataFrame:
    """Return the selected classifiers, one row each, with the columns a terminal summary shows.

    Parameters
    ----------
    results : pandas.DataFrame
        The table returned by ``featclf.compare.compare`` (see :func:`write_report`).

    Returns
    -------
    pandas.DataFrame
        The rows with ``selected`` True (the softmax head first in each model/layer), the
        columns of :data:`SUMMARY_COLUMNS` that ``results`` has, numbers unformatted.

    Examples
    --------
    >>> import pandas as pd
    >>> from featclf.report import summary_table
    >>> results = pd.DataFrame({
    ...     "model": "lenet5", "layer": "penultimate",
    ...     "classifier": ["linear_svm", "linear_svm", "softmax"], "C": [0.1, 1.0, None],
    ...     "selected": [False, True, True], "accuracy": [0.95, 0.96, 0.958]})
    >>> summary_table(results)[["classifier", "C", "accuracy"]]
       classifier    C  accuracy
    0     softmax  NaN     0.958
    1  linear_svm  1.0     0.960
    """
    df = _prepare(results)
    columns = [c for c in SUMMARY_COLUMNS if c in results.columns]
    return df.loc[df["selected"], columns].reset_index(drop=True)


def _display_table(rows: pd.DataFrame, ci_label: str) -> pd.DataFrame:
    """The selected rows of one model/layer as formatted strings, ready for Markdown or HTML."""
    records = []
    for _, row in rows.iterrows():
        accuracy = _num(row["accuracy"], ".3f")
        if _finite(row["accuracy_ci_low"]) and _finite(row["accuracy_ci_high"]):
            accuracy += f" [{row['accuracy_ci_low']:.3f}, {row['accuracy_ci_high']:.3f}]"
        diff = _signed(float(row["diff_vs_softmax"])) if _finite(row["diff_vs_softmax"]) else _DASH
        if _finite(row["diff_ci_low"]) and _finite(row["diff_ci_high"]):
            low, high = float(row["diff_ci_low"]), float(row["diff_ci_high"])
            diff += f" [{_signed(low)}, {_signed(high)}]"
        records.append(
            {
                "Classifier": _name(row["classifier"]),
                "C": _num(row["C"], "g"),
                "CV accuracy": _num(row["cv_accuracy"], ".3f"),
                f"Accuracy [{ci_label}]": accuracy,
                "Macro-F1": _num(row["macro_f1"], ".3f"),
                "Log-loss": _num(row["log_loss"], ".3f"),
                f"Δ vs softmax [{ci_label}]": diff,
                "McNemar p": _pvalue(row["mcnemar_p"]),
                "Fit (s)": _seconds(row["fit_time_s"]),
                "Predict (s)": _seconds(row["predict_time_s"]),
                "Extract (s)": _seconds(row["extract_time_s"]),
            }
        )
    return pd.DataFrame.from_records(records)


def _group_note(rows: pd.DataFrame) -> str | None:
    """One line on the feature set of a model/layer: sizes and extraction throughput."""
    features = rows[~rows["classifier"].isin(_BASELINES)]
    source = features if not features.empty else rows
    first = source.iloc[0]
    parts = []
    if _finite(first["n_features"]) and not features.empty:
        parts.append(f"{int(first['n_features'])} features per image")
    if _finite(first["n_train"]) and _finite(first["n_test"]):
        parts.append(f"{int(first['n_train'])} training / {int(first['n_test'])} test images")
    if _finite(first["extract_time_s"]) and not features.empty:
        speed = first["extract_images_per_s"]
        rate = f" ({float(speed):,.0f} images/s)" if _finite(speed) else ""
        parts.append(f"feature extraction {_seconds(first['extract_time_s'])} s{rate}")
    if not parts:
        return None
    text = "; ".join(parts) + "."
    return text[0].upper() + text[1:]


def _setup_items(df: pd.DataFrame, config: Mapping[str, Any], classes: Any) -> list[str]:
    """The setup section: the config's entries, then the class list."""

    def show(value: Any) -> str:
        if isinstance(value, Mapping):
            return ", ".join(f"{k}={show(v)}" for k, v in value.items())
        if isinstance(value, list | tuple | set):
            return ", ".join(show(v) for v in value)
        return str(value)

    items = [f"{key}: {show(value)}" for key, value in config.items()]
    if classes is not None and len(classes):
        shown = ", ".join(map(str, list(classes)[:20])) + (", ..." if len(classes) > 20 else "")
        items.append(f"classes ({len(classes)}): {shown}")
    if not items:
        items.append(f"{len(df)} result rows; no configuration was recorded.")
    return items


# --------------------------------------------------------------------------- plots


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


def _plot_confusions(df: pd.DataFrame, attrs: Mapping[str, Any], out: Path) -> dict[str, Path]:
    """Confusion matrices of the softmax head and the best SVM, one file per model/layer."""
    predictions = attrs.get("predictions") or {}
    y_true = attrs.get("y_true")
    if y_true is None or not predictions:
        return {}
    y_true = np.asarray(y_true)
    classes = attrs.get("classes")
    labels = None if classes is None else np.asarray(list(classes))
    written: dict[str, Path] = {}
    for model, layer, rows in _groups(df):
        softmax, rival = _softmax_and_rival(rows[rows["selected"]])
        panels = []
        for row in (softmax, rival):
            if row is None:
                continue
            pred = predictions.get(f"{model}|{layer}|{row['classifier']}")
            if pred is not None and len(pred) == len(y_true):
                panels.append((row, np.asarray(pred)))
        if not panels:
            continue
        figure = _new_figure(5.2 * len(panels), 4.8)
        axes = figure.subplots(1, len(panels), squeeze=False).ravel()
        n_labels = len(labels) if labels is not None else len(np.unique(y_true))
        for ax, (row, pred) in zip(axes, panels):
            ConfusionMatrixDisplay.from_predictions(
                y_true,
                pred,
                labels=labels,
                ax=ax,
                colorbar=False,
                cmap="Blues",
                include_values=n_labels <= 20,
                xticks_rotation="vertical" if n_labels > 10 else "horizontal",
            )
            if n_labels > 30:
                ax.set_xticks([])
                ax.set_yticks([])
            ax.set_title(f"{_name(row['classifier'])}: accuracy {_num(row['accuracy'], '.3f')}")
        figure.suptitle(f"Confusion matrices, {model} / {layer} (test set)")
        name = f"confusion_{_safe(model)}_{_safe(layer)}.png"
        figure.savefig(out / name)
        written[name] = out / name
    return written


# --------------------------------------------------------------------------- rendering

Block = tuple[Any, ...]


def _blocks(
    df: pd.DataFrame, attrs: Mapping[str, Any], title: str | None, images: list[str]
) -> list[Block]:
    """The report's content, independent of the output format."""
    config = dict(attrs.get("config") or {})
    dataset, ci_label = _dataset(df, config), _ci_label(config)
    blocks: list[Block] = [
        ("h", 1, title or f"Deep-feature classifiers vs the softmax head on {dataset}")
    ]
    blocks.append(("p", _verdict(df, config) or "No classifier results to compare."))
    blocks += [("h", 2, "Setup"), ("ul", _setup_items(df, config, attrs.get("classes")))]
    blocks.append(("h", 2, "Results"))
    intervals = ci_label.replace("CI", "bootstrap percentile intervals")
    method = (
        "Selected classifiers per model and layer: C chosen by cross-validation on the "
        f"training features. Intervals are {intervals} over the test images; Δ is the "
        "classifier's accuracy minus the softmax head's, on the same test images (paired), and "
        "McNemar's test compares their errors. The full C sweep is in results.csv."
    )
    blocks.append(("p", method))
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
                "Confusion matrices on the test set: the softmax head and the best SVM."
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
    results: pd.DataFrame, out_dir: str | Path, *, title: str | None = None
) -> dict[str, Path]:
    """Write the comparison report: Markdown, self-contained HTML, CSV and PNG plots.

    Parameters
    ----------
    results : pandas.DataFrame
        The table ``featclf.compare.compare`` returns: one row per (model, layer, classifier,
        C) with at least ``model``, ``layer``, ``classifier`` and ``accuracy``; the other
        columns (``selected``, ``C``, ``cv_accuracy``, CI bounds, ``macro_f1``, ``log_loss``,
        times, ``diff_vs_softmax`` and its CI, ``mcnemar_p``, ...) are used when present.
        ``diff_vs_softmax`` is the classifier's accuracy minus the softmax head's.
        ``results.attrs`` may hold ``"config"`` (printed as the setup), ``"classes"``,
        ``"y_true"`` and ``"predictions"`` (``"model|layer|classifier"`` -> test predictions of
        the selected rows; without them the confusion matrices are skipped).
    out_dir : str or path-like
        Directory to write into; created if needed. Existing files of the same names are
        replaced.
    title : str, optional
        Title of the report; by default one naming the dataset.

    Returns
    -------
    dict of str to pathlib.Path
        File name -> path of every file written: ``results.csv``, ``report.md``,
        ``report.html``, ``accuracy.png``, ``c_curve.png`` (when some row has a C) and
        ``confusion_<model>_<layer>.png`` (when predictions are given).

    Examples
    --------
    >>> import tempfile
    >>> import pandas as pd
    >>> from featclf.report import write_report
    >>> results = pd.DataFrame({
    ...     "dataset": "digits", "model": "lenet5", "layer": "penultimate",
    ...     "classifier": ["softmax", "linear_svm", "linear_svm"], "C": [None, 0.1, 1.0],
    ...     "selected": [True, False, True], "accuracy": [0.958, 0.955, 0.963]})
    >>> with tempfile.TemporaryDirectory() as tmp:
    ...     paths = write_report(results, tmp, title="Digits")
    ...     text = paths["report.md"].read_text(encoding="utf-8")
    >>> sorted(paths)
    ['accuracy.png', 'c_curve.png', 'report.html', 'report.md', 'results.csv']
    >>> text.splitlines()[0]
    '# Digits'
    """
    attrs = dict(results.attrs)
    df = _prepare(results)
    config = dict(attrs.get("config") or {})
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)

    paths: dict[str, Path] = {"results.csv": out / "results.csv"}
    results.to_csv(paths["results.csv"], index=False)

    images: dict[str, Path] = {"accuracy.png": out / "accuracy.png"}
    _plot_accuracy(df, images["accuracy.png"], _ci_label(config))
    if _plot_c_curve(df, out / "c_curve.png"):
        images["c_curve.png"] = out / "c_curve.png"
    images.update(_plot_confusions(df, attrs, out))

    blocks = _blocks(df, attrs, title, list(images))
    heading = str(blocks[0][2])
    paths["report.md"] = out / "report.md"
    paths["report.md"].write_text(_render_markdown(blocks), encoding="utf-8")
    paths["report.html"] = out / "report.html"
    paths["report.html"].write_text(_render_html(blocks, heading, out), encoding="utf-8")
    return {**paths, **images}
