"""``compare()``: softmax vs SVMs vs logistic regression on one network's features, one split.

One call runs one experiment spec. The data is split once (stratified, seeded,
:func:`featclf.model_selection.make_split`), and everything sees the same parts:

1. For every model, a :class:`~featclf.train.SoftmaxClassifier` is trained on the training
   images only: the end-to-end softmax baseline.
2. The same trained network (or, with ``weights=``, a frozen pre-trained one) turns the
   training and test images into feature vectors (:class:`~featclf.extract.DeepFeatureExtractor`,
   the penultimate layer or every entry of ``layers``, all from one forward pass per batch).
   With ``store=``, vectors are kept in a :class:`~featclf.store.FeatureStore`: a second
   identical run reads them instead of computing them (training still runs: it is seeded, so
   it trains the same network and the store's vectors are that network's).
3. Every classifier of the registry (:data:`featclf.pipelines.CLASSIFIERS`) sweeps its C grid
   (:func:`featclf.sweep.sweep`). C is chosen by cross-validation on the training features only
   (or on the validation part when the split has one); every C of the grid is also refitted on
   all training features and scored on the test images, so the report can draw accuracy
   against C. ``selected`` marks the C that cross-validation chose; the test images never
   influence that choice.
4. Every row is scored on the same test images: accuracy with a bootstrap interval, macro-F1,
   log-loss where probabilities exist, and, paired against the softmax head, McNemar's test and a
   bootstrap interval of the accuracy difference (:mod:`featclf.stats`).

The outcome is a :class:`~featclf.comparison.Comparison` that
:func:`featclf.report.write_report` turns into a report.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from numbers import Integral, Real
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import sklearn
import torch

import featclf
from featclf.comparison import TIMING_TABLE_COLUMNS, Comparison
from featclf.data import image_files, load_digits_images, load_mnist5k
from featclf.data.inputs import as_image_source, check_labels
from featclf.devices import resolve_device
from featclf.experiment import Experiment, StageLog
from featclf.extract import DeepFeatureExtractor
from featclf.extract.layers import PENULTIMATE
from featclf.model_selection import Split, _split_fractions, make_split
from featclf.models import Network, get_model_spec, load_network
from featclf.models.head import POOLINGS, check_layer
from featclf.params import (
    HasMethods,
    Interval,
    InvalidParameterError,
    StrOptions,
    check_params,
)
from featclf.pipelines import CLASSIFIERS, c_grid, make_classifier
from featclf.train import SoftmaxClassifier

__all__ = [
    "BUILTIN_DATASETS",
    "DEFAULT_MODELS",
    "RESULT_COLUMNS",
    "TIMING_COLUMNS",
    "TRAINING_RECIPES",
    "compare",
    "load_data",
    "training_recipe",
]

#: Data sets ``compare`` knows by name.
BUILTIN_DATASETS: tuple[str, ...] = ("mnist5k", "digits")

#: The networks of the main job: LeNet-5 and the seed tutorial's Keras CNN.
DEFAULT_MODELS: tuple[str, ...] = ("lenet5", "seed_cnn")

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


# --------------------------------------------------------------------------- data


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
        raise InvalidParameterError(
            "The 'train_options' parameter of compare must be SoftmaxClassifier parameters "
            f"(among {{{', '.join(map(repr, sorted(valid)))}}}); {unknown} are not. Got "
            f"{dict(options or {})!r} instead."
        )
    return recipe


# --------------------------------------------------------------------------- checks


_CONSTRAINTS: dict[str, list] = {
    "models": [None, str, list, tuple],
    "layers": [None, str, list, tuple],
    "classifiers": [str, list, tuple],
    "weights": [None, str, os.PathLike, Mapping],
    "epochs": [Interval(Integral, 1, None, closed="left"), None],
    "train_options": [None, Mapping],
    "cv": [Interval(Integral, 2, None, closed="left")],
    "c_grids": [None, Mapping, list, tuple],
    "classifier_options": [None, Mapping],
    "pooling": [StrOptions(set(POOLINGS))],
    "n_jobs": [Integral, None],
    "n_resamples": [Interval(Integral, 1, None, closed="left")],
    "confidence": [Interval(Real, 0, 1, closed="neither")],
    "device": [str, torch.device],
    "dataset": [None, str],
    "random_state": [Interval(Integral, 0, 2**32 - 1, closed="both"), None],
    "progress": ["boolean"],
    "log": [None, callable],
    "store": [None, str, os.PathLike, HasMethods(["get", "writer"])],
}


def _invalid(name: str, must: str, value: Any) -> InvalidParameterError:
    """scikit-learn's wording for a value its constraint objects cannot express."""
    return InvalidParameterError(
        f"The {name!r} parameter of compare must be {must}. Got {value!r} instead."
    )


