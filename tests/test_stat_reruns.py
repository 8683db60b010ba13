"""Stat-keyed reruns: a rerun over unchanged files opens no image file, any change of a file's
stat (size, mtime, ctime) re-reads it, each file is read once (hash and decode the same bytes),
a file replaced by another process during the job never maps a digest to the wrong content,
and the store's stat record survives damage and concurrent writers.

Opens are counted with an audit hook (``open`` events of every ``open``/``os.open`` in this
process; the jobs run with ``num_workers=0``, so all reads happen here). The images are real
MNIST-5k digits saved as PNG and BMP files; the network is LeNet-5 with weights the test saves.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from imagefile_helpers import write_image

from featclf.data import load_mnist5k
from featclf.data.decode import ImageDecodeError, read_image_file_stat
from featclf.data.sources import FileSource
from featclf.extract import DeepFeatureExtractor
from featclf.extract.cached import cached_features
from featclf.fingerprint import digest_bytes
from featclf.models import save_checkpoint
from featclf.models.seed import LeNet5
from featclf.store import FeatureStore
from featclf.store._stat import RACY_SECONDS, StatRecord

REPO = Path(__file__).resolve().parents[1]

_OPENS: list[str] = []
_WATCH: list[str] = []  # folders whose opens are counted (empty: none)


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _WATCH and isinstance(args[0], str | bytes | os.PathLike):
        path = os.fsdecode(os.fspath(args[0]))
        if any(path.startswith(folder) for folder in _WATCH):
            _OPENS.append(path)


sys.addaudithook(_audit)  # audit hooks cannot be removed: it counts only while _WATCH is set


class count_opens:
    """Count the opens of files under ``folder`` inside the block (``.paths``)."""

    def __init__(self, folder: Path) -> None:
        self.folder = str(folder) + os.sep
        self.paths: list[str] = []

    def __enter__(self):
        _OPENS.clear()
        _WATCH.append(self.folder)
        return self

    def __exit__(self, *exc):
        _WATCH.remove(self.folder)
        self.paths = list(_OPENS)
        _OPENS.clear()


FOLDERS = ("rerun", "changed-0", "changed-1", "changed-2", "layer", "damaged", "pruned")
N = 8


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """For each test a folder of N digit images (PNG, and BMP, whose size does not depend on
    the pixels), all written before the racy window, LeNet-5 weights, and reference vectors."""
    root = tmp_path_factory.mktemp("stat")
    X, _ = load_mnist5k(return_X_y=True)
    out = {"root": root, "X": X}
    for name in FOLDERS:
        out[name] = [str(write_image(root / name / f"{i}.png", X[i])) for i in range(N)]
        out[name + "_bmp"] = [str(write_image(root / name / f"{i}.bmp", X[i]))
                              for i in range(N)]
    torch.manual_seed(5)
    weights = root / "lenet5.pt"
    save_checkpoint(weights, LeNet5().state_dict(), {"model": "lenet5"})
    replaced = root / "replaced"
    out["replaced"] = [str(write_image(replaced / f"{i}.png", X[i])) for i in range(6)]
    out["versions"] = [str(write_image(root / f"version-{i}.png", X[i])) for i in (8, 9)]
    out["victim"] = str(replaced / "victim.png")
    Path(out["victim"]).write_bytes(Path(out["versions"][0]).read_bytes())
    out["weights"] = str(weights)
    plain = DeepFeatureExtractor("lenet5", weights=str(weights)).fit()
    out["vector"] = {i: v for i, v in enumerate(plain.transform(X[:N + 4]))}
    # Files whose ctime is younger than the racy window are hashed again on the next run
    # (their stat could change within one timestamp tick): let every file age past it.
    time.sleep(RACY_SECONDS + 0.2)
    return out


def lenet(files, store, **params) -> DeepFeatureExtractor:
    return DeepFeatureExtractor("lenet5", weights=files["weights"], store=store, batch_size=4,
                                **params).fit()


def test_rerun_over_unchanged_files_opens_no_image_file(tmp_path, files):
    paths = files["rerun"]
    folder = Path(paths[0]).parent
    with count_opens(folder) as first_opens:
        first = lenet(files, tmp_path / "store").extract(paths)
    # One read per file: hashed and decoded from the same bytes, no hashing pass before.
    assert sorted(first_opens.paths) == sorted(paths)
    assert (first.n_computed, first.n_reused) == (N, 0)
    with count_opens(folder) as rerun_opens:
        again = lenet(files, tmp_path / "store").extract(paths)
    assert rerun_opens.paths == []
    assert (again.n_computed, again.n_reused) == (0, N)
    np.testing.assert_array_equal(again.features, first.features)
    np.testing.assert_allclose(first.features, np.stack([files["vector"][i] for i in range(N)]),
                               rtol=1e-5, atol=1e-6)
    assert again.digests == [digest_bytes(Path(p).read_bytes()) for p in paths]


def test_prune_drops_the_stat_entries_of_content_no_namespace_holds(tmp_path, files):
    paths = files["pruned"]
    root = tmp_path / "store"
    lenet(files, root).extract(paths)
    digests = StatRecord(root).lookup(paths)
    assert None not in digests
    store = FeatureStore(root)
    assert store.prune().stat_entries == 0  # every entry's content is stored: all kept
    record = StatRecord(root)  # entries of content with no vector (deleted or moved files)
    for i in range(3):
        st = os.stat(paths[i])
        record.add(tmp_path / f"gone-{i}.png", (st.st_size, st.st_mtime_ns, st.st_ctime_ns,
                                                st.st_ino + 1, st.st_dev),
                   f"{i + 1:032x}", read_ns=time.time_ns())  # fmt: skip
    assert record.flush() is not None
    assert store.prune().stat_entries == 3
    assert StatRecord(root).lookup(paths) == digests  # the stored content's entries stay
    with count_opens(Path(paths[0]).parent) as opens:
        again = lenet(files, root).extract(paths)
    assert opens.paths == [] and again.n_computed == 0
    (key,) = store.configs()
    assert store.prune(configs=[key]).stat_entries == N  # the namespace is gone: so are they
    assert StatRecord(root).lookup(paths) == [None] * N


CHANGES = {  # what changes: (the file's size stays the same, its mtime is put back)
    "same size, new mtime": (True, False),
    "same mtime, new size": (False, True),
    "same size and mtime (only ctime moves)": (True, True),
}


@pytest.mark.parametrize("change", list(CHANGES))
def test_file_whose_stat_changed_is_read_again_and_recomputed(tmp_path, files, change):
    same_size, same_mtime = CHANGES[change]
    store = tmp_path / "store"
    folder = f"changed-{list(CHANGES).index(change)}"
    paths = list(files[folder + "_bmp"] if same_size else files[folder])
    folder = Path(paths[0]).parent
    victim = paths[3]
    lenet(files, store).extract(paths)  # records every file's stat (all older than the window)
    before = os.stat(victim)
    fmt = "BMP" if same_size else "PNG"  # a BMP's size does not depend on the pixels
    write_image(Path(victim), files["X"][10], fmt=fmt)
    assert (os.stat(victim).st_size == before.st_size) == same_size
    if same_mtime:
        os.utime(victim, ns=(before.st_atime_ns, before.st_mtime_ns))  # put the mtime back
        assert os.stat(victim).st_mtime_ns == before.st_mtime_ns
    with count_opens(folder) as opens:
        result = lenet(files, store).extract(paths)
    assert opens.paths == [victim]  # the changed file only, once
    assert (result.n_computed, result.n_reused) == (1, N - 1)
    np.testing.assert_allclose(result.features[3], files["vector"][10], rtol=1e-5, atol=1e-6)
    restored = lenet(files, store).extract([victim])  # not under the old content's key
    np.testing.assert_array_equal(restored.features[0], result.features[3])
    # Changing it back to the original content: re-read (new ctime), and a store hit.
    write_image(Path(victim), files["X"][3], fmt=fmt)
    with count_opens(folder) as opens:
        back = lenet(files, store).extract(paths)
    assert opens.paths == [victim]
    assert (back.n_computed, back.n_reused) == (0, N)
    np.testing.assert_allclose(back.features[3], files["vector"][3], rtol=1e-5, atol=1e-6)


def test_stat_hit_without_a_stored_vector_is_read_once_and_computed(tmp_path, files):
    paths = files["layer"]
    folder = Path(paths[0]).parent
    lenet(files, tmp_path / "store").extract(paths)
    with count_opens(folder) as opens:  # another layer: digests known by stat, vectors not
        c5 = lenet(files, tmp_path / "store", layer="c5").extract(paths)
    assert sorted(opens.paths) == sorted(paths)  # each file once: no hashing pass first
    assert (c5.n_computed, c5.n_reused) == (N, 0)
    reference = DeepFeatureExtractor("lenet5", weights=files["weights"], layer="c5").fit()
    np.testing.assert_allclose(c5.features, reference.transform(paths), rtol=1e-5, atol=1e-6)


def test_damaged_stat_record_is_never_trusted_and_is_rebuilt(tmp_path, files):
    paths = files["damaged"]
    folder = Path(paths[0]).parent
    store = tmp_path / "store"
    first = lenet(files, store).extract(paths)
    (record,) = (store / "stat").glob("record-*.stat")
    data = bytearray(record.read_bytes())
    # Flip the last byte: the last entry's digest, which would point the file at other content.
    data[-1] ^= 0xFF
    record.write_bytes(bytes(data))
    assert StatRecord(store).lookup(paths) == [None] * N
    with count_opens(folder) as opens:
        again = lenet(files, store).extract(paths)
    assert sorted(opens.paths) == sorted(paths)  # every file hashed again, none computed
    assert (again.n_computed, again.n_reused) == (0, N)
    np.testing.assert_array_equal(again.features, first.features)
    record.write_bytes(b"FCSTAT1\n\x05")  # cut short: ignored the same way
    with count_opens(folder) as opens:
        lenet(files, store).extract(paths)
    assert opens.paths == []  # the rebuilt record (a new file) serves the rerun


REPLACER = r"""
import os, sys, time
victim, original, other, commands = sys.argv[1:5]
contents = [open(original, "rb").read(), open(other, "rb").read()]
swaps = 0
for line in sys.stdin:
    if line.strip() == "stop":
        break
    swaps += 1
    tmp = victim + ".new"
    with open(tmp, "wb") as fh:
        fh.write(contents[swaps % 2])
    os.replace(tmp, victim)  # another program saving the file: a new inode, new content
    print(time.monotonic(), flush=True)
