"""The module map in the README's "For contributors" section is the real import graph.

Every featclf module imports only modules on a lower floor of the data path (no import climbs
back up), and the floors below are the ones the README draws. A new module, or an import that
climbs, fails here until the map (and the README) say where it belongs.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "featclf"

#: The floors, lowest first: a module may import only from floors below its own.
FLOORS: list[tuple[str, ...]] = [
    ("params", "errors"),
    ("progress", "fingerprint", "devices", "durable"),
    ("data", "linear"),
    ("models", "store", "model_selection", "pipelines", "stats"),
    ("inference", "comparison"),
    ("extract", "train", "sweep"),
    ("report", "distributed", "serving", "winner"),
    ("experiment",),
    ("_views_arms",),
    ("compare",),
    ("repeats",),
    ("cli",),
    ("__init__", "__main__"),
]
FLOOR = {name: level for level, names in enumerate(FLOORS) for name in names}


def _unit(path: Path) -> str:
    """The top-level unit a file belongs to: ``featclf/store/_index.py`` → ``store``."""
    parts = path.relative_to(PACKAGE).with_suffix("").parts
    return parts[0]


def _imports(path: Path) -> set[str]:
    units = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] == "featclf" and len(parts) > 1:
                units.add(parts[1])
    return units


def test_every_module_is_on_a_floor_and_imports_only_downward():
    climbing = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = _unit(path)
        assert unit in FLOOR, f"{path.relative_to(ROOT)} is on no floor of the module map"
        for target in _imports(path) - {unit}:
            assert target in FLOOR, f"{path.relative_to(ROOT)} imports unknown featclf.{target}"
            if FLOOR[target] >= FLOOR[unit]:
                climbing.append(f"{path.relative_to(ROOT)} -> featclf.{target}")
    assert climbing == []


def _readme_rows() -> dict[str, int]:
    """The row of the README's module map on which each featclf module is drawn (top first)."""
    readme = (ROOT / "README.md").read_text()
    section = readme[readme.index("## For contributors"):]
    block = section[section.index("```") + 3:]
    block = block[:block.index("```")]
    rows: dict[str, int] = {}
    for row, line in enumerate(block.strip().splitlines()):
        for name in re.findall(r"featclf\.([a-z_]+)", line):
            rows.setdefault(name, row)
    return rows


def test_the_readme_map_draws_every_import_downward():
    rows = _readme_rows()
    assert set(FLOOR) - {"__init__", "__main__"} <= set(rows), "a module missing from the map"
    upward = []
    for path in sorted(PACKAGE.rglob("*.py")):
        unit = _unit(path)
        if unit not in rows:
            continue
        for target in _imports(path) - {unit}:
            # Drawn below the importer, or beside it only among the shared leaves.
            if rows[target] < rows[unit] or (rows[target] == rows[unit]
                                              and FLOOR[target] > FLOOR["devices"]):
                upward.append(f"{unit} (row {rows[unit]}) -> {target} (row {rows[target]})")
    assert upward == []


def test_the_store_knows_no_images_models_or_networks():
    forbidden = {"data", "models", "extract", "inference", "train"}
    for path in sorted((PACKAGE / "store").rglob("*.py")):
        assert not _imports(path) & forbidden, path.name
