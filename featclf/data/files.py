"""Finding image files on disk and the labels their layout implies."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featclf.data.layouts import SPLITS, read_csv, split_name

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
    layout : str or None
        Where the labels came from: ``"folders"``, ``"names"``, ``"csv"`` or ``"none"``.
    splits : list of str or None
        The collection's own split: ``"train"``, ``"val"`` or ``"test"`` per file (from
        ``train/``, ``val/``, ``test/`` subfolders or a CSV's split column), or None.
    unlabelled_reason : str or None
        Why the file names were not taken as labels (``labels="auto"`` found camera names, or
        almost every file a class of its own); None otherwise.
    """

    paths: list[str]
    labels: np.ndarray | None = None
    root: str | None = None
    layout: str | None = field(default=None, compare=False)
    splits: list[str] | None = field(default=None, compare=False)
    unlabelled_reason: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.paths = [os.fspath(p) for p in self.paths]
        if self.labels is not None:
            self.labels = np.asarray(self.labels)
            if len(self.labels) != len(self.paths):
                raise ValueError(f"ImageFiles: {len(self.paths)} paths but {len(self.labels)} "
                                 "labels; give one label per path")
        if self.splits is not None:
            self.splits = [str(s) for s in self.splits]
            if len(self.splits) != len(self.paths):
                raise ValueError(f"ImageFiles: {len(self.paths)} paths but {len(self.splits)} "
                                 "split parts; give one per path")

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index):
        if isinstance(index, slice | np.ndarray | list):
            idx = np.arange(len(self.paths))[index]
            return ImageFiles([self.paths[i] for i in idx],
                              None if self.labels is None else self.labels[idx], self.root,
                              self.layout,
                              None if self.splits is None else [self.splits[i] for i in idx],
                              self.unlabelled_reason)  # fmt: skip
        return self.paths[index]

    def __iter__(self) -> Iterator[str]:
        return iter(self.paths)

    @property
    def classes(self) -> list:
        """Sorted distinct labels (empty when there are none)."""
        return [] if self.labels is None else sorted(set(self.labels.tolist()))

    def require_labels(self, what: str = "training") -> np.ndarray:
        """The labels, or a ValueError saying why there are none and how to give them.

        Examples
        --------
        >>> ImageFiles(["a.png"], ["cat"]).require_labels().tolist()
        ['cat']
        """
        if self.labels is not None:
            return self.labels
        reason = self.unlabelled_reason or (
            "the images carry no labels (they are not in class subfolders, and their file "
            "names carry none, as cat.1.jpg or 7_12.png would)")
        raise ValueError(f"{self.root or 'the images'}: {what} needs labels, but {reason}; put "
                         "each class in its own subfolder or pass a CSV with labels")

    def __repr__(self) -> str:
        n_cls = len(self.classes)
        split = "" if self.splits is None else ", splits=" + "/".join(
            f"{part} {self.splits.count(part)}" for part in SPLITS if part in self.splits)
        return (f"ImageFiles({len(self.paths)} files, {n_cls} classes, layout={self.layout!r}"
                f"{split}, root={self.root!r})")


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


# File-name prefixes that cameras, phones and apps write: names, not classes (lower case).
CAMERA_PREFIXES = frozenset({
    "img", "imag", "image", "images", "mvimg", "pxl", "dsc", "dscn", "dscf", "dcim", "cimg",
    "sam", "gopr", "gp", "dji", "pano", "vid", "mov", "mvi", "photo", "photos", "pic", "pics",
    "picture", "pictures", "screenshot", "screen", "scan", "capture", "snapshot", "whatsapp",
    "signal", "telegram", "received", "fb", "snapchat", "edited", "copy", "untitled",
    "download", "burst", "portrait", "selfie", "wp", "frame", "camera", "cam",
})  # fmt: skip


