"""``SoftmaxClassifier``: a CNN trained end to end with a softmax output, as an sklearn classifier.

This is featclf's baseline: the same network whose penultimate features feed the SVM, trained the
usual way. The optimiser parameters left to it come from the model family's recipe
(:func:`featclf.train.recipe_for`): for the seed networks and custom modules the seed tutorial's
Keras recipe (SGD with learning rate 0.05, Keras time-based decay 1e-6 per batch, momentum 0.9
with Nesterov, batches of 100); for torchvision backbones a fine-tuning recipe (AdamW, 1e-4 for
the backbone and 1e-3 for the head, warm-up, cosine decay, batches of 32). 10 epochs, shuffling,
20% held out for validation.

The network comes from :func:`featclf.models.load_network` (the one place weights are
resolved), the epochs run in :mod:`featclf.train.loop`, and predictions run on
:class:`featclf.inference.BatchRunner`. After ``fit``, ``network_`` is the trained
:class:`~featclf.models.Network`, which :class:`~featclf.extract.DeepFeatureExtractor` reads.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import os
import warnings
import weakref
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.special
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, column_or_1d
from torch import nn

from featclf.data.inputs import as_image_source, check_image_shape, check_labels
from featclf.data.sources import FileSource, ImageSource, InputError, SkippedImagesWarning
from featclf.data.transforms import ImagePreprocess, seed_augmentation
from featclf.devices import PRECISIONS, resolve_device, resolve_precision
from featclf.errors import option
from featclf.inference import BatchRunner
from featclf.model_selection import check_class_counts
from featclf.models import Network, WeightsSource, load_network
from featclf.models.head import find_head
from featclf.params import Interval, Options, StrOptions, check_params
from featclf.train.checkpoints import load_classifier, save_classifier
from featclf.train.loop import (
    Pipeline,
    Recipe,
    channel_stats,
    per_sample,
    stage,
    train_network,
    validation_split,
)
from featclf.train.recipes import RECIPE_PARAMETERS, recipe_for

OPTIMIZERS = ("sgd", "adam", "adamw")
# Prediction runners per fitted estimator, outside its __dict__: predicting leaves the
# estimator as it was (scikit-learn's check_dict_unchanged), and pickles carry no GPU copy.
_RUNNERS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
LR_SCHEDULES = (None, "cosine", "step")


def _two_d_width(X) -> int | None:
    """``X.shape[1]`` for 2-D numeric inputs (flattened images), the scikit-learn feature count."""
    shape = getattr(X, "shape", None)
    if shape is not None and len(shape) == 2 and not isinstance(X, pd.Series):
        return int(shape[1])
    return None


class SoftmaxClassifier(ClassifierMixin, BaseEstimator):
    """A CNN trained end to end with a softmax output (cross-entropy), as an sklearn classifier.

    Parameters
    ----------
    model : str, path-like, torch.nn.Module, Network or fitted estimator, default="lenet5"
        The network to train, as :func:`featclf.models.load_network` takes it: a model name
        (:func:`featclf.models.list_models`, any torchvision classifier), a featclf
        checkpoint, an ``nn.Module`` classifier, a ``Network`` or a fitted estimator's
        ``network_``. Given networks are deep-copied at ``fit``; the head (the last
        ``nn.Linear``) is replaced by a fresh one when its size is not the number of classes.
    weights : None, path, state dict or torchvision weights name, default=None
        Starting weights (see :func:`featclf.models.load_network`); a checkpoint saved by
        :meth:`save` continues from that network. None: random initialisation for a model
        name, a given network's own weights otherwise.
    preprocess : "auto", None, ImagePreprocess or callable, default="auto"
        ``"auto"``: the zoo model's preprocessing; for an ``nn.Module``, pixels scaled to
        ``[0, 1]`` at the training images' size and channels. Images are pixels: ``uint8``, or
        floats as intensities in ``[0, 1]`` (:mod:`featclf.data.pixels`). None: inputs are
        model-ready, ``(n, C, H, W)`` values fed to the network as they are. A callable of
        your own gets the values as given; an ImagePreprocess gets pixels.
    epochs : int, default=10
        Passes over the training data.
    batch_size : int, default=None
        Images per optimizer step. None: the recipe's (100 seed, 32 fine-tune). The parameters
        marked *recipe* below are taken, when left at their default, from
        :func:`~featclf.train.recipe_for` of the network (seed / fine-tune values in brackets);
        ``recipe_`` records what was used.
    optimizer : {None, "sgd", "adam", "adamw"}, default=None
        SGD uses ``momentum`` and ``nesterov``. *Recipe* ("sgd" / "adamw").
    lr : float, default=None
        Base learning rate (of the backbone when ``head_lr`` differs). *Recipe* (0.05 / 1e-4).
    head_lr : "auto", None or float, default="auto"
        Learning rate of the head (the layer ``head_`` names); None: ``lr``. *Recipe* (None /
        1e-3: a fresh head learns faster than a pre-trained backbone should move).
    momentum : float, default=0.9
        SGD momentum.
    nesterov : bool, default=True
        Nesterov momentum (SGD).
    lr_decay : float, default=None
        Keras' time-based decay: the rate at optimizer step ``t`` is ``lr / (1 + lr_decay * t)``.
        *Recipe* (1e-6 / 0).
    lr_schedule : {"auto", None, "cosine", "step"}, default="auto"
        A schedule multiplied onto the decay: cosine to zero over the steps after warm-up, or
        x0.1 at half and again at three quarters of them; None: none. *Recipe* (None /
        "cosine").
    weight_decay : float, default=None
        L2 penalty (decoupled for ``"adamw"``). *Recipe* (0 / 0.05).
    warmup : float in [0, 1), default=None
        Fraction of the optimizer steps over which the learning rate rises linearly to its
        base value. *Recipe* (0 / 0.1).
    validation_fraction : float, default=0.2
        Fraction of the training data held out (stratified, seeded) to report ``val_loss`` and
        ``val_accuracy`` each epoch; 0 trains on everything.
    early_stopping : None, False or int, default=None
        Patience in epochs: stop when the validation loss has not improved for this many epochs
        and restore the best weights. Needs ``validation_fraction > 0``.
    augment : None, "seed" or callable, default=None
        ``"seed"``: the seed tutorial's ``ImageDataGenerator`` — random rotation (20 degrees),
        shift (0.2) and horizontal flip drawn per image
        (:func:`~featclf.data.transforms.seed_augmentation`), plus featurewise centring and std
        normalisation: the per-channel mean/std of the training images replace the model's
        normalisation and are stored in ``preprocess_``, so prediction and feature extraction
        use them too. A callable (e.g. a torchvision transform) is applied to each float
        training batch before normalisation. Validation and test images are never augmented.
    freeze_backbone : bool, default=False
        Train only the head (a softmax linear probe on fixed features; the backbone stays in
        eval mode, so batch-norm statistics do not move), at ``head_lr``. False fine-tunes
        everything.
    image_shape : None or tuple of int, default=None
        ``(H, W)`` or ``(H, W, C)``, one side may be -1: 2-D input ``(n, k)`` is read as
        flattened images of that shape (see :func:`featclf.data.inputs.as_image_source`).
        None: a 2-D ``X`` is flattened square grey images ``(n, s*s)``.
    device : str, default="auto"
        CUDA when available, else the CPU.
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        ``"auto"``: bf16 autocast on CUDA, fp32 on the CPU.
    num_workers : int, default=0
        Decoding processes when image files are streamed.
    on_error : {"raise", "skip"}, default="raise"
        What an unreadable training image file does in ``fit``: stop with an error naming it,
        or be left out with its label (listed in ``skipped_``, with a
        :class:`~featclf.data.sources.SkippedImagesWarning`). ``predict`` needs one answer per
        image, so there an unreadable file always raises.
    random_state : int, RandomState or None, default=None
        Seeds initialisation, the validation split, shuffling and augmentation (the global
        torch random state is left as it was). The same value gives the same network on the CPU.
    progress : bool, default=False
        Show a tqdm bar per epoch, left as one line with the epoch's loss and accuracy.

    Attributes
    ----------
    classes_ : numpy.ndarray
        The class labels (sorted, as ``LabelEncoder`` orders them).
    module_ : torch.nn.Module
        The trained network, on the CPU, in eval mode.
    network_ : featclf.models.Network
        The trained network with what featclf knows about it (architecture, where its
        weights came from, preprocessing, head, fingerprint): what
        :class:`~featclf.extract.DeepFeatureExtractor` reads when given this classifier.
    history_ : pandas.DataFrame
        One row per epoch: ``epoch, train_loss, train_accuracy, val_loss, val_accuracy, lr,
        seconds``.
    recipe_ : dict
        The optimiser parameters fit used: the given ones, and the recipe's for those left to
        it (keys :data:`featclf.train.recipes.RECIPE_PARAMETERS` but ``epochs`` and
        ``validation_fraction``).
    model_name_ : str or None
        The zoo name, None for a custom module.
    head_ : str
        Qualified name of the final classification layer.
    preprocess_ : ImagePreprocess or callable
        The preprocessing used for non-model-ready inputs.
    n_epochs_ : int
        Epochs run (fewer than ``epochs`` after early stopping).
    n_features_in_ : int
        Width of 2-D (flattened image) training input; absent for other inputs.
    skipped_ : list of InputError
        Training files left out under ``on_error="skip"`` (position, path, reason).

    Examples
    --------
    >>> from featclf.data import load_digits_images
    >>> X, y = load_digits_images(return_X_y=True)
    >>> clf = SoftmaxClassifier("lenet5", epochs=1, random_state=0).fit(X[:200], y[:200])
    >>> clf.predict_proba(X[:3]).shape, list(clf.history_.columns)[:3]
    ((3, 10), ['epoch', 'train_loss', 'train_accuracy'])
    """

    def __init__(self, model="lenet5", weights=None, *, preprocess="auto", epochs=10,
                 batch_size=None, optimizer=None, lr=None, head_lr="auto", momentum=0.9,
                 nesterov=True, lr_decay=None, lr_schedule="auto", weight_decay=None,
                 warmup=None, validation_fraction=0.2, early_stopping=None, augment=None,
                 freeze_backbone=False, image_shape=None, device="auto", precision="auto",
                 num_workers=0, on_error="raise", random_state=None, progress=False):
        self.model = model
        self.weights = weights
        self.preprocess = preprocess
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.head_lr = head_lr
        self.momentum = momentum
        self.nesterov = nesterov
        self.lr_decay = lr_decay
        self.lr_schedule = lr_schedule
        self.weight_decay = weight_decay
        self.warmup = warmup
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.augment = augment
        self.freeze_backbone = freeze_backbone
        self.image_shape = image_shape
        self.device = device
        self.precision = precision
        self.num_workers = num_workers
        self.on_error = on_error
        self.random_state = random_state
        self.progress = progress

    _parameter_constraints: dict = {
        "preprocess": [None, StrOptions({"auto"}), callable],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [None, Interval(Integral, 1, None, closed="left")],
        "optimizer": [None, StrOptions(set(OPTIMIZERS))],
        "lr": [None, Interval(Real, 0, math.inf, closed="left")],
        "head_lr": [None, StrOptions({"auto"}), Interval(Real, 0, math.inf, closed="left")],
        "momentum": [Interval(Real, 0, math.inf, closed="left")],
        "nesterov": ["boolean"],
        "lr_decay": [None, Interval(Real, 0, math.inf, closed="left")],
        "lr_schedule": [None, StrOptions({"auto", "cosine", "step"})],
        "weight_decay": [None, Interval(Real, 0, math.inf, closed="left")],
        "warmup": [None, Interval(Real, 0, 1, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "early_stopping": [None, Options(bool, {False}), Interval(Integral, 1, None,
                                                                  closed="left")],
        "augment": [None, StrOptions({"seed"}), callable],
        "freeze_backbone": ["boolean"],
        "image_shape": [None, tuple, list],
        "device": [str, torch.device],
        "precision": [StrOptions(set(PRECISIONS))],
        "num_workers": [Interval(Integral, 0, None, closed="left")],
        "on_error": [StrOptions({"raise", "skip"})],
        "random_state": ["random_state"],
        "progress": ["boolean"],
    }

    def _check_params(self) -> int | None:
        """Validate the hyper-parameters; returns the early-stopping patience (or None)."""
        check_params(self._parameter_constraints, self.get_params(deep=False),
                     type(self).__name__)
        check_image_shape(self.image_shape)
        patience = None if self.early_stopping in (None, False) else int(self.early_stopping)
        if patience is not None and self.validation_fraction == 0:
            raise ValueError("early_stopping watches the validation loss: set "
                             "validation_fraction > 0 (e.g. 0.2) or early_stopping=None")
        return patience

    def _resolve_recipe(self, network: Network) -> dict:
        """The optimiser parameters: the given ones, the family recipe's for the others."""
        family = recipe_for(network)
        given = self.get_params(deep=False)
        recipe = {}
        for key in RECIPE_PARAMETERS:
            if key in ("epochs", "validation_fraction"):
                continue  # plain defaults: the recipe's are what compare trains with
            value = given[key]
            left = value == "auto" if key in ("head_lr", "lr_schedule") else value is None
            recipe[key] = family[key] if left else value
        return recipe

    def _recipe(self) -> Recipe:
        r = self.recipe_
        head_lr = None if r["head_lr"] is None else float(r["head_lr"])
        return Recipe(epochs=int(self.epochs), batch_size=int(r["batch_size"]),
                      optimizer=r["optimizer"], lr=float(r["lr"]),
                      momentum=float(r["momentum"]), nesterov=bool(r["nesterov"]),
                      lr_decay=float(r["lr_decay"]), lr_schedule=r["lr_schedule"],
                      weight_decay=float(r["weight_decay"]), head_lr=head_lr,
                      warmup=float(r["warmup"]), freeze_backbone=bool(self.freeze_backbone),
                      num_workers=int(self.num_workers), progress=bool(self.progress))

    def _source(self, X) -> ImageSource:
        # Pixels for "auto" and an ImagePreprocess; values as given otherwise.
        as_given = self.preprocess is None or (callable(self.preprocess) and not isinstance(
            self.preprocess, ImagePreprocess))
        return as_image_source(X, image_shape=self.image_shape, model_ready=as_given)

    # ---------------------------------------------------------------- building the network

    def _build_network(self, n_classes: int) -> tuple[Network, nn.Module, str]:
        """The starting network, the module to train (a copy) and its head's name."""
        start = load_network(self.model, self.weights, num_classes=n_classes, seed=None)
        module = start.module
        if not isinstance(self.model, str | os.PathLike):
            # A given network may come back as it is: training must leave the user's own alone.
            module = copy.deepcopy(module)
        return start, module, start.head or find_head(module)

    def _base_preprocess(self, source: ImageSource, network: Network):
        """What ``preprocess`` means for this model (before augment='seed' refits its stats)."""
        if self.preprocess != "auto":
            return self.preprocess
        if network.preprocess is not None:
            return network.preprocess
        first = next(source.subset([0]).iter_batches(batch_size=1, preprocess=None)).images
        channels, height, width = (int(s) for s in first.shape[1:])
        # A custom module gets pixels in [0, 1] at the training images' size; as an
        # ImagePreprocess it can be saved, and resizes other images to the same size.
        return ImagePreprocess((height, width), channels, (0.0,) * channels, (1.0,) * channels)

    # ---------------------------------------------------------------- fit

    def fit(self, X, y):
        """Train the network on images ``X`` with labels ``y``.

        Parameters
        ----------
        X : array-like, tensor, list of paths or ImageFiles
            Training images (see :func:`featclf.data.inputs.as_image_source`).
        y : array-like of shape (n,)
            Class labels of any type (ints, strings).

        Returns
        -------
        self

        Raises
        ------
        ValueError
            One class, or a class with too few images for the validation split: before anything
            is built or trained, naming the classes and their counts.
        featclf.train.TrainingDivergedError
            (A ``FloatingPointError`` and ``ValueError``.) The loss became NaN or infinite, or
            exploded; the message names the learning rate to lower.
        """
        patience = self._check_params()
        device = resolve_device(self.device)
        precision = resolve_precision(self.precision, device)
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y "
                             "is None")
        labels = np.asarray(y)
        if labels.ndim == 2 and labels.shape[1] == 1:  # scikit-learn's warning, then 1-D
            y = labels = column_or_1d(labels, warn=True)
        check_classification_targets(labels)
        source = self._source(X)
        width = getattr(source, "row_width", None)  # rows of flattened images (lists too)
        y = check_labels(y, len(source))
        skipped: list[InputError] = []
        if self.on_error == "skip" and isinstance(source, FileSource):
            skipped = source.unreadable(num_workers=self.num_workers)
            if len(skipped) == len(source):
                raise ValueError(f"none of the {len(source)} training images could be read; "
                                 f"the first: {skipped[0].source!r}: {skipped[0].reason}")
            if skipped:
                keep = np.setdiff1d(np.arange(len(source)), [e.index for e in skipped])
                source, y = source.subset(keep), y[keep]
                warnings.warn(f"{len(skipped)} of {len(keep) + len(skipped)} training images "
                              f"could not be read and were left out (first: "
                              f"{skipped[0].source}: {skipped[0].reason}); see skipped_",
                              SkippedImagesWarning, stacklevel=2)
        classes, y_encoded = np.unique(y, return_inverse=True)
        self._check_class_counts(y, len(classes))
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        model_ready = self.preprocess is None
        if self.augment == "seed" and model_ready:
            raise ValueError("augment='seed' fits its own normalisation on images in [0, 1]; "
                             "it needs pixels: preprocess='auto' or an ImagePreprocess, not "
                             "preprocess=None (model-ready values)")
        if self.augment == "seed" and self.preprocess != "auto" and not isinstance(
                self.preprocess, ImagePreprocess):
            raise ValueError("augment='seed' needs preprocess='auto' or an ImagePreprocess (it "
                             "replaces the normalisation); got a custom preprocess callable")
        cuda_devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(seed)
            start, module, head = self._build_network(len(classes))
            self.recipe_ = self._resolve_recipe(start)
            preprocess = self._base_preprocess(source, start)
            train_idx, val_idx = validation_split(y_encoded, self.validation_fraction, seed)
            pipeline, preprocess = self._pipeline(source, train_idx, preprocess, model_ready)
            train, val = stage(source, y_encoded, train_idx, val_idx, pipeline, device,
                               int(self.num_workers))
            generator = torch.Generator().manual_seed(seed)
            history, n_epochs = train_network(self._recipe(), module, head, train, val,
                                              pipeline, device, precision, generator, patience)
        for p in module.parameters():
            p.requires_grad_(True)
        self.module_ = module.to("cpu", memory_format=torch.contiguous_format).eval()
        self.classes_ = classes
        self.model_name_ = start.arch
        self.head_ = head
        self.preprocess_ = preprocess
        self.history_ = history
        self.n_epochs_ = n_epochs
        self.skipped_ = skipped
        origin = start.weights.description
        if start.weights.kind == "random":  # drawn under torch.manual_seed(seed) above
            origin = f"random weights (seed {seed}, drawn from random_state={self.random_state})"
        self.network_ = self._trained_network(
            WeightsSource("trained", f"trained by SoftmaxClassifier for {n_epochs} epochs from "
                                     f"{origin}"))
        if width is not None:
            self.n_features_in_ = width
        elif hasattr(self, "n_features_in_"):
            del self.n_features_in_
        return self

    def _check_class_counts(self, y: np.ndarray, n_classes: int) -> None:
        """Refuse, before anything is built or trained, labels that cannot be trained on."""
        fraction = float(self.validation_fraction)
        # A stratified split holds out about one image in 1/fraction of each class.
        minimum = 1 if fraction == 0 else max(2, math.ceil(1 / fraction - 1e-9))
        try:
            check_class_counts(y, min_per_class=minimum, what="training")
        except ValueError as exc:
            if n_classes < 2:
                raise ValueError(f"{exc}: one class is nothing to tell apart") from None
            raise ValueError(
                f"{exc}: {option('validation_fraction', fraction)} holds out one image in "
                f"{minimum} of each class for validation, so each needs one to train on and "
                f"one to validate on; pass more images, or "
                f"{option('validation_fraction', 0.0)} to train on all of them") from None

    def _pipeline(self, source: ImageSource, train_idx: np.ndarray, preprocess,
                  model_ready: bool) -> tuple[Pipeline, object]:
        """Decide what is applied at load time and per batch; fit augment='seed' statistics."""
        augment = None
        if self.augment == "seed":
            augment = functools.partial(per_sample, seed_augmentation())
        elif self.augment is not None:
            augment = self.augment
        if model_ready:
            return Pipeline(None, augment, None), preprocess
        if augment is None or not isinstance(preprocess, ImagePreprocess):
            return Pipeline(preprocess, augment, None), preprocess
        # Augment images in [0, 1] (as Keras' generator does) and normalise afterwards.
        if self.augment == "seed":
            train_source = source.subset(train_idx)
            batches = (b.images for b in train_source.iter_batches(
                batch_size=256, preprocess=preprocess.to_float, num_workers=self.num_workers))
            mean, std = channel_stats(batches)
            preprocess = dataclasses.replace(preprocess, mean=mean, std=std)
        return Pipeline(preprocess.to_float, augment, preprocess.normalize), preprocess

    def _trained_network(self, weights: WeightsSource) -> Network:
        """``network_``: the trained module with what featclf knows about it."""
        head = self.module_.get_submodule(self.head_)
        return Network(module=self.module_, arch=self.model_name_, weights=weights,
                       preprocess=self.preprocess_, head=self.head_,
                       feature_dim=int(head.in_features),
                       metadata={"classes": self.classes_.tolist()})

    # ---------------------------------------------------------------- prediction

    def _logits(self, X) -> np.ndarray:
        check_is_fitted(self, "module_")
        self._check_width(_two_d_width(X))  # before reading the rows as images
        source = self._source(X)
        self._check_width(getattr(source, "row_width", None))
        preprocess = self.preprocess_
        runner = self._runner()
        out = np.empty((len(source), len(self.classes_)), dtype=np.float32)
        batches = source.iter_batches(batch_size=max(int(self.recipe_["batch_size"]), 256),
                                      preprocess=preprocess, num_workers=self.num_workers,
                                      pin_memory=runner.device.type == "cuda")
        for indices, logits, _ in runner.run(batches):
            out[indices] = logits
        return out

    def _check_width(self, width: int | None) -> None:
        expected = getattr(self, "n_features_in_", None)
        if expected is not None and width is not None and width != expected:
            shape = (f"of shape {tuple(self.image_shape)}" if self.image_shape is not None else
                     f"{math.isqrt(expected)}x{math.isqrt(expected)}")
            raise ValueError(f"X has {width} features, but {type(self).__name__} is expecting "
                             f"{expected} features as input (flattened images {shape})")

    def _runner(self) -> BatchRunner:
        """The prediction runner, made once per device: on a GPU it holds one copy of the
        network there (``module_`` itself stays on the CPU, so the estimator pickles anywhere)."""
        device = resolve_device(self.device)
        precision = resolve_precision(self.precision, device)
        cached = _RUNNERS.get(self)
        if cached is None or cached[0] is not self.module_ or cached[1].device != device or \
                cached[1].precision != precision:
            module = self.module_ if device.type == "cpu" else copy.deepcopy(self.module_)
            # The layout the network was trained in is kept (contiguous): predictions are
            # those of the trained network, bit for bit.
            runner = BatchRunner(module, device=device, precision=self.precision,
                                 channels_last=False)
            cached = _RUNNERS[self] = (self.module_, runner)
        return cached[1]

    def predict_proba(self, X) -> np.ndarray:
        """Class probabilities (softmax of the network's outputs), rows summing to 1.

        Parameters
        ----------
        X : array-like, tensor, list of paths or ImageFiles
            Images.

        Returns
        -------
        numpy.ndarray of shape (n, n_classes)
            float64, columns in the order of ``classes_``.
        """
        return scipy.special.softmax(self._logits(X).astype(np.float64), axis=1)

    def predict(self, X) -> np.ndarray:
        """The most probable class of each image.

        Parameters
        ----------
        X : array-like, tensor, list of paths or ImageFiles
            Images.

        Returns
        -------
        numpy.ndarray of shape (n,)
            Labels from ``classes_``.
        """
        best = self._logits(X).argmax(axis=1)
        return self.classes_[best]

    # ---------------------------------------------------------------- checkpoints

    def save(self, path: str | os.PathLike) -> Path:
        """Save the trained network and what is needed to use it again.

        A featclf checkpoint (``.pt``, loadable by ``torch.load(path, weights_only=True)``, or
        ``.safetensors``): the state dict plus JSON metadata ``model, num_classes, classes,
        preprocess, head, featclf_version, torch_version, params, recipe, history``, written
        atomically (:func:`featclf.models.save_checkpoint`: a temporary file renamed into
        place, so an interrupted save leaves the previous file whole). ``load_network(path)``,
        ``DeepFeatureExtractor(model=path)`` and :meth:`load` accept it.

        Parameters
        ----------
        path : str or path-like
            Destination; the suffix (``.pt`` or ``.safetensors``) picks the format.

        Returns
        -------
        pathlib.Path
            The written file.
        """
        check_is_fitted(self, "module_")
        return save_classifier(self, path)

    @classmethod
    def load(cls, path: str | os.PathLike, *, preprocess=None) -> SoftmaxClassifier:
        """A fitted classifier from a checkpoint written by :meth:`save`.

        Parameters
        ----------
        path : str or path-like
            A ``.pt`` or ``.safetensors`` file from :meth:`save`.
        preprocess : ImagePreprocess or callable, optional
            Replaces the stored preprocessing (needed when a custom callable was used).

        Returns
        -------
        SoftmaxClassifier
            Ready to predict; ``get_params`` gives the training parameters.

        Raises
        ------
        featclf.models.WeightsError
            Unreadable, or not a SoftmaxClassifier checkpoint. (A ``ValueError``, as is the
            error for a network that is not a zoo model and cannot be rebuilt from the file.)
        """
        return load_classifier(cls, path, preprocess=preprocess)

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True  # rows of flattened images (see image_shape)
        tags.input_tags.three_d_array = True  # (n, H, W) grey images
        tags.classifier_tags.poor_score = True  # a few epochs on tiny toy data
        # Seeded training is reproducible on the CPU; CUDA kernels may not be.
        tags.non_deterministic = self.device != "cpu" and torch.cuda.is_available()
        return tags
