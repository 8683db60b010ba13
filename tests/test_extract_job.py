"""`featclf extract` and `featclf store` as batch jobs: resume after kill -9, concurrent writers,
damaged shards, cache misses and hits, error manifests, export.

The images are real PNG files of MNIST-5k digits; the network is LeNet-5 with weights the test
saves. Jobs that must be killed or run side by side are real ``featclf`` subprocesses.
"""

from __future__ import annotations

import csv
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
from imagefile_helpers import write_image

from featclf.cli import main
from featclf.data import image_files, load_mnist5k
from featclf.data.transforms import ImagePreprocess
from featclf.extract import DeepFeatureExtractor
from featclf.models import save_checkpoint
from featclf.models.seed import LeNet5
from featclf.store import FeatureStore

REPO = Path(__file__).resolve().parents[1]
N_IMAGES = 1200


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """1,200 digit PNGs named ``<label>_<i>.png``, LeNet-5 weights, and reference vectors."""
    root = tmp_path_factory.mktemp("job")
    X, y = load_mnist5k(return_X_y=True)
    paths = [str(write_image(root / "images" / f"{y[i]}_{i:04d}.png", X[i]))
             for i in range(N_IMAGES)]
    torch.manual_seed(1)
    weights = root / "lenet5.pt"
    save_checkpoint(weights, LeNet5().state_dict(), {"model": "lenet5"})
    reference = DeepFeatureExtractor("lenet5", weights=str(weights), batch_size=64).fit()
    return {"root": root, "images": root / "images", "paths": paths, "weights": weights,
            "vectors": reference.transform(paths), "labels": y[:N_IMAGES]}


