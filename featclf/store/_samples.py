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

if TYPE_CHECKING:
    from featclf.store import FeatureStore

# Stores this process could not record sample paths in (each is warned about once).
_UNRECORDED: set[str] = set()


def stale_samples(store: FeatureStore, config: dict | str, digests: Sequence[str | None],
                  paths: Sequence[str | None], *, labels: Sequence | None = None) -> np.ndarray:
    """Which stored samples the shards of ``config`` know by another path (or label)."""
    index = store._index(config)
    with index.lock:
        rows = index.find(digests)
        held = np.flatnonzero(rows >= 0)  # (a prune may run meanwhile: look them up once)
        located = index.locate(rows[held])
    stale = np.zeros(len(digests), dtype=bool)
    for i, (shard, r) in zip(held.tolist(), located):
        try:  # (paths and labels are in the JSON index, read now if not yet)
            old_path = shard.paths[r] if shard.paths else None
            old_label = shard.labels[r] if shard.labels else None
        except (OSError, ValueError):
            stale[i] = True  # a prune rewrote the shard meanwhile: record the path again
            continue
        new_label = labels is not None and as_label(labels[i]) != old_label
        stale[i] = paths[i] != old_path or new_label
    return stale


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
