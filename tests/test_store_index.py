"""The store's binary key index: hits without JSON and without re-hashing, never trusted blindly.

Each shard has a ``<stem>.keys`` twin of its JSON index (:mod:`featclf.store._index`). These
tests run readers in fresh processes (an audit hook counts the files they open), damage key
indexes, shards and JSON indexes on disk, and check that every read returns the stored vectors
or none, that ``verify`` says which shards fall back to JSON, and that ``prune`` and writers
upgrade old (JSON-only) stores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from store_helpers import digests_of

from featclf.store import FeatureStore, _format, _index, _keys
from featclf.store._keys import Shard, digest_keys, keys_bytes

CONFIG = {"model": "index-test", "layer": None, "pooling": "avg"}

# A reader in a fresh process: which files it opens during the hit, what it got, and whether
# it hashed any shard (CHECKED records every shard whose bytes this process hashed).
READER = """
import json, sys
import numpy as np
from featclf.store import FeatureStore, _format

root, digests, out = sys.argv[1], json.loads(sys.argv[2]), sys.argv[3]
opened = []
sys.addaudithook(lambda event, args: event == "open" and opened.append(str(args[0])))
found, vectors = FeatureStore(root).get({config!r}, digests)
hashed = len(_format.CHECKED)
np.save(out, vectors)
print(json.dumps({{"found": found.tolist(), "hashed": hashed,
                   "json_opened": [p for p in opened if p.endswith(".json")
                                   and "/configs/" in p],
                   "shards_opened": sum(p.endswith(".npy") and "/configs/" in p
                                        for p in opened),
                   "keys_opened": sorted(p.rsplit("/", 1)[-1] for p in opened
                                         if p.endswith(".keys"))}}))
