"""The store's hit path: a rerun recognised by its digests' text hash, read shard by shard.

A rerun asks for the stored digests in the stored order (:func:`featclf.store._read.
stored_prefix`): its vectors are read straight into their rows without converting a digest
to a key, and ``stale_samples`` compares paths and labels by hash, reading no JSON index. These
tests check that both paths give exactly what the general path gives, that a damaged or
rewritten shard is still caught on the fast path, and that older key indexes are still read.
Tests taking ``read_path`` run twice: a small rerun, checked and then read in this thread, and
a big one, read by reader threads while this thread checks it (forced here for small data).
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import pytest
import xxhash
from store_helpers import as_in_a_new_process, digests_of

from featclf.store import FeatureStore, _format, _keys, _nskeys, _read

CONFIG = {"model": "hit-test", "layer": None, "pooling": "avg"}


def filled(tmp_path: Path, n: int = 50, dim: int = 6, shard_rows: int = 8, **extra
           ) -> tuple[FeatureStore, list[str], np.ndarray]:
    matrix = np.random.default_rng(n).standard_normal((n, dim)).astype(np.float32)
    store = FeatureStore(tmp_path / "s", shard_rows=shard_rows)
    digests = digests_of(n)
    store.put(CONFIG, digests, matrix, **extra)
    as_in_a_new_process()
    return store, digests, matrix


def shard_files(store: FeatureStore, suffix: str = ".npy") -> list[Path]:
    return sorted((store.root / "configs").glob(f"*/shard-*{suffix}"))


@pytest.fixture(params=["checked, then read", "read while checked"])
def read_path(request, monkeypatch):
    if request.param == "read while checked":
        monkeypatch.setattr(_read, "_PIPELINE_BYTES", 0)
    return request.param


def test_a_rerun_is_recognised_and_read_whole_shards_exactly(tmp_path, read_path):
    store, digests, matrix = filled(tmp_path)
    index = store._index(CONFIG)
    assert _read.stored_prefix(index, digests) == 50
    found, vectors = store.get(CONFIG, digests)
    assert found.all() and np.array_equal(vectors, matrix)
    # a query that is not the stored order: no prefix (and the same vectors through the keys)
    assert _read.stored_prefix(index, digests[1:]) == 0
    assert _read.stored_prefix(index, digests[:20]) == 16  # two whole shards, then the keys
    found, vectors = store.get(CONFIG, digests[:20])
    assert found.all() and np.array_equal(vectors, matrix[:20])
    # two digests in one string (the same text, one string fewer): not the stored digests
    merged = [digests[0] + " " + digests[1]] + digests[2:]
    assert _read.stored_prefix(index, merged) == 0
    found, vectors = store.get(CONFIG, merged)
    assert found.tolist() == [False] + [True] * 48 and np.array_equal(vectors, matrix[2:])
    # the same digests in upper case are the same keys, but not the stored text
    upper = [d.upper() for d in digests]
    assert _read.stored_prefix(index, upper) == 0
    assert np.array_equal(store.get(CONFIG, upper)[1], matrix)


@pytest.mark.parametrize("query", ["stored", "extra", "shuffled", "repeats", "holes", "none"])
def test_keys_and_strings_give_identical_results(tmp_path, read_path, query):
    store, digests, matrix = filled(tmp_path, n=41, shard_rows=8)
    new = digests_of(7, offset=1000)
    rng = np.random.default_rng(3)
    queries = {
        "stored": digests,
        "extra": digests + new,  # a rerun over a grown data set: prefix, then a miss
        "shuffled": [digests[i] for i in rng.permutation(41)],
        "repeats": digests + digests[:9] + digests[5:6],
        "holes": digests[:16] + new[:2] + digests[16:],
        "none": digests[:8] + [None] + digests[8:],
    }
    q = queries[query]
    expected_found = np.array([d in digests for d in q])
    expected = np.stack([matrix[digests.index(d)] for d in q if d in digests])
    found, vectors = store.get(CONFIG, q)
    assert found.tolist() == expected_found.tolist()
    assert np.array_equal(vectors, expected)
    if None not in q:
        as_in_a_new_process()
        by_keys = store.get(CONFIG, FeatureStore.digest_keys(q))
        assert by_keys[0].tolist() == found.tolist()
        assert np.array_equal(by_keys[1], vectors)


def test_a_damaged_shard_is_caught_on_the_fast_path(tmp_path, read_path):
    store, digests, matrix = filled(tmp_path)
    victim = shard_files(store)[2]  # rows 16..23
    with open(victim, "r+b") as fh:  # same size, one byte of a vector changed
        fh.seek(-3, os.SEEK_END)
        byte = fh.read(1)
        fh.seek(-3, os.SEEK_END)
        fh.write(bytes([byte[0] ^ 0xFF]))
    index = store._index(CONFIG)
    assert _read.stored_prefix(index, digests) == 50  # the digests are still the stored ones
    with pytest.warns(UserWarning, match="damaged"):
        found, vectors = store.get(CONFIG, digests)
    assert found.tolist() == [not 16 <= i < 24 for i in range(50)]
    assert np.array_equal(vectors, np.delete(matrix, range(16, 24), axis=0))


def test_a_shard_rewritten_under_the_reader_is_caught(tmp_path, read_path):
    store, digests, matrix = filled(tmp_path)
    found, vectors = store.get(CONFIG, digests)  # indexes loaded, every shard read once
    assert found.all()
    victim = shard_files(store)[0]
    st = os.stat(victim)
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0x01
    victim.write_bytes(bytes(data))  # in place: same inode and size
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))  # mtime set back (ctime cannot be)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        found, vectors = store.get(CONFIG, digests)
    assert any("damaged" in str(w.message) for w in caught)
    assert found.tolist() == [i >= 8 for i in range(50)]
    assert np.array_equal(vectors, matrix[8:])


def test_reader_threads_read_while_the_check_runs(tmp_path, monkeypatch):
    """The claim of _read_leading: the leading shards are read by another thread, and reads
    start before the check of the last shard is done (timestamps of real reads and checks)."""
    monkeypatch.setattr(_read, "_PIPELINE_BYTES", 0)
    store, digests, matrix = filled(tmp_path, n=400, dim=32, shard_rows=16)  # 25 shards
    index = store._index(CONFIG)
    events, lock = [], threading.Lock()
    real_preadv, real_repeats = os.preadv, _read._repeats

    def preadv(fd, buffers, offset):
        start = time.perf_counter()
        got = real_preadv(fd, buffers, offset)
        with lock:
            events.append(("read", threading.get_ident(), start, time.perf_counter()))
        return got

    def repeats(shard, query, start):
        begin = time.perf_counter()
        time.sleep(0.002)  # (a check as slow as a big shard's: the reads must not wait for it)
        same = real_repeats(shard, query, start)
        events.append(("check", threading.get_ident(), begin, time.perf_counter()))
        return same

    monkeypatch.setattr(_read.os, "preadv", preadv)
    monkeypatch.setattr(_read, "_repeats", repeats)
    found, vectors = _read.lookup(index, digests)
    assert found.all() and np.array_equal(vectors, matrix)
    reads = [e for e in events if e[0] == "read"]
    checks = [e for e in events if e[0] == "check"]
    assert len(reads) == 25 and len(checks) == 25  # each shard read once, checked once
    me = threading.get_ident()
    by_readers = [e for e in reads if e[1] != me]
    assert by_readers, "no shard was read by a reader thread"
    last_check_done = max(e[3] for e in checks)
    assert sum(e[2] < last_check_done for e in by_readers) >= 5  # reads overlapped the check
    # A query that stops repeating the stored order at shard 10: the rows read for the shards
    # after it are not taken; those digests are looked up by key.
    events.clear()
    query = digests[:160] + digests[160:][::-1]
    found, vectors = _read.lookup(index, query)
    assert found.all() and np.array_equal(vectors, matrix[[digests.index(d) for d in query]])
    assert len([e for e in events if e[0] == "check"]) == 11  # shards 0-9 repeat, 10 does not


def _old_key_index(path: Path, version: int) -> None:
    """Rewrite a key index as version 1 (no text hashes) or 2 (no head checksum) wrote it."""
    table = np.load(path)
    old = (np.concatenate([table[:9], table[12:-1]]) if version == 1 else table[:-1]).astype("<u8")
    old[0, 1] = version
    old[8] = (old[8, 0] & (1 if version == 1 else 15), 0)
    body = _format.expected_header(len(old) + 1, 2, "uint64") + old.tobytes()
    path.write_bytes(body + np.array([xxhash.xxh3_64_intdigest(body), 0], "<u8").tobytes())


@pytest.mark.parametrize("version", [1, 2])
def test_key_indexes_of_older_versions_are_still_read(tmp_path, version):
    store, digests, matrix = filled(tmp_path, n=20)
    for path in shard_files(store, ".keys"):
        _old_key_index(path, version)
    index = store._index(CONFIG)
    assert [s.source for s in index.shards] == ["keys"] * 3  # not the JSON fallback
    assert all(s.loaded_keys is not None for s in index.shards)  # (read whole at opening)
    if version == 1:
        assert all(s.text_hashes == (None, None, None) for s in index.shards)
        assert _read.stored_prefix(index, digests) == 0  # no text hash: the keys path
    else:
        assert _read.stored_prefix(index, digests) == 20  # by the text hashes it records
    found, vectors = store.get(CONFIG, digests)
    assert found.all() and np.array_equal(vectors, matrix)
    found, vectors = store.get(CONFIG, digests[::-1])
    assert found.all() and np.array_equal(vectors, matrix[::-1])


def test_big_writes_describe_their_namespace(tmp_path):
    store, digests, matrix = filled(tmp_path, n=170, shard_rows=10)  # 17 shards
    assert (shard_files(store, ".keys")[0].parent / _nskeys.NAMESPACE_KEYS).exists()
    index = store._index(CONFIG)
    assert all(s.described for s in index.shards)
    assert all(s.text_hashes[0] is not None for s in index.shards)
    assert _read.stored_prefix(index, digests) == 170
    assert np.array_equal(store.get(CONFIG, digests)[1], matrix)
    small = FeatureStore(tmp_path / "t", shard_rows=10)
    small.put(CONFIG, digests[:150], matrix[:150])  # 15 shards: each keeps its own key index
    assert not list((small.root / "configs").glob(f"*/{_nskeys.NAMESPACE_KEYS}"))


# stale_samples in a fresh process: which files it opens, and what it says.
STALE = """
import json, sys
import numpy as np
from featclf.store import FeatureStore

