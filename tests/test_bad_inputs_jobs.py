"""Bad inputs in whole jobs: a messy folder, a full disk, damaged store files, bad training files.

Part of the bad-input suite (counted in the summary line with tests/test_bad_inputs.py).
"""

from __future__ import annotations

import csv
import errno
import io
import json
import os
from pathlib import Path

import numpy as np
import pytest
from imagefile_helpers import write_image
from PIL import Image

from featclf import DeepFeatureExtractor, FeatureStore, SoftmaxClassifier
from featclf.cli import main
from featclf.data import image_files, load_mnist5k
from featclf.data.decode import ImageDecodeError
from featclf.data.sources import SkippedImagesWarning
from featclf.store import StoreError

pytestmark = pytest.mark.bad_input


def _good_images(folder: Path, n: int) -> list[Path]:
    X, y = load_mnist5k(return_X_y=True)
    picks = [(i, (i * 503) % len(X)) for i in range(n)]  # MNIST-5k is sorted: every class
    return [write_image(folder / f"{y[k]}.{i:04d}.png", X[k]) for i, k in picks]


def _bad_images(folder: Path) -> list[Path]:
    """20 unreadable files of five kinds, named like images of the folder's classes."""
    jpeg = io.BytesIO()
    Image.effect_noise((64, 64), 50).convert("RGB").save(jpeg, "JPEG")
    png = io.BytesIO()
    Image.effect_noise((64, 64), 50).save(png, "PNG")
    kinds = {
        "truncated.jpg": jpeg.getvalue()[:600],
        "empty.png": b"",
        "text.jpg": b"this is a text file, not a photo\n" * 10,
        "pdf.tif": b"%PDF-1.4\n%%EOF\n",
        "cut.png": png.getvalue()[:200],
    }
    paths = []
    for kind, data in kinds.items():
        for j in range(4):
            path = folder / f"{j}.bad-{j}-{kind}"
            path.write_bytes(data)
            paths.append(path)
    return paths