"""


def read_in_new_process(root: Path, digests: list[str], tmp_path: Path) -> tuple[dict,
                                                                                  np.ndarray]:
    out = tmp_path / f"read-{len(list(tmp_path.glob('read-*')))}.npy"
    done = subprocess.run([sys.executable, "-c", READER.format(config=CONFIG), str(root),
                           json.dumps(digests), str(out)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1]), np.load(out)


def namespace(store: FeatureStore) -> Path:
    return store.root / "configs" / store.config_key(CONFIG)


def key_files(store: FeatureStore) -> list[Path]:
    return sorted(namespace(store).glob("shard-*.keys"))


@pytest.fixture
def filled(tmp_path, rng):
    """A store of 100 vectors in 4 shards of 25, and the vectors."""
    store = FeatureStore(tmp_path / "s", shard_rows=25)
    vectors = rng.standard_normal((100, 6)).astype(np.float32)
    store.put(CONFIG, digests_of(100), vectors, paths=[f"/img/{i}.png" for i in range(100)],
              labels=[i % 3 for i in range(100)])
    return store, vectors


def test_a_hit_in_a_new_process_reads_no_json_index_and_hashes_no_shard(filled, tmp_path):
    store, vectors = filled
    assert len(key_files(store)) == 4
    report, got = read_in_new_process(store.root, digests_of(100), tmp_path)
    assert report["found"] == [True] * 100
    np.testing.assert_array_equal(got, vectors)
    # Neither a shard index parsed nor a shard's bytes hashed: the key indexes said where each
    # row is, and each shard was found as its writer left it.
    assert report["json_opened"] == [] and report["hashed"] == 0
    assert report["shards_opened"] == 4
    # Out of order, with unknown digests: the same vectors by their digests, still no JSON.
    query = digests_of(30, 90) + digests_of(10, 5)[::-1]
    report, got = read_in_new_process(store.root, query, tmp_path)
    assert report["found"] == [True] * 10 + [False] * 20 + [True] * 10
    np.testing.assert_array_equal(got, np.concatenate([vectors[90:], vectors[5:15][::-1]]))
    assert report["json_opened"] == []


def test_an_old_store_without_key_indexes_is_read_and_upgraded_by_prune(filled, tmp_path):
    store, vectors = filled
    for path in key_files(store):
        path.unlink()  # a store written before key indexes existed
    report, got = read_in_new_process(store.root, digests_of(100), tmp_path)
    np.testing.assert_array_equal(got, vectors)
    assert len(report["json_opened"]) == 4 and report["hashed"] == 4  # read as before
    check = FeatureStore(store.root).verify()
    assert check.ok and len(check.fallbacks) == 4
    assert all("no key index" in why for _, why in check.fallbacks)
    pruned = FeatureStore(store.root).prune()
    assert len(pruned.key_indexes) == 4 and len(key_files(store)) == 4
    assert FeatureStore(store.root).verify().fallbacks == []
    report, got = read_in_new_process(store.root, digests_of(100), tmp_path)
    np.testing.assert_array_equal(got, vectors)
    # prune hashed each shard before writing its key index: readers need not hash again
    assert report["json_opened"] == [] and report["hashed"] == 0
    # paths and labels still come from the JSON indexes (export reads them there)
    digests, paths, labels, _ = FeatureStore(store.root).entries(CONFIG)
    assert paths[:2] == ["/img/0.png", "/img/1.png"] and labels[:3] == [0, 1, 2]


def test_writing_to_an_old_store_upgrades_the_shards_it_read(filled, tmp_path, rng):
    store, vectors = filled
    for path in key_files(store):
        path.unlink()
    _index.INDEXES.clear()
    writer_store = FeatureStore(store.root, shard_rows=25)
    assert writer_store.get(CONFIG, digests_of(100))[0].all()  # read through JSON
    writer_store.put(CONFIG, digests_of(5, 100), rng.standard_normal((5, 6)))
    assert len(key_files(store)) == 5  # the new shard's, and the 4 old ones'
    report, got = read_in_new_process(store.root, digests_of(100), tmp_path)
    np.testing.assert_array_equal(got, vectors)
    assert report["json_opened"] == []
    # The writer had not checked the old shards' checksums: readers still hash them once.
    assert report["hashed"] == 4


def test_an_edited_json_index_is_read_as_json_not_through_its_stale_key_index(filled):
    store, vectors = filled
    index = sorted(namespace(store).glob("shard-*.json"))[0]
    data = json.loads(index.read_bytes())
    data["digests"] = data["digests"][::-1]  # edited by another tool, checksum not updated
    index.write_text(json.dumps(data))
    _index.INDEXES.clear()
    with pytest.warns(UserWarning, match="unreadable shard index"):
        found, got = FeatureStore(store.root).get(CONFIG, digests_of(100))
    # The key index still holds the old order, but it belongs to another JSON index now: the
    # edited one is read, found damaged, and its 25 vectors count as missing.
    assert found.tolist() == [False] * 25 + [True] * 75
    np.testing.assert_array_equal(got, vectors[25:])
    check = FeatureStore(store.root).verify()
    assert [(Path(p).name, why) for p, why in check.problems] == [
        (index.name, "unreadable index (the index does not match its own checksum (edited or "
         "damaged))")]


def _forge_key_index(store: FeatureStore, checksum: str, verified) -> Path:
    """Replace the first shard's key index by a self-consistent one that lies about it."""
    directory = namespace(store)
    index = sorted(directory.glob("shard-*.json"))[0]
    data = json.loads(index.read_bytes())
    shard = Shard(index.stem, data["rows"], data["dim"], data["dtype"], data["bytes"], checksum,
                  digest_keys(data["digests"])[0])
    index_stat = _keys.file_stat(os.stat(index))
    path = directory / f"{index.stem}.keys"
    path.write_bytes(keys_bytes(shard, data["digests"], index_stat, verified))
    return path


def test_a_key_index_inconsistent_with_its_shard_falls_back_to_json(filled):
    store, vectors = filled
    _forge_key_index(store, "0" * 32, None)  # says the shard has another checksum
    _index.INDEXES.clear()
    _format.CHECKED.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the shard is sound: no "damaged" warning
        found, got = FeatureStore(store.root).get(CONFIG, digests_of(100))
    assert found.all()
    np.testing.assert_array_equal(got, vectors)
    index = _index.open_index(store.root, store.config_key(CONFIG))
    assert len(index.distrusted) == 1 and len(index.fallbacks) == 1
    check = FeatureStore(store.root).verify()
    assert check.ok and [why for _, why in check.fallbacks] == [
        "the key index disagrees with the JSON index: readers use the JSON index"]
    assert len(FeatureStore(store.root).prune().key_indexes) == 1
    assert FeatureStore(store.root).verify().fallbacks == []


