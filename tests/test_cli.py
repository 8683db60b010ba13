"""The ``featclf`` command as a process: start-up imports, exit codes, pipes, messages.

Every behaviour that belongs to the process (what it imports before it works, its exit code,
what it writes to stderr when its reader goes away or it is interrupted) is tested by running
the real command in a fresh interpreter (``python -m featclf ...``).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import featclf.cli
from featclf.cli import build_parser

#: Modules a command must not import just to parse its arguments or to run `store`.
HEAVY = ("torch", "torchvision", "sklearn")
TRACEBACK = "Traceback (most recent call last)"


def featclf_cmd(*args: str, timeout: float = 180, **kwargs) -> subprocess.CompletedProcess:
    """Run ``python -m featclf ARGS`` and capture its output as text."""
    return subprocess.run([sys.executable, "-m", "featclf", *args], capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def python(code: str, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run ``code`` in a fresh interpreter."""
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=timeout)


def heavy_imports_after(code: str) -> list[str]:
    """The HEAVY modules a fresh interpreter has imported after running ``code``."""
    report = f"import sys, json\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    proc = python(textwrap.dedent(code) + "\n" + report)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout.strip().splitlines()[-1])


def write_images(folder: Path, names: list[str], size: int = 28, seed: int = 0) -> list[Path]:
    """Small grey PNGs with random pixels."""
    rng = np.random.default_rng(seed)
    paths = []
    for name in names:
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (size, size), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


@pytest.fixture
def lenet_weights(tmp_path) -> Path:
    """A LeNet-5 state dict saved by the test (no download)."""
    from featclf.models import load_network

    path = tmp_path / "lenet5.pt"
    torch.save(load_network("lenet5", "random", seed=3).module.state_dict(), path)
    return path


# --------------------------------------------------------------------------- start-up imports


@pytest.mark.parametrize("command", featclf.cli.COMMANDS)
def test_command_module_imports_no_torch_or_sklearn(command):
    # Building the parser imports every command module: each one must leave torch, torchvision
    # and scikit-learn to its run function (the failing command names its module's owner).
    assert heavy_imports_after(f"import featclf.cli.{command}_cmd") == []


def test_help_imports_no_torch_or_sklearn():
    proc = featclf_cmd("--help")
    assert proc.returncode == 0 and "COMMAND" in proc.stdout
    assert heavy_imports_after("""
        import contextlib, io
        from featclf.cli import main
        with contextlib.redirect_stdout(io.StringIO()):
            assert main(["--help"]) == 0
            assert main(["extract", "--help"]) == 0
    """) == []


def test_store_info_imports_no_torch_or_sklearn(tmp_path):
    from featclf.store import FeatureStore

    store = FeatureStore(tmp_path / "store")
    store.put({"model": "m", "layer": "x"}, ["a" * 32, "b" * 32], np.ones((2, 3), np.float32))
    loaded = heavy_imports_after(f"""
        from featclf.cli import main
        assert main(["store", "info", {str(store.root)!r}]) == 0
    """)
    assert loaded == []


def test_parser_constants_agree_with_the_library():
    # Spelled out in the command modules so that building the parser imports no torch.
    from featclf.cli import extract_cmd, train_cmd
    from featclf.models.head import POOLINGS
    from featclf.store import DTYPES
    from featclf.train import OPTIMIZERS

    assert extract_cmd.POOLINGS == POOLINGS
    assert extract_cmd.DTYPES == DTYPES
    assert train_cmd.OPTIMIZERS == OPTIMIZERS


# --------------------------------------------------------------------------- exit codes


def test_argparse_usage_error_exits_2_without_traceback(tmp_path):
    proc = featclf_cmd("extract", "--model", "lenet5", "--images", str(tmp_path))
    assert proc.returncode == 2
    assert "featclf extract: error: the following arguments are required: --store" in proc.stderr
    assert TRACEBACK not in proc.stderr


def test_bad_flag_value_is_a_usage_error_before_any_work(tmp_path):
    proc = featclf_cmd("extract", "--model", "lenet5", "--images", str(tmp_path), "--store",
                       str(tmp_path / "s"), "--batch-size", "0")
    assert proc.returncode == 2
    assert "featclf extract: error: argument --batch-size: must be at least 1" in proc.stderr
    assert not (tmp_path / "s").exists()


def test_parameter_check_of_a_flag_exits_2_naming_the_flag(tmp_path):
    # --epochs 0 passes argparse (an int) and is refused by SoftmaxClassifier's parameter
    # check: a usage error, reported as the flag.
    proc = featclf_cmd("train", "--data", "digits", "--out", str(tmp_path / "m.pt"),
                       "--epochs", "0", "--no-progress")
    assert proc.returncode == 2, proc.stderr
    assert "usage: featclf train" in proc.stderr
    assert re.search(r"featclf train: error: argument --epochs: The 'epochs' parameter of "
                     r"SoftmaxClassifier must be an int in the range \[1, inf\)\. Got 0",
                     proc.stderr), proc.stderr
    assert TRACEBACK not in proc.stderr and not (tmp_path / "m.pt").exists()


