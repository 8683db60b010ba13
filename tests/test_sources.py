"""FileSource and the extraction job on hostile files: one read per file (hash and decode the
same bytes, so a file rewritten mid-job is filed under the digest of what was decoded),
special files never opened, byte-identical files computed once, DataLoader workers giving
exactly what the main process gives.

The images are real PNG files of MNIST-5k digits; the network is LeNet-5 with weights the test
saves.
"""

from __future__ import annotations

import contextlib
import os
import re
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from imagefile_helpers import write_image

from featclf.data import load_mnist5k
from featclf.data.decode import ImageDecodeError
from featclf.data.inputs import as_image_source
from featclf.data.sources import CHANGED_WHILE_READ, FileSource
from featclf.errors import cli_messages
from featclf.extract import DeepFeatureExtractor
from featclf.extract.cached import cached_features
from featclf.fingerprint import digest_bytes
from featclf.models import save_checkpoint
from featclf.models.seed import LeNet5
from featclf.store import FeatureStore


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    """12 digit PNGs ``<i>.png``, LeNet-5 weights, and each file's vector without a store."""
    root = tmp_path_factory.mktemp("digits")
    X, _ = load_mnist5k(return_X_y=True)
    paths = [str(write_image(root / f"{i:02d}.png", X[i])) for i in range(12)]
    torch.manual_seed(3)
    weights = root / "lenet5.pt"
    save_checkpoint(weights, LeNet5().state_dict(), {"model": "lenet5"})
    ext = DeepFeatureExtractor("lenet5", weights=str(weights), device="cpu").fit()
    return {"root": root, "paths": paths, "weights": str(weights), "X": X,
            "vectors": dict(zip(paths, ext.transform(paths)))}


def extractor(digits, **params) -> DeepFeatureExtractor:
    return DeepFeatureExtractor("lenet5", weights=digits["weights"], device="cpu",
                                **params).fit()


def test_file_rewritten_after_the_lookup_is_filed_under_the_digest_of_what_was_decoded(
        tmp_path, digits):
    paths = [str(tmp_path / Path(p).name) for p in digits["paths"][:6]]
    for src, dst in zip(digits["paths"], paths):
        Path(dst).write_bytes(Path(src).read_bytes())
    victim = paths[2]
    old_digest = digest_bytes(Path(victim).read_bytes())
    new_bytes = Path(digits["paths"][9]).read_bytes()  # another digit, a valid PNG
    store = FeatureStore(tmp_path / "store")
    ext = extractor(digits, store=store, on_error="skip", batch_size=4)
    (config,) = ext.cache_configs_().values()

    def rewrite_then_compute(sub):
        # The store lookup has run (by stat); another program now rewrites one of the files
        # before the job reads it.
        Path(victim).write_bytes(new_bytes)
        yield from ext.iter_features(sub)

    result = cached_features(FileSource(paths), rewrite_then_compute,
                             configs={"penultimate": config}, store=store, on_error="skip")
    assert (result.errors, result.indices.tolist()) == ([], [0, 1, 2, 3, 4, 5])
    # One read: the digest is that of the bytes the pixels came from, and so is the vector.
    assert result.digests[2] == digest_bytes(new_bytes)
    expected = digits["vectors"][digits["paths"][9]]
    np.testing.assert_allclose(result.features[2], expected, rtol=1e-5, atol=1e-6)
    found, vectors = store.get(config, [old_digest, digest_bytes(new_bytes)])
    assert found.tolist() == [False, True]  # never the new content under the old key
    np.testing.assert_allclose(vectors[0], expected, rtol=1e-5, atol=1e-6)
    assert store.info()[0].vectors == 6
    again = ext.extract(paths)
    assert (again.n_computed, again.n_reused, again.errors) == (0, 6, [])
    np.testing.assert_array_equal(again.features, result.features)


def test_digests_are_read_once_and_carried_by_subset(tmp_path):
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    a.write_bytes(b"first")
    b.write_bytes(b"second")
    source = FileSource([a, b, tmp_path / "gone.png"])
    digests = source.digests()
    assert digests == [digest_bytes(b"first"), digest_bytes(b"second"), None]
    a.write_bytes(b"changed")
    assert source.digests() == digests  # the lookup and the decode agree on one read
    assert source.subset([1, 0]).digests() == [digests[1], digests[0]]


