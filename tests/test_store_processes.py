"""FeatureStore across real processes: writers side by side, compaction beside readers and a
live writer, a kill -9 in the middle of a compaction, and a read-only store.

Every vector is a function of its digest (:func:`vectors_of`), so any vector a process reads
back can be checked, wherever and whenever it was written. The workers run in spawned
processes (no fork of the test process and its torch threads); they import numpy and
featclf.store only, and report through a JSON file each.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import signal
import stat
import subprocess
import sys
import textwrap
import time
import traceback
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

from featclf.store import FeatureStore

CONFIG = {"model": "projection", "layer": None, "pooling": "avg", "version": 1}
SPAWN = multiprocessing.get_context("spawn")


def digest(i: int) -> str:
    return f"{i:032x}"


def vectors_of(ids) -> np.ndarray:
    """The vector stored for sample ``i``: exact in float32 for the ids used here."""
    ids = np.asarray(ids, dtype=np.float32)[:, None]
    return np.hstack([ids, ids + 0.5, -ids, ids * 0.25])


def wrong_rows(digests: list[str], found: np.ndarray, got: np.ndarray) -> int:
    """How many returned vectors are not the vector of their digest."""
    ids = [int(d, 16) for d, ok in zip(digests, found) if ok]
    return int((got != vectors_of(ids)).any(axis=1).sum()) if ids else 0


def put(store: FeatureStore, ids) -> None:
    ids = list(ids)
    store.put(CONFIG, [digest(i) for i in ids], vectors_of(ids))


def run_worker(out: Path, body, *args) -> None:
    """Run ``body(*args)`` and write what it returns (or its traceback) to ``out``."""
    try:
        result = {"ok": True, **body(*args)}
    except BaseException:  # noqa: BLE001 - every failure is reported to the test
        result = {"ok": False, "error": traceback.format_exc()}
    out.write_text(json.dumps(result))


def results(*paths: Path) -> list[dict]:
    got = [json.loads(p.read_text()) for p in paths]
    for r in got:
        assert r["ok"], r["error"]
    return got


def start(target, *args):
    process = SPAWN.Process(target=run_worker, args=args[:1] + (target,) + args[1:])
    process.start()
    return process


def join(*processes, timeout: float = 60) -> None:
    for p in processes:
        p.join(timeout)
        assert p.exitcode == 0, p.exitcode


def overlaps(a: list, b: list) -> int:
    """How many windows of ``a`` share time with some window of ``b``."""
    return sum(any(s < e2 and s2 < e for s2, e2 in b) for s, e in a)


# -- two writers in two processes, writing at the same time ------------------------------------


def _lockstep_writer(root: str, ids: list[int], rows: int, barrier) -> dict:
    store = FeatureStore(root, shard_rows=rows)
    windows = []
    with store.writer(CONFIG) as w:
        for lo in range(0, len(ids), rows):
            chunk = ids[lo:lo + rows]
            barrier.wait(30)  # both processes start each shard together
            began = time.time()
            w.add([digest(i) for i in chunk], vectors_of(chunk))  # a whole shard: written now
            windows.append((began, time.time()))
    return {"writer": w.writer_id, "windows": windows, "shards": w.shards}


def test_two_writer_processes_write_at_the_same_time_and_lose_nothing(tmp_path):
    root = str(tmp_path / "s")
    FeatureStore(root)
    barrier = SPAWN.Barrier(2)
    outs = [tmp_path / "a.json", tmp_path / "b.json"]
    # Racing on the same samples too: 100 to 199 are written by both.
    a = start(_lockstep_writer, outs[0], root, list(range(0, 200)), 20, barrier)
    b = start(_lockstep_writer, outs[1], root, list(range(100, 300)), 20, barrier)
    join(a, b)
    ra, rb = results(*outs)
    assert ra["writer"] != rb["writer"] and len(ra["shards"]) == len(rb["shards"]) == 10
    # They wrote at the same time: windows overlap (both inside one barrier round)...
    assert overlaps(ra["windows"], rb["windows"]) >= 1, (ra["windows"], rb["windows"])
    # ...and their shards interleave on disk: by the time each index records, the writer
    # changes at every step (A0 B0 A1 B1 ... in some order within each step).
    indexes = [json.loads(p.read_text()) for p in
               (Path(root) / "configs").glob("*/shard-*.json")]
    order = [ix["writer"] for ix in sorted(indexes, key=lambda ix: ix["created"])]
    steps = [order[i:i + 2] for i in range(0, 20, 2)]
    assert all(sorted(s) == sorted([ra["writer"], rb["writer"]]) for s in steps), order
    store = FeatureStore(root)
    digests = [digest(i) for i in range(300)]
    found, got = store.get(CONFIG, digests)
    assert found.all() and wrong_rows(digests, found, got) == 0
    assert (store.info()[0].vectors, store.info()[0].duplicates) == (300, 100)
    assert store.prune().duplicates == 100 and store.verify().ok
    found, got = FeatureStore(root).get(CONFIG, digests)
    assert found.all() and wrong_rows(digests, found, got) == 0


# -- compaction in one process, reads in another, a writer in a third ---------------------------


def _writer_with_one_identity(root: str, first: int, per_put: int, seconds: float,
                              barrier) -> dict:
    """Puts until the time is up, every writer drawing the same random token (a collision
    of the token source: the serial number and exclusive shard names must keep both)."""
    import featclf.store._format as fmt

    fmt.secrets = types.SimpleNamespace(token_hex=lambda n: "0" * (2 * n))
    store = FeatureStore(root, shard_rows=per_put)
    barrier.wait(30)
    stop, i = time.time() + seconds, first
    while time.time() < stop:
        put(store, range(i, i + per_put))
        i += per_put
    return {"written": [first, i]}


def _compactor(root: str, shard_rows: int, seconds: float, barrier) -> dict:
    store = FeatureStore(root, shard_rows=shard_rows)
    barrier.wait(30)
    stop, windows, merged = time.time() + seconds, [], 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        while time.time() < stop:
            began = time.time()
            merged += store.prune(compact=True).merged
            windows.append((began, time.time()))
    return {"windows": windows, "merged": merged, "warnings": [str(w.message) for w in caught]}


def _reader(root: str, n: int, seconds: float, barrier) -> dict:
    digests = [digest(i) for i in range(n)]
    barrier.wait(30)
    stop, windows, seen, wrong = time.time() + seconds, [], [], 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        while time.time() < stop:
            began = time.time()
            found, got = FeatureStore(root).get(CONFIG, digests)
            wrong += wrong_rows(digests, found, got)
            windows.append((began, time.time()))
            seen.append(int(found.sum()))
    return {"windows": windows, "seen": seen, "wrong": wrong,
            "warnings": [str(w.message) for w in caught]}


@pytest.mark.slow
def test_compaction_beside_readers_never_returns_another_samples_vector(tmp_path):
    root = str(tmp_path / "s")
    put(FeatureStore(root, shard_rows=4), range(0, 120))  # 30 small shards to compact
    barrier = SPAWN.Barrier(3)
    outs = [tmp_path / f"{name}.json" for name in ("writer", "compactor", "reader")]
    procs = [start(_writer_with_one_identity, outs[0], root, 1000, 4, 3.0, barrier),
             start(_compactor, outs[1], root, 64, 3.0, barrier),
             start(_reader, outs[2], root, 3000, 3.0, barrier)]
    join(*procs)
    writer, compactor, reader = results(*outs)
    # The reader read while compactions ran, and saw vectors come and (merged) stay:
    assert overlaps(reader["windows"], compactor["windows"]) >= 2
    assert compactor["merged"] >= 30 and len(compactor["windows"]) >= 2
    assert reader["wrong"] == 0  # every vector returned was the one put for its digest
    assert reader["warnings"] == [] and compactor["warnings"] == []  # and none was damaged
    assert min(reader["seen"]) >= 120 and max(reader["seen"]) > 120
    # Nothing was lost: every vector the writer put is there, once after a prune.
    first, end = writer["written"]
    ids = [*range(120), *range(first, end)]
    digests = [digest(i) for i in ids]
    store = FeatureStore(root)
    store.prune()
    found, got = store.get(CONFIG, digests)
    assert found.all() and wrong_rows(digests, found, got) == 0
    assert store.info()[0].vectors == len(ids) and store.verify().ok


# -- prune --compact beside a live writer --------------------------------------------------------


def _continuous_writer(root: str, seconds: float, barrier) -> dict:
    store = FeatureStore(root, shard_rows=2)
    barrier.wait(30)
    stop, i = time.time() + seconds, 0
    with store.writer(CONFIG) as w:
        while time.time() < stop:
            w.add([digest(i), digest(i + 1)], vectors_of([i, i + 1]))  # one shard each time
            i += 2
    return {"written": i, "pid": os.getpid(), "writer": w.writer_id}


def test_prune_compact_beside_a_live_writer_never_fails_nor_touches_its_files(tmp_path):
    root = str(tmp_path / "s")
    FeatureStore(root)
    barrier = SPAWN.Barrier(2)
    out = tmp_path / "writer.json"
    writer = start(_continuous_writer, out, root, 2.5, barrier)
    barrier.wait(30)
    reports = []
    while writer.is_alive():
        # stale_seconds=0: "every leftover now"; a live writer's files are not leftovers.
        reports.append(FeatureStore(root, shard_rows=16).prune(compact=True, stale_seconds=0))
    join(writer)
    (result,) = results(out)
    assert len(reports) >= 3 and sum(r.merged for r in reports) > 0
    mine = f"-{result['pid']}-"
    assert [f for r in reports for f in r.temp_files + r.orphans if mine in f] == []
    digests = [digest(i) for i in range(result["written"])]
    store = FeatureStore(root)
    found, got = store.get(CONFIG, digests)
    assert found.all() and wrong_rows(digests, found, got) == 0
    assert store.prune(compact=True).damaged == [] and store.verify().ok
    assert store.info()[0].vectors == result["written"]


# -- kill -9 in the middle of prune --compact --------------------------------------------------


def test_kill_during_prune_compact_leaves_a_usable_store(tmp_path):
    root = tmp_path / "s"
    put(FeatureStore(root, shard_rows=2), range(200))  # 100 small shards
    namespace = next((root / "configs").iterdir())
    before = {p.name for p in namespace.glob("shard-*.json")}
    code = textwrap.dedent(f"""
        from featclf.store import FeatureStore
        FeatureStore({str(root)!r}, shard_rows=64).prune(compact=True)
        print("finished")
    """)
    prune = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
    mark = f"-{prune.pid}-"
    deadline = time.time() + 30
    while time.time() < deadline and prune.poll() is None:
        # Mid-way: it has written a merged shard and begun removing the shards it replaces.
        names = set(os.listdir(namespace))
        if any(mark in name for name in names) and not before <= names:
            break
    prune.send_signal(signal.SIGKILL)  # kill -9 (not sent if it has finished already)
    assert prune.wait() == -signal.SIGKILL and b"finished" not in prune.stdout.read()
    left = {p.name for p in namespace.glob("shard-*.json")}
    assert left & before and left != before  # killed mid-way: old shards stay, some went
    digests = [digest(i) for i in range(200)]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no shard is damaged
        found, got = FeatureStore(root).get(CONFIG, digests)
    assert found.all() and wrong_rows(digests, found, got) == 0
    store = FeatureStore(root, shard_rows=64)
    cleaned = store.prune()  # the dead prune's leftovers go at once
    assert cleaned.damaged == [] and store.verify().ok
    assert not [n for n in os.listdir(namespace) if n.startswith(".tmp-")]
    store.prune(compact=True)  # a second compaction completes
    info = store.info()[0]
    assert (info.vectors, info.duplicates, info.shards) == (200, 0, 4)  # 64 + 64 + 64 + 8
    found, got = FeatureStore(root).get(CONFIG, digests)
    assert found.all() and wrong_rows(digests, found, got) == 0


# -- a read-only store serves reads ------------------------------------------------------------

READ_ONLY_READER = """
import json, sys, warnings
import numpy as np
from featclf.data.inputs import as_image_source
from featclf.extract.cached import cached_features

