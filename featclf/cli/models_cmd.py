"""``featclf models``: list the architectures with input sizes and feature sizes, or one
architecture's layer names (``--layers NAME``); ``--source timm`` lists timm's models.

torch (and timm) are imported when the command runs, not when the CLI starts.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``featclf models``."""
    p = sub.add_parser("models", help="list architectures, or one architecture's layers",
                       description="List the architectures featclf builds by name: input size "
                       "and channels (weights can bring their own), penultimate feature size and "
                       "the layer removed as the head. With --layers NAME, list the layers of "
                       "one architecture that --layer accepts.")
    p.add_argument("--all", action="store_true",
                   help="also list every torchvision classification model")
    p.add_argument("--source", choices=("featclf", "torchvision", "timm"),
                   help="list only this source's models; 'timm' lists every model timm "
                   "builds (needs pip install 'featclf[timm]'), by the names featclf takes: "
                   "timm/<name>")
    p.add_argument("--pretrained", action="store_true",
                   help="with --source timm: the names with their pretrained-weights tags "
                   "(timm/vit_small_patch16_224.augreg_in21k)")
    p.add_argument("--filter", metavar="PATTERN", default="*",
                   help="with --source timm: a wildcard pattern, e.g. 'vit_*dinov2*'")
    p.add_argument("--layers", metavar="NAME",
                   help="list the layer names of model NAME (what --layer accepts), in order")
    p.set_defaults(func=run)


def _print_layers(name: str) -> int:
    from featclf.models import get_model_spec
    from featclf.models.registry import architecture_layers

    spec = get_model_spec(name)  # unknown names: a ValueError suggesting close ones
    head = (f"the input of {spec.head}, {spec.feature_dim} features; the default"
            if spec.head else "none: this model has no Linear head, pass --layer")
    print(f"penultimate  ({head})")
    if spec.source == "timm":
        blocks = architecture_layers(name)
        print(f"-1 ... -{len(blocks)}  (blocks by index, through the final norm: "
              "--layer -4 -3 -2 -1 --pooling cls is DINOv2's linear probe)")
    for layer in architecture_layers(name):
        print(layer)
    return 0


def _print_timm(pattern: str, pretrained: bool) -> int:
    # timm's own registry: listing needs no model built and nothing downloaded.
    from featclf.models.timm_backbones import timm_model_names

    names = timm_model_names(pattern, pretrained=pretrained)
    for name in names:
        print(name)
    what = "pretrained weights" if pretrained else "timm models"
    print(f"... {len(names)} {what}; use one as --model timm/<name> (weights download when "
          "online; featclf models --layers timm/<name> lists its blocks)")
    return 0


def run(args: argparse.Namespace) -> int:
    """Print one line per model, or one line per layer of ``--layers NAME``."""
    if args.layers:
        return _print_layers(args.layers)
    if args.source == "timm":
        return _print_timm(args.filter, args.pretrained)
    from featclf.models import get_model_spec, list_models

    names = list_models(include_torchvision=args.all or args.source == "torchvision")
    if args.source is not None:
        names = [n for n in names if get_model_spec(n).source == args.source]
    rows = [("name", "input", "features", "head", "source", "description")]
    for name in names:
        spec = get_model_spec(name)
        h, w = spec.preprocess.output_size
        rows.append((name, f"{spec.preprocess.channels}x{h}x{w}", str(spec.feature_dim or "-"),
                     spec.head or "-", spec.source, spec.description))
    widths = [max(len(r[i]) for r in rows) for i in range(5)]
    for r in rows:
        print("  ".join(c.ljust(wd) for c, wd in zip(r[:5], widths)) + "  " + r[5])
    if not args.all and args.source is None:
        extra = len(list_models(include_torchvision=True)) - len(rows) + 1
        print(f"... and {extra} torchvision models by their torchvision names "
              "(resnet18, vgg16, vit_b_16, ...): featclf models --all; their layers: "
              "featclf models --layers resnet18; timm's models: featclf models --source timm")
    return 0
