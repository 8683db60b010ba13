"""FeatureStore and cached_features: keys, shards, crash leftovers, integrity, pruning, export.

The network is stood in for by a fixed random projection of the pixels (a real, deterministic
computation on real images), so these tests exercise the store alone; the extractor-level and
command-line behaviour is in test_extract_job.py.
"""

from __future__ import annotations

import ast
import json
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from imagefile_helpers import write_image

from featclf.data import image_files
from featclf.data.inputs import as_image_source
from featclf.extract.cached import cached_features
from featclf.params import InvalidParameterError
from featclf.store import FeatureStore, StoreError
from featclf.store._format import host, new_writer_id

CONFIG = {"model": "projection", "layer": None, "pooling": "avg", "version": 1}


class ProjectionCompute:
    """``compute`` for cached_features: pixels @ a fixed matrix, counting what it is asked for.

    It yields one block, ``"penultimate"``; ``blocks`` adds ``"twice"`` (the same vectors x 2)
    for the multi-block tests.
    """

    def __init__(self, dim: int = 8, batch_size: int = 16, on_error: str = "skip",
                 blocks: tuple[str, ...] = ("penultimate",)) -> None:
        self.dim, self.batch_size, self.on_error = dim, batch_size, on_error
        self.blocks = blocks
        self.calls: list[int] = []  # sizes of the sources it was called on
        self.rows = 0  # images that reached the "network" (vectors computed)

    def vectors(self, images) -> np.ndarray:
        if len(images) == 0:  # a batch whose every file failed
            return np.empty((0, self.dim), np.float32)
        flat = images.reshape(len(images), -1).float().numpy() / 255.0
        weights = np.random.default_rng(0).standard_normal((flat.shape[1], self.dim))
        return (flat @ weights).astype(np.float32)

    def __call__(self, source):
        self.calls.append(len(source))
        for batch in source.iter_batches(batch_size=self.batch_size, preprocess=None,
                                         on_error=self.on_error):
            vectors = self.vectors(batch.images)
            self.rows += len(vectors)
            yield batch.indices, {b: vectors * (i + 1) for i, b in enumerate(self.blocks)}, \
                batch.errors


def cached(store, source, *, config: dict, compute, **kwargs):
    """One block cached under ``config``: cached_features as the store's tests use it."""
    return cached_features(source, compute, configs={"penultimate": config}, store=store,
                           **kwargs)


@pytest.fixture
def digits(mnist_small):
    return mnist_small[0][:100]


@pytest.fixture
def png_dir(tmp_path, digits):
    folder = tmp_path / "images"
    for i, img in enumerate(digits[:30]):
        write_image(folder / f"{i % 10}_{i:04d}.png", img)
    return folder


def shard_files(store: FeatureStore, suffix: str = ".npy") -> list[Path]:
    return sorted((store.root / "configs").glob(f"*/shard-*{suffix}"))


def test_vectors_round_trip_in_any_order(tmp_path, rng):
    store = FeatureStore(tmp_path / "s", shard_rows=7)
    vectors = rng.standard_normal((50, 5)).astype(np.float32)
    digests = [f"d{i}" for i in range(50)]
    store.put(CONFIG, digests, vectors)
    assert len(shard_files(store)) == 8  # ceil(50 / 7)
    order = rng.permutation(50)
    found, got = FeatureStore(tmp_path / "s").get(CONFIG, [digests[i] for i in order])
    assert found.all()
    np.testing.assert_array_equal(got, vectors[order])


def test_float16_store_returns_float32_close_to_the_input(tmp_path, rng):
    store = FeatureStore(tmp_path / "s", dtype="float16")
    vectors = rng.standard_normal((10, 4)).astype(np.float32)
    store.put(CONFIG, list("abcdefghij"), vectors)
    found, got = store.get(CONFIG, list("jihgfedcba"))
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, vectors[::-1], rtol=1e-3, atol=1e-3)
    assert np.load(shard_files(store)[0]).dtype == np.float16


def test_reopening_with_another_dtype_is_refused(tmp_path):
    FeatureStore(tmp_path / "s", dtype="float16")
    assert FeatureStore(tmp_path / "s").dtype == "float16"
    with pytest.raises(StoreError, match="stores float16 vectors"):
        FeatureStore(tmp_path / "s", dtype="float32")


