"""The training loop behind ``SoftmaxClassifier.fit``: data staging, steps, epochs, history.

Kept apart from the estimator (as skorch keeps ``train_step``/``run_single_epoch`` apart from
its ``NeuralNet``): the estimator decides *what* to train (network, preprocessing,
augmentation) and this module *how*, from a :class:`Recipe` of the hyper-parameters. Per-epoch
history is data (a DataFrame), not print statements.

When the preprocessed training set fits in :data:`IN_MEMORY_LIMIT_BYTES` (2 GiB; MNIST-5k is
16 MB), it is preprocessed once into one tensor, so epochs only index and copy; the same holds
for image files, which are then decoded once. Larger inputs are streamed: decoded and
preprocessed again every epoch, in a shuffled order.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import sys
import time
from collections.abc import Callable, Iterator

import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from sklearn.model_selection import train_test_split
from torch import nn

from featclf.data.sources import ImageSource
from featclf.devices import autocast
from featclf.errors import option
from featclf.progress import progress_bar

#: Largest preprocessed training set (bytes of float32) kept in memory; larger ones are streamed.
IN_MEMORY_LIMIT_BYTES = 2 * 1024**3
HISTORY_COLUMNS = ("epoch", "train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr",
                   "seconds")
# An epoch whose mean training loss is this many times the starting loss (or chance level,
# ln(classes), whichever is larger) has diverged: lenet5 at lr=0.5 on digits, which only
# overfits, stays below 4x; at lr=2 it passes 25x in its third epoch and keeps rising.
EXPLODED_LOSS_FACTOR = 10.0
# The validation loss may grow as a network overfits, but not to this: SGD at 0.05 on a
# ResNet-18 and a few dozen photos wrecks its batch-norm statistics (validation loss ~1e4 while
# the training loss falls).
EXPLODED_VAL_LOSS_FACTOR = 100.0
# channels_last trained lenet5 and seed_cnn faster than the default layout on the CPU
# (artifacts/models/README.md), so CPU training uses it.
CHANNELS_LAST_ON_CPU = True


@dataclasses.dataclass(frozen=True)
class Recipe:
    """The hyper-parameters of one training run (``SoftmaxClassifier``'s, validated)."""

    epochs: int
    batch_size: int
    optimizer: str
    lr: float
    momentum: float
    nesterov: bool
    lr_decay: float
    lr_schedule: str | None
    weight_decay: float
    freeze_backbone: bool
    num_workers: int
    progress: bool
    head_lr: float | None = None
    warmup: float = 0.0


class TrainingDivergedError(FloatingPointError, ValueError):
    """The training loss became NaN or infinite, or exploded: the learning rate is too high."""


def lr_factor(step: int, *, decay: float, schedule: str | None, total_steps: int,
              warmup_steps: int = 0) -> float:
    """Multiplier of the base learning rate at optimizer step ``step`` (counted from 0).

    ``1 / (1 + decay * step)`` is Keras' ``SGD(decay=...)``, applied per batch. During the first
    ``warmup_steps`` steps the rate rises linearly, ``(step + 1) / (warmup_steps + 1)``; over the
    steps after warm-up, ``"cosine"`` multiplies by ``(1 + cos(pi * progress)) / 2`` and
    ``"step"`` by 0.1 after half and again after three quarters of them.

    Examples
    --------
    >>> lr_factor(0, decay=1e-6, schedule=None, total_steps=400)
    1.0
    >>> round(lr_factor(400, decay=1e-6, schedule=None, total_steps=400), 6)
    0.9996
    >>> lr_factor(300, decay=0.0, schedule="step", total_steps=400)
    0.010000000000000002
    >>> [lr_factor(s, decay=0.0, schedule="cosine", total_steps=5, warmup_steps=3)
    ...  for s in range(5)]
    [0.25, 0.5, 0.75, 1.0, 0.5]
    """
    factor = 1.0 / (1.0 + decay * step)
    if step < warmup_steps:
        return factor * (step + 1) / (warmup_steps + 1)
    # With no warm-up these are the plain schedules, bit for bit.
    step, total_steps = step - warmup_steps, total_steps - warmup_steps
    if schedule == "cosine":
        factor *= 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / max(total_steps, 1)))
    elif schedule == "step":
        factor *= 0.1 ** ((step >= total_steps / 2) + (step >= 3 * total_steps / 4))
    return factor



