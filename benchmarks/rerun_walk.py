"""A cached rerun over image files against a stat walk and against reading every byte.

The rerun of an extraction over unchanged files (every vector in the store) looks each file up
by ``os.stat`` in the store's stat record and opens none of them. This script times, on the
same JPEGs in one run (interleaved rounds, warm page cache):

* ``stat_walk``: ``os.stat`` of every file, the floor of any rerun that notices changes;
* ``cached_rerun``: :func:`featclf.extract.cached.cached_features` over the files with every
  vector stored (stat lookup, store lookup, the result matrix), LeNet-5's configuration;
* ``read_all``: reading every byte of every file (what any content hash costs at least);
* ``read_and_hash``: reading and hashing every file (xxh3-128): what a rerun cost before the
  stat record (it hashed every file up front).

It also counts the image files opened (an audit hook on ``open``) by the first run (one read
per file: hashed and decoded from the same bytes) and by the rerun (none).

Run: ``python benchmarks/rerun_walk.py [--quick | --smoke] [--out-dir DIR]``.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import common
import numpy as np
from PIL import Image

from featclf.data.sources import FileSource
from featclf.extract import DeepFeatureExtractor
from featclf.extract.cached import cached_features
from featclf.fingerprint import digest_bytes
from featclf.store import FeatureStore
from featclf.store._stat import RACY_SECONDS

NAME = "rerun_walk"
SETTINGS = {
    "full": dict(n_files=3000, size=(500, 375), repeats=7),
    "quick": dict(n_files=1000, size=(500, 375), repeats=5),
    "smoke": dict(n_files=20, size=(64, 48), repeats=1),
}

_OPENS = {"folder": None, "n": 0}


def _audit(event: str, args: tuple) -> None:
    folder = _OPENS["folder"]
    if folder and event == "open" and isinstance(args[0], str | bytes | os.PathLike) \
            and os.fsdecode(os.fspath(args[0])).startswith(folder):
        _OPENS["n"] += 1


def count_opens(folder: Path, fn) -> tuple[int, object]:
    """How many files under ``folder`` ``fn()`` opens in this process, and its result."""
    _OPENS["folder"], _OPENS["n"] = str(folder) + os.sep, 0
    try:
        result = fn()
    finally:
        _OPENS["folder"] = None
    return _OPENS["n"], result


def write_photos(folder: Path, n: int, size: tuple[int, int]) -> list[str]:
    """``n`` JPEGs that compress like photos (smooth fields plus grain), quality 90."""
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    width, height = size
    paths = []
    for i in range(n):
        coarse = rng.integers(0, 256, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8)
        base = Image.fromarray(coarse).resize((width, height), Image.BICUBIC)
        grain = rng.normal(0, 12, (height, width, 3))
        pixels = np.clip(np.asarray(base, np.float64) + grain, 0, 255).astype(np.uint8)
        path = folder / f"{i:05d}.jpg"
        Image.fromarray(pixels).save(path, "JPEG", quality=90)
        paths.append(str(path))
    return paths


def main(argv=None) -> int:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    settings = SETTINGS[args.mode]
    sys.addaudithook(_audit)
    with tempfile.TemporaryDirectory(prefix="featclf-rerun-") as tmp:
        folder = Path(tmp) / "images"
        paths = write_photos(folder, settings["n_files"], settings["size"])
        total_bytes = sum(os.path.getsize(p) for p in paths)
        # Files younger than the racy window are hashed again on the next run: let them age.
        time.sleep(RACY_SECONDS + 0.2)
        store = FeatureStore(Path(tmp) / "store")
        ext = DeepFeatureExtractor("lenet5", weights="random", batch_size=256,
                                   store=store).fit()
        configs = ext.cache_configs_(paths)
        started = time.perf_counter()
        first_opens, first = count_opens(folder, lambda: cached_features(
            FileSource(paths), ext.iter_features, configs=configs, store=store))
        first_seconds = time.perf_counter() - started
        assert first.n_computed == len(paths), first.n_computed

        def rerun():
            result = cached_features(FileSource(paths), ext.iter_features, configs=configs,
                                     store=store)
            assert (result.n_computed, result.n_reused) == (0, len(paths))
            return result

        rerun_opens, again = count_opens(folder, rerun)
        np.testing.assert_array_equal(again.features, first.features)

        def stat_walk():
            for p in paths:
                os.stat(p)

        def read_all():
            for p in paths:
                with open(p, "rb") as fh:
                    fh.read()

        def read_and_hash():
            for p in paths:
                with open(p, "rb") as fh:
                    digest_bytes(fh.read())

        timings = common.interleaved({"stat_walk": stat_walk, "cached_rerun": rerun,
                                      "read_all": read_all, "read_and_hash": read_and_hash},
                                     settings["repeats"], warmup_rounds=1)
    med = {k: t.median for k, t in timings.items()}
    results = {
        "files": len(paths), "megabytes": round(total_bytes / 1e6, 1),
        "timings": {k: t.to_dict() for k, t in timings.items()},
        "first_run": {"seconds": first_seconds, "image_opens": first_opens},
        "rerun_image_opens": rerun_opens,
        "rerun_over_stat_walk": med["cached_rerun"] / med["stat_walk"],
        "read_all_over_rerun": med["read_all"] / med["cached_rerun"],
        "read_and_hash_over_rerun": med["read_and_hash"] / med["cached_rerun"],
    }
    headline = {
        "cached rerun (s)": round(med["cached_rerun"], 4),
        "stat walk (s)": round(med["stat_walk"], 4),
        "cached rerun / stat walk": round(results["rerun_over_stat_walk"], 2),
        "read every byte / cached rerun": round(results["read_all_over_rerun"], 2),
        "read+hash (old rerun) / cached rerun": round(results["read_and_hash_over_rerun"], 2),
        "image opens: first run / rerun": f"{first_opens} / {rerun_opens}",
    }
    payload = {"mode": args.mode, "config": settings, "results": results,
               "headline": headline,
               "recommendations": [
                   "Keep the store beside the images (the stat record lives in it): a rerun "
                   "over unchanged files then costs about a stat walk and reads no image."]}
    path = common.write_json(NAME, payload, args.out_dir)
    common.print_table(f"{NAME}: {len(paths)} JPEGs, {results['megabytes']} MB",
                       [{"measure": k, "value": v} for k, v in headline.items()])
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