def _check_names(values: str | Sequence[str], valid: Sequence[str], name: str) -> list[str]:
    """A non-empty list of names, each from ``valid``."""
    values = [values] if isinstance(values, str) else list(values)
    if not values or any(v not in valid for v in values):
        raise _invalid(name, f"a non-empty list of names among {{{', '.join(map(repr, valid))}}}",
                       values)  # fmt: skip
    return values


def _c_grids(classifiers: Sequence[str], c_grids: Any) -> dict[str, list[float]]:
    """The C values each classifier sweeps."""
    if c_grids is None:
        return {name: c_grid(name) for name in classifiers}
    if isinstance(c_grids, Mapping):
        unknown = sorted(set(c_grids) - set(classifiers))
        if unknown:
            raise _invalid("c_grids", f"a mapping whose keys are classifiers being run "
                           f"({', '.join(classifiers)}); {unknown} are not", dict(c_grids))
        grids = {n: list(c_grids.get(n, c_grid(n))) for n in classifiers}
    else:
        grids = {n: list(c_grids) for n in classifiers}
    for name, grid in grids.items():
        if not grid or any(not (isinstance(c, Real) and not isinstance(c, bool) and c > 0)
                           for c in grid):  # fmt: skip
            raise _invalid("c_grids", f"one or more positive values of C for {name!r}", grid)
    return {n: [float(c) for c in g] for n, g in grids.items()}


def _layer_labels(layers: str | Sequence[str | None] | None) -> list[str]:
    """Block names of ``layers``, each once (None and "penultimate" name the head's input)."""
    layers = [layers] if layers is None or isinstance(layers, str) else list(layers)
    labels = [PENULTIMATE if layer in (None, PENULTIMATE) else str(layer) for layer in layers]
    labels = labels or [PENULTIMATE]
    if len(set(labels)) != len(labels):
        twice = sorted({label for label in labels if labels.count(label) > 1})
        raise _invalid("layers", f"a list of distinct layers ({', '.join(twice)} named twice)",
                       layers)  # fmt: skip
    return labels


def _check_models_and_layers(models: Sequence[str], labels: Sequence[str]) -> None:
    """Refuse unknown model or layer names before minutes of training, not after."""
    for model in models:
        spec = get_model_spec(model)  # an unknown name raises, suggesting close ones
        nodes = [label for label in labels if label != PENULTIMATE]
        if nodes:
            # Only the graph's node names matter: build it without allocating or drawing weights.
            try:
                with torch.device("meta"):
                    module = spec.builder(spec.num_classes)
            except (NotImplementedError, RuntimeError):  # a builder that computes with tensors
                module = spec.builder(spec.num_classes)
            for node in nodes:
                check_layer(module, node)  # raises, listing the valid names


@dataclass(frozen=True)
class _Pretrained:
    """A transfer run's frozen network: the checkpoint it came from, loaded once."""

    path: str
    network: Network

    @property
    def preprocess(self) -> Any:
        return self.network.preprocess if self.network.preprocess is not None else "auto"


