"""Repeated splits in the report: every split's numbers, their mean ± sd, the verdict's spread.

:func:`featclf.repeats.compare_repeated` runs the same comparison on K seeded splits. This module
turns its K :class:`~featclf.comparison.Comparison` objects into one tidy table
(:func:`repeats_table`, written as ``repeats.csv``): one row per split and selected classifier,
with the verdict of that split on the row the verdict compares. Each split's verdict is the
report's own (:mod:`featclf.report._verdict_text`: the classifier chosen by cross-validation,
"better"/"worse" only when the paired interval and McNemar agree, "inconclusive" when
underpowered or near chance), read as its outcome word; no second rule is written here.
:func:`repeats_summary` and :func:`verdict_spread` summarise the table, and
:func:`repeats_blocks` lays out the report's "Repeated splits" section.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from featclf.comparison import Comparison
from featclf.report._render import Block
from featclf.report._tables import (
    _DASH,
    _check_comparison,
    _ci_label,
    _finite,
    _groups,
    _name,
    _num,
    _prepare,
    _pvalue,
    _signed,
    _softmax_and_rival,
)
from featclf.report._verdict_text import _conclusion, _n_classes

__all__ = [
    "OUTCOMES", "REPEAT_COLUMNS", "repeats_blocks", "repeats_summary", "repeats_table",
    "split_verdicts", "spread_sentence", "verdict_spread",
]  # fmt: skip

#: What one split's verdict can say, in report order. "no test" is a verdict without a
#: paired interval or McNemar test (a results table that recorded neither).
OUTCOMES: tuple[str, ...] = ("better", "worse", "no detectable difference", "inconclusive",
                             "no test")  # fmt: skip

#: Columns of :func:`repeats_table` (``repeats.csv``), in order.
REPEAT_COLUMNS: tuple[str, ...] = (
    "split", "seed", "dataset", "model", "layer", "classifier", "C", "cv_accuracy", "accuracy",
    "accuracy_ci_low", "accuracy_ci_high", "diff_vs_softmax", "diff_ci_low", "diff_ci_high",
    "mcnemar_p", "n_train", "n_test", "compared", "verdict", "n_computed", "n_reused",
)  # fmt: skip

_KEYS = ["model", "layer", "classifier"]


def _outcome(conclusion: str) -> str:
    """The outcome word of a verdict's conclusion (:func:`_verdict_text._conclusion`)."""
    for word in ("inconclusive", "no detectable difference"):
        if conclusion.startswith(word):
            return word
    if conclusion.startswith("no significance test"):
        return "no test"
    for word in ("better", "worse"):
        if f" is {word} than " in conclusion:
            return word
    raise ValueError(f"unrecognised verdict conclusion: {conclusion!r}")


def split_verdicts(comparison: Comparison) -> list[dict[str, Any]]:
    """The verdict of one comparison per model/layer, as an outcome word.

    The same choice and rule as :func:`featclf.report.verdict`: the classifier chosen by
    cross-validation is compared with the softmax head (the network trained from scratch in a
    transfer run).

    Parameters
    ----------
    comparison : Comparison
        What ``featclf.compare.compare`` returns.

    Returns
    -------
    list of dict
        ``{"model", "layer", "classifier", "verdict"}`` per model/layer with both a softmax
        head and a rival; ``verdict`` is one of :data:`OUTCOMES`.

    Examples
    --------
    >>> import pandas as pd
    >>> from featclf.comparison import Comparison
    >>> results = pd.DataFrame({
    ...     "model": "lenet5", "layer": "penultimate", "classifier": ["softmax", "linear_svm"],
    ...     "C": [None, 1.0], "cv_accuracy": [None, 0.96], "accuracy": [0.90, 0.93],
    ...     "accuracy_ci_low": [0.88, 0.91], "n_test": 1000, "diff_vs_softmax": [None, 0.03],
    ...     "diff_ci_low": [None, 0.012], "diff_ci_high": [None, 0.05],
    ...     "mcnemar_b": [None, 50], "mcnemar_c": [None, 20], "mcnemar_p": [None, 0.0004]})
    >>> split_verdicts(Comparison(results, classes=range(10)))
    [{'model': 'lenet5', 'layer': 'penultimate', 'classifier': 'linear_svm', 'verdict': 'better'}]
    """
    comparison = _check_comparison(comparison)
    classes = comparison.classes
    config = dict(comparison.setup)
    n_classes = _n_classes(config, len(classes) if classes is not None and len(classes) else None)
    out = []
    for model, layer, rows in _groups(_prepare(comparison.results)):
        selected = rows[rows["selected"]]
        softmax, rival = _softmax_and_rival(selected)
        if softmax is None or rival is None:
            continue
        diff = rival["diff_vs_softmax"]
        diff = float(diff) if _finite(diff) else float(rival["accuracy"]) - float(
            softmax["accuracy"])
        # The words of the conclusion do not change its outcome; only the outcome is kept.
        conclusion = _conclusion(rival, softmax, diff, _ci_label(config), "the rival",
                                 "the reference", n_classes)  # fmt: skip
        out.append({"model": model, "layer": layer, "classifier": rival["classifier"],
                    "verdict": _outcome(conclusion)})  # fmt: skip
    return out


