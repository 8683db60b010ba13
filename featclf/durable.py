"""Making a rename durable: the one ``fsync`` of a folder that the store and checkpoints share.

A file written to a temporary name, fsynced and renamed survives a crash only once the folder
holding the new name is fsynced too.
"""

from __future__ import annotations

import os
from pathlib import Path


def fsync_dir(directory: str | os.PathLike) -> None:
    """Make the names in ``directory`` durable (where the platform can).

    Examples
    --------
    >>> import tempfile
    >>> fsync_dir(tempfile.mkdtemp())
    """
    try:
        fd = os.open(Path(directory), os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