@dataclasses.dataclass
class TrainingData:
    """Training or validation images: in memory (``images``) or streamed from ``source``."""

    labels: torch.Tensor
    images: torch.Tensor | None = None
    source: ImageSource | None = None

    def __len__(self) -> int:
        return int(self.labels.shape[0])


@dataclasses.dataclass
class Pipeline:
    """``load`` runs when images are read (once, or every epoch when streamed); ``augment``
    then ``finish`` run on every training batch; ``finish`` on every validation batch."""

    load: Callable[[torch.Tensor], torch.Tensor] | None
    augment: Callable[[torch.Tensor], torch.Tensor] | None
    finish: Callable[[torch.Tensor], torch.Tensor] | None


def per_sample(transform: Callable, batch: torch.Tensor) -> torch.Tensor:
    """Apply ``transform`` to each image on its own: torchvision v2 transforms draw one set of
    random parameters per call, and Keras' generator draws one per image."""
    return torch.stack([transform(image) for image in batch])


def collect(source: ImageSource, preprocess, batch_size: int,
            num_workers: int = 0) -> torch.Tensor:
    """All of ``source``, preprocessed, as one tensor."""
    batches = [b.images for b in source.iter_batches(batch_size=batch_size,
                                                     preprocess=preprocess,
                                                     num_workers=num_workers)]
    return torch.cat(batches) if len(batches) > 1 else batches[0]


