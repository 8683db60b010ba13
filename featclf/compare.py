"""``compare()``: softmax vs SVMs vs logistic regression on one network's features, one split.

One call runs one experiment spec. The data is split once (stratified, seeded,
:func:`featclf.train.split_indices`), and everything sees the same parts:

1. For every model, a :class:`~featclf.train.SoftmaxClassifier` is trained on the training
   images only: the end-to-end softmax baseline.
2. The same trained network (or, with ``weights=``, a frozen pre-trained one) turns the
   training and test images into feature vectors (:class:`~featclf.extract.DeepFeatureExtractor`,
   the penultimate layer or each entry of ``layers``).
3. Every classifier of :mod:`featclf.pipelines` sweeps its C grid. C is chosen by
   cross-validation on the training features only (``GridSearchCV``, or the validation part when
   the split has one); every C of the grid is also refitted on all training features and scored
   on the test images, so the report can draw accuracy against C. ``selected`` marks the C that
   cross-validation chose; the test images never influence that choice.
4. Every row is scored on the same test images: accuracy with a bootstrap interval, macro-F1,
   log-loss where probabilities exist, and, paired against the softmax head, McNemar's test and a
   bootstrap interval of the accuracy difference (:mod:`featclf.stats`).

The result is a tidy :class:`pandas.DataFrame` that :func:`featclf.report.write_report` turns
into a report.
"""

from __future__ import annotations

import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
import torch
from joblib import Parallel, delayed
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, f1_score, log_loss
from sklearn.model_selection import GridSearchCV, PredefinedSplit, StratifiedKFold
from sklearn.pipeline import Pipeline
from threadpoolctl import threadpool_limits

import featclf
from featclf.data import image_files, load_digits_images, load_mnist5k
from featclf.data.inputs import ImageSource, as_image_source, check_labels
from featclf.data.transforms import ImagePreprocess
from featclf.devices import resolve_device
from featclf.extract import DeepFeatureExtractor
from featclf.models import get_model, get_model_spec, read_checkpoint
from featclf.models.head import check_layer
from featclf.pipelines import CLASSIFIERS, c_grid, make_classifier
from featclf.stats import bootstrap_accuracy_ci, bootstrap_accuracy_diff, mcnemar
from featclf.train import SoftmaxClassifier, split_indices

__all__ = [
    "BUILTIN_DATASETS",
    "DEFAULT_MODELS",
    "RESULT_COLUMNS",
    "SEED001_SPLIT",
    "TIMING_COLUMNS",
    "TRAINING_RECIPES",
    "Split",
    "compare",
    "load_data",
    "make_split",
    "training_recipe",
]

#: Data sets ``compare`` knows by name.
BUILTIN_DATASETS: tuple[str, ...] = ("mnist5k", "digits")

#: The networks of the main job: LeNet-5 and the seed tutorial's Keras CNN.
DEFAULT_MODELS: tuple[str, ...] = ("lenet5", "seed_cnn")

#: Seed 001's train/validation/test fractions (``split="seed001"``).
SEED001_SPLIT: tuple[float, float, float] = (0.65, 0.25, 0.10)

#: Columns of the results table, in order.
RESULT_COLUMNS: tuple[str, ...] = (
    "dataset", "model", "layer", "classifier", "C", "selected", "cv_accuracy", "accuracy",
    "accuracy_ci_low", "accuracy_ci_high", "macro_f1", "log_loss", "fit_time_s",
    "predict_time_s", "extract_time_s", "extract_images_per_s", "n_train", "n_test",
    "n_features", "converged", "diff_vs_softmax", "diff_ci_low", "diff_ci_high", "mcnemar_b",
    "mcnemar_c", "mcnemar_p",
)  # fmt: skip

#: Columns that measure time: the only ones that differ between two runs with the same seed.
TIMING_COLUMNS: tuple[str, ...] = (
    "fit_time_s", "predict_time_s", "extract_time_s", "extract_images_per_s",
)  # fmt: skip

# The seed tutorial's optimiser (seed 000): SGD, lr 0.05, Keras decay 1e-6, Nesterov momentum
# 0.9, batches of 100. validation_fraction=0: the softmax network learns from exactly the
# training images the SVMs are fitted on (the seed's Keras run held 20% out only to print
# validation scores); a validation part of the split (split="seed001") plays that role here.
_SEED_OPTIMISER: dict[str, Any] = {
    "optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "nesterov": True, "lr_decay": 1e-6,
    "batch_size": 100, "validation_fraction": 0.0,
}  # fmt: skip

#: SoftmaxClassifier parameters per zoo model (other models get SoftmaxClassifier's defaults
#: with ``validation_fraction=0``). LeNet-5 reaches ~0.96 on MNIST-5k's 1,000 test digits
#: after 15 epochs; seed_cnn runs the seed's 10 epochs.
TRAINING_RECIPES: dict[str, dict[str, Any]] = {
    "lenet5": {**_SEED_OPTIMISER, "epochs": 15},
    "seed_cnn": {**_SEED_OPTIMISER, "epochs": 10},
}

