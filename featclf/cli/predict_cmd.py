"""``featclf predict``: apply a saved winner (``featclf compare --save-model``) to new images.

Writes one CSV line per image: ``path,predicted,probability`` (classifiers with probabilities:
logistic regression, the softmax network) or ``path,predicted,score`` (the SVMs: the decision
value of the predicted class).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``featclf predict``."""
    p = sub.add_parser(
        "predict",
        help="classify new images with a model saved by featclf compare",
        description="Load the network and classifier that featclf compare saved (its "
        "--save-model folder, by default <report folder>/model) and write the predicted class "
        "of every image to a CSV file: path, predicted, and the probability (or, for an SVM, "
        "the decision score) of the predicted class. Load only models from your own runs: the "
        "classifier file is a pickle, which can run code when loaded.",
    )
    p.add_argument("--model", required=True, metavar="DIR",
                   help="folder with winner.json (written by featclf compare)")
    p.add_argument("--images", required=True, metavar="DIR|CSV",
                   help="folder of images (searched recursively) or a CSV file of image paths")
    p.add_argument("--out", default="predictions.csv", metavar="CSV",
                   help="where to write the predictions (default predictions.csv)")
    p.add_argument("--batch-size", type=int, default=256, metavar="N",
                   help="images per forward pass (default 256, as featclf compare)")
    p.add_argument("--device", default="auto", help="cpu, cuda, cuda:N or auto (default)")
    p.add_argument("--no-progress", action="store_true", help="do not show the progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Predict every image, write the CSV; returns the exit code."""
    import pandas as pd

    from featclf.winner import image_paths, load_winner

    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size}: pass a positive number of images")
    if not os.path.exists(args.images):
        raise FileNotFoundError(f"--images {args.images}: no such folder or CSV file")
    winner = load_winner(args.model, device=args.device, batch_size=args.batch_size,
                         progress=not args.no_progress)  # fmt: skip
    paths = image_paths(args.images)
    if not paths:
        raise ValueError(f"--images {args.images}: no image files found")
    pred, scores, kind = winner.predict_with_scores(paths)
    column = "probability" if kind == "probability" else "score"
    table = pd.DataFrame({"path": paths, "predicted": pred, column: scores})
    out = Path(args.out)
    if out.parent != Path():
        out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp")
    table.to_csv(tmp, index=False)
    tmp.replace(out)  # whole or not at all
    manifest = winner.manifest
    print(f"{len(paths)} images classified by {manifest['model']}/{manifest['layer']}/"
          f"{manifest['classifier']}: {out}")  # fmt: skip
    sys.stdout.flush()
    return 0
