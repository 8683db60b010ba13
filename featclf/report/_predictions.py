"""Per-image predictions of a :class:`~featclf.comparison.Comparison` as one tidy table.

:func:`predictions_table` gives one row per (test image, selected classifier) and
:func:`write_predictions` saves it as ``predictions.csv`` and ``predictions.parquet`` next to the
report. The mean of ``correct`` over one (model, layer, classifier) is that row's test accuracy
in ``results.csv``, to the last bit: both count the same predictions of the same images.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from featclf.comparison import Comparison, ResultKey

__all__ = ["PREDICTION_COLUMNS", "predictions_table", "write_predictions"]

#: Columns of :func:`predictions_table` (and of ``predictions.csv``), in order.
PREDICTION_COLUMNS: tuple[str, ...] = (
    "image", "true_label", "model", "layer", "classifier", "C", "predicted", "score",
    "score_kind", "correct",
)  # fmt: skip


def _selected_C(results: pd.DataFrame, key: ResultKey) -> float:
    """The C of the results row the predictions belong to (NaN for the softmax head)."""
    if "C" not in results:
        return math.nan
    rows = results[(results["model"] == key.model) & (results["layer"] == key.layer)
                   & (results["classifier"] == key.classifier)]  # fmt: skip
    if "selected" in rows:
        rows = rows[rows["selected"].eq(True)]
    values = pd.to_numeric(rows["C"], errors="coerce").to_numpy(dtype=np.float64)
    return float(values[0]) if len(values) == 1 else math.nan


def predictions_table(comparison: Comparison) -> pd.DataFrame | None:
    """Every test image's prediction by every selected classifier, one row each (tidy).

    Parameters
    ----------
    comparison : Comparison
        Needs ``predictions`` and ``y_true``; ``scores``/``score_kinds`` and the test images'
        identities (``images``, or the split's test positions) are used when present.

    Returns
    -------
    pandas.DataFrame or None
        Columns :data:`PREDICTION_COLUMNS`: ``image`` (the file path, or the row position in
        the data), ``true_label``, ``model``, ``layer``, ``classifier``, ``C`` (of the
        selected row; NaN for the softmax head), ``predicted``, ``score`` (the score of the
        predicted class), ``score_kind`` (``"probability"``: ``predict_proba``, the softmax
        head's too; ``"decision"``: ``decision_function``, for SVMs without probabilities;
        empty when not recorded) and ``correct``. Rows are grouped by classifier, in the
        order of ``comparison.predictions``, and within one in test order. None when there
        are no predictions or no test labels.

    Raises
    ------
    ValueError
        When a classifier's predictions or scores do not have one entry per test label.

    Examples
    --------
    >>> import pandas as pd
    >>> from featclf.comparison import Comparison
    >>> from featclf.report import predictions_table
    >>> results = pd.DataFrame({"model": "m", "layer": "l", "classifier": ["softmax"],
    ...                         "accuracy": [0.5]})
    >>> key = ("m", "l", "softmax")
    >>> table = predictions_table(Comparison(
    ...     results, predictions={key: [0, 1]}, y_true=[0, 0], images=["a.png", "b.png"],
    ...     scores={key: [0.9, 0.6]}, score_kinds={key: "probability"}))
    >>> table[["image", "score", "correct"]].to_dict("list")
    {'image': ['a.png', 'b.png'], 'score': [0.9, 0.6], 'correct': [True, False]}
    """
    y_true = comparison.y_true
    if y_true is None or not comparison.predictions:
        return None
    images = comparison.test_images
    n = len(y_true)
    if len(images) != n:
        raise ValueError(f"the comparison names {len(images)} test images for {n} test labels.")
    frames = []
    for key, pred in comparison.predictions.items():
        score = comparison.scores.get(key)
        for what, values in (("predictions", pred), ("scores", score)):
            if values is not None and len(values) != n:
                raise ValueError(f"{'/'.join(key)}: {len(values)} {what} for {n} test labels.")
        frames.append(pd.DataFrame({
            "image": images,
            "true_label": y_true,
            "model": key.model,
            "layer": key.layer,
            "classifier": key.classifier,
            "C": _selected_C(comparison.results, key),
            "predicted": pred,
            "score": np.full(n, np.nan) if score is None else score,
            "score_kind": comparison.score_kinds.get(key) if score is not None else None,
            "correct": np.asarray(pred) == y_true,
        }))  # fmt: skip
    return pd.concat(frames, ignore_index=True)[list(PREDICTION_COLUMNS)]


def write_predictions(table: pd.DataFrame | None, out: Path) -> dict[str, Path]:
    """Save :func:`predictions_table`'s table as ``predictions.csv`` and ``.parquet`` in ``out``.

    Returns the paths written by file name; nothing (an empty dict) when ``table`` is None.
    """
    if table is None:
        return {}
    paths = {name: out / name for name in ("predictions.csv", "predictions.parquet")}
    table.to_csv(paths["predictions.csv"], index=False)
    table.to_parquet(paths["predictions.parquet"], index=False)
    return paths
