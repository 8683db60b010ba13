"""Shared fixtures: real image files and small trained-or-random networks built per test."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

# Two cores: keep torch from oversubscribing when pytest runs alongside joblib workers.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="no CUDA device on this machine (torch.cuda.is_available() "
                            "is False); gpu tests run where a GPU is present")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


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
