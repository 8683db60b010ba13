"""FeatureStore: a content-addressed, crash-safe on-disk cache of feature vectors.

A store is one directory. It holds the vectors a feature extractor computed, keyed by
everything that decides them, so that a second run over the same images reads them back instead
of running the network, and a killed run resumes where it stopped.

Layout
------
::

    STORE/
      featclf-store.json              format, version and the store's dtype (float32 | float16)
      configs/<config key>/           one namespace per extraction configuration
        config.json                   the configuration the key hashes (readable, for `info`)
        shard-<writer>-<seq>.npy      vectors, (rows, dim), the store's dtype
        shard-<writer>-<seq>.json     the shard's index: sample digests, last known paths,
                                      labels, rows, dim, dtype, byte size and xxh3 checksum
      samples/<time>-<writer>.json    newer paths/labels of samples (a moved file, CLI labels)
      errors.csv                      unreadable images of the last `featclf extract` (CLI)

``<writer>`` is ``<host>-<pid>-<random>``: every process writes files no other process names.

Key
---
A vector's key is the pair (config key, sample digest). The config key is
:func:`~featclf.fingerprint.digest_json` of the extractor's configuration: model fingerprint
(architecture name + hash of every weight tensor), layer, pooling, preprocessing, precision and
format version. The sample digest is the content hash of the image file's bytes or of the array
row (:meth:`ImageSource.digests`). Changing any part of the configuration changes the namespace
(a miss); renaming or moving an image file keeps its digest (a hit).

Why per-shard JSON indexes and not SQLite
-----------------------------------------
Every shard carries its own small index, written once and never modified, so writers never
share a mutable file: no locks, no journal, nothing to corrupt, and it works the same on local
disks and network file systems (where SQLite's locking is unreliable). A reader lists the
namespace directory and parses the indexes it has not seen yet (incrementally, per config, only
when that config is asked for), so opening a store reads one small file. Lookups run in numpy
(128-bit keys, sorted once, ``np.searchsorted``), not in a Python dict of strings. Many small
shards are merged by ``FeatureStore.prune(compact=True)``, which also removes duplicates.

Crash safety
------------
A shard is written to ``.tmp-<name>``, fsynced and renamed into place with :func:`os.replace`;
then its index is written the same way. A shard exists for readers only once its index
exists, so a killed process (``kill -9``) leaves at most a stray temporary file or a ``.npy``
without an index, both invisible and removed by ``prune``; every shard renamed before the kill
is complete, because its bytes were written (and fsynced) before its name. A killed job
therefore loses at most the vectors buffered for the shard in flight (``shard_rows`` rows or
``flush_seconds`` of work). The directory itself is fsynced when a writer closes, not after
every shard (each directory fsync costs ~10 ms here), so a power loss may also forget the
names of the last shards written: even if it kept an index and lost its shard's name, the
index names the shard's byte size and checksum, and readers refuse a shard whose file is
missing or of the wrong size or checksum. Lost vectors are simply missing, and recomputed.

Concurrency
-----------
Writers never touch each other's files (names carry host, pid and a random token), and a
rename is atomic, so any number of processes can fill one store at once without locks. Two
writers racing on the same images may both store a vector: readers take one copy (identical
keys mean identical inputs), and ``prune`` removes the extra copy. ``prune`` holds a file lock
so that two prunes never run at once; it removes only temporary files of writers that are dead
(same host) or older than ``stale_seconds``, and it writes a rewritten shard before removing the
old one, so concurrent readers and writers keep working.

Integrity
---------
Each shard's xxh3-128 checksum is computed when it is written. :meth:`FeatureStore.verify`
checks every shard. Reads check every shard's size and header against its index, and the first
read of a shard in a process checks its checksum too (xxh3 runs at about 10 GB/s, a fraction of
the cost of reading the bytes); the result is remembered per (file, inode, size, mtime, ctime),
so later reads of an unchanged shard in that process do not re-hash it, while a shard written
to after the check is checked again. A damaged shard is never returned: its vectors count as
missing and are recomputed, with a warning.

Examples
--------
>>> import tempfile
>>> store = FeatureStore(tempfile.mkdtemp() + "/features")
>>> config = {"model": "lenet5", "layer": None, "pooling": "avg"}
>>> store.put(config, ["d0", "d1"], np.array([[1.0, 2.0], [3.0, 4.0]]), paths=["a.png", "b.png"])
>>> found, vectors = store.get(config, ["d1", "unknown", "d0"])
>>> found.tolist(), vectors.tolist()
([True, False, True], [[3.0, 4.0], [1.0, 2.0]])
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import functools
import io
import json
import os
import re
import secrets
import shutil
import socket
import threading
import time
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from featclf.data.inputs import ImageSource, InputError, check_on_error
from featclf.fingerprint import digest_json
from featclf.progress import progress_bar

STORE_FORMAT = "featclf-store"
STORE_VERSION = 1
SHARD_FORMAT = "featclf-shard"
STORE_META = "featclf-store.json"
DTYPES = ("float32", "float16")
# What a store directory may hold besides temporary files.
_STORE_ENTRIES = {STORE_META, "configs", "samples", "errors.csv", ".prune.lock"}

_SHARD_INDEX = re.compile(r"^shard-.+\.json$")
_WRITER_IN_NAME = re.compile(r"(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-(?P<token>[0-9a-f]{6})")

# Shards whose checksum this process has checked: (path, inode, size, mtime, ctime) -> ok. A
# file written to after the check gets new times (or size, or inode), so it is checked again.
_CHECKED: dict[tuple[str, int, int, int, int], bool] = {}
# Indexes of the namespaces this process has read, by directory (most recent last). Index
# files are written once and never changed, so a later FeatureStore object on the same store
# (the extractor opens one per call) only lists the directory and reads the new ones.
_INDEXES: OrderedDict[str, _ConfigIndex] = OrderedDict()
_MAX_CACHED_INDEXES = 32
_INDEXES_LOCK = threading.Lock()
# Reads of many shards run in threads once there is this much to read.
_READ_THREADS = min(4, os.cpu_count() or 1)
_PARALLEL_READ_BYTES = 32 << 20


class StoreError(ValueError):
    """A store directory cannot be used as asked; the message names it and says what to do."""


# --------------------------------------------------------------------------------------------
# small file helpers


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24] or "host"


def _new_writer_id() -> str:
    return f"{_host()}-{os.getpid()}-{secrets.token_hex(3)}"


def _fsync_dir(directory: Path) -> None:
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:  # some platforms cannot open directories; the rename is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _atomic_write(path: Path, parts: Sequence[bytes | memoryview], tmp_tag: str) -> None:
    """Write ``parts`` one after the other to ``path`` via a fsynced temporary file."""
    tmp = path.with_name(f".tmp-{tmp_tag}-{path.name}")
    try:
        with open(tmp, "wb") as fh:
            for part in parts:
                fh.write(part)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError):
            # Name the file and say that nothing stored is lost (ENOSPC, EROFS, EACCES...).
            raise OSError(exc.errno, f"cannot write {path.name} in {path.parent}: "
                          f"{exc.strerror or exc}. Every vector written before is kept; free "
                          "space or fix permissions and run again to compute the rest") from exc
        raise


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()


def _writer_is_dead(name: str) -> bool:
    """Whether the writer named in a file name is a process of this host that no longer runs."""
    match = _WRITER_IN_NAME.search(name)
    if match is None or match.group("host") != _host():
        return False
    pid = int(match.group("pid"))
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False


def _as_label(value: Any) -> Any:
    if value is None:
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value if isinstance(value, int | float | str | bool) else str(value)


# --------------------------------------------------------------------------------------------
# shards and their indexes


@dataclass
class _Shard:
    """What a shard's index says about it (``keys``: the digests as 128-bit numbers)."""

    name: str  # file stem, "shard-<writer>-<seq>"
    rows: int
    dim: int
    dtype: str
    nbytes: int
    checksum: str
    digests: list[str]
    paths: list[str | None] | None
    labels: list[Any] | None
    keys: np.ndarray  # (rows, 2) uint64

    @classmethod
    def from_index(cls, data: dict, stem: str, raw: bytes | None = None) -> _Shard:
        if data.get("format") != SHARD_FORMAT:
            raise ValueError("not a featclf shard index")
        own = data.get("index_xxh3")
        if own is not None and not _index_checksum_ok(raw, own) and \
                own != xxhash.xxh3_128_hexdigest(
                    _json_bytes({k: v for k, v in data.items() if k != "index_xxh3"})):
            raise ValueError("the index does not match its own checksum (edited or damaged)")
        rows, digests = int(data["rows"]), list(data["digests"])
        paths, labels = data.get("paths"), data.get("labels")
        if len(digests) != rows or any(v is not None and len(v) != rows
                                       for v in (paths, labels)):
            raise ValueError(f"digests, paths or labels do not match its {rows} rows")
        keys, missing = _digest_keys(digests)
        if missing is not None and missing.any():
            raise ValueError("a digest is null")
        return cls(stem, rows, int(data["dim"]), str(data["dtype"]), int(data["bytes"]),
                   str(data["xxh3"]), digests, paths, labels, keys)


