"""The hit path: the body of :meth:`FeatureStore.get`, and reading shards into its result.

A rerun asks for the digests the store was written with, in the order they were written, and
that case is served without turning a single digest string into a key: each shard's key index
records the xxh3-128 of its digests as text (:func:`~featclf.store._keys.digests_hash`), so
the leading shards whose text the query repeats are known to be its leading rows
(:func:`stored_prefix`), and each is read straight into its slice of the result, one
``preadv`` per shard. From 16 MiB on, reader threads read those shards while this thread
checks their text (:func:`_read_leading`): the check, one pass over the Python strings, would
otherwise add a fifth to a hit of 84-dim vectors. What follows them (other digests, another
order, new samples) goes through the keys and the sorted lookup of
:class:`~featclf.store._index.ConfigIndex`.

The reader threads gain only where they find a CPU of their own. On a 2-CPU machine, a
thread spinning on the other one (OpenBLAS's idle workers busy-wait for a while after
numpy's import and after each threaded BLAS call) leaves them the calling thread's CPU,
and a hit then costs what checking, then reading, costs (``benchmarks/store_hit.py``
measures both: ``hit`` and ``hit_as_started``).

The checks are the same on both paths: a shard's size and ``.npy`` header are compared with
its index on every read, and its xxh3-128 checksum is computed over the very bytes read
(straight in ``out``) unless the file is provably unchanged since its writer hashed it (see
:mod:`featclf.store._keys`) or this process hashed it already.
"""

from __future__ import annotations

import itertools
import mmap
import os
import threading
import warnings
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor, wait
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
# A rerun's leading shards are read in reader threads while they are checked from this much.
_PIPELINE_BYTES = 16 << 20
# Results from this size up to numpy's own threshold are put in huge pages (empty_rows).
_HUGE_FROM, _NUMPY_HUGE = 2 << 20, 4 << 20


def get(store: FeatureStore, config: dict | str, digests: Sequence[str | None] | np.ndarray
        ) -> tuple[np.ndarray, np.ndarray]:
    """:meth:`FeatureStore.get`: (which digests are found, their vectors in that order)."""
    index = store._index(config)
    while True:
        try:
            result = lookup(index, digests)
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
        if result is not None:
            return result
        # (else the index was renumbered meanwhile, by a prune this process saw: look again)


def lookup(index: ConfigIndex, digests: Sequence[str | None] | np.ndarray
           ) -> tuple[np.ndarray, np.ndarray] | None:
    """One look at the index: (found, vectors), or None when it changed under the look.

    The leading shards a rerun repeats are read in reader threads while this thread checks,
    shard by shard, that the query repeats them (:func:`_read_leading`), once there is
    enough to read for the check to hide behind the reads; a smaller rerun is checked, then
    read. What follows them is looked up by key.
    """
    n = len(digests)
    with index.lock:  # the index is shared by the threads of this process
        leading = _leading(index, digests)
        dim, generation = index.dim or 0, index.generation
    done, out = 0, None  # rows of the result read already, into ``out``
    if leading:
        out = empty_rows(n, dim)
        done = _read_leading(index.folder, leading, digests, out)
        if done == n:
            return np.ones(n, dtype=bool), out
    with index.lock:
        if index.generation != generation or \
                any(shard.name in index.damaged for shard, _ in leading):
            return None
        prefix = done if leading else stored_prefix(index, digests) if n else 0
        if prefix == n and n:  # a small rerun: every shard read whole, in order
            found, rows = np.ones(n, dtype=bool), None
            tasks = [(shard, None, slice(start, start + shard.rows), True)
                     for shard, start in zip(index.shards, index.starts) if start < n]
        else:
            rows = index.find(digests[prefix:] if prefix else digests)
            if index.generation != generation:  # (renumbered while it read keys: again)
                return None
            found = np.concatenate([np.ones(prefix, dtype=bool), rows >= 0])
            rows = np.concatenate([np.arange(prefix, dtype=np.int64), rows[rows >= 0]])
            tasks = plan_reads(index, rows[done:], at=done)
    m = n if rows is None else len(rows)
    if out is not None and m < n:
        # The rows read already are the first of any result (the found ones lead): a rerun
        # over a grown data set keeps them where they are; a result much smaller than the
        # query is copied out, not kept inside an array of the query's size.
        out = out[:m] if 2 * m >= n else out[:m].copy()
    elif out is None:
        out = empty_rows(m, dim)
    read_rows(index.directory, tasks, out)
    return found, out


