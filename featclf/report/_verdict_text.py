"""The report's verdict: one SVM chosen by cross-validation against the softmax head, in words.

"better"/"worse" only when the paired bootstrap interval and McNemar's test agree; otherwise
"no detectable difference", or "inconclusive" when the softmax head is near chance or the test
set is too small to detect a difference of :data:`DETECTABLE` (see :func:`verdict`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import numpy as np
import pandas as pd

from featclf.comparison import Comparison, is_svm
from featclf.errors import option
from featclf.pipelines import BASELINES
from featclf.report._tables import (
    _ALPHA,
    _DASH,
    _check_comparison,
    _ci_label,
    _dataset,
    _finite,
    _groups,
    _name,
    _num,
    _prepare,
    _pvalue,
    _rival_pool,
    _signed,
    _softmax_and_rival,
)
from featclf.stats import mcnemar_sample_size

#: The accuracy difference ("a few points") a test set must be able to detect for "no
#: detectable difference" to mean something; below it the verdict is "inconclusive".
DETECTABLE = 0.03
#: The power at which :data:`DETECTABLE` must be detectable (McNemar's test at the 5% level).
POWER = 0.8
#: A softmax head this close to chance (``1 / n_classes``) makes the verdict inconclusive.
NEAR_CHANCE = 0.05


def _n_classes(config: Mapping[str, Any], n_classes: int | None) -> int | None:
    """The number of classes: given, else from the setup's ``classes`` (a list, or compare's
    text ending in ``(10 classes)``)."""
    if n_classes is not None:
        return int(n_classes)
    classes = config.get("classes")
    if isinstance(classes, list | tuple):
        return len(classes) or None
    found = re.search(r"\((\d+) classes\)\s*$", str(classes)) if classes is not None else None
    return int(found.group(1)) if found else None


def _near_chance(softmax: pd.Series, n_classes: int | None) -> str | None:
    """Why the reference is near chance (``None`` when it is not, or the classes are unknown).

    Near chance: test accuracy within :data:`NEAR_CHANCE` of ``1 / n_classes``, or a
    confidence interval that reaches down to it.
    """
    if not n_classes or n_classes < 2 or not _finite(softmax["accuracy"]):
        return None
    chance, accuracy = 1 / n_classes, float(softmax["accuracy"])
    low = softmax["accuracy_ci_low"]
    reaches = _finite(low) and float(low) <= chance
    if accuracy > chance + NEAR_CHANCE and not reaches:
        return None
    # Name the interval only when it, not the accuracy itself, is the reason.
    interval = (f", its interval reaching down to {float(low):.3f}"
                if accuracy > chance + NEAR_CHANCE else "")  # fmt: skip
    return f"accuracy {accuracy:.3f}{interval}; chance is {chance:.3f} with {n_classes} classes"


def _choice(pool_size: int, rival: pd.Series) -> str:
    """How the headline's classifier was chosen, in words (always by CV, never by test)."""
    kind = "SVMs" if is_svm(rival["classifier"]) else "classifiers"
    C = f"C={float(rival['C']):g}, " if _finite(rival["C"]) else ""
    if not _finite(rival["cv_accuracy"]):
        return (f"{C}no cross-validation accuracy was recorded, so the first in featclf's "
                "classifier order is shown")  # fmt: skip
    cv = f"{float(rival['cv_accuracy']):.3f}"
    if pool_size > 1:
        return f"{C}chosen among {pool_size} {kind} by cross-validation accuracy, {cv}"
    return f"{C}cross-validation accuracy {cv}"


