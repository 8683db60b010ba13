"""``featclf extract``: compute a folder's (or CSV's) deep features into a feature store.

A batch job that can be killed and restarted: vectors are written to the store shard by shard
as they are computed, and a second run computes only what the store lacks (nothing at all when
the images, the network and the settings are unchanged).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from featclf.cli._data import add_data_arguments, image_files_from_args
from featclf.errors import option

if TYPE_CHECKING:  # imported by run(): `featclf --help` must not import torch or scikit-learn
    from featclf.data import ImageFiles
    from featclf.store import FeatureStore

#: Where extraction runs: in this process, or on a Ray cluster (featclf.distributed).
ENGINES = ("local", "ray")
#: ``featclf.models.head.POOLINGS`` and ``featclf.store.DTYPES``, spelled out here so that
#: building the parser imports neither torch nor the store (tests/test_cli.py checks they agree).
_BASE_POOLINGS = ("avg", "max", "flatten", "cls", "mean")
POOLINGS = _BASE_POOLINGS + tuple(f"{name}+l2" for name in _BASE_POOLINGS)
DTYPES = ("float32", "float16")


def _layer(layers: list[str] | None) -> str | list[str] | None:
    """``--layer`` as the extractor's ``layer``: None, one node, or several from one forward."""
    if not layers:
        return None
    return layers[0] if len(layers) == 1 else layers


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``featclf extract``."""
    p = sub.add_parser(
        "extract", help="compute deep features of image files into a feature store",
        description="Run a network without its classification head over image files and keep "
        "the vectors in a feature store. Killed jobs resume where they stopped; unchanged "
        "images are never recomputed (renamed or moved files included).")
    p.add_argument("--model", required=True,
                   help="a model name (`featclf models`) or a checkpoint saved by featclf")
    p.add_argument("--weights", metavar="NAME|FILE|random",
                   help="weights for --model. Default: a torchvision architecture's pretrained "
                   "weights (downloaded once into torch's cache), or the checkpoint's own; "
                   "lenet5 and seed_cnn have none and start random (with a warning: train "
                   "them first). random: random initialisation; FILE: a .pt/.safetensors "
                   "checkpoint; NAME: a torchvision weights name such as IMAGENET1K_V1")
    p.add_argument("--images", required=True, metavar="DIR|CSV",
                   help="a folder of images (class subfolders or labelled file names give "
                   "labels) or a CSV file listing them (path,label lines, or a header row)")
    p.add_argument("--labels", default="auto",
                   choices=("auto", "folders", "names", "csv", "none"),
                   help="where labels come from (kept in the store for export; default auto)")
    p.add_argument("--store", required=True, help="the feature store directory (created if "
                   "missing)")
    p.add_argument("--layer", action="append", dest="layers", metavar="NODE",
                   help="graph node to read features from (default: the input of the final "
                   "classification layer, 'penultimate'; 'logits' is the head's output). Repeat "
                   "for several: one forward computes them all, each stored under its own key")
    p.add_argument("--pooling", default="avg", choices=POOLINGS,
                   help="how convolutional maps (avg, max, flatten) or transformer tokens (cls: "
                   "the class token; mean: the patch tokens) become vectors; +l2 normalises "
                   "each layer's vector (default avg)")
    p.add_argument("--batch-size", type=_batch_size, default="auto", metavar="N",
                   help="images per forward pass (default auto: 256 on a GPU; on the CPU 8 at "
                   "224 px up to 64 at 28 px, where these CPUs run fastest)")
    p.add_argument("--num-workers", type=_count(0), default=0, metavar="N",
                   help="decoding worker processes (default 0)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default auto)")
    p.add_argument("--precision", default="auto", choices=("auto", "fp32", "bf16", "fp16"),
                   help="autocast precision (default: fp32 on CPU, bf16 on CUDA)")
    p.add_argument("--compile", action="store_true",
                   help="run the network through torch.compile: pays a one-off compilation "
                   "(seconds to a minute), then runs faster; for long jobs")
    p.add_argument("--jpeg-draft", action="store_true",
                   help="decode JPEGs at 1/2-1/8 scale (still at least twice the model's "
                   "resize): much faster on camera photos, pixels differ slightly")
    p.add_argument("--on-error", default="raise", choices=("raise", "skip"),
                   help="an unreadable image stops the job (raise, the default) or is listed "
                   "in the error manifest and skipped (skip)")
    p.add_argument("--errors", metavar="PATH",
                   help="error manifest for --on-error skip (default STORE/errors.csv)")
    p.add_argument("--engine", default="local", choices=ENGINES,
                   help="where extraction runs (default local)")
    p.add_argument("--address", default=None, metavar="auto|ray://HOST:10001",
                   help="with --engine ray: the cluster to join (default: start a local Ray)")
    p.add_argument("--actors", type=_count(1), default=2, metavar="N",
                   help="with --engine ray: actors in the pool, each holding the network "
                   "(default 2)")
    p.add_argument("--gpus-per-actor", type=float, default=0, metavar="G",
                   help="with --engine ray: GPUs per actor; > 0 runs the network on CUDA")
    p.add_argument("--shard-rows", type=_count(1), default=None, metavar="N",
                   help="vectors per shard (default: about 8 MiB of vectors, 1024 to 16384); "
                   "a kill loses at most one shard")
    p.add_argument("--dtype", choices=DTYPES, default=None,
                   help="storage dtype when the store is created (default float32); an "
                   "existing store's own dtype is used, and a different --dtype is refused")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_data_arguments(p)
    p.set_defaults(func=run)


def _count(low: int):
    """An argparse type: an integer of at least ``low`` (a usage error otherwise)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value
    parse.__name__ = f"integer >= {low}"  # what argparse names in its messages
    return parse