def test_torn_and_foreign_key_indexes_are_ignored(filled):
    store, vectors = filled
    first, second, third = key_files(store)[:3]
    first.write_bytes(first.read_bytes()[:-7])  # torn (a power loss: key indexes are not fsynced)
    raw = bytearray(second.read_bytes())
    raw[200] ^= 0xFF  # one flipped bit inside the keys
    second.write_bytes(bytes(raw))
    third.write_bytes(b"not a key index at all")
    _index.INDEXES.clear()
    found, got = FeatureStore(store.root).get(CONFIG, digests_of(100))
    assert found.all()
    np.testing.assert_array_equal(got, vectors)
    reasons = sorted(why for _, why in FeatureStore(store.root).verify().fallbacks)
    assert len(reasons) == 3
    assert sum("fails its own checksum" in r for r in reasons) == 1  # the flipped bit
    assert sum("bytes (torn)" in r for r in reasons) == 2


def test_a_shard_changed_in_place_is_hashed_again_even_with_its_mtime_restored(filled):
    store, vectors = filled
    victim = sorted(namespace(store).glob("shard-*.npy"))[1]
    before = os.stat(victim)
    raw = bytearray(victim.read_bytes())
    raw[-3] ^= 0x01  # one bit of the last vector, same size
    victim.write_bytes(bytes(raw))
    os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))  # ctime still moves
    _index.INDEXES.clear()
    _format.CHECKED.clear()
    with pytest.warns(UserWarning, match="is damaged"):
        found, got = FeatureStore(store.root).get(CONFIG, digests_of(100))
    assert found.tolist() == [True] * 25 + [False] * 25 + [True] * 50
    np.testing.assert_array_equal(got, np.concatenate([vectors[:25], vectors[50:]]))


def test_compaction_writes_key_indexes_that_readers_trust(tmp_path, rng):
    store = FeatureStore(tmp_path / "s", shard_rows=10)
    vectors = rng.standard_normal((40, 4)).astype(np.float32)
    for start in range(0, 40, 10):  # four writers' shards of 10, two of them overlapping
        store.put(CONFIG, digests_of(10, start), vectors[start:start + 10])
    store.put(CONFIG, digests_of(10, 5), vectors[5:15])
    report = FeatureStore(store.root, shard_rows=40).prune(compact=True)
    assert report.duplicates == 10 and len(key_files(store)) == 1
    report, got = read_in_new_process(store.root, digests_of(40), tmp_path)
    np.testing.assert_array_equal(got, vectors)
    assert report["json_opened"] == [] and report["hashed"] == 0


def test_digests_that_only_join_to_hex_are_not_taken_for_hex_keys(tmp_path):
    # Digests of 30 and 34 hex characters join to the bytes of two 32-hex digests: neither is
    # one, and they must not be taken for them.
    odd = ["ab" * 15, "cd" * 17]
    even = ["ab" * 15 + "cd", "cd" * 16]
    assert not np.array_equal(digest_keys(odd)[0], digest_keys(even)[0])
    store = FeatureStore(tmp_path / "s")
    store.put(CONFIG, even, np.eye(2))
    assert FeatureStore(store.root).get(CONFIG, odd)[0].tolist() == [False, False]
    found, got = FeatureStore(store.root).get(CONFIG, even[::-1])
    assert found.all() and got.tolist() == [[0.0, 1.0], [1.0, 0.0]]


