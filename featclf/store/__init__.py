"""FeatureStore: a content-addressed, crash-safe on-disk cache of feature vectors.

A store is one directory. It holds vectors keyed by everything that decides them, so that a
second run over the same samples reads them back instead of running the network, and a killed
run resumes where it stopped. The store knows configurations, digests, vectors and sample
metadata (paths, labels) only: it never sees an image or a network, and imports neither torch
nor :mod:`featclf.data`. The extraction loop that fills it is
:func:`featclf.extract.cached.cached_features`.

Layout
------
::

    STORE/
      featclf-store.json              format, version and the store's dtype (float32 | float16)
      configs/<config key>/           one namespace per extraction configuration
        config.json                   the configuration the key hashes (readable, for `info`)
        about.json                    optional: facts in words that are not part of the key
                                      (model name, weights, layer), for `info` and reports
        shard-<writer>-<seq>.npy      vectors, (rows, dim), the store's dtype
        shard-<writer>-<seq>.json     the shard's index: sample digests, last known paths,
                                      labels, rows, dim, dtype, byte size and xxh3 checksum
        shard-<writer>-<seq>.keys     its key index: the same digests as fixed-width 128-bit
                                      keys, rows, dim, dtype, checksum, text hashes of the
                                      digests, paths, labels (a .npy; see featclf.store._keys)
        shards.keys                   optional: the key indexes of every shard the last prune
                                      (or a writer of 16+ shards) saw, in one file
      samples/<time>-<writer>.json    newer paths/labels of samples (a moved file, CLI labels)
      errors.csv                      unreadable images of the last `featclf extract` (CLI)

``<writer>`` is ``<host>-<pid>-<token>-<serial>`` (a 128-bit random token, and a serial number
within the process): every writer, in one process or many, writes files no other writer names.

Key
---
A vector's key is the pair (config key, sample digest). The config key is
:func:`~featclf.fingerprint.digest_json` of the extractor's configuration: model fingerprint
(architecture name + hash of every weight tensor), layer, pooling, preprocessing, precision and
format version. The sample digest is the caller's name for a sample's content; featclf's
extraction passes the content hash of the image file's bytes or of the array row
(``ImageSource.digests``). Changing any part of the configuration changes the namespace (a
miss); renaming or moving an image file keeps its digest (a hit).

Why per-shard JSON indexes and not SQLite
-----------------------------------------
Every shard carries its own small index, written once and never modified, so writers never
share a mutable file: no locks, no journal, nothing to corrupt, and it works the same on local
disks and network file systems (where SQLite's locking is unreliable). A reader lists the
namespace directory and reads the indexes it has not seen yet (incrementally, per config, only
when that config is asked for), so opening a store reads one small file. Reads use each
shard's binary key index, not its JSON (parsing JSON cost more than reading the vectors); a
key index is trusted only while its own checksum holds and the JSON index is as it was when
the key index was written, else the JSON index is read (``verify`` lists those shards and
``prune`` rewrites their key indexes, which is how stores written before key indexes are
upgraded; writers upgrade the shards their process read, too); it is opened by its head, its
keys read when a look-up needs them (a rerun does not). Lookups run in numpy
(128-bit keys, ``np.searchsorted`` after one sort; a query in stored order, as a rerun's is,
needs no sort), not in a Python dict of strings. Many small shards are merged by
``FeatureStore.prune(compact=True)``, which also removes duplicates.

Crash safety
------------
A shard is written to ``.tmp-<writer>-<serial>-<name>`` (created exclusively), fsynced and
given its name with a hard link, which never replaces a file (where links are unsupported: a
checked rename); then its index is written the same way. A name that is taken is never
reused: the writer takes its next sequence number, so no shard ever replaces another, and a
reader that knows a shard's index never finds other bytes under its name. A shard exists for
readers only once its index exists, so a killed process (``kill -9``) leaves at most a stray
temporary file or a ``.npy`` without an index, both invisible and removed by ``prune``; every
shard published before the kill is complete, because its bytes were written (and fsynced)
before its name. A killed job therefore loses at most the vectors buffered for the shard in
flight (a shard's rows, about 8 MiB, or ``flush_seconds`` of work). The directory itself is
fsynced when a writer closes, not after every shard (a directory fsync costs about as much as
writing a small shard), so a power loss may also forget the names of the last shards
written: even if it kept an index and lost its shard's name, the index names the shard's byte
size and checksum, and readers refuse a shard whose file is missing or of the wrong size or
checksum. Lost vectors are simply missing, and recomputed.

Concurrency
-----------
Writers never touch each other's files (names carry host, pid, a random token and a serial
number, and publication refuses to replace a file), and publishing a name is atomic, so any
number of writers, in threads or processes, can fill one store at once without locks. Two
writers racing on the same images may both store a vector: readers take one copy (identical
keys mean identical inputs), and ``prune`` removes the extra copy. ``prune`` holds a file lock
so that two prunes never run at once. It removes temporary and unindexed files of writers of
this host that are dead (a live writer's are never touched), and of writers on other hosts
once older than ``stale_seconds``; files that vanish while it looks (a writer renamed them) are
skipped. It writes a rewritten shard before removing the old one, and checks the checksum of
the very bytes it merges, so concurrent readers and writers keep working and a kill -9 at any
point leaves every vector readable (at worst twice, until the next prune).

A store that cannot be written (a read-only mount, a shared cache) serves every read; the
bookkeeping reads would write (new paths of moved files, ``about``) is skipped, with one
:class:`StoreNotWritableWarning` for the paths.

Integrity
---------
Each shard's xxh3-128 checksum is computed when it is written. :meth:`FeatureStore.verify`
checks every shard. Reads check every shard's size and header against its index. The writer
records the shard file's (inode, size, mtime_ns, ctime_ns) right after publishing the bytes it
hashed; a reader that finds the file with the same four values (no write since: any write
moves mtime and ctime, which no process can set back) does not hash it again, so a hit costs
what ``np.load`` costs. A shard found otherwise (a copied or restored store, a file written
to) is hashed on its first read in each process, and the result is remembered per (file,
inode, size, mtime, ctime), so a shard written to after that check is checked again. Bit rot
under an unchanged stat is what ``verify`` (which hashes every shard) is for. A damaged shard
is never returned: its vectors count as missing and are recomputed, with a warning.

Modules
-------
``_format`` (bytes on disk: atomic writes, shards, checksums), ``_keys`` and ``_nskeys`` (digest
keys, key indexes and ``shards.keys``), ``_index`` (a namespace's loaded indexes, lookups),
``_read`` (the hit path), ``_writer`` (:class:`ShardWriter`), ``maintenance`` (info, verify,
prune, compaction) and ``export`` (Parquet and NPZ).

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

import json
import os
from collections.abc import Mapping, Sequence
from numbers import Integral, Real
from pathlib import Path

import numpy as np

from featclf.fingerprint import digest_json
from featclf.store import _read, _samples
from featclf.store import export as _export
from featclf.store import maintenance as _maintenance
from featclf.store._format import (
    DTYPES,
    StoreError,
    StoreNotWritableWarning,
    atomic_write,
    fsync_dir,
    new_writer_id,
    open_store_meta,
    read_about,
    tree_bytes,
)
from featclf.store._index import ConfigIndex, open_index
from featclf.store._keys import digest_keys
from featclf.store._writer import ShardWriter
from featclf.store.maintenance import ConfigInfo, PruneReport, VerifyReport

__all__ = [
    "DTYPES",
    "ConfigInfo",
    "FeatureStore",
    "PruneReport",
    "ShardWriter",
    "StoreError",
    "StoreNotWritableWarning",
    "VerifyReport",
]


def _check_parameters(params: dict) -> None:
    """Check FeatureStore's parameters, with scikit-learn's wording for a bad one.

    featclf.params imports scikit-learn (seconds on a busy machine): it is imported only
    when the plain checks below find something they do not accept, so opening a store (and
    ``featclf store ...``) stays fast. The plain checks accept a subset of what the
    constraints accept; everything else goes to the constraints, which decide.
    """
    shard_rows, flush = params["shard_rows"], params["flush_seconds"]
    if (isinstance(params["root"], str | os.PathLike)
            and (params["dtype"] is None or params["dtype"] in DTYPES)
            and (shard_rows is None or type(shard_rows) is int and shard_rows >= 1)
            and type(flush) in (int, float) and flush > 0
            and type(params["create"]) is bool):
        return
    from featclf.params import Interval, StrOptions, check_params

    check_params({
        "root": [str, os.PathLike],
        "dtype": [StrOptions(set(DTYPES)), None],
        "shard_rows": [Interval(Integral, 1, None, closed="left"), None],
        "flush_seconds": [Interval(Real, 0, None, closed="neither")],
        "create": ["boolean"],
    }, params, "FeatureStore")


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
    shard_rows : int or None, default=None
        Rows per shard written, and the size ``prune(compact=True)`` merges small shards to.
        None: each writer sizes its shards to about 8 MiB (1024 to 16384 rows by the vectors'
        width: 16384 of 84 float32, 1024 of 2048), so that a read costs the bytes, not one
        file per thousand rows; compaction then merges to 1024 rows.
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
                 shard_rows: int | None = None, flush_seconds: float = 10.0,
                 create: bool = True) -> None:
        _check_parameters({"root": root, "dtype": dtype, "shard_rows": shard_rows,
                           "flush_seconds": flush_seconds, "create": create})
        self.root = Path(root)
        self._shard_rows = None if shard_rows is None else int(shard_rows)
        self.flush_seconds = float(flush_seconds)
        self.dtype = open_store_meta(self.root, dtype, create=create)

    def __repr__(self) -> str:
        return f"FeatureStore({str(self.root)!r}, dtype={self.dtype!r})"

    def __getstate__(self) -> dict:  # pickles (clone, joblib, Ray) carry settings, not caches
        return {"root": self.root, "dtype": self.dtype, "_shard_rows": self._shard_rows,
                "flush_seconds": self.flush_seconds}

    def __setstate__(self, state: dict) -> None:  # featclf <= 0.2 pickled "shard_rows"
        self.__dict__.update({"_shard_rows": state.get("shard_rows"), **state})
        self.__dict__.pop("shard_rows", None)

    @property
    def shard_rows(self) -> int:
        """Rows per shard of compaction (and of writers, when ``shard_rows`` was given)."""
        return self._shard_rows or 1024

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
            atomic_write(directory / "config.json", [text], new_writer_id())
            fsync_dir(directory)
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

    def annotate(self, config: dict | str, about: Mapping[str, str]) -> None:
        """Describe a configuration in words (model name, weights...), next to it on disk.

        What ``about`` says is not part of the configuration's key: changing it never changes
        where vectors are filed. Keys already described are replaced, others kept. The file
        is written atomically and only when it changes; a store that cannot be written
        (read-only) is left as it is, since the description is not needed to read vectors.

        Parameters
        ----------
        config : dict or str
            The configuration (a key only for a configuration the store already holds).
        about : mapping of str to str
            For example ``{"model": "resnet18", "weights": "random weights (seed 0)"}``.

        Examples
        --------
        >>> import tempfile
        >>> store = FeatureStore(tempfile.mkdtemp())
        >>> config = {"model": "m", "pooling": "avg"}
        >>> store.annotate(config, {"model": "resnet18", "weights": "random weights (seed 0)"})
        >>> store.annotate(config, {"layer": "penultimate"})
        >>> store.about(config)
        {'layer': 'penultimate', 'model': 'resnet18', 'weights': 'random weights (seed 0)'}
        >>> store.about({"model": "other"})
        {}
        """
        _samples.annotate(self, config, about)

    def about(self, config: dict | str) -> dict[str, str]:
        """What :meth:`annotate` recorded about a configuration (an empty dict when nothing)."""
        return read_about(self.root / "configs" / self.config_key(config))

    def _index(self, config: dict | str) -> ConfigIndex:
        return open_index(self.root, self.config_key(config))

    # -- reading ------------------------------------------------------------------------------

    @staticmethod
    def digest_keys(digests: Sequence[str]) -> np.ndarray:
        """The store's ``(n, 2)`` uint64 keys of sample digests (see :meth:`get`).

        Examples
        --------
        >>> import tempfile
        >>> store = FeatureStore(tempfile.mkdtemp())
        >>> store.put({"m": 1}, ["a", "b"], np.eye(2))
        >>> keys = FeatureStore.digest_keys(["b", "a"])
        >>> keys.shape, store.get({"m": 1}, keys)[1].tolist()
        ((2, 2), [[0.0, 1.0], [1.0, 0.0]])
        """
        keys, missing = digest_keys(digests)
        if missing is not None and missing.any():
            raise ValueError(f"digest {list(digests)[int(np.argmax(missing))]!r} at position "
                             f"{int(np.argmax(missing))} is None; a key needs a digest")
        return keys

    def get(self, config: dict | str, digests: Sequence[str | None]) -> tuple[np.ndarray,
                                                                             np.ndarray]:
        """Look up vectors by sample digest.

        Parameters
        ----------
        config : dict or str
            The configuration (or its key).
        digests : sequence of str or None, or numpy.ndarray
            Sample digests; None is never found. Or their keys, ``(n, 2)`` uint64 from
            :meth:`digest_keys`. The stored digests in the stored order (a rerun) are
            recognised without converting a string (see :mod:`featclf.store._read`).

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
        return _read.get(self, config, digests)

    def entries(self, config: dict | str) -> tuple[list[str], list, list, np.ndarray]:
        """Every vector of a configuration with its digest and last known path and label.

        Returns
        -------
        digests : list of str
        paths : list of str or None
        labels : list
        vectors : numpy.ndarray
            ``(n, dim)`` float32, one row per distinct digest.

        Raises
        ------
        StoreError
            A damaged shard (or shard index) holds vectors no sound shard has; the message
            names it (``featclf store prune`` removes it, and extraction recomputes them).
        """
        return _export.entries(self, config)

    # -- sample paths and labels --------------------------------------------------------------

    def stale_samples(self, config: dict | str, digests: Sequence[str | None],
                      paths: Sequence[str | None], *,
                      labels: Sequence | None = None) -> np.ndarray:
        """Which stored samples the shards of ``config`` know by another path (or label).

        A moved or renamed file keeps its digest, so its vector is reused; the shard still
        names the old path. The caller records the new one with :meth:`record_samples`.

        Parameters
        ----------
        config : dict or str
            The configuration (or its key).
        digests : sequence of str or None
            Sample digests.
        paths : sequence of str or None
            The samples' current paths.
        labels : sequence, optional
            Their current labels (None: labels are not compared).

        Returns
        -------
        numpy.ndarray of bool
            ``(len(digests),)``; False for digests the configuration does not hold.

        Examples
        --------
        >>> import tempfile
        >>> store = FeatureStore(tempfile.mkdtemp())
        >>> store.put({"m": 1}, ["a", "b"], np.ones((2, 2)), paths=["x/a.png", "x/b.png"])
        >>> store.stale_samples({"m": 1}, ["a", "b", "c"], ["x/a.png", "y/b.png", "c.png"])
        array([False,  True, False])
        """
        return _samples.stale_samples(self, config, digests, paths, labels=labels)

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

        Warns
        -----
        StoreNotWritableWarning
            Once per store and process, when the store cannot be written (read-only): the
            paths are not recorded, and nothing else changes.
        """
        _samples.record_samples(self, digests, paths, labels=labels)

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

    # -- maintenance and export ---------------------------------------------------------------

    def info(self) -> list[ConfigInfo]:
        """One :class:`ConfigInfo` per configuration (reads every index, no vectors)."""
        return _maintenance.info(self)

    def disk_bytes(self) -> int:
        """Bytes the store's files take (everything under its directory)."""
        return tree_bytes(self.root)

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
        return _maintenance.verify(self, progress=progress)

    def prune(self, *, configs: Sequence[str] = (), compact: bool = False,
              stale_seconds: float = 3600.0, lock_timeout: float = 600.0) -> PruneReport:
        """Remove temporary files, orphans, damaged shards, duplicate vectors and namespaces.

        Damaged shards (see :meth:`verify`) are removed: the next extraction recomputes their
        vectors. A shard holding duplicates is rewritten without them; the new shard is in
        place before the old one goes, so concurrent readers keep working. The stat record
        drops the entries of content no namespace holds (``report.stat_entries``).

        Parameters
        ----------
        configs : sequence of str, default=()
            Configuration keys (or unique prefixes) whose namespaces are removed entirely.
        compact : bool, default=False
            Also merge shards of fewer than ``shard_rows / 2`` rows into shards of
            ``shard_rows`` rows (fewer files make opening a configuration faster).
        stale_seconds : float, default=3600
            Temporary and orphan files of a writer on another host (whose liveness cannot be
            checked) are removed once this old; those of dead writers on this host at once,
            those of live ones never (unless a day old: then the pid is another process's).
        lock_timeout : float, default=600
            Seconds to wait for another prune of the same store to finish.

        Returns
        -------
        PruneReport
        """
        return _maintenance.prune(self, configs=configs, compact=compact,
                                  stale_seconds=stale_seconds, lock_timeout=lock_timeout)

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

        Raises
        ------
        StoreError
            The configuration holds no vectors (there is nothing, not even a vector width,
            to write), or a damaged shard holds vectors the file would lack: the message
            names the shard. Nothing is written then.

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
        return _export.export(self, path, config=config)


