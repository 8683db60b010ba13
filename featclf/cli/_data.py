"""The data flags every command that reads a folder or CSV of images shares.

``featclf extract``, ``train`` and ``compare`` call :func:`add_data_arguments` to add
``--path-column``, ``--label-column``, ``--split-column`` (and, for ``compare``,
``--test-data``), and :func:`image_files_from_args` to list the images those flags describe.
Nothing here imports torch or scikit-learn: ``featclf --help`` stays fast.
"""

from __future__ import annotations

import argparse
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from featclf.data.files import ImageFiles

__all__ = ["add_data_arguments", "image_files_from_args"]


def add_data_arguments(parser: argparse.ArgumentParser, *, test_data: bool = False) -> None:
    """Add the flags that say how to read a CSV file of images (and ``--test-data``).

    Parameters
    ----------
    parser : argparse.ArgumentParser
        The command's parser.
    test_data : bool, default=False
        Also add ``--test-data DIR``: a separate folder (or CSV) of test images.

    Examples
    --------
    >>> import argparse
    >>> parser = argparse.ArgumentParser()
    >>> add_data_arguments(parser, test_data=True)
    >>> args = parser.parse_args(["--label-column", "class", "--test-data", "holdout"])
    >>> args.label_column, args.path_column, args.test_data
    ('class', None, 'holdout')
    """
    group = parser.add_argument_group(
        "image lists (CSV files)",
        "A CSV file may start with a header row naming its columns, e.g. filename,class,split; "
        "paths are relative to the CSV file's folder. Columns named path/filename/file, "
        "label/class and split are found without these flags.")
    group.add_argument("--path-column", metavar="NAME",
                       help="header name of the column holding the image paths")
    group.add_argument("--label-column", metavar="NAME",
                       help="header name of the column holding the class of each image")
    group.add_argument("--split-column", metavar="NAME",
                       help="header name of the column saying train, val or test for each "
                       "image (the CSV's own split, used instead of a random one)")
    if test_data:
        parser.add_argument("--test-data", metavar="DIR|CSV",
                            help="test images kept apart from the training data (a folder of "
                            "class subfolders, or a CSV): every image of the data is then used "
                            "for training and these for testing")


def image_files_from_args(args: argparse.Namespace, root: str | os.PathLike) -> ImageFiles:
    """The image files under ``root`` (a folder or CSV file) as the data flags describe them.

    Parameters
    ----------
    args : argparse.Namespace
        Parsed arguments of a parser :func:`add_data_arguments` was given (flags it lacks
        count as not given).
    root : str or path-like
        A folder of images or a CSV file.

    Returns
    -------
    featclf.data.ImageFiles

    Examples
    --------
    >>> import argparse, pathlib, tempfile
    >>> from PIL import Image
    >>> d = pathlib.Path(tempfile.mkdtemp())
    >>> Image.new("RGB", (8, 8)).save(d / "a.png")
    >>> _ = (d / "list.csv").write_text("image,kind\\na.png,cat\\n")
    >>> args = argparse.Namespace(path_column="image", label_column="kind", split_column=None)
    >>> image_files_from_args(args, d / "list.csv").labels.tolist()
    ['cat']
    """
    from featclf.data.files import image_files

    columns = {name: getattr(args, name, None)
               for name in ("path_column", "label_column", "split_column")}  # fmt: skip
    if not os.path.isfile(root):
        given = [name for name, value in columns.items() if value is not None]
        if given:
            flag = "--" + given[0].replace("_", "-")
            raise ValueError(f"{flag} applies to a CSV file of images, but {os.fspath(root)} is "
                             "not a file")
        return image_files(root)
    return image_files(root, **columns)