def _extraction_counts(comparison: Comparison) -> dict[str, tuple[float, float]]:
    """Per model: the feature vectors its extraction computed and reused in this run."""
    timings = comparison.timings
    if timings is None or timings.empty:
        return {}
    rows = timings[timings["phase"] == "extraction"]
    return {str(model): (float(group["n_computed"].sum()), float(group["n_reused"].sum()))
            for model, group in rows.groupby("model", sort=False)}  # fmt: skip


def repeats_table(comparisons: Sequence[Comparison], seeds: Sequence[int]) -> pd.DataFrame:
    """Every split's selected classifiers in one table: the content of ``repeats.csv``.

    Parameters
    ----------
    comparisons : sequence of Comparison
        One per split, in order.
    seeds : sequence of int
        The ``random_state`` of each split.

    Returns
    -------
    pandas.DataFrame
        Columns :data:`REPEAT_COLUMNS`: ``split`` (1..K) and ``seed``, the selected row's
        numbers, ``compared`` (True on the row the split's verdict compares with the softmax
        head), ``verdict`` (that split's outcome, on the compared row; None elsewhere) and the
        model's extraction counts in that split (``n_computed``, ``n_reused``).

    Examples
    --------
    >>> import pandas as pd
    >>> from featclf.comparison import Comparison
    >>> runs = [Comparison(pd.DataFrame({"model": "m", "layer": "penultimate",
    ...                                  "classifier": ["softmax", "logistic"],
    ...                                  "accuracy": [a, a + 0.01]})) for a in (0.8, 0.9)]
    >>> repeats_table(runs, [0, 1])[["split", "seed", "classifier", "accuracy", "compared"]]
       split  seed classifier  accuracy  compared
    0      1     0    softmax      0.80     False
    1      1     0   logistic      0.81      True
    2      2     1    softmax      0.90     False
    3      2     1   logistic      0.91      True
    """
    if len(comparisons) != len(seeds) or not comparisons:
        raise ValueError(f"repeats_table needs one seed per comparison (and at least one); got "
                         f"{len(comparisons)} comparisons and {len(seeds)} seeds.")
    frames = []
    for split, (comparison, seed) in enumerate(zip(comparisons, seeds), start=1):
        df = _prepare(_check_comparison(comparison).results)
        rows = df[df["selected"]].copy()
        rows.insert(0, "split", split)
        rows.insert(1, "seed", int(seed))
        verdicts = {(v["model"], v["layer"]): v for v in split_verdicts(comparison)}
        rows["compared"] = [
            (m, ly) in verdicts and verdicts[m, ly]["classifier"] == c
            for m, ly, c in zip(rows["model"], rows["layer"], rows["classifier"])
        ]  # fmt: skip
        rows["verdict"] = [verdicts[m, ly]["verdict"] if compared else None
                           for m, ly, compared in zip(rows["model"], rows["layer"],
                                                      rows["compared"])]  # fmt: skip
        counts = _extraction_counts(comparison)
        rows["n_computed"] = [counts.get(m, (np.nan, np.nan))[0] for m in rows["model"]]
        rows["n_reused"] = [counts.get(m, (np.nan, np.nan))[1] for m in rows["model"]]
        for column in REPEAT_COLUMNS:
            if column not in rows:
                rows[column] = np.nan
        frames.append(rows[list(REPEAT_COLUMNS)])
    return pd.concat(frames, ignore_index=True)


