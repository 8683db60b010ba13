"""The Ray engine: same vectors and keys as the local engine, and a killed job resumes cleanly.

These tests start a real local Ray instance (2 CPUs) and real subprocesses; they take about a
minute together. Which process wrote what is read off the store's shard indexes: each names its
writer ``<host>-<pid>-...`` (see :mod:`featclf.store`).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import xxhash
from PIL import Image

from featclf.data import ImagePreprocess, image_files, load_mnist5k
from featclf.extract import DeepFeatureExtractor, FeatureExtraction
from featclf.models import get_model, save_checkpoint
from featclf.store import FeatureStore

ray = pytest.importorskip("ray", reason="the Ray engine needs the featclf[ray] extra")

_OPENED: list[str] = []
_WATCHED: list[str] = []  # folders whose opens in this process are counted


def _audit(event: str, args: tuple) -> None:
    if event == "open" and _WATCHED and isinstance(args[0], str | bytes | os.PathLike):
        path = os.fsdecode(os.fspath(args[0]))
        if path.startswith(tuple(_WATCHED)):
            _OPENED.append(path)


sys.addaudithook(_audit)  # permanent (audit hooks cannot be removed); counts only when asked
pytestmark = [pytest.mark.ray, pytest.mark.slow]


def _digit_folder(root: Path, n: int) -> Path:
    X, y = load_mnist5k(return_X_y=True)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.fromarray(X[i]).save(root / f"{y[i]}.{i:05d}.png")
    return root


def _shard_rows(store: FeatureStore) -> dict[str, int]:
    """Rows per digest over every shard index on disk (duplicates show as counts > 1)."""
    counts: dict[str, int] = {}
    for index in (Path(store.root) / "configs").glob("*/shard-*.json"):
        for d in json.loads(index.read_text())["digests"]:
            counts[d] = counts.get(d, 0) + 1
    return counts


def _rows_per_process(store_dir: Path) -> dict[int, int]:
    """Rows stored per writing process: the pid in each shard index's writer id."""
    rows: dict[int, int] = {}
    for index in store_dir.glob("configs/*/shard-*.json"):
        meta = json.loads(index.read_text())
        match = re.match(r"[A-Za-z0-9]+-(\d+)-", meta["writer"])
        assert match, f"the writer id {meta['writer']!r} of {index.name} names no process"
        rows[int(match.group(1))] = rows.get(int(match.group(1)), 0) + meta["rows"]
    return rows


def _running(pid: int) -> bool:
    """Whether process ``pid`` still runs (a zombie waiting for its parent does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="module")
def ray_local():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield ray
    ray.shutdown()


def test_ray_engine_matches_local_engine_and_store_is_shared(tmp_path, ray_local):
    from featclf.distributed import extract_with_ray

    images = _digit_folder(tmp_path / "digits", 240)
    torch.manual_seed(1)
    save_checkpoint(tmp_path / "lenet5.pt", get_model("lenet5").state_dict(), {"model": "lenet5"})
    files = image_files(images)
    ext = DeepFeatureExtractor("lenet5", weights=tmp_path / "lenet5.pt").fit()
    job = extract_with_ray(files, ext, tmp_path / "store", actors=2, batch_size=32)
    assert (job.n_images, job.n_computed, job.n_reused, job.errors) == (240, 240, 0, [])
    assert isinstance(job, FeatureExtraction)  # the one result type
    assert job.indices.tolist() == list(range(240)) and job.images_per_second > 0
    # Two actor processes did the work: each wrote some of the 240 vectors, and neither is
    # this process; the job's own count of the processes that handled images agrees.
    writers = _rows_per_process(tmp_path / "store")
    assert len(writers) == 2 and os.getpid() not in writers, writers
    assert sum(writers.values()) == 240 and min(writers.values()) >= 1, writers
    assert job.actors == 2
    # The actors describe the configuration as the local engine does (model, weights, layer).
    about = FeatureStore(tmp_path / "store").about(ext.cache_config_(files))
    assert about == {"model": "lenet5", "weights": ext.network_.weights.description,
                     "layer": "penultimate"}
    assert str(tmp_path / "lenet5.pt") in about["weights"]

    reference = ext.transform(files)  # local engine, no store
    local = DeepFeatureExtractor("lenet5", weights=tmp_path / "lenet5.pt",
                                 store=tmp_path / "store").fit()
    again = local.extract(files)
    assert (again.n_computed, again.n_reused) == (0, 240)  # every vector came from Ray's shards
    assert np.abs(again.features - reference).max() < 1e-5
    assert sorted(_shard_rows(FeatureStore(tmp_path / "store")).values()) == [1] * 240

    rerun = extract_with_ray(files, ext, tmp_path / "store", actors=1, batch_size=64)
    assert (rerun.n_computed, rerun.n_reused, rerun.actors) == (0, 240, 1)


def test_ray_engine_skips_and_reports_unreadable_files(tmp_path, ray_local):
    from featclf.distributed import extract_with_ray

    images = _digit_folder(tmp_path / "digits", 40)
    (images / "3.99999.png").write_bytes(b"broken")
    files = image_files(images)
    ext = DeepFeatureExtractor("lenet5", weights="random").fit()
    job = extract_with_ray(files, ext, tmp_path / "store", actors=1, batch_size=16,
                           on_error="skip")
    assert job.n_computed == 40
    assert [Path(e.source).name for e in job.errors] == ["3.99999.png"]
    with pytest.raises(ValueError, match=r"3\.99999\.png"):
        extract_with_ray(files, ext, tmp_path / "store2", actors=1, batch_size=16)


_PREPROCESS = ImagePreprocess(64, 3, (0.5,) * 3, (0.5,) * 3)

_JOB = textwrap.dedent("""
    import sys
    import ray
    from featclf.data import ImagePreprocess, image_files
    from featclf.distributed import extract_with_ray
    from featclf.extract import DeepFeatureExtractor, FeatureExtraction

    images, weights, store = sys.argv[1:4]
    ext = DeepFeatureExtractor("resnet18", weights=weights,
                               preprocess=ImagePreprocess(64, 3, (0.5,) * 3, (0.5,) * 3))
    job = extract_with_ray(image_files(images), ext, store, actors=2, batch_size=12,
                           ray_init_kwargs={"num_cpus": 2})
    print("DONE", job.n_computed, job.n_reused, job.actors, flush=True)
