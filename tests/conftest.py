"""Shared fixtures: real image files and small trained-or-random networks built per test."""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np
import pytest
import torch

# Two cores: keep torch from oversubscribing when pytest runs alongside joblib workers.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


# The zoo's weight round trips write up to ~1 GB of checkpoints at once (pytest removes the
# folders of passed tests); a nearly full disk otherwise shows up as torch.save errors.
PEAK_TEMP_BYTES = 1_500_000_000


def pytest_report_header(config):
    folder = tempfile.gettempdir()
    free = shutil.disk_usage(folder).free
    line = (f"temporary files: {folder}, {free / 1e9:.1f} GB free "
            f"(the suite needs about {PEAK_TEMP_BYTES / 1e9:.1f} GB at its peak)")
    if free < PEAK_TEMP_BYTES:
        line += ("; LOW: tests that save checkpoints may fail with 'No space left on device' "
                 "(set TMPDIR to a roomier folder)")
    return line


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device on this machine (torch.cuda.is_available() "
                            "is False); gpu tests run where a GPU is present")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _cpu_unless_marked_gpu(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch):
    # On a CUDA host "auto" would mean the GPU (and bf16): tests that compare numbers to 1e-4
    # or bit for bit are CPU tests unless marked gpu, whose tests name their device.
    if "gpu" not in request.node.keywords:
        monkeypatch.setenv("FEATCLF_DEVICE", "cpu")


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(0)


@pytest.fixture(scope="session")
def mnist_small():
    """400 MNIST-5k digits (40 per class) and their labels."""
    from featclf.data import load_mnist5k

    X, y = load_mnist5k(return_X_y=True)
    idx = np.concatenate([np.flatnonzero(y == c)[:40] for c in range(10)])
    return X[idx], y[idx]


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """Print how many named bad-input cases ran and passed (issue: >= 25)."""
    passed = terminalreporter.stats.get("passed", [])
    failed = terminalreporter.stats.get("failed", [])
    ours = [r for r in passed if "bad_input" in r.keywords]
    bad = [r for r in failed if "bad_input" in r.keywords]
    if ours or bad:
        terminalreporter.write_line(f"bad-input suite: {len(ours)} named cases passed, "
                                    f"{len(bad)} failed")