def test_missing_store_is_a_runtime_failure_exit_1(tmp_path):
    missing = tmp_path / "no-such-store"
    proc = featclf_cmd("store", "info", str(missing))
    assert proc.returncode == 1, proc.stderr
    assert proc.stderr.startswith("featclf store info: error: ")
    assert str(missing) in proc.stderr and TRACEBACK not in proc.stderr


def test_missing_weights_file_exits_1_naming_it(tmp_path):
    write_images(tmp_path / "img", ["a.png"])
    missing = tmp_path / "nowhere.pt"
    proc = featclf_cmd("extract", "--model", "lenet5", "--weights", str(missing), "--images",
                       str(tmp_path / "img"), "--store", str(tmp_path / "s"), "--no-progress")
    assert proc.returncode == 1, proc.stderr
    assert "featclf extract: error: " in proc.stderr and str(missing) in proc.stderr
    assert TRACEBACK not in proc.stderr


def test_unreadable_image_exits_1_with_the_cli_flag_as_hint(tmp_path, lenet_weights):
    write_images(tmp_path / "img", ["a.png", "b.png"])
    (tmp_path / "img" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    proc = featclf_cmd("extract", "--model", "lenet5", "--weights", str(lenet_weights),
                       "--images", str(tmp_path / "img"), "--store", str(tmp_path / "s"),
                       "--no-progress")
    assert proc.returncode == 1, proc.stderr
    assert "featclf extract: error: cannot read image" in proc.stderr
    assert "broken.png" in proc.stderr and "--on-error skip" in proc.stderr
    assert "on_error=" not in proc.stderr and TRACEBACK not in proc.stderr


def test_ctrl_c_exits_130_without_traceback(tmp_path, lenet_weights):
    write_images(tmp_path / "img", [f"{i}.png" for i in range(40)])
    # SIGINT arrives while the command is at work: as the first vectors reach the store. The
    # child restores Python's handler: a test run started in the background (`make test &`)
    # inherits SIGINT ignored, and the job would then finish (rc 0, nothing on stderr).
    proc = python(f"""
        import os, signal, sys
        from featclf.store import _writer

        signal.signal(signal.SIGINT, signal.default_int_handler)

        add = _writer.ShardWriter.add

        def add_then_interrupt(self, *args, **kwargs):
            os.kill(os.getpid(), signal.SIGINT)
            return add(self, *args, **kwargs)

        _writer.ShardWriter.add = add_then_interrupt
        from featclf.cli import main
        sys.exit(main(["extract", "--model", "lenet5", "--weights", {str(lenet_weights)!r},
                       "--images", {str(tmp_path / "img")!r},
                       "--store", {str(tmp_path / "s")!r}, "--no-progress"]))
    """)
    assert proc.returncode == 130, proc.stderr
    assert "featclf extract: interrupted; work already written is kept" in proc.stderr
    assert TRACEBACK not in proc.stderr


# --------------------------------------------------------------------------- broken pipes


def read_first_line_then_close(*args: str) -> tuple[int, bytes, bytes]:
    """``featclf ARGS | head -1`` with a one-page pipe: the command outlives its reader."""
    read_end, write_end = os.pipe()
    # The smallest pipe Linux allows (one page): output longer than a page plus the first
    # line must meet a closed pipe, whatever the timing.
    fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 4096)
    proc = subprocess.Popen([sys.executable, "-m", "featclf", *args], stdout=write_end,
                            stderr=subprocess.PIPE)
    os.close(write_end)
    first = b""
    while not first.endswith(b"\n"):
        byte = os.read(read_end, 1)  # byte by byte: take nothing beyond the first line
        if not byte:
            break
        first += byte
    os.close(read_end)
    _, err = proc.communicate(timeout=180)
    return proc.returncode, first, err


def test_store_info_into_a_closed_pipe_is_quiet(tmp_path):
    from featclf.store import FeatureStore

    store = FeatureStore(tmp_path / "store")
    for i in range(60):  # ~6 KB of `store info` lines: more than the pipe holds
        store.put({"model": f"net{i}", "layer": "penultimate"}, [f"{i:032x}"],
                  np.full((1, 4), i, np.float32))
    rc, first, err = read_first_line_then_close("store", "info", str(store.root))
    assert first.startswith(b"store ")
    assert err == b""
    assert rc == 141  # 128 + SIGPIPE: the output did meet the closed pipe