def _index_checksum_ok(raw: bytes | None, own: str) -> bool:
    """Check an index's own checksum on its file bytes, without encoding the JSON again.

    featclf writes the index as compact, key-sorted JSON whose checksum covers the same JSON
    without the ``"index_xxh3"`` member, so removing that member's bytes gives back exactly
    what was hashed. False means "not shown here": the caller then re-encodes (an index
    written by other tools, or a damaged one).
    """
    if raw is None:
        return False
    member = f'"index_xxh3":"{own}"'.encode()
    for cut in (member + b",", b"," + member):
        if cut in raw:
            return xxhash.xxh3_128_hexdigest(raw.replace(cut, b"", 1)) == own
    return False


@functools.lru_cache(maxsize=256)
def _expected_header(rows: int, dim: int, dtype: str) -> bytes:
    """The ``.npy`` header ``np.save`` writes for a C-ordered shard: reads compare its bytes."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(
        np.dtype(dtype)), "fortran_order": False, "shape": (rows, dim)})
    return buf.getvalue()


def _readinto(fh, target: memoryview) -> int:
    got = 0
    while got < len(target):
        n = fh.readinto(target[got:])
        if not n:
            break
        got += n
    return got


class _DamagedShard(Exception):
    """A shard that is missing, truncated or fails its checksum (internal)."""


def _read_shard_rows(path: Path, shard: _Shard, rows: np.ndarray, out: np.ndarray,
                     slots: np.ndarray | slice, whole: bool) -> None:
    """Copy ``shard[rows]`` into ``out[slots]`` (float32), checking what must be checked.

    ``whole``: ``rows`` is every row of the shard in order and ``slots`` a slice.

    Raises
    ------
    _DamagedShard
        The file is missing, has the wrong size or header, or fails its checksum.
    """
    itemsize = np.dtype(shard.dtype).itemsize
    data_len = shard.rows * shard.dim * itemsize
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise _DamagedShard(f"{path.name}: file missing") from None
    with fh:
        st = os.fstat(fh.fileno())
        if st.st_size != shard.nbytes:
            raise _DamagedShard(f"{path.name}: {st.st_size} bytes, its index says {shard.nbytes}")
        ident = (str(path), st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)
        checked = _CHECKED.get(ident)
        if checked is False:
            raise _DamagedShard(f"{path.name}: checksum mismatch")
        header = fh.read(shard.nbytes - data_len)
        if header != _expected_header(shard.rows, shard.dim, shard.dtype):
            raise _DamagedShard(f"{path.name}: its .npy header does not match its index")
        if checked and len(rows) * 4 < shard.rows:
            # A few rows of a shard already checked: map it instead of reading it all.
            data = np.memmap(fh, dtype=shard.dtype, mode="r", offset=len(header),
                             shape=(shard.rows, shard.dim))
            out[slots] = data[rows]
            return
        direct = whole and shard.dtype == "float32"
        # Read straight into the caller's rows when they are the whole shard: one copy.
        target = out[slots] if direct else np.empty((shard.rows, shard.dim), dtype=shard.dtype)
        raw = memoryview(target).cast("B")
        if _readinto(fh, raw) != data_len:
            raise _DamagedShard(f"{path.name}: truncated")
        if not checked:
            h = xxhash.xxh3_128()
            h.update(header)
            h.update(raw)
            ok = h.hexdigest() == shard.checksum
            _CHECKED[ident] = ok
            if not ok:
                raise _DamagedShard(f"{path.name}: checksum mismatch")
        if not direct:
            out[slots] = target if whole else target[rows]


def _digest_keys(digests: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray | None]:
    """Digests as ``(n, 2)`` uint64 keys, and which are None (None: no digest is None).

    featclf's digests are 32 hex characters (128-bit xxh3) and are converted in one C call;
    any other string is hashed to 128 bits first.
    """
    n = len(digests)
    try:
        # Joined with spaces, which bytes.fromhex skips: a space every 33rd character proves
        # every digest is 32 characters long, without a Python-level pass over them.
        text = " ".join(digests)  # TypeError when some digest is None (or not a str)
        joined = text.encode("ascii")  # ValueError when not ASCII
        if n and len(joined) == 33 * n - 1 and \
                bool((np.frombuffer(joined, np.uint8)[32::33] == 32).all()):
            raw = bytes.fromhex(text)
            if len(raw) == 16 * n:  # a space inside a digest would shorten it
                return np.frombuffer(raw, "<u8").reshape(n, 2), None
    except (TypeError, ValueError):
        pass  # None, not ASCII or not all hex: the general path below
    raw = bytearray(16 * n)
    missing = np.zeros(n, dtype=bool)
    for i, d in enumerate(digests):
        if d is None:
            missing[i] = True
            continue
        try:
            key = bytes.fromhex(d) if len(d) == 32 else b""
        except ValueError:
            key = b""
        raw[16 * i:16 * i + 16] = key or xxhash.xxh3_128_digest(b"featclf-key:" + d.encode())
    return np.frombuffer(bytes(raw), "<u8").reshape(n, 2), missing


def _sort_key(keys: np.ndarray) -> np.ndarray:
    """A 64-bit mix of both halves of 128-bit keys (the splitmix64 finaliser).

    Real digests are uniform already, but digests of other origins may share a half (say,
    ``f"{i:032x}"``); mixing keeps their 64-bit sort keys distinct, so lookups stay
    ``O(log n)``. Equal sort keys of different digests are still resolved, only slower.
    """
    with np.errstate(over="ignore"):
        z = keys[:, 0] ^ (keys[:, 1] * np.uint64(0x9E3779B97F4A7C15))
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class _ConfigIndex:
    """The loaded indexes of one namespace, refreshed incrementally.

    Rows of all shards are numbered one after the other ("global rows"). Lookups run in numpy:
    the digests' 128-bit keys are sorted once by a 64-bit mix of them and searched with
    ``np.searchsorted``, which costs a few milliseconds for 100k digests where a Python dict
    of fresh strings costs tens.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.shards: list[_Shard] = []
        self.keys: list[np.ndarray] = []  # per shard, (rows, 2) uint64
        self.starts: list[int] = []  # global row of each shard's first row
        self.total = 0
        self.loaded: set[str] = set()
        self.damaged: dict[str, str] = {}  # shard stem -> reason (found by reads in this process)
        self.unreadable: dict[str, str] = {}  # index file -> reason
        self.dim: int | None = None
        self._sorted: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._live: tuple[np.ndarray, np.ndarray] | None = None
        self.lock = threading.RLock()  # held by whoever reads or changes the fields above

    def refresh(self) -> None:
        """Load index files written since the last refresh (all of them if some vanished)."""
        try:
            names = {e.name for e in os.scandir(self.directory) if _SHARD_INDEX.match(e.name)}
        except FileNotFoundError:
            names = set()
        if not self.loaded <= names:  # prune removed or rewrote shards: start again
            damaged, lock = self.damaged, self.lock
            self.__init__(self.directory)
            self.damaged, self.lock = damaged, lock
        for name in sorted(names - self.loaded - set(self.unreadable)):
            try:
                raw = (self.directory / name).read_bytes()
                shard = _Shard.from_index(json.loads(raw), name[:-5], raw)
            except FileNotFoundError:
                continue
            except (ValueError, KeyError, TypeError) as exc:
                self.unreadable[name] = f"unreadable index ({exc})"
                warnings.warn(f"{self.directory / name}: unreadable shard index ({exc}); its "
                              "vectors count as missing and are recomputed. `featclf store "
                              "verify` lists it and `featclf store prune` removes it",
                              stacklevel=2)
                continue
            self.loaded.add(name)
            if self.dim is None:
                self.dim = shard.dim
            self.shards.append(shard)
            self.keys.append(shard.keys)
            self.starts.append(self.total)
            self.total += shard.rows
            self._sorted = self._live = None

    def _live_keys(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys of the shards in use, in shard order; their global rows)."""
        if self._live is None:
            live = [i for i, s in enumerate(self.shards) if s.name not in self.damaged]
            keys = np.concatenate([self.keys[i] for i in live]) if live else \
                np.empty((0, 2), np.uint64)
            rows = np.concatenate([np.arange(self.starts[i], self.starts[i] + self.shards[i].rows)
                                   for i in live]) if live else np.empty(0, np.int64)
            self._live = (keys, rows)
        return self._live

    def _sorted_keys(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(sorted 64-bit sort keys, the 128-bit keys in that order, their global rows)."""
        if self._sorted is None:
            keys, rows = self._live_keys()
            mixed = _sort_key(keys)
            order = np.argsort(mixed, kind="stable")
            self._sorted = (mixed[order], keys[order], rows[order])
        return self._sorted

    def find(self, digests: Sequence[str | None]) -> np.ndarray:
        """Global rows of ``digests`` (-1 where not stored)."""
        query, missing = _digest_keys(digests)
        live_keys, live_rows = self._live_keys()
        if missing is None and np.array_equal(query, live_keys):
            return live_rows.copy()  # the inputs of the run that wrote the store, in order
        mixed, keys, rows = self._sorted_keys()
        result = np.full(len(digests), -1, dtype=np.int64)
        if len(mixed) == 0 or len(query) == 0:
            return result
        wanted = _sort_key(query)
        pos = np.searchsorted(mixed, wanted)
        at = np.minimum(pos, len(mixed) - 1)
        same = mixed[at] == wanted
        hit = same & (keys[at] == query).all(axis=1)
        result[hit] = rows[at[hit]]
        # Rare: another digest has the same 64-bit sort key; look at the next ones too.
        for i in np.flatnonzero(same & ~hit):
            j = int(pos[i])
            while j < len(mixed) and mixed[j] == wanted[i]:
                if (keys[j] == query[i]).all():
                    result[i] = rows[j]
                    break
                j += 1
        if missing is not None:
            result[missing] = -1
        return result

    def shard_of(self, rows: np.ndarray) -> np.ndarray:
        """Shard positions of global rows."""
        return np.searchsorted(np.asarray(self.starts, dtype=np.int64), rows, side="right") - 1

    def locate(self, rows: np.ndarray) -> list[tuple[_Shard, int]]:
        """The shard of each global row and the row's position in it."""
        positions = self.shard_of(rows)
        local = rows - np.asarray(self.starts, dtype=np.int64)[positions]
        return [(self.shards[p], r) for p, r in zip(positions.tolist(), local.tolist())]

    def distinct(self) -> dict[str, tuple[_Shard, int]]:
        """Every stored digest once (in shard order), with the shard and row holding it."""
        out: dict[str, tuple[_Shard, int]] = {}
        for shard in self.shards:
            if shard.name not in self.damaged:
                for row, digest in enumerate(shard.digests):
                    out.setdefault(digest, (shard, row))
        return out

    def mark_damaged(self, stem: str, reason: str) -> None:
        """Stop using a shard; other copies of its vectors (if any) take its place."""
        self.damaged[stem] = reason
        self._sorted = self._live = None