def test_a_foreign_non_empty_directory_is_not_turned_into_a_store(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(StoreError, match="non-empty directory that is not a feature store"):
        FeatureStore(tmp_path)
    with pytest.raises(FileNotFoundError, match="not a feature store"):
        FeatureStore(tmp_path / "missing", create=False)
    # Another process creating the same store, caught between its mkdir and its rename:
    racing = tmp_path / "racing"
    racing.mkdir()
    (racing / f".tmp-{new_writer_id()}-featclf-store.json").write_text("{")
    assert FeatureStore(racing).dtype == "float32"


def test_second_extraction_computes_nothing_and_never_calls_compute(tmp_path, digits):
    store = FeatureStore(tmp_path / "s")
    source = as_image_source(digits)
    compute = ProjectionCompute()
    first = cached(store, source, config=CONFIG, compute=compute)
    again = cached(FeatureStore(tmp_path / "s"), source, config=CONFIG, compute=compute)
    assert (first.n_computed, first.n_reused) == (100, 0)
    assert (again.n_computed, again.n_reused) == (0, 100)
    assert compute.calls == [100]  # the second call did not touch the "network"
    np.testing.assert_array_equal(again.features, first.features)
    np.testing.assert_array_equal(again.indices, np.arange(100))
    np.testing.assert_allclose(first.features, compute.vectors(source.images), rtol=1e-6)


def test_only_the_missing_inputs_are_computed(tmp_path, digits):
    store = FeatureStore(tmp_path / "s")
    compute = ProjectionCompute()
    cached(store, as_image_source(digits[20:60]), config=CONFIG, compute=compute)
    result = cached(store, as_image_source(digits), config=CONFIG, compute=compute)
    assert compute.calls == [40, 60]
    assert (result.n_computed, result.n_reused) == (60, 40)
    np.testing.assert_allclose(result.features,
                               compute.vectors(as_image_source(digits).images), rtol=1e-6)


def test_changing_the_configuration_misses(tmp_path, digits):
    store = FeatureStore(tmp_path / "s")
    source = as_image_source(digits[:10])
    cached(store, source, config=CONFIG, compute=ProjectionCompute())
    for change in ({"layer": "c5"}, {"pooling": "max"}, {"model": "other"}):
        result = cached(store, source, config={**CONFIG, **change},
                                compute=ProjectionCompute())
        assert result.n_reused == 0, change
    assert len(store.configs()) == 4


def test_duplicate_images_in_one_input_are_stored_once(tmp_path, digits):
    store = FeatureStore(tmp_path / "s")
    images = np.concatenate([digits[:5], digits[:5]])
    result = cached(store, as_image_source(images), config=CONFIG,
                            compute=ProjectionCompute())
    np.testing.assert_array_equal(result.features[:5], result.features[5:])
    assert store.info()[0].vectors == 5 and store.info()[0].duplicates == 0


def test_renamed_file_hits_and_export_shows_its_new_path(tmp_path, png_dir):
    store = FeatureStore(tmp_path / "s")
    files = image_files(png_dir)
    first = cached(store, as_image_source(files), config=CONFIG,
                           compute=ProjectionCompute(), labels=files.labels)
    moved = tmp_path / "moved" / "renamed.png"
    moved.parent.mkdir()
    shutil.move(files.paths[3], moved)
    paths = [*files.paths[:3], str(moved), *files.paths[4:]]
    compute = ProjectionCompute()
    again = cached(store, as_image_source(paths), config=CONFIG, compute=compute)
    # The moved file is read (its path is new to the stat record) but never reaches the network.
    assert (again.n_computed, again.n_reused) == (0, 30) and compute.rows == 0
    np.testing.assert_array_equal(again.features, first.features)
    with np.load(store.export(tmp_path / "out.npz")) as npz:
        where = dict(zip(npz["digests"].tolist(), npz["paths"].tolist()))
        labels = dict(zip(npz["paths"].tolist(), npz["labels"].tolist()))
    assert where[first.digests[3]] == str(moved)
    assert labels[str(moved)] == int(files.labels[3])  # the label survives the move


def test_unreadable_files_are_reported_and_not_cached(tmp_path, png_dir):
    broken = png_dir / "9_broken.png"
    broken.write_bytes(b"\x89PNG not really")
    paths = [*image_files(png_dir).paths, str(tmp_path / "missing.png")]
    store = FeatureStore(tmp_path / "s")
    result = cached(store, as_image_source(paths), config=CONFIG,
                            compute=ProjectionCompute(on_error="skip"), on_error="skip")
    assert sorted(e.source for e in result.errors) == sorted([str(broken), paths[-1]])
    assert len(result.features) == len(paths) - 2 == result.n_computed
    assert {int(e.index) for e in result.errors} == {paths.index(str(broken)), len(paths) - 1}
    assert not set(result.indices) & {e.index for e in result.errors}
    again = cached(store, as_image_source(paths), config=CONFIG,
                           compute=ProjectionCompute(on_error="skip"), on_error="skip")
    assert again.n_reused == len(paths) - 2 and again.n_computed == 0
    assert len(again.errors) == 2


def test_raise_on_error_keeps_the_shards_already_written(tmp_path, png_dir):
    paths = image_files(png_dir).paths
    (png_dir / "bad.png").write_bytes(b"junk")
    store = FeatureStore(tmp_path / "s", shard_rows=8)
    with pytest.raises(ValueError, match="bad.png"):
        cached(store, as_image_source([*paths, str(png_dir / "bad.png")]),
                       config=CONFIG, compute=ProjectionCompute(batch_size=8, on_error="skip"),
                       on_error="raise")
    # Every readable image is stored: the three batches before the bad one, and the readable
    # images of its own batch.
    assert store.info()[0].vectors == 30
    result = cached(store, as_image_source(paths), config=CONFIG,
                            compute=ProjectionCompute())
    assert (result.n_reused, result.n_computed) == (30, 0)


def test_flipped_bytes_are_named_by_verify_and_never_returned(tmp_path, digits):
    store = FeatureStore(tmp_path / "s", shard_rows=25)
    source = as_image_source(digits)
    first = cached(store, source, config=CONFIG, compute=ProjectionCompute())
    truth, digests = first.features, first.digests
    assert store.get(CONFIG, digests)[0].all()  # every shard read (and checked) once here
    time.sleep(0.02)  # file times tick coarsely: let the damage get a new mtime
    victim = shard_files(store)[1]
    data = bytearray(victim.read_bytes())
    data[-40:-20] = bytes(b ^ 0xFF for b in data[-40:-20])
    victim.write_bytes(bytes(data))
    report = store.verify()
    assert not report.ok and [p for p, _ in report.problems] == [
        str(victim.relative_to(store.root))]
    # This process checked the shard before it was damaged: it notices the change.
    with pytest.warns(UserWarning, match=victim.stem):
        found, got = store.get(CONFIG, digests)
    assert found.sum() == 75
    np.testing.assert_array_equal(got, truth[found])
    compute = ProjectionCompute()  # the damaged vectors are recomputed, the rest read
    result = cached(FeatureStore(store.root), source, config=CONFIG, compute=compute)
    assert compute.calls == [25] and result.n_reused == 75
    np.testing.assert_array_equal(result.features, truth)
    pruned = store.prune()
    assert len(pruned.damaged) == 1 and store.verify().ok
    assert store.info()[0].vectors == 100 and store.info()[0].duplicates == 0
    np.testing.assert_array_equal(FeatureStore(store.root).get(CONFIG, digests)[1], truth)


def test_truncated_shard_counts_as_missing(tmp_path, rng):
    store = FeatureStore(tmp_path / "s")
    store.put(CONFIG, ["a", "b"], rng.standard_normal((2, 3)))
    path = shard_files(store)[0]
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.warns(UserWarning, match="bytes, its index says"):
        found, got = store.get(CONFIG, ["a", "b"])
    assert not found.any() and got.shape == (0, 3)
    assert "bytes, its index says" in store.verify().problems[0][1]


def _dead_writer_name() -> str:
    """A writer id of a process that has exited (its pid is free)."""
    pid = subprocess.run([sys.executable, "-S", "-c", "import os; print(os.getpid())"],
                         capture_output=True, text=True, check=True).stdout.strip()
    return f"{host()}-{pid}-abc123"


def test_crash_leftovers_are_invisible_and_pruned(tmp_path, rng):
    store = FeatureStore(tmp_path / "s")
    store.put(CONFIG, ["a"], rng.standard_normal((1, 3)))
    ns = shard_files(store)[0].parent
    dead = _dead_writer_name()
    # killed between the shard's rename and its index's: a .npy without index
    np.save(ns / f"shard-{dead}-000000.npy", np.ones((1, 3), np.float32))
    # killed while writing: a temporary file
    (ns / f".tmp-{dead}-shard-{dead}-000001.npy").write_bytes(b"half")
    live = f".tmp-{new_writer_id()}-shard-in-flight.npy"  # a writer that is running (us)
    (ns / live).write_bytes(b"being written")
    assert store.get(CONFIG, ["a"])[0].all() and store.verify().ok
    report = store.prune()
    assert len(report.orphans) == 1 and len(report.temp_files) == 1
    assert (ns / live).exists()  # a live writer's file is left alone
    assert sorted(p.name for p in ns.iterdir() if not p.name.startswith(".")) == sorted(
        ["config.json", shard_files(store)[0].name, shard_files(store, ".json")[0].name,
         shard_files(store, ".keys")[0].name, "shards.keys"])


def test_duplicates_from_racing_writers_are_pruned(tmp_path, rng):
    store = FeatureStore(tmp_path / "s", shard_rows=10)
    vectors = rng.standard_normal((30, 4)).astype(np.float32)
    digests = [f"d{i}" for i in range(30)]
    with store.writer(CONFIG) as a, store.writer(CONFIG) as b:
        a.add(digests[:20], vectors[:20])
        b.add(digests[10:], vectors[10:])
    assert store.info()[0].duplicates == 10
    reader = FeatureStore(store.root)
    np.testing.assert_array_equal(reader.get(CONFIG, digests)[1], vectors)
    report = store.prune()
    assert report.duplicates == 10
    info = store.info()[0]
    assert (info.vectors, info.duplicates) == (30, 0) and store.verify().ok
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the reader follows the rewrite, it sees no damage
        found, got = reader.get(CONFIG, digests)
    np.testing.assert_array_equal(got, vectors)


def test_compacting_merges_small_shards_and_keeps_every_vector(tmp_path, rng):
    small = FeatureStore(tmp_path / "s", shard_rows=3)
    vectors = rng.standard_normal((40, 4)).astype(np.float32)
    digests = [f"d{i}" for i in range(40)]
    small.put(CONFIG, digests, vectors, labels=list(range(40)))
    small.put(CONFIG, digests[:5], vectors[:5])  # and some duplicates
    assert len(shard_files(small)) == 16
    report = FeatureStore(tmp_path / "s", shard_rows=16).prune(compact=True)
    assert (report.merged, report.duplicates) == (16, 5)
    assert sorted(np.load(p).shape[0] for p in shard_files(small)) == [8, 16, 16]
    digests_out, _, labels, got = small.entries(CONFIG)
    order = np.argsort([int(d[1:]) for d in digests_out])
    np.testing.assert_array_equal(got[order], vectors)
    assert [labels[i] for i in order] == list(range(40)) and small.verify().ok


def test_prune_removes_a_configuration(tmp_path, rng):
    store = FeatureStore(tmp_path / "s")
    store.put(CONFIG, ["a"], rng.standard_normal((1, 3)))
    store.put({**CONFIG, "layer": "c3"}, ["a"], rng.standard_normal((1, 6)))
    key = store.config_key(CONFIG)
    report = store.prune(configs=[key[:8]])
    assert report.configs == [key] and store.configs() == [store.config_key({**CONFIG,
                                                                            "layer": "c3"})]
    assert not store.get(CONFIG, ["a"])[0].any()


def test_export_parquet_carries_paths_labels_and_config(tmp_path, png_dir):
    store = FeatureStore(tmp_path / "s")
    files = image_files(png_dir)
    result = cached(store, as_image_source(files), config=CONFIG,
                            compute=ProjectionCompute(), labels=files.labels)
    table = pq.read_table(store.export(tmp_path / "out.parquet"))
    assert table.num_rows == 30
    assert json.loads(table.schema.metadata[b"featclf_config"]) == CONFIG
    rows = {r["path"]: r for r in table.to_pylist()}
    for i, path in enumerate(files.paths):
        assert rows[path]["label"] == int(files.labels[i])
        np.testing.assert_array_equal(rows[path]["vector"], result.features[i])


def test_writer_flushes_after_flush_seconds(tmp_path, rng):
    store = FeatureStore(tmp_path / "s", shard_rows=1000, flush_seconds=1e-9)
    with store.writer(CONFIG) as w:
        w.add(["a"], rng.standard_normal((1, 3)))
        assert len(shard_files(store)) == 1  # written without waiting for 1000 rows
        w.add(["b"], rng.standard_normal((1, 3)))
    assert len(shard_files(store)) == 2


def test_store_pickles_settings_not_caches(tmp_path, rng):
    store = FeatureStore(tmp_path / "s", shard_rows=3)
    store.put(CONFIG, ["a"], rng.standard_normal((1, 3)))
    store.get(CONFIG, ["a"])
    clone = pickle.loads(pickle.dumps(store))
    assert vars(clone) == vars(store) and clone.get(CONFIG, ["a"])[0].all()


def test_reader_sees_shards_written_after_it_opened(tmp_path, rng):
    reader = FeatureStore(tmp_path / "s")
    assert not reader.get(CONFIG, ["a"])[0].any()
    FeatureStore(tmp_path / "s").put(CONFIG, ["a"], rng.standard_normal((1, 3)))
    assert reader.get(CONFIG, ["a"])[0].all()


def test_index_files_are_written_after_their_shards(tmp_path, rng):
    store = FeatureStore(tmp_path / "s", shard_rows=1)
    store.put(CONFIG, ["a", "b", "c"], rng.standard_normal((3, 3)))
    for index in shard_files(store, ".json"):
        assert os.stat(index).st_mtime_ns >= os.stat(index.with_suffix(".npy")).st_mtime_ns
        assert json.loads(index.read_text())["xxh3"]


@settings(max_examples=25, deadline=None)
@given(st.lists(st.lists(st.integers(0, 19), min_size=1, max_size=15), min_size=1, max_size=4),
       st.integers(1, 6))
def test_any_sequence_of_writers_gives_every_vector_once_after_prune(tmp_path_factory, batches,
                                                                     shard_rows):
    root = tmp_path_factory.mktemp("h") / "s"
    store = FeatureStore(root, shard_rows=shard_rows)
    table = np.arange(20 * 3, dtype=np.float32).reshape(20, 3)
    for ids in batches:
        with store.writer(CONFIG) as w:
            w.add([f"d{i}" for i in ids], table[ids])
    written = sorted({i for ids in batches for i in ids})
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        store.prune()
        found, got = store.get(CONFIG, [f"d{i}" for i in range(20)])
    assert np.flatnonzero(found).tolist() == written
    np.testing.assert_array_equal(got, table[written])
    info = store.info()[0]
    assert (info.vectors, info.duplicates) == (len(written), 0)


def test_readers_started_after_the_first_write_see_partial_and_correct_results(tmp_path):
    table = np.arange(400 * 6, dtype=np.float32).reshape(400, 6)
    digests = [f"{i:032x}" for i in range(400)]
    store = FeatureStore(tmp_path / "s", shard_rows=10)
    store.put(CONFIG, digests[:40], table[:40])  # the first write, before any reader starts
    steps = 10
    barrier = threading.Barrier(5)  # the writer and four readers meet after every put
    seen: list[list[int]] = [[] for _ in range(4)]
    errors: list[str] = []

    def read(me: int) -> None:
        reader = FeatureStore(tmp_path / "s")
        for _ in range(steps - 1):
            barrier.wait(30)  # the writer has finished a put; the next one starts now
            # Read while the next put arrives: reads must be correct whatever they find.
            found, got = reader.get(CONFIG, digests[::-1])
            if not np.array_equal(got, table[::-1][found]):
                errors.append(f"reader {me}: a wrong vector")
            seen[me].append(int(found.sum()))

    threads = [threading.Thread(target=read, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for k in range(1, steps):
        barrier.wait(30)
        store.put(CONFIG, digests[40 * k:40 * k + 40], table[40 * k:40 * k + 40])
    for t in threads:
        t.join()
    assert errors == []
    for counts in seen:
        # After put k, a reader sees at least everything put so far, at most the next put too:
        # partial results (some but not all vectors), growing as the shards arrive.
        assert all(40 * k <= c <= 40 * (k + 1) for k, c in enumerate(counts, start=1)), counts
        assert counts == sorted(counts) and 0 < counts[0] < 400
    assert store.get(CONFIG, digests)[0].all()


# -- writer identities: one process, many writers ---------------------------------------------


def _forced_identity(monkeypatch, module: str) -> str:
    """Make every writer of ``module`` draw one and the same writer id."""
    import featclf.store._writer
    import featclf.store.maintenance

    same = f"{host()}-{os.getpid()}-abc123"
    modules = {"writer": featclf.store._writer, "maintenance": featclf.store.maintenance}
    monkeypatch.setattr(modules[module], "new_writer_id", lambda: same)
    return same


def test_writers_with_the_same_identity_never_replace_each_others_shards(tmp_path,
                                                                        monkeypatch):
    same = _forced_identity(monkeypatch, "writer")
    table = np.arange(60 * 3, dtype=np.float32).reshape(60, 3)
    digests = [f"{i:032x}" for i in range(60)]
    store = FeatureStore(tmp_path / "s", shard_rows=10)
    with store.writer(CONFIG) as a, store.writer(CONFIG) as b:
        assert a.writer_id == b.writer_id == same
        a.add(digests[:20], table[:20])
        b.add(digests[20:40], table[20:40])  # its first shard has a's first shard's name
    store.put(CONFIG, digests[40:], table[40:])  # and a third writer, later
    assert len(shard_files(store)) == 6 and all(same in p.name for p in shard_files(store))
    found, got = FeatureStore(store.root).get(CONFIG, digests)
    assert found.all()
    np.testing.assert_array_equal(got, table)
    # A compaction drawing that id too (its merged shards take free names only):
    _forced_identity(monkeypatch, "maintenance")
    report = FeatureStore(store.root, shard_rows=60).prune(compact=True)
    assert report.merged == 6 and len(shard_files(store)) == 1
    found, got = FeatureStore(store.root).get(CONFIG, digests)
    assert found.all() and store.verify().ok
    np.testing.assert_array_equal(got, table)


def test_many_writers_in_threads_drawing_equal_tokens_keep_every_vector(tmp_path, monkeypatch):
    import types

    import featclf.store._format

    # The random token source repeats (the 24-bit tokens once did, about every 4,000 draws):
    # the pid and a serial number must still tell the writers of one process apart.
    monkeypatch.setattr(featclf.store._format, "secrets",
                        types.SimpleNamespace(token_hex=lambda n: "0" * (2 * n)))
    n_threads, puts, rows = 6, 25, 2
    total = n_threads * puts * rows
    table = np.arange(total * 3, dtype=np.float32).reshape(total, 3)
    digests = [f"{i:032x}" for i in range(total)]
    store = FeatureStore(tmp_path / "s")
    barrier = threading.Barrier(n_threads)
    failures: list[BaseException] = []

    def write(me: int) -> None:
        barrier.wait(30)  # every thread puts at the same time
        try:
            for p in range(puts):
                lo = (me * puts + p) * rows
                store.put(CONFIG, digests[lo:lo + rows], table[lo:lo + rows])
        except BaseException as exc:  # noqa: BLE001 - reported below
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(i,)) for i in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []
    writers = {json.loads(p.read_text())["writer"] for p in shard_files(store, ".json")}
    assert len(writers) == n_threads * puts  # one id per writer, no two alike
    found, got = FeatureStore(store.root).get(CONFIG, digests)
    assert int(found.sum()) == total
    np.testing.assert_array_equal(got, table)
    info = store.info()[0]
    assert (info.vectors, info.duplicates, info.shards) == (total, 0, n_threads * puts)
    assert store.verify().ok


PACKAGE = Path(__file__).resolve().parents[1] / "featclf"
NOT_IN_THE_STORE = ("torch", "featclf.data", "featclf.extract", "featclf.models")


def test_store_imports_neither_torch_nor_the_image_layer():
    # Its own imports, wherever they sit (module level or inside a function):
    for module in sorted((PACKAGE / "store").glob("*.py")):
        for node in ast.walk(ast.parse(module.read_text())):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                names = [node.module or ""]
            else:
                continue
            assert not [n for n in names if n == "torch" or n.startswith(NOT_IN_THE_STORE)], \
                (module.name, names)
    # What importing and using it loads, in a fresh interpreter: a put and a get (which hash
    # the configuration into its key) load neither torch nor the image layer, nor scikit-learn
    # (its parameter checks load only for a bad parameter), so `featclf store ...` starts fast.
    code = textwrap.dedent(f"""
        import sys, tempfile
        import numpy as np
        import featclf.store
        store = featclf.store.FeatureStore(tempfile.mkdtemp())
        store.put({{"layer": "c5"}}, ["d0"], np.ones((1, 3)))
        assert store.get({{"layer": "c5"}}, ["d0"])[0].all()
        store.info(), store.verify(), store.prune(compact=True)
        print(sorted(m for m in sys.modules if m in ("torch", "sklearn") or m.startswith((
            "torch.", "sklearn.", *{NOT_IN_THE_STORE[1:]!r}))))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.strip()
    assert out == "[]"


def test_several_blocks_are_reused_only_when_every_block_is_stored(tmp_path, digits):
    store = FeatureStore(tmp_path / "s")
    source = as_image_source(digits[:40])
    configs = {"penultimate": CONFIG, "twice": {**CONFIG, "layer": "twice"}}
    compute = ProjectionCompute(blocks=("penultimate", "twice"))
    first = cached_features(source, compute, configs=configs, store=store)
    assert first.blocks == {"penultimate": slice(0, 8), "twice": slice(8, 16)}
    np.testing.assert_allclose(first.block("twice"), 2 * first.block("penultimate"))
    assert len(store.configs()) == 2  # each block under its own configuration
    # One block alone is found in its own namespace:
    alone = cached(store, source, config=CONFIG, compute=ProjectionCompute())
    assert (alone.n_computed, alone.n_reused) == (0, 40)
    np.testing.assert_array_equal(alone.features, first.block("penultimate"))
    # Blocks in another order: the same vectors, the columns in the configs' order.
    swapped = cached_features(source, compute, configs=dict(reversed(configs.items())),
                              store=store)
    assert compute.calls == [40] and swapped.n_reused == 40
    np.testing.assert_array_equal(swapped.block("twice"), first.block("twice"))
    assert swapped.blocks == {"twice": slice(0, 8), "penultimate": slice(8, 16)}
    # A third block stored for half the images: the other half is computed (every block).
    third = {**CONFIG, "layer": "thrice"}
    compute3 = ProjectionCompute(blocks=("penultimate", "twice", "thrice"))
    cached_features(as_image_source(digits[:20]), ProjectionCompute(blocks=("thrice",)),
                    configs={"thrice": third}, store=store)
    mixed = cached_features(source, compute3, configs={**configs, "thrice": third}, store=store)
    assert (mixed.n_computed, mixed.n_reused) == (20, 20) and compute3.calls == [20]
    np.testing.assert_allclose(mixed.features[:, :16], first.features, rtol=1e-6)
    np.testing.assert_allclose(mixed.block("thrice")[:20], first.block("penultimate")[:20])
    np.testing.assert_allclose(mixed.block("thrice")[20:], 3 * first.block("penultimate")[20:],
                               rtol=1e-6)


def test_without_a_store_every_vector_is_computed_and_nothing_is_written(tmp_path, digits):
    source = as_image_source(digits[:30])
    compute = ProjectionCompute(blocks=("penultimate", "twice"))
    result = cached_features(source, compute, configs={"penultimate": CONFIG, "twice": {}})
    assert (result.n_computed, result.n_reused, result.digests) == (30, 0, [])
    np.testing.assert_allclose(result.block("penultimate"), compute.vectors(source.images),
                               rtol=1e-6)
    assert result.indices.tolist() == list(range(30)) and compute.calls == [30]
    broken = [tmp_path / "a.png", tmp_path / "b.png"]
    for path in broken:
        path.write_bytes(b"not an image")
    empty = cached_features(as_image_source([str(p) for p in broken]), compute,
                            configs={"penultimate": CONFIG, "twice": {}}, on_error="skip",
                            widths={"penultimate": 8, "twice": 8})
    assert empty.features.shape == (0, 16) and empty.blocks["twice"] == slice(8, 16)
    assert [e.index for e in empty.errors] == [0, 1] and empty.n_images == 2


def test_invalid_parameters_get_scikit_learns_wording(tmp_path, digits):
    with pytest.raises(InvalidParameterError, match="The 'on_error' parameter of "
                       "cached_features must be a str among"):
        cached(None, as_image_source(digits[:2]), config=CONFIG, compute=ProjectionCompute(),
               on_error="ignore")
    with pytest.raises(InvalidParameterError, match="The 'dtype' parameter of FeatureStore "
                       "must be a str among"):
        FeatureStore(tmp_path / "s", dtype="float64")
    with pytest.raises(InvalidParameterError, match="The 'shard_rows' parameter of "
                       r"FeatureStore must be an int in the range \[1, inf\)"):
        FeatureStore(tmp_path / "s", shard_rows=0)


# -- the about sidecar: words that describe a configuration, outside its key -------------------


def test_about_describes_a_configuration_in_words_without_changing_its_key(tmp_path, rng,
                                                                           capsys):
    from featclf.cli import main

    store = FeatureStore(tmp_path / "s")
    key = store.config_key(CONFIG)
    assert store.about(CONFIG) == {}  # nothing recorded yet (and no namespace)
    store.annotate(CONFIG, {"model": "resnet18", "weights": "random weights (seed 0)"})
    store.put(CONFIG, ["a", "b"], rng.standard_normal((2, 3)))
    store.annotate(CONFIG, {"layer": "penultimate", "weights": "random weights (seed 1)"})
    assert store.config_key(CONFIG) == key and store.configs() == [key]
    assert store.config(key) == CONFIG  # the configuration itself is untouched
    assert store.about(key) == store.about(CONFIG) == {
        "model": "resnet18", "weights": "random weights (seed 1)", "layer": "penultimate"}
    assert store.get(CONFIG, ["a", "b"])[0].all()
    (info,) = store.info()
    assert info.about["model"] == "resnet18" and info.vectors == 2
    assert main(["store", "info", str(store.root)]) == 0
    header, row = capsys.readouterr().out.splitlines()[1:3]
    assert header.split() == ["KEY", "MODEL", "LAYER", "VECTORS", "SHARDS", "SIZE", "WEIGHTS"]
    assert row.split()[:6] == [key[:12], "resnet18", "penultimate", "2", "vectors", "x"]
    assert row.endswith("random weights (seed 1)")
    assert main(["store", "info", "--json", str(store.root)]) == 0
    (listed,) = json.loads(capsys.readouterr().out)["configs"]
    assert listed["about"]["weights"] == "random weights (seed 1)" and listed["key"] == key
    # A store written before the sidecar existed reads as before, with nothing to say:
    (store.root / "configs" / key / "about.json").unlink()
    assert store.about(CONFIG) == {} and store.info()[0].about == {}
    assert store.get(CONFIG, ["a", "b"])[0].all() and store.verify().ok
    assert main(["store", "info", str(store.root)]) == 0
    assert capsys.readouterr().out.splitlines()[2].split()[1] == "-"
    assert store.prune().damaged == [] and store.get(CONFIG, ["a", "b"])[0].all()


# -- export refuses what it cannot write whole -------------------------------------------------


def test_export_of_an_empty_configuration_is_a_clear_error(tmp_path, rng, capsys):
    from featclf.cli import main

    store = FeatureStore(tmp_path / "s")
    with store.writer(CONFIG):
        pass  # a configuration whose job stored nothing (every image unreadable, say)
    key = store.config_key(CONFIG)
    assert store.configs() == [key] and store.info()[0].vectors == 0
    for out in (tmp_path / "e.parquet", tmp_path / "e.npz"):
        with pytest.raises(StoreError, match=f"configuration {key} of .* holds no vectors"):
            store.export(out)
        assert not out.exists()
    assert main(["store", "export", str(store.root), str(tmp_path / "e.parquet")]) == 1
    err = capsys.readouterr().err
    assert "holds no vectors: nothing to export" in err and "Traceback" not in err
    with pytest.raises(StoreError, match="holds no configuration"):
        store.export(tmp_path / "x.npz", config={"model": "never stored"})
    # Two configurations and no --config: which one is a usage error, naming the flag.
    store.put({**CONFIG, "layer": "c5"}, ["a"], rng.standard_normal((1, 3)))
    assert main(["store", "export", str(store.root), str(tmp_path / "e.npz")]) == 2
    assert "argument --config: The 'config' parameter" in capsys.readouterr().err


def test_export_of_a_damaged_store_names_the_shard_and_writes_nothing(tmp_path, rng, capsys):
    from featclf.cli import main

    store = FeatureStore(tmp_path / "s", shard_rows=10)
    vectors = rng.standard_normal((30, 4)).astype(np.float32)
    store.put(CONFIG, [f"d{i}" for i in range(30)], vectors)
    victim = shard_files(store)[1]
    data = bytearray(victim.read_bytes())
    data[-8:] = bytes(b ^ 0xFF for b in data[-8:])
    victim.write_bytes(bytes(data))
    out = tmp_path / "f.parquet"
    with pytest.raises(StoreError, match=rf"{victim.name}: checksum mismatch \(10 vectors"):
        FeatureStore(store.root).export(out)
    assert main(["store", "export", str(store.root), str(out)]) == 1
    err = capsys.readouterr().err
    assert str(victim) in err and "featclf store prune" in err and not out.exists()
    # A copy of the damaged shard's vectors elsewhere makes the export whole again:
    store.put(CONFIG, [f"d{i}" for i in range(10, 20)], vectors[10:20])
    table = pq.read_table(FeatureStore(store.root).export(out))
    assert sorted(table.column("digest").to_pylist()) == sorted(f"d{i}" for i in range(30))
    # An index that cannot be read hides vectors nobody can count: an error naming it too.
    other = FeatureStore(tmp_path / "t")
    other.put(CONFIG, ["a", "b"], vectors[:2])
    index = shard_files(other, ".json")[0]
    index.write_text(index.read_text()[:-20])
    with pytest.warns(UserWarning, match="unreadable shard index"):
        with pytest.raises(StoreError, match=rf"{index.name}: unreadable index"):
            FeatureStore(other.root).export(tmp_path / "g.npz")
    assert not (tmp_path / "g.npz").exists()
