"""The stages of one :func:`featclf.compare.compare` run, and the state they share.

:class:`Experiment` trains the softmax baselines, extracts every layer's features (one
extractor, one forward pass per batch, through the feature store when there is one; the same
forward gives the softmax network's logits, which score it), runs each classifier's C sweep
(:func:`featclf.sweep.sweep`) and collects the rows, predictions (with each test image's score
of its predicted class and the test images' identities), histories and timings that become a
:class:`~featclf.comparison.Comparison`. The data stage before it (:func:`readable_files`,
:func:`split_parts`, :func:`class_counts`) decides which images go where.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import scipy.special
import sklearn
import torch
from sklearn.metrics import accuracy_score
from threadpoolctl import threadpool_limits

import featclf
from featclf.comparison import ResultKey
from featclf.data.files import ImageFiles
from featclf.data.sources import FileSource, ImageSource
from featclf.extract import DeepFeatureExtractor
from featclf.model_selection import Split, check_class_counts, make_split, predefined_split
from featclf.sweep import (
    PAIRED_COLUMNS,
    Features,
    Outcome,
    paired_stats,
    predicted_class_score,
    score,
    sweep,
)
from featclf.train import SoftmaxClassifier

__all__ = ["Experiment", "StageLog", "class_counts", "readable_files", "setup_description",
           "split_parts"]


def _split_origin(X: Any, test_data: Any) -> str | None:
    """Where a collection's own split comes from, in words (None: it has none)."""
    if test_data is not None:
        where = test_data.root if isinstance(test_data, ImageFiles) else os.fspath(test_data)
        return f"the data's images for training, those of {where} (test data) for testing"
    if not isinstance(X, ImageFiles) or X.splits is None:
        return None
    if X.layout == "csv":
        return "the CSV file's own split column"
    parts = [f"{part}/" for part in ("train", "val", "test") if part in X.splits]
    return f"the folder's own {' and '.join(parts)} subfolders"


def readable_files(name: str, X: Any, y: np.ndarray, on_error: str, log: StageLog
              ) -> tuple[Any, np.ndarray, list[tuple[str, str]]]:  # fmt: skip
    """With ``on_error="skip"``, the image files that decode, and the ones left out (before
    the split: every part then holds readable images only)."""
    if on_error != "skip" or not isinstance(X, ImageFiles):
        return X, y, []
    log(f"{name}: checking that every one of {len(X)} image files can be read")
    errors = FileSource(X.paths).unreadable()
    if not errors:
        return X, y, []
    bad = {e.index for e in errors}
    keep = np.asarray([i for i in range(len(X)) if i not in bad], dtype=np.int64)
    skipped = [(e.source, e.reason) for e in errors]
    log(f"{name}: skipping {len(skipped)} unreadable image files: "
        + "; ".join(f"{path} ({reason})" for path, reason in skipped[:5])
        + (" ..." if len(skipped) > 5 else ""))  # fmt: skip
    return X[keep], y[keep], skipped


def split_parts(name: str, X: Any, y: np.ndarray, split: Any, test_data: Any, cv: int,
           random_state: int | None) -> Split:  # fmt: skip
    """The split, refusing class counts that cannot be split or trained on (before training)."""
    origin = _split_origin(X, test_data)
    if origin is not None and set(X.splits) != {"train"}:
        parts = predefined_split(X.splits, origin=origin)
    else:
        check_class_counts(y, min_per_class=2, what=f"{name}: a stratified train/test split")
        parts = make_split(y, split, random_state=random_state)
    # Choosing C by k-fold cross-validation needs k training images of each class.
    needed = 2 if len(parts.validation) else max(2, cv)
    how = "" if len(parts.validation) else f" ({cv}-fold cross-validation chooses C)"
    check_class_counts(y[parts.train], min_per_class=needed,
                       what=f"{name}: training{how}")  # fmt: skip
    unseen = sorted(set(y[parts.test].tolist()) - set(y[parts.train].tolist()), key=str)
    if unseen:
        raise ValueError(f"{name}: class {unseen[0]!r} has test images but no training images "
                         f"({parts.origin}); every test class needs training images")
    return parts


def class_counts(y: np.ndarray, parts: Split) -> dict[Any, dict[str, int]]:
    """Images per class in each part of the split: ``{class: {"train": n, ...}}``.

    Examples
    --------
    >>> import numpy as np
    >>> from featclf.model_selection import Split
    >>> from featclf.experiment import class_counts
    >>> class_counts(np.array(["a", "b", "a"]), Split(np.array([0, 1]), np.array([], int),
    ...                                                  np.array([2])))
    {'a': {'train': 1, 'test': 1}, 'b': {'train': 1, 'test': 0}}
    """
    keys = [k for k in ("train", "validation", "test")
            if k != "validation" or len(parts.validation)]  # fmt: skip
    out: dict[Any, dict[str, int]] = {}
    for cls in np.unique(y).tolist():
        out[cls] = {k: int(np.sum(y[getattr(parts, k)] == cls)) for k in keys}
    return out