""")


def test_killed_ray_job_with_two_actors_resumes_with_only_the_missing_vectors(tmp_path):
    n = 360
    images = _digit_folder(tmp_path / "digits", n)
    torch.manual_seed(2)
    weights = tmp_path / "r18.pt"
    save_checkpoint(weights, get_model("resnet18", "random", num_classes=10).state_dict(),
                    {"model": "resnet18"})
    script = tmp_path / "job.py"
    script.write_text(_JOB)
    store_dir = tmp_path / "store"
    cmd = [sys.executable, str(script), str(images), str(weights), str(store_dir)]
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "RAY_DEDUP_LOGS": "0"}
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
                            start_new_session=True)
    # Mid-job: both actors have written shards (so both are alive and working).
    deadline = time.monotonic() + 240
    actors: dict[int, int] = {}
    while time.monotonic() < deadline and proc.poll() is None and len(actors) < 2:
        actors = _rows_per_process(store_dir)
        time.sleep(0.02)
    assert proc.poll() is None, "the job ended before it could be killed: " + \
        proc.stdout.read().decode()[-2000:]
    assert len(actors) == 2 and proc.pid not in actors, actors
    os.killpg(proc.pid, signal.SIGKILL)  # the driver and the Ray processes in its session
    for pid in actors:  # and the two actor processes themselves, wherever Ray started them
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline and any(map(_running, actors)):
        time.sleep(0.05)
    assert not any(map(_running, actors)), f"actor processes {list(actors)} survived kill -9"
    # Nothing else was writing: every stored vector came from the two killed actors.
    assert set(_rows_per_process(store_dir)) == set(actors)
    partial = _shard_rows(FeatureStore(store_dir))
    assert 0 < len(partial) < n and set(partial.values()) == {1}

    done = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("DONE"))
    computed, reused, n_actors = map(int, line.split()[1:])
    # The rerun computes exactly what the killed job had not stored, again with two actors.
    assert (computed, reused, n_actors) == (n - len(partial), len(partial), 2)
    assert len(set(_rows_per_process(store_dir)) - set(actors)) == 2
    counts = _shard_rows(FeatureStore(store_dir))
    assert len(counts) == n and set(counts.values()) == {1}  # complete, nothing twice

    # The store now holds what one clean local run computes, the killed job's vectors included.
    files = image_files(images)
    stored = DeepFeatureExtractor("resnet18", weights=weights, preprocess=_PREPROCESS,
                                  device="cpu", store=store_dir).fit().extract(files)
    assert (stored.n_computed, stored.n_reused) == (0, n)
    clean = DeepFeatureExtractor("resnet18", weights=weights, preprocess=_PREPROCESS,
                                 device="cpu").fit().transform(files)
    np.testing.assert_allclose(stored.features, clean, rtol=1e-4, atol=1e-5)


def test_grid_search_runs_on_the_ray_joblib_backend(ray_local):
    import joblib
    from sklearn.datasets import load_digits
    from sklearn.model_selection import GridSearchCV

    from featclf.distributed import ray_joblib_backend
    from featclf.pipelines import make_logistic

    X, y = load_digits(return_X_y=True)
    with ray_joblib_backend():
        backend, _ = joblib.parallel.get_active_backend()
        assert type(backend).__name__ == "RayBackend"
        search = GridSearchCV(make_logistic(), {"clf__C": [0.01, 1.0]}, cv=2, n_jobs=2)
        search.fit(X[:400], y[:400])
    local = GridSearchCV(make_logistic(), {"clf__C": [0.01, 1.0]}, cv=2).fit(X[:400], y[:400])
    assert search.best_params_ == local.best_params_
    assert np.allclose(search.cv_results_["mean_test_score"], local.cv_results_["mean_test_score"])


def test_extract_command_with_ray_engine_fills_the_store_the_local_engine_reuses(
        tmp_path, ray_local, capsys):
    from featclf.cli import main
    from featclf.store._stat import RACY_SECONDS, StatRecord

    images = _digit_folder(tmp_path / "digits", 50)
    time.sleep(RACY_SECONDS + 0.2)  # old enough for the actors to record their stats
    args = ["extract", "--model", "lenet5", "--weights", "random", "--images", str(images),
            "--store", str(tmp_path / "store"), "--no-progress", "--batch-size", "16"]
    assert main([*args, "--engine", "ray", "--actors", "2"]) == 0
    assert "computed        50" in capsys.readouterr().out
    # The actors hashed what they decoded and left it in the store's stat record...
    paths = sorted(str(p) for p in images.iterdir())
    assert StatRecord(tmp_path / "store").lookup(paths) == \
        [xxhash.xxh3_128_hexdigest(Path(p).read_bytes()) for p in paths]
    _OPENED.clear()
    _WATCHED.append(str(images) + os.sep)
    try:
        assert main(args) == 0
    finally:
        _WATCHED.clear()
    out = capsys.readouterr().out
    assert "computed         0" in out and "reused          50" in out
    assert _OPENED == []  # ... so the local rerun opened none of the images