"""


def test_file_replaced_by_another_process_during_the_job_never_maps_a_digest_to_other_content(
        tmp_path, files):
    others, victim = files["replaced"], files["victim"]
    original, other = files["versions"]
    # The victim in every batch of four, read again and again while it is being replaced.
    paths = [p for i in range(6) for p in (victim, others[i], others[(i + 1) % 6],
                                             others[(i + 2) % 6])]
    store = FeatureStore(tmp_path / "store")
    # A first job with another layer records every file's stat (the victim's with the digest
    # of its first version): this job finds each by stat, and must read it for its vector.
    lenet(files, store, layer="c5").extract(paths)
    ext = lenet(files, store, on_error="skip")
    (config,) = ext.cache_configs_().values()
    assert StatRecord(store.root).lookup([victim]) == [digest_bytes(Path(original).read_bytes())]
    child = subprocess.Popen([sys.executable, "-c", REPLACER, victim, original, other, "-"],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    swaps: list[float] = []

    def compute_while_replaced(sub):
        for out in ext.iter_features(sub):
            child.stdin.write("swap\n")  # the other process replaces the victim now
            child.stdin.flush()
            swaps.append(float(child.stdout.readline()))
            yield out

    started = time.monotonic()
    try:
        result = cached_features(FileSource(paths), compute_while_replaced,
                                 configs={"penultimate": config}, store=store, on_error="skip")
    finally:
        child.communicate("stop\n", timeout=60)
    ended = time.monotonic()
    # The overlap: the other process replaced the file while the job was reading it.
    assert len(swaps) == 6 and all(started < t < ended for t in swaps)
    digit = {digest_bytes(Path(p).read_bytes()): i for i, p in enumerate(others)}
    digit[digest_bytes(Path(original).read_bytes())] = 8
    digit[digest_bytes(Path(other).read_bytes())] = 9
    victim_rows = [k for k, i in enumerate(result.indices) if paths[i] == victim]
    seen = {digit[result.digests[result.indices[k]]] for k in victim_rows}
    assert seen == {8, 9}, "the job did not read both versions of the replaced file"
    # Every input's vector is that of the content its digest names...
    for k, i in enumerate(result.indices):
        np.testing.assert_allclose(result.features[k], files["vector"][digit[result.digests[i]]],
                                   rtol=1e-5, atol=1e-6)
    # ... and so is every vector in the store.
    digests, _, _, vectors = store.entries(config)
    assert sorted(digit[d] for d in digests) == [0, 1, 2, 3, 4, 5, 8, 9]
    for d, v in zip(digests, vectors):
        np.testing.assert_allclose(v, files["vector"][digit[d]], rtol=1e-5, atol=1e-6)
    # The stat record never names another content for the file as it is now.
    assert StatRecord(store.root).lookup([victim])[0] in (None, digest_bytes(
        Path(victim).read_bytes()))


WRITER = r"""
import os, sys
sys.path.insert(0, sys.argv[1])
from featclf.store._stat import StatRecord
root, folder, who = sys.argv[2], sys.argv[3], int(sys.argv[4])
for batch in range(12):
    record = StatRecord(root, racy_seconds=0)
    for j in range(10):
        path = os.path.join(folder, f"{who}-{batch}-{j}")
        st = os.stat(path)
        key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
        record.add(path, key, f"{who:02x}{batch:02x}{j:02x}" * 5 + "00", read_ns=st.st_ctime_ns)
    record.flush()
