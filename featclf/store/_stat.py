"""The stat record: which content digest a file has, as long as its stat has not changed.

A rerun over image files looks each file up here by ``os.stat`` alone: a file whose
``(path, size, mtime_ns, ctime_ns, inode, device)`` matches an entry has that entry's digest,
and if the store holds its vectors the file is never opened. Any change of the stat (a write
moves ``ctime`` even when ``os.utime`` puts ``mtime`` back; a replaced file has a new inode)
misses, and the file is read, hashed and decoded from the same bytes.

Layout (inside the store)::

    STORE/stat/record-<time_ns>-<pid>-<token>.stat

Each file is written once by one job, under a name no other writer uses (time, pid and a
random token), from a temporary ``.tmp-*`` file renamed into place, so any number of jobs
can add to the record at once without locks and nothing a job wrote is lost: readers merge
every file. A job that finds many files merges them into one (written before the files it
merged are removed, so a concurrent reader finds every entry in one or the other). Each file
carries an xxh3 checksum of its rows: a damaged file (cut short, bytes flipped, not a record)
is ignored, never trusted, and its files are re-hashed and recorded again.

Racy entries
------------
A file written in the same timestamp tick as it was read could change again without its stat
changing (file systems keep times at a granularity of milliseconds to seconds). As git does
for its index, an entry is recorded only when the file's ``ctime`` is older than
:data:`RACY_SECONDS` before the read; a younger file is hashed again on the next run.

The record imports neither torch nor :mod:`featclf.data`; it is keyed by paths and stat
tuples only.

Examples
--------
>>> import tempfile, os, time
>>> root = tempfile.mkdtemp()
>>> image = os.path.join(root, "a.png")
>>> with open(image, "wb") as fh:
...     _ = fh.write(b"pixels")
>>> st = os.stat(image)
>>> key = (st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev)
>>> record = StatRecord(root)
>>> record.add(image, key, "0f" * 16, read_ns=st.st_ctime_ns + 10**10)  # read 10 s later
True
>>> record.flush() is not None
True
>>> StatRecord(root).lookup([image, os.path.join(root, "other.png")]) == ["0f" * 16, None]
True
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import struct
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xxhash

__all__ = ["RACY_SECONDS", "StatRecord"]

#: Entries of files whose ``ctime`` is younger than this when they are read are not recorded
#: (see "Racy entries"): two seconds covers the coarsest common timestamps (FAT, SMB).
RACY_SECONDS = 2.0

#: Files beyond which a job merges the record into one file when it writes its own.
MERGE_FILES = 8

DIRECTORY = "stat"
_STALE_SECONDS = 3600.0
_MAGIC = b"FCSTAT1\n"
_SUFFIX = ".stat"
_DTYPE = np.dtype([("hi", "<u8"), ("lo", "<u8"), ("size", "<i8"), ("mtime", "<i8"),
                   ("ctime", "<i8"), ("ino", "<i8"), ("dev", "<i8"), ("digest", "V16")])
_STAT_FIELDS = ("size", "mtime", "ctime", "ino", "dev")


def _s64(value: int) -> int:
    """An unsigned 64-bit number (an inode, a device) as the int64 with the same bits."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >= 1 << 63 else value


# What os.fsencode does, without its per-call overhead (a rerun keys every file).
_ENCODING = sys.getfilesystemencoding()
# Absolute paths start with these (on Windows also a drive; os.path.join handles the rest).
_ROOTS = (os.sep, os.altsep) if os.altsep else (os.sep,)


def path_key(path: str | os.PathLike, cwd: str | None = None) -> bytes:
    """The 16-byte key of a file's path made absolute (its bytes, so any file name works).

    The path is not normalised (a symlink or ``..`` could make two spellings one file or
    not): another spelling of the same file is another key, and only costs a re-hash.

    Examples
    --------
    >>> len(path_key("/a/b.png")), path_key("b.png", cwd="/a") == path_key("/a/b.png")
    (16, True)
    """
    path = os.fspath(path)
    if isinstance(path, bytes):
        path = os.fsdecode(path)
    if not path.startswith(_ROOTS):
        path = os.path.join(os.getcwd() if cwd is None else cwd, path)
    return xxhash.xxh3_128_digest(path.encode(_ENCODING, "surrogateescape"))


