"""``featclf train``: train a zoo CNN end to end (softmax) and save a checkpoint.

The data is split with :func:`featclf.model_selection.split_train_test` (stratified,
``--test-size``, ``--random-state``), the split ``featclf compare`` uses too; the network trains
on the train part (minus its validation fraction) and the summary reports accuracy on the
held-out test part.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from featclf.data import image_files, load_digits_images, load_mnist5k
from featclf.model_selection import split_train_test
from featclf.train import OPTIMIZERS, SoftmaxClassifier

BUILTIN_DATA = {"mnist5k": load_mnist5k, "digits": load_digits_images}


def load_labelled_images(data: str):
    """Images and labels named by ``--data``: a built-in set, an image folder or a CSV.

    Parameters
    ----------
    data : str
        ``"mnist5k"``, ``"digits"``, a folder (labels from class subfolders or file names) or a
        CSV of ``path,label`` lines.

    Returns
    -------
    (X, y)
        Images (an array, or :class:`~featclf.data.ImageFiles`) and their labels.

    Examples
    --------
    >>> X, y = load_labelled_images("digits")
    >>> X.shape
    (1797, 8, 8)
    """
    if data in BUILTIN_DATA:
        return BUILTIN_DATA[data](return_X_y=True)
    path = Path(data)
    if not path.exists():
        raise FileNotFoundError(f"--data {data}: not a built-in data set "
                                f"({', '.join(BUILTIN_DATA)}), and no such folder or CSV file")
    files = image_files(path)
    if files.labels is None:
        raise ValueError(f"--data {data}: found {len(files)} images but no labels; put them in "
                         "class subfolders (DIR/cat/x.jpg), name them 'label.N.jpg', or list "
                         "'path,label' lines in a CSV")
    return files, files.labels


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``featclf train``."""
    defaults = SoftmaxClassifier().get_params()
    p = sub.add_parser(
        "train", help="train a CNN end to end (softmax) and save a checkpoint",
        description="Train a zoo network with a softmax output on a stratified train split, "
        "report its accuracy on the held-out test split, and save a checkpoint that "
        "get_model, DeepFeatureExtractor and SoftmaxClassifier.load accept. The defaults are "
        "the seed tutorial's Keras recipe (SGD 0.05, decay 1e-6, momentum 0.9 Nesterov, batch "
        "100, 10 epochs, 20% validation).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--model", default=defaults["model"],
                   help="zoo name (see `featclf models`)")
    p.add_argument("--weights", default=None,
                   help="starting weights: a .pt/.safetensors file or a torchvision weights name")
    p.add_argument("--data", required=True,
                   help="mnist5k | digits | an image folder | a CSV of path,label lines")
    p.add_argument("--out", required=True, type=Path,
                   help="checkpoint to write (.pt or .safetensors)")
    p.add_argument("--epochs", type=int, default=defaults["epochs"], help="passes over the data")
    p.add_argument("--batch-size", type=int, default=defaults["batch_size"],
                   help="images per optimizer step")
    p.add_argument("--lr", type=float, default=defaults["lr"], help="base learning rate")
    p.add_argument("--lr-decay", type=float, default=defaults["lr_decay"],
                   help="Keras time-based decay per batch: lr / (1 + decay * step)")
    p.add_argument("--lr-schedule", choices=["cosine", "step"], default=None,
                   help="multiplied onto the decay")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=defaults["optimizer"],
                   help="sgd uses --momentum with Nesterov")
    p.add_argument("--momentum", type=float, default=defaults["momentum"], help="SGD momentum")
    p.add_argument("--weight-decay", type=float, default=defaults["weight_decay"],
                   help="L2 penalty")
    p.add_argument("--validation-fraction", type=float,
                   default=defaults["validation_fraction"],
                   help="part of the train split held out to report val loss/accuracy")
    p.add_argument("--early-stopping", type=int, default=None, metavar="PATIENCE",
                   help="stop after PATIENCE epochs without a better val loss")
    p.add_argument("--augment", choices=["seed"], default=None,
                   help="the seed tutorial's augmentation and featurewise normalisation")
    p.add_argument("--freeze-backbone", action="store_true",
                   help="train only the head (needs --weights to be meaningful)")
    p.add_argument("--test-size", type=float, default=0.2,
                   help="held-out test fraction (stratified); 0 trains on everything")
    p.add_argument("--random-state", type=int, default=0,
                   help="seeds the split, initialisation and shuffling")
    p.add_argument("--device", default="auto", help="auto (CUDA if present), cpu, cuda, cuda:N")
    p.add_argument("--precision", default="auto", choices=["auto", "fp32", "bf16", "fp16"],
                   help="auto: bf16 autocast on CUDA, fp32 on the CPU")
    p.add_argument("--on-error", default="raise", choices=("raise", "skip"),
                   help="unreadable training images: stop (raise) or leave them out and "
                   "list them (skip)")
    p.add_argument("--num-workers", type=int, default=0,
                   help="decoding processes when image files are streamed")
    p.add_argument("--no-progress", action="store_true", help="no per-epoch progress bars")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Train, evaluate on the test split, save, print a summary."""
    X, y = load_labelled_images(args.data)
    if not 0 <= args.test_size < 1:
        raise ValueError(f"--test-size must be in [0, 1), got {args.test_size}")
    if args.test_size > 0:
        X_train, X_test, y_train, y_test = split_train_test(
            X, y, test_size=args.test_size, random_state=args.random_state)
    else:
        X_train, X_test, y_train, y_test = X, None, y, None
    clf = SoftmaxClassifier(
        args.model, weights=args.weights, epochs=args.epochs, batch_size=args.batch_size,
        optimizer=args.optimizer, lr=args.lr, momentum=args.momentum, lr_decay=args.lr_decay,
        lr_schedule=args.lr_schedule, weight_decay=args.weight_decay,
        validation_fraction=args.validation_fraction, early_stopping=args.early_stopping,
        augment=args.augment, freeze_backbone=args.freeze_backbone, device=args.device,
        precision=args.precision, num_workers=args.num_workers, on_error=args.on_error,
        random_state=args.random_state, progress=not args.no_progress)
    print(f"featclf train: {args.model} on {args.data}: {len(y_train)} training images "
          f"({args.validation_fraction:.0%} of them for validation), "
          f"{0 if y_test is None else len(y_test)} test images", flush=True)
    started = time.perf_counter()
    clf.fit(X_train, y_train)
    fit_seconds = time.perf_counter() - started
    sys.stderr.flush()
    last = clf.history_.iloc[-1]
    lines = [f"epochs run      {clf.n_epochs_} of {args.epochs}",
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
