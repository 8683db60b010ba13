"""The report's numbers in tables: the summary and display tables, and the helpers the verdict
(:mod:`featclf.report._verdict_text`) and the plots share; the headline's SVM is chosen here, by CV.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from featclf.comparison import Comparison, chosen_by_cv, cv_candidates
from featclf.pipelines import BASELINES, REGISTRY

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
_ORDER = tuple(REGISTRY)  # report order: the softmax baselines, then the classifiers
_EXTRA_COLORS = ("tab:red", "tab:brown", "tab:pink", "tab:olive", "tab:cyan", "tab:gray")
_ALPHA = 0.05
_DASH = "\u2014"

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
    """Human name of a classifier column value (the registry's label)."""
    spec = REGISTRY.get(classifier)
    return spec.label if spec else classifier.replace("_", " ")




def _color(classifier: str, seen: list[str]) -> str:
    """A stable colour per classifier (the registry's); unknown names take the next spare one."""
    if classifier in REGISTRY:
        return REGISTRY[classifier].color
    unknown = [c for c in seen if c not in REGISTRY]
    return _EXTRA_COLORS[unknown.index(classifier) % len(_EXTRA_COLORS)]


def _safe(text: str) -> str:
    """A file-name-safe version of a model or layer name."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-") or "x"


def _check_comparison(comparison: Comparison) -> Comparison:
    """Refuse anything but a Comparison, saying how to make one."""
    if not isinstance(comparison, Comparison):
        raise TypeError(
            f"expected a featclf.comparison.Comparison (what featclf.compare.compare returns), "
            f"got {type(comparison).__name__}; wrap a results table as Comparison(results)."
        )
    return comparison


def _prepare(results: pd.DataFrame) -> pd.DataFrame:
    """Validate the results table; return a sorted copy with every optional column present."""
    missing = [c for c in _REQUIRED if c not in results.columns]
    if missing:
        raise ValueError(
            f"results lacks the column(s) {missing}; pass the table featclf.compare.compare() "
            f"returns (it needs at least {list(_REQUIRED)})."
        )
    if results.empty:
        raise ValueError("results has no rows: there is nothing to report.")
    df = results.copy()
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


def _rival_pool(selected: pd.DataFrame) -> pd.DataFrame:
    """The selected rows with a test accuracy that the headline may compare (see
    :func:`featclf.comparison.cv_candidates`)."""
    return cv_candidates(selected[selected["accuracy"].notna()])


def _softmax_and_rival(selected: pd.DataFrame) -> tuple[pd.Series | None, pd.Series | None]:
    """The softmax row and the SVM the headline compares with it, chosen by cross-validation
    (:func:`featclf.comparison.chosen_by_cv`), never by test accuracy."""
    softmax = selected[selected["classifier"] == "softmax"]
    rival = chosen_by_cv(_rival_pool(selected), among_svms=False)
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


# --------------------------------------------------------------------------- tables


def summary_table(comparison: Comparison) -> pd.DataFrame:
    """Return the selected classifiers, one row each, with the columns a terminal summary shows.

    Parameters
    ----------
    comparison : Comparison
        What ``featclf.compare.compare`` returns (see :func:`write_report`).

    Returns
    -------
    pandas.DataFrame
        The rows with ``selected`` True (the softmax head first in each model/layer), the
        columns of :data:`SUMMARY_COLUMNS` that its results have, numbers unformatted.

    Examples
    --------
    >>> import pandas as pd
    >>> from featclf.comparison import Comparison
    >>> from featclf.report import summary_table
    >>> results = pd.DataFrame({
    ...     "model": "lenet5", "layer": "penultimate",
    ...     "classifier": ["linear_svm", "linear_svm", "softmax"], "C": [0.1, 1.0, None],
    ...     "selected": [False, True, True], "accuracy": [0.95, 0.96, 0.958]})
    >>> summary_table(Comparison(results))[["classifier", "C", "accuracy"]]
       classifier    C  accuracy
    0     softmax  NaN     0.958
    1  linear_svm  1.0     0.960
    """
    results = _check_comparison(comparison).results
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
    features = rows[~rows["classifier"].isin(BASELINES)]
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


def _show(value: Any) -> str:
    """A setup value as text: mappings as ``k=v``, sequences comma-separated."""
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={_show(v)}" for k, v in value.items())
    if isinstance(value, list | tuple | set):
        return ", ".join(_show(v) for v in value)
    return str(value)


def _setup_items(df: pd.DataFrame, config: Mapping[str, Any], classes: Any) -> list[str]:
    """The setup section: the config's entries, then the class list (when it has none)."""
    items = []
    for key, value in config.items():
        if key == "weights" and isinstance(value, Mapping):
            # Each model's weights in words; "random weights" must read as such.
            items.append("weights: " + "; ".join(f"{m}: {w}" for m, w in value.items()))
        elif key == "skipped images":
            items.append(f"skipped images: {len(value)} unreadable files left out (listed "
                         "under Skipped images)")
        else:
            items.append(f"{key}: {_show(value)}")
    if "classes" not in config and classes is not None and len(classes):
        shown = ", ".join(map(str, list(classes)[:20])) + (", ..." if len(classes) > 20 else "")
        items.append(f"classes ({len(classes)}): {shown}")
    if not items:
        items.append(f"{len(df)} result rows; no configuration was recorded.")
    return items


def setup_summary(comparison: Comparison) -> list[str]:
    """The lines a terminal summary prints under the table: weights, split, classes, skips.

    Parameters
    ----------
    comparison : Comparison
        What ``featclf.compare.compare`` returns.

    Returns
    -------
    list of str
        ``weights: ...``, ``split: ...``, ``classes: ...`` and, when files were skipped,
        ``skipped: ...`` (each skipped file on its own line); the entries its setup lacks are
        left out.

    Examples
    --------
    >>> import pandas as pd
    >>> from featclf.comparison import Comparison
    >>> from featclf.report import setup_summary
    >>> results = pd.DataFrame({"model": ["lenet5"], "layer": ["penultimate"],
    ...                         "classifier": ["softmax"], "accuracy": [0.9]})
    >>> setup_summary(Comparison(results, setup={
    ...     "split": "8 train / 2 test", "weights": {"lenet5": "random weights (seed 0)"}}))
    ['weights: lenet5: random weights (seed 0)', 'split: 8 train / 2 test']
    """
    config = dict(_check_comparison(comparison).setup)
    items = {item.split(":")[0]: item for item in _setup_items(pd.DataFrame(), config, None)}
    lines = [items[key] for key in ("weights", "split", "classes") if key in items]
    skipped = list(comparison.skipped) or [(entry, "") for entry in config.get("skipped images",
                                                                              [])]
    if skipped:
        lines.append(f"skipped: {len(skipped)} unreadable image files left out:")
        lines += [f"  {path}" + (f" ({reason})" if reason else "") for path, reason in skipped]
    return lines


# The verdict lives in _verdict_text.py, which builds on the helpers above; the names are kept here
# for the modules that import them from _tables.
from featclf.report._verdict_text import _verdict, report_warnings, verdict  # noqa: E402

__all__ = ["SUMMARY_COLUMNS", "_verdict", "report_warnings", "setup_summary", "summary_table",
           "verdict"]  # fmt: skip