def _sd(values: np.ndarray) -> float:
    """The sample standard deviation (``ddof=1``); NaN for fewer than two values."""
    return float(np.std(values, ddof=1)) if len(values) > 1 else float("nan")


def repeats_summary(table: pd.DataFrame) -> pd.DataFrame:
    """Mean ± standard deviation of each selected classifier's test accuracy over the splits.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`repeats_table`'s output (or ``repeats.csv`` read back).

    Returns
    -------
    pandas.DataFrame
        One row per (model, layer, classifier), in the table's order: ``n_splits``,
        ``accuracy_mean``, ``accuracy_sd`` (sample standard deviation, ``ddof=1``; NaN with
        one split), ``accuracy_min``, ``accuracy_max``, ``diff_mean`` and ``diff_sd`` of the
        difference from the softmax head, and ``C_chosen`` (the values of C cross-validation
        chose, with how often).

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"model": "m", "layer": "penultimate", "classifier": "logistic",
    ...                       "C": [1.0, 1.0, 10.0], "accuracy": [0.8, 0.9, 1.0],
    ...                       "diff_vs_softmax": [0.0, 0.1, 0.2]})
    >>> row = repeats_summary(table).iloc[0]
    >>> float(round(row["accuracy_mean"], 3)), float(round(row["accuracy_sd"], 3)), row["C_chosen"]
    (0.9, 0.1, '1 (2×), 10')
    """
    out = []
    for (model, layer, classifier), rows in table.groupby(_KEYS, sort=False):
        accuracy = rows["accuracy"].to_numpy(dtype=float)
        diff = pd.to_numeric(rows.get("diff_vs_softmax"), errors="coerce").dropna().to_numpy()
        chosen = Counter(float(c) for c in pd.to_numeric(rows["C"], errors="coerce").dropna())
        out.append({
            "model": model, "layer": layer, "classifier": classifier, "n_splits": len(rows),
            "accuracy_mean": float(np.mean(accuracy)), "accuracy_sd": _sd(accuracy),
            "accuracy_min": float(np.min(accuracy)), "accuracy_max": float(np.max(accuracy)),
            "diff_mean": float(np.mean(diff)) if len(diff) else float("nan"),
            "diff_sd": _sd(diff),
            "C_chosen": ", ".join(f"{c:g}" + (f" ({n}×)" if n > 1 else "")
                                  for c, n in sorted(chosen.items())),
        })  # fmt: skip
    return pd.DataFrame(out)


def verdict_spread(table: pd.DataFrame) -> pd.DataFrame:
    """How many splits' verdicts said each outcome, per model/layer.

    Parameters
    ----------
    table : pandas.DataFrame
        :func:`repeats_table`'s output.

    Returns
    -------
    pandas.DataFrame
        One row per (model, layer): ``n_splits``, one column per outcome of :data:`OUTCOMES`
        (counts that add up to ``n_splits``: every split has one verdict) and ``compared``,
        the classifiers the verdicts compared with how often (the choice by cross-validation
        may change from split to split).

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"split": [1, 2, 3], "model": "m", "layer": "penultimate",
    ...                       "classifier": ["linear_svm", "linear_svm", "rbf_svm"],
    ...                       "compared": True,
    ...                       "verdict": ["better", "inconclusive", "better"]})
    >>> verdict_spread(table)[["n_splits", "better", "inconclusive", "compared"]]
       n_splits  better  inconclusive                   compared
    0         3       2             1  linear SVM (2×), RBF SVM
    """
    compared = table[table["compared"].eq(True)]
    out = []
    for (model, layer), rows in compared.groupby(["model", "layer"], sort=False):
        counts = Counter(rows["verdict"])
        names = Counter(rows["classifier"])
        out.append({
            "model": model, "layer": layer, "n_splits": int(rows["split"].nunique()),
            **{outcome: int(counts.get(outcome, 0)) for outcome in OUTCOMES},
            "compared": ", ".join(_name(c) + (f" ({n}×)" if n > 1 else "")
                                  for c, n in names.most_common()),
        })  # fmt: skip
    return pd.DataFrame(out, columns=["model", "layer", "n_splits", *OUTCOMES, "compared"])