def channel_stats(batches: Iterator[torch.Tensor]) -> tuple[tuple[float, ...],
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


def interactive() -> bool:
    """Whether progress bars can redraw in place: a terminal or a Jupyter notebook."""
    return "ipykernel" in sys.modules or (hasattr(sys.stderr, "isatty") and sys.stderr.isatty())


def stage(source: ImageSource, y: np.ndarray, train_idx: np.ndarray, val_idx: np.ndarray,
          pipeline: Pipeline, device: torch.device, num_workers: int
          ) -> tuple[TrainingData, TrainingData]:
    """Preprocess once into memory when it fits, else keep the sources for streaming."""
    labels = torch.as_tensor(y, dtype=torch.long)
    first = collect(source.subset([0]), pipeline.load, 1)
    needed = first[0].numel() * first.element_size() * len(source)
    if needed <= IN_MEMORY_LIMIT_BYTES:
        images = collect(source, pipeline.load, 256, num_workers).to(device)
        t_idx, v_idx = (torch.as_tensor(i, dtype=torch.long) for i in (train_idx, val_idx))
        return (TrainingData(labels[t_idx].to(device), images=images[t_idx.to(device)]),
                TrainingData(labels[v_idx].to(device), images=images[v_idx.to(device)]))
    return (TrainingData(labels[train_idx], source=source.subset(train_idx)),
            TrainingData(labels[val_idx], source=source.subset(val_idx)))


def validation_split(y: np.ndarray, fraction: float, seed: int
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Sorted training and validation positions: a stratified, seeded split of ``fraction``.

    Examples
    --------
    >>> train, val = validation_split(np.array([0, 0, 0, 1, 1, 1]), 0.5, seed=0)
    >>> train.tolist(), val.tolist()  # stratified: both classes on either side
    ([2, 3, 5], [0, 1, 4])
    """
    positions = np.arange(len(y))
    if fraction == 0:
        return positions, positions[:0]
    n_val = math.ceil(fraction * len(y))
    if len(y) < 2 or n_val >= len(y):
        raise ValueError(f"validation_fraction={fraction} leaves no training images out of "
                         f"{len(y)}; pass more images or validation_fraction=0")
    counts = np.bincount(y)
    stratify = y if counts.min() >= 2 and n_val >= len(counts) and \
        len(y) - n_val >= len(counts) else None  # too few per class: a plain shuffled split
    train, val = train_test_split(positions, test_size=fraction, stratify=stratify,
                                  random_state=seed % (2**32))
    return np.sort(train), np.sort(val)


def batches(recipe: Recipe, split: TrainingData, pipeline: Pipeline, device: torch.device, *,
            generator: torch.Generator | None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """``(images, labels)`` batches on ``device``; shuffled when a generator is given."""
    n = len(split)
    order = torch.randperm(n, generator=generator) if generator is not None else None
    if split.images is not None:
        for start in range(0, n, recipe.batch_size):
            if order is None:
                yield (split.images[start:start + recipe.batch_size],
                       split.labels[start:start + recipe.batch_size])
            else:
                idx = order[start:start + recipe.batch_size].to(split.images.device)
                yield split.images[idx], split.labels[idx]
        return
    source = split.source if order is None else split.source.subset(order.numpy())
    labels = split.labels if order is None else split.labels[order]
    for batch in source.iter_batches(batch_size=recipe.batch_size, preprocess=pipeline.load,
                                     num_workers=recipe.num_workers,
                                     pin_memory=device.type == "cuda"):
        yield (batch.images.to(device, non_blocking=True),
               labels[torch.as_tensor(batch.indices)].to(device, non_blocking=True))


def param_groups(recipe: Recipe, module: nn.Module, head: str) -> list:
    """The trainable parameters; in two groups (backbone at ``lr``, head at ``head_lr``) when
    the head has its own rate."""
    params = [p for p in module.parameters() if p.requires_grad]
    if recipe.head_lr is None or recipe.head_lr == recipe.lr:
        return params
    in_head = {id(p) for p in module.get_submodule(head).parameters()}
    backbone = [p for p in params if id(p) not in in_head]
    groups = [{"params": backbone}] if backbone else []
    return groups + [{"params": [p for p in params if id(p) in in_head], "lr": recipe.head_lr}]


def make_optimizer(recipe: Recipe, params: list) -> torch.optim.Optimizer:
    """The recipe's optimizer over ``params`` (SGD with momentum/Nesterov, Adam or AdamW)."""
    if recipe.optimizer == "sgd":
        return torch.optim.SGD(params, lr=recipe.lr, momentum=recipe.momentum,
                               nesterov=bool(recipe.nesterov and recipe.momentum > 0),
                               weight_decay=recipe.weight_decay)
    if recipe.optimizer == "adam":
        return torch.optim.Adam(params, lr=recipe.lr, weight_decay=recipe.weight_decay)
    return torch.optim.AdamW(params, lr=recipe.lr, weight_decay=recipe.weight_decay)


@dataclasses.dataclass
class Run:
    """What every step of one training run shares: the network, its optimizer and schedule,
    and where and how it computes."""

    recipe: Recipe
    module: nn.Module
    head: str
    pipeline: Pipeline
    device: torch.device
    precision: str
    memory_format: torch.memory_format
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    scaler: torch.amp.GradScaler
    steps_per_epoch: int
    n_classes: int = 2
    start_loss: float | None = None  # the first batch's mean loss: what "exploded" is against

    @classmethod
    def start(cls, recipe: Recipe, module: nn.Module, head: str, n_train: int,
              pipeline: Pipeline, device: torch.device, precision: str) -> Run:
        """Move the network to ``device``, freeze its backbone if asked, build the optimizer."""
        channels_last = device.type == "cuda" or CHANNELS_LAST_ON_CPU
        memory_format = torch.channels_last if channels_last else torch.contiguous_format
        module.to(device, memory_format=memory_format)
        if recipe.freeze_backbone:
            for p in module.parameters():
                p.requires_grad_(False)
            for p in module.get_submodule(head).parameters():
                p.requires_grad_(True)
        optimizer = make_optimizer(recipe, param_groups(recipe, module, head))
        steps_per_epoch = math.ceil(n_train / recipe.batch_size)
        total_steps = steps_per_epoch * recipe.epochs
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, functools.partial(
            lr_factor, decay=recipe.lr_decay, schedule=recipe.lr_schedule,
            total_steps=total_steps, warmup_steps=math.ceil(recipe.warmup * total_steps)))
        scaler = torch.amp.GradScaler(device.type, enabled=precision == "fp16"
                                      and device.type == "cuda")
        n_classes = getattr(module.get_submodule(head), "out_features", 2)
        return cls(recipe, module, head, pipeline, device, precision, memory_format, optimizer,
                   scheduler, scaler, steps_per_epoch, n_classes)

    def diverged(self, epoch: int, loss: float, kind: str = "loss") -> TrainingDivergedError:
        """The error that stops a run whose loss went NaN, infinite or exploded."""
        lr = self.recipe.lr
        what = f"{kind} {loss:.3g}" if math.isfinite(loss) else f"{kind} {loss}"
        if math.isfinite(loss) and self.start_loss:
            what += f", {loss / self.start_loss:.3g} times the starting {self.start_loss:.3g}"
        head = "" if self.recipe.head_lr in (None, lr) else \
            f" and {option('head_lr', self.recipe.head_lr)}"
        return TrainingDivergedError(
            f"training diverged at epoch {epoch} ({what}): the learning rate is too high for "
            f"this network and data; lower {option('lr', lr)}{head} (e.g. "
            f"{option('lr', lr / 10)})")

    def set_train_mode(self) -> None:
        """Training mode; a frozen backbone stays in eval mode (batch-norm statistics fixed)."""
        if self.recipe.freeze_backbone:  # a probe on fixed features
            self.module.eval()
            self.module.get_submodule(self.head).train()
        else:
            self.module.train()

    def train_step(self, xb: torch.Tensor, yb: torch.Tensor) -> tuple[float, int]:
        """One optimizer step on a batch: its summed loss and number of correct predictions."""
        if self.pipeline.augment is not None:
            xb = self.pipeline.augment(xb)
        if self.pipeline.finish is not None:
            xb = self.pipeline.finish(xb)
        xb = xb.contiguous(memory_format=self.memory_format)
        with autocast(self.device, self.precision):
            logits = self.module(xb)
        loss = F.cross_entropy(logits.float(), yb)
        self.optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        self.scaler.step(self.optimizer)
        self.scaler.update()
        self.scheduler.step()
        return float(loss.detach()) * len(yb), int((logits.detach().argmax(1) == yb).sum())

    @torch.no_grad()
    def evaluate(self, val: TrainingData) -> tuple[float, float]:
        """Mean loss and accuracy on ``val`` (eval mode, never augmented)."""
        self.module.eval()
        loss_sum, correct = 0.0, 0
        for xb, yb in batches(self.recipe, val, self.pipeline, self.device, generator=None):
            if self.pipeline.finish is not None:
                xb = self.pipeline.finish(xb)
            with autocast(self.device, self.precision):
                logits = self.module(xb.contiguous(memory_format=self.memory_format)).float()
            loss_sum += float(F.cross_entropy(logits, yb, reduction="sum"))
            correct += int((logits.argmax(1) == yb).sum())
        return loss_sum / len(val), correct / len(val)

    def run_epoch(self, epoch: int, train: TrainingData, val: TrainingData,
                  generator: torch.Generator) -> dict:
        """One pass over ``train`` (shuffled by ``generator``), then ``val``: its history row."""
        recipe = self.recipe
        started = time.perf_counter()
        self.set_train_mode()
        bar = progress_bar(total=self.steps_per_epoch, desc=f"epoch {epoch}/{recipe.epochs}",
                           enabled=recipe.progress and interactive(), leave=True, unit="batch")
        loss_sum, correct, seen, lr_used = 0.0, 0, 0, recipe.lr
        for xb, yb in batches(recipe, train, self.pipeline, self.device, generator=generator):
            lr_used = self.optimizer.param_groups[0]["lr"]
            batch_loss, batch_correct = self.train_step(xb, yb)
            if not math.isfinite(batch_loss):
                bar.close()
                raise self.diverged(epoch, batch_loss)
            if self.start_loss is None:
                self.start_loss = max(batch_loss / len(yb), math.log(max(self.n_classes, 2)))
            loss_sum, correct, seen = loss_sum + batch_loss, correct + batch_correct, \
                seen + len(yb)
            bar.update(1)
        row = {"epoch": epoch, "train_loss": loss_sum / seen, "train_accuracy": correct / seen,
               "val_loss": math.nan, "val_accuracy": math.nan, "lr": lr_used}
        if row["train_loss"] > EXPLODED_LOSS_FACTOR * self.start_loss:
            bar.close()
            raise self.diverged(epoch, row["train_loss"])
        if len(val):
            row["val_loss"], row["val_accuracy"] = self.evaluate(val)
            if not row["val_loss"] <= EXPLODED_VAL_LOSS_FACTOR * self.start_loss:  # NaN too
                bar.close()
                raise self.diverged(epoch, row["val_loss"], "validation loss")
        row["seconds"] = time.perf_counter() - started
        summary = (f"loss={row['train_loss']:.4f} acc={row['train_accuracy']:.4f}"
                   + (f" val_loss={row['val_loss']:.4f} val_acc={row['val_accuracy']:.4f}"
                      if len(val) else ""))
        bar.set_postfix_str(summary, refresh=True)
        bar.close()
        if recipe.progress and bar.disable:  # a log file: one plain line per epoch, no bar
            print(f"epoch {epoch}/{recipe.epochs}: {summary} ({row['seconds']:.1f} s)",
                  file=sys.stderr, flush=True)
        return row


def train_network(recipe: Recipe, module: nn.Module, head: str, train: TrainingData,
                  val: TrainingData, pipeline: Pipeline, device: torch.device, precision: str,
                  generator: torch.Generator, patience: int | None) -> tuple[pd.DataFrame, int]:
    """Train ``module`` in place for ``recipe.epochs`` epochs (fewer with early stopping).

    Parameters
    ----------
    recipe : Recipe
        The hyper-parameters.
    module : torch.nn.Module
        The network; trained in place, left on ``device``.
    head : str
        Its classification layer (the only one trained with ``freeze_backbone``).
    train, val : TrainingData
        The images and labels to train on and to validate on (``val`` may be empty).
    pipeline : Pipeline
        What runs on each batch (augmentation, normalisation).
    device : torch.device
        Where it trains.
    precision : str
        ``"fp32"``, ``"bf16"`` or ``"fp16"`` (autocast; fp16 with a GradScaler on CUDA).
    generator : torch.Generator
        Shuffles every epoch.
    patience : int or None
        Stop when the validation loss has not improved for this many epochs, and restore the
        best weights.

    Returns
    -------
    history : pandas.DataFrame
        One row per epoch, columns :data:`HISTORY_COLUMNS`.
    n_epochs : int
        Epochs run.
    """
    run = Run.start(recipe, module, head, len(train), pipeline, device, precision)
    rows: list[dict] = []
    best_loss, best_state, since_best = math.inf, None, 0
    for epoch in range(1, recipe.epochs + 1):
        row = run.run_epoch(epoch, train, val, generator)
        rows.append(row)
        if patience is None:
            continue
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