_PENULTIMATE = "penultimate"
_C_PARAM = "clf__C"


# --------------------------------------------------------------------------- data and split


def load_data(data: Any, *, name: str | None = None) -> tuple[str, Any, np.ndarray]:
    """Resolve what ``compare`` accepts as data into a name, images and labels.

    Parameters
    ----------
    data : str, path-like or (X, y) tuple
        ``"mnist5k"`` (5,000 MNIST digits), ``"digits"`` (scikit-learn's 1,797 8x8 digits), a
        folder of images (labels from class subfolders or file names such as ``7.123.png``), a
        CSV of ``path,label`` lines, or a tuple ``(X, y)`` of images
        (anything :func:`featclf.data.as_image_source` accepts) and labels.
    name : str, optional
        The name the results carry in their ``dataset`` column. Default: the built-in name,
        the folder or CSV name, or ``"custom"`` for a tuple.

    Returns
    -------
    name : str
    X : array, ImageFiles or other image input
    y : numpy.ndarray

    Examples
    --------
    >>> from featclf.compare import load_data
    >>> name, X, y = load_data("digits")
    >>> name, X.shape, y.shape
    ('digits', (1797, 8, 8), (1797,))
    """
    if isinstance(data, tuple) and len(data) == 2:
        X, y = data
        return name or "custom", X, check_labels(y, len(X))
    if isinstance(data, str) and data in BUILTIN_DATASETS:
        loader = load_mnist5k if data == "mnist5k" else load_digits_images
        X, y = loader(return_X_y=True)
        return name or data, X, y
    if isinstance(data, str | os.PathLike):
        path = Path(data)
        if not path.exists():
            raise FileNotFoundError(
                f"data={os.fspath(data)!r} is neither a built-in data set "
                f"({', '.join(BUILTIN_DATASETS)}) nor an existing folder or CSV file."
            )
        files = image_files(path)
        if files.labels is None:
            raise ValueError(
                f"data={os.fspath(data)!r}: the images carry no labels. Put them in class "
                "subfolders (train/cat/1.jpg), name them LABEL.N.ext (cat.1.jpg, 7.12.png) or "
                "list them in a CSV of 'path,label' lines."
            )
        return name or (path.stem if path.is_file() else path.name), files, files.labels
    raise ValueError(
        f"data of type {type(data).__name__} is not supported: pass 'mnist5k', 'digits', a "
        "folder, a CSV file or an (X, y) tuple."
    )


@dataclass(frozen=True)
class Split:
    """Positions of the train, validation (possibly empty) and test parts of one data set.

    Attributes
    ----------
    train, validation, test : numpy.ndarray of int
        Disjoint positions into the data; together they cover it.
    fractions : tuple of float
        The requested (train, validation, test) fractions.
    """

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    fractions: tuple[float, float, float] = field(default=(0.8, 0.0, 0.2))

    def describe(self) -> str:
        """One line naming the sizes of the parts."""
        parts = [f"{len(self.train)} train"]
        if len(self.validation):
            parts.append(f"{len(self.validation)} validation")
        parts.append(f"{len(self.test)} test")
        return " / ".join(parts)


def _split_fractions(split: Any) -> tuple[float, float, float]:
    """(train, validation, test) fractions from a ``split`` argument."""
    if isinstance(split, str):
        if split != "seed001":
            raise ValueError(
                f"split={split!r} is not known: pass 'seed001' (65/25/10), a test fraction "
                "such as 0.2, or (train, validation, test) fractions."
            )
        return SEED001_SPLIT
    if isinstance(split, int | float) and not isinstance(split, bool):
        if not 0 < split < 1:
            raise ValueError(f"split={split!r}: a test fraction must lie strictly between 0 and 1.")
        return (1.0 - float(split), 0.0, float(split))
    if isinstance(split, Sequence) and len(split) in (2, 3):
        parts = [float(p) for p in split]
        train, validation, test = (parts[0], 0.0, parts[1]) if len(parts) == 2 else parts
        if min(train, test) <= 0 or validation < 0 or not math.isclose(sum(parts), 1.0):
            raise ValueError(
                f"split={tuple(split)!r}: (train, [validation,] test) fractions must be "
                "positive (the validation one may be 0) and sum to 1, e.g. (0.65, 0.25, 0.10)."
            )
        return (train, validation, test)
    raise ValueError(
        f"split={split!r}: pass a test fraction (0.2), (train, test) or (train, validation, "
        "test) fractions, or 'seed001'."
    )


