"""What every benchmark script shares: machine facts, a timer, JSON output and a table printer.

Scripts import this module as ``common`` (they run as ``python benchmarks/<name>.py``, which puts
``benchmarks/`` first on ``sys.path``). Every script writes one JSON file,
``<out_dir>/<name>.json``, shaped::

    {"benchmark": name, "created": ISO time, "mode": "full" | "quick" | "smoke",
     "machine": machine_info(), "config": {...}, "results": {...},
     "headline": {label: number or text, ...},       # what run_all puts in the README
     "recommendations": [text, ...]}

Numbers that decide anything are ratios measured in the same run (the machines are shared and
absolute times move with the load); ``machine["load_avg_1m"]`` records how busy it was.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: The repository root (the parent of ``benchmarks/``).
REPO_ROOT = Path(__file__).resolve().parent.parent
#: Where ``make bench`` writes its JSON, README and plots.
DEFAULT_OUT_DIR = REPO_ROOT / "artifacts" / "benchmarks"

# Scripts import featclf from the working tree even when it is not installed in the venv.
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))


def machine_info() -> dict[str, Any]:
    """Describe the machine and library versions a benchmark ran with.

    Returns
    -------
    dict
        ``platform``, ``python``, ``cpu_count``, ``torch_threads``, ``torch``, ``torchvision``,
        ``sklearn``, ``numpy``, ``pillow``, ``device`` (``"cpu"`` or ``"cuda"``), ``gpu``
        (the CUDA device name or None) and ``load_avg_1m`` (None where the OS has none).

    Examples
    --------
    >>> info = machine_info()
    >>> sorted(k for k in info if k in ("cpu_count", "device", "torch"))
    ['cpu_count', 'device', 'torch']
    """
    import numpy
    import PIL
    import sklearn
    import torch
    import torchvision

    cuda = torch.cuda.is_available()
    try:
        load = round(os.getloadavg()[0], 2)
    except OSError:
        load = None
    return {
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "python": platform.python_version(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "torchvision": torchvision.__version__,
        "sklearn": sklearn.__version__,
        "numpy": numpy.__version__,
        "pillow": PIL.__version__,
        "device": "cuda" if cuda else "cpu",
        "gpu": torch.cuda.get_device_name(0) if cuda else None,
        "load_avg_1m": load,
    }


@dataclass
class Timing:
    """Wall times of repeated calls of one function.

    Parameters
    ----------
    times : list of float
        Seconds per repeat (warm-up calls excluded).
    """

    times: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        """Median seconds per call."""
        return statistics.median(self.times)

    @property
    def spread(self) -> float:
        """(max - min) / median: how noisy the repeats were."""
        med = self.median
        return (max(self.times) - min(self.times)) / med if med > 0 else 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-able summary."""
        return {"median_s": self.median, "min_s": min(self.times), "max_s": max(self.times),
                "repeats": len(self.times)}


