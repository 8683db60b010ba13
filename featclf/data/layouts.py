"""The layouts a user's image collection comes in: split folders, CSV files with a header.

:func:`featclf.data.image_files` reads folders and CSV files through these helpers:

- ``train/``, ``val/`` (``valid/``, ``validation/``) and ``test/`` subfolders, as torchvision's
  ``ImageFolder`` and Keras' ``image_dataset_from_directory`` users lay them out
  (``root/train/cat/1.jpg``), are the collection's own split (:func:`split_name`);
- a CSV file of paths with labels and an optional split column, with or without a header row
  (``filename,class,split``): :func:`read_csv`.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

__all__ = ["LABEL_COLUMNS", "PATH_COLUMNS", "SPLITS", "SPLIT_COLUMNS", "CsvRows", "read_csv",
           "split_name"]

#: The parts of a predefined split, in order.
SPLITS: tuple[str, ...] = ("train", "val", "test")

# Folder names and CSV values that name a part of the split (case-insensitive).
_SPLIT_NAMES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                "validation": "val", "dev": "val", "test": "test", "testing": "test"}

#: Header names taken as the path, label and split columns when none is named (lower case).
PATH_COLUMNS = ("path", "filename", "file", "file_name", "filepath", "file_path", "image",
                "image_path", "img", "image_id", "id")
LABEL_COLUMNS = ("label", "class", "target", "category", "class_name", "label_name", "y")
SPLIT_COLUMNS = ("split", "subset", "set", "partition", "fold")


def split_name(name: str) -> str | None:
    """The part of a split a folder name or CSV value names: "train", "val", "test" or None.

    Examples
    --------
    >>> from featclf.data.layouts import split_name
    >>> split_name("Train"), split_name("validation"), split_name("valid"), split_name("cat")
    ('train', 'val', 'val', None)
    """
    return _SPLIT_NAMES.get(str(name).strip().lower())


@dataclass
class CsvRows:
    """What :func:`read_csv` found: absolute paths, labels and split parts (or None)."""

    paths: list[str]
    labels: list[str] | None
    splits: list[str] | None
    header: list[str] | None


def _column(header: list[str] | None, given: str | int | None, known: tuple[str, ...],
            what: str, csv_path: Path) -> int | None:  # fmt: skip
    """The position of a column: the one named by ``given``, else the first known name."""
    if isinstance(given, int) and not isinstance(given, bool):
        return given
    if given is not None:
        names = [h.strip().lower() for h in header or []]
        if str(given).strip().lower() not in names:
            raise ValueError(f"{csv_path}: {what}={given!r} is not a column of its header "
                             f"({', '.join(header or [])})")
        return names.index(str(given).strip().lower())
    if header is None:
        return None
    names = [h.strip().lower() for h in header]
    for name in known:
        if name in names:
            return names.index(name)
    return None


def _is_file(cell: str, folder: Path) -> bool:
    p = Path(cell.strip())
    try:
        return (p if p.is_absolute() else folder / p).is_file()
    except OSError:  # a name too long for the file system is no file
        return False


def _has_header(rows: list[list[str]], path_col: int, folder: Path) -> bool:
    """Whether the first row names columns: its path cell is no file, and either a cell is a
    known column name or the next row's path cell is a file."""
    first = rows[0]
    if len(first) <= path_col or _is_file(first[path_col], folder):
        return False
    known = set(PATH_COLUMNS) | set(LABEL_COLUMNS) | set(SPLIT_COLUMNS)
    if any(cell.strip().lower() in known for cell in first):
        return True
    return len(rows) > 1 and len(rows[1]) > path_col and _is_file(rows[1][path_col], folder)


def read_csv(csv_path: str | os.PathLike, *, path_column: str | int | None = None,
             label_column: str | int | None = None, split_column: str | int | None = None,
             labels: bool = True) -> CsvRows:  # fmt: skip
    """Read a CSV file of image paths with labels and optionally the split part of each.

    A first row whose path cell is not a file and that holds column names (``path``,
    ``filename``, ``label``, ``class``, ``split``...), or that sits above a row whose path cell
    is a file, is a header, never an image path. Naming a column by its header name implies a
    header. Without names, the columns are ``path``, ``label`` and (with a header naming it)
    ``split``. Relative paths are relative to the CSV file's folder.

    Parameters
    ----------
    csv_path : str or path-like
        The CSV file.
    path_column, label_column, split_column : str or int, optional
        The header name (or the 0-based position) of the column holding the image paths, the
        labels and the split part (``train``, ``val``/``valid``/``validation``, ``test``).
    labels : bool, default=True
        Read labels (False: paths and splits only).

    Returns
    -------
    CsvRows

    Examples
    --------
    >>> import pathlib, tempfile
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> (d / "a.png").touch(); (d / "b.png").touch()
    >>> text = "filename,class,split\\na.png,cat,train\\nb.png,dog,test\\n"
    >>> _ = (d / "list.csv").write_text(text)
    >>> rows = read_csv(d / "list.csv")
    >>> [pathlib.Path(p).name for p in rows.paths], rows.labels, rows.splits
    (['a.png', 'b.png'], ['cat', 'dog'], ['train', 'test'])
    """
    csv_path = Path(csv_path)
    with csv_path.open(newline="", encoding="utf-8-sig") as fh:
        rows = [r for r in csv.reader(fh) if r and any(c.strip() for c in r)
                and not r[0].lstrip().startswith("#")]  # fmt: skip
    if not rows:
        raise ValueError(f"{csv_path}: no rows; expected lines of 'path,label'")
    named = any(isinstance(c, str) for c in (path_column, label_column, split_column))
    path_guess = path_column if isinstance(path_column, int) else 0
    header = None
    if named or _has_header(rows, path_guess, csv_path.parent):
        header, rows = [c.strip() for c in rows[0]], rows[1:]
        if not rows:
            raise ValueError(f"{csv_path}: only a header row ({','.join(header)}); no images")
    path_col = _column(header, path_column, PATH_COLUMNS, "path_column", csv_path)
    path_col = 0 if path_col is None else path_col
    label_col = _column(header, label_column, LABEL_COLUMNS, "label_column", csv_path)
    split_col = _column(header, split_column, SPLIT_COLUMNS, "split_column", csv_path)
    if label_col is None and labels and label_column is None:
        # The column after the paths, unless it holds the split (or there is none).
        others = [i for i in range(len(rows[0])) if i not in (path_col, split_col)]
        label_col = others[0] if others else None
    paths, found, splits = [], [], []
    first_line = 2 if header is not None else 1
    for lineno, row in enumerate(rows, start=first_line):
        needed = max(c for c in (path_col, label_col if labels else None, split_col)
                     if c is not None)  # fmt: skip
        if len(row) <= needed:
            raise ValueError(f"{csv_path}, line {lineno}: expected at least {needed + 1} "
                             f"columns, got {row!r}")
        p = Path(row[path_col].strip())
        paths.append(str(p if p.is_absolute() else csv_path.parent / p))
        if labels and label_col is not None:
            found.append(row[label_col].strip())
        if split_col is not None:
            part = split_name(row[split_col])
            if part is None:
                raise ValueError(f"{csv_path}, line {lineno}: split {row[split_col]!r} is not "
                                 "one of train, val (valid, validation) or test")
            splits.append(part)
    return CsvRows(paths, found if labels and label_col is not None else None,
                   splits if split_col is not None else None, header)