def test_a_pruned_namespace_is_opened_from_one_key_file_and_never_from_a_stale_record(
        tmp_path, rng):
    store = FeatureStore(tmp_path / "s", shard_rows=5)
    vectors = rng.standard_normal((120, 3)).astype(np.float32)
    store.put(CONFIG, digests_of(100), vectors[:100])  # 20 shards
    FeatureStore(store.root).prune()
    assert (namespace(store) / "shards.keys").is_file()
    report, got = read_in_new_process(store.root, digests_of(100), tmp_path)
    np.testing.assert_array_equal(got, vectors[:100])
    # One file describes the 20 shards: no shard's own key index, no JSON, no hashing.
    assert report["keys_opened"] == ["shards.keys"]
    assert report["json_opened"] == [] and report["hashed"] == 0
    # After the prune: a writer adds shards, and another tool edits a JSON index the namespace
    # key index describes. Readers use the new shards' own key indexes and read the edited
    # JSON index as JSON (here: damaged, so its vectors are missing), never the old record.
    described = sorted(namespace(store).glob("shard-*.json"))
    store.put(CONFIG, digests_of(20, 100), vectors[100:])  # 4 more shards
    edited = described[7]
    data = json.loads(edited.read_bytes())
    data["digests"] = data["digests"][::-1]
    edited.write_text(json.dumps(data))
    lost = set(json.loads(edited.read_bytes())["digests"])
    report, got = read_in_new_process(store.root, digests_of(120), tmp_path)
    assert [d in lost for d in digests_of(120)] == [not f for f in report["found"]]
    np.testing.assert_array_equal(got, vectors[[d not in lost for d in digests_of(120)]])
    assert report["json_opened"] == [str(edited)]
    # shards.keys, the 4 new shards' key indexes, and the edited shard's own (out of date too);
    # (each file may be opened twice: its head first, its keys when a look-up needs them)
    assert sorted(set(report["keys_opened"])) == sorted(
        ["shards.keys", f"{edited.stem}.keys",
         *(p.name for p in key_files(store) if p.with_suffix(".json") not in described)])


def test_cli_verify_names_shards_without_a_current_key_index_and_prune_upgrades_them(
        filled, capsys):
    from featclf.cli import main

    store, _ = filled
    key_files(store)[0].unlink()
    assert main(["store", "verify", str(store.root)]) == 0  # slower, not damaged
    err = capsys.readouterr().err
    assert "1 shard(s) are looked up through their JSON index" in err and "no key index" in err
    assert main(["store", "prune", str(store.root)]) == 0
    assert "1 key index(es) written" in capsys.readouterr().out
    assert main(["store", "verify", str(store.root)]) == 0
    assert "JSON index" not in capsys.readouterr().err


def test_a_job_that_writes_many_shards_describes_the_namespace_in_one_file(tmp_path, rng):
    store = FeatureStore(tmp_path / "s", shard_rows=1)
    digests = digests_of(70)
    vectors = rng.standard_normal((70, 3)).astype(np.float32)
    assert not store.get(CONFIG, digests)[0].any()  # a job looks up first, as extraction does
    with store.writer(CONFIG) as writer:  # then writes 70 one-row shards
        writer.add(digests[:10], vectors[:10])
        assert not (namespace(store) / "shards.keys").exists()
        writer.add(digests[10:], vectors[10:])
    assert (namespace(store) / "shards.keys").is_file()
    report, got = read_in_new_process(store.root, digests, tmp_path)
    np.testing.assert_array_equal(got, vectors)
    assert report["keys_opened"] == ["shards.keys"] and report["json_opened"] == []
    # A small write later leaves it as it is (it is rewritten once 64 shards are new)
    before = (namespace(store) / "shards.keys").read_bytes()
    store.put(CONFIG, digests_of(3, 70), vectors[:3])
    assert (namespace(store) / "shards.keys").read_bytes() == before


def test_keys_from_digest_keys_find_the_same_vectors_as_the_digests(filled):
    store, vectors = filled
    query = digests_of(10, 95) + digests_of(3, 20)  # 5 unknown
    keys = FeatureStore.digest_keys(query)
    assert keys.dtype == np.uint64 and keys.shape == (13, 2)
    by_digest = FeatureStore(store.root).get(CONFIG, query)
    by_key = FeatureStore(store.root).get(CONFIG, keys)
    assert by_key[0].tolist() == [True] * 5 + [False] * 5 + [True] * 3
    np.testing.assert_array_equal(by_key[0], by_digest[0])
    np.testing.assert_array_equal(by_key[1], np.concatenate([vectors[95:], vectors[20:23]]))
    full = FeatureStore(store.root).get(CONFIG, FeatureStore.digest_keys(digests_of(100)))
    np.testing.assert_array_equal(full[1], vectors)
    with pytest.raises(ValueError, match="position 1 is None"):
        FeatureStore.digest_keys(["a", None])