def empty_rows(n: int, dim: int) -> np.ndarray:
    """``np.empty((n, dim), float32)``, in huge pages when it is big enough to gain from them.

    numpy asks Linux for transparent huge pages for arrays of 4 MiB and more; a 2-4 MiB hit
    (10k x 84 floats) would get 4 KiB pages, whose faults cost twice the copy that fills them.
    Such a result is the start of a 4 MiB array (the pages past its end are never touched).
    """
    nbytes = n * dim * 4
    if not _HUGE_FROM <= nbytes < _NUMPY_HUGE:
        return np.empty((n, dim), dtype=np.float32)
    return np.empty(_NUMPY_HUGE, dtype=np.uint8)[:nbytes].view(np.float32).reshape(n, dim)


def _leading(index: ConfigIndex, digests: Sequence[str | None] | np.ndarray
             ) -> list[tuple[Shard, int]]:
    """The leading whole shards a query could repeat, when there is enough of them to read
    for the check to hide behind the reads ([] otherwise); the caller holds the lock."""
    n, at, leading = len(digests), 0, []
    is_keys = isinstance(digests, np.ndarray) and digests.dtype.kind != "U"
    if is_keys and (digests.dtype != np.dtype("<u8") or digests.ndim != 2):
        return []
    for shard, start in zip(index.shards, index.starts):
        if start != at or at + shard.rows > n or shard.name in index.damaged or \
                shard.dtype != "float32" or not is_keys and shard.text_hashes[0] is None:
            break
        leading.append((shard, start))
        at += shard.rows
    if at * (index.dim or 0) * 4 < _PIPELINE_BYTES:
        return []
    return leading


def _repeats(shard: Shard, digests: Sequence[str | None] | np.ndarray, start: int) -> bool:
    """Whether ``digests[start:start + shard.rows]`` are the shard's digests, in order."""
    part = digests[start:start + shard.rows]
    if isinstance(part, np.ndarray) and part.dtype.kind != "U":
        return np.array_equal(part, shard.keys)
    return digests_hash(part) == shard.text_hashes[0]


def _read_leading(folder: str, leading: list[tuple[Shard, int]],
                  digests: Sequence[str | None] | np.ndarray, out: np.ndarray) -> int:
    """Read the leading shards into their rows of ``out`` while checking that the query
    repeats them; the rows it does (those of the shards before the first it does not).

    This thread opens each shard, then checks the shards' text while reader threads read
    them (one ``preadv`` each, straight into its rows, holding no GIL), then reads with them
    what is left, then checks the files read. There is one reader fewer than CPUs: this
    thread takes the last CPU once its check is done, so no thread waits for one. A shard
    found not repeated stops the reads not started yet.

    Raises
    ------
    DamagedShard
        A shard is missing or the wrong size, or a repeated one is damaged.
    """
    opened: list[tuple] = []
    repeated = len(leading)
    stop, claims = [len(leading)], itertools.count()
    results: dict[int, int | OSError] = {}
    began = threading.Semaphore(0)

    def drain(first: bool = True) -> None:  # read the next shard not claimed, until none is
        for i in claims:  # left (next() on a count is atomic: each shard is read once)
            if i >= stop[0]:
                break
            fd, _, _, _, buffers = opened[i]
            if first:  # (the waiting thread runs once this one lets go of the GIL: in preadv)
                began.release()
                first = False
            try:
                results[i] = os.preadv(fd, buffers, 0)
            except OSError as exc:
                results[i] = exc
        if first:
            began.release()

    readers: list = []
    try:
        try:
            for shard, start in leading:
                name = f"{shard.name}.npy"
                fd, ident, checked, expected = _open_shard(os.path.join(folder, name), shard)
                buffers = [memoryview(bytearray(len(expected))),
                           memoryview(out[start:start + shard.rows]).cast("B")]
                opened.append((fd, ident, checked, expected, buffers))
            pool = _reader_pool()
            readers = [pool.submit(drain) for _ in range(max(1, _READ_THREADS - 1))]
            for _ in readers:
                # The readers' first reads start before the check: a reader that waited for
                # the GIL meanwhile would wait for all of it (a waiting thread asks every 5 ms).
                began.acquire()
            for i, (shard, start) in enumerate(leading):
                if not _repeats(shard, digests, start):
                    repeated = stop[0] = i
                    break
            drain(first=False)
        except BaseException:
            stop[0] = 0  # (nothing more to read)
            raise
        finally:
            wait(readers)  # (no read may still write into ``out`` once this returns)
        for i, (shard, _) in enumerate(leading[:repeated]):
            fd, ident, checked, expected, buffers = opened[i]
            got = results.get(i)
            if isinstance(got, OSError):
                raise DamagedShard(shard.name, f"{shard.name}.npy: {got}")
            if got != shard.nbytes:  # (a read may stop short: read again, to the end)
                got = _pread_into(fd, buffers)
            try:
                _check_read(f"{shard.name}.npy", shard, buffers, expected, got, ident, checked)
            except DamagedShard as exc:
                raise DamagedShard(shard.name, str(exc)) from None
    finally:
        for fd, *_ in opened:
            os.close(fd)
    shard, start = leading[repeated - 1] if repeated else (None, 0)
    return start + shard.rows if shard is not None else 0