def featclf_process(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.Popen([sys.executable, "-m", "featclf", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, cwd=REPO)


def extract_args(job, store: Path, images: str | Path | None = None, *extra: str) -> list[str]:
    return ["extract", "--model", "lenet5", "--weights", str(job["weights"]),
            "--images", str(images or job["images"]), "--store", str(store), "--no-progress",
            *extra]


def summary_counts(stdout: str) -> dict[str, int]:
    return {k: int(re.search(rf"^\s+{k}\s+(\d+)", stdout, re.M).group(1))
            for k in ("computed", "reused", "skipped")}


def stored_vectors(store: Path, job) -> dict[str, np.ndarray]:
    """path -> vector of every vector in the store (there must be one configuration)."""
    digests, paths, labels, vectors = FeatureStore(store).entries(FeatureStore(store).configs()[0])
    assert len(set(digests)) == len(digests)
    return dict(zip(paths, vectors))


def assert_matches_reference(store: Path, job, paths: list[str]) -> None:
    """The store holds exactly the vectors an uninterrupted in-process run computes."""
    got = stored_vectors(store, job)
    assert sorted(got) == sorted(paths), "vectors missing from, or extra in, the store"
    expected = dict(zip(job["paths"], job["vectors"]))
    # Bit for bit: LeNet-5's CPU forward of one image does not depend on its batch.
    np.testing.assert_array_equal(np.stack([got[p] for p in paths]),
                                  np.stack([expected[p] for p in paths]))


def copy_images(folder: Path, job, n: int) -> Path:
    """A new folder holding copies of the job's first ``n`` images."""
    folder.mkdir()
    for p in job["paths"][:n]:
        shutil.copy(p, folder)
    return folder


def write_csv(path: Path, job, indices) -> Path:
    path.write_text("path,label\n" + "".join(f"{job['paths'][i]},{job['labels'][i]}\n"
                                             for i in indices))
    return path


@pytest.mark.slow
def test_killed_job_resumes_with_identical_vectors(tmp_path, job):
    store = tmp_path / "store"
    proc = featclf_process(*extract_args(job, store, None, "--batch-size", "8",
                                         "--shard-rows", "8"))
    deadline = time.monotonic() + 300
    while len(list(store.glob("configs/*/shard-*.json"))) < 10:  # 10 of 150 shards written
        assert proc.poll() is None, f"the job ended before the kill: {proc.stderr.read()}"
        assert time.monotonic() < deadline, "fewer than 10 shards after 300 s"
        time.sleep(0.005)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL
    before = FeatureStore(store).info()[0].vectors
    assert 0 < before < N_IMAGES, "the kill did not land mid-run"
    print(f"killed after {before} of {N_IMAGES} vectors were stored")

    resumed = featclf_process(*extract_args(job, store))
    out, err = resumed.communicate(timeout=600)
    assert resumed.returncode == 0, err
    counts = summary_counts(out)
    assert counts == {"computed": N_IMAGES - before, "reused": before, "skipped": 0}
    info = FeatureStore(store).info()[0]
    assert (info.vectors, info.duplicates) == (N_IMAGES, 0)  # none missing, none twice
    assert_matches_reference(store, job, job["paths"])
    assert main(["store", "verify", str(store)]) == 0
    assert main(["store", "prune", str(store)]) == 0  # removes what the kill left in flight
    assert not list(store.rglob(".tmp-*"))


@pytest.mark.slow
def test_two_concurrent_writers_leave_every_vector_once(tmp_path, job):
    store = tmp_path / "store"
    first = write_csv(tmp_path / "a.csv", job, range(0, 400))
    second = write_csv(tmp_path / "b.csv", job, range(200, 600))
    procs = [featclf_process(*extract_args(job, store, csv, "--batch-size", "16",
                                           "--shard-rows", "16")) for csv in (first, second)]
    for proc in procs:
        out, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    assert main(["store", "verify", str(store)]) == 0
    assert FeatureStore(store).info()[0].vectors == 600
    assert main(["store", "prune", str(store)]) == 0
    info = FeatureStore(store).info()[0]
    assert (info.vectors, info.duplicates) == (600, 0)
    assert sum(np.load(p, mmap_mode="r").shape[0]
               for p in store.glob("configs/*/shard-*.npy")) == 600
    assert_matches_reference(store, job, job["paths"][:600])


def test_second_run_computes_nothing_and_reports_all_reused(tmp_path, job, capsys):
    images = copy_images(tmp_path / "images", job, 150)
    store = tmp_path / "store"
    assert main(extract_args(job, store, images, "--shard-rows", "50")) == 0
    assert summary_counts(capsys.readouterr().out) == {"computed": 150, "reused": 0,
                                                       "skipped": 0}
    assert main(extract_args(job, store, images)) == 0
    assert summary_counts(capsys.readouterr().out) == {"computed": 0, "reused": 150,
                                                       "skipped": 0}
    # Renaming and moving files keeps their content, so they still hit.
    moved = tmp_path / "elsewhere" / "digit.png"
    moved.parent.mkdir()
    first = sorted(images.iterdir())[0]
    shutil.move(first, moved)
    (images / "sub").mkdir()
    shutil.move(sorted(images.glob("*.png"))[0], images / "sub" / "renamed_7.png")
    assert main(extract_args(job, store, images, "--labels", "none")) == 0
    assert summary_counts(capsys.readouterr().out) == {"computed": 0, "reused": 149,
                                                       "skipped": 0}
    ext = DeepFeatureExtractor("lenet5", weights=str(job["weights"]), store=store).fit()
    assert ext.extract([str(moved)]).n_reused == 1


def test_unreadable_images_go_to_the_error_manifest_or_fail_the_job(tmp_path, job, capsys):
    images = copy_images(tmp_path / "images", job, 20)
    (images / "3_truncated.png").write_bytes(Path(job["paths"][0]).read_bytes()[:60])
    store = tmp_path / "store"
    assert main(extract_args(job, store, images, "--on-error", "skip")) == 0
    out = capsys.readouterr().out
    assert summary_counts(out) == {"computed": 20, "reused": 0, "skipped": 1}
    assert "errors.csv" in out
    manifest = (store / "errors.csv").read_text().splitlines()
    assert manifest[0] == "path,reason" and len(manifest) == 2
    assert manifest[1].startswith(str(images / "3_truncated.png") + ",")
    elsewhere = tmp_path / "bad.csv"
    assert main(extract_args(job, store, images, "--on-error", "skip", "--errors",
                             str(elsewhere))) == 0
    assert len(elsewhere.read_text().splitlines()) == 2
    assert main(extract_args(job, store, images)) != 0  # --on-error raise (the default)
    assert "3_truncated.png" in capsys.readouterr().err


def test_raise_keeps_every_batch_computed_before_the_failing_one(tmp_path, job):
    paths = [str(p) for p in copy_images(tmp_path / "images", job, 16).glob("*.png")]
    paths.sort()
    broken = Path(paths[9])  # in the third batch of four
    broken.write_bytes(broken.read_bytes()[:60])
    store = FeatureStore(tmp_path / "store", shard_rows=4)
    ext = DeepFeatureExtractor("lenet5", weights=str(job["weights"]), batch_size=4,
                               store=store).fit()
    with pytest.raises(ValueError, match=re.escape(str(broken)) + ".*truncated"):
        ext.extract(paths)
    # Batches 0 and 1 were computed before batch 2 failed: all eight vectors are kept.
    got = stored_vectors(tmp_path / "store", job)
    assert sorted(got) == paths[:8]
    expected = dict(zip(job["paths"], job["vectors"]))
    np.testing.assert_allclose(np.stack([got[p] for p in paths[:8]]),
                               np.stack([expected[str(job["images"] / Path(p).name)]
                                         for p in paths[:8]]), rtol=1e-5, atol=1e-6)


def test_undecodable_file_name_is_listed_in_the_error_manifest_by_the_cli(tmp_path, job,
                                                                          capsys):
    images = copy_images(tmp_path / "images", job, 6)
    bad = os.path.join(os.fsencode(images), b"bad\xff.png")  # not valid UTF-8
    with open(bad, "wb") as fh:
        fh.write(b"not an image")
    store = tmp_path / "store"
    assert main(extract_args(job, store, images, "--on-error", "skip", "--labels", "none")) == 0
    out = capsys.readouterr().out
    assert summary_counts(out) == {"computed": 6, "reused": 0, "skipped": 1}
    assert f"(listed in {store / 'errors.csv'})" in out
    with open(store / "errors.csv", newline="", encoding="utf-8") as fh:
        manifest = list(csv.reader(fh))
    assert manifest == [["path", "reason"], [f"{images}{os.sep}bad\\xff.png",
                                             "not an image file, or a format Pillow cannot read"]]
    assert FeatureStore(store).info()[0].vectors == 6


def test_flipped_bytes_fail_verify_and_are_never_returned(tmp_path, job, capsys):
    store = tmp_path / "store"
    paths = job["paths"][:96]
    truth = job["vectors"][:96]
    ext = DeepFeatureExtractor("lenet5", weights=str(job["weights"]),
                               store=FeatureStore(store, shard_rows=32)).fit()
    ext.transform(paths)
    victim = sorted(store.glob("configs/*/shard-*.npy"))[1]
    data = bytearray(victim.read_bytes())
    data[200:216] = bytes(b ^ 0x5A for b in data[200:216])
    victim.write_bytes(bytes(data))
    capsys.readouterr()
    assert main(["store", "verify", str(store)]) == 1
    err = capsys.readouterr().err
    assert victim.name in err and "checksum" in err
    fresh = DeepFeatureExtractor("lenet5", weights=str(job["weights"]), store=store).fit()
    with pytest.warns(UserWarning, match=victim.stem):
        result = fresh.extract(paths)
    assert (result.n_computed, result.n_reused) == (32, 64)
    np.testing.assert_allclose(result.features, truth, rtol=1e-5, atol=1e-6)
    assert main(["store", "prune", str(store)]) == 0
    assert main(["store", "verify", str(store)]) == 0
    np.testing.assert_allclose(fresh.transform(paths), truth, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("change", ["weights", "layer", "pooling", "preprocessing"])
def test_changed_setting_misses(tmp_path, job, change):
    X = load_mnist5k(return_X_y=True)[0][:40]
    store = FeatureStore(tmp_path / "store")
    base = dict(model="lenet5", weights=str(job["weights"]), layer="c3", pooling="avg",
                store=store)
    assert DeepFeatureExtractor(**base).fit().extract(X).n_computed == 40
    assert DeepFeatureExtractor(**base).fit().extract(X).n_reused == 40  # the control
    if change == "weights":
        state = LeNet5().state_dict()
        state.update(torch.load(job["weights"], weights_only=True)["state_dict"])
        state["c1.0.bias"] = state["c1.0.bias"] + 1e-3  # one tensor, slightly
        changed = {**base, "weights": state}
    elif change == "layer":
        changed = {**base, "layer": "c5"}
    elif change == "pooling":
        changed = {**base, "pooling": "max"}
    else:
        changed = {**base, "preprocess": ImagePreprocess(28, 1, (0.5,), (0.5,))}
    result = DeepFeatureExtractor(**changed).fit().extract(X)
    assert (result.n_computed, result.n_reused) == (40, 0)
    assert len(store.configs()) == 2


def test_jpeg_draft_and_auto_batch_options_of_the_cli(tmp_path, job, capsys):
    images = copy_images(tmp_path / "images", job, 20)
    store = tmp_path / "store"
    assert main(extract_args(job, store, images, "--jpeg-draft", "--batch-size", "auto")) == 0
    assert summary_counts(capsys.readouterr().out)["computed"] == 20
    (key,) = FeatureStore(store).configs()
    assert FeatureStore(store).config(key)["jpeg_draft"] == 56  # twice lenet5's 28 px
    # PNGs decode at full size either way: the same vectors, kept under their own key.
    got = stored_vectors(store, job)
    np.testing.assert_array_equal(np.stack([got[str(images / Path(p).name)]
                                            for p in job["paths"][:20]]), job["vectors"][:20])
    assert main(extract_args(job, store, images, "--batch-size", "7")) == 0
    assert summary_counts(capsys.readouterr().out)["computed"] == 20
    assert len(FeatureStore(store).configs()) == 2
    assert main(extract_args(job, store, images, "--batch-size", "big")) == 2  # usage error
    assert "must be an integer or 'auto'" in capsys.readouterr().err


def test_store_commands_info_export_and_prune_config(tmp_path, job, capsys):
    images = copy_images(tmp_path / "images", job, 30)
    store = tmp_path / "store"
    assert main(extract_args(job, store, images)) == 0
    assert main(extract_args(job, store, images, "--layer", "c5")) == 0
    capsys.readouterr()
    assert main(["store", "info", str(store)]) == 0
    out = capsys.readouterr().out
    assert "2 configuration(s)" in out and "30 vectors x 84" in out and "30 vectors x 120" in out
    files = image_files(images)
    key = next(k for k in FeatureStore(store).configs()
               if FeatureStore(store).config(k)["layer"] == "penultimate")
    assert main(["store", "export", str(store), str(tmp_path / "f.parquet"), "--config",
                 key[:10]]) == 0
    table = pq.read_table(tmp_path / "f.parquet").to_pylist()
    assert sorted(r["path"] for r in table) == sorted(files.paths)
    label_of = dict(zip(files.paths, files.labels.tolist()))
    assert all(r["label"] == label_of[r["path"]] and len(r["vector"]) == 84 for r in table)
    assert main(["store", "export", str(store), str(tmp_path / "f.npz")]) == 2  # which config?
    assert main(["store", "prune", str(store), "--config", key]) == 0
    assert FeatureStore(store).configs() != [] and key not in FeatureStore(store).configs()
    assert main(["store", "info", str(tmp_path / "nothing")]) == 1  # a runtime failure