class StatRecord:
    """A store's stat record (see the module docstring): look files up, add, write.

    Parameters
    ----------
    root : str or path-like
        The store's directory (:attr:`FeatureStore.root <featclf.store.FeatureStore.root>`).
    racy_seconds : float, default=RACY_SECONDS
        How old a file's ``ctime`` must be at its read for its entry to be recorded.
    """

    def __init__(self, root: str | os.PathLike, *, racy_seconds: float = RACY_SECONDS) -> None:
        self.directory = Path(root) / DIRECTORY
        self.racy_ns = int(racy_seconds * 1e9)
        self._new: list[tuple] = []
        self._table: np.ndarray | None = None

    # -- reading ------------------------------------------------------------------------------

    def _load(self) -> np.ndarray:
        if self._table is None:
            self._table = _read_all(self.directory)[0]
        return self._table

    def lookup(self, paths: Sequence[str | os.PathLike]) -> list[str | None]:
        """The recorded digest of each file whose stat is unchanged, None for the others.

        Costs one ``os.stat`` per file; no file is opened. Missing files, and files that
        cannot be stat'ed, are None (the job's read names the reason).
        """
        table = self._load()
        n = len(paths)
        out: list[str | None] = [None] * n
        if not len(table) or not n:
            return out
        # path_key and os.stat of every file, with the per-call overhead taken out of the loop
        # (this is the whole cost of a rerun that opens nothing).
        cwd, join, digest, stat = os.getcwd(), os.path.join, xxhash.xxh3_128_digest, os.stat
        texts = [p if type(p) is str else os.fsdecode(os.fspath(p)) for p in paths]
        texts = [t if t.startswith(_ROOTS) else join(cwd, t) for t in texts]
        keys = b"".join([digest(t.encode(_ENCODING, "surrogateescape")) for t in texts])
        absent = (-1, -1, -1, -1, -1)
        stats = []
        add = stats.append
        for t in texts:
            try:
                st = stat(t)
            except (OSError, ValueError):
                add(absent)
                continue
            add((st.st_size, st.st_mtime_ns, st.st_ctime_ns, st.st_ino, st.st_dev))
        wanted = np.frombuffer(keys, dtype=">u8").reshape(n, 2).astype(np.uint64)
        try:
            now = np.array(stats, dtype=np.int64)
        except OverflowError:  # an inode or device number of 64 bits
            now = np.array([tuple(_s64(v) for v in row) for row in stats], dtype=np.int64)
        at = np.minimum(np.searchsorted(table["hi"], wanted[:, 0]), len(table) - 1)
        rows = table[at]
        hit = (rows["hi"] == wanted[:, 0]) & (rows["lo"] == wanted[:, 1])
        for j, f in enumerate(_STAT_FIELDS):
            hit &= rows[f] == now[:, j]
        found = rows["digest"][hit].tobytes().hex()
        for k, i in enumerate(np.flatnonzero(hit).tolist()):
            out[i] = found[32 * k:32 * k + 32]
        return out

    # -- writing ------------------------------------------------------------------------------

    def add(self, path: str | os.PathLike, stat: tuple[int, int, int, int, int], digest: str,
            *, read_ns: int) -> bool:
        """Note that ``path`` had ``digest`` at ``stat`` (read at ``time.time_ns()`` =
        ``read_ns``); False (not noted) when the entry would be racy."""
        if stat[2] > read_ns - self.racy_ns:
            return False
        k = int.from_bytes(path_key(path), "big")
        self._new.append((k >> 64, k & ((1 << 64) - 1), stat[0], stat[1], stat[2],
                          _s64(stat[3]), _s64(stat[4]),
                          bytes.fromhex(digest)))
        return True

    @property
    def pending(self) -> int:
        """Entries added and not yet written."""
        return len(self._new)

    def flush(self) -> Path | None:
        """Write the entries added since the last flush as a new record file (None: nothing
        to write, or the store cannot be written; the record is a cache, a job goes on).

        When the record has more than :data:`MERGE_FILES` files, they are merged into one.
        """
        if not self._new:
            return None
        rows = np.array(self._new, dtype=_DTYPE)
        try:
            self.directory.mkdir(exist_ok=True)
            path = _write(self.directory, rows, ordered=False)
        except OSError:
            return None
        self._new = []
        self._table = None
        try:
            names = [e for e in os.scandir(self.directory)
                     if e.name.endswith(_SUFFIX) and not e.name.startswith(".")]
            if len(names) > MERGE_FILES:
                self._merge()
        except OSError:
            pass
        return path

    def prune(self, stored: np.ndarray) -> int:
        """Drop the entries whose digest has no vector in the store; the number dropped.

        ``stored``: the store's ``(n, 2)`` uint64 digest keys (every namespace's). An entry
        whose content no namespace holds saves nothing (its file is read and computed anyway),
        and one left by a deleted or moved file is never looked up again: without this, the
        record grows with every file a folder ever held. The record keeps path hashes, not
        paths, so it cannot tell the deleted files themselves. The rest is merged into one file
        (as :meth:`flush` merges), and entries other jobs write meanwhile are kept.
        """
        return self._merge(stored)

    def _merge(self, stored: np.ndarray | None = None) -> int:
        table, merged, damaged = _read_all(self.directory)
        dropped = 0
        if stored is not None:
            if not merged and not damaged:
                return 0
            digests = np.ascontiguousarray(table["digest"]).view("V16").ravel()
            keys = np.ascontiguousarray(stored, dtype="<u8").reshape(-1, 2).view("V16").ravel()
            keep = np.isin(digests, keys)
            dropped = len(table) - int(keep.sum())
            if not dropped and len(merged) <= 1 and not damaged:
                return 0
            table = table[keep]
        _write(self.directory, table, ordered=True)  # published before anything is removed
        now = time.time()
        for entry in os.scandir(self.directory):  # left by killed jobs (a live one renames
            if entry.name.startswith(".tmp-"):    # its own within a second)
                with contextlib.suppress(OSError):
                    if now - entry.stat().st_mtime > _STALE_SECONDS:
                        os.unlink(entry.path)
        for old in merged + damaged:
            try:
                old.unlink()
            except FileNotFoundError:  # another job merged it meanwhile: its rows are kept there
                pass
        return dropped