@contextlib.contextmanager
def pipe_watch(fifo: Path) -> Iterator[list[float]]:
    """Open the pipe's write end whenever some code waits to read it, and note when.

    Opening a pipe for reading waits for a writer: code that opens it would hang the test.
    Here it gets an empty read instead (and the test fails on what it asserts), and the list
    this yields says whether anything opened the pipe at all.
    """
    stop, opened = threading.Event(), []

    def watch():
        while not stop.wait(0.01):
            try:  # succeeds only while a reader has the pipe open
                fd = os.open(fifo, os.O_WRONLY | os.O_NONBLOCK)
            except OSError:
                continue
            opened.append(time.monotonic())
            os.close(fd)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    try:
        yield opened
    finally:
        stop.set()
        thread.join()


def test_named_pipe_input_is_an_unreadable_file_never_opened(tmp_path, digits):
    fifo = tmp_path / "7_pipe.png"
    os.mkfifo(fifo)
    good = digits["paths"][0]
    reason = "is a named pipe (FIFO), not a regular file"
    with pipe_watch(fifo) as opened:
        ext = extractor(digits, store=FeatureStore(tmp_path / "store"), on_error="skip")
        result = ext.extract([good, str(fifo), good])
        with pytest.raises(ImageDecodeError) as caught:
            extractor(digits).transform([str(fifo)])
    assert [(e.index, e.source, e.reason) for e in result.errors] == [(1, str(fifo), reason)]
    assert result.indices.tolist() == [0, 2]
    assert str(caught.value).startswith(f"cannot read image {str(fifo)!r}: {reason}")
    assert opened == [], "the pipe was opened (a job without this watch would hang)"


def test_byte_identical_files_are_computed_once_and_share_the_vector(tmp_path, digits):
    X = digits["X"]
    originals = [write_image(tmp_path / f"{i}.png", X[i]) for i in range(3)]
    copies = [tmp_path / "copy-a.png", tmp_path / "copy-b.png", tmp_path / "copy-c.png"]
    for copy, original in zip(copies, [originals[0], originals[0], originals[2]]):
        copy.write_bytes(original.read_bytes())
    broken = [tmp_path / "cut-1.png", tmp_path / "cut-2.png"]
    for path in broken:
        path.write_bytes(originals[1].read_bytes()[:70])
    paths = [str(p) for p in [originals[0], copies[0], originals[1], broken[0], copies[1],
                              originals[2], broken[1], copies[2]]]
    ext = extractor(digits, store=FeatureStore(tmp_path / "store"), on_error="skip",
                    batch_size=3)
    rows = []
    ext.runner_.module.register_forward_pre_hook(lambda _, args: rows.append(len(args[0])))
    result = ext.extract(paths)
    assert sum(rows) == 3  # three distinct readable images; the broken pair is decoded once
    assert (result.n_computed, result.n_reused) == (6, 0)
    assert result.indices.tolist() == [0, 1, 2, 4, 5, 7]
    assert [(e.index, e.source) for e in result.errors] == [(3, paths[3]), (6, paths[6])]
    assert result.errors[0].reason == result.errors[1].reason
    by_path = dict(zip([paths[i] for i in result.indices], result.features))
    for copy, original in [(1, 0), (4, 0), (7, 5)]:
        np.testing.assert_array_equal(by_path[paths[copy]], by_path[paths[original]])
    reference = extractor(digits).transform([str(p) for p in originals])
    np.testing.assert_allclose(result.features[[0, 2, 4]], reference, rtol=1e-5, atol=1e-6)
    assert FeatureStore(tmp_path / "store").info()[0].vectors == 3


def _batches(source: FileSource, num_workers: int) -> list[tuple]:
    return [(b.indices.tolist(), b.images.numpy().copy(),
             [(e.index, e.source, e.reason) for e in b.errors])
            for b in source.iter_batches(batch_size=4, preprocess=None,
                                         num_workers=num_workers, on_error="skip")]


