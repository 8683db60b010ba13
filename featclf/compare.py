"""``compare()``: softmax vs SVMs vs logistic regression on one network's features, one split.

One call runs one experiment spec. The data is split once (stratified, seeded,
:func:`featclf.model_selection.make_split`), and everything sees the same parts:

1. For every model, a :class:`~featclf.train.SoftmaxClassifier` is trained on the training
   images only: the end-to-end softmax baseline.
2. The same trained network (or, with ``weights=``, a frozen pre-trained one) turns the
   training and test images into feature vectors (:class:`~featclf.extract.DeepFeatureExtractor`,
   the penultimate layer or every entry of ``layers``, all from one forward pass per batch).
   That forward also gives the network's own outputs (the ``"logits"`` block): the softmax head
   is scored from them, the same predictions as ``SoftmaxClassifier.predict`` with no second
   pass over the images (a transfer run's softmax networks are not the feature network, and
   score themselves). With ``augment="seed"`` every softmax network trains on augmented
   images; with ``views=K`` too, each layer gets a second group of rows whose classifiers
   train on the clean features and on ``K`` augmented views of each training image
   (:mod:`featclf._views_arms`).
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
import torch

from featclf._views_arms import (
    AUGMENTATIONS,
    add_views_group,
    check_augment,
    layer_param,
    views_arms,
    views_setup,
)
from featclf.comparison import TIMING_TABLE_COLUMNS, Comparison
from featclf.data.datasets import BUILTIN_DATASETS, load_data
from featclf.data.files import ImageFiles
from featclf.data.inputs import as_image_source
from featclf.data.sources import check_on_error
from featclf.devices import resolve_device
from featclf.experiment import (
    Experiment,
    StageLog,
    class_counts,
    readable_files,
    setup_description,
    split_parts,
)
from featclf.extract import DeepFeatureExtractor
from featclf.extract.layers import LOGITS, PENULTIMATE
from featclf.model_selection import (
    _split_fractions,
    class_counts_text,
)
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
from featclf.train import TRAINING_RECIPES, SoftmaxClassifier, recipe_for

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

#: The networks of the main job: LeNet-5 and the seed tutorial's Keras CNN.
DEFAULT_MODELS: tuple[str, ...] = ("lenet5", "seed_cnn")

#: Columns of the results table, in order.
RESULT_COLUMNS: tuple[str, ...] = (
    "dataset", "model", "layer", "classifier", "C", "selected", "cv_accuracy", "accuracy",
    "accuracy_ci_low", "accuracy_ci_high", "macro_f1", "log_loss", "fit_time_s",
    "predict_time_s", "extract_time_s", "extract_images_per_s", "n_train", "n_test",
    "n_features", "converged", "solver", "diff_vs_softmax", "diff_ci_low", "diff_ci_high",
    "mcnemar_b", "mcnemar_c", "mcnemar_p",
)  # fmt: skip

#: Columns that measure time: the only ones that differ between two runs with the same seed.
TIMING_COLUMNS: tuple[str, ...] = (
    "fit_time_s", "predict_time_s", "extract_time_s", "extract_images_per_s",
)  # fmt: skip

# --------------------------------------------------------------------------- training recipes


def training_recipe(
    model: str, *, epochs: int | None = None, options: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    """SoftmaxClassifier parameters ``compare`` trains ``model`` with.

    Parameters
    ----------
    model : str
        A zoo name; its recipe is :func:`featclf.train.recipe_for`'s (the seed recipe for
        lenet5 and seed_cnn, fine-tuning for torchvision backbones), with
        ``validation_fraction=0``: the network learns from every training image.
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
    # The recipe of the model's family (featclf.train.recipes): the seed's for lenet5 and
    # seed_cnn, fine-tuning for torchvision backbones; compare trains on every training image.
    recipe = {**recipe_for(model), "validation_fraction": 0.0}
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
    "test_data": [None, str, os.PathLike, ImageFiles],
    "on_error": [StrOptions({"raise", "skip"})],
    "augment": [None, StrOptions(set(AUGMENTATIONS))],
    "views": [Interval(Integral, 0, None, closed="left")],
    "solver": [StrOptions({"auto", "sklearn", "torch"})],
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
        nodes = [label for label in labels if label not in (PENULTIMATE, LOGITS)]
        if nodes:
            # Only the graph's node names matter: build it without allocating or drawing weights.
            try:
                with torch.device("meta"):
                    module = spec.builder(spec.num_classes)
            except (NotImplementedError, RuntimeError):  # a builder that computes with tensors
                module = spec.builder(spec.num_classes)
            for node in nodes:
                check_layer(module, node)  # raises, listing the valid names


