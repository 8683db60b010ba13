"""``SoftmaxClassifier``: a CNN trained end to end with a softmax output, as an sklearn classifier.

This is featclf's baseline: the same network whose penultimate features feed the SVM, trained the
usual way. Its defaults are the seed tutorial's Keras recipe (seed 000): SGD with learning rate
0.05, Keras time-based decay 1e-6 per batch, momentum 0.9 with Nesterov, batches of 100, 10
epochs, shuffling, 20% held out for validation.

How data flows during ``fit``: ``X`` becomes an :class:`~featclf.data.inputs.ImageSource`
(:func:`~featclf.data.inputs.as_image_source`), whose ``iter_batches`` decodes and preprocesses
it. When the preprocessed training set fits in :data:`IN_MEMORY_LIMIT_BYTES` (2 GiB; MNIST-5k
is 16 MB), it is preprocessed once into one float tensor, so epochs only index and copy; the
same holds for image files, which are then decoded once. Larger inputs are streamed: decoded and
preprocessed again every epoch, in a shuffled order.

The train/test split that every featclf comparison uses is defined here too:
:func:`split_indices` and :func:`split_train_test`.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import math
import os
import sys
import time
import warnings
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import numpy as np
import pandas as pd
import scipy.special
import torch
import torch.nn.functional as F
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.model_selection import train_test_split
from sklearn.utils import check_random_state
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted
from torch import nn

import featclf
from featclf.data.files import ImageFiles
from featclf.data.inputs import (
    FileSource,
    ImageSource,
    InputError,
    SkippedImagesWarning,
    as_image_source,
    check_labels,
    check_on_error,
)
from featclf.data.transforms import ImagePreprocess, seed_augmentation
from featclf.devices import autocast, resolve_device, resolve_precision
from featclf.models import find_head, get_model, get_model_spec, read_checkpoint, save_checkpoint
from featclf.models.head import replace_head
from featclf.models.registry import default_preprocess
from featclf.models.weights import (
    WeightsError,
    load_state_dict_checked,
)
from featclf.progress import progress_bar

#: Largest preprocessed training set (bytes of float32) kept in memory; larger ones are streamed.
IN_MEMORY_LIMIT_BYTES = 2 * 1024**3
OPTIMIZERS = ("sgd", "adam", "adamw")
LR_SCHEDULES = (None, "cosine", "step")
HISTORY_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                   "seconds")
# Measured on 2 CPU cores, batch 100 (artifacts/models/README.md): channels_last trains
# lenet5 and seed_cnn faster than the default layout, so CPU training uses it.
CHANNELS_LAST_ON_CPU = True


# --------------------------------------------------------------------------------------------
# The one train/test split of featclf
# --------------------------------------------------------------------------------------------

def split_indices(y, *, test_size: float = 0.2, random_state: int | None = 0
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/test positions: the split every featclf experiment uses.

    Identical to ``train_test_split(X, y, test_size=test_size, stratify=y,
    random_state=random_state)`` (which depends only on ``y``), returned as positions.

    Parameters
    ----------
    y : array-like of shape (n,)
        Labels to stratify on.
    test_size : float, default=0.2
        Fraction of the samples in the test part.
    random_state : int or None, default=0
        Seed of the shuffle.

    Returns
    -------
    train, test : numpy.ndarray of int
        Positions into ``y``.

    Examples
    --------
    >>> train, test = split_indices([0, 1] * 10, test_size=0.2)
    >>> len(train), len(test), sorted(np.asarray([0, 1] * 10)[test].tolist())
    (16, 4, [0, 0, 1, 1])
    """
    y = np.asarray(y)
    positions = np.arange(len(y))
    train, test = train_test_split(positions, test_size=test_size, stratify=y,
                                   random_state=random_state)
    return np.asarray(train), np.asarray(test)


def _take(X, idx: np.ndarray):
    """Rows ``idx`` of arrays, tensors, DataFrames, Series, ImageFiles and path lists."""
    if isinstance(X, ImageFiles):
        return X[idx]
    if isinstance(X, pd.DataFrame | pd.Series):
        return X.iloc[idx]
    if isinstance(X, torch.Tensor):
        return X[torch.as_tensor(idx, dtype=torch.long)]
    if isinstance(X, np.ndarray):
        return X[idx]
    return [X[int(i)] for i in idx]