root, paths, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
from featclf.store import FeatureStore
config = {config!r}

def compute(source):  # files at new paths are read (to learn their digests), never computed
    for batch in source.iter_batches(batch_size=4, preprocess=None, on_error="raise"):
        assert len(batch.indices) == 0, "a stored image reached the network"
    yield from ()

with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    runs = [cached_features(as_image_source(paths), compute, configs={{"penultimate": config}},
                            store=FeatureStore(root), about={{"model": "projection"}})
            for _ in range(2)]
np.save(out, runs[1].features)
print(json.dumps({{"reused": [r.n_reused for r in runs], "computed": [r.n_computed for r in runs],
                  "warnings": [f"{{w.category.__name__}}: {{w.message}}" for w in caught]}}))
"""


def _read_only_command(root: Path) -> list[str] | None:
    """How to run a process that sees ``root`` read-only (None when this host cannot)."""
    if os.geteuid() != 0:
        for path in [root, *root.rglob("*")]:
            path.chmod(0o555 if path.is_dir() else 0o444)
        return []
    # Root ignores permission bits: a read-only bind mount, in a mount namespace of the reader's
    # own (nothing changes for other processes).
    unshare = shutil.which("unshare")
    if unshare is None:
        return None
    mount = f"mount --bind {root} {root} && mount -o remount,bind,ro {root} {root}"
    probe = subprocess.run([unshare, "-m", "sh", "-c", f"{mount} && ! touch {root}/probe"],
                           capture_output=True)
    if probe.returncode != 0:
        return None
    return [unshare, "-m", "sh", "-c", f'{mount} && exec "$0" "$@"']


@pytest.mark.slow  # the reader process imports torch
def test_a_read_only_store_serves_files_from_new_paths(tmp_path, mnist_small):
    # (Imported here: the spawned workers import this module, and these import torch.)
    from imagefile_helpers import write_image
    from test_store import ProjectionCompute

    from featclf.data import image_files
    from featclf.data.inputs import as_image_source
    from featclf.extract.cached import cached_features

    images = tmp_path / "images"
    for i, img in enumerate(mnist_small[0][:12]):
        write_image(images / f"{i % 10}_{i:04d}.png", img)
    root = tmp_path / "s"
    files = image_files(images)
    first = cached_features(as_image_source(files), ProjectionCompute(),
                            configs={"penultimate": CONFIG}, store=FeatureStore(root))
    assert first.n_computed == 12
    moved = tmp_path / "moved"  # the same images under new paths
    shutil.copytree(images, moved)
    paths = sorted(str(p) for p in moved.iterdir())
    listing = sorted((p.relative_to(root), p.stat().st_size) for p in root.rglob("*"))
    prefix = _read_only_command(root)
    if prefix is None:
        pytest.skip("running as root, and no mount namespace for a read-only bind mount here "
                    "(root ignores permission bits)")
    try:
        code = READ_ONLY_READER.format(config=CONFIG)
        done = subprocess.run([*prefix, sys.executable, "-c", code, str(root),
                               json.dumps(paths), str(tmp_path / "features.npy")],
                              capture_output=True, text=True)
    finally:
        for path in [root, *root.rglob("*")]:
            path.chmod(path.stat().st_mode | stat.S_IWUSR)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["reused"] == [12, 12] and report["computed"] == [0, 0]
    # One warning in all (not one per call), naming the store and what was not recorded:
    (warning,) = report["warnings"]
    assert warning.startswith("StoreNotWritableWarning") and str(root) in warning
    assert "new paths" in warning
    order = np.argsort([Path(p).name for p in files.paths])
    np.testing.assert_array_equal(np.load(tmp_path / "features.npy"),
                                  first.features[order])
    assert sorted((p.relative_to(root), p.stat().st_size) for p in root.rglob("*")) == listing