root, spec = sys.argv[1], json.loads(sys.argv[2])
opened = []
sys.addaudithook(lambda event, args: event == "open" and opened.append(str(args[0])))
labels = spec["labels"] if spec["labels"] is None or not spec["array"] else \\
    np.array(spec["labels"])
stale = FeatureStore(root).stale_samples({config!r}, spec["digests"], spec["paths"],
                                         labels=labels)
print(json.dumps({{"stale": np.flatnonzero(stale).tolist(),
                   "json_opened": sum(p.endswith(".json") and "/configs/" in p
                                      for p in opened)}}))
"""


def stale_in_new_process(store: FeatureStore, digests, paths, labels=None, array=False):
    spec = {"digests": digests, "paths": paths, "labels": labels, "array": array}
    done = subprocess.run([sys.executable, "-c", STALE.format(config=CONFIG), str(store.root),
                           json.dumps(spec)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def test_a_rerun_compares_paths_and_labels_without_reading_json(tmp_path):
    paths = [f"data/{i % 3}/img{i}.png" for i in range(50)]
    labels = [i % 3 for i in range(50)]
    store, digests, _ = filled(tmp_path, paths=paths, labels=labels)
    assert stale_in_new_process(store, digests, paths) == {"stale": [], "json_opened": 0}
    assert stale_in_new_process(store, digests, paths, labels, array=True) == \
        {"stale": [], "json_opened": 0}
    # a moved file and a new label: found, and only their shards' JSON indexes are read
    moved = list(paths)
    moved[9] = "elsewhere/img9.png"
    assert stale_in_new_process(store, digests, moved) == {"stale": [9], "json_opened": 1}
    relabelled = list(labels)
    relabelled[40] = 7
    assert stale_in_new_process(store, digests, paths, relabelled) == \
        {"stale": [40], "json_opened": 1}
    # not the stored order: the row-by-row comparison, as before
    got = stale_in_new_process(store, digests[::-1], moved[::-1])
    assert got["stale"] == [40] and got["json_opened"] == 7


def test_stale_samples_without_stored_paths_falls_back(tmp_path):
    store, digests, _ = filled(tmp_path, n=20)  # no paths were given
    paths = [f"x/{i}.png" for i in range(20)]
    got = stale_in_new_process(store, digests, paths)
    assert got["stale"] == list(range(20)) and got["json_opened"] == 3
    assert store.stale_samples(CONFIG, digests, [None] * 20).tolist() == [False] * 20


def test_text_hashes_tell_lists_apart():
    d = digests_of(3)
    assert _keys.digests_hash(d) == _keys.digests_hash(list(d))
    assert _keys.digests_hash(d) != _keys.digests_hash(d[::-1])
    # (the same text in fewer strings hashes the same: stored_prefix also counts them)
    assert _keys.digests_hash([d[0] + " " + d[1], d[2]]) == _keys.digests_hash(d)
    assert _keys.paths_hash(["a", "b"]) != _keys.paths_hash(["a\0b"]) is None
    assert _keys.paths_hash(["a", None]) is None
    assert _keys.labels_hash([1, 2]) == _keys.labels_hash(np.array([1, 2]))
    assert _keys.labels_hash([1, 2]) != _keys.labels_hash([1.0, 2.0])


def _rows_per_shard(store: FeatureStore) -> list[int]:
    return [json.loads(p.read_bytes())["rows"] for p in shard_files(store, ".json")]


def test_writers_size_their_own_shards_unless_told(tmp_path):
    store = FeatureStore(tmp_path / "a")  # shard_rows=None: about 8 MiB per shard
    store.put(CONFIG, digests_of(20_000), np.zeros((20_000, 84), np.float32))
    assert _rows_per_shard(store) == [16384, 3616]
    wide = FeatureStore(tmp_path / "b")
    wide.put(CONFIG, digests_of(2100), np.zeros((2100, 2048), np.float32))
    assert _rows_per_shard(wide) == [1024, 1024, 52]
    half = FeatureStore(tmp_path / "c", dtype="float16")
    half.put(CONFIG, digests_of(2100), np.zeros((2100, 2048), np.float32))
    assert _rows_per_shard(half) == [2048, 52]
    told = FeatureStore(tmp_path / "d", shard_rows=1000)
    told.put(CONFIG, digests_of(2100), np.zeros((2100, 84), np.float32))
    assert _rows_per_shard(told) == [1000, 1000, 100]
    # compaction's size: the one given, else 1024 rows; pickles keep "not given"
    assert (store.shard_rows, told.shard_rows) == (1024, 1000)
    assert pickle.loads(pickle.dumps(store))._shard_rows is None


def test_a_store_pickled_by_an_older_featclf_keeps_its_shard_rows(tmp_path):
    """featclf 0.2 pickled ``shard_rows``; the attribute is now a property over ``_shard_rows``."""
    old = FeatureStore.__new__(FeatureStore)
    old.__setstate__({"root": tmp_path, "dtype": "float32", "shard_rows": 64,
                      "flush_seconds": 10.0})
    assert old.shard_rows == 64 and "shard_rows" not in vars(old)
    new = pickle.loads(pickle.dumps(FeatureStore(tmp_path / "s", shard_rows=None)))
    assert new._shard_rows is None and new.shard_rows == 1024