def _read_all(directory: Path) -> tuple[np.ndarray, list[Path], list[Path]]:
    """Every valid record file merged (sorted by path key, the newest entry per path), the
    files read, and the damaged ones."""
    try:
        names = sorted(e.name for e in os.scandir(directory)
                       if e.name.endswith(_SUFFIX) and not e.name.startswith("."))
    except OSError:
        return np.empty(0, _DTYPE), [], []
    parts, merged, damaged = [], [], []
    ordered = False
    for name in names:
        path = directory / name
        try:
            rows, ordered = _read(path)
        except FileNotFoundError:  # merged away by another job since the listing
            continue
        except (OSError, ValueError):
            damaged.append(path)
            continue
        parts.append(rows)
        merged.append(path)
    if not parts:
        return np.empty(0, _DTYPE), merged, damaged
    if len(parts) == 1 and ordered:
        return parts[0], merged, damaged
    table = np.concatenate(parts)
    # The newest entry of each path wins: files are in time order, rows in the order added.
    table = table[::-1]
    order = np.lexsort((table["lo"], table["hi"]))  # stable: the newest first within a key
    table = table[order]
    keep = np.ones(len(table), dtype=bool)
    keep[1:] = (table["hi"][1:] != table["hi"][:-1]) | (table["lo"][1:] != table["lo"][:-1])
    table = table[keep]
    # Two paths sharing the high 64 bits: lookups search on them, so keep the first only
    # (the other misses and is re-hashed: a miss is always safe).
    unique = np.ones(len(table), dtype=bool)
    unique[1:] = table["hi"][1:] != table["hi"][:-1]
    return np.ascontiguousarray(table[unique]), merged, damaged


def _read(path: Path) -> tuple[np.ndarray, bool]:
    data = path.read_bytes()
    if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 4:
        raise ValueError("not a stat record file")
    (length,) = struct.unpack_from("<I", data, len(_MAGIC))
    start = len(_MAGIC) + 4
    header = json.loads(data[start:start + length])
    payload = memoryview(data)[start + length:]
    rows = int(header["rows"])
    if header.get("format") != 1 or len(payload) != rows * _DTYPE.itemsize:
        raise ValueError("wrong size or format")
    if xxhash.xxh3_128_hexdigest(payload) != header["xxh3"]:
        raise ValueError("checksum mismatch")
    return np.frombuffer(payload, dtype=_DTYPE), bool(header.get("ordered"))


def _write(directory: Path, rows: np.ndarray, *, ordered: bool) -> Path:
    payload = np.ascontiguousarray(rows, dtype=_DTYPE).tobytes()
    header = json.dumps({"format": 1, "rows": len(rows), "ordered": ordered,
                         "xxh3": xxhash.xxh3_128_hexdigest(payload)}).encode()
    token = secrets.token_hex(8)
    name = f"record-{time.time_ns():020d}-{os.getpid()}-{token}{_SUFFIX}"
    tmp = directory / f".tmp-{name}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(_MAGIC + struct.pack("<I", len(header)) + header + payload)
            fh.flush()
            os.fsync(fh.fileno())
        final = directory / name
        os.rename(tmp, final)  # the name is this writer's own: nothing is replaced
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return final