def make_split(y: Any, split: Any = 0.2, *, random_state: int | None = 0) -> Split:
    """Split labelled data into stratified, seeded train / [validation /] test positions.

    The test part is drawn first with :func:`featclf.train.split_indices` (the split every
    featclf experiment uses), the validation part from the rest; both depend only on ``y`` and
    ``random_state``, never on the images.

    Parameters
    ----------
    y : array-like of shape (n,)
        Labels to stratify on.
    split : float, (train, test), (train, validation, test) or "seed001", default=0.2
        A test fraction, or the fractions of the parts (summing to 1); ``"seed001"`` is seed
        001's 65/25/10.
    random_state : int or None, default=0
        Seed of the shuffles.

    Returns
    -------
    Split

    Examples
    --------
    >>> from featclf.compare import make_split
    >>> parts = make_split([0, 1] * 50, "seed001")
    >>> len(parts.train), len(parts.validation), len(parts.test)
    (65, 25, 10)
    """
    y = np.asarray(y)
    train_frac, val_frac, test_frac = _split_fractions(split)
    rest, test = split_indices(y, test_size=test_frac, random_state=random_state)
    if val_frac == 0:
        return Split(rest, rest[:0], test, (train_frac, val_frac, test_frac))
    train_pos, val_pos = split_indices(
        y[rest], test_size=val_frac / (train_frac + val_frac), random_state=random_state
    )
    return Split(rest[train_pos], rest[val_pos], test, (train_frac, val_frac, test_frac))


# --------------------------------------------------------------------------- training recipes


