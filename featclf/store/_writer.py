"""ShardWriter: buffers the vectors of one configuration and writes them as shards."""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from featclf.store._format import fsync_dir, new_writer_id, write_shard
from featclf.store._index import upgrade_keys

if TYPE_CHECKING:
    from featclf.store import FeatureStore

# Shards a writer sizes itself (FeatureStore(shard_rows=None)): about this many bytes, in rows
# that are a power of two within these bounds. A shard is one file to open, one index and one
# key index to write and read: at 1024 rows of 84 floats (344 KB) a million vectors are 977
# files, and the per-file costs weigh as much as the bytes. 8 MiB keeps a writer's buffer
# small, and what a killed job loses is bounded by flush_seconds anyway; 16384 rows bound the
# JSON index (digests, paths, labels) of a shard.
SHARD_BYTES = 8 << 20
_MIN_ROWS, _MAX_ROWS = 1024, 16384


def auto_shard_rows(dim: int, itemsize: int) -> int:
    """Rows of a writer-sized shard of ``dim``-wide vectors of ``itemsize`` bytes each.

    Examples
    --------
    >>> [auto_shard_rows(dim, size) for dim, size in ((84, 4), (2048, 4), (512, 2), (8, 4))]
    [16384, 1024, 8192, 16384]
    """
    rows = _MIN_ROWS
    while rows * 2 <= _MAX_ROWS and rows * 2 * dim * itemsize <= SHARD_BYTES:
        rows *= 2
    return rows


class ShardWriter:
    """Buffers vectors of one configuration and writes them as shards.

    Made by :meth:`FeatureStore.writer`.

    A shard is written when ``shard_rows`` rows are buffered (see :func:`auto_shard_rows` for
    the default), when the oldest buffered row is
    ``flush_seconds`` old, on :meth:`flush` and on :meth:`close` (the context manager closes).
    Its files carry this writer's own id (host, pid, random token, serial number), so any
    number of writers fill one namespace side by side; a shard never replaces a file.

    Examples
    --------
    >>> import tempfile
    >>> from featclf.store import FeatureStore
    >>> store = FeatureStore(tempfile.mkdtemp(), shard_rows=2)
    >>> with store.writer({"m": 1}) as w:
    ...     w.add(["a", "b", "c"], np.ones((3, 4)))
    ...     w.add(["a"], np.ones((1, 4)))  # already written by this writer: skipped
    >>> w.n_rows, len(w.shards)
    (3, 2)
    """

    def __init__(self, store: FeatureStore, config: dict) -> None:
        self.store = store
        self.key = store.config_key(config)
        self.directory = store._namespace(config, create=True)
        self.writer_id = new_writer_id()
        self.seq = 0
        self.written: set[str] = set()
        self.n_rows = 0
        self.shards: list[str] = []
        self._buffer: list[tuple[list[str], np.ndarray, list, list | None]] = []
        self._buffered = 0
        self._since: float | None = None
        self._dim: int | None = None
        self._rows = store._shard_rows  # rows per shard (None: sized by the first vectors)

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add(self, digests: Sequence[str], vectors: np.ndarray, *,
            paths: Sequence[str | None] | None = None, labels: Sequence | None = None) -> None:
        """Buffer vectors for writing; a digest already written by this writer is skipped.

        Parameters
        ----------
        digests : sequence of str
            Sample digests, one per row.
        vectors : numpy.ndarray
            ``(len(digests), dim)`` vectors.
        paths : sequence of str or None, optional
            The samples' file paths (kept for ``export``).
        labels : sequence, optional
            The samples' labels (kept for ``export``).
        """
        # A copy in the store's dtype: the caller may reuse its array, and float16 halves memory.
        vectors = np.array(vectors, dtype=self.store.dtype)
        if vectors.ndim != 2 or vectors.shape[0] != len(digests):
            raise ValueError(f"vectors must be ({len(digests)}, dim) for {len(digests)} digests, "
                             f"got shape {vectors.shape}")
        if self._dim is None:
            self._dim = vectors.shape[1]
            if self._rows is None:
                self._rows = auto_shard_rows(self._dim, vectors.dtype.itemsize)
        elif vectors.shape[1] != self._dim:
            raise ValueError(f"vectors have {vectors.shape[1]} values, earlier ones had "
                             f"{self._dim}; one configuration gives one dimension")
        paths = list(paths) if paths is not None else [None] * len(digests)
        labels = list(labels) if labels is not None else None
        keep = []
        for i, d in enumerate(digests):
            if d is None or d in self.written:
                continue
            self.written.add(d)
            keep.append(i)
        if not keep:
            return
        if len(keep) < len(digests):
            vectors = vectors[keep]
            digests = [digests[i] for i in keep]
            paths = [paths[i] for i in keep]
            labels = None if labels is None else [labels[i] for i in keep]
        self._buffer.append((list(digests), vectors, paths, labels))
        self._buffered += len(digests)
        if self._since is None:
            self._since = time.monotonic()
        if time.monotonic() - self._since >= self.store.flush_seconds:
            self.flush()  # slow networks: bound the work a kill can lose
        elif self._buffered >= self._rows:
            self._write(whole_shards_only=True)

    def flush(self) -> None:
        """Write everything buffered, as shards of at most ``shard_rows`` rows."""
        self._write(whole_shards_only=False)

    def _write(self, *, whole_shards_only: bool) -> None:
        if not self._buffer:
            return
        digests = [d for part in self._buffer for d in part[0]]
        vectors = np.concatenate([part[1] for part in self._buffer])
        paths = [p for part in self._buffer for p in part[2]]
        has_labels = any(part[3] is not None for part in self._buffer)
        labels = [lab for part in self._buffer
                  for lab in (part[3] if part[3] is not None else [None] * len(part[0]))]
        step = self._rows
        end = len(digests) - len(digests) % step if whole_shards_only else len(digests)
        for start in range(0, end, step):
            stop = min(start + step, end)
            self._write_shard(digests[start:stop], vectors[start:stop], paths[start:stop],
                              labels[start:stop] if has_labels else None)
        rest = slice(end, None)
        self._buffer = [(digests[rest], vectors[rest], paths[rest],
                         labels[rest] if has_labels else None)] if end < len(digests) else []
        self._buffered = len(digests) - end
        self._since = time.monotonic() if self._buffered else None

    def _next_stem(self) -> str:
        stem = f"shard-{self.writer_id}-{self.seq:06d}"
        self.seq += 1
        return stem

    def _write_shard(self, digests: list[str], vectors: np.ndarray, paths: list,
                     labels: list | None) -> None:
        stem = write_shard(self.directory, self._next_stem, digests,
                           np.ascontiguousarray(vectors), paths, labels, self.writer_id)
        self.n_rows += len(digests)
        self.shards.append(stem)

    def close(self) -> None:
        """Write what is buffered, and make the new names durable (fsync the directory).

        Shards of an older store that this process read through their JSON index get their
        key index now (writing to an old store upgrades it).
        """
        self.flush()
        if self.shards:
            upgrade_keys(self.directory, self.writer_id, wrote=len(self.shards))
            fsync_dir(self.directory)