def split_train_test(X, y, *, test_size: float = 0.2, random_state: int | None = 0):
    """Split images and labels into the stratified train and test parts featclf compares on.

    Parameters
    ----------
    X : array-like, tensor, list of paths or ImageFiles
        The images.
    y : array-like of shape (n,)
        Their labels.
    test_size : float, default=0.2
        Fraction held out for testing (MNIST-5k: 4,000 train / 1,000 test).
    random_state : int or None, default=0
        Seed of the shuffle.

    Returns
    -------
    X_train, X_test, y_train, y_test
        The same types as ``X`` and a numpy array of labels; identical to
        ``sklearn.model_selection.train_test_split(X, y, test_size=test_size, stratify=y,
        random_state=random_state)``.

    Examples
    --------
    >>> from featclf.data import load_mnist5k
    >>> X, y = load_mnist5k(return_X_y=True)
    >>> X_train, X_test, y_train, y_test = split_train_test(X, y)
    >>> X_train.shape, X_test.shape, np.bincount(y_test).tolist() == [100] * 10
    ((4000, 28, 28), (1000, 28, 28), True)
    """
    y = check_labels(y, len(X))
    train, test = split_indices(y, test_size=test_size, random_state=random_state)
    return _take(X, train), _take(X, test), y[train], y[test]


# --------------------------------------------------------------------------------------------
# Learning rate: Keras' time-based decay, optionally times a cosine or step schedule
# --------------------------------------------------------------------------------------------

def lr_factor(step: int, *, decay: float, schedule: str | None, total_steps: int) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (counted from 0).

    ``1 / (1 + decay * step)`` is Keras' ``SGD(decay=...)``, applied per batch. ``"cosine"``
    multiplies by ``(1 + cos(pi * step / total_steps)) / 2``; ``"step"`` by 0.1 after half and
    again after three quarters of the steps.

    Examples
    --------
    >>> lr_factor(0, decay=1e-6, schedule=None, total_steps=400)
    1.0
    >>> round(lr_factor(400, decay=1e-6, schedule=None, total_steps=400), 6)
    0.9996
    >>> lr_factor(300, decay=0.0, schedule="step", total_steps=400)
    0.010000000000000002
    """
    factor = 1.0 / (1.0 + decay * step)
    if schedule == "cosine":
        factor *= 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    elif schedule == "step":
        factor *= 0.1 ** ((step >= total_steps / 2) + (step >= 3 * total_steps / 4))
    return factor


# --------------------------------------------------------------------------------------------
# Data: what is loaded once, what is done per batch
# --------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Split:
    """Training or validation images: in memory (``images``) or streamed from ``source``."""

    labels: torch.Tensor
    images: torch.Tensor | None = None
    source: ImageSource | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclasses.dataclass
class _Pipeline:
    """``load`` runs when images are read (once, or every epoch when streamed); ``augment``
    then ``finish`` run on every training batch; ``finish`` on every validation batch."""

    load: Callable[[torch.Tensor], torch.Tensor] | None
    augment: Callable[[torch.Tensor], torch.Tensor] | None
    finish: Callable[[torch.Tensor], torch.Tensor] | None


def _per_sample(transform: Callable, batch: torch.Tensor) -> torch.Tensor:
    """Apply ``transform`` to each image on its own: torchvision v2 transforms draw one set of
    random parameters per call, and Keras' generator draws one per image."""
    return torch.stack([transform(image) for image in batch])


def _collect(source: ImageSource, preprocess, batch_size: int,
             num_workers: int = 0) -> torch.Tensor:
    """All of ``source``, preprocessed, as one tensor."""
    batches = [b.images for b in source.iter_batches(batch_size=batch_size,
                                                     preprocess=preprocess,
                                                     num_workers=num_workers)]
    return torch.cat(batches) if len(batches) > 1 else batches[0]