def _batch_size(text: str) -> int | str:
    """``--batch-size``: "auto" or a positive integer."""
    if text == "auto":
        return text
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer or 'auto', got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1 or 'auto', got {value}")
    return value


def _files(args: argparse.Namespace) -> ImageFiles:
    """The images ``--images`` and the data flags name (``--labels`` when not auto)."""
    if args.labels == "auto":
        return image_files_from_args(args, args.images)
    from featclf.data import image_files

    return image_files(args.images, labels=args.labels, path_column=args.path_column,
                       label_column=args.label_column, split_column=args.split_column)


def _extract_ray(extractor, store: FeatureStore, files, args: argparse.Namespace):
    """Extract on a Ray actor pool into the same store (the ``ray`` engine)."""
    from featclf.distributed import extract_with_ray

    return extract_with_ray(files, extractor, store, address=args.address, actors=args.actors,
                            gpus_per_actor=args.gpus_per_actor, on_error=args.on_error,
                            # "auto": extract_with_ray's own default (large calls: one shard
                            # per call at least)
                            **({} if args.batch_size == "auto"
                               else {"batch_size": args.batch_size}),
                            progress=not args.no_progress)


def run(args: argparse.Namespace) -> int:
    """Extract into the store and print a summary; 0 on success (skipped images included)."""
    from featclf.data import ImageDecodeError
    from featclf.data.inputs import as_image_source
    from featclf.extract import DeepFeatureExtractor
    from featclf.extract.cached import cached_features, write_error_manifest
    from featclf.store import FeatureStore

    started = time.perf_counter()
    files = _files(args)
    store = FeatureStore(args.store, dtype=args.dtype, shard_rows=args.shard_rows)
    extractor = DeepFeatureExtractor(
        model=args.model, weights=args.weights, layer=_layer(args.layers), pooling=args.pooling,
        device=args.device, precision=args.precision, batch_size=args.batch_size,
        num_workers=args.num_workers, store=store, on_error=args.on_error,
        progress=not args.no_progress, compile=args.compile,
        jpeg_draft=args.jpeg_draft).fit()
    model = extractor.model_name_ or args.model
    weights = extractor.network_.weights.description
    source = as_image_source(files)
    configs = extractor.cache_configs_(source)
    try:
        if args.engine == "ray":
            result = _extract_ray(extractor, store, files, args)
        else:  # local: the extractor's own loop, plus the labels kept for export
            result = cached_features(source, extractor.iter_features, configs=configs,
                                     store=store, on_error=args.on_error,
                                     progress=not args.no_progress, desc="extract",
                                     widths=extractor.feature_blocks_, labels=files.labels,
                                     about={"model": model, "weights": weights})
    except ImageDecodeError as exc:
        # Reworded from the error's parts, not its message: the library's hint may change.
        raise ValueError(f"cannot read image {exc.path!r}: {exc.reason}. The vectors computed "
                         f"so far are in the store; {option('on_error', 'skip')} lists "
                         "unreadable images in an error manifest and goes on") from None
    seconds = time.perf_counter() - started
    manifest = None
    if args.on_error == "skip":
        manifest = write_error_manifest(args.errors or Path(args.store) / "errors.csv",
                                        result.errors)
    layer = ", ".join(args.layers) if args.layers else "penultimate layer"
    keys = ", ".join(store.config_key(config)[:12] for config in configs.values())
    n = len(files)
    print(f"featclf extract: {n} images, {model} {layer} "
          f"({args.pooling} pooling, {extractor.precision_} on {extractor.device_}) -> "
          f"{store.root} [config {keys}]")
    print(f"  weights   {weights}")
    print(f"  computed  {result.n_computed:>8}")
    print(f"  reused    {result.n_reused:>8}")
    skipped = f"  skipped   {len(result.errors):>8}"
    if result.errors:
        skipped += f"  (listed in {manifest})"
    print(skipped)
    print(f"  time      {seconds:>8.1f} s  ({n / seconds:.1f} images/s; "
          f"{result.n_computed / seconds:.1f} computed/s)")
    sys.stdout.flush()
    return 0