class StageLog:
    """Stage lines with the elapsed time (stderr), only when progress is on.

    Examples
    --------
    >>> from featclf.experiment import StageLog
    >>> lines = []
    >>> StageLog(True, lines.append)("training")
    >>> lines[0].endswith("s] training")
    True
    """

    def __init__(self, enabled: bool, write: Callable[[str], None] | None = None) -> None:
        self.enabled = enabled
        self.start = time.perf_counter()
        self.write = write or (lambda line: print(line, file=sys.stderr, flush=True))

    def __call__(self, message: str) -> None:
        if self.enabled:
            self.write(f"[{time.perf_counter() - self.start:6.1f}s] {message}")


@dataclass
class Experiment:
    """The state one ``compare`` call shares between its stages: data parts and collected output."""

    name: str
    parts: Split
    sources: dict[str, ImageSource]
    y: dict[str, np.ndarray]
    classes: np.ndarray
    stats_options: dict[str, Any]
    device: str
    progress: bool
    log: StageLog
    rows: list[dict[str, Any]] = field(default_factory=list)
    predictions: dict[ResultKey, np.ndarray] = field(default_factory=dict)
    scores: dict[ResultKey, np.ndarray] = field(default_factory=dict)
    score_kinds: dict[ResultKey, str] = field(default_factory=dict)
    estimators: dict[ResultKey, Any] = field(default_factory=dict)
    networks: dict[str, Any] = field(default_factory=dict)
    histories: dict[tuple[str, str], pd.DataFrame] = field(default_factory=dict)
    timings: list[dict[str, Any]] = field(default_factory=list)
    weights: dict[str, str] = field(default_factory=dict)

    def train_baseline(self, model: str, baseline: str, clf: SoftmaxClassifier) -> float:
        """Train one softmax network on the training part; returns the training seconds."""
        y_train = self.y["train"]
        clf.set_params(device=self.device, random_state=self.stats_options["random_state"],
                       progress=self.progress)  # fmt: skip
        how = "fine-tuning" if baseline == "softmax_finetune" else "training"
        self.log(f"{model}: {how} the softmax network ({clf.epochs} epochs) on "
                 f"{len(y_train)} images")  # fmt: skip
        start = time.perf_counter()
        clf.fit(self.sources["train"], y_train)
        fit_time = time.perf_counter() - start
        self.histories[model, baseline] = clf.history_.copy()
        self._time("training", model, None, baseline, fit_time)
        return fit_time

    def score_baseline(self, model: str, baseline: str, clf: SoftmaxClassifier,
                       fit_time: float, logits: Features | None = None) -> Outcome:  # fmt: skip
        """Score a trained softmax network on the test part (and the validation part).

        With ``logits`` (the ``"logits"`` block of the extraction that feeds the other
        classifiers: the network's own outputs), its predictions are read off them, exactly
        as :meth:`SoftmaxClassifier.predict <featclf.train.SoftmaxClassifier.predict>` makes
        them, with no second pass over the images; else ``predict_proba`` runs the network.
        """
        y_val, y_test = self.y["validation"], self.y["test"]
        start = time.perf_counter()
        if logits is not None:
            test_logits = logits.test.astype(np.float64)
            proba = scipy.special.softmax(test_logits, axis=1)
            pred = clf.classes_[test_logits.argmax(axis=1)]
            val_pred = clf.classes_[logits.validation.argmax(axis=1)] if len(y_val) else None
        else:
            proba = clf.predict_proba(self.sources["test"])
            pred = clf.classes_[proba.argmax(axis=1)]
            val_pred = clf.predict(self.sources["validation"]) if len(y_val) else None
        predict_time = time.perf_counter() - start
        seconds = logits.seconds if logits is not None else math.nan
        row = {
            "classifier": baseline, "C": math.nan, "selected": True,
            "cv_accuracy": float(accuracy_score(y_val, val_pred)) if len(y_val) else math.nan,
            **score(y_test, pred, proba, clf.classes_, **self.stats_options),
            "fit_time_s": fit_time, "predict_time_s": predict_time,
            # Read off the shared extraction, the softmax's predictions cost what it cost.
            "extract_time_s": seconds,
            "extract_images_per_s": logits.n_images / seconds if logits is not None
            and seconds > 0 else math.nan,
            "n_features": math.nan, "converged": math.nan,
        }  # fmt: skip
        source = "its logits from the feature extraction" if logits is not None else "its own pass"
        self.log(f"{model}: {baseline} test accuracy {row['accuracy']:.4f} ({fit_time:.1f} s "
                 f"training; predictions from {source})")  # fmt: skip
        scores = predicted_class_score(pred, clf.classes_, proba)
        return Outcome(row, np.asarray(pred), scores, "probability", clf)

    @property
    def images(self) -> list[str] | np.ndarray:
        """Who the test images are, in order: file paths, or row positions into the data."""
        test = self.sources.get("test")
        if isinstance(test, FileSource):
            return list(test.paths)
        return np.asarray(self.parts.test)

    def features(self, model: str, labels: list[str], extractor: DeepFeatureExtractor
                 ) -> dict[str, Features]:  # fmt: skip
        """Feature vectors of every part of the split for every layer, one forward per batch.

        Each part is extracted on its own, as ``transform`` would, so the batches (and hence
        the vectors, to the last bit) are those of a run without a store.
        """
        self.log(f"{model}: extracting {', '.join(labels)} features of "
                 f"{sum(map(len, self.sources.values()))} images")  # fmt: skip
        if not hasattr(extractor, "runner_"):
            extractor.fit()
        start = time.perf_counter()
        out = {key: extractor.extract(source) for key, source in self.sources.items()}
        seconds = time.perf_counter() - start
        computed = sum(e.n_computed for e in out.values())
        reused = sum(e.n_reused for e in out.values())
        self._time("extraction", model, ",".join(labels), None, seconds,
                   n_computed=computed, n_reused=reused)  # fmt: skip
        features = {}
        for label in labels:
            blocks = {key: e.block(label) for key, e in out.items()}
            empty = np.empty((0, blocks["train"].shape[1]), dtype=np.float32)
            features[label] = Features(blocks["train"], blocks.get("validation", empty),
                                       blocks["test"], seconds)  # fmt: skip
        widths = ", ".join(f"{label} {f.train.shape[1]}" for label, f in features.items())
        n_images = computed + reused
        self.log(f"{model}: feature vectors of {n_images} images: {computed} computed, "
                 f"{reused} reused from the feature store; {widths} features per image, "
                 f"{n_images / max(seconds, 1e-9):,.0f} images/s")  # fmt: skip
        return features

    def sweep(self, model: str, label: str, classifier: str, features: Features, *,
              y_train: np.ndarray | None = None, groups: np.ndarray | None = None,
              solver: str = "auto", **options) -> list[Outcome]:  # fmt: skip
        """Choose C for one classifier on training data; score every C on the test part.

        ``y_train`` (default: the training part's labels) labels the rows of
        ``features.train``; ``groups`` (one per row) keeps rows of one image in one
        cross-validation fold; ``solver`` is :func:`featclf.sweep.sweep`'s.
        """
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
            outcomes = sweep(
                classifier, features, self.y["train"] if y_train is None else y_train,
                self.y["validation"], self.y["test"], self.classes, **options, solver=solver,
                groups=groups, **self.stats_options,
            )  # fmt: skip
        seconds = time.perf_counter() - start
        self._time("classifier", model, label, classifier, seconds)
        best = next(o for o in outcomes if o.row["selected"])
        self.log(f"{model}/{label}: {classifier}: C={best.row['C']:g} (cv "
                 f"{best.row['cv_accuracy']:.4f}), test accuracy {best.row['accuracy']:.4f} "
                 f"({seconds:.1f} s)")  # fmt: skip
        return outcomes

    def add_group(self, model: str, label: str, outcomes: list[Outcome], reference: np.ndarray
                  ) -> None:  # fmt: skip
        """Add one model/layer's rows, paired against the softmax head's test predictions."""
        for outcome in outcomes:
            if outcome.row["classifier"] == "softmax":
                paired = dict.fromkeys(PAIRED_COLUMNS, math.nan)
            else:
                paired = paired_stats(outcome, reference, self.y["test"], **self.stats_options)
            self.rows.append({
                "dataset": self.name, "model": model, "layer": label, **outcome.row,
                "n_train": len(self.y["train"]), "n_test": len(self.y["test"]), **paired,
            })  # fmt: skip
            if outcome.row["selected"]:
                key = ResultKey(model, label, outcome.row["classifier"])
                self.predictions[key] = outcome.pred
                if outcome.estimator is not None:
                    self.estimators[key] = outcome.estimator
                if outcome.score is not None:
                    self.scores[key] = outcome.score
                    self.score_kinds[key] = str(outcome.score_kind)

    def _time(self, phase: str, model: str, layer: str | None, classifier: str | None,
              seconds: float, **counts: int) -> None:  # fmt: skip
        self.timings.append({"phase": phase, "model": model, "layer": layer,
                             "classifier": classifier, "seconds": seconds, **counts})  # fmt: skip


