"""Inspecting and repairing a store: info, verify, prune (and compact).

These are the bodies of :meth:`FeatureStore.info`, :meth:`FeatureStore.verify` and
:meth:`FeatureStore.prune` (and so of ``featclf store info|verify|prune``). Every repair writes
new files before it removes old ones, so readers and writers running meanwhile keep working:
see the crash-safety and concurrency parts of the design note in :mod:`featclf.store`.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from featclf.progress import progress_bar
from featclf.store._format import (
    SHARD_INDEX,
    DamagedShard,
    atomic_write,
    check_shard,
    fsync_dir,
    json_bytes,
    leftover,
    load_shard,
    new_writer_id,
    read_about,
    read_samples,
    remove_shard,
    tree_bytes,
    write_shard,
)
from featclf.store._index import ConfigIndex, describe_namespace, forget_indexes
from featclf.store._keys import (
    KEYS_SUFFIX,
    Shard,
    file_stat,
    read_keys,
    write_keys,
)

if TYPE_CHECKING:
    from featclf.store import FeatureStore


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
    # What FeatureStore.annotate recorded (model name, weights in words); {} for old stores.
    about: dict[str, str] = field(default_factory=dict)


@dataclass
class VerifyReport:
    """What :meth:`FeatureStore.verify` found: the shards checked and every problem."""

    shards: int = 0
    vectors: int = 0
    bytes: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)  # (relative path, reason)
    # Shards readers look up through their JSON index, because their key index is missing or
    # not current (an old store, a crash, an edited JSON index): not damage, only slower.
    # `prune` writes their key indexes. (relative path of the JSON index, why)
    fallbacks: list[tuple[str, str]] = field(default_factory=list)

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
    key_indexes: list[str] = field(default_factory=list)  # key indexes written (upgrades)
    stat_entries: int = 0  # stat-record entries dropped: their content has no stored vector


def info(store: FeatureStore) -> list[ConfigInfo]:
    """One :class:`ConfigInfo` per configuration (reads every index, no vectors)."""
    out = []
    for key in store.configs():
        directory = store.root / "configs" / key
        index = ConfigIndex(directory)
        index.refresh()
        size = tree_bytes(directory)
        rows = sum(s.rows for s in index.shards)
        distinct = index.n_distinct()
        out.append(ConfigInfo(key, store.config(key), distinct, rows - distinct,
                              len(index.shards), index.dim,
                              sorted({s.dtype for s in index.shards}), size,
                              read_about(directory)))
    return out


def verify(store: FeatureStore, *, progress: bool = False) -> VerifyReport:
    """Check every shard: index readable, file present, size, header and xxh3 checksum."""
    report = VerifyReport()
    jobs = []
    for key in store.configs():
        directory = store.root / "configs" / key
        index = ConfigIndex(directory, use_keys=False)  # the JSON indexes are the authority
        index.refresh()
        for name, reason in index.unreadable.items():
            report.problems.append((f"configs/{key}/{name}", reason))
        dims = {s.dim for s in index.shards}
        if len(dims) > 1:
            report.problems.append((f"configs/{key}", f"shards of different dims {dims}"))
        jobs.extend((directory, key, s) for s in index.shards)
        for shard in index.shards:
            why = key_index_problem(directory, shard)
            if why is not None:
                report.fallbacks.append((f"configs/{key}/{shard.name}.json", why))
    bar = progress_bar(enabled=progress, total=sum(s.nbytes for _, _, s in jobs), unit="B",
                       unit_scale=True, desc="verify")
    for directory, key, shard in jobs:
        problem = check_shard(directory / f"{shard.name}.npy", shard)
        report.shards += 1
        report.bytes += shard.nbytes
        if problem:
            report.problems.append((f"configs/{key}/{shard.name}.npy", problem))
        else:
            report.vectors += shard.rows
        bar.update(shard.nbytes)
    bar.close()
    return report


def key_index_problem(directory: Path, shard: Shard) -> str | None:
    """Why readers would not use a shard's key index (None: they use it, and it agrees with
    the JSON index ``shard`` was read from)."""
    try:
        index_stat = file_stat(os.stat(directory / f"{shard.name}.json"))
        keyed = read_keys(directory, shard.name, index_stat, whole=True)
    except FileNotFoundError:
        return "its JSON index vanished (a prune rewrote it)"
    except ValueError as exc:
        return f"{exc}: readers use the JSON index"
    if not keyed.same_as(shard) or (keyed.hex_keys and keyed.digests != shard.digests):
        return "the key index disagrees with the JSON index: readers use the JSON index"
    return None


def prune(store: FeatureStore, *, configs: Sequence[str] = (), compact: bool = False,
          stale_seconds: float = 3600.0, lock_timeout: float = 600.0) -> PruneReport:
    """Remove temporary files, orphans, damaged shards, duplicate vectors and namespaces.

    See :meth:`FeatureStore.prune` for the parameters.
    """
    from filelock import FileLock

    report = PruneReport()
    root = store.root
    with FileLock(str(root / ".prune.lock"), timeout=lock_timeout):
        for prefix in configs:
            key = store.resolve_config(prefix)
            doomed = root / "configs" / key
            # Rename first so readers see the namespace vanish at once, then delete.
            trash = root / "configs" / f".tmp-{new_writer_id()}-deleted-{key}"
            report.bytes_freed += tree_bytes(doomed)
            os.replace(doomed, trash)
            shutil.rmtree(trash, ignore_errors=True)
            report.configs.append(key)
        _prune_stale(root, root, report, stale_seconds)
        _prune_stale(root, root / "configs", report, stale_seconds)
        for key in store.configs():
            _prune_namespace(store, key, report, stale_seconds, compact)
        _compact_samples(root)
        report.stat_entries = _prune_stat_record(store)
        forget_indexes(root)
    return report


def _prune_stat_record(store: FeatureStore) -> int:
    """Drop the stat record's entries whose digest no namespace holds (see StatRecord.prune)."""
    from featclf.store._stat import DIRECTORY, StatRecord

    if not (store.root / DIRECTORY).is_dir():
        return 0
    keys = [np.empty((0, 2), dtype=np.uint64)]
    for key in store.configs():
        index = ConfigIndex(store.root / "configs" / key)
        index.refresh()
        keys.extend(index.shard_keys())
    return StatRecord(store.root).prune(np.concatenate(keys))


