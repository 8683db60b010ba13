"""``featclf store info|verify|prune|export STORE``: inspect and maintain a feature store."""

from __future__ import annotations

import argparse
import json
import sys

from featclf.store import FeatureStore


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``featclf store`` and its actions."""
    p = sub.add_parser("store", help="inspect and maintain a feature store",
                       description="Inspect and maintain a feature store written by "
                       "`featclf extract` or DeepFeatureExtractor(store=...).")
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)

    info = actions.add_parser("info", help="configurations, vector counts, dims, size on disk")
    info.add_argument("store", help="the store directory")
    info.add_argument("--json", action="store_true", help="print JSON instead of a table")
    info.set_defaults(func=run_info)

    verify = actions.add_parser("verify", help="check every shard's checksum and index; exits "
                                "1 naming damaged shards")
    verify.add_argument("store", help="the store directory")
    verify.add_argument("--progress", action="store_true", help="show a progress bar")
    verify.set_defaults(func=run_verify)

    prune = actions.add_parser("prune", help="remove temporary files, orphans, damaged shards "
                               "and duplicates (and namespaces with --config)")
    prune.add_argument("store", help="the store directory")
    prune.add_argument("--config", action="append", default=[], metavar="KEY",
                       help="remove this configuration's namespace (a key or unique prefix "
                       "from `store info`); repeatable")
    prune.add_argument("--compact", action="store_true",
                       help="also merge small shards into shards of --shard-rows rows")
    prune.add_argument("--shard-rows", type=int, default=1024, metavar="N",
                       help="rows per merged shard with --compact (default 1024)")
    prune.add_argument("--stale-seconds", type=float, default=3600.0, metavar="S",
                       help="remove temporary files of writers on other hosts once this old "
                       "(dead writers on this host: at once; default 3600)")
    prune.set_defaults(func=run_prune)

    export = actions.add_parser("export", help="write vectors with paths and labels to "
                                ".parquet or .npz")
    export.add_argument("store", help="the store directory")
    export.add_argument("out", help="output file: .parquet or .npz")
    export.add_argument("--config", metavar="KEY",
                        help="the configuration (key or unique prefix); needed when the store "
                        "holds more than one")
    export.set_defaults(func=run_export)


def _size(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def _describe_config(config: dict | None) -> str:
    """A one-line summary: short scalar settings, long digests cut to 12 characters."""
    if not config:
        return "(config.json missing)"
    parts = []
    for key in sorted(config):
        value = config[key]
        if isinstance(value, dict | list):
            continue
        text = str(value)
        parts.append(f"{key}={text[:12] if len(text) > 24 else text}")
    return " ".join(parts)


def run_info(args: argparse.Namespace) -> int:
    """Print one line per configuration."""
    store = FeatureStore(args.store, create=False)
    infos = store.info()
    total = store.disk_bytes()
    if args.json:
        print(json.dumps({"store": str(store.root), "dtype": store.dtype, "bytes": total,
                          "configs": [vars(i) for i in infos]}, indent=1, default=str))
        return 0
    print(f"store {store.root}: {store.dtype}, {len(infos)} configuration(s), "
          f"{_size(total)} on disk")
    for i in infos:
        dups = f", {i.duplicates} duplicate(s) (run prune)" if i.duplicates else ""
        print(f"  {i.key[:12]}  {i.vectors} vectors x {i.dim} ({'/'.join(i.dtypes) or '-'}), "
              f"{i.shards} shard(s), {_size(i.bytes)}{dups}")
        print(f"      {_describe_config(i.config)}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """Check every shard; exit 1 naming the damaged ones."""
    store = FeatureStore(args.store, create=False)
    report = store.verify(progress=args.progress)
    for path, reason in report.problems:
        print(f"DAMAGED {store.root / path}: {reason}", file=sys.stderr)
    print(f"verified {report.shards} shard(s), {report.vectors} vectors, "
          f"{_size(report.bytes)}: " + ("ok" if report.ok else
                                        f"{len(report.problems)} problem(s); `featclf store "
                                        "prune` removes damaged shards, the next extract "
                                        "recomputes their vectors"))
    return 0 if report.ok else 1


def run_prune(args: argparse.Namespace) -> int:
    """Remove what a store does not need."""
    store = FeatureStore(args.store, create=False, shard_rows=args.shard_rows)
    report = store.prune(configs=args.config, compact=args.compact,
                         stale_seconds=args.stale_seconds)
    for key in report.configs:
        print(f"removed configuration {key}")
    for name in report.damaged:
        print(f"removed damaged {name}")
    print(f"pruned {store.root}: {len(report.temp_files)} temporary file(s), "
          f"{len(report.orphans)} orphan shard(s), {len(report.damaged)} damaged, "
          f"{report.duplicates} duplicate vector(s), {report.merged} small shard(s) merged "
          f"({len(report.rewritten)} shard(s) written), {_size(report.bytes_freed)} freed")
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Write a configuration's vectors to Parquet or NPZ."""
    store = FeatureStore(args.store, create=False)
    out = store.export(args.out, config=args.config)
    print(f"wrote {out}")
    return 0