@pytest.mark.slow  # lists every torchvision model: half a minute on two busy cores
def test_models_into_a_closed_pipe_is_quiet():
    rc, first, err = read_first_line_then_close("models", "--all")
    assert first.split()[:2] == [b"name", b"input"]
    assert err == b""
    assert rc == 141


# --------------------------------------------------------------------------- help texts


def _helps(parser) -> dict[str, str]:
    """Every (sub)command's full help text, by program name."""
    out = {parser.prog: parser.format_help()}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                out.update(_helps(sub))
    return out


@pytest.mark.parametrize("prog", sorted(_helps(build_parser())))
def test_help_has_no_tutorial_jargon(prog):
    text = " ".join(_helps(build_parser())[prog].split())
    jargon = re.findall(r"seed ?0\d*|seed tutorial|seed's", text, flags=re.IGNORECASE)
    assert jargon == [], f"{prog} --help says {jargon}"


def test_weights_help_names_the_pretrained_default_and_random():
    helps = _helps(build_parser())
    for prog in ("featclf extract", "featclf train"):
        text = " ".join(helps[prog].split())
        assert "pretrained weights" in text and "random: random initialisation" in text


# --------------------------------------------------------------------------- extract and train


def test_extract_csv_with_header_prints_the_weights_used(tmp_path, lenet_weights):
    write_images(tmp_path / "img", ["one.png", "two.png", "three.png"])
    (tmp_path / "img" / "list.csv").write_text("image,kind\none.png,cat\ntwo.png,dog\n"
                                               "three.png,cat\n")
    proc = featclf_cmd("extract", "--model", "lenet5", "--weights", str(lenet_weights),
                       "--images", str(tmp_path / "img" / "list.csv"), "--path-column",
                       "image", "--label-column", "kind", "--store", str(tmp_path / "s"),
                       "--no-progress")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("featclf extract: 3 images, lenet5 ")  # the header is no image
    weights = next(line for line in lines if line.strip().startswith("weights"))
    assert str(lenet_weights) in weights
    assert re.search(r"computed +3$", proc.stdout, flags=re.MULTILINE)
    exported = tmp_path / "out.npz"
    assert featclf_cmd("store", "export", str(tmp_path / "s"), str(exported)).returncode == 0
    with np.load(exported, allow_pickle=True) as npz:
        assert sorted(npz["labels"].tolist()) == ["cat", "cat", "dog"]


@pytest.mark.slow
def test_train_with_test_data_tests_on_that_folder_only(tmp_path):
    write_images(tmp_path / "data", [f"{cls}/{i}.png" for cls in ("a", "b") for i in range(4)])
    write_images(tmp_path / "holdout", [f"{cls}/{i}.png" for cls in ("a", "b") for i in range(3)],
                 seed=1)
    proc = featclf_cmd("train", "--model", "lenet5", "--weights", "random", "--data",
                       str(tmp_path / "data"), "--test-data", str(tmp_path / "holdout"), "--out",
                       str(tmp_path / "m.pt"), "--epochs", "1", "--validation-fraction", "0",
                       "--no-progress")
    assert proc.returncode == 0, proc.stderr
    # Every image of --data trains (no random split), the six of --test-data test.
    assert "8 training images" in proc.stdout and "6 test images" in proc.stdout
    assert f"test images: --test-data {tmp_path / 'holdout'}" in proc.stdout
    assert re.search(r"test accuracy +[01]\.\d{4} on 6 held-out images", proc.stdout)


def test_test_size_out_of_range_is_a_usage_error(tmp_path):
    proc = featclf_cmd("train", "--data", "digits", "--out", str(tmp_path / "m.pt"),
                       "--test-size", "1.5")
    assert proc.returncode == 2
    assert "featclf train: error: argument --test-size: must be in [0, 1), got 1.5" in proc.stderr


@pytest.mark.slow
def test_train_uses_the_folders_own_test_part(tmp_path):
    names = [f"{part}/{cls}/{i}.png" for part, n in (("train", 4), ("test", 2))
             for cls in ("a", "b") for i in range(n)]
    write_images(tmp_path / "data", names)
    proc = featclf_cmd("train", "--model", "lenet5", "--weights", "random", "--data",
                       str(tmp_path / "data"), "--out", str(tmp_path / "m.pt"), "--epochs", "1",
                       "--validation-fraction", "0", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "8 training images" in proc.stdout and "4 test images" in proc.stdout
    assert "the data's own test part" in proc.stdout
    assert re.search(r"classes: '?a'? 4, '?b'? 4", proc.stdout)
    assert re.search(r"test accuracy +[01]\.\d{4} on 4 held-out images", proc.stdout)
    assert (tmp_path / "m.pt").is_file()
