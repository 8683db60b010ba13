"""What a store records besides vectors: where samples are now, and configurations in words.

The bodies of :meth:`FeatureStore.stale_samples`, :meth:`FeatureStore.record_samples` and
:meth:`FeatureStore.annotate`. Both records are bookkeeping (for ``export`` and ``info``), never
needed to read a vector, so a store that cannot be written (a read-only shared cache) skips
them and keeps serving reads.
"""

from __future__ import annotations

import json
import os
import time
import warnings
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

import numpy as np

from featclf.store._format import (
    ABOUT,
    StoreNotWritableWarning,
    as_label,
    atomic_write,
    json_bytes,
    new_writer_id,
)
from featclf.store._keys import labels_hash, paths_hash
from featclf.store._read import stored_prefix

if TYPE_CHECKING:
    from featclf.store import FeatureStore

# Stores this process could not record sample paths in (each is warned about once).
_UNRECORDED: set[str] = set()


def stale_samples(store: FeatureStore, config: dict | str, digests: Sequence[str | None],
                  paths: Sequence[str | None], *, labels: Sequence | None = None) -> np.ndarray:
    """Which stored samples the shards of ``config`` know by another path (or label).

    A rerun reads no JSON index: the leading shards whose digests the query repeats in order
    (:func:`~featclf.store._read.stored_prefix`) are compared by the xxh3-128 of their paths
    and labels as text, which their key index records (equal texts: equal paths, labels as
    the JSON index holds them). A shard whose hashes differ or are not recorded, and every
    other digest, are compared row by row with the JSON index, as before.
    """
    index = store._index(config)
    n = len(digests)
    with index.lock:  # (a prune may run meanwhile: look them up once)
        prefix = stored_prefix(index, digests) if n else 0
        leading = [(s, start) for s, start in zip(index.shards, index.starts) if start < prefix]
        rest = index.find(digests[prefix:]) if prefix < n else np.empty(0, dtype=np.int64)
        held = prefix + np.flatnonzero(rest >= 0)
        located = index.locate(rest[rest >= 0])
    stale = np.zeros(n, dtype=bool)
    for shard, start in leading:  # the query's rows start... are this shard's, in order
        part = slice(start, start + shard.rows)
        _, stored_paths, stored_labels = shard.text_hashes
        if stored_paths is not None and paths_hash(paths[part]) == stored_paths and (
                labels is None or stored_labels is not None and
                labels_hash(labels[part]) == stored_labels):
            continue
        _compare(stale, range(start, start + shard.rows),
                 [(shard, r) for r in range(shard.rows)], paths, labels)
    _compare(stale, held.tolist(), located, paths, labels)
    return stale


def _compare(stale: np.ndarray, positions, located: list, paths: Sequence,
             labels: Sequence | None) -> None:
    """Mark the positions whose path (or label) differs from the JSON index's, row by row."""
    for i, (shard, r) in zip(positions, located):
        try:  # (paths and labels are in the JSON index, read now if not yet)
            old_path = shard.paths[r] if shard.paths else None
            old_label = shard.labels[r] if shard.labels else None
        except (OSError, ValueError):
            stale[i] = True  # a prune rewrote the shard meanwhile: record the path again
            continue
        new_label = labels is not None and as_label(labels[i]) != old_label
        stale[i] = paths[i] != old_path or new_label


def record_samples(store: FeatureStore, digests: Sequence[str | None],
                   paths: Sequence[str | None], *, labels: Sequence | None = None) -> None:
    """Write a ``samples/`` file with new paths and labels (a warning, once, when the store
    cannot be written)."""
    rows = [(d, None if p is None else os.fspath(p),
             None if labels is None else as_label(labels[i]))
            for i, (d, p) in enumerate(zip(digests, paths)) if d is not None]
    if not rows:
        return
    directory = store.root / "samples"
    writer = new_writer_id()
    data = {"digests": [r[0] for r in rows], "paths": [r[1] for r in rows],
            "labels": None if labels is None else [r[2] for r in rows]}
    try:
        directory.mkdir(exist_ok=True)
        atomic_write(directory / f"{time.time_ns():020d}-{writer}.json", [json_bytes(data)],
                     writer)
    except OSError as exc:
        # A shared read-only cache still serves its vectors: the new paths are bookkeeping
        # for `export` only, so say once that they are not recorded, and go on.
        where = str(store.root.absolute())
        if where not in _UNRECORDED:
            _UNRECORDED.add(where)
            warnings.warn(f"feature store {store.root} cannot be written "
                          f"({exc.strerror or exc}); its vectors are used, but new paths and "
                          "labels of moved files are not recorded (`featclf store export` "
                          "shows the old ones)", StoreNotWritableWarning, stacklevel=3)


def annotate(store: FeatureStore, config: dict | str, about: Mapping[str, str]) -> None:
    """Merge ``about`` into the namespace's ``about.json`` (silently not, when unwritable)."""
    if not isinstance(about, Mapping):
        raise ValueError(f"about must be a mapping of str to str, got {type(about).__name__}")
    new = {str(k): str(v) for k, v in about.items()}
    old = store.about(config)
    merged = {**old, **new}
    if merged == old:
        return  # nothing new: no write (and nothing to fail on a read-only store)
    try:
        directory = store._namespace(config, create=True)
        atomic_write(directory / ABOUT, [json.dumps(dict(sorted(merged.items())),
                                                    indent=1).encode()], new_writer_id())
    except OSError:
        return  # read-only (or full) store: the description is optional, reads still work
