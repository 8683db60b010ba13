"""The hit path: the body of :meth:`FeatureStore.get`, and reading shards into its result.

A rerun asks for the digests the store was written with, in the order they were written, and
that case is served without turning a single digest string into a key: each shard's key index
records the xxh3-128 of its digests as text (:func:`~featclf.store._keys.digests_hash`), so
the leading shards whose text the query repeats are known to be its leading rows
(:func:`stored_prefix`), and each is read straight into its slice of the result, one
``preadv`` per shard. What follows them (other digests, another order, new samples) goes
through the keys and the sorted lookup of :class:`~featclf.store._index.ConfigIndex`.

The checks are the same on both paths: a shard's size and ``.npy`` header are compared with
its index on every read, and its xxh3-128 checksum is computed over the very bytes read
(straight in ``out``) unless the file is provably unchanged since its writer hashed it (see
:mod:`featclf.store._keys`) or this process hashed it already.
"""

from __future__ import annotations

import mmap
import os
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import xxhash

from featclf.store import _format
from featclf.store._format import DamagedShard, expected_header
from featclf.store._index import ConfigIndex, plan_reads
from featclf.store._keys import Shard, digests_hash

if TYPE_CHECKING:
    from featclf.store import FeatureStore

# Reads of many shards run in threads once there is this much to read.
_READ_THREADS = min(4, os.cpu_count() or 1)
_PARALLEL_READ_BYTES = 32 << 20


