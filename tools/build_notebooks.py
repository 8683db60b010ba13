"""Build the example notebooks in ``notebooks/`` from their sources in ``notebooks/src/``.

Each notebook is a percent-format Python file (``notebooks/src/<name>.py``: ``# %%`` code cells,
``# %% [markdown]`` text cells), read with jupytext, run top to bottom with the current
interpreter's Jupyter kernel, and saved with its outputs so that GitHub shows the figures and
numbers of a real run::

    python tools/build_notebooks.py                  # all four, full settings (a few min each)
    python tools/build_notebooks.py 03_transfer_and_layers
    python tools/build_notebooks.py --quick --out /tmp/nb   # QUICK = True, e.g. to try an edit

Every notebook's first code cell is tagged ``parameters`` and sets ``QUICK = False``; with
``QUICK = True`` (:func:`set_quick`) the same steps run on a few images in seconds, which is
how ``tests/test_notebooks.py`` executes them.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import jupytext
import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
SOURCE_DIR = NOTEBOOK_DIR / "src"
KERNEL_NAME = "python3"
PARAMETERS_TAG = "parameters"
_QUICK_LINE = re.compile(r"^QUICK = False\b", flags=re.MULTILINE)

#: The notebooks, by name: ``notebooks/src/<name>.py`` is built into ``notebooks/<name>.ipynb``.
NOTEBOOKS: dict[str, Path] = {path.stem: path for path in sorted(SOURCE_DIR.glob("[0-9]*.py"))}


def build_notebook(name: str) -> nbformat.NotebookNode:
    """The notebook ``name`` (a key of :data:`NOTEBOOKS`) read from its source, without outputs.

    Cell ids are fixed (``cell-00``, ``cell-01``, ...) and the notebook metadata is the kernel
    only (jupytext's own is dropped), so that rebuilding changes nothing the sources do not.
    """
    nb = jupytext.read(NOTEBOOKS[name], fmt="py:percent")
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i:02d}"
    nb.metadata = nbformat.from_dict({
        "kernelspec": {"name": KERNEL_NAME, "display_name": "Python 3", "language": "python"},
        "language_info": {"name": "python"},
    })
    return nb


def parameters_cell(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """The notebook's code cell tagged ``parameters`` (which must be its first code cell)."""
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    if not code_cells or PARAMETERS_TAG not in code_cells[0].metadata.get("tags", []):
        raise ValueError(f"the first code cell must be tagged {PARAMETERS_TAG!r}")
    return code_cells[0]


def set_quick(nb: nbformat.NotebookNode) -> nbformat.NotebookNode:
    """A copy of ``nb`` whose parameters cell says ``QUICK = True`` instead of ``QUICK = False``."""
    nb = nbformat.from_dict(nb)  # a deep copy
    cell = parameters_cell(nb)
    source, count = _QUICK_LINE.subn("QUICK = True", cell.source)
    if count != 1:
        raise ValueError(f"the parameters cell must set QUICK = False on one line:\n{cell.source}")
    cell.source = source
    return nb


def execute(nb: nbformat.NotebookNode, *, cwd: str | Path = NOTEBOOK_DIR,
            timeout: int = 1800) -> nbformat.NotebookNode:
    """Run every cell of ``nb`` (in place) with the ``python3`` kernel; returns ``nb``.

    ``python3`` is the kernel of the running interpreter (ipykernel's own kernel spec, whose
    ``python`` Jupyter replaces by ``sys.executable``). Raises
    :class:`nbclient.exceptions.CellExecutionError` on the first failing cell.
    """
    # record_timing=False: no per-cell timestamps, so a rebuild only changes real outputs.
    client = NotebookClient(nb, kernel_name=KERNEL_NAME, timeout=timeout, record_timing=False,
                            resources={"metadata": {"path": str(cwd)}})
    client.execute()
    return nb


def main(argv: list[str] | None = None) -> int:
    """Build, run and save the notebooks named on the command line (default: all)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("names", nargs="*", choices=[[], *NOTEBOOKS], metavar="NAME",
                        help=f"notebooks to build (default all: {', '.join(NOTEBOOKS)})")
    parser.add_argument("--quick", action="store_true",
                        help="run with QUICK = True (small settings, for trying edits)")
    parser.add_argument("--out", type=Path, default=NOTEBOOK_DIR,
                        help="folder to write to (default notebooks/)")
    args = parser.parse_args(argv)
    if args.quick and args.out.resolve() == NOTEBOOK_DIR.resolve():
        parser.error("--quick needs --out DIR: notebooks/ keeps the outputs of full runs")
    args.out.mkdir(parents=True, exist_ok=True)
    # The notebooks write their files (images, stores, checkpoints) to temporary folders: keep
    # them in one folder that is removed afterwards. The kernel inherits TMPDIR.
    with (tempfile.TemporaryDirectory(prefix="featclf-notebooks-") as tmp,
          mock.patch.dict(os.environ, {"TMPDIR": tmp})):
        for name in args.names or NOTEBOOKS:
            nb = build_notebook(name)
            if args.quick:
                nb = set_quick(nb)
            started = time.perf_counter()
            execute(nb)
            path = args.out / f"{name}.ipynb"
            nbformat.write(nb, path)
            print(f"{path}: ran in {time.perf_counter() - started:.0f} s, "
                  f"{path.stat().st_size / 1e3:.0f} kB", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