def _power_note(rival: pd.Series) -> tuple[bool, str] | None:
    """Whether the test set could detect :data:`DETECTABLE`, and the sentence saying so.

    From the discordant pairs (``mcnemar_b + mcnemar_c``) and ``n_test`` with
    :func:`featclf.stats.mcnemar_sample_size`; ``None`` when they were not recorded.
    """
    b, c, n = rival["mcnemar_b"], rival["mcnemar_c"], rival["n_test"]
    if not (_finite(b) and _finite(c) and _finite(n)) or int(n) <= 0:
        return None
    n, discordant = int(n), int(b) + int(c)
    needed = mcnemar_sample_size(discordant / n, DETECTABLE, alpha=_ALPHA, power=POWER)
    points = f"{DETECTABLE * 100:g} points"
    how = (f"{POWER:.0%} power at the {_ALPHA:.0%} level, as one is right and the other wrong "
           f"on {discordant} of the {n} test images")  # fmt: skip
    if n < needed:
        return False, (f"with {n} test images a difference of {points} cannot be detected; it "
                       f"would take about {needed} ({how})")  # fmt: skip
    return True, f"{n} test images suffice to detect a difference of {points} ({how})"


def _conclusion(rival: pd.Series, softmax: pd.Series, diff: float, ci_label: str, short: str,
                reference: str, n_classes: int | None) -> str:  # fmt: skip
    """The verdict's conclusion: better, worse, no detectable difference or inconclusive.

    "better"/"worse" need both the paired interval to exclude zero and McNemar's p below 5%;
    a reference near chance, or a test set too small to detect :data:`DETECTABLE` when no
    difference was found, makes it inconclusive.
    """
    chance = _near_chance(softmax, n_classes)
    if chance:
        return (f"inconclusive {_DASH} {reference} is near chance ({chance}), so a difference "
                "from it says nothing about the features.")  # fmt: skip
    low, high, p = rival["diff_ci_low"], rival["diff_ci_high"], rival["mcnemar_p"]
    ci_excludes = (not float(low) <= 0.0 <= float(high)) if _finite(low) and _finite(high) else None
    p_below = float(p) < _ALPHA if _finite(p) else None
    if ci_excludes is None and p_below is None:
        return "no significance test is available."
    if ci_excludes and p_below and diff != 0:
        word = "better" if diff > 0 else "worse"
        return (f"{short} is {word} than {reference} (the {ci_label} excludes zero and "
                f"McNemar's p is below {_ALPHA:g}).")  # fmt: skip
    reasons = [
        {True: f"the {ci_label} excludes zero", False: f"the {ci_label} contains zero",
         None: "no interval was recorded"}[ci_excludes],
        {True: f"McNemar's p is below {_ALPHA:g}", False: f"McNemar's p is not below {_ALPHA:g}",
         None: "no McNemar test was recorded"}[p_below],
    ]  # fmt: skip
    why = reasons[0] + (" but " if bool(ci_excludes) != bool(p_below) else " and ") + reasons[1]
    power = _power_note(rival)
    if power is not None and not power[0]:
        return f"inconclusive {_DASH} {why}, and {power[1]}."
    tail = f"; {power[1]}" if power is not None else ""
    return f"no detectable difference {_DASH} {why}{tail}."


def _grid_edge(rows: pd.DataFrame, row: pd.Series) -> str | None:
    """A warning when the selected ``row``'s C is the smallest or largest of its grid.

    The grid is every C of that classifier in ``rows`` (results keep the whole sweep).
    """
    if not _finite(row["C"]) or row["classifier"] in BASELINES:
        return None
    swept = pd.to_numeric(rows.loc[rows["classifier"] == row["classifier"], "C"],
                          errors="coerce").dropna()  # fmt: skip
    grid = np.unique(swept.to_numpy(dtype=float))
    C = float(row["C"])
    if grid.size < 2 or grid[0] < C < grid[-1]:
        return None
    end, other = ("largest", "larger") if C >= grid[-1] else ("smallest", "smaller")
    return (f"C={C:g} is the {end} value tried for the {_name(row['classifier'])} on "
            f"{row['model']}'s {row['layer']} features; a {other} C might do better (extend "
            f"the grid, {option('c_grids')}).")  # fmt: skip