def names_look_like_labels(labels: Sequence[str | None], paths: Sequence) -> str | None:
    """None when the labels taken from file names look like classes, else why they do not.

    They do not when a file has none, when most files start with a camera or app prefix
    (``IMG_0001.jpg``, ``DSC_0002.jpg``, ``PXL_2024...``, ``photo-2024-...``), when they are
    dates or long numbers (``20240101_120000.jpg``), or when almost every file would be a
    class of its own.

    Examples
    --------
    >>> names_look_like_labels(["cat", "cat", "dog", "dog"], ["cat.1.jpg"] * 4) is None
    True
    >>> print(names_look_like_labels(["IMG", "DSC", "IMG"], ["IMG_1.jpg"] * 3))
    the file-name prefixes IMG, DSC look like camera names, not classes
    """
    missing = [p for p, lab in zip(paths, labels) if lab is None]
    if missing:
        return (f"the file names carry no label (e.g. {Path(missing[0]).name}: a label is the "
                "part before the first '.', '_' or '-', as in cat.1.jpg or 7_12.png)")
    n = len(labels)
    camera = [lab for lab in labels if lab.lower() in CAMERA_PREFIXES]
    if camera and 2 * len(camera) >= n:
        prefixes = ", ".join(dict.fromkeys(camera))
        return f"the file-name prefixes {prefixes} look like camera names, not classes"
    dates = [lab for lab in labels if lab.isdigit() and len(lab) >= 6]
    if dates and 2 * len(dates) >= n:
        return (f"the file names start with dates or long numbers ({', '.join(dates[:3])}), "
                "which are not classes")
    counts: dict[str, int] = {}
    for lab in labels:
        counts[lab] = counts.get(lab, 0) + 1
    alone = sum(1 for c in counts.values() if c == 1)
    if n >= 4 and 2 * alone > n:
        examples = ", ".join(list(counts)[:3])
        return (f"{alone} of the {n} files would be a class of their own (file-name prefixes "
                f"such as {examples}), so the names do not look like labels")
    return None


def _from_csv(csv_path: Path, path_column, label_column, split_column) -> ImageFiles:
    rows = read_csv(csv_path, path_column=path_column, label_column=label_column,
                    split_column=split_column)  # fmt: skip
    labels = None if rows.labels is None else _labels_as_array(rows.labels)
    return ImageFiles(rows.paths, labels, str(csv_path), "csv", rows.splits)


def _split_folders(root: Path, paths: list[Path]) -> list[str] | None:
    """The split part of each file when ``root`` holds ``train/``, ``val/``, ``test/`` folders.

    A layout is split when every image sits in such a folder and one is ``train/``; a lone
    folder named ``test`` among class folders is a class. Images outside the split folders of
    a ``train/`` + ``test/`` (or ``val/``) layout are refused: they belong to no part.
    """
    tops = [p.relative_to(root).parts[0] if len(p.relative_to(root).parts) > 1 else None
            for p in paths]  # fmt: skip
    parts = [split_name(t) if t is not None else None for t in tops]
    named = {part for part in parts if part is not None}
    if "train" not in named:
        return None
    if all(part is not None for part in parts):
        return parts  # type: ignore[return-value]
    if len(named) >= 2:
        stray = next(p for p, part in zip(paths, parts) if part is None)
        raise ValueError(
            f"image_files: {root} holds {', '.join(f'{n}/' for n in SPLITS if n in named)} "
            f"subfolders, but {stray} is outside them; move it into one of them (or into a "
            "class subfolder of one)")
    return None


