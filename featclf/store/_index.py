"""The per-configuration index: which digests a namespace holds, and where each row is.

A namespace's shards each carry a small JSON index (see :mod:`featclf.store._format`) and,
beside it, a binary key index (``<stem>.keys``, see below). This module reads them into
:class:`Shard` records, turns digests into 128-bit numeric keys (:func:`digest_keys`) and looks
them up in numpy (:class:`ConfigIndex`), and plans which rows of which shard fill which rows of
a result (:func:`plan_reads`). Index files are written once and never changed, so a process
keeps the indexes it read (:func:`open_index`) and later only lists the directory and reads the
new ones.

Key indexes (``<stem>.keys``) are read and written by :mod:`featclf.store._keys`.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from featclf.store._format import SHARD_INDEX
from featclf.store._keys import (  # noqa: F401 - digest_keys, Shard...: their home was here
    KEYS_SUFFIX,
    Shard,
    digest_keys,
    file_stat,
    hex_digests,
    read_shard,
    write_keys,
)
from featclf.store._nskeys import read_namespace_keys, write_namespace_keys

# Indexes of the namespaces this process has read, by directory (most recent last): a later
# FeatureStore object on the same store (the extractor opens one per call) only lists the
# directory and reads the new index files.
INDEXES: OrderedDict[str, ConfigIndex] = OrderedDict()
_MAX_CACHED_INDEXES = 32
_INDEXES_LOCK = threading.Lock()
# Queries of at most this many digests scan the keys instead of sorting them (1M keys: a scan
# takes ~2 ms, a sort ~100 ms).
_SCAN_QUERIES = 8
# From this many new shard indexes on, a refresh first reads the namespace key index.
_NAMESPACE_KEYS_FROM = 16
# A writer that leaves this many shards the namespace key index does not describe (in the
# namespace its process has read) writes it again: opening a big namespace then reads one
# file, and small writes to a big namespace do not rewrite it every time.
_DESCRIBE_FROM = 64


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


@contextlib.contextmanager
def _gc_paused():
    """No cyclic garbage collection meanwhile (loading 1,000 shard records allocates enough
    objects to start several collections, and each full one walks every object of the caller:
    with a million digest strings in a list, that tripled the time to open a namespace)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _adjacent(parts: list[np.ndarray]) -> np.ndarray | None:
    """``np.concatenate(parts)`` without a copy, when the parts lie one after the other in one
    buffer (the shards a namespace key index describes: 16 MB for 1M keys); else None."""
    if not parts:
        return None
    base = parts[0].base
    if base is None or any(p.base is not base or not p.flags.c_contiguous for p in parts):
        return None
    start = parts[0].__array_interface__["data"][0]
    at = start
    for p in parts:
        if p.__array_interface__["data"][0] != at:
            return None
        at += p.nbytes
    offset = start - base.__array_interface__["data"][0]
    flat = base.reshape(-1).view(np.uint8)
    return flat[offset:at - start + offset].view("<u8").reshape(-1, 2)