def _weights_words(network: Network) -> str:
    """Where a network's weights came from, in plain words ("random weights (seed 0)")."""
    weights = getattr(network, "weights", None)
    return str(getattr(weights, "description", None) or "weights of unknown origin")


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
    test_data: str | os.PathLike | ImageFiles | None = None,
    on_error: str = "raise",
    augment: str | None = None,
    views: int = 0,
    solver: str = "auto",
) -> Comparison:
    """Compare the softmax head with SVMs and logistic regression on the network's features.

    Parameters
    ----------
    data : str, path-like, ImageFiles or (X, y) tuple
        ``"mnist5k"``, ``"digits"``, a folder of labelled images, a CSV of image paths and
        labels, :func:`featclf.data.image_files` output, or ``(X, y)`` (see
        :func:`load_data`). A folder's own ``train/``, ``val/`` and ``test/`` subfolders (or a
        CSV's split column) are the split: ``split`` is then not used.
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
        Epochs of every network (default: each model's recipe, :func:`training_recipe`).
    train_options : mapping, optional
        Further :class:`~featclf.train.SoftmaxClassifier` parameters for every network.
    split : float, (train, test), (train, validation, test) or "seed001", default=0.2
        See :func:`featclf.model_selection.make_split`. With a validation part, C is chosen on
        it instead of by cross-validation. Not used when the data has its own split or
        ``test_data`` is given.
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
    test_data : path or ImageFiles, optional
        Test images of their own (the data's images are then all for training).
    on_error : {"raise", "skip"}, default="raise"
        An unreadable image file stops the run (naming it), or is left out and listed.
    augment : None or "seed", default=None
        Train every softmax network with this augmentation (``"seed"``: rotation 20 degrees,
        shifts 0.2, horizontal flip; :class:`~featclf.train.SoftmaxClassifier`'s
        ``augment="seed"``).
    views : int, default=0
        With ``augment``: next to each layer's rows, a group (``layer`` "penultimate + 4
        views", :func:`featclf.comparison.views_label`) whose classifiers train on the clean
        features of the training images and on ``views`` augmented views of each
        (:func:`featclf.extract.views.extract_views`; kept in ``store``, so a rerun computes
        none), each view labelled as its image, the cross-validation folds grouped by image.
        Every row is tested on the same clean test images.
    solver : {"auto", "sklearn", "torch"}, default="auto"
        Who fits the linear classifiers' C grids (:func:`featclf.sweep.sweep`): scikit-learn,
        featclf's torch solvers (:mod:`featclf.linear`), or whichever is faster for the size.

    Returns
    -------
    Comparison
        ``results``: one row per (model, layer, classifier, C), columns :data:`RESULT_COLUMNS`
        (:func:`featclf.report.write_report` documents them); the test predictions of the
        selected rows by :class:`~featclf.comparison.ResultKey`, the test labels, the classes,
        the split, each softmax network's training history, the setup and the timings; the
        fitted classifiers (``estimators``) and feature networks (``networks``), which
        :func:`featclf.winner.save_winner` saves.

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
        "store": store, "test_data": test_data, "on_error": on_error, "augment": augment,
        "views": views, "solver": solver}, "compare")  # fmt: skip
    check_augment(augment, views, train_options)
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
    for recipe in recipes.values():
        recipe.update({"augment": augment} if augment is not None else {})
    for model, pretrained in transfer.items():
        # One preprocessing for all three networks of a transfer run: the pre-trained one's.
        recipes[model] = {"preprocess": pretrained.preprocess, **recipes[model]}
    options = dict(classifier_options or {})
    for classifier in classifiers:
        make_classifier(classifier, **options)  # bad options raise now, not after training
    name, X, y = load_data(data, name=dataset, test_data=test_data)
    check_on_error(on_error)
    X, y, skipped = readable_files(name, X, y, on_error, log_line)
    parts = split_parts(name, X, y, split, test_data, cv, random_state)
    counts = class_counts(y, parts)

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
    log_line(f"{name}: {len(y)} images, {len(run.classes)} classes; split {parts.describe()}"
             + (f" ({parts.origin})" if parts.origin else ""))  # fmt: skip
    log_line(f"{name}: images per class (train / test): "
             + class_counts_text({c: f"{n['train']}/{n['test']}" for c, n in counts.items()}))
    for model in models:
        baselines = {"softmax": SoftmaxClassifier(model, **recipes[model])}
        if model in transfer:
            baselines["softmax_finetune"] = SoftmaxClassifier(
                model, weights=transfer[model].path, **recipes[model]
            )
        fit_times = {key: run.train_baseline(model, key, clf) for key, clf in baselines.items()}
        # The features: the softmax network just trained, or the frozen pre-trained one; all
        # layers from one extractor, so one forward pass per batch serves every layer. When
        # the features are the softmax network's own, that forward also gives its logits.
        pretrained = transfer.get(model)
        run.weights[model] = (
            f"{_weights_words(pretrained.network)}, frozen" if pretrained
            else _weights_words(baselines["softmax"].network_)
        )  # fmt: skip
        log_line(f"{model}: weights: {run.weights[model]}")
        # The network the features come from, kept so the winner can be saved and reused.
        run.networks[model] = pretrained.network if pretrained else baselines["softmax"]
        blocks = labels + ([LOGITS] if pretrained is None and LOGITS not in labels else [])
        extractor = DeepFeatureExtractor(
            run.networks[model], layer=layer_param(blocks), pooling=pooling,
            preprocess=pretrained.preprocess if pretrained else "auto", device=device,
            batch_size=256, progress=progress, store=store,
        )  # fmt: skip
        try:
            extractor.fit()
        except ValueError:
            if blocks == labels:
                raise
            # A network whose head's output cannot be read with its features: the softmax
            # scores itself in a pass of its own.
            blocks = labels
            extractor.set_params(layer=layer_param(blocks)).fit()
        features = run.features(model, blocks, extractor)
        logits = features.get(LOGITS) if pretrained is None else None
        trained = {key: run.score_baseline(model, key, clf, fit_times[key],
                                           logits if key == "softmax" else None)
                   for key, clf in baselines.items()}  # fmt: skip
        reference = trained["softmax"].pred
        arms = {}
        if views:
            arms, views_text = views_arms(
                run, model, labels, extractor, features, augment=str(augment), n_views=views,
                random_state=random_state, progress=progress)  # fmt: skip
        sweep_options = {"options": options, "cv": cv, "n_jobs": n_jobs, "solver": solver}
        for label in labels:
            outcomes = list(trained.values())
            for classifier in classifiers:
                outcomes += run.sweep(model, label, classifier, features[label],
                                      grid=grids[classifier], **sweep_options)  # fmt: skip
            run.add_group(model, label, outcomes, reference)
            if label in arms:
                add_views_group(run, model, arms[label], list(trained.values()), reference,
                                classifiers, grids, **sweep_options)  # fmt: skip

    results = pd.DataFrame.from_records(run.rows, columns=list(RESULT_COLUMNS))
    results["converged"] = results["converged"].astype(object)
    seconds = time.perf_counter() - started
    setup = setup_description(
        name, len(y), parts, models, labels, classifiers, grids, recipes,
        {m: info.path for m, info in transfer.items()}, cv=cv, pooling=pooling,
        options=options, confidence=confidence, n_resamples=n_resamples,
        random_state=random_state, device=str(resolve_device(device)), store=store,
        weights=run.weights, class_counts=counts, skipped=skipped,
    )  # fmt: skip
    setup.update(views_setup(augment, views, views_text if views else None))
    setup["solver"] = solver
    log_line(f"done in {seconds:.1f} s")
    return Comparison(
        results, predictions=run.predictions, y_true=run.y["test"], classes=run.classes,
        split=parts, histories=run.histories, setup=setup,
        timings=pd.DataFrame.from_records(run.timings, columns=list(TIMING_TABLE_COLUMNS)),
        seconds=seconds, skipped=tuple(skipped), scores=run.scores,
        score_kinds=run.score_kinds, images=run.images, estimators=run.estimators,
        networks=run.networks,
    )  # fmt: skip