def _pm(mean: float, sd: float, spec: str = ".4f") -> str:
    """``0.9620 ± 0.0041`` (the sd left out with one split)."""
    return _num(mean, spec) + (f" ± {float(sd):{spec}}" if _finite(sd) else "")


def _spread_words(row: pd.Series) -> str:
    """``better on 3 and inconclusive on 2`` (only the outcomes that occurred)."""
    parts = [f"{outcome} on {int(row[outcome])}" for outcome in OUTCOMES if row[outcome]]
    if not parts:
        return "never given"
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


def spread_sentence(table: pd.DataFrame) -> str | None:
    """One sentence under the verdict: how the verdict spread over the repeated splits.

    Examples
    --------
    >>> import pandas as pd
    >>> table = pd.DataFrame({"split": [1, 2, 3], "seed": [0, 1, 2], "model": "lenet5",
    ...                       "layer": "penultimate", "classifier": "linear_svm",
    ...                       "compared": True, "verdict": ["better", "inconclusive", "better"]})
    >>> print(spread_sentence(table))  # doctest: +NORMALIZE_WHITESPACE
    The verdict above is the first split's. Over 3 seeded splits (seeds 0-2) it was better on 2
    and inconclusive on 1 for lenet5's penultimate features (see Repeated splits).
    """
    spread = verdict_spread(table)
    if spread.empty:
        return None
    seeds = sorted(set(table["seed"].astype(int)))
    parts = [f"{_spread_words(row)} for {row['model']}'s {row['layer']} features"
             for _, row in spread.iterrows()]  # fmt: skip
    return (f"The verdict above is the first split's. Over {len(seeds)} seeded splits (seeds "
            f"{_seeds(seeds)}) it was " + "; ".join(parts) + " (see Repeated splits).")


def _seeds(seeds: list[int]) -> str:
    """``0-4`` for consecutive seeds, else the list."""
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[-1] + 1)):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(map(str, seeds))


def _summary_display(summary: pd.DataFrame) -> pd.DataFrame:
    """The per-classifier summary as formatted strings."""
    return pd.DataFrame({
        "model": summary["model"], "layer": summary["layer"],
        "classifier": [_name(c) for c in summary["classifier"]],
        "accuracy mean ± sd": [_pm(m, s) for m, s in zip(summary["accuracy_mean"],
                                                        summary["accuracy_sd"])],
        "min": [_num(v, ".4f") for v in summary["accuracy_min"]],
        "max": [_num(v, ".4f") for v in summary["accuracy_max"]],
        "Δ vs softmax mean ± sd": [
            _DASH if not _finite(m) else _signed(float(m)) + (f" ± {float(s):.3f}"
                                                              if _finite(s) else "")
            for m, s in zip(summary["diff_mean"], summary["diff_sd"])],
        "C chosen": [c or _DASH for c in summary["C_chosen"]],
        "splits": summary["n_splits"],
    })  # fmt: skip


def _spread_display(spread: pd.DataFrame) -> pd.DataFrame:
    """The verdict counts per model/layer, leaving out an outcome no split had ("no test")."""
    shown = [o for o in OUTCOMES if o != "no test" or spread[o].any()]
    return pd.DataFrame({
        "model": spread["model"], "layer": spread["layer"],
        **{outcome: spread[outcome] for outcome in shown},
        "splits": spread["n_splits"], "classifier compared (chosen by CV)": spread["compared"],
    })  # fmt: skip