class ConfigIndex:
    """The loaded indexes of one namespace, refreshed incrementally.

    Rows of all shards are numbered one after the other ("global rows"). Lookups run in numpy:
    the digests' 128-bit keys are sorted once by a 64-bit mix of them and searched with
    ``np.searchsorted``: no Python object per digest, where a dict would need a fresh string
    for each. A query of the digests in the order they were stored (a rerun) needs no sort.
    """

    def __init__(self, directory: Path, *, use_keys: bool = True) -> None:
        self.directory = directory
        # (a str for the many file names built from it: a Path costs more per name than
        # the open does)
        self.folder = os.fspath(directory)
        self.use_keys = use_keys  # False: JSON indexes only (prune and verify: the authority)
        self.shards: list[Shard] = []
        self.starts: list[int] = []  # global row of each shard's first row
        self.total = 0
        self.loaded: set[str] = set()
        self.damaged: dict[str, str] = {}  # shard stem -> reason (found by reads in this process)
        self.unreadable: dict[str, str] = {}  # index file -> reason
        self.fallbacks: dict[str, str] = {}  # shard stem -> why its JSON index was read
        self.distrusted: set[str] = set()  # stems whose key index a read found wrong
        self.upgraded: set[str] = set()  # stems whose key index this process wrote
        self.described: set[str] = set()  # stems in the namespace key index this process wrote
        self.dim: int | None = None
        self._sorted: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None
        self._live: tuple[np.ndarray, np.ndarray] | None = None
        self.generation = 0  # how many times the shards were numbered again (_restart)
        self.lock = threading.RLock()  # held by whoever reads or changes the fields above

    def refresh(self) -> None:
        """Load index files written since the last refresh (all of them if some vanished)."""
        with _gc_paused():
            self._refresh()

    def _refresh(self) -> None:
        try:
            entries = {e.name: e for e in os.scandir(self.directory)
                       if SHARD_INDEX.match(e.name)}
        except FileNotFoundError:
            entries = {}
        if not self.loaded <= entries.keys():  # prune removed or rewrote shards: start again
            self._restart()
        new = sorted(entries.keys() - self.loaded - set(self.unreadable))
        # Many shards at once (a first look at a big namespace): the namespace key index that
        # prune wrote describes them in one file.
        together = read_namespace_keys(self.directory) \
            if self.use_keys and len(new) >= _NAMESPACE_KEYS_FROM else {}
        for name in new:
            stem = name[:-5]
            try:
                st = entries[name].stat()
                known = together.get(stem)
                if known is not None and stem not in self.distrusted and \
                        known.index_stat == file_stat(st):
                    shard = known  # (its JSON index is as it was when it was described)
                    shard.described = True
                else:
                    shard = read_shard(self.folder, name, st,
                                       use_keys=self.use_keys and stem not in self.distrusted)
            except FileNotFoundError:
                continue
            except (ValueError, KeyError, TypeError) as exc:
                self.unreadable[name] = f"unreadable index ({exc})"
                warnings.warn(f"{self.directory / name}: unreadable shard index ({exc}); its "
                              "vectors count as missing and are recomputed. `featclf store "
                              "verify` lists it and `featclf store prune` removes it",
                              stacklevel=2)
                continue
            if shard.fallback is not None:
                self.fallbacks[shard.name] = shard.fallback
            self.loaded.add(name)
            if self.dim is None:
                self.dim = shard.dim
            self.shards.append(shard)
            self.starts.append(self.total)
            self.total += shard.rows
            self._sorted = self._live = None

    def _restart(self) -> None:
        kept = self.damaged, self.distrusted, self.lock, self.generation + 1
        self.__init__(self.directory, use_keys=self.use_keys)
        self.damaged, self.distrusted, self.lock, self.generation = kept

    def distrust_keys(self, stem: str) -> bool:
        """Read a shard's JSON index in place of its key index, after a read found the shard
        not as the key index says. True when the JSON index says otherwise (the key index was
        wrong, and the shard is read again as JSON says); False when both agree (the shard
        itself is damaged) or the shard was read from JSON already."""
        position = next((i for i, s in enumerate(self.shards) if s.name == stem), None)
        if position is None or self.shards[position].source != "keys":
            return False
        try:
            raw = (self.directory / f"{stem}.json").read_bytes()
            shard = Shard.from_index(json.loads(raw), stem, raw, self.directory)
        except (OSError, ValueError, KeyError, TypeError):
            return False
        if shard.same_as(self.shards[position]):
            return False
        self.distrusted.add(stem)  # (global rows may shift: number every shard again)
        self._restart()
        self.refresh()
        return True

    def shard_keys(self) -> list[np.ndarray]:
        """Each shard's keys, read now where not read yet (:attr:`Shard.keys`); a shard whose
        keys neither index gives is damaged from then on (its vectors count as missing)."""
        out = []
        for shard in self.shards:
            try:
                out.append(shard.keys)
            except FileNotFoundError:  # a prune removed it since it was opened: look again
                self.refresh()
                return self.shard_keys()
            except ValueError as exc:
                self.mark_damaged(shard.name, str(exc))
                warnings.warn(f"{self.directory}: shard {shard.name}: {exc}; its vectors count "
                              "as missing and are recomputed. `featclf store verify` lists it "
                              "and `featclf store prune` removes it", stacklevel=3)
                out.append(np.empty((0, 2), np.uint64))
                continue
            if shard.fallback is not None:
                self.fallbacks.setdefault(shard.name, shard.fallback)
        return out

    def _live_keys(self) -> tuple[np.ndarray, np.ndarray]:
        """(keys of the shards in use, in shard order; their global rows)."""
        if self._live is None:
            every = self.shard_keys()
            live = [i for i, s in enumerate(self.shards) if s.name not in self.damaged]
            if len(live) == len(self.shards):  # (the usual case: every shard in use)
                keys = _adjacent(every)
                if keys is None:
                    keys = np.concatenate(every) if live else np.empty((0, 2), np.uint64)
                rows = np.arange(self.total, dtype=np.int64)
            else:
                keys = np.concatenate([every[i] for i in live]) if live else \
                    np.empty((0, 2), np.uint64)
                rows = np.concatenate([np.arange(self.starts[i],
                                                 self.starts[i] + self.shards[i].rows)
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
        query, missing = digest_keys(digests)
        live_keys, live_rows = self._live_keys()
        n = len(query)
        if missing is None and n <= len(live_keys) and np.array_equal(query, live_keys[:n]):
            return live_rows[:n].copy()  # the inputs of the run that wrote the store, in order
        result = np.full(len(digests), -1, dtype=np.int64)
        if self._sorted is None and n <= _SCAN_QUERIES:
            # A few digests (a probe, one image): a scan costs less than sorting every key.
            for i in range(n):
                if missing is None or not missing[i]:
                    at = np.flatnonzero((live_keys[:, 0] == query[i, 0])
                                        & (live_keys[:, 1] == query[i, 1]))
                    result[i] = live_rows[at[0]] if len(at) else -1
            return result
        mixed, keys, rows = self._sorted_keys()
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

    def locate(self, rows: np.ndarray) -> list[tuple[Shard, int]]:
        """The shard of each global row and the row's position in it."""
        positions = self.shard_of(rows)
        local = rows - np.asarray(self.starts, dtype=np.int64)[positions]
        return [(self.shards[p], r) for p, r in zip(positions.tolist(), local.tolist())]

    def n_distinct(self) -> int:
        """How many different digests the shards in use hold (from the keys: no JSON)."""
        keys, _ = self._live_keys()
        if len(keys) == 0:
            return 0
        order = np.lexsort((keys[:, 1], keys[:, 0]))
        ordered = keys[order]
        return 1 + int(np.count_nonzero((ordered[1:] != ordered[:-1]).any(axis=1)))

    def distinct(self) -> dict[str, tuple[Shard, int]]:
        """Every stored digest once (in shard order), with the shard and row holding it."""
        out: dict[str, tuple[Shard, int]] = {}
        for shard in self.shards:
            if shard.name not in self.damaged:
                for row, digest in enumerate(shard.digests):
                    out.setdefault(digest, (shard, row))
        return out

    def mark_damaged(self, stem: str, reason: str) -> None:
        """Stop using a shard; other copies of its vectors (if any) take its place."""
        self.damaged[stem] = reason
        self._sorted = self._live = None


def open_index(root: Path, key: str) -> ConfigIndex:
    """The (cached, refreshed) index of namespace ``key`` of the store at ``root``."""
    directory = os.path.join(os.path.abspath(root), "configs", key)
    with _INDEXES_LOCK:
        index = INDEXES.get(directory)
        if index is None:
            index = INDEXES[directory] = ConfigIndex(Path(directory))
            while len(INDEXES) > _MAX_CACHED_INDEXES:
                INDEXES.popitem(last=False)
        INDEXES.move_to_end(directory)
    with index.lock:
        index.refresh()
    return index


def upgrade_keys(directory: Path, tmp_tag: str, *, wrote: int = 0) -> int:
    """Write key indexes for the shards this process read through their JSON index (an old
    store): called by writers on close, so writing to a store upgrades it. Returns how many
    were written. Only indexes already loaded are used: nothing is parsed for this.

    A writer that wrote ``wrote >= 16`` shards also describes the namespace (its next reader
    then reads one key index, not one per shard); so does one whose process knows that 64
    shards are not described."""
    with _INDEXES_LOCK:
        index = INDEXES.get(os.path.abspath(directory))
    if index is None:
        if wrote >= _NAMESPACE_KEYS_FROM:
            describe_namespace(directory, tmp_tag)
        return 0
    written = 0
    with index.lock:
        for shard in index.shards:
            if shard.source != "json" or shard.name in index.damaged or \
                    shard.name in index.upgraded:
                continue
            index.upgraded.add(shard.name)
            try:  # (its checksum was not checked here: readers still hash it once)
                write_keys(index.directory, shard, shard.digests, None, tmp_tag)
                written += 1
            except (OSError, ValueError):
                continue  # read-only, full, or the JSON index vanished: readers use JSON
        described = index.described | {s.name for s in index.shards if s.described}
    # Counted from a listing, not by refreshing this process's index: that stays as the
    # process last looked, as for any reader (see ConfigIndex).
    try:
        names = [e.name[:-5] for e in os.scandir(index.directory) if SHARD_INDEX.match(e.name)]
    except FileNotFoundError:
        names = []
    undescribed = len(names) - len(described.intersection(names))
    if undescribed >= _DESCRIBE_FROM or (wrote >= _NAMESPACE_KEYS_FROM and undescribed):
        named = describe_namespace(index.directory, tmp_tag)
        with index.lock:
            index.described |= named
    return written


def describe_namespace(directory: Path, tmp_tag: str) -> set[str]:
    """Write the namespace key index over every shard that has a current key index now.

    Readers use each record only while the shard's JSON index is as recorded, so shards that
    writers add or prune removes later never make it wrong: it only goes out of date (and
    concurrent writers replacing each other's never lose a shard: one left out is read
    through its own key index).
    """
    index = ConfigIndex(directory)
    index.refresh()
    shards = [s for s in index.shards if s.source == "keys"]
    if shards:
        try:
            write_namespace_keys(directory, shards, tmp_tag)
        except OSError:  # read-only or full: readers use each shard's own
            return set()
    return {s.name for s in shards}


def forget_indexes(root: Path) -> None:
    """Drop this process's cached indexes of a store (after prune rewrote it)."""
    prefix = os.path.join(os.path.abspath(root), "configs", "")
    with _INDEXES_LOCK:  # other threads may be adding indexes meanwhile
        for directory in [d for d in INDEXES if d.startswith(prefix)]:
            del INDEXES[directory]


def plan_reads(index: ConfigIndex, rows: np.ndarray, *, at: int = 0) -> list[tuple]:
    """What to read to fill ``out[at + i]`` with global row ``rows[i]``: one task per shard.

    Each task is ``(shard, rows of the shard, slots of out, whole shard in order?)``, as
    :func:`~featclf.store._read.read_rows` runs them.
    """
    tasks = []
    if len(rows) == 0:
        return tasks
    if len(rows) < 2 or bool((rows[1:] > rows[:-1]).all()):
        # Ascending rows (the usual case: inputs in the order they were stored): each shard's
        # rows are one run of ``out``, found by a search per shard.
        starts = np.asarray(index.starts, dtype=np.int64)
        cuts = np.searchsorted(rows, np.append(starts, index.total))
        for position, shard in enumerate(index.shards):
            lo, hi = int(cuts[position]), int(cuts[position + 1])
            if hi > lo:
                tasks.append((shard, rows[lo:hi] - starts[position], slice(at + lo, at + hi),
                              hi - lo == shard.rows))
    else:
        shard_of = index.shard_of(rows)
        order = np.argsort(shard_of, kind="stable")
        bounds = np.flatnonzero(np.diff(shard_of[order])) + 1
        for group in np.split(order, bounds):
            position = int(shard_of[group[0]])
            shard = index.shards[position]
            contiguous = group[-1] - group[0] == len(group) - 1  # out slots in one run
            slots = slice(at + int(group[0]), at + int(group[-1]) + 1) if contiguous else \
                group + at
            local = rows[group] - index.starts[position]
            whole = contiguous and len(group) == shard.rows and \
                bool((local == np.arange(shard.rows)).all())
            tasks.append((shard, local, slots, whole))
    return tasks