_POOL_LOCK = threading.Lock()
_POOL: tuple[int, ThreadPoolExecutor] | None = None


def _reader_pool() -> ThreadPoolExecutor:
    """The process's reader threads (made again in a forked child, which has none of them).

    All of them are started at once, before any read: a thread started while another fills
    fresh memory waits for the page faults (both need the process's memory map), by up to
    3 ms in a 10 ms read.
    """
    global _POOL
    with _POOL_LOCK:
        if _POOL is None or _POOL[0] != os.getpid():
            pool = ThreadPoolExecutor(_READ_THREADS, thread_name_prefix="featclf-store-read")
            started = threading.Barrier(_READ_THREADS)  # (each waits for all: N threads)
            wait([pool.submit(started.wait) for _ in range(_READ_THREADS)])
            _POOL = (os.getpid(), pool)
        return _POOL[1]


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


def _open_shard(path: str, shard: Shard) -> tuple[int, tuple, bool, bytes]:
    """Open a shard file to read it: ``(fd, identity, checked already?, expected header)``.

    Raises
    ------
    DamagedShard
        The file is missing or the wrong size (the file is closed then).
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
        expected = expected_header(shard.rows, shard.dim, shard.dtype)
        if len(expected) != shard.nbytes - data_len:
            raise DamagedShard(f"{name}: its .npy header does not match its index")
    except BaseException:
        os.close(fd)
        raise
    # Hashed here before, or unchanged since its writer (or prune) hashed it: see _keys.
    return fd, ident, known is not None or shard.verified == ident[1:], expected


def _check_read(name: str, shard: Shard, buffers: list[memoryview], expected: bytes, got: int,
                ident: tuple, checked: bool) -> None:
    """Check a whole shard just read into ``buffers`` (its header, its data): the header,
    the size, and the checksum unless the file is known unchanged (DamagedShard if not)."""
    if buffers[0] != expected:
        raise DamagedShard(f"{name}: its .npy header does not match its index")
    if got != shard.nbytes:
        raise DamagedShard(f"{name}: truncated")
    if not checked:
        h = xxhash.xxh3_128()
        for buffer in buffers:
            h.update(buffer)
        _format.CHECKED[ident] = h.hexdigest()
        if _format.CHECKED[ident] != shard.checksum:
            raise DamagedShard(f"{name}: checksum mismatch")


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
    fd, ident, checked, expected = _open_shard(path, shard)
    try:
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
        buffers = [memoryview(bytearray(len(expected))), memoryview(target).cast("B")]
        got = _pread_into(fd, buffers)
    finally:
        os.close(fd)
    _check_read(name, shard, buffers, expected, got, ident, checked)
    if not direct:
        out[slots] = target if whole else target[rows]


def _read_task(folder: str, task: tuple[Shard, np.ndarray | None, slice | np.ndarray, bool],
               out: np.ndarray) -> None:
    """Run one read task into ``out`` (DamagedShard with ``(stem, reason)`` as its args)."""
    shard, shard_rows, slots, whole = task
    try:
        _read_shard_rows(os.path.join(folder, f"{shard.name}.npy"), shard, shard_rows, out,
                         slots, whole)
    except DamagedShard as exc:
        raise DamagedShard(shard.name, str(exc)) from None


def read_rows(directory: Path, tasks: list[tuple], out: np.ndarray) -> None:
    """Run read tasks (:func:`~featclf.store._index.plan_reads`) into ``out``.

    Shards are immutable, so no lock is needed.

    Raises
    ------
    DamagedShard
        With ``(shard stem, reason)`` as its arguments.
    """
    folder = os.fspath(directory)
    if len(tasks) > 1 and _READ_THREADS > 1 and out.nbytes >= _PARALLEL_READ_BYTES and \
            any(task[0].verified is None for task in tasks):
        # File reads and xxh3 release the GIL: shards to hash are read and checked side by
        # side, each into its own rows of ``out``.
        list(_reader_pool().map(lambda task: _read_task(folder, task, out), tasks))
    else:
        for task in tasks:
            _read_task(folder, task, out)
