"""``SoftmaxClassifier``: a CNN trained end to end with a softmax output, as an sklearn classifier.

This is featclf's baseline: the same network whose penultimate features feed the SVM, trained the
usual way. Its defaults are the seed tutorial's Keras recipe: SGD with learning rate 0.05, Keras
time-based decay 1e-6 per batch, momentum 0.9 with Nesterov, batches of 100, 10 epochs,
shuffling, 20% held out for validation.

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
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.special
import torch
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted
from torch import nn

import featclf
from featclf.data.inputs import as_image_source, check_labels
from featclf.data.sources import FileSource, ImageSource, InputError, SkippedImagesWarning
from featclf.data.transforms import ImagePreprocess, seed_augmentation
from featclf.devices import PRECISIONS, resolve_device, resolve_precision
from featclf.inference import BatchRunner
from featclf.models import Network, WeightsError, WeightsSource, load_network, save_checkpoint
from featclf.models.head import find_head
from featclf.params import Interval, Options, StrOptions, check_params
from featclf.train.loop import (
    HISTORY_COLUMNS,
    Pipeline,
    Recipe,
    channel_stats,
    per_sample,
    stage,
    train_network,
)

OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = (None, "cosine", "step")


def _json_value(value):
    """``value`` if JSON can hold it (params in checkpoints), else None."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if isinstance(value, ImagePreprocess):
        return value.to_dict()
    return None


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
    preprocess : "auto", ImagePreprocess or callable, default="auto"
        ``"auto"``: the zoo model's preprocessing; for an ``nn.Module``, pixels scaled to
        ``[0, 1]`` at the training images' size and channels. Float ``(n, C, H, W)`` inputs are
        taken as model-ready and not preprocessed. Anything else is applied as given.
    epochs : int, default=10
        Passes over the training data.
    batch_size : int, default=100
        Images per optimizer step (and per forward pass at prediction).
    optimizer : {"sgd", "adam", "adamw"}, default="sgd"
        SGD uses ``momentum`` and ``nesterov``.
    lr : float, default=0.05
        Base learning rate.
    momentum : float, default=0.9
        SGD momentum.
    nesterov : bool, default=True
        Nesterov momentum (SGD).
    lr_decay : float, default=1e-6
        Keras' time-based decay: the rate at optimizer step ``t`` is ``lr / (1 + lr_decay * t)``.
    lr_schedule : {None, "cosine", "step"}, default=None
        A schedule multiplied onto the decay: cosine to zero over all steps, or x0.1 at half and
        again at three quarters of the steps.
    weight_decay : float, default=0.0
        L2 penalty (decoupled for ``"adamw"``).
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
        eval mode, so batch-norm statistics do not move). False fine-tunes everything.
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
                 batch_size=100, optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True,
                 lr_decay=1e-6, lr_schedule=None, weight_decay=0.0, validation_fraction=0.2,
                 early_stopping=None, augment=None, freeze_backbone=False, device="auto",
                 precision="auto", num_workers=0, on_error="raise", random_state=None,
                 progress=False):
        self.model = model
        self.weights = weights
        self.preprocess = preprocess
        self.epochs = epochs
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.lr = lr
        self.momentum = momentum
        self.nesterov = nesterov
        self.lr_decay = lr_decay
        self.lr_schedule = lr_schedule
        self.weight_decay = weight_decay
        self.validation_fraction = validation_fraction
        self.early_stopping = early_stopping
        self.augment = augment
        self.freeze_backbone = freeze_backbone
        self.device = device
        self.precision = precision
        self.num_workers = num_workers
        self.on_error = on_error
        self.random_state = random_state
        self.progress = progress

    _parameter_constraints: dict = {
        "preprocess": [StrOptions({"auto"}), callable],
        "epochs": [Interval(Integral, 1, None, closed="left")],
        "batch_size": [Interval(Integral, 1, None, closed="left")],
        "optimizer": [StrOptions(set(OPTIMIZERS))],
        "lr": [Interval(Real, 0, math.inf, closed="left")],
        "momentum": [Interval(Real, 0, math.inf, closed="left")],
        "nesterov": ["boolean"],
        "lr_decay": [Interval(Real, 0, math.inf, closed="left")],
        "lr_schedule": [None, StrOptions({"cosine", "step"})],
        "weight_decay": [Interval(Real, 0, math.inf, closed="left")],
        "validation_fraction": [Interval(Real, 0, 1, closed="left")],
        "early_stopping": [None, Options(bool, {False}), Interval(Integral, 1, None,
                                                                  closed="left")],
        "augment": [None, StrOptions({"seed"}), callable],
        "freeze_backbone": ["boolean"],
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
        patience = None if self.early_stopping in (None, False) else int(self.early_stopping)
        if patience is not None and self.validation_fraction == 0:
            raise ValueError("early_stopping watches the validation loss: set "
                             "validation_fraction > 0 (e.g. 0.2) or early_stopping=None")
        return patience

    def _recipe(self) -> Recipe:
        return Recipe(epochs=int(self.epochs), batch_size=int(self.batch_size),
                      optimizer=self.optimizer, lr=float(self.lr),
                      momentum=float(self.momentum), nesterov=bool(self.nesterov),
                      lr_decay=float(self.lr_decay), lr_schedule=self.lr_schedule,
                      weight_decay=float(self.weight_decay),
                      freeze_backbone=bool(self.freeze_backbone),
                      num_workers=int(self.num_workers), progress=bool(self.progress))

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
        """
        patience = self._check_params()
        device = resolve_device(self.device)
        precision = resolve_precision(self.precision, device)
        if y is None:
            raise ValueError(f"{type(self).__name__} requires y to be passed, but the target y "
                             "is None")
        check_classification_targets(np.asarray(y))
        source = as_image_source(X)
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
        width = _two_d_width(X)
        seed = int(check_random_state(self.random_state).randint(np.iinfo(np.int32).max))
        model_ready = self.preprocess == "auto" and source.model_ready
        if self.augment == "seed" and model_ready:
            raise ValueError("augment='seed' fits its own normalisation on images in [0, 1]; "
                             "pass uint8 images or (n, H, W[, C]) intensities, not model-ready "
                             "float (n, C, H, W) arrays")
        if self.augment == "seed" and self.preprocess != "auto" and not isinstance(
                self.preprocess, ImagePreprocess):
            raise ValueError("augment='seed' needs preprocess='auto' or an ImagePreprocess (it "
                             "replaces the normalisation); got a custom preprocess callable")
        cuda_devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(seed)
            start, module, head = self._build_network(len(classes))
            preprocess = self._base_preprocess(source, start)
            train_idx, val_idx = self._validation_split(y_encoded, seed)
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
        self.network_ = self._trained_network(
            WeightsSource("trained", f"trained by SoftmaxClassifier for {n_epochs} epochs from "
                                     f"{start.weights.description}"))
        if width is not None:
            self.n_features_in_ = width
        elif hasattr(self, "n_features_in_"):
            del self.n_features_in_
        return self

    def _validation_split(self, y: np.ndarray, seed: int) -> tuple[np.ndarray, np.ndarray]:
        positions = np.arange(len(y))
        if self.validation_fraction == 0:
            return positions, positions[:0]
        n_val = math.ceil(self.validation_fraction * len(y))
        if len(y) < 2 or n_val >= len(y):
            raise ValueError(f"validation_fraction={self.validation_fraction} leaves no training "
                             f"images out of {len(y)}; pass more images or validation_fraction=0")
        counts = np.bincount(y)
        stratify = y if counts.min() >= 2 and n_val >= len(counts) and \
            len(y) - n_val >= len(counts) else None  # too few per class: a plain shuffled split
        train, val = train_test_split(positions, test_size=self.validation_fraction,
                                      stratify=stratify, random_state=seed % (2**32))
        return np.sort(train), np.sort(val)

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
        source = as_image_source(X)
        width = _two_d_width(X)
        expected = getattr(self, "n_features_in_", None)
        if expected is not None and width is not None and width != expected:
            raise ValueError(f"X has {width} features, but {type(self).__name__} is expecting "
                             f"{expected} features as input (flattened {math.isqrt(expected)}"
                             f"x{math.isqrt(expected)} images)")
        preprocess = None if self.preprocess == "auto" and source.model_ready else \
            self.preprocess_
        runner = self._runner()
        out = np.empty((len(source), len(self.classes_)), dtype=np.float32)
        batches = source.iter_batches(batch_size=max(self.batch_size, 256),
                                      preprocess=preprocess, num_workers=self.num_workers,
                                      pin_memory=runner.device.type == "cuda")
        for indices, logits, _ in runner.run(batches):
            out[indices] = logits
        return out

    def _runner(self) -> BatchRunner:
        """The prediction runner, made once per device: on a GPU it holds one copy of the
        network there (``module_`` itself stays on the CPU, so the estimator pickles anywhere)."""
        device = resolve_device(self.device)
        precision = resolve_precision(self.precision, device)
        cached = self.__dict__.get("_prediction_runner")
        if cached is None or cached[0] is not self.module_ or cached[1].device != device or \
                cached[1].precision != precision:
            module = self.module_ if device.type == "cpu" else copy.deepcopy(self.module_)
            # The layout the network was trained in is kept (contiguous): predictions are
            # those of the trained network, bit for bit.
            runner = BatchRunner(module, device=device, precision=self.precision,
                                 channels_last=False)
            cached = self._prediction_runner = (self.module_, runner)
        return cached[1]

    def __getstate__(self):
        state = super().__getstate__()
        state.pop("_prediction_runner", None)
        return state

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

        The file is a featclf checkpoint (``.pt`` loadable by
        ``torch.load(path, weights_only=True)``, or ``.safetensors``): the state dict plus JSON
        metadata
        ``model, num_classes, classes, preprocess, head, featclf_version, torch_version, params,
        history``. ``load_network(path)``, ``DeepFeatureExtractor(model=path)`` and
        :meth:`load` accept it.

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
        path = Path(path)
        if isinstance(self.preprocess_, ImagePreprocess):
            preprocess = self.preprocess_.to_dict()
        else:
            preprocess = None
            warnings.warn(f"{path}: the custom preprocess callable cannot be stored in a "
                          "checkpoint; pass it again to SoftmaxClassifier.load(path, "
                          "preprocess=...)", UserWarning, stacklevel=2)
        # Training parameters only: whether bars were shown is not part of the model.
        params = {k: _json_value(v) for k, v in self.get_params(deep=False).items()
                  if (_json_value(v) is not None or v is None) and k != "progress"}
        history = self.history_.astype(object).where(self.history_.notna(), None)
        metadata = {
            "model": self.model_name_, "num_classes": len(self.classes_),
            "classes": self.classes_.tolist(), "preprocess": preprocess, "head": self.head_,
            "featclf_version": featclf.__version__, "torch_version": torch.__version__,
            "params": params, "history": history.to_dict(orient="records"),
            "n_features_in": getattr(self, "n_features_in_", None),
        }
        save_checkpoint(path, self.module_.state_dict(), metadata)
        return path

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
            The file is unreadable or is not a SoftmaxClassifier checkpoint.
        ValueError
            The network is not a zoo model, so it cannot be rebuilt from the file.
        """
        network = load_network(path)
        meta = network.metadata
        if not meta or "classes" not in meta or "params" not in meta:
            raise WeightsError(f"{path}: not a SoftmaxClassifier checkpoint (no classes/params "
                               "metadata); load bare weights with featclf.models.load_network("
                               "name, weights=path)")
        valid = cls().get_params(deep=False)
        params = {k: v for k, v in meta["params"].items() if k in valid}
        if isinstance(params.get("preprocess"), dict):
            params["preprocess"] = ImagePreprocess.from_dict(params["preprocess"])
        if preprocess is not None:
            params["preprocess"] = preprocess
        params["model"] = network.arch
        clf = cls(**params)
        clf.module_ = network.module.eval()
        clf.classes_ = np.asarray(meta["classes"])
        clf.model_name_ = network.arch
        clf.head_ = network.head
        if preprocess is not None:
            clf.preprocess_ = preprocess
        elif network.preprocess is not None:
            clf.preprocess_ = network.preprocess
        else:
            raise ValueError(f"{path} was trained with a custom preprocess callable, which "
                             "checkpoints cannot store; pass it: SoftmaxClassifier.load(path, "
                             "preprocess=...)")
        history = pd.DataFrame(meta.get("history") or [], columns=list(HISTORY_COLUMNS))
        clf.history_ = history.astype(float).astype({"epoch": int})
        clf.n_epochs_ = len(history)
        clf.skipped_ = []
        if meta.get("n_features_in") is not None:
            clf.n_features_in_ = int(meta["n_features_in"])
        clf.network_ = clf._trained_network(network.weights)
        return clf

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True  # (n, s*s) flattened square images
        tags.input_tags.three_d_array = True  # (n, H, W) grey images
        tags.classifier_tags.poor_score = True  # a few epochs on tiny toy data
        # Seeded training is reproducible on the CPU; CUDA kernels may not be.
        tags.non_deterministic = self.device != "cpu" and torch.cuda.is_available()
        return tags