def _warnings(df: pd.DataFrame) -> list[str]:
    """Every warning about a prepared results table: the selected C values at a grid's edge."""
    found = []
    for _, _, rows in _groups(df):
        for _, row in rows[rows["selected"]].iterrows():
            warning = _grid_edge(rows, row)
            if warning:
                found.append(warning)
    return found


def report_warnings(comparison: Comparison) -> list[str]:
    """What the reader should know before trusting the tables: each selected C at a grid edge.

    A C chosen at the smallest or largest value of its grid may be short of the best one; the
    grid of a classifier is every C of its rows in ``comparison.results`` (the whole sweep).

    Parameters
    ----------
    comparison : Comparison
        What ``featclf.compare.compare`` returns.

    Returns
    -------
    list of str
        One sentence per warning, in report order; empty when there is nothing to warn about.

    Examples
    --------
    >>> import pandas as pd
    >>> from featclf.comparison import Comparison
    >>> from featclf.report._verdict_text import report_warnings
    >>> results = pd.DataFrame({
    ...     "model": "lenet5", "layer": "penultimate", "classifier": "rbf_svm",
    ...     "C": [1.0, 10.0, 100.0], "selected": [False, False, True], "accuracy": 0.9})
    >>> report_warnings(Comparison(results))  # doctest: +NORMALIZE_WHITESPACE
    ["C=100 is the largest value tried for the RBF SVM on lenet5's penultimate features; a
    larger C might do better (extend the grid, c_grids)."]
    """
    return _warnings(_prepare(_check_comparison(comparison).results))


def _verdict_sentence(
    dataset: str,
    model: str,
    layer: str,
    softmax: pd.Series | None,
    rival: pd.Series | None,
    ci_label: str,
    reference: str = "the softmax head",
    *,
    pool_size: int = 1,
    n_classes: int | None = None,
) -> str | None:
    """One sentence comparing the CV-chosen SVM of one model/layer with its softmax head."""
    if rival is None and softmax is None:
        return None
    if rival is None:
        return (
            f"On {dataset}, only the softmax head of {model} was evaluated "
            f"({_num(softmax['accuracy'], '.3f')} accuracy)."
        )
    subject = (f"the {_name(rival['classifier'])} on {model}'s {layer} features "
               f"({_choice(pool_size, rival)})")  # fmt: skip
    if softmax is None:
        return (
            f"On {dataset}, {subject} reached {_num(rival['accuracy'], '.3f')} test accuracy; "
            "no softmax head was evaluated to compare it with."
        )
    diff = rival["diff_vs_softmax"]
    if not _finite(diff):
        diff = float(rival["accuracy"]) - float(softmax["accuracy"])
    diff = float(diff)
    details = [f"difference {_signed(diff)}"]
    low, high = rival["diff_ci_low"], rival["diff_ci_high"]
    if _finite(low) and _finite(high):
        details[0] += f", {ci_label} [{_signed(float(low))}, {_signed(float(high))}]"
    p = rival["mcnemar_p"]
    if _finite(p):
        details.append("McNemar p " + ("< 0.001" if float(p) < 0.001 else f"= {_pvalue(p)}"))
    short = "the SVM" if is_svm(rival["classifier"]) else f"the {_name(rival['classifier'])}"
    conclusion = _conclusion(rival, softmax, diff, ci_label, short, reference, n_classes)
    return (
        f"On {dataset}, {subject} reached {_num(rival['accuracy'], '.3f')} test accuracy vs "
        f"{_num(softmax['accuracy'], '.3f')} for {reference} ({'; '.join(details)}): "
        f"{conclusion}"
    )