def _age(path: str | os.PathLike, now: float) -> float | None:
    """Seconds since ``path`` was modified; None when it is gone (a writer renamed it)."""
    try:
        return now - os.stat(path).st_mtime
    except FileNotFoundError:
        return None


def _prune_stale(root: Path, directory: Path, report: PruneReport,
                 stale_seconds: float) -> None:
    """Remove temporary files and directories of crashed writers (never a live writer's)."""
    if not directory.is_dir():
        return
    now = time.time()
    for entry in os.scandir(directory):
        if not entry.name.startswith(".tmp-"):
            continue
        # A live writer renames its temporary files at any moment: one that is gone is skipped.
        age = _age(entry.path, now)
        if age is None or not leftover(entry.name, age, stale_seconds):
            continue
        size = tree_bytes(Path(entry.path))
        if entry.is_dir():
            shutil.rmtree(entry.path, ignore_errors=True)
        else:
            try:
                os.unlink(entry.path)
            except FileNotFoundError:
                continue
        report.bytes_freed += size
        report.temp_files.append(os.path.relpath(entry.path, root))


def _shard_files(directory: Path) -> tuple[list[str], list[str]]:
    """(index files, .npy and key index files) of a namespace."""
    indexes, arrays = [], []
    for name in sorted(os.listdir(directory)):
        if name.startswith(".tmp-"):
            continue
        if SHARD_INDEX.match(name):
            indexes.append(name)
        elif name.startswith("shard-") and name.endswith((".npy", KEYS_SUFFIX)):
            arrays.append(name)
    return indexes, arrays


def _prune_namespace(store: FeatureStore, key: str, report: PruneReport, stale_seconds: float,
                     compact: bool) -> None:
    directory = store.root / "configs" / key
    rel = f"configs/{key}"
    _prune_stale(store.root, directory, report, stale_seconds)
    indexes, arrays = _shard_files(directory)
    indexed = {name[:-5] for name in indexes}
    now = time.time()
    for name in arrays:  # a shard (or key index) whose writer died before writing its index
        if os.path.splitext(name)[0] in indexed:
            continue
        path = directory / name
        age = _age(path, now)
        # (A live writer writes the index next: its shard is left alone.)
        if age is None or not leftover(name, age, stale_seconds):
            continue
        size = tree_bytes(path)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()
            report.bytes_freed += size
            report.orphans.append(f"{rel}/{name}")
    index = ConfigIndex(directory, use_keys=False)  # compaction trusts the JSON indexes only
    index.refresh()
    for name, reason in index.unreadable.items():
        size = tree_bytes(directory / name)
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()
            report.bytes_freed += size
            report.damaged.append(f"{rel}/{name} ({reason})")
    good: list[Shard] = []
    seen: dict[str, os.stat_result] = {}  # stem -> the shard's stat before its bytes were hashed
    for shard in index.shards:
        stats: list[os.stat_result] = []
        problem = check_shard(directory / f"{shard.name}.npy", shard, stats)
        if problem:
            report.bytes_freed += remove_shard(directory, shard.name)
            report.damaged.append(f"{rel}/{shard.name}.npy ({problem})")
        else:
            good.append(shard)
            seen[shard.name] = stats[0]
    kept: dict[str, tuple[Any, Any]] = {}  # digest -> (path, label) of the copy kept
    rescued: dict[str, tuple[Any, Any]] = {}  # what only a dropped copy knew
    merger = _ShardMerger(directory, store.shard_rows, report)
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
        small = compact and len(keep) < store.shard_rows // 2
        if len(keep) == shard.rows and not small:
            _upgrade_keys(directory, shard, seen[shard.name], report)
            continue
        try:
            merger.add(shard, keep)
        except DamagedShard as exc:
            # Its bytes changed after the check above. Stop here: every old shard still in
            # place keeps its vectors, and the next prune finds this one damaged.
            warnings.warn(f"feature store {store.root}: {rel}/{exc}; compaction of this "
                          "configuration stopped, run `featclf store prune` again",
                          stacklevel=3)
            merger.abandon()
            break
        report.duplicates += shard.rows - len(keep)
        report.merged += int(small)
    else:
        merger.finish()
    describe_namespace(directory, new_writer_id())
    if rescued:  # a dropped copy had a path or label the kept one lacks: keep it for export
        store.record_samples(list(rescued), [v[0] for v in rescued.values()],
                             labels=[v[1] for v in rescued.values()])


