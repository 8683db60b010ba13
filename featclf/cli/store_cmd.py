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

    info = actions.add_parser("info", help="one row per configuration: model, layer, vector "
                              "count and width, shards, size on disk, weights")
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
                       "(of dead writers on this host: at once; of running ones: never; "
                       "default 3600)")
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


def _info_rows(infos: list) -> list[list[str]]:
    """The cells of `store info`'s table: words from ``about``, counts from the indexes."""
    rows = [["KEY", "MODEL", "LAYER", "VECTORS", "SHARDS", "SIZE", "WEIGHTS"]]
    for i in infos:
        about, config = i.about, i.config or {}
        layer = about.get("layer", config.get("layer"))
        rows.append([i.key[:12], about.get("model", "-"), "-" if layer is None else str(layer),
                     f"{i.vectors} vectors x {i.dim if i.dim is not None else '-'}",
                     str(i.shards), _size(i.bytes),
                     about.get("weights", "- (not recorded)")])
    return rows


def run_info(args: argparse.Namespace) -> int:
    """Print a table with one row per configuration (model, layer, counts, size, weights)."""
    store = FeatureStore(args.store, create=False)
    infos = store.info()
    total = store.disk_bytes()
    if args.json:
        print(json.dumps({"store": str(store.root), "dtype": store.dtype, "bytes": total,
                          "configs": [vars(i) for i in infos]}, indent=1, default=str))
        return 0
    print(f"store {store.root}: {store.dtype}, {len(infos)} configuration(s), "
          f"{_size(total)} on disk")
    if not infos:
        return 0
    rows = _info_rows(infos)
    widths = [max(len(r[c]) for r in rows) for c in range(len(rows[0]) - 1)]
    indent = " " * (2 + widths[0] + 2)
    for n, row in enumerate(rows):
        cells = [cell.ljust(w) for cell, w in zip(row, widths)]
        print("  " + "  ".join([*cells, row[-1]]))
        if n == 0:
            continue
        i = infos[n - 1]
        print(f"{indent}settings: {_describe_config(i.config)}")
        if i.duplicates:
            print(f"{indent}{i.duplicates} duplicate vector(s): `featclf store prune` "
                  "removes them")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    """Check every shard; exit 1 naming the damaged ones."""
    store = FeatureStore(args.store, create=False)
    report = store.verify(progress=args.progress)
    for path, reason in report.problems:
        print(f"DAMAGED {store.root / path}: {reason}", file=sys.stderr)
    if report.fallbacks:
        # Not damage: these shards are found through their JSON index, which is slower.
        for path, reason in report.fallbacks:
            print(f"no current key index for {store.root / path}: {reason}", file=sys.stderr)
        print(f"{len(report.fallbacks)} shard(s) are looked up through their JSON index; "
              "`featclf store prune` writes their key indexes", file=sys.stderr)
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
          f"({len(report.rewritten)} shard(s) written), {_size(report.bytes_freed)} freed"
          + (f", {len(report.key_indexes)} key index(es) written" if report.key_indexes
             else "")
          + (f", {report.stat_entries} stat-record entr(ies) of unstored content dropped"
             if report.stat_entries else ""))
    return 0


def run_export(args: argparse.Namespace) -> int:
    """Write a configuration's vectors to Parquet or NPZ."""
    store = FeatureStore(args.store, create=False)
    out = store.export(args.out, config=args.config)
    print(f"wrote {out}")
    return 0