def training_recipe(
    model: str, *, epochs: int | None = None, options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """SoftmaxClassifier parameters ``compare`` trains ``model`` with.

    Parameters
    ----------
    model : str
        A zoo name.
    epochs : int, optional
        Overrides the recipe's number of epochs.
    options : mapping, optional
        Further :class:`~featclf.train.SoftmaxClassifier` parameters, applied last.

    Returns
    -------
    dict

    Examples
    --------
    >>> from featclf.compare import training_recipe
    >>> recipe = training_recipe("seed_cnn")
    >>> recipe["epochs"], recipe["lr"], recipe["nesterov"], recipe["validation_fraction"]
    (10, 0.05, True, 0.0)
    >>> training_recipe("lenet5", epochs=2)["epochs"]
    2
    """
    recipe = dict(TRAINING_RECIPES.get(model, {"validation_fraction": 0.0}))
    if epochs is not None:
        recipe["epochs"] = epochs
    recipe.update(options or {})
    valid = SoftmaxClassifier().get_params(deep=False)
    unknown = sorted(set(recipe) - set(valid))
    if unknown:
        raise ValueError(
            f"train_options {unknown} are not SoftmaxClassifier parameters; valid ones: "
            f"{', '.join(sorted(valid))}."
        )
    return recipe


# --------------------------------------------------------------------------- progress


class _Log:
    """Stage lines with the elapsed time (stderr), only when progress is on."""

    def __init__(self, enabled: bool, write: Callable[[str], None] | None = None) -> None:
        self.enabled = enabled
        self.start = time.perf_counter()
        self.write = write or (lambda line: print(line, file=sys.stderr, flush=True))

    def __call__(self, message: str) -> None:
        if self.enabled:
            self.write(f"[{time.perf_counter() - self.start:6.1f}s] {message}")


# --------------------------------------------------------------------------- evaluation pieces


@dataclass
class _Outcome:
    """One evaluated classifier: its row (without paired statistics) and test predictions."""

    row: dict[str, Any]
    pred: np.ndarray


def _score(
    y_true: np.ndarray, pred: np.ndarray, proba: np.ndarray | None, classes: np.ndarray, *,
    n_resamples: int, confidence: float, random_state: int | None,
) -> dict[str, float]:  # fmt: skip
    """Accuracy with its bootstrap interval, macro-F1 and log-loss (NaN without proba)."""
    ci = bootstrap_accuracy_ci(
        y_true, pred, n_resamples=n_resamples, confidence=confidence, random_state=random_state
    )
    return {
        "accuracy": float(accuracy_score(y_true, pred)),
        "accuracy_ci_low": ci.ci_low,
        "accuracy_ci_high": ci.ci_high,
        "macro_f1": float(f1_score(y_true, pred, average="macro", labels=classes,
                                   zero_division=0)),
        "log_loss": float(log_loss(y_true, proba, labels=classes)) if proba is not None
        else math.nan,
    }  # fmt: skip


def _fit_one_C(
    pipeline: Pipeline, C: float, F_train: np.ndarray, y_train: np.ndarray, F_test: np.ndarray
) -> tuple[np.ndarray, np.ndarray | None, float, float, bool]:
    """Fit one C on all training features; predict the test features (runs in a worker)."""
    estimator = clone(pipeline).set_params(**{_C_PARAM: C})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        start = time.perf_counter()
        estimator.fit(F_train, y_train)
        fit_time = time.perf_counter() - start
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    start = time.perf_counter()
    pred = estimator.predict(F_test)
    proba = estimator.predict_proba(F_test) if hasattr(estimator, "predict_proba") else None
    predict_time = time.perf_counter() - start
    return pred, proba, fit_time, predict_time, converged


@dataclass
class _Features:
    """Feature matrices of one network layer for the parts of the split."""

    train: np.ndarray
    validation: np.ndarray
    test: np.ndarray
    seconds: float

    @property
    def n_images(self) -> int:
        return len(self.train) + len(self.validation) + len(self.test)


def _extract(extractor: DeepFeatureExtractor, parts: Mapping[str, ImageSource]) -> _Features:
    """Transform every part of the split with one fitted extractor, timed together."""
    start = time.perf_counter()
    out = {key: extractor.transform(source) for key, source in parts.items()}
    seconds = time.perf_counter() - start
    empty = np.empty((0, out["train"].shape[1]), dtype=np.float32)
    return _Features(out["train"], out.get("validation", empty), out["test"], seconds)


def _sweep(
    name: str, features: _Features, y_train: np.ndarray, y_val: np.ndarray,
    y_test: np.ndarray, classes: np.ndarray, *, grid: Sequence[float],
    options: Mapping[str, Any], cv: int, n_jobs: int | None, random_state: int | None,
    n_resamples: int, confidence: float,
) -> list[_Outcome]:  # fmt: skip
    """Select C for one classifier on training data only; score every C on the test features."""
    pipeline = make_classifier(name, **options)
    if len(features.validation):
        # A validation part: fit on the training features, score on the validation features.
        F_select = np.concatenate([features.train, features.validation])
        y_select = np.concatenate([y_train, y_val])
        splitter: Any = PredefinedSplit(
            np.r_[np.full(len(y_train), -1), np.zeros(len(y_val), dtype=int)]
        )
    else:
        F_select, y_select = features.train, y_train
        splitter = StratifiedKFold(n_splits=cv, shuffle=True, random_state=random_state)
    search = GridSearchCV(
        pipeline, {_C_PARAM: list(grid)}, cv=splitter, n_jobs=n_jobs, refit=False,
        error_score="raise",
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        search.fit(F_select, y_select)
    cv_scores = search.cv_results_["mean_test_score"]
    chosen = int(search.best_index_)  # ties: the first, i.e. the smallest C

    fits = Parallel(n_jobs=n_jobs)(
        delayed(_fit_one_C)(pipeline, C, features.train, y_train, features.test) for C in grid
    )
    outcomes = []
    for i, (C, (pred, proba, fit_time, predict_time, converged)) in enumerate(zip(grid, fits)):
        row = {
            "classifier": name,
            "C": float(C),
            "selected": i == chosen,
            "cv_accuracy": float(cv_scores[i]),
            **_score(y_test, pred, proba, classes, n_resamples=n_resamples,
                     confidence=confidence, random_state=random_state),
            "fit_time_s": fit_time,
            "predict_time_s": predict_time,
            "extract_time_s": features.seconds,
            "extract_images_per_s": features.n_images / features.seconds
            if features.seconds > 0 else math.nan,
            "n_features": int(features.train.shape[1]),
            "converged": converged,
        }  # fmt: skip
        outcomes.append(_Outcome(row, np.asarray(pred)))
    return outcomes


_PAIRED_COLUMNS = (
    "diff_vs_softmax", "diff_ci_low", "diff_ci_high", "mcnemar_b", "mcnemar_c", "mcnemar_p",
)  # fmt: skip


def _paired_stats(
    outcome: _Outcome, reference: np.ndarray, y_test: np.ndarray, *, n_resamples: int,
    confidence: float, random_state: int | None,
) -> dict[str, float]:  # fmt: skip
    """McNemar and the bootstrap interval of (this classifier's accuracy - the softmax head's)."""
    test = mcnemar(y_test, outcome.pred, reference)
    diff = bootstrap_accuracy_diff(
        y_test, outcome.pred, reference, n_resamples=n_resamples, confidence=confidence,
        random_state=random_state,
    )  # fmt: skip
    return {
        "diff_vs_softmax": diff.diff,
        "diff_ci_low": diff.ci_low,
        "diff_ci_high": diff.ci_high,
        "mcnemar_b": test.b,
        "mcnemar_c": test.c,
        "mcnemar_p": test.pvalue,
    }


# --------------------------------------------------------------------------- the experiment


def _check_names(values: Sequence[str], valid: Sequence[str], what: str) -> list[str]:
    values = [values] if isinstance(values, str) else list(values)
    if not values:
        raise ValueError(f"{what}: pass at least one of {', '.join(valid)}.")
    unknown = [v for v in values if v not in valid]
    if unknown:
        raise ValueError(f"{what}: unknown {unknown}; valid names are {', '.join(valid)}.")
    return values


def _c_grids(classifiers: Sequence[str], c_grids: Any) -> dict[str, list[float]]:
    """The C values each classifier sweeps."""
    if c_grids is None:
        return {name: c_grid(name) for name in classifiers}
    if isinstance(c_grids, Mapping):
        unknown = sorted(set(c_grids) - set(classifiers))
        if unknown:
            raise ValueError(f"c_grids has entries {unknown} for classifiers not being run.")
        grids = {n: list(c_grids.get(n, c_grid(n))) for n in classifiers}
    else:
        grids = {n: list(c_grids) for n in classifiers}
    for name, grid in grids.items():
        if not grid or any(not (isinstance(c, int | float) and c > 0) for c in grid):
            raise ValueError(f"c_grids[{name!r}] = {grid!r}: give one or more positive values.")
    return {n: [float(c) for c in g] for n, g in grids.items()}


def _check_models_and_layers(models: Sequence[str], labels: Sequence[str]) -> None:
    """Refuse unknown model or layer names before minutes of training, not after."""
    for model in models:
        get_model_spec(model)  # an unknown name raises, suggesting close ones
        nodes = [label for label in labels if label != _PENULTIMATE]
        if nodes:
            network = get_model(model)  # random weights: only the graph's node names matter
            for node in nodes:
                check_layer(network, node)  # raises, listing the valid names


def _layer_label(layer: str | None) -> str:
    return _PENULTIMATE if layer in (None, _PENULTIMATE) else str(layer)


def _pretrained(weights: Any, models: Sequence[str] | None) -> tuple[list[str], dict[str, Any]]:
    """Models to run and, per model, the pre-trained checkpoint and its preprocessing."""
    if isinstance(weights, Mapping):
        paths = {str(m): w for m, w in weights.items()}
        chosen = list(models) if models is not None else list(paths)
        missing = [m for m in chosen if m not in paths]
        if missing:
            raise ValueError(f"weights has no checkpoint for model(s) {missing}.")
    else:
        if not Path(weights).is_file():
            raise FileNotFoundError(
                f"weights={os.fspath(weights)!r} is not a file: pass the checkpoint of a trained "
                "network, e.g. artifacts/models/lenet5-mnist5k.pt (featclf train writes one)."
            )
        stored = (read_checkpoint(weights).metadata or {}).get("model")
        chosen = list(models) if models is not None else [stored] if stored else []
        if not chosen:
            raise ValueError(
                f"weights={os.fspath(weights)!r} does not name its model: pass models=[...]."
            )
        paths = dict.fromkeys(chosen, weights)
    info: dict[str, Any] = {}
    for model in chosen:
        meta = read_checkpoint(paths[model]).metadata or {}
        if meta.get("model") not in (None, model):
            raise ValueError(
                f"weights={os.fspath(paths[model])!r} is a checkpoint of {meta['model']!r}, not "
                f"{model!r}: pass models=[{meta['model']!r}] or that model's checkpoint."
            )
        stored_pre = meta.get("preprocess")
        preprocess = ImagePreprocess.from_dict(stored_pre) if stored_pre else "auto"
        info[model] = {"weights": os.fspath(paths[model]), "preprocess": preprocess}
    return chosen, info


@dataclass
class _Experiment:
    """The state one ``compare`` call shares between its stages: data parts and collected output."""

    name: str
    parts: Split
    sources: dict[str, ImageSource]
    y: dict[str, np.ndarray]
    classes: np.ndarray
    stats_options: dict[str, Any]
    device: str
    progress: bool
    log: _Log
    rows: list[dict[str, Any]] = field(default_factory=list)
    predictions: dict[str, list] = field(default_factory=dict)
    histories: dict[str, dict[str, list]] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)

    def train_baseline(self, model: str, baseline: str, clf: SoftmaxClassifier) -> _Outcome:
        """Train one softmax network on the training part; score it on the test part."""
        y_train, y_val, y_test = self.y["train"], self.y["validation"], self.y["test"]
        clf.set_params(device=self.device, random_state=self.stats_options["random_state"],
                       progress=self.progress)  # fmt: skip
        how = "fine-tuning" if baseline == "softmax_finetune" else "training"
        self.log(f"{model}: {how} the softmax network ({clf.epochs} epochs) on "
                 f"{len(y_train)} images")  # fmt: skip
        start = time.perf_counter()
        clf.fit(self.sources["train"], y_train)
        fit_time = time.perf_counter() - start
        start = time.perf_counter()
        proba = clf.predict_proba(self.sources["test"])
        predict_time = time.perf_counter() - start
        pred = clf.classes_[proba.argmax(axis=1)]
        val_accuracy = (
            float(accuracy_score(y_val, clf.predict(self.sources["validation"])))
            if len(y_val) else math.nan
        )  # fmt: skip
        row = {
            "classifier": baseline, "C": math.nan, "selected": True, "cv_accuracy": val_accuracy,
            **_score(y_test, pred, proba, clf.classes_, **self.stats_options),
            "fit_time_s": fit_time, "predict_time_s": predict_time,
            "extract_time_s": math.nan, "extract_images_per_s": math.nan,
            "n_features": math.nan, "converged": math.nan,
        }  # fmt: skip
        self.histories[f"{model}|{baseline}"] = clf.history_.to_dict(orient="list")
        self.timings[f"{model}|{baseline}|fit"] = fit_time
        self.log(f"{model}: {baseline} test accuracy {row['accuracy']:.4f} ({fit_time:.1f} s)")
        return _Outcome(row, np.asarray(pred))

    def features(self, model: str, label: str, extractor: DeepFeatureExtractor) -> _Features:
        """Feature vectors of every part of the split from one network layer."""
        self.log(f"{model}/{label}: extracting features of "
                 f"{sum(map(len, self.sources.values()))} images")  # fmt: skip
        features = _extract(extractor.fit(), self.sources)
        self.timings[f"{model}|{label}|extract"] = features.seconds
        self.log(f"{model}/{label}: {features.train.shape[1]} features per image, "
                 f"{features.n_images / max(features.seconds, 1e-9):,.0f} images/s")
        return features

    def sweep(self, model: str, label: str, classifier: str, features: _Features, **options
              ) -> list[_Outcome]:  # fmt: skip
        """Choose C for one classifier on training data; score every C on the test part."""
        selection = (
            "on the validation part" if len(self.y["validation"])
            else f"by {options['cv']}-fold cross-validation"
        )  # fmt: skip
        self.log(f"{model}/{label}: {classifier}: choosing C among {len(options['grid'])} "
                 f"values {selection}")  # fmt: skip
        start = time.perf_counter()
        # One BLAS thread per fit, parallelism across fits (n_jobs): on matrices this small a
        # multi-threaded BLAS is far slower than one thread (measured on 2 cores: lbfgs
        # logistic regression on 4,000 x 84 features 30-60x slower with 2 OpenBLAS threads).
        with threadpool_limits(limits=1, user_api="blas"):
            outcomes = _sweep(
                classifier, features, self.y["train"], self.y["validation"], self.y["test"],
                self.classes, **options, **self.stats_options,
            )  # fmt: skip
        seconds = self.timings[f"{model}|{label}|{classifier}"] = time.perf_counter() - start
        best = next(o for o in outcomes if o.row["selected"])
        self.log(f"{model}/{label}: {classifier}: C={best.row['C']:g} (cv "
                 f"{best.row['cv_accuracy']:.4f}), test accuracy {best.row['accuracy']:.4f} "
                 f"({seconds:.1f} s)")  # fmt: skip
        return outcomes

    def add_group(self, model: str, label: str, outcomes: list[_Outcome], reference: np.ndarray
                  ) -> None:  # fmt: skip
        """Add one model/layer's rows, paired against the softmax head's test predictions."""
        for outcome in outcomes:
            if outcome.row["classifier"] == "softmax":
                paired = dict.fromkeys(_PAIRED_COLUMNS, math.nan)
            else:
                paired = _paired_stats(outcome, reference, self.y["test"], **self.stats_options)
            self.rows.append({
                "dataset": self.name, "model": model, "layer": label, **outcome.row,
                "n_train": len(self.y["train"]), "n_test": len(self.y["test"]), **paired,
            })  # fmt: skip
            if outcome.row["selected"]:
                key = f"{model}|{label}|{outcome.row['classifier']}"
                self.predictions[key] = outcome.pred.tolist()


def compare(
    data: Any,
    *,
    models: Sequence[str] | None = None,
    layers: Sequence[str | None] = (None,),
    classifiers: Sequence[str] = CLASSIFIERS,
    weights: str | os.PathLike | Mapping[str, str | os.PathLike] | None = None,
    epochs: int | None = None,
    train_options: Mapping[str, Any] | None = None,
    split: float | Sequence[float] | str = 0.2,
    cv: int = 3,
    c_grids: Mapping[str, Sequence[float]] | Sequence[float] | None = None,
    classifier_options: Mapping[str, Any] | None = None,
    pooling: str = "avg",
    n_jobs: int | None = None,
    n_resamples: int = 2000,
    confidence: float = 0.95,
    device: str = "auto",
    dataset: str | None = None,
    random_state: int | None = 0,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
) -> pd.DataFrame:
    """Compare the softmax head with SVMs and logistic regression on the network's features.

    Parameters
    ----------
    data : str, path-like or (X, y) tuple
        ``"mnist5k"``, ``"digits"``, a folder of labelled images, a CSV of ``path,label``
        lines, or ``(X, y)`` (see :func:`load_data`).
    models : sequence of str, optional
        Zoo names of the networks. Default: ``("lenet5", "seed_cnn")``; with a single
        ``weights`` checkpoint, the model it was saved from.
    layers : sequence of str or None, default=(None,)
        Layers whose outputs are the features: None or ``"penultimate"`` for the head's input,
        or graph node names (``"c5"``, ``"f6"`` for lenet5; see
        :func:`featclf.models.layer_names`). Each layer is one group of rows.
    classifiers : sequence of str, default=CLASSIFIERS
        Names from :data:`featclf.pipelines.CLASSIFIERS`.
    weights : path or mapping of model -> path, optional
        Transfer experiment: a pre-trained checkpoint used, frozen, as the feature extractor.
        The baselines then are ``"softmax"`` (the network trained from scratch on ``data``,
        the reference of every paired statistic) and ``"softmax_finetune"`` (the network
        fine-tuned from ``weights``).
    epochs : int, optional
        Epochs of every network (default: :data:`TRAINING_RECIPES`).
    train_options : mapping, optional
        Further :class:`~featclf.train.SoftmaxClassifier` parameters for every network.
    split : float, (train, test), (train, validation, test) or "seed001", default=0.2
        See :func:`make_split`. With a validation part, C is chosen on it instead of by
        cross-validation.
    cv : int, default=3
        Folds of the stratified (seeded, shuffled) cross-validation that chooses C.
    c_grids : mapping of classifier -> values, or values, optional
        The C values to sweep (default :func:`featclf.pipelines.c_grid` per classifier).
    classifier_options : mapping, optional
        Keyword options of :func:`featclf.pipelines.make_classifier` for every classifier
        (``scale``, ``l2_normalize``, ``pca``, ``whiten``).
    pooling : {"avg", "max", "flatten"}, default="avg"
        How convolutional maps become vectors.
    n_jobs : int, optional
        joblib workers for the grid searches and the per-C fits (None: one, -1: all cores).
        Each fit uses one BLAS thread: parallelism is across fits.
    n_resamples : int, default=2000
        Bootstrap resamples of every interval.
    confidence : float, default=0.95
        Confidence level of the intervals.
    device : str, default="auto"
        Device of training and extraction.
    dataset : str, optional
        The name in the ``dataset`` column (default from ``data``).
    random_state : int or None, default=0
        Seeds the split, the networks' training, the cross-validation folds and the
        bootstraps. The same value reproduces every column except the timings.
    progress : bool, default=False
        Print one line per stage (stderr) and show training and extraction progress bars.
    log : callable, optional
        Receives the stage lines instead of stderr (when ``progress`` is True).

    Returns
    -------
    pandas.DataFrame
        One row per (model, layer, classifier, C), columns :data:`RESULT_COLUMNS`
        (:func:`featclf.report.write_report` documents them); ``attrs`` holds ``config``,
        ``classes``, ``y_true`` (test labels), ``predictions`` (``"model|layer|classifier"`` ->
        test predictions of the selected rows), ``split`` (``train``, ``validation`` and
        ``test`` positions into the data), ``histories`` (per-epoch training history per
        network) and ``timings`` (seconds per stage and in total).

    Examples
    --------
    >>> from featclf.compare import compare
    >>> from featclf.data import load_digits_images
    >>> X, y = load_digits_images(return_X_y=True)
    >>> results = compare((X[:300], y[:300]), models=["lenet5"], classifiers=["logistic"],
    ...                   epochs=1, cv=2, c_grids=[1.0], n_resamples=100)
    >>> results[["model", "layer", "classifier", "selected"]]
          model        layer classifier  selected
    0    lenet5  penultimate    softmax      True
    1    lenet5  penultimate   logistic      True
    >>> sorted(results.attrs)
    ['classes', 'config', 'histories', 'predictions', 'split', 'timings', 'y_true']
    """
    log_line = _Log(progress, log)
    started = time.perf_counter()
    name, X, y = load_data(data, name=dataset)
    parts = make_split(y, split, random_state=random_state)
    classifiers = _check_names(classifiers, CLASSIFIERS, "classifiers")
    grids = _c_grids(classifiers, c_grids)
    if not isinstance(cv, int) or isinstance(cv, bool) or cv < 2:
        raise ValueError(f"cv={cv!r}: cross-validation needs an int >= 2 folds.")
    transfer: dict[str, Any] = {}
    if weights is not None:
        models, transfer = _pretrained(weights, models)
    models = [models] if isinstance(models, str) else list(models or DEFAULT_MODELS)
    labels = [_layer_label(layer) for layer in ([layers] if isinstance(layers, str) else layers)]
    labels = labels or [_PENULTIMATE]
    if len(set(labels)) != len(labels):
        raise ValueError(f"layers={list(layers)!r} names a layer twice.")
    _check_models_and_layers(models, labels)
    recipes = {m: training_recipe(m, epochs=epochs, options=train_options) for m in models}
    for model, info in transfer.items():
        # One preprocessing for all three networks of a transfer run: the pre-trained one's.
        recipes[model] = {"preprocess": info["preprocess"], **recipes[model]}
    options = dict(classifier_options or {})
    for classifier in classifiers:
        make_classifier(classifier, **options)  # bad options raise now, not after training

    source = as_image_source(X, name="data")
    run = _Experiment(
        name=name, parts=parts,
        sources={key: source.subset(getattr(parts, key)) for key in ("train", "validation", "test")
                 if len(getattr(parts, key))},
        y={key: y[getattr(parts, key)] for key in ("train", "validation", "test")},
        classes=np.unique(y),
        stats_options={"n_resamples": n_resamples, "confidence": confidence,
                       "random_state": random_state},
        device=device, progress=progress, log=log_line,
    )  # fmt: skip
    log_line(f"{name}: {len(y)} images, {len(run.classes)} classes; split {parts.describe()}")
    for model in models:
        baselines = {"softmax": SoftmaxClassifier(model, **recipes[model])}
        if model in transfer:
            baselines["softmax_finetune"] = SoftmaxClassifier(
                model, weights=transfer[model]["weights"], **recipes[model]
            )
        trained = {key: run.train_baseline(model, key, clf) for key, clf in baselines.items()}
        for label in labels:
            # The features: the softmax network just trained, or the frozen pre-trained one.
            if model in transfer:
                network, pretrained = model, transfer[model]
            else:
                network, pretrained = baselines["softmax"], {}
            extractor = DeepFeatureExtractor(
                network, weights=pretrained.get("weights"),
                layer=None if label == _PENULTIMATE else label, pooling=pooling,
                preprocess=pretrained.get("preprocess", "auto"), device=device,
                batch_size=256, progress=progress,
            )  # fmt: skip
            features = run.features(model, label, extractor)
            outcomes = list(trained.values())
            for classifier in classifiers:
                outcomes += run.sweep(
                    model, label, classifier, features, grid=grids[classifier],
                    options=options, cv=cv, n_jobs=n_jobs,
                )  # fmt: skip
            run.add_group(model, label, outcomes, trained["softmax"].pred)

    results = pd.DataFrame.from_records(run.rows, columns=list(RESULT_COLUMNS))
    results["converged"] = results["converged"].astype(object)
    run.timings["total"] = time.perf_counter() - started
    results.attrs = {
        "config": _config(
            name, len(y), parts, models, labels, classifiers, grids, recipes, transfer,
            cv=cv, pooling=pooling, options=options, confidence=confidence,
            n_resamples=n_resamples, random_state=random_state, device=device,
        ),  # fmt: skip
        "classes": run.classes.tolist(),
        "y_true": run.y["test"].tolist(),
        "predictions": run.predictions,
        "split": {key: getattr(parts, key).tolist() for key in ("train", "validation", "test")},
        "histories": run.histories,
        "timings": run.timings,
    }
    log_line(f"done in {run.timings['total']:.1f} s")
    return results


def _config(
    name: str, n_images: int, parts: Split, models: list[str], labels: list[str],
    classifiers: list[str], grids: dict[str, list[float]], recipes: dict[str, dict[str, Any]],
    transfer: dict[str, Any], *, cv: int, pooling: str, options: dict[str, Any],
    confidence: float, n_resamples: int, random_state: int | None, device: str,
) -> dict[str, Any]:  # fmt: skip
    """The experiment's setup, as the report prints it (plain values only)."""

    def recipe_text(model: str) -> str:
        r = recipes[model]
        text = (f"{r.get('optimizer', 'sgd')} lr={r.get('lr', 0.05)}, "
                f"{r.get('epochs', 10)} epochs, batch {r.get('batch_size', 100)}")  # fmt: skip
        shown = ("optimizer", "lr", "epochs", "batch_size", "preprocess")
        extras = {k: v for k, v in r.items() if k not in shown}
        return text + "".join(f", {k}={v}" for k, v in extras.items())

    selection = (
        "on the validation part's features" if len(parts.validation)
        else f"by stratified {cv}-fold cross-validation on the training features"
    )  # fmt: skip
    if not transfer and not len(parts.validation):
        # Worth saying in the report: the dotted CV curve sits above the test curve for this reason.
        selection += (" (the network was trained on the training images, so accuracy on their "
                      "features is optimistic; only test accuracy measures generalisation)")
    fractions = "/".join(f"{f:g}" for f in parts.fractions)
    config: dict[str, Any] = {
        "dataset": name,
        "images": n_images,
        "split": f"{parts.describe()} (train/validation/test fractions {fractions}, "
        f"stratified, seed {random_state})",
        "models": models,
        "layers": labels,
        "pooling": pooling,
        "softmax training": {m: recipe_text(m) for m in models},
        "classifiers": classifiers,
        "C grids": {n: " ".join(f"{c:g}" for c in g) for n, g in grids.items()},
        "C selection": selection,
        "confidence": confidence,
        "bootstrap resamples": n_resamples,
        "random_state": random_state,
        "device": str(resolve_device(device)),
        "versions": f"featclf {featclf.__version__}, torch {torch.__version__}, "
        f"scikit-learn {sklearn.__version__}",
    }
    if options:
        config["classifier options"] = options
    if transfer:
        config["pre-trained weights"] = {m: info["weights"] for m, info in transfer.items()}
        config["features"] = "the pre-trained network, frozen"
        config["baselines"] = ("softmax = the network trained from scratch on this data (the "
                               "reference); softmax_finetune = fine-tuned from the weights")
    else:
        config["features"] = "the trained softmax network without its head"
    return config