# --------------------------------------------------------------------------------------------
# writing


def _write_shard(directory: Path, stem: str, digests: list[str], vectors: np.ndarray,
                 paths: list, labels: list | None, writer_id: str) -> None:
    """Write one shard (C-ordered ``vectors`` in the store's dtype), then its index."""
    header = _expected_header(*vectors.shape, vectors.dtype.name)
    data = memoryview(vectors).cast("B")
    h = xxhash.xxh3_128()
    h.update(header)
    h.update(data)
    index = {
        "format": SHARD_FORMAT, "version": STORE_VERSION, "rows": len(digests),
        "dim": int(vectors.shape[1]), "dtype": vectors.dtype.name,
        "bytes": len(header) + len(data), "xxh3": h.hexdigest(), "digests": list(digests),
        "paths": None if all(p is None for p in paths) else
        [None if p is None else os.fspath(p) for p in paths],
        "labels": None if labels is None else [_as_label(lab) for lab in labels],
        "writer": writer_id, "created": time.time(),
    }
    # The index checksums itself: a damaged or edited index (digests out of order, say) would
    # otherwise pair valid vectors with the wrong samples.
    index["index_xxh3"] = xxhash.xxh3_128_hexdigest(_json_bytes(index))
    # The shard first, its index second: a shard without an index is invisible. The directory
    # is fsynced by the caller once per batch of shards (see the module docstring).
    _atomic_write(directory / f"{stem}.npy", [header, data], writer_id)
    _atomic_write(directory / f"{stem}.json", [_json_bytes(index)], writer_id)


class ShardWriter:
    """Buffers vectors of one configuration and writes them as shards.

    Made by :meth:`FeatureStore.writer`.

    A shard is written when ``shard_rows`` rows are buffered, when the oldest buffered row is
    ``flush_seconds`` old, on :meth:`flush` and on :meth:`close` (the context manager closes).
    """

    def __init__(self, store: FeatureStore, config: dict) -> None:
        self.store = store
        self.key = store.config_key(config)
        self.directory = store._namespace(config, create=True)
        self.writer_id = _new_writer_id()
        self.seq = 0
        self.written: set[str] = set()
        self.n_rows = 0
        self.shards: list[str] = []
        self._buffer: list[tuple[list[str], np.ndarray, list, list | None]] = []
        self._buffered = 0
        self._since: float | None = None
        self._dim: int | None = None

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
        elif self._buffered >= self.store.shard_rows:
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
        step = self.store.shard_rows
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

    def _write_shard(self, digests: list[str], vectors: np.ndarray, paths: list,
                     labels: list | None) -> None:
        stem = f"shard-{self.writer_id}-{self.seq:06d}"
        self.seq += 1
        _write_shard(self.directory, stem, digests, np.ascontiguousarray(vectors), paths, labels,
                     self.writer_id)
        self.n_rows += len(digests)
        self.shards.append(stem)

    def close(self) -> None:
        """Write what is buffered, and make the new names durable (fsync the directory)."""
        self.flush()
        if self.shards:
            _fsync_dir(self.directory)


# --------------------------------------------------------------------------------------------
# reports


@dataclass
class ConfigInfo:
    """One namespace of a store, as ``featclf store info`` shows it."""

    key: str
    config: dict | None
    vectors: int
    duplicates: int
    shards: int
    dim: int | None
    dtypes: list[str]
    bytes: int


