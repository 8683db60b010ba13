"""The README's "Your own photos in three commands", run as a user would on a folder of photos.

The pretrained weights a user's machine would download are stood in for by a state dict the
test writes where torch keeps downloads (``$TORCH_HOME/hub/checkpoints/<file>``): featclf then
finds them offline exactly as it finds a real download.
"""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torchvision
from imagefile_helpers import write_image

from featclf.models.weights import torchvision_cache_file


def _photos(root, rng, per_class: int = 8):
    """Two classes of 40x48 colour photos: reddish discs and bluish bars, of mixed sizes."""
    for i in range(per_class):
        h, w = (40, 48) if i % 2 else (52, 44)
        disc = np.full((h, w, 3), 235, np.uint8)
        yy, xx = np.mgrid[:h, :w]
        disc[(yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (h / 3) ** 2] = (200, 40 + i, 30)
        write_image(root / "discs" / f"disc_{i}.jpg", disc)
        bars = rng.integers(0, 40, (h, w, 3), dtype=np.uint8)
        bars[:, ::6] = (30, 60, 210 - i)
        write_image(root / "bars" / f"bars_{i}.jpg", bars)


def _run(*args, env, timeout=600):
    return subprocess.run([sys.executable, "-m", "featclf", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


@pytest.mark.slow
def test_own_photos_in_three_commands(tmp_path, rng):
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch"), "FEATCLF_OFFLINE": "1",
           "FEATCLF_DEVICE": "cpu"}
    photos = tmp_path / "photos"
    _photos(photos, rng)

    # Offline and not downloaded yet: the error names the file and the folder to put it in.
    proc = _run("extract", "--model", "resnet18", "--images", str(photos), "--store",
                str(tmp_path / "features"), "--no-progress", env=env)
    os.environ["TORCH_HOME"], old = env["TORCH_HOME"], os.environ.get("TORCH_HOME")
    try:
        cached = torchvision_cache_file("resnet18", "DEFAULT")
    finally:
        os.environ.pop("TORCH_HOME") if old is None else os.environ.update(TORCH_HOME=old)
    assert proc.returncode == 1, proc.stderr
    assert str(cached) in proc.stderr and "--weights random" in proc.stderr
    assert "Traceback" not in proc.stderr

    # "The download": weights of the test's own, where torchvision would have put them.
    torch.manual_seed(0)
    cached.parent.mkdir(parents=True)
    torch.save(torchvision.models.resnet18().state_dict(), cached)

    proc = _run("extract", "--model", "resnet18", "--images", str(photos), "--store",
                str(tmp_path / "features"), "--no-progress", env=env)
    assert proc.returncode == 0, proc.stderr
    assert "torchvision ResNet18_Weights.IMAGENET1K_V1" in proc.stdout
    info = _run("store", "info", str(tmp_path / "features"), "--json", env=env)
    (config,) = json.loads(info.stdout)["configs"]
    assert config["about"]["model"] == "resnet18"
    assert config["about"]["weights"] == "torchvision ResNet18_Weights.IMAGENET1K_V1"
    assert config["vectors"] == 16

    proc = _run("compare", "--data", str(photos), "--model", "resnet18", "--quick",
                "--classifier", "linear_svm", "--classifier", "logistic", "--out",
                str(tmp_path / "report"), env=env)
    assert proc.returncode == 0, proc.stderr
    report = (tmp_path / "report" / "report.md").read_text()
    assert "ResNet18_Weights.IMAGENET1K_V1" in report  # which weights the network started from
    assert "bars" in report and "discs" in report
    with open(tmp_path / "report" / "results.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert {r["classifier"] for r in rows} >= {"softmax", "linear_svm", "logistic"}
