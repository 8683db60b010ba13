"""Finding image files on disk and the labels their layout implies."""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: File extensions treated as images when scanning folders (case-insensitive).
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm",
                    ".pgm")

# "cat.123.jpg", "dog.45.jpg" (Kaggle dogs-vs-cats), "7.1234.jpg", "7_1234.png" (the seed's digits)
_NAME_LABEL = re.compile(r"^([^._\-\s]+)[._\-]")


@dataclass
class ImageFiles(Sequence):
    """A list of image file paths with optional labels, as returned by :func:`image_files`.

    Every featclf estimator and command accepts it directly as ``X``; ``labels`` is ``y``.

    Parameters
    ----------
    paths : list of str
        Image file paths.
    labels : numpy.ndarray or None
        One label per path, or ``None`` when the layout carries none.
    root : str or None
        The folder or CSV file the list was read from.
    """

    paths: list[str]
    labels: np.ndarray | None = None
    root: str | None = None
    layout: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.paths = [os.fspath(p) for p in self.paths]
        if self.labels is not None:
            self.labels = np.asarray(self.labels)
            if len(self.labels) != len(self.paths):
                raise ValueError(f"ImageFiles: {len(self.paths)} paths but {len(self.labels)} "
                                 "labels; give one label per path")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, slice | np.ndarray | list):
            idx = np.arange(len(self.paths))[index]
            return ImageFiles([self.paths[i] for i in idx],
                              None if self.labels is None else self.labels[idx], self.root,
                              self.layout)
        return self.paths[index]

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    @property
    def classes(self) -> list:
        """Sorted distinct labels (empty when there are none)."""
        return [] if self.labels is None else sorted(set(self.labels.tolist()))

    def __repr__(self) -> str:
        n_cls = len(self.classes)
        return (f"ImageFiles({len(self.paths)} files, {n_cls} classes, layout={self.layout!r}, "
                f"root={self.root!r})")


def _is_image(path: Path, extensions: Sequence[str]) -> bool:
    return path.suffix.lower() in extensions and not path.name.startswith(".")


def _scan(root: Path, extensions: Sequence[str]) -> list[Path]:
    found = [p for p in root.rglob("*") if p.is_file() and _is_image(p, extensions)]
    return sorted(found)


def label_from_name(path: str | os.PathLike) -> str | None:
    """The label a file name carries before its first ``.``, ``_`` or ``-``.

    Parameters
    ----------
    path : str or path-like
        A file path.

    Returns
    -------
    str or None
        The label, or None when the name has no separator before its extension.

    Examples
    --------
    >>> label_from_name("train/cat.123.jpg"), label_from_name("7.1234.jpg")
    ('cat', '7')
    >>> label_from_name("img001.png") is None
    True
    """
    stem = Path(path).name
    stem = stem[: -len(Path(stem).suffix)] if Path(stem).suffix else stem
    match = _NAME_LABEL.match(stem + ".")
    if match is None or match.group(1) == stem:
        return None
    return match.group(1)


def _labels_as_array(labels: list[str]) -> np.ndarray:
    """Integer labels when every label is an integer (the seed's digits), else strings."""
    if labels and all(re.fullmatch(r"-?\d+", s) for s in labels):
        return np.asarray([int(s) for s in labels], dtype=np.int64)
    return np.asarray(labels, dtype=object)


def _from_csv(csv_path: Path) -> ImageFiles:
    with csv_path.open(newline="", encoding="utf-8") as fh:
        reader = csv.reader(fh)
        rows = [r for r in reader if r and not r[0].startswith("#")]
    if rows and rows[0][0].strip().lower() == "path":
        rows = rows[1:]
    if not rows:
        raise ValueError(f"{csv_path}: no rows; expected lines of 'path,label'")
    paths, labels = [], []
    for lineno, row in enumerate(rows, start=1):
        if len(row) < 2:
            raise ValueError(f"{csv_path}, data row {lineno}: expected 'path,label', got {row!r}")
        p = Path(row[0].strip())
        paths.append(str(p if p.is_absolute() else csv_path.parent / p))
        labels.append(row[1].strip())
    return ImageFiles(paths, _labels_as_array(labels), str(csv_path), "csv")


def image_files(root: str | os.PathLike, labels: str = "auto", *,
                extensions: Sequence[str] = IMAGE_EXTENSIONS) -> ImageFiles:
    """List the image files under a folder (or in a CSV) with the labels their layout gives.

    Parameters
    ----------
    root : str or path-like
        A folder, or a CSV file of ``path,label`` lines (an optional ``path,label`` header;
        relative paths are relative to the CSV's folder).
    labels : {"auto", "folders", "names", "csv", "none"}, default="auto"
        Where labels come from: ``"folders"``: the class subfolder (``train/cat/x.jpg``, the
        torchvision ``ImageFolder`` layout); ``"names"``: the file name before its first ``.``,
        ``_`` or ``-`` (Kaggle's ``cat.123.jpg``, the seed's ``7.1234.jpg``); ``"csv"``: the
        CSV's second column; ``"none"``: no labels. ``"auto"`` uses ``csv`` for a file,
        ``folders`` when every image sits in a subfolder of ``root``, else ``names`` when every
        file name carries a label, else no labels.
    extensions : sequence of str
        File extensions counted as images.

    Returns
    -------
    ImageFiles
        Paths (sorted) with ``.labels``; integer labels when all labels are integers.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ["cat.1.png", "cat.2.png", "dog.1.png"]:
    ...     Image.new("RGB", (8, 8)).save(d / name)
    >>> files = image_files(d)
    >>> files.layout, list(files.labels)
    ('names', ['cat', 'cat', 'dog'])
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"image_files: {root} does not exist")
    valid = ("auto", "folders", "names", "csv", "none")
    if labels not in valid:
        raise ValueError(f"image_files: labels={labels!r} is not one of {valid}")
    extensions = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    if root.is_file():
        if labels not in ("auto", "csv"):
            raise ValueError(f"image_files: {root} is a file; only labels='csv' applies to it")
        return _from_csv(root)
    if labels == "csv":
        raise ValueError(f"image_files: labels='csv' needs a CSV file, but {root} is a folder")
    paths = _scan(root, extensions)
    if not paths:
        raise ValueError(f"image_files: no image files ({', '.join(extensions)}) under {root}")
    if labels == "auto":
        if all(len(p.relative_to(root).parts) >= 2 for p in paths):
            labels = "folders"
        elif all(label_from_name(p) is not None for p in paths):
            labels = "names"
        else:
            labels = "none"
    str_paths = [str(p) for p in paths]
    if labels == "folders":
        bad = [p for p in paths if len(p.relative_to(root).parts) < 2]
        if bad:
            raise ValueError(f"image_files: {bad[0]} is not inside a class subfolder of {root}")
        # The class is the folder just above the file: root/train/cat/x.jpg -> "cat".
        return ImageFiles(str_paths, _labels_as_array([p.parent.name for p in paths]),
                          str(root), "folders")
    if labels == "names":
        found = [label_from_name(p) for p in paths]
        missing = [p for p, lab in zip(paths, found) if lab is None]
        if missing:
            raise ValueError(f"image_files: no label in the file name of {missing[0]} "
                             "(expected e.g. 'cat.123.jpg' or '7_0001.png')")
        return ImageFiles(str_paths, _labels_as_array(found), str(root), "names")
    return ImageFiles(str_paths, None, str(root), "none")