@dataclass
class VerifyReport:
    """What :meth:`FeatureStore.verify` found: the shards checked and every problem."""

    shards: int = 0
    vectors: int = 0
    bytes: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems


@dataclass
class PruneReport:
    """What :meth:`FeatureStore.prune` removed."""

    temp_files: list[str] = field(default_factory=list)
    orphans: list[str] = field(default_factory=list)
    damaged: list[str] = field(default_factory=list)
    duplicates: int = 0
    merged: int = 0
    rewritten: list[str] = field(default_factory=list)
    configs: list[str] = field(default_factory=list)
    bytes_freed: int = 0


# --------------------------------------------------------------------------------------------
# the store


class FeatureStore:
    """A directory of feature vectors keyed by (configuration, sample content).

    See the module docstring for the layout, the key, and the crash-safety and concurrency
    arguments. Opening a store reads one small file; the indexes of a configuration are read
    the first time it is asked for.

    Parameters
    ----------
    root : str or path-like
        The store directory; created when missing (unless ``create=False``).
    dtype : {"float32", "float16"} or None, default=None
        How vectors are stored. None: the existing store's dtype, ``"float32"`` for a new store.
        ``float16`` halves the disk and read cost, at about 3 significant digits. Vectors are
        always returned as float32.
    shard_rows : int, default=1024
        Rows per shard written.
    flush_seconds : float, default=10.0
        A writer writes what it buffered once the oldest row is this old, which bounds the work
        a killed job loses.
    create : bool, default=True
        Create the store if it does not exist; with False a missing store is an error.

    Examples
    --------
    >>> import tempfile
    >>> root = tempfile.mkdtemp()
    >>> store = FeatureStore(root + "/s", dtype="float16")
    >>> cfg = {"model": "m", "pooling": "avg"}
    >>> with store.writer(cfg) as w:
    ...     w.add(["a", "b", "c"], np.eye(3))
    >>> found, vec = FeatureStore(root + "/s").get(cfg, ["c", "a"])
    >>> vec.dtype, vec.tolist()
    (dtype('float32'), [[0.0, 0.0, 1.0], [1.0, 0.0, 0.0]])
    >>> store.get({"model": "m", "pooling": "max"}, ["a"])[0].tolist()  # another config: a miss
    [False]
    >>> [(i.vectors, i.dim, i.dtypes) for i in store.info()]
    [(3, 3, ['float16'])]
    >>> store.verify().ok
    True
    """

    def __init__(self, root: str | os.PathLike, *, dtype: str | None = None,
                 shard_rows: int = 1024, flush_seconds: float = 10.0,
                 create: bool = True) -> None:
        self.root = Path(root)
        if dtype is not None and dtype not in DTYPES:
            raise ValueError(f"dtype={dtype!r} is not one of {DTYPES}")
        if not isinstance(shard_rows, int | np.integer) or shard_rows < 1:
            raise ValueError(f"shard_rows must be a positive int, got {shard_rows!r}")
        if not flush_seconds > 0:
            raise ValueError(f"flush_seconds must be positive, got {flush_seconds!r}")
        self.shard_rows = int(shard_rows)
        self.flush_seconds = float(flush_seconds)
        meta_path = self.root / STORE_META
        if self.root.exists() and not self.root.is_dir():
            raise StoreError(f"store={str(self.root)!r} is a file; pass a directory")
        try:
            meta = json.loads(meta_path.read_bytes())
        except FileNotFoundError:
            meta = None
        except ValueError as exc:
            raise StoreError(f"{meta_path} is damaged ({exc}); it should hold the store's "
                             "format and dtype") from None
        if meta is None:
            if not create:
                raise FileNotFoundError(f"{self.root} is not a feature store (no {STORE_META})")
            self._create(dtype or "float32")
            meta = json.loads(meta_path.read_bytes())  # another process may have won the race
        if meta.get("format") != STORE_FORMAT:
            raise StoreError(f"{meta_path} is not a featclf store file")
        if int(meta.get("version", 0)) > STORE_VERSION:
            raise StoreError(f"{self.root} was written by a newer featclf (store version "
                             f"{meta['version']}); upgrade featclf to read it")
        stored = meta.get("dtype", "float32")
        if dtype is not None and dtype != stored:
            raise StoreError(f"{self.root} stores {stored} vectors, but dtype={dtype!r} was "
                             f"asked for; pass dtype={stored!r} (or None) or use another "
                             "directory")
        self.dtype = stored

    def _create(self, dtype: str) -> None:
        # (__init__ refused a root that is not a directory.) A store another process is
        # creating right now holds only its temporary file.
        if self.root.exists() and any(p.name not in _STORE_ENTRIES
                                      and not p.name.startswith(".tmp-")
                                      for p in self.root.iterdir()):
            raise StoreError(f"store={str(self.root)!r} is a non-empty directory that is not "
                             "a feature store; pass a new or empty directory")
        self.root.mkdir(parents=True, exist_ok=True)
        meta = {"format": STORE_FORMAT, "version": STORE_VERSION, "dtype": dtype}
        # Two processes creating the same store write the same bytes: the rename is harmless.
        _atomic_write(self.root / STORE_META, [json.dumps(meta, indent=1).encode()],
                      _new_writer_id())
        _fsync_dir(self.root)

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.root)!r}, dtype={self.dtype!r})"

    def __getstate__(self) -> dict:  # pickles (clone, joblib, Ray) carry settings, not caches
        return {"root": self.root, "dtype": self.dtype, "shard_rows": self.shard_rows,
                "flush_seconds": self.flush_seconds}

    # -- keys and namespaces ------------------------------------------------------------------

    @staticmethod
    def config_key(config: dict | str) -> str:
        """The namespace key of a configuration: :func:`digest_json` of it (a key passes).

        Examples
        --------
        >>> FeatureStore.config_key({"layer": "c5", "model": "x"}) == \\
        ...     FeatureStore.config_key({"model": "x", "layer": "c5"})
        True
        """
        if isinstance(config, str):
            return config
        if not isinstance(config, dict):
            raise ValueError(f"config must be a dict of settings, got {type(config).__name__}")
        return digest_json(config)

    def _namespace(self, config: dict | str, *, create: bool = False) -> Path:
        key = self.config_key(config)
        directory = self.root / "configs" / key
        if create and not (directory / "config.json").exists():
            if isinstance(config, str):
                raise ValueError(f"config {config!r} does not exist in {self.root}; pass the "
                                 "configuration dict to create it")
            directory.mkdir(parents=True, exist_ok=True)
            text = json.dumps(config, sort_keys=True, indent=1, default=str).encode()
            _atomic_write(directory / "config.json", [text], _new_writer_id())
            _fsync_dir(directory)
        return directory

    def configs(self) -> list[str]:
        """Keys of the configurations in the store, sorted.

        Examples
        --------
        >>> import tempfile
        >>> FeatureStore(tempfile.mkdtemp()).configs()
        []
        """
        try:
            return sorted(e.name for e in os.scandir(self.root / "configs")
                          if e.is_dir() and not e.name.startswith("."))
        except FileNotFoundError:
            return []

    def resolve_config(self, prefix: str) -> str:
        """The full key of a configuration from a unique prefix of it (as git does)."""
        matches = [k for k in self.configs() if k.startswith(prefix)]
        if len(matches) != 1:
            found = "no configuration" if not matches else f"{len(matches)} configurations"
            raise ValueError(f"{found} in {self.root} start with {prefix!r}; `featclf store info "
                             f"{self.root}` lists them")
        return matches[0]

    def config(self, key: str) -> dict | None:
        """The configuration dict saved for ``key`` (None when its config.json is missing)."""
        try:
            return json.loads((self.root / "configs" / key / "config.json").read_bytes())
        except (FileNotFoundError, ValueError):
            return None

    def _index(self, config: dict | str) -> _ConfigIndex:
        key = self.config_key(config)
        directory = os.path.join(os.path.abspath(self.root), "configs", key)
        with _INDEXES_LOCK:
            index = _INDEXES.get(directory)
            if index is None:
                index = _INDEXES[directory] = _ConfigIndex(Path(directory))
                while len(_INDEXES) > _MAX_CACHED_INDEXES:
                    _INDEXES.popitem(last=False)
            _INDEXES.move_to_end(directory)
        with index.lock:
            index.refresh()
        return index

    # -- reading ------------------------------------------------------------------------------

    def get(self, config: dict | str, digests: Sequence[str | None]) -> tuple[np.ndarray,
                                                                             np.ndarray]:
        """Look up vectors by sample digest.

        Parameters
        ----------
        config : dict or str
            The configuration (or its key).
        digests : sequence of str or None
            Sample digests; None is never found.

        Returns
        -------
        found : numpy.ndarray of bool
            ``(len(digests),)``: which digests have a vector.
        vectors : numpy.ndarray
            ``(found.sum(), dim)`` float32, in the order of the found digests.

        Warns
        -----
        UserWarning
            A damaged shard was skipped; its vectors count as missing.
        """
        index = self._index(config)
        while True:
            with index.lock:  # the index is shared by the threads of this process
                rows = index.find(digests)
                found = rows >= 0
                rows = rows[found]
                out = np.empty((len(rows), index.dim or 0), dtype=np.float32)
                tasks = self._plan(index, rows)
            try:
                self._read(index.directory, tasks, out)
            except _DamagedShard as exc:
                stem, reason = exc.args
                with index.lock:
                    if not (index.directory / f"{stem}.json").exists():
                        index.refresh()  # a concurrent prune rewrote or removed it: look again
                        continue
                    index.mark_damaged(stem, reason)
                warnings.warn(f"feature store {self.root}: shard {stem} is damaged ({reason}); "
                              "its vectors are treated as missing and will be recomputed. Run "
                              "`featclf store verify` and `featclf store prune`.", stacklevel=2)
                continue
            return found, out

    @staticmethod
    def _plan(index: _ConfigIndex, rows: np.ndarray) -> list[tuple]:
        """What to read to fill ``out[i]`` with global row ``rows[i]``: one task per shard."""
        tasks = []
        if len(rows) == 0:
            return tasks
        if len(rows) < 2 or bool((rows[1:] > rows[:-1]).all()):
            # Ascending rows (the usual case: inputs in the order they were stored): each
            # shard's rows are one run of ``out``, found by a search per shard.
            starts = np.asarray(index.starts, dtype=np.int64)
            cuts = np.searchsorted(rows, np.append(starts, index.total))
            for position, shard in enumerate(index.shards):
                lo, hi = int(cuts[position]), int(cuts[position + 1])
                if hi > lo:
                    tasks.append((shard, rows[lo:hi] - starts[position], slice(lo, hi),
                                  hi - lo == shard.rows))
        else:
            shard_of = index.shard_of(rows)
            order = np.argsort(shard_of, kind="stable")
            bounds = np.flatnonzero(np.diff(shard_of[order])) + 1
            for group in np.split(order, bounds):
                position = int(shard_of[group[0]])
                shard = index.shards[position]
                contiguous = group[-1] - group[0] == len(group) - 1  # out slots in one run
                slots = slice(int(group[0]), int(group[-1]) + 1) if contiguous else group
                local = rows[group] - index.starts[position]
                whole = contiguous and len(group) == shard.rows and \
                    bool((local == np.arange(shard.rows)).all())
                tasks.append((shard, local, slots, whole))
        return tasks

    @staticmethod
    def _read(directory: Path, tasks: list[tuple], out: np.ndarray) -> None:
        """Run the tasks of :meth:`_plan`: shards are immutable, so no lock is needed."""

        def read(task: tuple[_Shard, np.ndarray, slice | np.ndarray, bool]) -> None:
            shard, shard_rows, slots, whole = task
            try:
                _read_shard_rows(directory / f"{shard.name}.npy", shard, shard_rows, out,
                                 slots, whole)
            except _DamagedShard as exc:
                raise _DamagedShard(shard.name, str(exc)) from None

        workers = min(len(tasks), _READ_THREADS)
        if workers > 1 and out.nbytes >= _PARALLEL_READ_BYTES:
            # File reads and xxh3 release the GIL: shards are read and checked side by side,
            # each into its own rows of ``out``.
            with ThreadPoolExecutor(workers) as pool:
                list(pool.map(read, tasks))
        else:
            for task in tasks:
                read(task)

    def entries(self, config: dict | str) -> tuple[list[str], list, list, np.ndarray]:
        """Every vector of a configuration with its digest and last known path and label.

        Returns
        -------
        digests : list of str
        paths : list of str or None
        labels : list
        vectors : numpy.ndarray
            ``(n, dim)`` float32, one row per distinct digest.
        """
        index = self._index(config)
        with index.lock:
            stored = index.distinct()
        digests = list(stored)
        found, vectors = self.get(config, digests)
        # Vectors only in a damaged shard (found by get()) are left out.
        digests = [d for d, ok in zip(digests, found) if ok]
        newer = self._samples()
        paths, labels = [], []
        for d in digests:
            shard, r = stored[d]
            path = shard.paths[r] if shard.paths else None
            label = shard.labels[r] if shard.labels else None
            if d in newer:
                new_path, new_label = newer[d]
                path = new_path if new_path is not None else path
                label = new_label if new_label is not None else label
            paths.append(path)
            labels.append(label)
        return digests, paths, labels, vectors

    # -- sample paths and labels --------------------------------------------------------------

    def record_samples(self, digests: Sequence[str | None], paths: Sequence[str | None], *,
                       labels: Sequence | None = None) -> None:
        """Record where samples are now (and their labels), for ``export``; vectors are untouched.

        Parameters
        ----------
        digests : sequence of str or None
            Sample digests (None entries are skipped).
        paths : sequence of str or None
            Their current paths.
        labels : sequence, optional
            Their labels.
        """
        rows = [(d, None if p is None else os.fspath(p),
                 None if labels is None else _as_label(labels[i]))
                for i, (d, p) in enumerate(zip(digests, paths)) if d is not None]
        if not rows:
            return
        directory = self.root / "samples"
        directory.mkdir(exist_ok=True)
        writer = _new_writer_id()
        data = {"digests": [r[0] for r in rows], "paths": [r[1] for r in rows],
                "labels": None if labels is None else [r[2] for r in rows]}
        _atomic_write(directory / f"{time.time_ns():020d}-{writer}.json", [_json_bytes(data)],
                      writer)

    def _samples(self) -> dict[str, tuple[str | None, Any]]:
        newer: dict[str, tuple[str | None, Any]] = {}
        directory = self.root / "samples"
        if not directory.is_dir():
            return newer
        for name in sorted(n for n in os.listdir(directory) if n.endswith(".json")
                           and not n.startswith(".")):
            try:
                data = json.loads((directory / name).read_bytes())
            except (FileNotFoundError, ValueError):
                continue
            labels = data.get("labels") or [None] * len(data["digests"])
            for d, p, lab in zip(data["digests"], data["paths"], labels):
                old = newer.get(d, (None, None))
                newer[d] = (p if p is not None else old[0], lab if lab is not None else old[1])
        return newer

    # -- writing ------------------------------------------------------------------------------

    def writer(self, config: dict) -> ShardWriter:
        """A :class:`ShardWriter` adding vectors of ``config``; use it as a context manager."""
        return ShardWriter(self, config)

    def put(self, config: dict, digests: Sequence[str], vectors: np.ndarray, *,
            paths: Sequence[str | None] | None = None, labels: Sequence | None = None) -> None:
        """Write vectors now (shards of at most ``shard_rows`` rows).

        Parameters
        ----------
        config : dict
            The configuration the vectors were computed with.
        digests : sequence of str
            Their sample digests.
        vectors : numpy.ndarray
            ``(len(digests), dim)``.
        paths, labels : sequence, optional
            Kept for ``export``.
        """
        with self.writer(config) as w:
            w.add(digests, vectors, paths=paths, labels=labels)

    # -- maintenance --------------------------------------------------------------------------

    def _shard_files(self, key: str) -> tuple[list[str], list[str], list[str]]:
        """(index files, .npy files, temporary files) of a namespace."""
        directory = self.root / "configs" / key
        indexes, arrays, temps = [], [], []
        for name in sorted(os.listdir(directory)):
            if name.startswith(".tmp-"):
                temps.append(name)
            elif _SHARD_INDEX.match(name):
                indexes.append(name)
            elif name.startswith("shard-") and name.endswith(".npy"):
                arrays.append(name)
        return indexes, arrays, temps

    def info(self) -> list[ConfigInfo]:
        """One :class:`ConfigInfo` per configuration (reads every index, no vectors)."""
        out = []
        for key in self.configs():
            index = _ConfigIndex(self.root / "configs" / key)
            index.refresh()
            directory = self.root / "configs" / key
            size = sum(e.stat().st_size for e in os.scandir(directory) if e.is_file())
            rows = sum(s.rows for s in index.shards)
            distinct = len(index.distinct())
            out.append(ConfigInfo(key, self.config(key), distinct, rows - distinct,
                                  len(index.shards), index.dim,
                                  sorted({s.dtype for s in index.shards}), size))
        return out

    def disk_bytes(self) -> int:
        """Bytes the store's files take (everything under its directory)."""
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())

    def verify(self, *, progress: bool = False) -> VerifyReport:
        """Check every shard: index readable, file present, size, header and xxh3 checksum.

        Parameters
        ----------
        progress : bool, default=False
            Show a progress bar over the bytes checked.

        Returns
        -------
        VerifyReport
            ``problems`` names each damaged shard (path relative to the store) and why.
        """
        report = VerifyReport()
        jobs = []
        for key in self.configs():
            directory = self.root / "configs" / key
            index = _ConfigIndex(directory)
            index.refresh()
            for name, reason in index.unreadable.items():
                report.problems.append((f"configs/{key}/{name}", reason))
            dims = {s.dim for s in index.shards}
            if len(dims) > 1:
                report.problems.append((f"configs/{key}", f"shards of different dims {dims}"))
            jobs.extend((directory, key, s) for s in index.shards)
        bar = progress_bar(enabled=progress, total=sum(s.nbytes for _, _, s in jobs), unit="B",
                           unit_scale=True, desc="verify")
        for directory, key, shard in jobs:
            problem = _check_shard(directory / f"{shard.name}.npy", shard)
            report.shards += 1
            report.bytes += shard.nbytes
            if problem:
                report.problems.append((f"configs/{key}/{shard.name}.npy", problem))
            else:
                report.vectors += shard.rows
            bar.update(shard.nbytes)
        bar.close()
        return report

    def prune(self, *, configs: Sequence[str] = (), compact: bool = False,
              stale_seconds: float = 3600.0, lock_timeout: float = 600.0) -> PruneReport:
        """Remove temporary files, orphans, damaged shards, duplicate vectors and namespaces.

        Damaged shards (see :meth:`verify`) are removed: the next extraction recomputes their
        vectors. A shard holding duplicates is rewritten without them; the new shard is in
        place before the old one goes, so concurrent readers keep working.

        Parameters
        ----------
        configs : sequence of str, default=()
            Configuration keys (or unique prefixes) whose namespaces are removed entirely.
        compact : bool, default=False
            Also merge shards of fewer than ``shard_rows / 2`` rows into shards of
            ``shard_rows`` rows (fewer files make opening a configuration faster).
        stale_seconds : float, default=3600
            Temporary and orphan files of a writer on another host (whose liveness cannot be
            checked) are removed once this old; those of dead writers on this host at once.
        lock_timeout : float, default=600
            Seconds to wait for another prune of the same store to finish.

        Returns
        -------
        PruneReport
        """
        from filelock import FileLock

        report = PruneReport()
        with FileLock(str(self.root / ".prune.lock"), timeout=lock_timeout):
            for prefix in configs:
                key = self.resolve_config(prefix)
                doomed = self.root / "configs" / key
                # Rename first so readers see the namespace vanish at once, then delete.
                trash = self.root / "configs" / f".tmp-{_new_writer_id()}-deleted-{key}"
                report.bytes_freed += _tree_bytes(doomed)
                os.replace(doomed, trash)
                shutil.rmtree(trash, ignore_errors=True)
                report.configs.append(key)
            self._prune_stale(self.root, report, stale_seconds)
            self._prune_stale(self.root / "configs", report, stale_seconds)
            for key in self.configs():
                self._prune_namespace(key, report, stale_seconds, compact)
            self._compact_samples()
            _forget_indexes(self.root)
        return report

    def _prune_stale(self, directory: Path, report: PruneReport, stale_seconds: float) -> None:
        if not directory.is_dir():
            return
        now = time.time()
        for entry in os.scandir(directory):
            if not entry.name.startswith(".tmp-"):
                continue
            if _writer_is_dead(entry.name) or now - entry.stat().st_mtime > stale_seconds:
                report.bytes_freed += _tree_bytes(Path(entry.path))
                if entry.is_dir():
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(entry.path)
                report.temp_files.append(os.path.relpath(entry.path, self.root))

    def _prune_namespace(self, key: str, report: PruneReport, stale_seconds: float,
                         compact: bool) -> None:
        directory = self.root / "configs" / key
        rel = f"configs/{key}"
        self._prune_stale(directory, report, stale_seconds)
        indexes, arrays, _ = self._shard_files(key)
        indexed = {name[:-5] for name in indexes}
        now = time.time()
        for name in arrays:  # a shard whose writer died before writing its index
            path = directory / name
            if name[:-4] not in indexed and (_writer_is_dead(name) or
                                             now - path.stat().st_mtime > stale_seconds):
                report.bytes_freed += path.stat().st_size
                path.unlink()
                report.orphans.append(f"{rel}/{name}")
        index = _ConfigIndex(directory)
        index.refresh()
        for name, reason in index.unreadable.items():
            report.bytes_freed += (directory / name).stat().st_size
            (directory / name).unlink()
            report.damaged.append(f"{rel}/{name} ({reason})")
        good: list[_Shard] = []
        for shard in index.shards:
            problem = _check_shard(directory / f"{shard.name}.npy", shard)
            if problem:
                report.bytes_freed += _remove_shard(directory, shard.name)
                report.damaged.append(f"{rel}/{shard.name}.npy ({problem})")
            else:
                good.append(shard)
        kept: dict[str, tuple[Any, Any]] = {}  # digest -> (path, label) of the copy kept
        rescued: dict[str, tuple[Any, Any]] = {}  # what only a dropped copy knew
        merger = _ShardMerger(directory, self.shard_rows, report)
        for shard in good:
            keep = []
            for r, d in enumerate(shard.digests):
                path = shard.paths[r] if shard.paths else None
                label = shard.labels[r] if shard.labels else None
                if d not in kept:
                    kept[d] = (path, label)
                    keep.append(r)
                elif (kept[d][0] is None and path is not None) or \
                        (kept[d][1] is None and label is not None):
                    rescued[d] = (path, label)
            small = compact and len(keep) < self.shard_rows // 2
            if len(keep) == shard.rows and not small:
                continue
            report.duplicates += shard.rows - len(keep)
            report.merged += int(small)
            merger.add(shard, keep)
        merger.finish()
        if rescued:  # a dropped copy had a path or label the kept one lacks: keep it for export
            self.record_samples(list(rescued), [v[0] for v in rescued.values()],
                                labels=[v[1] for v in rescued.values()])

    def _compact_samples(self) -> None:
        directory = self.root / "samples"
        if not directory.is_dir():
            return
        names = sorted(n for n in os.listdir(directory) if n.endswith(".json")
                       and not n.startswith("."))
        if len(names) < 2:
            return
        merged = self._samples()
        writer = _new_writer_id()
        data = {"digests": list(merged), "paths": [v[0] for v in merged.values()],
                "labels": [v[1] for v in merged.values()]}
        # Same time stamp as the newest file read, so files written meanwhile still win.
        newest = names[-1].split("-", 1)[0]
        _atomic_write(directory / f"{newest}-{writer}.json", [_json_bytes(data)], writer)
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                (directory / name).unlink()

    # -- export -------------------------------------------------------------------------------

    def export(self, path: str | os.PathLike, *, config: str | dict | None = None) -> Path:
        """Write one configuration's vectors with digests, paths and labels to Parquet or NPZ.

        Parameters
        ----------
        path : str or path-like
            Output file; ``.parquet`` or ``.npz`` picks the format.
        config : str or dict, optional
            The configuration (a key, a key prefix or the dict); optional when the store has
            exactly one.

        Returns
        -------
        pathlib.Path
            The file written.

        Examples
        --------
        >>> import tempfile
        >>> d = tempfile.mkdtemp()
        >>> store = FeatureStore(d + "/s")
        >>> store.put({"m": 1}, ["a", "b"], np.ones((2, 4)), paths=["x/1.png", "x/2.png"],
        ...           labels=[3, 5])
        >>> with np.load(store.export(d + "/out.npz")) as npz:
        ...     npz["vectors"].shape, npz["paths"].tolist(), npz["labels"].tolist()
        ((2, 4), ['x/1.png', 'x/2.png'], [3, 5])
        """
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in (".parquet", ".npz"):
            raise ValueError(f"export path {str(path)!r} must end in .parquet or .npz")
        if config is None:
            keys = self.configs()
            if len(keys) != 1:
                raise ValueError(f"{self.root} holds {len(keys)} configurations; pass config= "
                                 "(a key or prefix from `featclf store info`)")
            key = keys[0]
        elif isinstance(config, dict):
            key = self.config_key(config)
        else:
            key = self.resolve_config(config)
        digests, paths, labels, vectors = self.entries(key)
        config_json = json.dumps(self.config(key), sort_keys=True, default=str)
        path.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npz":
            buf = io.BytesIO()
            np.savez(buf, digests=np.asarray(digests, dtype=str),
                     paths=np.asarray([p or "" for p in paths], dtype=str),
                     labels=_labels_array(labels), vectors=vectors,
                     config=np.asarray(config_json), config_key=np.asarray(key))
            _atomic_write(path, [buf.getbuffer()], _new_writer_id())
            return path
        import pyarrow as pa
        import pyarrow.parquet as pq

        dim = vectors.shape[1] if vectors.ndim == 2 else 0
        flat = pa.array(vectors.reshape(-1), type=pa.float32())
        table = pa.table({
            "digest": pa.array(digests, type=pa.string()),
            "path": pa.array(paths, type=pa.string()),
            "label": pa.array([None if lab is None else str(lab) for lab in labels]
                              if not _all_int(labels) else labels),
            "vector": pa.FixedSizeListArray.from_arrays(flat, dim),
        })
        table = table.replace_schema_metadata({"featclf_config": config_json,
                                               "featclf_config_key": key})
        tmp = path.with_name(f".tmp-{_new_writer_id()}-{path.name}")
        try:
            pq.write_table(table, tmp)
            os.replace(tmp, path)
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()
        return path