def _pretrained(weights: Any, models: Sequence[str] | None
                ) -> tuple[list[str], dict[str, _Pretrained]]:  # fmt: skip
    """Models to run and, per model, its pre-trained network.

    :func:`featclf.models.load_network` resolves each checkpoint, and refuses one saved from
    another architecture than the model it is given for.
    """
    if isinstance(weights, Mapping):
        paths = {str(m): w for m, w in weights.items()}
        chosen = list(models) if models is not None else list(paths)
        missing = [m for m in chosen if m not in paths]
        if missing:
            raise _invalid("weights", f"a checkpoint for every model (none for {missing})",
                           dict(weights))  # fmt: skip
    else:
        if not Path(weights).is_file():
            raise FileNotFoundError(
                f"weights={os.fspath(weights)!r} is not a file: pass the checkpoint of a trained "
                "network, e.g. artifacts/models/lenet5-mnist5k.pt (featclf train writes one)."
            )
        if models is None:
            network = load_network(weights)  # a featclf checkpoint names its architecture
            if network.arch is None:
                raise ValueError(
                    f"weights={os.fspath(weights)!r} does not name its model: pass models=[...]."
                )
            return [network.arch], {network.arch: _Pretrained(os.fspath(weights), network)}
        chosen = list(models)
        paths = dict.fromkeys(chosen, weights)
    return chosen, {m: _Pretrained(os.fspath(paths[m]), load_network(m, paths[m]))
                    for m in chosen}  # fmt: skip


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
    store: Any = None,
) -> Comparison:
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
        :func:`featclf.models.layer_names`). Each layer is one group of rows; every layer of a
        model comes from one forward pass per batch.
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
        See :func:`featclf.model_selection.make_split`. With a validation part, C is chosen on
        it instead of by cross-validation.
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
    store : None, path-like or FeatureStore, default=None
        A :class:`~featclf.store.FeatureStore` (or its directory) every extraction reads from
        and writes to: a second identical run computes no feature vector (its log and
        ``timings`` say how many were computed and reused) and gives the same numbers.

    Returns
    -------
    Comparison
        ``results``: one row per (model, layer, classifier, C), columns :data:`RESULT_COLUMNS`
        (:func:`featclf.report.write_report` documents them); the test predictions of the
        selected rows by :class:`~featclf.comparison.ResultKey`, the test labels, the classes,
        the split, each softmax network's training history, the setup and the timings.

    Examples
    --------
    >>> from featclf.compare import compare
    >>> from featclf.data import load_digits_images
    >>> X, y = load_digits_images(return_X_y=True)
    >>> comparison = compare((X[:300], y[:300]), models=["lenet5"], classifiers=["logistic"],
    ...                      epochs=1, cv=2, c_grids=[1.0], n_resamples=100)
    >>> comparison.results[["model", "layer", "classifier", "selected"]]
          model        layer classifier  selected
    0    lenet5  penultimate    softmax      True
    1    lenet5  penultimate   logistic      True
    >>> sorted(comparison.predictions)[0]
    ResultKey(model='lenet5', layer='penultimate', classifier='logistic')
    >>> comparison.split.describe(), list(comparison.histories)
    ('240 train / 60 test', [('lenet5', 'softmax')])
    """
    check_params(_CONSTRAINTS, {
        "models": models, "layers": layers, "classifiers": classifiers, "weights": weights,
        "epochs": epochs, "train_options": train_options, "cv": cv, "c_grids": c_grids,
        "classifier_options": classifier_options, "pooling": pooling, "n_jobs": n_jobs,
        "n_resamples": n_resamples, "confidence": confidence, "device": device,
        "dataset": dataset, "random_state": random_state, "progress": progress, "log": log,
        "store": store}, "compare")  # fmt: skip
    _split_fractions(split, owner="compare")
    log_line = StageLog(progress, log)
    started = time.perf_counter()
    classifiers = _check_names(classifiers, CLASSIFIERS, "classifiers")
    grids = _c_grids(classifiers, c_grids)
    labels = _layer_labels(layers)
    transfer: dict[str, _Pretrained] = {}
    models = [models] if isinstance(models, str) else models
    if weights is not None:
        models, transfer = _pretrained(weights, models)
    models = list(models or DEFAULT_MODELS)
    _check_models_and_layers(models, labels)
    recipes = {m: training_recipe(m, epochs=epochs, options=train_options) for m in models}
    for model, pretrained in transfer.items():
        # One preprocessing for all three networks of a transfer run: the pre-trained one's.
        recipes[model] = {"preprocess": pretrained.preprocess, **recipes[model]}
    options = dict(classifier_options or {})
    for classifier in classifiers:
        make_classifier(classifier, **options)  # bad options raise now, not after training
    name, X, y = load_data(data, name=dataset)
    parts = make_split(y, split, random_state=random_state)

    source = as_image_source(X, name="data")
    run = Experiment(
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
                model, weights=transfer[model].path, **recipes[model]
            )
        trained = {key: run.train_baseline(model, key, clf) for key, clf in baselines.items()}
        # The features: the softmax network just trained, or the frozen pre-trained one; all
        # layers from one extractor, so one forward pass per batch serves every layer.
        pretrained = transfer.get(model)
        extractor = DeepFeatureExtractor(
            pretrained.network if pretrained else baselines["softmax"],
            layer=None if labels == [PENULTIMATE] else labels[0] if len(labels) == 1 else labels,
            pooling=pooling, preprocess=pretrained.preprocess if pretrained else "auto",
            device=device, batch_size=256, progress=progress, store=store,
        )  # fmt: skip
        features = run.features(model, labels, extractor)
        for label in labels:
            outcomes = list(trained.values())
            for classifier in classifiers:
                outcomes += run.sweep(
                    model, label, classifier, features[label], grid=grids[classifier],
                    options=options, cv=cv, n_jobs=n_jobs,
                )  # fmt: skip
            run.add_group(model, label, outcomes, trained["softmax"].pred)

    results = pd.DataFrame.from_records(run.rows, columns=list(RESULT_COLUMNS))
    results["converged"] = results["converged"].astype(object)
    seconds = time.perf_counter() - started
    setup = _config(
        name, len(y), parts, models, labels, classifiers, grids, recipes, transfer,
        cv=cv, pooling=pooling, options=options, confidence=confidence,
        n_resamples=n_resamples, random_state=random_state, device=device, store=store,
    )  # fmt: skip
    log_line(f"done in {seconds:.1f} s")
    return Comparison(
        results, predictions=run.predictions, y_true=run.y["test"], classes=run.classes,
        split=parts, histories=run.histories, setup=setup,
        timings=pd.DataFrame.from_records(run.timings, columns=list(TIMING_TABLE_COLUMNS)),
        seconds=seconds,
    )  # fmt: skip


def _config(
    name: str, n_images: int, parts: Split, models: list[str], labels: list[str],
    classifiers: list[str], grids: dict[str, list[float]], recipes: dict[str, dict[str, Any]],
    transfer: dict[str, _Pretrained], *, cv: int, pooling: str, options: dict[str, Any],
    confidence: float, n_resamples: int, random_state: int | None, device: str, store: Any,
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
    if store is not None:
        where = store if isinstance(store, str | os.PathLike) else getattr(store, "root", store)
        config["feature store"] = os.fspath(where) if isinstance(where, os.PathLike) else str(where)
    if transfer:
        config["pre-trained weights"] = {m: info.path for m, info in transfer.items()}
        config["features"] = "the pre-trained network, frozen"
        config["baselines"] = ("softmax = the network trained from scratch on this data (the "
                               "reference); softmax_finetune = fine-tuned from the weights")
    else:
        config["features"] = "the trained softmax network without its head"
    return config
