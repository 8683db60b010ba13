"""The per-configuration index: which digests a namespace holds, and where each row is.

A namespace's shards each carry a small JSON index (see :mod:`featclf.store._format`). This
module parses them into :class:`Shard` records, turns digests into 128-bit numeric keys
(:func:`digest_keys`) and looks them up in numpy (:class:`ConfigIndex`), and plans which rows
of which shard fill which rows of a result (:func:`plan_reads`). Index files are written once
and never changed, so a process keeps the indexes it parsed (:func:`open_index`) and later only
lists the directory and reads the new ones.
"""

from __future__ import annotations

import json
import os
import threading
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from featclf.store._format import SHARD_FORMAT, SHARD_INDEX, index_checksum_ok, json_bytes

# Indexes of the namespaces this process has read, by directory (most recent last): a later
# FeatureStore object on the same store (the extractor opens one per call) only lists the
# directory and reads the new index files.
INDEXES: OrderedDict[str, ConfigIndex] = OrderedDict()
_MAX_CACHED_INDEXES = 32
_INDEXES_LOCK = threading.Lock()


def digest_keys(digests: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray | None]:
    """Digests as ``(n, 2)`` uint64 keys, and which are None (None: no digest is None).

    featclf's digests are 32 hex characters (128-bit xxh3) and are converted in one C call;
    any other string is hashed to 128 bits first.

    Examples
    --------
    >>> keys, missing = digest_keys(["628ff615236b886756b64ed400b01c76", None])
    >>> keys.shape, missing.tolist()
    ((2, 2), [False, True])
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


@dataclass
class Shard:
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
    def from_index(cls, data: dict, stem: str, raw: bytes | None = None) -> Shard:
        """Parse and check a shard index (``raw``: its file bytes, for a fast self-check)."""
        if data.get("format") != SHARD_FORMAT:
            raise ValueError("not a featclf shard index")
        own = data.get("index_xxh3")
        if own is not None and not index_checksum_ok(raw, own) and \
                own != xxhash.xxh3_128_hexdigest(
                    json_bytes({k: v for k, v in data.items() if k != "index_xxh3"})):
            raise ValueError("the index does not match its own checksum (edited or damaged)")
        rows, digests = int(data["rows"]), list(data["digests"])
        paths, labels = data.get("paths"), data.get("labels")
        if len(digests) != rows or any(v is not None and len(v) != rows
                                       for v in (paths, labels)):
            raise ValueError(f"digests, paths or labels do not match its {rows} rows")
        keys, missing = digest_keys(digests)
        if missing is not None and missing.any():
            raise ValueError("a digest is null")
        return cls(stem, rows, int(data["dim"]), str(data["dtype"]), int(data["bytes"]),
                   str(data["xxh3"]), digests, paths, labels, keys)


class ConfigIndex:
    """The loaded indexes of one namespace, refreshed incrementally.

    Rows of all shards are numbered one after the other ("global rows"). Lookups run in numpy:
    the digests' 128-bit keys are sorted once by a 64-bit mix of them and searched with
    ``np.searchsorted``: no Python object per digest, where a dict would need a fresh string
    for each.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.shards: list[Shard] = []
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
            names = {e.name for e in os.scandir(self.directory) if SHARD_INDEX.match(e.name)}
        except FileNotFoundError:
            names = set()
        if not self.loaded <= names:  # prune removed or rewrote shards: start again
            damaged, lock = self.damaged, self.lock
            self.__init__(self.directory)
            self.damaged, self.lock = damaged, lock
        for name in sorted(names - self.loaded - set(self.unreadable)):
            try:
                raw = (self.directory / name).read_bytes()
                shard = Shard.from_index(json.loads(raw), name[:-5], raw)
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
        query, missing = digest_keys(digests)
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

    def locate(self, rows: np.ndarray) -> list[tuple[Shard, int]]:
        """The shard of each global row and the row's position in it."""
        positions = self.shard_of(rows)
        local = rows - np.asarray(self.starts, dtype=np.int64)[positions]
        return [(self.shards[p], r) for p, r in zip(positions.tolist(), local.tolist())]

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


def forget_indexes(root: Path) -> None:
    """Drop this process's cached indexes of a store (after prune rewrote it)."""
    prefix = os.path.join(os.path.abspath(root), "configs", "")
    with _INDEXES_LOCK:  # other threads may be adding indexes meanwhile
        for directory in [d for d in INDEXES if d.startswith(prefix)]:
            del INDEXES[directory]


def plan_reads(index: ConfigIndex, rows: np.ndarray) -> list[tuple]:
    """What to read to fill ``out[i]`` with global row ``rows[i]``: one task per shard.

    Each task is ``(shard, rows of the shard, slots of out, whole shard in order?)``, as
    :func:`~featclf.store._format.read_rows` runs them.
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