def _recipe_text(recipe: dict[str, Any]) -> str:
    """A training recipe in one line: optimiser, learning rate, epochs, batch, the rest."""
    text = (f"{recipe.get('optimizer', 'sgd')} lr={recipe.get('lr', 0.05)}, "
            f"{recipe.get('epochs', 10)} epochs, batch {recipe.get('batch_size', 100)}")
    shown = ("optimizer", "lr", "epochs", "batch_size", "preprocess")
    # Parameters a recipe leaves off (None, or 0 for a warm-up or weight decay) say nothing.
    extras = {k: v for k, v in recipe.items() if k not in shown and v is not None
              and not (k in ("warmup", "weight_decay") and v == 0)}  # fmt: skip
    return text + "".join(f", {k}={v}" for k, v in extras.items())


def _classes_text(counts: dict[Any, dict[str, int]]) -> str:
    """``0 400 train / 100 test; 1 ... (10 classes)``: every class with its counts."""
    items = [f"{cls} {' / '.join(f'{n} {part}' for part, n in parts.items())}"
             for cls, parts in counts.items()]  # fmt: skip
    shown = items[:50] + ([f"... ({len(items) - 50} more)"] if len(items) > 50 else [])
    return "; ".join(shown) + f" ({len(counts)} classes)"


def setup_description(
    name: str, n_images: int, parts: Split, models: list[str], labels: list[str],
    classifiers: list[str], grids: dict[str, list[float]], recipes: dict[str, dict[str, Any]],
    transfer: dict[str, str], *, cv: int, pooling: str, options: dict[str, Any],
    confidence: float, n_resamples: int, random_state: int | None, device: str, store: Any,
    weights: dict[str, str], class_counts: dict[Any, dict[str, int]],
    skipped: list[tuple[str, str]],
) -> dict[str, Any]:  # fmt: skip
    """A ``compare`` run's setup, as the report prints it (plain values only).

    It always says which weights the features came from (``"weights"``: "random weights" in
    those words when they were random), which split (the collection's own parts, or the
    fractions and the seed) and which classes, with their counts per part.
    """
    selection = (
        "on the validation part's features" if len(parts.validation)
        else f"by stratified {cv}-fold cross-validation on the training features"
    )  # fmt: skip
    if not transfer and not len(parts.validation):
        # Worth saying in the report: the dotted CV curve sits above the test curve for this reason.
        selection += (" (the network was trained on the training images, so accuracy on their "
                      "features is optimistic; only test accuracy measures generalisation)")
    if parts.origin is not None:
        split = f"{parts.origin}: {parts.describe()}"
    else:
        fractions = "/".join(f"{f:g}" for f in parts.fractions)
        split = (f"{parts.describe()} (train/validation/test fractions {fractions}, "
                 f"stratified, seed {random_state})")
    config: dict[str, Any] = {
        "dataset": name,
        "images": n_images,
        "split": split,
        "classes": _classes_text(class_counts),
        "models": models,
        "weights": dict(weights),
        "layers": labels,
        "pooling": pooling,
        "softmax training": {m: _recipe_text(recipes[m]) for m in models},
        "classifiers": classifiers,
        "C grids": {n: " ".join(f"{c:g}" for c in g) for n, g in grids.items()},
        "C selection": selection,
        "confidence": confidence,
        "bootstrap resamples": n_resamples,
        "random_state": random_state,
        "device": device,
        "versions": f"featclf {featclf.__version__}, torch {torch.__version__}, "
        f"scikit-learn {sklearn.__version__}",
    }
    if skipped:
        config["skipped images"] = [f"{path} ({reason})" for path, reason in skipped]
    if options:
        config["classifier options"] = options
    if store is not None:
        where = store if isinstance(store, str | os.PathLike) else getattr(store, "root", store)
        config["feature store"] = os.fspath(where) if isinstance(where, os.PathLike) else str(where)
    if transfer:
        config["pre-trained weights"] = dict(transfer)
        config["features"] = "the pre-trained network, frozen"
        config["baselines"] = ("softmax = the network trained from scratch on this data (the "
                               "reference); softmax_finetune = fine-tuned from the weights")
    else:
        config["features"] = "the trained softmax network without its head"
    return config