class _ShardMerger:
    """Rewrites chosen rows of old shards as new shards of ``shard_rows`` rows (for prune).

    An old shard is removed only once every row kept from it is in a new shard on disk, so a
    crash or a concurrent reader never finds a vector missing (at worst, twice).
    """

    def __init__(self, directory: Path, shard_rows: int, report: PruneReport) -> None:
        self.directory, self.shard_rows, self.report = directory, shard_rows, report
        self.writer_id, self.seq = _new_writer_id(), 0
        self.digests: list[str] = []
        self.vectors: list[np.ndarray] = []
        self.paths: list[str | None] = []
        self.labels: list[Any] = []
        self.has_labels = False
        self.sources: list[tuple[_Shard, int]] = []  # (old shard, buffered rows up to its last)

    def add(self, shard: _Shard, keep: list[int]) -> None:
        """Take rows ``keep`` of ``shard``; write whole new shards when there are enough."""
        if keep:
            data = np.load(self.directory / f"{shard.name}.npy", mmap_mode="r")
            self.vectors.append(np.asarray(data[keep]))
            self.digests.extend(shard.digests[r] for r in keep)
            self.paths.extend(shard.paths[r] if shard.paths else None for r in keep)
            self.labels.extend(shard.labels[r] if shard.labels else None for r in keep)
            self.has_labels |= bool(shard.labels)
        self.sources.append((shard, len(self.digests)))
        self._write(final=False)

    def finish(self) -> None:
        """Write what is left, and remove the old shards."""
        self._write(final=True)
        _fsync_dir(self.directory)

    def _write(self, *, final: bool) -> None:
        n = len(self.digests)
        end = n if final else n - n % self.shard_rows
        if end == 0 and not (final and self.sources):
            return
        vectors = np.concatenate(self.vectors) if self.vectors else None
        for start in range(0, end, self.shard_rows):
            stop = min(start + self.shard_rows, end)
            stem = f"shard-{self.writer_id}-{self.seq:06d}"
            self.seq += 1
            _write_shard(self.directory, stem, self.digests[start:stop],
                         np.ascontiguousarray(vectors[start:stop]), self.paths[start:stop],
                         self.labels[start:stop] if self.has_labels else None, self.writer_id)
            self.report.rewritten.append(f"configs/{self.directory.name}/{stem}.npy")
        # Old shards whose kept rows are all written go now (index first), the rest wait; the
        # new names are made durable first, so a power loss cannot keep a removal but lose them.
        done = [shard for shard, last in self.sources if last <= end]
        if done and end:
            _fsync_dir(self.directory)
        for shard in done:
            self.report.bytes_freed += _remove_shard(self.directory, shard.name)
        self.sources = [(shard, last - end) for shard, last in self.sources if last > end]
        self.digests, self.paths, self.labels = (self.digests[end:], self.paths[end:],
                                                 self.labels[end:])
        self.vectors = [vectors[end:]] if vectors is not None and end < n else []


