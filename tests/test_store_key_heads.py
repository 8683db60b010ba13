"""Key indexes opened by their heads: the keys are read when a look-up first needs them.

Since key index version 3 (:mod:`featclf.store._keys`, :mod:`featclf.store._nskeys`) opening a
namespace reads each shard's head (or the records of ``shards.keys``), checked by its own
checksum; a rerun never needs the keys, any other look-up reads them then, checking the whole
file. These tests count the bytes opening reads (``/proc/self/io``), and damage the keys after
the head, replace a key index after it was opened, and take both indexes of a shard away: a
look-up then reads the JSON index instead, or counts that shard's vectors as missing.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import xxhash
from store_helpers import as_in_a_new_process, digests_of

from featclf.store import FeatureStore, _format
from featclf.store._keys import KEYS_SUFFIX, _head_sum
from featclf.store._nskeys import NAMESPACE_KEYS

CONFIG = {"model": "key-heads", "layer": None, "pooling": "avg"}


def bytes_read() -> int:
    """Bytes this process has read through read-like system calls so far (Linux)."""
    with open("/proc/self/io", "rb", buffering=0) as fh:
        text = fh.read().decode()
    return int(next(line.split()[1] for line in text.splitlines() if line.startswith("rchar")))


def flip_byte(path: Path, at: int) -> None:
    raw = bytearray(path.read_bytes())
    raw[at] ^= 0xFF
    path.write_bytes(bytes(raw))


@pytest.fixture(params=["own key indexes", NAMESPACE_KEYS])
def store(request, tmp_path):
    """40 shards of 50 vectors; described by shards.keys (after a prune) or not."""
    store = FeatureStore(tmp_path / "s", shard_rows=50)
    vectors = np.random.default_rng(0).standard_normal((2000, 4)).astype(np.float32)
    for start in range(0, 2000, 500):  # four writers of 10 shards: none describes the namespace
        store.put(CONFIG, digests_of(500, start), vectors[start:start + 500])
    directory = store.root / "configs" / store.config_key(CONFIG)
    if request.param == NAMESPACE_KEYS:
        FeatureStore(store.root).prune()
        assert (directory / NAMESPACE_KEYS).is_file()
    else:
        assert not (directory / NAMESPACE_KEYS).exists()
    as_in_a_new_process()
    # The stored order (shards by name, the writers in no particular order), from the JSON
    # indexes: a rerun asks for the digests in it.
    stored = [d for p in sorted(directory.glob("shard-*.json"))
              for d in json.loads(p.read_bytes())["digests"]]
    position = {d: i for i, d in enumerate(digests_of(2000))}
    vectors = vectors[[position[d] for d in stored]]
    return store, stored, vectors, directory, request.param


@pytest.mark.skipif(not os.path.exists("/proc/self/io"), reason="counts bytes in /proc")
def test_opening_reads_the_heads_and_a_rerun_never_reads_the_keys(store):
    store, digests, vectors, directory, kind = store
    key_bytes = sum(p.stat().st_size for p in directory.glob(f"*{KEYS_SUFFIX}"))
    before = bytes_read()
    index = store._index(CONFIG)
    opened = bytes_read() - before
    assert len(index.shards) == 40 and all(s.source == "keys" for s in index.shards)
    assert all(s.loaded_keys is None for s in index.shards)
    # the heads: 320 bytes a shard (or 304 of records in shards.keys), never the 32 kB of keys
    assert opened <= 40 * 320 + 512, (opened, key_bytes)
    assert key_bytes >= 40 * 50 * 16
    found, got = store.get(CONFIG, digests)  # a rerun: recognised by text hashes
    assert found.all() and np.array_equal(got, vectors)
    assert all(s.loaded_keys is None for s in index.shards)
    order = np.random.default_rng(1).permutation(2000)
    found, got = store.get(CONFIG, [digests[i] for i in order])  # needs the keys
    assert found.all() and np.array_equal(got, vectors[order])
    assert all(s.loaded_keys is not None for s in index.shards)
    assert index.fallbacks == {}


def assert_read_through_json(store, digests, vectors, kind, shard: int, reason: str,
                             seed: int) -> None:
    """A look-up out of the stored order (it needs the keys) finds every vector, and the
    shards whose keys were in the broken file (every one, for shards.keys) were read through
    their JSON index, for ``reason``."""
    index = store._index(CONFIG)
    order = np.random.default_rng(seed).permutation(len(digests))
    found, got = store.get(CONFIG, [digests[i] for i in order])
    assert found.all() and np.array_equal(got, vectors[order])
    expected = [s.name for s in index.shards] if kind == NAMESPACE_KEYS else \
        [index.shards[shard].name]
    assert sorted(index.fallbacks) == sorted(expected)
    assert all(reason in why for why in index.fallbacks.values())


def _keys_region_byte(directory: Path, kind: str, shard: int) -> tuple[Path, int]:
    """A file and a byte offset inside the keys of shard ``shard`` (past every head)."""
    if kind == NAMESPACE_KEYS:
        path = directory / NAMESPACE_KEYS
        return path, path.stat().st_size - 16 - 16 * 50 * (40 - shard) + 5
    path = sorted(directory.glob(f"*{KEYS_SUFFIX}"))[shard]
    return path, path.stat().st_size - 16 - 7


def test_keys_damaged_past_the_head_give_way_to_the_json_index(store):
    store, digests, vectors, directory, kind = store
    path, at = _keys_region_byte(directory, kind, 3)
    flip_byte(path, at)
    index = store._index(CONFIG)
    assert all(s.source == "keys" for s in index.shards)  # the heads are sound
    found, got = store.get(CONFIG, digests)
    assert found.all() and np.array_equal(got, vectors)  # a rerun needs no keys
    assert_read_through_json(store, digests, vectors, kind, 3, "fails its own checksum", 2)
    if kind != NAMESPACE_KEYS:  # verify reads every key index whole, and says which
        fallbacks = FeatureStore(store.root).verify().fallbacks
        assert [(Path(p).stem, "fails its own checksum" in why) for p, why in fallbacks] == \
            [(index.shards[3].name, True)]


def test_a_key_index_replaced_after_opening_is_not_mixed_with_its_head(store):
    store, digests, vectors, directory, kind = store
    index = store._index(CONFIG)
    # Another process rewrites the (namespace) key index: a valid file, but not the one whose
    # head was read (here: shard 0's key index written again with its record of "verified"
    # cleared, as after a copy).
    victim = directory / (NAMESPACE_KEYS if kind == NAMESPACE_KEYS
                          else f"{index.shards[0].name}{KEYS_SUFFIX}")
    table = np.load(victim)
    header = _format.expected_header(len(table), 2, "uint64")
    if kind == NAMESPACE_KEYS:
        table[3 + 11:3 + 13] = 0  # shard 0's record: rows 11-12, its shard file's stat
        table[2, 0] = _head_sum(header + table[:3 + 19 * 40].tobytes(), len(header) + 32)
    else:
        table[4:6] = 0
        table[8, 1] = _head_sum(header + table[:12].tobytes())
    body = header + table[:-1].tobytes()
    victim.write_bytes(body + np.array([xxhash.xxh3_64_intdigest(body), 0], "<u8").tobytes())
    assert_read_through_json(store, digests, vectors, kind, 0, "replaced after it was opened", 3)


def test_a_shard_without_keys_in_either_index_counts_as_missing(store):
    store, digests, vectors, directory, kind = store
    index = store._index(CONFIG)
    victim = index.shards[5]
    path, at = _keys_region_byte(directory, kind, 5)
    flip_byte(path, at)
    json_index = directory / f"{victim.name}.json"
    data = json.loads(json_index.read_bytes())
    data["digests"][0] = data["digests"][1]  # edited: fails its own checksum
    json_index.write_text(json.dumps(data))
    order = np.random.default_rng(4).permutation(2000)
    with pytest.warns(UserWarning, match=f"shard {victim.name}:.*count as missing"):
        found, got = store.get(CONFIG, [digests[i] for i in order])
    lost = set(range(250, 300))  # shard 5's rows (50 a shard)
    assert found.tolist() == [int(i) not in lost for i in order]
    assert np.array_equal(got, vectors[[i for i in order if int(i) not in lost]])