def test_messy_folder_skip_gives_clean_vectors_and_names_every_bad_file(tmp_path, capsys):
    good = _good_images(tmp_path / "images", 100)
    bad = _bad_images(tmp_path / "images")
    store = tmp_path / "store"
    code = main(["extract", "--model", "lenet5", "--weights", "random", "--images",
                 str(tmp_path / "images"), "--store", str(store), "--on-error", "skip",
                 "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "computed       100" in out and "skipped         20" in out
    with open(store / "errors.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert sorted(Path(r["path"]).name for r in rows) == sorted(p.name for p in bad)
    assert all(r["reason"] for r in rows)
    reasons = {Path(r["path"]).name.split("-", 2)[2]: r["reason"] for r in rows}
    assert "empty file" in reasons["empty.png"]
    assert "truncated" in reasons["truncated.jpg"]
    clean = DeepFeatureExtractor("lenet5", "random").fit().transform([str(p) for p in good])
    cached = DeepFeatureExtractor("lenet5", "random", store=store).fit().extract(
        [str(p) for p in good])
    assert (cached.n_computed, cached.n_reused) == (0, 100)
    assert np.array_equal(cached.features, clean)


def test_messy_folder_raise_names_the_first_bad_file_and_keeps_work(tmp_path, capsys):
    _good_images(tmp_path / "images", 30)
    _bad_images(tmp_path / "images")
    code = main(["extract", "--model", "lenet5", "--weights", "random", "--images",
                 str(tmp_path / "images"), "--store", str(tmp_path / "store"), "--no-progress",
                 "--batch-size", "8"])
    err = capsys.readouterr().err
    assert code == 1  # a runtime failure, not a usage error
    assert "cannot read image" in err and ".bad-" in err and "--on-error skip" in err


@pytest.mark.parametrize("code,needle", [(errno.ENOSPC, "No space left on device"),
                                         (errno.EROFS, "Read-only file system")])
def test_disk_full_or_read_only_store_keeps_every_vector_written_before(tmp_path, monkeypatch,
                                                                      code, needle):
    X, _ = load_mnist5k(return_X_y=True)
    store = FeatureStore(tmp_path / "store", shard_rows=16)
    ext = DeepFeatureExtractor("lenet5", "random", store=store, batch_size=16).fit()
    first = ext.extract(X[:64])
    real_fsync, calls = os.fsync, {"n": 0}

    def failing_fsync(fd):
        calls["n"] += 1
        if calls["n"] > 2:  # the first shard of the next job gets through, then the disk fills
            raise OSError(code, os.strerror(code))
        return real_fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError, match=rf"cannot write shard-.*{needle}.*Every vector written "
                                      "before is kept"):
        ext.extract(X[64:256])
    monkeypatch.undo()
    leftovers = [p.name for p in (tmp_path / "store").rglob(".tmp-*")]
    assert leftovers == []
    again = DeepFeatureExtractor("lenet5", "random", store=tmp_path / "store").fit().extract(X[:64])
    assert (again.n_computed, again.n_reused) == (0, 64)
    assert np.array_equal(again.features, first.features)
    resumed = ext.extract(X[:256])
    assert resumed.n_reused >= 64 + 16 and resumed.n_computed + resumed.n_reused == 256


def test_damaged_shard_index_is_reported_and_its_vectors_recomputed(tmp_path):
    X, _ = load_mnist5k(return_X_y=True)
    ext = DeepFeatureExtractor("lenet5", "random",
                               store=FeatureStore(tmp_path / "s", shard_rows=20),
                               batch_size=20).fit()
    reference = ext.extract(X[:60]).features
    index = sorted((tmp_path / "s").glob("configs/*/shard-*.json"))[0]
    index.write_bytes(b'{"digests": [1, 2')  # cut short mid-write by some other tool
    report = FeatureStore(tmp_path / "s").verify()
    assert not report.ok and index.stem in str(report)
    with pytest.warns(UserWarning):
        again = DeepFeatureExtractor("lenet5", "random", store=tmp_path / "s").fit().extract(X[:60])
    assert again.n_reused == 40 and again.n_computed == 20
    assert np.array_equal(again.features, reference)


def test_damaged_store_metadata_is_a_clear_error(tmp_path):
    FeatureStore(tmp_path / "s")
    (tmp_path / "s" / "featclf-store.json").write_text("{not json")
    with pytest.raises(StoreError, match=r"featclf-store\.json is damaged"):
        FeatureStore(tmp_path / "s")


def test_store_path_that_is_a_file_is_refused(tmp_path):
    (tmp_path / "store").write_text("x")
    with pytest.raises(StoreError, match="is a file; pass a directory"):
        FeatureStore(tmp_path / "store")


def test_trainer_skips_unreadable_training_files_when_asked(tmp_path):
    _good_images(tmp_path / "images", 40)
    every_kind = _bad_images(tmp_path / "images")
    bad = every_kind[::7]
    for path in set(every_kind) - set(bad):
        path.unlink()
    files = image_files(tmp_path / "images")
    clf = SoftmaxClassifier("lenet5", epochs=1, validation_fraction=0, random_state=0,
                            on_error="skip")
    with pytest.warns(SkippedImagesWarning, match="3 of 43 training images"):
        clf.fit(files, files.labels)
    assert sorted(Path(e.source).name for e in clf.skipped_) == sorted(p.name for p in bad)
    with pytest.raises(ImageDecodeError, match=r"\.bad-"):
        SoftmaxClassifier("lenet5", epochs=1, validation_fraction=0,
                          random_state=0).fit(files, files.labels)


def test_store_index_with_wrong_row_count_never_returns_wrong_vectors(tmp_path):
    X, _ = load_mnist5k(return_X_y=True)
    ext = DeepFeatureExtractor("lenet5", "random",
                               store=FeatureStore(tmp_path / "s", shard_rows=10),
                               batch_size=10).fit()
    reference = ext.extract(X[:30]).features
    index = sorted((tmp_path / "s").glob("configs/*/shard-*.json"))[0]
    data = json.loads(index.read_text())
    data["digests"] = data["digests"][::-1]  # an index that no longer matches its shard
    index.write_text(json.dumps(data))
    again = DeepFeatureExtractor("lenet5", "random", store=tmp_path / "s").fit()
    with pytest.warns(UserWarning):
        out = again.extract(X[:30])
    assert np.array_equal(out.features, reference)