def test_two_workers_give_the_same_batches_errors_and_vectors_as_none(tmp_path, digits):
    paths = [str(tmp_path / Path(p).name) for p in digits["paths"]]
    for src, dst in zip(digits["paths"], paths):
        Path(dst).write_bytes(Path(src).read_bytes())
    Path(paths[5]).write_bytes(b"not an image")
    Path(paths[10]).write_bytes(b"")
    source = FileSource(paths)
    source.digests()
    Path(paths[1]).write_bytes(Path(digits["paths"][7]).read_bytes())  # changed since hashed
    inline, workers = _batches(source, 0), _batches(source, 2)
    assert [b[0] for b in workers] == [[0, 2, 3], [4, 6, 7], [8, 9, 11]]
    assert [b[2] for b in workers] == [
        [(1, paths[1], CHANGED_WHILE_READ)],
        [(5, paths[5], "not an image file, or a format Pillow cannot read")],
        [(10, paths[10], "empty file (0 bytes)")]]
    for (i0, x0, e0), (i2, x2, e2) in zip(inline, workers, strict=True):
        assert (i0, e0) == (i2, e2)
        np.testing.assert_array_equal(x0, x2)

    Path(paths[1]).write_bytes(Path(digits["paths"][1]).read_bytes())
    one, two = (extractor(digits, num_workers=w, batch_size=4, on_error="skip").extract(paths)
                for w in (0, 2))
    assert two.indices.tolist() == [i for i in range(12) if i not in (5, 10)]
    assert [(e.index, e.source) for e in two.errors] == [(5, paths[5]), (10, paths[10])]
    assert (one.indices.tolist(), one.errors) == (two.indices.tolist(), two.errors)
    np.testing.assert_array_equal(two.features, one.features)  # same batches, same rows
    # on_error="raise" in workers: the error crosses the process boundary naming the file.
    with pytest.raises(ImageDecodeError, match=re.escape(repr(paths[5]))) as caught:
        extractor(digits, num_workers=2, batch_size=4).transform(paths)
    assert (caught.value.path, caught.value.reason) == \
        (paths[5], "not an image file, or a format Pillow cannot read")


def test_unreadable_file_hint_names_the_option_as_the_interface_spells_it(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"junk")

    def first_error():
        with pytest.raises(ImageDecodeError) as caught:
            next(FileSource([bad]).iter_batches(batch_size=1, preprocess=None))
        return caught.value

    python = first_error()
    assert str(python) == (f"cannot read image {str(bad)!r}: not an image file, or a format "
                           "Pillow cannot read (pass on_error='skip' to skip unreadable images "
                           "and list them instead)")
    assert python.reason == "not an image file, or a format Pillow cannot read"
    with cli_messages():
        cli = first_error()
    assert "(pass --on-error skip to skip unreadable images" in str(cli)
    assert "on_error=" not in str(cli)


def test_images_of_different_sizes_in_one_batch_name_the_files(tmp_path):
    small = write_image(tmp_path / "small.png", np.zeros((8, 8), np.uint8))
    large = write_image(tmp_path / "large.png", np.zeros((9, 12), np.uint8))
    with pytest.raises(ValueError, match=re.escape(repr(str(small))) + r" is \[1, 8, 8\], "
                       + re.escape(repr(str(large))) + r" is \[1, 9, 12\]"):
        list(FileSource([small, large]).iter_batches(batch_size=2, preprocess=None))


def test_about_is_recorded_for_every_block_before_its_first_vector(tmp_path):
    store = FeatureStore(tmp_path / "store")
    configs = {"mean": {"m": "mean"}, "max": {"m": "max"}}
    seen = []

    def compute(sub):
        for batch in sub.iter_batches(batch_size=2, preprocess=None):
            seen.append({b: store.about(c) for b, c in configs.items()})
            x = batch.images.float().flatten(1)
            yield batch.indices, {"mean": x.mean(1, keepdim=True).numpy(),
                                  "max": x.amax(1, keepdim=True).numpy()}, []

    images = np.arange(4 * 9, dtype=np.uint8).reshape(4, 1, 3, 3)
    about = {"model": "lenet5", "weights": "random weights (seed 0)"}
    cached_features(as_image_source(images), compute, configs=configs, store=store,
                    about=about)
    expected = {b: {**about, "layer": b} for b in configs}
    assert seen == [expected, expected]
    assert {b: store.about(c) for b, c in configs.items()} == expected