def _channel_stats(batches: Iterator[torch.Tensor]) -> tuple[tuple[float, ...],
                                                             tuple[float, ...]]:
    """Per-channel mean and std over all images and pixels (Keras' featurewise statistics)."""
    total = total_sq = None
    count = 0
    for b in batches:
        b64 = b.double()
        s, sq = b64.sum(dim=(0, 2, 3)), (b64 * b64).sum(dim=(0, 2, 3))
        total = s if total is None else total + s
        total_sq = sq if total_sq is None else total_sq + sq
        count += b.shape[0] * b.shape[2] * b.shape[3]
    mean = total / count
    std = (total_sq / count - mean * mean).clamp_min(0).sqrt().clamp_min(1e-7)
    return tuple(mean.tolist()), tuple(std.tolist())


def _interactive() -> bool:
    """Whether progress bars can redraw in place: a terminal or a Jupyter notebook."""
    return "ipykernel" in sys.modules or (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())


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
    model : str or torch.nn.Module, default="lenet5"
        A zoo name (:func:`featclf.models.list_models`), whose final layer is sized to the
        number of classes, or any ``nn.Module`` classifier (deep-copied at ``fit``; its last
        ``nn.Linear`` is the head, replaced when its size is not the number of classes).
    weights : None, path, state dict or torchvision weights name, default=None
        Starting weights (see :func:`featclf.models.get_model`); a checkpoint saved by
        :meth:`save` continues from that network. None: random initialisation.
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
        :class:`~featclf.data.inputs.SkippedImagesWarning`). ``predict`` needs one answer per
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

    # ---------------------------------------------------------------- parameter checks

    def _check_params(self) -> int | None:
        """Validate the hyper-parameters; returns the early-stopping patience (or None)."""
        for name in ("epochs", "batch_size"):
            value = getattr(self, name)
            if not isinstance(value, int | np.integer) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if not isinstance(self.num_workers, int | np.integer) or self.num_workers < 0:
            raise ValueError(f"num_workers must be an int >= 0, got {self.num_workers!r}")
        if self.optimizer not in OPTIMIZERS:
            raise ValueError(f"optimizer={self.optimizer!r} is not one of {OPTIMIZERS}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule={self.lr_schedule!r} is not one of {LR_SCHEDULES}")
        for name in ("lr", "momentum", "lr_decay", "weight_decay"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0 \
                    or not math.isfinite(value):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        if not (isinstance(self.validation_fraction, int | float)
                and 0 <= self.validation_fraction < 1):
            raise ValueError("validation_fraction must be in [0, 1) (0 disables validation), got "
                             f"{self.validation_fraction!r}")
        patience = self.early_stopping
        if patience is None or patience is False:
            patience = None
        elif isinstance(patience, bool) or not isinstance(patience, int | np.integer) \
                or patience < 1:
            raise ValueError(f"early_stopping={patience!r}: pass None/False or a patience in "
                             "epochs (an int >= 1), e.g. early_stopping=3")
        elif self.validation_fraction == 0:
            raise ValueError("early_stopping watches the validation loss: set "
                             "validation_fraction > 0 (e.g. 0.2) or early_stopping=None")
        if not (self.augment is None or self.augment == "seed" or callable(self.augment)):
            raise ValueError(f"augment={self.augment!r}: pass None, 'seed' or a callable "
                             "(e.g. a torchvision transform) applied to float batches")
        if not (self.preprocess == "auto" or callable(self.preprocess)):
            raise ValueError(f"preprocess={self.preprocess!r}: pass 'auto', an ImagePreprocess "
                             "or a callable mapping image tensors to model input")
        return None if patience is None else int(patience)

    # ---------------------------------------------------------------- building the network

    def _build_module(self, n_classes: int) -> tuple[nn.Module, str | None, str]:
        """The network to train, its zoo name (or None) and its head's name."""
        if isinstance(self.model, str):
            spec = get_model_spec(self.model)
            module = get_model(self.model, weights=self.weights, num_classes=n_classes)
            return module, self.model, spec.head or find_head(module)
        if isinstance(self.model, nn.Module):
            module = copy.deepcopy(self.model)
            if self.weights is not None:
                given = isinstance(self.weights, Mapping)
                state = self.weights if given else read_checkpoint(self.weights).state_dict
                load_state_dict_checked(module, state, source="the given state dict" if given
                                        else os.fspath(self.weights))
            head = find_head(module)
            if module.get_submodule(head).out_features != n_classes:
                replace_head(module, head, n_classes)
            return module, None, head
        raise ValueError(f"model must be a zoo name (see featclf.models.list_models()) or a "
                         f"torch.nn.Module, got {type(self.model).__name__}")

    def _base_preprocess(self, source: ImageSource):
        """What ``preprocess`` means for this model (before augment='seed' refits its stats)."""
        if self.preprocess != "auto":
            return self.preprocess
        if isinstance(self.model, str):
            return default_preprocess(self.model, self.weights)
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
        check_on_error(self.on_error)
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
        preprocess = self._base_preprocess(source)
        if self.augment == "seed" and not isinstance(preprocess, ImagePreprocess):
            raise ValueError("augment='seed' needs preprocess='auto' or an ImagePreprocess (it "
                             "replaces the normalisation); got a custom preprocess callable")
        cuda_devices = [device.index or 0] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=cuda_devices):
            torch.manual_seed(seed)
            module, model_name, head = self._build_module(len(classes))
            train_idx, val_idx = self._validation_split(y_encoded, seed)
            pipeline, preprocess = self._pipeline(source, train_idx, preprocess, model_ready)
            train, val = self._load(source, y_encoded, train_idx, val_idx, pipeline, device)
            generator = torch.Generator().manual_seed(seed)
            history, n_epochs = self._train(module, head, train, val, pipeline, device,
                                            precision, generator, patience)
        for p in module.parameters():
            p.requires_grad_(True)
        self.module_ = module.to("cpu", memory_format=torch.contiguous_format).eval()
        self.classes_ = classes
        self.model_name_ = model_name
        self.head_ = head
        self.preprocess_ = preprocess
        self.history_ = history
        self.n_epochs_ = n_epochs
        self.skipped_ = skipped
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
                  model_ready: bool) -> tuple[_Pipeline, object]:
        """Decide what is applied at load time and per batch; fit augment='seed' statistics."""
        augment = None
        if self.augment == "seed":
            augment = functools.partial(_per_sample, seed_augmentation())
        elif self.augment is not None:
            augment = self.augment
        if model_ready:
            return _Pipeline(None, augment, None), preprocess
        if augment is None or not isinstance(preprocess, ImagePreprocess):
            return _Pipeline(preprocess, augment, None), preprocess
        # Augment images in [0, 1] (as Keras' generator does) and normalise afterwards.
        if self.augment == "seed":
            train_source = source.subset(train_idx)
            batches = (b.images for b in train_source.iter_batches(
                batch_size=256, preprocess=preprocess.to_float, num_workers=self.num_workers))
            mean, std = _channel_stats(batches)
            preprocess = dataclasses.replace(preprocess, mean=mean, std=std)
        return _Pipeline(preprocess.to_float, augment, preprocess.normalize), preprocess

    def _load(self, source: ImageSource, y: np.ndarray, train_idx: np.ndarray,
              val_idx: np.ndarray, pipeline: _Pipeline, device: torch.device
              ) -> tuple[_Split, _Split]:
        """Preprocess once into memory when it fits, else keep the sources for streaming."""
        labels = torch.as_tensor(y, dtype=torch.long)
        first = _collect(source.subset([0]), pipeline.load, 1)
        needed = first[0].numel() * first.element_size() * len(source)
        if needed <= IN_MEMORY_LIMIT_BYTES:
            images = _collect(source, pipeline.load, 256, self.num_workers).to(device)
            t_idx, v_idx = (torch.as_tensor(i, dtype=torch.long) for i in (train_idx, val_idx))
            return (_Split(labels[t_idx].to(device), images=images[t_idx.to(device)]),
                    _Split(labels[v_idx].to(device), images=images[v_idx.to(device)]))
        return (_Split(labels[train_idx], source=source.subset(train_idx)),
                _Split(labels[val_idx], source=source.subset(val_idx)))

    def _batches(self, split: _Split, pipeline: _Pipeline, device: torch.device, *,
                 generator: torch.Generator | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """``(images, labels)`` batches on ``device``; shuffled when a generator is given."""
        n = len(split)
        order = torch.randperm(n, generator=generator) if generator is not None else None
        if split.images is not None:
            for start in range(0, n, self.batch_size):
                if order is None:
                    yield (split.images[start:start + self.batch_size],
                           split.labels[start:start + self.batch_size])
                else:
                    idx = order[start:start + self.batch_size].to(split.images.device)
                    yield split.images[idx], split.labels[idx]
            return
        source = split.source if order is None else split.source.subset(order.numpy())
        labels = split.labels if order is None else split.labels[order]
        for batch in source.iter_batches(batch_size=self.batch_size, preprocess=pipeline.load,
                                         num_workers=self.num_workers,
                                         pin_memory=device.type == "cuda"):
            yield (batch.images.to(device, non_blocking=True),
                   labels[torch.as_tensor(batch.indices)].to(device, non_blocking=True))

    # ---------------------------------------------------------------- the training loop

    def _make_optimizer(self, params: list[nn.Parameter]) -> torch.optim.Optimizer:
        if self.optimizer == "sgd":
            return torch.optim.SGD(params, lr=self.lr, momentum=self.momentum,
                                   nesterov=bool(self.nesterov and self.momentum > 0),
                                   weight_decay=self.weight_decay)
        if self.optimizer == "adam":
            return torch.optim.Adam(params, lr=self.lr, weight_decay=self.weight_decay)
        return torch.optim.AdamW(params, lr=self.lr, weight_decay=self.weight_decay)

    def _train(self, module: nn.Module, head: str, train: _Split, val: _Split,
               pipeline: _Pipeline, device: torch.device, precision: str,
               generator: torch.Generator, patience: int | None) -> tuple[pd.DataFrame, int]:
        channels_last = device.type == "cuda" or CHANNELS_LAST_ON_CPU
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        module.to(device, memory_format=memory_format)
        if self.freeze_backbone:
            for p in module.parameters():
                p.requires_grad_(False)
            for p in module.get_submodule(head).parameters():
                p.requires_grad_(True)
        params = [p for p in module.parameters() if p.requires_grad]
        optimizer = self._make_optimizer(params)
        steps_per_epoch = math.ceil(len(train) / self.batch_size)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(
            lr_factor, decay=self.lr_decay, schedule=self.lr_schedule,
            total_steps=steps_per_epoch * self.epochs))
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16"
                                      and device.type == "cuda")
        rows: list[dict] = []
        best_loss, best_state, since_best = math.inf, None, 0
        for epoch in range(1, self.epochs + 1):
            started = time.perf_counter()
            self._set_train_mode(module, head)
            bar = progress_bar(total=steps_per_epoch, desc=f"epoch {epoch}/{self.epochs}",
                               enabled=self.progress and _interactive(), leave=True,
                               unit="batch")
            loss_sum, correct, seen, lr_used = 0.0, 0, 0, self.lr
            for xb, yb in self._batches(train, pipeline, device, generator=generator):
                if pipeline.augment is not None:
                    xb = pipeline.augment(xb)
                if pipeline.finish is not None:
                    xb = pipeline.finish(xb)
                xb = xb.contiguous(memory_format=memory_format)
                with autocast(device, precision):
                    logits = module(xb)
                loss = F.cross_entropy(logits.float(), yb)
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                lr_used = optimizer.param_groups[0]["lr"]
                scheduler.step()
                loss_sum += float(loss.detach()) * len(yb)
                correct += int((logits.detach().argmax(1) == yb).sum())
                seen += len(yb)
                bar.update(1)
            row = {"epoch": epoch, "train_loss": loss_sum / seen,
                   "train_accuracy": correct / seen, "val_loss": math.nan,
                   "val_accuracy": math.nan, "lr": lr_used}
            if len(val):
                row["val_loss"], row["val_accuracy"] = self._evaluate(
                    module, val, pipeline, device, precision, memory_format)
            row["seconds"] = time.perf_counter() - started
            rows.append(row)
            summary = (f"loss={row['train_loss']:.4f} acc={row['train_accuracy']:.4f}"
                       + (f" val_loss={row['val_loss']:.4f} val_acc={row['val_accuracy']:.4f}"
                          if len(val) else ""))
            bar.set_postfix_str(summary, refresh=True)
            bar.close()
            if self.progress and bar.disable:  # a log file: one plain line per epoch, no bar
                print(f"epoch {epoch}/{self.epochs}: {summary} ({row['seconds']:.1f} s)",
                      file=sys.stderr, flush=True)
            if patience is not None:
                if row["val_loss"] < best_loss:
                    best_loss, since_best = row["val_loss"], 0
                    best_state = {k: v.detach().clone() for k, v in module.state_dict().items()}
                else:
                    since_best += 1
                    if since_best >= patience:
                        break
        if best_state is not None:
            module.load_state_dict(best_state)
        return pd.DataFrame(rows, columns=list(HISTORY_COLUMNS)), len(rows)

    def _set_train_mode(self, module: nn.Module, head: str) -> None:
        if self.freeze_backbone:  # a probe on fixed features: batch-norm/dropout as at inference
            module.eval()
            module.get_submodule(head).train()
        else:
            module.train()

    @torch.no_grad()
    def _evaluate(self, module: nn.Module, val: _Split, pipeline: _Pipeline,
                  device: torch.device, precision: str, memory_format) -> tuple[float, float]:
        module.eval()
        loss_sum, correct = 0.0, 0
        for xb, yb in self._batches(val, pipeline, device, generator=None):
            if pipeline.finish is not None:
                xb = pipeline.finish(xb)
            with autocast(device, precision):
                logits = module(xb.contiguous(memory_format=memory_format)).float()
            loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
        return loss_sum / len(val), correct / len(val)

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
        device = resolve_device(self.device)
        precision = resolve_precision(self.precision, device)
        preprocess = None if self.preprocess == "auto" and source.model_ready else \
            self.preprocess_
        module = self.module_ if device.type == "cpu" else copy.deepcopy(self.module_).to(device)
        out = np.empty((len(source), len(self.classes_)), dtype=np.float32)
        with torch.inference_mode():
            for batch in source.iter_batches(batch_size=max(self.batch_size, 256),
                                             preprocess=preprocess, num_workers=self.num_workers,
                                             pin_memory=device.type == "cuda"):
                with autocast(device, precision):
                    logits = module(batch.images.to(device, non_blocking=True))
                out[batch.indices] = logits.float().cpu().numpy()
        return out

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
        history``. ``get_model(model, weights=path)``, ``DeepFeatureExtractor(model=path)`` and
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
        checkpoint = read_checkpoint(path)
        meta = checkpoint.metadata
        if not meta or "classes" not in meta or "params" not in meta:
            raise WeightsError(f"{path}: not a SoftmaxClassifier checkpoint (no classes/params "
                               "metadata); load bare weights with featclf.models.get_model(name, "
                               "weights=path)")
        if meta.get("model") is None:
            raise ValueError(f"{path} holds a custom nn.Module, not a zoo model, so featclf "
                             "cannot rebuild it: build your module, then load "
                             "featclf.models.read_checkpoint(path).state_dict into it")
        valid = cls().get_params(deep=False)
        params = {k: v for k, v in meta["params"].items() if k in valid}
        if isinstance(params.get("preprocess"), dict):
            params["preprocess"] = ImagePreprocess.from_dict(params["preprocess"])
        if preprocess is not None:
            params["preprocess"] = preprocess
        params["model"] = meta["model"]
        clf = cls(**params)
        module = get_model(meta["model"], weights=checkpoint)
        clf.module_ = module.eval()
        clf.classes_ = np.asarray(meta["classes"])
        clf.model_name_ = meta["model"]
        clf.head_ = meta.get("head") or get_model_spec(meta["model"]).head
        if preprocess is not None:
            clf.preprocess_ = preprocess
        elif meta.get("preprocess") is not None:
            clf.preprocess_ = ImagePreprocess.from_dict(meta["preprocess"])
        else:
            raise ValueError(f"{path} was trained with a custom preprocess callable, which "
                             "checkpoints cannot store; pass it: SoftmaxClassifier.load(path, "
                             "preprocess=...)")
        history = pd.DataFrame(meta.get("history") or [], columns=list(HISTORY_COLUMNS))
        clf.history_ = history.astype(float).astype({"epoch": int})
        clf.n_epochs_ = len(history)
        if meta.get("n_features_in") is not None:
            clf.n_features_in_ = int(meta["n_features_in"])
        return clf

    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True  # (n, s*s) flattened square images
        tags.input_tags.three_d_array = True  # (n, H, W) grey images
        tags.classifier_tags.poor_score = True  # a few epochs on tiny toy data
        # Seeded training is reproducible on the CPU; CUDA kernels may not be.
        tags.non_deterministic = self.device != "cpu" and torch.cuda.is_available()
        return tags