def time_call(fn: Callable[[], Any], *, warmup: int = 1, repeats: int = 5) -> Timing:
    """Time ``fn()`` with :func:`time.perf_counter`: ``warmup`` untimed calls, then ``repeats``.

    Parameters
    ----------
    fn : callable
        Called with no arguments.
    warmup : int, default=1
        Untimed calls first (allocations, lazy initialisation, caches).
    repeats : int, default=5
        Timed calls; report the median.

    Returns
    -------
    Timing

    Examples
    --------
    >>> t = time_call(lambda: sum(range(100)), warmup=1, repeats=3)
    >>> len(t.times), t.median >= 0
    (3, True)
    """
    if repeats < 1:
        raise ValueError(f"time_call: repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return Timing(times)


def interleaved(fns: dict[str, Callable[[], Any]], repeats: int, *, warmup_rounds: int = 0,
                sync: Callable[[], Any] | None = None) -> dict[str, Timing]:
    """Time every function once per round, in an order that rotates from round to round.

    Load from other processes (or a disk that absorbs the first writes of a burst faster than
    the later ones) then slows every contender alike, and ratios of the same round's times
    hold up on a shared machine.

    Parameters
    ----------
    fns : dict of str to callable
        The contenders, each called with no arguments.
    repeats : int
        Timed rounds.
    warmup_rounds : int, default=0
        Untimed rounds first.
    sync : callable, optional
        Called before and after each timed call (a CUDA synchronise for asynchronous work).

    Returns
    -------
    dict of str to Timing
        One :class:`Timing` per contender, its times in round order.

    Examples
    --------
    >>> t = interleaved({"a": lambda: None, "b": lambda: None}, 3, warmup_rounds=1)
    >>> sorted(t), len(t["a"].times)
    (['a', 'b'], 3)
    """
    names = list(fns)
    times: dict[str, list[float]] = {name: [] for name in names}
    for round_ in range(warmup_rounds + repeats):
        shift = round_ % len(names)
        for name in names[shift:] + names[:shift]:
            if sync is not None:
                sync()
            start = time.perf_counter()
            fns[name]()
            if sync is not None:
                sync()
            if round_ >= warmup_rounds:
                times[name].append(time.perf_counter() - start)
    return {name: Timing(t) for name, t in times.items()}


#: run_all.py tells each script its time budget through this variable (seconds).
TIME_BUDGET_ENV = "FEATCLF_BENCH_TIME_BUDGET_S"


def _env_budget() -> float | None:
    value = os.environ.get(TIME_BUDGET_ENV)
    return float(value) if value else None


def parse_args(description: str, argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line every benchmark script takes: ``--quick``, ``--smoke``, ``--out-dir``.

    Parameters
    ----------
    description : str
        The script's one-line purpose (shown by ``--help``).
    argv : sequence of str, optional
        Arguments; ``sys.argv[1:]`` when None.

    Returns
    -------
    argparse.Namespace
        ``quick``, ``smoke``, ``out_dir`` (a Path), ``time_budget`` (seconds or None) and
        ``mode`` (``"smoke"``, ``"quick"`` or ``"full"``).

    Examples
    --------
    >>> parse_args("x", ["--quick"]).mode
    'quick'
    """
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--quick", action="store_true",
                        help="smaller sizes so that `make bench` stays under 10 minutes")
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes that only check the script runs (numbers meaningless)")
    parser.add_argument("--out-dir", type=Path, default=DEFAULT_OUT_DIR,
                        help=f"where to write <name>.json (default {DEFAULT_OUT_DIR})")
    parser.add_argument("--time-budget", type=float, default=_env_budget(), metavar="S",
                        help="seconds this script may take; scripts that can stop early honour "
                        f"it (default ${TIME_BUDGET_ENV}, set by run_all.py, or none)")
    args = parser.parse_args(argv)
    args.mode = "smoke" if args.smoke else "quick" if args.quick else "full"
    return args


def write_json(name: str, payload: dict[str, Any], out_dir: str | os.PathLike) -> Path:
    """Write ``payload`` (plus ``benchmark``, ``created``, ``machine``) to ``out_dir/name.json``.

    Written to a temporary name first and renamed, so a killed run never leaves half a file for
    ``run_all.py`` to read.

    Parameters
    ----------
    name : str
        The benchmark's name (the script's stem).
    payload : dict
        JSON-able results; numpy scalars are converted.
    out_dir : path-like
        Created when missing.

    Returns
    -------
    pathlib.Path
        The file written.

    Examples
    --------
    >>> import tempfile
    >>> p = write_json("demo", {"results": {"x": 1}}, tempfile.mkdtemp())
    >>> json.loads(p.read_text())["results"]
    {'x': 1}
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    doc = {"benchmark": name,
           "created": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
           "machine": machine_info()}
    doc.update(payload)
    path = out / f"{name}.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=_json_default) + "\n")
    os.replace(tmp, path)
    return path


def _json_default(obj: Any) -> Any:
    """numpy scalars/arrays and paths to plain JSON."""
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to JSON")


def format_number(value: Any) -> str:
    """Show a number with about three significant digits; anything else as text.

    Examples
    --------
    >>> format_number(1234.5), format_number(0.012345), format_number(None), format_number("x")
    ('1234', '0.0123', '-', 'x')
    """
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 100:
            return f"{value:.0f}"
        return f"{value:.3g}"
    return str(value)


def format_table(rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None, *,
                 markdown: bool = False) -> str:
    """Rows of dicts as an aligned text table (or a Markdown table).

    Parameters
    ----------
    rows : sequence of dict
        One dict per row; missing keys print as ``-``.
    columns : sequence of str, optional
        Column order; the keys of the first row when None.
    markdown : bool, default=False
        Pipe-separated Markdown instead of space-aligned text.

    Returns
    -------
    str

    Examples
    --------
    >>> print(format_table([{"model": "resnet18", "img/s": 64.2}]))
    model     img/s
    --------  -----
    resnet18  64.2
    """
    if not rows:
        return "(no rows)"
    cols = list(columns) if columns is not None else list(rows[0])
    cells = [[format_number(r.get(c)) for c in cols] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
        lines += ["| " + " | ".join(row) + " |" for row in cells]
        return "\n".join(lines)
    widths = [max(len(c), *(len(row[i]) for row in cells)) for i, c in enumerate(cols)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(cols, widths)).rstrip(),
             "  ".join("-" * w for w in widths)]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    return "\n".join(lines)


def print_table(title: str, rows: Sequence[dict[str, Any]],
                columns: Sequence[str] | None = None) -> None:
    """Print ``title`` and :func:`format_table` of ``rows`` to stdout."""
    print(f"\n{title}")
    print(format_table(rows, columns))
    sys.stdout.flush()
