"""``featclf models``: list the architectures with input sizes and feature sizes."""

from __future__ import annotations

import argparse

from featclf.models import get_model_spec, list_models


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``featclf models``."""
    p = sub.add_parser("models", help="list architectures and their feature sizes",
                       description="List the architectures featclf builds by name: input size "
                       "and channels with random weights (weights can bring their own), "
                       "penultimate feature size and the layer removed as the head.")
    p.add_argument("--all", action="store_true",
                   help="also list every torchvision classification model")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Print one line per model."""
    rows = [("name", "input", "features", "head", "source", "description")]
    for name in list_models(include_torchvision=args.all):
        spec = get_model_spec(name)
        h, w = spec.preprocess.output_size
        rows.append((name, f"{spec.preprocess.channels}x{h}x{w}", str(spec.feature_dim or "-"),
                     spec.head or "-", spec.source, spec.description))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(wd) for c, wd in zip(r[:5], widths)) + "  " + r[5])
    if not args.all:
        extra = len(list_models(include_torchvision=True)) - len(rows) + 1
        print(f"... and {extra} torchvision models by their torchvision names "
              "(resnet18, vgg16, vit_b_16, ...): featclf models --all")
    return 0