def verdict(comparison: Comparison) -> str:
    """Summarise, in one paragraph, whether the SVMs beat the softmax head.

    For each model/layer one selected SVM (the best other classifier when no SVM was run) is
    compared with the softmax head. It is chosen by **cross-validation accuracy** on the
    training features, never by test accuracy; ties go to the first in featclf's classifier
    order (linear SVM, Crammer-Singer SVM, RBF SVM, logistic regression). The conclusion:

    - "better" / "worse" only when the paired bootstrap interval of the difference excludes
      zero *and* McNemar's p is below 0.05;
    - "inconclusive" when the softmax head is near chance (test accuracy within
      :data:`NEAR_CHANCE` of ``1 / n_classes``, or its interval reaching chance), or when no
      difference was found on a test set too small to detect :data:`DETECTABLE` at
      :data:`POWER` power (:func:`featclf.stats.mcnemar_sample_size` says how many images it
      would take);
    - otherwise "no detectable difference", saying which test found what.

    A selected C at the edge of its grid is warned about (see :func:`report_warnings`).

    Parameters
    ----------
    comparison : Comparison
        What ``featclf.compare.compare`` returns (see :func:`write_report`); its ``setup``'s
        ``confidence`` names the intervals, its ``classes`` give the chance level.

    Returns
    -------
    str
        One sentence per model/layer, joined into a paragraph.

    Examples
    --------
    >>> import pandas as pd
    >>> from featclf.comparison import Comparison
    >>> from featclf.report import verdict
    >>> results = pd.DataFrame({
    ...     "dataset": "mnist5k", "model": "lenet5", "layer": "penultimate",
    ...     "classifier": ["softmax", "linear_svm", "rbf_svm"], "C": [None, 1.0, 10.0],
    ...     "cv_accuracy": [None, 0.961, 0.955], "accuracy": [0.958, 0.963, 0.970],
    ...     "n_test": 1000, "diff_vs_softmax": [None, 0.005, 0.012],
    ...     "diff_ci_low": [None, -0.004, 0.001], "diff_ci_high": [None, 0.014, 0.023],
    ...     "mcnemar_b": [None, 14, 20], "mcnemar_c": [None, 9, 8],
    ...     "mcnemar_p": [None, 0.41, 0.036]})
    >>> print(verdict(Comparison(results, classes=range(10))))
    ... # doctest: +NORMALIZE_WHITESPACE
    On mnist5k, the linear SVM on lenet5's penultimate features (C=1, chosen among 2 SVMs by
    cross-validation accuracy, 0.961) reached 0.963 test accuracy vs 0.958 for the softmax head
    (difference +0.005, 95% CI [-0.004, +0.014]; McNemar p = 0.41): no detectable difference
    — the 95% CI contains zero and McNemar's p is not below 0.05; 1000 test images suffice to
    detect a difference of 3 points (80% power at the 5% level, as one is right and the other
    wrong on 23 of the 1000 test images).
    """
    comparison = _check_comparison(comparison)
    classes = comparison.classes
    n_classes = len(classes) if classes is not None and len(classes) else None
    return _verdict(_prepare(comparison.results), dict(comparison.setup), n_classes=n_classes)


def _verdict(df: pd.DataFrame, config: Mapping[str, Any], n_classes: int | None = None) -> str:
    """The verdict paragraph of a prepared results table (``n_classes``: the chance level;
    by default read from the setup's ``classes``)."""
    dataset, ci_label = _dataset(df, config), _ci_label(config)
    n_classes = _n_classes(config, n_classes)
    sentences = []
    for model, layer, rows in _groups(df):
        selected = rows[rows["selected"]]
        softmax, rival = _softmax_and_rival(selected)
        finetuned = selected[selected["classifier"] == "softmax_finetune"]
        # A transfer run: the reference is the network trained from scratch on the data.
        reference = "the softmax network trained from scratch" if len(finetuned) else (
            "the softmax head")
        sentence = _verdict_sentence(dataset, model, layer, softmax, rival, ci_label, reference,
                                     pool_size=len(_rival_pool(selected)), n_classes=n_classes)
        if sentence:
            sentences.append(sentence)
        if rival is not None:
            edge = _grid_edge(rows, rival)
            if edge:
                sentences.append(f"Warning: {edge}")
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