"""


def test_concurrent_record_writers_merge_and_never_lose_an_entry(tmp_path):
    folder = tmp_path / "files"
    folder.mkdir()
    (tmp_path / "s").mkdir()  # the store's directory
    names = [f"{who}-{batch}-{j}" for who in (1, 2) for batch in range(12) for j in range(10)]
    for name in names:
        (folder / name).write_bytes(name.encode())
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(REPO), str(tmp_path / "s"),
                               str(folder), str(who)]) for who in (1, 2)]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]
    record_files = list((tmp_path / "s" / "stat").glob("*.stat"))
    assert len(record_files) < 24  # 24 flushes: the writers merged files as they went
    got = StatRecord(tmp_path / "s").lookup([folder / name for name in names])
    expected = [f"{int(w):02x}{int(b):02x}{int(j):02x}" * 5 + "00"
                for w, b, j in (name.split("-") for name in names)]
    assert got == expected  # every entry of every writer, none lost in a merge


def test_read_of_a_file_being_written_never_mixes_versions(tmp_path):
    path = tmp_path / "big.bin"
    path.write_bytes(b"a" * (8 << 20))
    got = read_image_file_stat(path)
    assert got.data == b"a" * (8 << 20) and got.stat[0] == 8 << 20
    grower = subprocess.Popen([sys.executable, "-c",
                               "import sys\nwith open(sys.argv[1], 'ab', buffering=0) as f:\n"
                               "    while True: f.write(b'b')", str(path)])
    try:
        deadline = time.monotonic() + 5
        while os.stat(path).st_size == 8 << 20:
            assert time.monotonic() < deadline, "the writer did not start"
        outcomes = []
        for _ in range(5):
            try:
                got = read_image_file_stat(path)
                # A read that saw no write in between is one version: size and stat agree.
                assert len(got.data) == got.stat[0]
                outcomes.append("consistent")
            except ImageDecodeError as exc:
                assert "changed while being read" in exc.reason
                outcomes.append("changed")
    finally:
        grower.kill()
        grower.wait()
    assert "changed" in outcomes, outcomes


def test_moved_file_and_its_copies_are_found_by_content_with_no_forward(tmp_path, files):
    store = tmp_path / "store"
    first = lenet(files, store).extract(files["layer"][:4])
    moved = tmp_path / "moved"
    moved.mkdir()
    # New paths (no stat entry): a copy of 0, two copies of 1 in the same batch, and 3.
    sources = [0, 1, 1, 3]
    paths = [str(moved / f"copy-{k}.png") for k in range(4)]
    for k, path in zip(sources, paths):
        Path(path).write_bytes(Path(files["layer"][k]).read_bytes())
    ext = lenet(files, store)
    forwards = []
    ext.runner_.module.register_forward_pre_hook(lambda _, args: forwards.append(len(args[0])))
    with count_opens(moved) as opens:
        result = ext.extract(paths)
    assert sorted(opens.paths) == sorted(paths)  # each read once, to hash it
    assert (result.n_computed, result.n_reused, forwards) == (0, 4, [])
    np.testing.assert_array_equal(result.features, first.features[sources])


def test_dataloader_workers_hash_the_bytes_they_decode_and_the_main_process_reads_none(
        tmp_path, files):
    paths = files["rerun_bmp"]
    folder = Path(paths[0]).parent
    store = FeatureStore(tmp_path / "store")
    with count_opens(folder) as opens:  # this process: no hashing pass before the workers
        result = lenet(files, store, num_workers=2).extract(paths)
    assert opens.paths == []
    assert (result.n_computed, result.n_reused) == (N, 0)
    assert result.digests == [digest_bytes(Path(p).read_bytes()) for p in paths]
    np.testing.assert_allclose(result.features, np.stack([files["vector"][i] for i in range(N)]),
                               rtol=1e-5, atol=1e-6)
    (config,) = lenet(files, store).cache_configs_().values()
    found, vectors = store.get(config, result.digests)
    assert found.all()
    np.testing.assert_array_equal(vectors, result.features)
    assert StatRecord(store.root).lookup(paths) == result.digests  # recorded from the workers
