"""The example notebooks: written as ``notebooks/src/<name>.py`` (jupytext percent format), built
by ``tools/build_notebooks.py``, saved with the outputs of a real run, small enough for GitHub,
and run top to bottom here with their ``QUICK = True`` settings."""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
MAX_NOTEBOOK_BYTES = 500_000
MAX_FIGURE_BYTES = 150_000


def _load_builder():
    """``tools/build_notebooks.py`` as a module (tools/ is not a package)."""
    spec = importlib.util.spec_from_file_location("build_notebooks",
                                                  ROOT / "tools" / "build_notebooks.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


builder = _load_builder()
NAMES = list(builder.NOTEBOOKS)


def _saved(name: str) -> nbformat.NotebookNode:
    return nbformat.read(NOTEBOOK_DIR / f"{name}.ipynb", as_version=4)


def _code_cells(nb: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in nb.cells if cell.cell_type == "code"]


def _figures(nb: nbformat.NotebookNode) -> list[bytes]:
    return [base64.b64decode(out["data"]["image/png"]) for cell in _code_cells(nb)
            for out in cell.outputs if "image/png" in out.get("data", {})]


# --------------------------------------------------------------------------------------------
# The saved notebooks (fast)
# --------------------------------------------------------------------------------------------

def test_notebook_folder_holds_exactly_the_generated_notebooks():
    saved = sorted(p.stem for p in NOTEBOOK_DIR.glob("*.ipynb"))
    sources = sorted(p.stem for p in (NOTEBOOK_DIR / "src").glob("*.py"))
    assert saved == sources == sorted(NAMES)


def test_readme_links_every_notebook():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    linked = re.findall(r"\]\(notebooks/([\w-]+)\.ipynb\)", readme)
    assert sorted(linked) == sorted(NAMES)


@pytest.mark.parametrize("name", NAMES)
def test_saved_notebook_has_the_cells_of_its_source(name):
    def shape(nb):
        return [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in nb.cells]

    source = builder.build_notebook(name)
    assert _code_cells(source) and len(source.cells) > len(_code_cells(source))  # text cells too
    assert "jupytext" not in source.metadata  # the saved notebook carries the kernel only
    assert _saved(name).metadata["kernelspec"]["name"] == builder.KERNEL_NAME
    assert shape(_saved(name)) == shape(source), (
        f"notebooks/{name}.ipynb differs from notebooks/src/{name}.py: rebuild it with "
        f"`python tools/build_notebooks.py {name}`")


@pytest.mark.parametrize("name", NAMES)
def test_saved_notebook_holds_the_outputs_of_a_full_run(name):
    nb = _saved(name)
    cells = _code_cells(nb)
    assert "QUICK = False" in builder.parameters_cell(nb).source
    assert [c.execution_count for c in cells] == list(range(1, len(cells) + 1)), (
        "every code cell ran once, in order")
    outputs = [out for c in cells for out in c.outputs]
    assert not [out for out in outputs if out.output_type == "error"]
    stderr = [out.text for out in outputs if out.get("name") == "stderr"]
    assert not stderr, "no warnings or error messages in a saved notebook"
    assert _figures(nb)


@pytest.mark.parametrize("name", NAMES)
def test_saved_notebook_is_small(name):
    path = NOTEBOOK_DIR / f"{name}.ipynb"
    assert path.stat().st_size < MAX_NOTEBOOK_BYTES
    for png in _figures(_saved(name)):
        assert png.startswith(b"\x89PNG") and len(png) < MAX_FIGURE_BYTES


def test_quick_settings_replace_only_the_quick_flag():
    nb = builder.build_notebook(NAMES[0])
    quick = builder.set_quick(nb)
    before, after = builder.parameters_cell(nb).source, builder.parameters_cell(quick).source
    changed = [(a, b) for a, b in zip(before.splitlines(), after.splitlines()) if a != b]
    assert changed == [("QUICK = False", "QUICK = True")]
    assert builder.parameters_cell(nb).source == before  # the original is left alone
    nb.cells[1].metadata["tags"] = []
    with pytest.raises(ValueError, match="tagged 'parameters'"):
        builder.set_quick(nb)


# --------------------------------------------------------------------------------------------
# Running them (slow): QUICK = True, the kernel of this interpreter, temporary files in tmp_path
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def this_python_kernel(tmp_path_factory):
    """A ``python3`` kernel spec that runs ``sys.executable``, first on the Jupyter path.

    ipykernel's own spec already says ``python``, which Jupyter replaces by ``sys.executable``;
    this makes sure no user-level ``python3`` spec pointing elsewhere is picked instead.
    """
    jupyter_path = tmp_path_factory.mktemp("jupyter")
    spec_dir = jupyter_path / "kernels" / builder.KERNEL_NAME
    spec_dir.mkdir(parents=True)
    spec = {"argv": [sys.executable, "-m", "ipykernel_launcher", "-f", "{connection_file}"],
            "display_name": "Python 3 (featclf tests)", "language": "python"}
    (spec_dir / "kernel.json").write_text(json.dumps(spec), encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("JUPYTER_PATH", os.pathsep.join(filter(None, [str(jupyter_path),
                                                                os.environ.get("JUPYTER_PATH")])))
        yield


@pytest.mark.slow
@pytest.mark.parametrize("name", NAMES)
def test_notebook_runs_top_to_bottom_with_quick_settings(name, this_python_kernel, tmp_path,
                                                         monkeypatch):
    nb = builder.set_quick(_saved(name))
    nb.cells.append(nbformat.v4.new_code_cell("import sys\nprint(sys.executable)"))
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the kernel's temporary folders land here
    builder.execute(nb, cwd=NOTEBOOK_DIR, timeout=600)  # raises on the first failing cell
    assert nb.cells[-1].outputs[0]["text"].strip() == sys.executable
    assert not [out for c in _code_cells(nb) for out in c.outputs if out.output_type == "error"]
    assert _figures(nb)


def _text_outputs(cell: nbformat.NotebookNode) -> str:
    return "".join(out.get("text", "") for out in cell.outputs)


@pytest.mark.slow
def test_importing_featclf_in_a_kernel_without_ipywidgets_prints_nothing(this_python_kernel,
                                                                         tmp_path, monkeypatch):
    pytest.importorskip("ipykernel")
    if importlib.util.find_spec("ipywidgets") is not None:
        pytest.skip("ipywidgets is installed: tqdm's notebook bar has what it needs")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import featclf\nfrom featclf import DeepFeatureExtractor"),
        nbformat.v4.new_code_cell("from featclf.progress import progress_bar\n"
                                  "with progress_bar(total=2, desc='work') as bar:\n"
                                  "    bar.update(2)"),
        # The control: what featclf avoids, shown by the same kernel.
        nbformat.v4.new_code_cell("import tqdm.auto"),
    ])
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    builder.execute(nb, cwd=tmp_path, timeout=120)
    imported, bar, control = nb.cells
    assert imported.outputs == []
    assert "work: 100%" in _text_outputs(bar) and "IProgress" not in _text_outputs(bar)
    assert "IProgress not found" in _text_outputs(control)
