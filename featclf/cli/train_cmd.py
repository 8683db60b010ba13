"""``featclf train``: train a zoo CNN end to end (softmax) and save a checkpoint.

The test images are the data's own test part when it has one (a ``test/`` subfolder, a CSV's
split column, or ``--test-data``); otherwise the data is split with
:func:`featclf.model_selection.split_train_test` (stratified, ``--test-size``,
``--random-state``), the split ``featclf compare`` uses too. The network trains on the rest
(minus its validation fraction) and the summary reports accuracy on the test images.

The optimiser settings left out on the command line come from the model family's training
recipe (:func:`featclf.train.recipe_for`): SGD for the small digit networks, a fine-tuning
recipe (AdamW, small learning rate, warm-up) for torchvision architectures.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from featclf.cli._data import add_data_arguments, image_files_from_args

#: Built-in data sets ``--data`` names (loaded by ``featclf.data``).
BUILTIN_DATA = ("mnist5k", "digits")
#: ``featclf.train.OPTIMIZERS``, spelled out so that ``featclf --help`` does not import torch
#: (tests/test_cli.py checks they agree).
OPTIMIZERS = ("sgd", "adam", "adamw")


def load_labelled_images(data: str, args: argparse.Namespace | None = None):
    """Images, labels and the data's own split named by ``--data``.

    Parameters
    ----------
    data : str
        ``"mnist5k"``, ``"digits"``, a folder (labels from class subfolders or file names;
        ``train/``, ``val/``, ``test/`` subfolders are its split) or a CSV file of images.
    args : argparse.Namespace, optional
        The parsed data flags (``--path-column``, ``--label-column``, ``--split-column``).

    Returns
    -------
    (X, y, splits)
        Images (an array, or :class:`~featclf.data.ImageFiles`), their labels, and
        ``"train"``/``"val"``/``"test"`` per image when the data carries its own split (else
        None).

    Examples
    --------
    >>> X, y, splits = load_labelled_images("digits")
    >>> X.shape, splits
    ((1797, 8, 8), None)
    """
    if data in BUILTIN_DATA:
        from featclf.data import load_digits_images, load_mnist5k

        loader = {"mnist5k": load_mnist5k, "digits": load_digits_images}[data]
        X, y = loader(return_X_y=True)
        return X, y, None
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"--data {data}: not a built-in data set "
                                f"({', '.join(BUILTIN_DATA)}), and no such folder or CSV file")
    files = image_files_from_args(args or argparse.Namespace(), path)
    return files, files.require_labels("training"), files.splits


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``featclf train``."""
    p = sub.add_parser(
        "train", help="train a CNN end to end (softmax) and save a checkpoint",
        description="Train a network with a softmax output on the training images, report its "
        "accuracy on the test images, and save a checkpoint that get_model, "
        "DeepFeatureExtractor and SoftmaxClassifier.load accept. Optimiser settings not given "
        "come from the model's training recipe: for lenet5 and seed_cnn SGD (learning rate "
        "0.05, Nesterov momentum 0.9, batches of 100); for torchvision architectures "
        "fine-tuning (AdamW, learning rate 1e-4 for the backbone and 1e-3 for the new head, "
        "warm-up over the first 10% of the steps, cosine decay, batches of 32).")
    p.add_argument("--model", default="lenet5",
                   help="architecture name (see `featclf models`; default lenet5)")
    p.add_argument("--weights", metavar="NAME|FILE|random",
                   help="starting weights. Default: a torchvision architecture's pretrained "
                   "weights (downloaded once into torch's cache); lenet5 and seed_cnn start "
                   "from random weights. random: random initialisation; FILE: a "
                   ".pt/.safetensors checkpoint; NAME: a torchvision weights name")
    p.add_argument("--data", required=True, metavar="mnist5k|digits|DIR|CSV",
                   help="a built-in data set, a folder of images in class subfolders (with "
                   "train/ and test/ subfolders: that split is used), or a CSV file of images "
                   "and labels")
    p.add_argument("--out", required=True, type=Path,
                   help="checkpoint to write (.pt or .safetensors)")
    p.add_argument("--epochs", type=int, default=10,
                   help="passes over the training images (default 10)")
    p.add_argument("--batch-size", type=int, help="images per optimizer step (default: the "
                   "recipe's, 100 or 32)")
    p.add_argument("--optimizer", choices=OPTIMIZERS,
                   help="default: the recipe's (sgd or adamw); sgd uses --momentum with "
                   "Nesterov")
    p.add_argument("--lr", type=float, help="base learning rate (default: the recipe's)")
    p.add_argument("--head-lr", type=float,
                   help="learning rate of the new classification layer (default: the "
                   "recipe's; --lr when the recipe has none)")
    p.add_argument("--lr-decay", type=float,
                   help="time-based decay per optimizer step: lr / (1 + decay * step) "
                   "(default: the recipe's)")
    p.add_argument("--lr-schedule", choices=("auto", "cosine", "step", "none"), default="auto",
                   help="multiplied onto the decay: cosine to zero, or x0.1 at half and three "
                   "quarters of the steps (default auto: the recipe's)")
    p.add_argument("--warmup", type=float, metavar="FRACTION",
                   help="part of the steps over which the learning rate rises to its base "
                   "value (default: the recipe's)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--weight-decay", type=float,
                   help="L2 penalty (default: the recipe's)")
    p.add_argument("--validation-fraction", type=float, default=0.2,
                   help="part of the training images held out to report validation loss and "
                   "accuracy each epoch (default 0.2)")
    p.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without a better validation loss")
    p.add_argument("--augment", choices=("seed",), default=None,
                   help="seed: random rotations (20 degrees), shifts (20%%) and horizontal "
                   "flips of the training images, and per-channel normalisation by the "
                   "training images' mean and spread")
    p.add_argument("--freeze-backbone", action="store_true",
                   help="train only the classification layer, on the backbone's fixed "
                   "features (meaningful with pretrained weights)")
    p.add_argument("--test-size", type=_test_fraction, default=0.2, metavar="FRACTION",
                   help="test fraction of a random stratified split, when the data has no "
                   "test part of its own; 0 trains on everything (default 0.2)")
    p.add_argument("--random-state", type=int, default=0,
                   help="seeds the split, initialisation and shuffling (default 0)")
    p.add_argument("--device", default="auto",
                   help="auto (CUDA if present), cpu, cuda, cuda:N (default auto)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="auto: bf16 autocast on CUDA, fp32 on the CPU")
    p.add_argument("--on-error", default="raise", choices=("raise", "skip"),
                   help="unreadable training images: stop (raise, the default) or leave them "
                   "out and list them (skip)")
    p.add_argument("--num-workers", type=int, default=0,
                   help="decoding processes when image files are streamed (default 0)")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch progress bars")
    add_data_arguments(p, test_data=True)
    p.set_defaults(func=run)


def _test_fraction(text: str) -> float:
    """``--test-size``: a fraction in [0, 1) (a usage error otherwise)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {value:g}")
    return value


def _parts(args: argparse.Namespace):
    """(X_train, X_test, y_train, y_test, how the test images were chosen)."""
    from featclf.model_selection import split_train_test

    X, y, splits = load_labelled_images(args.data, args)
    if args.test_data is not None:
        test = image_files_from_args(args, args.test_data)
        return X, test, y, test.require_labels("testing"), f"--test-data {args.test_data}"
    if splits is not None and "test" in splits:
        is_test = [s == "test" for s in splits]
        train = [i for i, t in enumerate(is_test) if not t]
        test = [i for i, t in enumerate(is_test) if t]
        return X[train], X[test], y[train], y[test], "the data's own test part"
    if args.test_size == 0:
        return X, None, y, None, "none"
    X_train, X_test, y_train, y_test = split_train_test(
        X, y, test_size=args.test_size, random_state=args.random_state)
    return X_train, X_test, y_train, y_test, (f"a stratified {args.test_size:.0%} split "
                                              f"(random state {args.random_state})")


def _classifier_params(args: argparse.Namespace) -> dict[str, Any]:
    """SoftmaxClassifier parameters from the flags; None leaves a setting to the recipe."""
    return dict(
        weights=args.weights, epochs=args.epochs, batch_size=args.batch_size,
        optimizer=args.optimizer, lr=args.lr, head_lr="auto" if args.head_lr is None
        else args.head_lr, momentum=args.momentum, lr_decay=args.lr_decay,
        lr_schedule=None if args.lr_schedule == "none" else args.lr_schedule,
        weight_decay=args.weight_decay, warmup=args.warmup,
        validation_fraction=args.validation_fraction, early_stopping=args.early_stopping,
        augment=args.augment, freeze_backbone=args.freeze_backbone, device=args.device,
        precision=args.precision, num_workers=args.num_workers, on_error=args.on_error,
        random_state=args.random_state, progress=not args.no_progress)


def run(args: argparse.Namespace) -> int:
    """Train, evaluate on the test images, save, print a summary."""
    from featclf.model_selection import check_class_counts, class_counts_text
    from featclf.train import SoftmaxClassifier

    X_train, X_test, y_train, y_test, test_from = _parts(args)
    counts = check_class_counts(y_train, what="training")
    clf = SoftmaxClassifier(args.model, **_classifier_params(args))
    print(f"featclf train: {args.model} on {args.data}: {len(y_train)} training images "
          f"({args.validation_fraction:.0%} of them for validation), "
          f"{0 if y_test is None else len(y_test)} test images (test images: {test_from})\n"
          f"  classes: {class_counts_text(counts)}", flush=True)
    started = time.perf_counter()
    clf.fit(X_train, y_train)
    fit_seconds = time.perf_counter() - started
    sys.stderr.flush()
    last = clf.history_.iloc[-1]
    lines = [f"weights         {clf.network_.weights.description}",
             f"epochs run      {clf.n_epochs_} of {args.epochs}",
             f"train accuracy  {last.train_accuracy:.4f} (last epoch, loss {last.train_loss:.4f})"]
    if args.validation_fraction > 0:
        lines.append(f"val accuracy    {last.val_accuracy:.4f} (last epoch, loss "
                     f"{last.val_loss:.4f})")
    if y_test is not None:
        lines.append(f"test accuracy   {clf.score(X_test, y_test):.4f} on {len(y_test)} "
                     "held-out images")
    lines.append(f"training time   {fit_seconds:.1f} s")
    path = clf.save(args.out)
    lines.append(f"saved           {path}")
    print("\n".join(lines))
    return 0