def get(store: FeatureStore, config: dict | str, digests: Sequence[str | None] | np.ndarray
        ) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`FeatureStore.get`: (which digests are found, their vectors in that order)."""
    index = store._index(config)
    while True:
        with index.lock:  # the index is shared by the threads of this process
            found, out, tasks = plan(index, digests)
        try:
            read_rows(index.directory, tasks, out)
        except DamagedShard as exc:
            stem, reason = exc.args
            with index.lock:
                if not (index.directory / f"{stem}.json").exists():
                    index.refresh()  # a concurrent prune rewrote or removed it: look again
                    continue
                if index.distrust_keys(stem):
                    continue  # its key index was wrong: read it as its JSON index says
                index.mark_damaged(stem, reason)
            warnings.warn(f"feature store {store.root}: shard {stem} is damaged ({reason}); "
                          "its vectors are treated as missing and will be recomputed. Run "
                          "`featclf store verify` and `featclf store prune`.", stacklevel=3)
            continue
        return found, out


def stored_prefix(index: ConfigIndex, digests: Sequence[str | None] | np.ndarray) -> int:
    """How many leading digests are, in order, every digest of the leading shards.

    Strings are shown shard by shard by their text hash, which the key index records (a shard
    read through its JSON index ends the prefix); keys (``(n, 2)`` uint64) are compared with
    the shard's keys. A damaged shard ends the prefix.

    Examples
    --------
    >>> import tempfile
    >>> from featclf.store import FeatureStore
    >>> store = FeatureStore(tempfile.mkdtemp(), shard_rows=2)
    >>> d = [f"{i:032x}" for i in range(5)]
    >>> store.put({"m": 1}, d, np.eye(5))
    >>> index = store._index({"m": 1})
    >>> stored_prefix(index, d), stored_prefix(index, d[:3]), stored_prefix(index, d[1:])
    (5, 2, 0)
    >>> stored_prefix(index, FeatureStore.digest_keys(d[:4]))
    4
    """
    keys = None
    if isinstance(digests, np.ndarray) and digests.dtype.kind != "U":
        if digests.dtype != np.dtype("<u8") or digests.ndim != 2:
            return 0
        keys = digests
    n, at = len(digests), 0
    for shard, start in zip(index.shards, index.starts):
        if start != at or at + shard.rows > n or shard.name in index.damaged:
            break
        if keys is not None:
            if not np.array_equal(keys[at:at + shard.rows], shard.keys):
                break
        elif shard.text_hashes[0] is None or \
                digests_hash(digests[at:at + shard.rows]) != shard.text_hashes[0]:
            break
        at += shard.rows
    return at


def plan(index: ConfigIndex, digests: Sequence[str | None] | np.ndarray
         ) -> tuple[np.ndarray, np.ndarray, list[tuple]]:
    """(found, the result to fill, the read tasks that fill it); the caller holds the lock."""
    n = len(digests)
    prefix = stored_prefix(index, digests) if n else 0
    if prefix == n and n:  # a rerun: every shard read whole, straight into its rows
        out = np.empty((n, index.dim), dtype=np.float32)
        tasks = [(shard, None, slice(start, start + shard.rows), True)
                 for shard, start in zip(index.shards, index.starts) if start < n]
        return np.ones(n, dtype=bool), out, tasks
    rows = index.find(digests[prefix:] if prefix else digests)
    if prefix:
        rows = np.concatenate([np.arange(prefix, dtype=np.int64), rows])
    found = rows >= 0
    rows = rows[found]
    out = np.empty((len(rows), index.dim or 0), dtype=np.float32)
    return found, out, plan_reads(index, rows)


def _pread_into(fd: int, buffers: list[memoryview]) -> int:
    """Fill ``buffers`` from the start of ``fd`` (one ``preadv`` call, usually); the bytes read."""
    total, offset = sum(len(b) for b in buffers), 0
    while offset < total:
        rest, skip = [], offset
        for b in buffers:  # the parts not filled yet (a read may stop short of the end)
            if skip >= len(b):
                skip -= len(b)
                continue
            rest.append(b[skip:])
            skip = 0
        n = os.preadv(fd, rest, offset)
        if not n:
            break
        offset += n
    return offset


def _read_shard_rows(path: str, shard: Shard, rows: np.ndarray | None, out: np.ndarray,
                     slots: np.ndarray | slice, whole: bool) -> None:
    """Copy ``shard[rows]`` into ``out[slots]`` (float32), checking what must be checked.

    ``whole``: ``rows`` is every row of the shard in order (or None) and ``slots`` a slice. File
    descriptors and ``preadv`` rather than file objects: a hit of many shards is a loop of
    small calls, and Python's file layer costs more per call than the system calls do.

    Raises
    ------
    DamagedShard
        The file is missing, has the wrong size or header, or fails its checksum.
    """
    name = os.path.basename(path)
    data_len = shard.rows * shard.dim * np.dtype(shard.dtype).itemsize
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise DamagedShard(f"{name}: file missing") from None
    try:
        st = os.fstat(fd)
        if st.st_size != shard.nbytes:
            raise DamagedShard(f"{name}: {st.st_size} bytes, its index says {shard.nbytes}")
        ident = (path, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        known = _format.CHECKED.get(ident)
        if known is not None and known != shard.checksum:
            raise DamagedShard(f"{name}: checksum mismatch")
        # Hashed here before, or unchanged since its writer (or prune) hashed it: see _keys.
        checked = known is not None or shard.verified == ident[1:]
        expected = expected_header(shard.rows, shard.dim, shard.dtype)
        if len(expected) != shard.nbytes - data_len:
            raise DamagedShard(f"{name}: its .npy header does not match its index")
        if checked and rows is not None and len(rows) * 4 < shard.rows:
            # A few rows of a shard already checked: map it instead of reading it all.
            with mmap.mmap(fd, 0, access=mmap.ACCESS_READ) as mapped:
                if mapped[:len(expected)] != expected:
                    raise DamagedShard(f"{name}: its .npy header does not match its index")
                data = np.frombuffer(mapped, shard.dtype, offset=len(expected))
                out[slots] = data.reshape(shard.rows, shard.dim)[rows]
                del data  # (the map closes only once no array views it)
            return
        direct = whole and shard.dtype == "float32"
        # Read straight into the caller's rows when they are the whole shard: one copy.
        target = out[slots] if direct else np.empty((shard.rows, shard.dim), dtype=shard.dtype)
        header = bytearray(len(expected))
        raw = memoryview(target).cast("B")
        got = _pread_into(fd, [memoryview(header), raw])
    finally:
        os.close(fd)
    if header != expected:
        raise DamagedShard(f"{name}: its .npy header does not match its index")
    if got != shard.nbytes:
        raise DamagedShard(f"{name}: truncated")
    if not checked:
        h = xxhash.xxh3_128()
        h.update(header)
        h.update(raw)
        _format.CHECKED[ident] = h.hexdigest()
        if _format.CHECKED[ident] != shard.checksum:
            raise DamagedShard(f"{name}: checksum mismatch")
    if not direct:
        out[slots] = target if whole else target[rows]


def read_rows(directory: Path, tasks: list[tuple], out: np.ndarray) -> None:
    """Run read tasks (:func:`~featclf.store._index.plan_reads`) into ``out``.

    Shards are immutable, so no lock is needed.

    Raises
    ------
    DamagedShard
        With ``(shard stem, reason)`` as its arguments.
    """

    folder = os.fspath(directory)

    def read(task: tuple[Shard, np.ndarray, slice | np.ndarray, bool]) -> None:
        shard, shard_rows, slots, whole = task
        try:
            _read_shard_rows(os.path.join(folder, f"{shard.name}.npy"), shard, shard_rows, out,
                             slots, whole)
        except DamagedShard as exc:
            raise DamagedShard(shard.name, str(exc)) from None

    workers = min(len(tasks), _READ_THREADS)
    if workers > 1 and out.nbytes >= _PARALLEL_READ_BYTES and \
            any(task[0].verified is None for task in tasks):
        # File reads and xxh3 release the GIL: shards to hash are read and checked side by
        # side, each into its own rows of ``out``. (Shards that need no hashing are read in
        # one thread: threads then add CPU time and no speed, the copy being memory-bound.)
        with ThreadPoolExecutor(workers) as pool:
            list(pool.map(read, tasks))
    else:
        for task in tasks:
            read(task)
