"""How long the ``featclf`` command takes to start: ``--help`` against bare Python and torch.

Each contender is a fresh interpreter, timed from ``subprocess.run`` to its exit, in rounds
whose order rotates (:func:`common.interleaved`), so load from other processes slows them all
alike; the medians of the same run are compared:

* ``python -c pass``: the interpreter alone (the floor);
* ``featclf --help`` (``python -m featclf --help``): building every command's parser;
* ``featclf store info STORE`` on a one-vector store: a command that needs no network;
* ``python -c "import torch"``: what every command paid before the command modules imported
  torch only inside their run functions.

Wall time (median, min, max) and CPU time (user + system of the child, median) of each.

Also recorded: which of torch, torchvision, scikit-learn, pandas and numpy ``featclf --help``
and ``featclf store info`` import (none of the first three is the target).

Run: ``python benchmarks/cli_startup.py [--quick | --smoke] [--out-dir DIR]``.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import common

NAME = "cli_startup"
SETTINGS = {"full": dict(repeats=9), "quick": dict(repeats=5), "smoke": dict(repeats=1)}
#: Modules whose import the command's start must avoid (the first three) or may afford.
WATCHED = ("torch", "torchvision", "sklearn", "pandas", "numpy")
#: ``featclf --help`` should start well under a second.
TARGET_HELP_S = 1.0


def _env() -> dict[str, str]:
    """The environment of the timed processes: featclf from this working tree."""
    path = os.environ.get("PYTHONPATH")
    root = str(common.REPO_ROOT)
    return {**os.environ, "PYTHONPATH": root if not path else f"{root}{os.pathsep}{path}"}


def _children_cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _runner(argv: list[str], env: dict[str, str], cpu: list[float]):
    """Run ``python ARGV``; appends its CPU seconds (user + system) to ``cpu``."""
    def run() -> None:
        before = _children_cpu_s()
        proc = subprocess.run([sys.executable, *argv], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, env=env)
        cpu.append(_children_cpu_s() - before)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(argv)} exited {proc.returncode}: "
                               f"{proc.stderr.decode(errors='replace')[-2000:]}")
    return run


def imported_by(cli_args: list[str], env: dict[str, str]) -> list[str]:
    """Which WATCHED modules ``featclf CLI_ARGS`` has imported when it finishes."""
    code = ("import contextlib, io, json, sys\n"
            "from featclf.cli import main\n"
            "with contextlib.redirect_stdout(io.StringIO()):\n"
            f"    code = main({cli_args!r})\n"
            f"print(json.dumps([m for m in {WATCHED!r} if m in sys.modules]))\n"
            "sys.exit(code)\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=env, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    args = common.parse_args(__doc__.splitlines()[0], argv)
    cfg = SETTINGS[args.mode]
    env = _env()
    with tempfile.TemporaryDirectory(prefix="featclf-cli-bench-") as tmp:
        import numpy as np

        from featclf.store import FeatureStore

        store = FeatureStore(Path(tmp) / "store")
        store.put({"model": "benchmark", "layer": None}, ["0" * 32], np.zeros((1, 8), "float32"))
        contenders = {
            "python -c pass": ["-c", "pass"],
            "featclf --help": ["-m", "featclf", "--help"],
            "featclf store info": ["-m", "featclf", "store", "info", str(store.root)],
            "python -c 'import torch'": ["-c", "import torch"],
        }
        cpu: dict[str, list[float]] = {k: [] for k in contenders}
        timings = common.interleaved({k: _runner(v, env, cpu[k]) for k, v in contenders.items()},
                                     cfg["repeats"], warmup_rounds=1)
        # CPU seconds move less with the load than wall time (the warm-up round left out).
        cpu_s = {k: statistics.median(v[1:]) for k, v in cpu.items()}
        imports = {"featclf --help": imported_by(["--help"], env),
                   "featclf store info": imported_by(["store", "info", str(store.root)], env)}
    med = {k: t.median for k, t in timings.items()}
    help_s, pass_s, torch_s = (med["featclf --help"], med["python -c pass"],
                               med["python -c 'import torch'"])
    rows = [{"command": k, "median_s": t.median, "min_s": min(t.times), "max_s": max(t.times),
             "cpu_s": cpu_s[k], "x python -c pass": t.median / pass_s,
             "imports": ", ".join(m for m in imports.get(k, []) if m in WATCHED[:3]) or
             ("-" if k in imports else "")}
            for k, t in timings.items()]
    common.print_table(f"Start-up, median of {cfg['repeats']} interleaved runs", rows)
    heavy = {k: [m for m in v if m in WATCHED[:3]] for k, v in imports.items()}
    headline = {
        "featclf --help s": help_s,
        "python -c pass s": pass_s,
        "import torch s": torch_s,
        "featclf store info s": med["featclf store info"],
        "featclf --help CPU s": cpu_s["featclf --help"],
        "import torch CPU s": cpu_s["python -c 'import torch'"],
        "--help over python -c pass": help_s / pass_s,
        "--help over import torch": help_s / torch_s,
        "--help imports": ", ".join(heavy["featclf --help"]) or "no torch/torchvision/sklearn",
        "store info imports": (", ".join(heavy["featclf store info"])
                               or "no torch/torchvision/sklearn"),
    }
    recs = []
    if help_s > TARGET_HELP_S:
        recs.append(f"featclf --help takes {help_s:.2f} s (target < {TARGET_HELP_S:g} s)")
    for command, mods in heavy.items():
        if mods:
            recs.append(f"{command} imports {', '.join(mods)}: a command module (or a module "
                        "it imports at module level) still imports it; see "
                        "`python -X importtime -m featclf --help`")
    path = common.write_json(NAME, {
        "mode": args.mode,
        "config": {**cfg, "target_help_s": TARGET_HELP_S,
                   "contenders": list(contenders)},
        "results": {"timings": {k: {**t.to_dict(), "cpu_median_s": cpu_s[k]}
                                for k, t in timings.items()},
                    "times": {k: t.times for k, t in timings.items()},
                    "imports": imports},
        "headline": headline,
        "recommendations": recs,
    }, args.out_dir)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