def _forget_indexes(root: Path) -> None:
    """Drop this process's cached indexes of a store (after prune rewrote it)."""
    prefix = os.path.join(os.path.abspath(root), "configs", "")
    with _INDEXES_LOCK:  # other threads may be adding indexes meanwhile
        for directory in [d for d in _INDEXES if d.startswith(prefix)]:
            del _INDEXES[directory]


def _all_int(values: list) -> bool:
    return bool(values) and all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def _labels_array(labels: list) -> np.ndarray:
    if _all_int(labels):
        return np.asarray(labels, dtype=np.int64)
    return np.asarray(["" if lab is None else str(lab) for lab in labels], dtype=str)


def _tree_bytes(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _remove_shard(directory: Path, stem: str) -> int:
    """Remove a shard, index first (so it turns invisible before its vectors vanish)."""
    freed = 0
    for suffix in (".json", ".npy"):
        path = directory / f"{stem}{suffix}"
        with contextlib.suppress(FileNotFoundError):
            freed += path.stat().st_size
            path.unlink()
    return freed


def _check_shard(path: Path, shard: _Shard) -> str | None:
    """Why a shard is damaged (missing, size, header, checksum), or None when it is sound."""
    expected = _expected_header(shard.rows, shard.dim, shard.dtype)
    try:
        with open(path, "rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size != shard.nbytes:
                return f"{size} bytes, its index says {shard.nbytes}"
            header = fh.read(len(expected))
            h = xxhash.xxh3_128(header)
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    except FileNotFoundError:
        return "file missing"
    if h.hexdigest() != shard.checksum:
        return "checksum mismatch (the file's bytes changed after it was written)"
    if header != expected:
        return "its .npy header does not match its index"
    return None


# --------------------------------------------------------------------------------------------
# cached extraction


@dataclass
class CachedExtraction:
    """The result of :func:`extract_cached`.

    Attributes
    ----------
    features : numpy.ndarray
        ``(n_ok, d)`` float32: one row per input that has a vector.
    indices : numpy.ndarray
        Positions in the source of the rows of ``features``, ascending.
    errors : list of InputError
        Inputs that could not be read (``on_error="skip"``).
    n_computed : int
        Vectors computed by the network in this call.
    n_reused : int
        Vectors read from the store.
    digests : list of str or None
        The sample digest of every input (None for unreadable files).
    """

    features: np.ndarray
    indices: np.ndarray
    errors: list[InputError]
    n_computed: int
    n_reused: int
    digests: list[str | None] = field(default_factory=list)


ComputeFn = Callable[[ImageSource], Iterator[tuple[np.ndarray, np.ndarray, list[InputError]]]]


def extract_cached(store: FeatureStore, source: ImageSource, *, config: dict,
                   compute: ComputeFn, on_error: str = "raise", progress: bool = False,
                   labels: Sequence | None = None) -> CachedExtraction:
    """Vectors for every input: read from ``store`` when present, computed (and stored) if not.

    ``compute`` is called only on the inputs the store lacks (``source.subset(missing)``), and
    not at all when every vector is stored, so a fully cached call never loads the network.
    Computed vectors are written as they stream in, so a killed call keeps what it finished.

    Parameters
    ----------
    store : FeatureStore
        The cache.
    source : ImageSource
        The inputs.
    config : dict
        JSON-able description of everything that decides the vectors (model fingerprint,
        layer, pooling, preprocessing, precision, format version).
    compute : callable
        ``compute(subsource)`` yields ``(indices, vectors, errors)`` per batch; ``indices`` and
        the errors' ``index`` are positions in ``subsource``.
    on_error : {"raise", "skip"}, default="raise"
        With ``"raise"``, an input that ``compute`` reports as unreadable raises ``ValueError``
        (the vectors already written stay in the store).
    progress : bool, default=False
        Show a tqdm bar (images/s, ETA) over the inputs.
    labels : sequence, optional
        One label per input, kept in the store for ``export``.

    Returns
    -------
    CachedExtraction

    Examples
    --------
    >>> import tempfile
    >>> from featclf.data.inputs import as_image_source
    >>> store = FeatureStore(tempfile.mkdtemp())
    >>> source = as_image_source(np.arange(4 * 9, dtype=np.uint8).reshape(4, 3, 3))
    >>> def compute(sub):  # the mean pixel, standing in for a network
    ...     for batch in sub.iter_batches(batch_size=2, preprocess=None):
    ...         yield batch.indices, batch.images.float().mean((1, 2, 3))[:, None].numpy(), []
    >>> first = extract_cached(store, source, config={"m": "mean"}, compute=compute)
    >>> again = extract_cached(store, source, config={"m": "mean"}, compute=compute)
    >>> (first.n_computed, first.n_reused), (again.n_computed, again.n_reused)
    ((4, 0), (0, 4))
    >>> again.features.ravel().tolist()
    [4.0, 13.0, 22.0, 31.0]
    """
    check_on_error(on_error)
    n = len(source)
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries for {n} inputs")
    digests = source.digests()
    found, stored = store.get(config, digests)
    n_reused = int(found.sum())
    if n_reused and source.kind == "files":
        _record_moves(store, config, source, digests, found, labels)
    missing = np.flatnonzero(~found)
    bar = progress_bar(enabled=progress, total=n, initial=n_reused, unit="img", desc="extract",
                       smoothing=0.1)
    parts_idx: list[np.ndarray] = []
    parts_vec: list[np.ndarray] = []
    errors: list[InputError] = []
    try:
        if len(missing):
            sub = source.subset(missing)
            with store.writer(config) as writer:
                for rel, vectors, batch_errors in compute(sub):
                    rel = np.asarray(rel, dtype=np.int64)
                    absolute = missing[rel]
                    vectors = np.asarray(vectors, dtype=np.float32)
                    errors.extend(dataclasses.replace(e, index=int(missing[e.index]))
                                  for e in batch_errors)
                    if batch_errors and on_error == "raise":
                        first = errors[-len(batch_errors)]
                        raise ValueError(f"cannot read input {first.source!r}: {first.reason} "
                                         "(pass on_error='skip' to skip unreadable inputs)")
                    if len(absolute):
                        writer.add([digests[i] for i in absolute], vectors,
                                   paths=[source.describe(i) for i in absolute]
                                   if source.kind == "files" else None,
                                   labels=None if labels is None else
                                   [labels[i] for i in absolute])
                        parts_idx.append(absolute)
                        parts_vec.append(vectors)
                    bar.update(len(rel) + len(batch_errors))
    finally:
        bar.close()
    n_computed = int(sum(len(p) for p in parts_idx))
    indices = np.concatenate([np.flatnonzero(found), *parts_idx]).astype(np.int64)
    dims = {v.shape[1] for v in parts_vec} | ({stored.shape[1]} if n_reused else set())
    if len(dims) > 1:
        raise StoreError(f"the store {store.root} holds {stored.shape[1]}-dim vectors for this "
                         f"configuration but the network computed {sorted(dims)}; the "
                         "configuration does not capture everything that decides the vectors")
    dim = dims.pop() if dims else 0
    errors.sort(key=lambda e: e.index)
    if not parts_vec:  # all from the store, already in input order: no copy
        return CachedExtraction(stored.reshape(-1, dim), indices, errors, 0, n_reused, digests)
    indices.sort()
    features = np.empty((len(indices), dim), dtype=np.float32)
    features[np.searchsorted(indices, np.flatnonzero(found))] = stored.reshape(-1, dim)
    for idx, vectors in zip(parts_idx, parts_vec):
        features[np.searchsorted(indices, idx)] = vectors
    return CachedExtraction(features, indices, errors, n_computed, n_reused, digests)


def _record_moves(store: FeatureStore, config: dict, source: ImageSource,
                  digests: list[str | None], found: np.ndarray, labels: Sequence | None) -> None:
    """Record new paths (or labels) of reused file inputs, so ``export`` shows where they are."""
    index = store._index(config)
    moved = []
    reused = np.flatnonzero(found)
    with index.lock:
        rows = index.find([digests[i] for i in reused])
        reused, rows = reused[rows >= 0].tolist(), rows[rows >= 0]  # (a prune may run meanwhile)
        located = index.locate(rows)
    for i, (shard, r) in zip(reused, located):
        path = source.describe(i)
        old_path = shard.paths[r] if shard.paths else None
        new_label = labels is not None and _as_label(labels[i]) != (
            shard.labels[r] if shard.labels else None)
        if path != old_path or new_label:
            moved.append(i)
    if moved:
        store.record_samples([digests[i] for i in moved], [source.describe(i) for i in moved],
                             labels=None if labels is None else [labels[i] for i in moved])


def write_error_manifest(path: str | os.PathLike, errors: Sequence[InputError]) -> Path:
    """Write unreadable inputs as a CSV of ``path,reason`` (atomically).

    Examples
    --------
    >>> import tempfile
    >>> p = write_error_manifest(tempfile.mkdtemp() + "/errors.csv",
    ...                          [InputError(3, "a/b.png", "truncated")])
    >>> p.read_text().splitlines()
    ['path,reason', 'a/b.png,truncated']
    """
    path = Path(path)
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["path", "reason"])
    for e in errors:
        out.writerow([e.source, e.reason])
    path.parent.mkdir(parents=True, exist_ok=True)
    _atomic_write(path, [buf.getvalue().encode()], _new_writer_id())
    return path