def _upgrade_keys(directory: Path, shard: Shard, verified: os.stat_result,
                  report: PruneReport) -> None:
    """Write a kept shard's key index when readers would not use the one it has (an old
    store, a crash, an edited JSON index), recording the stat its checksum was checked at."""
    if key_index_problem(directory, shard) is None:
        return
    with contextlib.suppress(OSError):  # a read-only or full store: readers use the JSON
        write_keys(directory, shard, shard.digests, file_stat(verified), new_writer_id())
        report.key_indexes.append(f"configs/{directory.name}/{shard.name}{KEYS_SUFFIX}")


def _compact_samples(root: Path) -> None:
    directory = root / "samples"
    if not directory.is_dir():
        return
    names = sorted(n for n in os.listdir(directory) if n.endswith(".json")
                   and not n.startswith("."))
    if len(names) < 2:
        return
    merged = read_samples(root)
    writer = new_writer_id()
    data = {"digests": list(merged), "paths": [v[0] for v in merged.values()],
            "labels": [v[1] for v in merged.values()]}
    # Same time stamp as the newest file read, so files written meanwhile still win.
    newest = names[-1].split("-", 1)[0]
    atomic_write(directory / f"{newest}-{writer}.json", [json_bytes(data)], writer)
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            (directory / name).unlink()


class _ShardMerger:
    """Rewrites chosen rows of old shards as new shards of ``shard_rows`` rows (for prune).

    An old shard is removed only once every row kept from it is in a new shard on disk, so a
    crash or a concurrent reader never finds a vector missing (at worst, twice).
    """

    def __init__(self, directory: Path, shard_rows: int, report: PruneReport) -> None:
        self.directory, self.shard_rows, self.report = directory, shard_rows, report
        self.writer_id, self.seq = new_writer_id(), 0
        self.digests: list[str] = []
        self.vectors: list[np.ndarray] = []
        self.paths: list[str | None] = []
        self.labels: list[Any] = []
        self.has_labels = False
        self.sources: list[tuple[Shard, int]] = []  # (old shard, buffered rows up to its last)

    def add(self, shard: Shard, keep: list[int]) -> None:
        """Take rows ``keep`` of ``shard``; write whole new shards when there are enough."""
        if keep:
            data = load_shard(self.directory / f"{shard.name}.npy", shard)
            self.vectors.append(data[keep])
            self.digests.extend(shard.digests[r] for r in keep)
            self.paths.extend(shard.paths[r] if shard.paths else None for r in keep)
            self.labels.extend(shard.labels[r] if shard.labels else None for r in keep)
            self.has_labels |= bool(shard.labels)
        self.sources.append((shard, len(self.digests)))
        self._write(final=False)

    def _next_stem(self) -> str:
        stem = f"shard-{self.writer_id}-{self.seq:06d}"
        self.seq += 1
        return stem

    def abandon(self) -> None:
        """Write nothing more and remove no more old shards (they keep their vectors)."""
        self.digests, self.vectors, self.paths, self.labels, self.sources = [], [], [], [], []
        fsync_dir(self.directory)

    def finish(self) -> None:
        """Write what is left, and remove the old shards."""
        self._write(final=True)
        fsync_dir(self.directory)

    def _write(self, *, final: bool) -> None:
        n = len(self.digests)
        end = n if final else n - n % self.shard_rows
        if end == 0 and not (final and self.sources):
            return
        vectors = np.concatenate(self.vectors) if self.vectors else None
        for start in range(0, end, self.shard_rows):
            stop = min(start + self.shard_rows, end)
            stem = write_shard(self.directory, self._next_stem, self.digests[start:stop],
                        np.ascontiguousarray(vectors[start:stop]), self.paths[start:stop],
                        self.labels[start:stop] if self.has_labels else None, self.writer_id)
            self.report.rewritten.append(f"configs/{self.directory.name}/{stem}.npy")
        # Old shards whose kept rows are all written go now (index first), the rest wait; the
        # new names are made durable first, so a power loss cannot keep a removal but lose them.
        done = [shard for shard, last in self.sources if last <= end]
        if done and end:
            fsync_dir(self.directory)
        for shard in done:
            self.report.bytes_freed += remove_shard(self.directory, shard.name)
        self.sources = [(shard, last - end) for shard, last in self.sources if last > end]
        self.digests, self.paths, self.labels = (self.digests[end:], self.paths[end:],
                                                 self.labels[end:])
        self.vectors = [vectors[end:]] if vectors is not None and end < n else []