def _per_split_display(table: pd.DataFrame, ci_label: str) -> pd.DataFrame:
    """One row per split and model/layer: the softmax head, the compared rival, the verdict."""
    records = []
    for (split, model, layer), rows in table.groupby(["split", "model", "layer"], sort=False):
        softmax = rows[rows["classifier"] == "softmax"]
        rival = rows[rows["compared"].eq(True)]
        if rival.empty:
            continue
        r = rival.iloc[0]
        ci = (f" [{_signed(float(r['diff_ci_low']))}, {_signed(float(r['diff_ci_high']))}]"
              if _finite(r["diff_ci_low"]) and _finite(r["diff_ci_high"]) else "")
        records.append({
            "split": int(split), "seed": int(r["seed"]), "model": model, "layer": layer,
            "softmax": _num(softmax["accuracy"].iloc[0], ".4f") if len(softmax) else _DASH,
            "compared": _name(r["classifier"]) + (f" (C={float(r['C']):g})"
                                                  if _finite(r["C"]) else ""),
            "accuracy": _num(r["accuracy"], ".4f"),
            f"Δ [{ci_label}]": (_signed(float(r["diff_vs_softmax"])) + ci
                                if _finite(r["diff_vs_softmax"]) else _DASH),
            "McNemar p": _pvalue(r["mcnemar_p"]),
            "verdict": r["verdict"],
        })  # fmt: skip
    return pd.DataFrame(records)


def _extraction_note(table: pd.DataFrame) -> str | None:
    """Whether the feature vectors were computed once and reused, in words."""
    per_split = table.drop_duplicates(["split", "model"])
    if per_split["n_computed"].isna().all():
        return None
    later = per_split[per_split["split"] > per_split["split"].min()]
    first = per_split[per_split["split"] == per_split["split"].min()]
    computed_first = int(first["n_computed"].sum())
    if len(later) and (later["n_computed"] == 0).all():
        return (f"Feature vectors: {computed_first} computed on the first split and reused from "
                f"the feature store on the {later['split'].nunique()} others (0 computed): the "
                "frozen network's features do not depend on the split.")  # fmt: skip
    return ("Feature vectors: each split trained its own softmax network on its own training "
            "images, so each split's features come from a different network and were extracted "
            "anew (" + ", ".join(f"split {int(s)}: {int(n)} computed"
                                 for s, n in per_split.groupby("split")["n_computed"].sum().items())
            + ").")  # fmt: skip


def repeats_blocks(table: pd.DataFrame, ci_label: str, files: Sequence[str] = ("repeats.csv",)
                   ) -> list[Block]:  # fmt: skip
    """The report's "Repeated splits" section: what was repeated, mean ± sd, the verdicts."""
    seeds = sorted(set(table["seed"].astype(int)))
    sizes = sorted({int(n) for n in table["n_test"] if _finite(n)})
    each = (f", {sizes[0]} test images each" if len(sizes) == 1
            else f", {sizes[0]}-{sizes[-1]} test images" if sizes else "")  # fmt: skip
    blocks: list[Block] = [
        ("h", 2, "Repeated splits"),
        ("p", f"The whole comparison was run on {len(seeds)} stratified splits seeded "
         f"{_seeds(seeds)}{each} (the seed also seeds the networks' training, the cross-validation "
         "folds and the bootstraps); the sections above show the first. Each selected "
         "classifier's test accuracy over the splits: mean ± sample standard deviation "
         "(ddof=1), lowest and highest. The splits share images, so the standard deviation "
         "shows how much one split's result can vary; it is not the error of the mean."),
        ("table", _summary_display(repeats_summary(table))),
        ("p", "Each split's verdict, by the rule of the verdict above (the classifier chosen by "
         "cross-validation on that split against the softmax head; better or worse only when "
         "the paired interval and McNemar's test agree):"),
        ("table", _spread_display(verdict_spread(table))),
        ("h", 3, "Per split"),
        ("table", _per_split_display(table, ci_label)),
    ]  # fmt: skip
    note = _extraction_note(table)
    if note:
        blocks.append(("p", note))
    if files:
        blocks.append(("links", "Every split's selected classifiers, their numbers and verdicts "
                       "are in ", list(files), "."))
    return blocks