def image_files(root: str | os.PathLike, labels: str = "auto", *,
                path_column: str | int | None = None, label_column: str | int | None = None,
                split_column: str | int | None = None,
                extensions: Sequence[str] = IMAGE_EXTENSIONS) -> ImageFiles:  # fmt: skip
    """List the image files under a folder (or in a CSV) with the labels their layout gives.

    ``train/``, ``val/`` (``valid/``, ``validation/``) and ``test/`` subfolders of ``root``
    (``root/train/cat/1.jpg``, the layout of torchvision's ``ImageFolder`` and Keras'
    ``image_dataset_from_directory``) are the collection's own split: ``splits`` names each
    file's part, and labels are read below them.

    Parameters
    ----------
    root : str or path-like
        A folder, or a CSV file of image paths and labels: ``path,label`` lines, or lines under
        a header row such as ``filename,class,split`` (relative paths are relative to the CSV's
        folder; see :func:`featclf.data.layouts.read_csv`).
    labels : {"auto", "folders", "names", "csv", "none"}, default="auto"
        Where labels come from: ``"folders"``: the class subfolder (``train/cat/x.jpg``, the
        torchvision ``ImageFolder`` layout); ``"names"``: the file name before its first ``.``,
        ``_`` or ``-`` (Kaggle's ``cat.123.jpg``, the seed's ``7.1234.jpg``); ``"csv"``: the
        CSV's label column; ``"none"``: no labels. ``"auto"`` uses ``csv`` for a file,
        ``folders`` when every image sits in a class subfolder, else ``names`` when the file
        names look like labels (not camera names such as ``IMG_0001.jpg``, nor one class per
        file: ``unlabelled_reason`` then says why), else no labels.
    path_column, label_column, split_column : str or int, optional
        For a CSV file: the header names (or 0-based positions) of its path, label and split
        columns. Default: the columns named ``path``/``filename``/``file``..., ``label``/
        ``class``..., ``split``/``subset``..., else the first two columns.
    extensions : sequence of str
        File extensions counted as images.

    Returns
    -------
    ImageFiles
        Paths (sorted) with ``.labels``; integer labels when all labels are integers;
        ``.splits`` for a split layout.

    Examples
    --------
    >>> import tempfile, pathlib
    >>> from PIL import Image
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> for name in ["cat.1.png", "cat.2.png", "dog.1.png", "dog.2.png"]:
    ...     Image.new("RGB", (8, 8)).save(d / name)
    >>> files = image_files(d)
    >>> files.layout, list(files.labels)
    ('names', ['cat', 'cat', 'dog', 'dog'])
    >>> for name in ["train/cat/1.png", "train/dog/2.png", "test/cat/3.png", "test/dog/4.png"]:
    ...     (d / "split" / name).parent.mkdir(parents=True, exist_ok=True)
    ...     Image.new("RGB", (8, 8)).save(d / "split" / name)
    >>> files = image_files(d / "split")
    >>> list(files.labels), files.splits
    (['cat', 'dog', 'cat', 'dog'], ['test', 'test', 'train', 'train'])
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"image_files: {root} does not exist")
    valid = ("auto", "folders", "names", "csv", "none")
    if labels not in valid:
        raise ValueError(f"image_files: labels={labels!r} is not one of {valid}")
    extensions = tuple(e.lower() if e.startswith(".") else "." + e.lower() for e in extensions)
    columns = {"path_column": path_column, "label_column": label_column,
               "split_column": split_column}  # fmt: skip
    if root.is_file():
        if labels not in ("auto", "csv"):
            raise ValueError(f"image_files: {root} is a file; only labels='csv' applies to it")
        return _from_csv(root, path_column, label_column, split_column)
    if labels == "csv":
        raise ValueError(f"image_files: labels='csv' needs a CSV file, but {root} is a folder")
    given = [name for name, value in columns.items() if value is not None]
    if given:
        raise ValueError(f"image_files: {given[0]} applies to a CSV file, but {root} is a folder")
    paths = _scan(root, extensions)
    if not paths:
        raise ValueError(f"image_files: no image files ({', '.join(extensions)}) under {root}")
    splits = _split_folders(root, paths)
    # Labels are read below the split folders: root/train/cat/x.jpg is class "cat".
    depth = [len(p.relative_to(root).parts) - (splits is not None) for p in paths]
    str_paths = [str(p) for p in paths]
    reason = None
    if labels == "auto":
        found = [label_from_name(p) for p in paths]
        if all(d >= 2 for d in depth):
            labels = "folders"
        else:
            reason = names_look_like_labels(found, paths)
            labels = "names" if reason is None else "none"
    if labels == "folders":
        bad = [p for p, d in zip(paths, depth) if d < 2]
        if bad:
            raise ValueError(f"image_files: {bad[0]} is not inside a class subfolder of "
                             f"{bad[0].parent if splits is not None else root}")
        # The class is the folder just above the file: root/train/cat/x.jpg -> "cat".
        return ImageFiles(str_paths, _labels_as_array([p.parent.name for p in paths]),
                          str(root), "folders", splits)  # fmt: skip
    if labels == "names":
        found = [label_from_name(p) for p in paths]
        missing = [p for p, lab in zip(paths, found) if lab is None]
        if missing:
            raise ValueError(f"image_files: no label in the file name of {missing[0]} "
                             "(expected e.g. 'cat.123.jpg' or '7_0001.png')")
        return ImageFiles(str_paths, _labels_as_array(found), str(root), "names", splits)
    return ImageFiles(str_paths, None, str(root), "none", splits, reason)
