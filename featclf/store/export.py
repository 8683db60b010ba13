"""Reading out one configuration's vectors, with digests, paths and labels, to Parquet or NPZ.

The body of :meth:`FeatureStore.export` and ``featclf store export``. Both formats carry the
configuration (as JSON) and its key, so an exported file says how its vectors were made.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from featclf.store._format import StoreError, atomic_write, new_writer_id, read_samples

if TYPE_CHECKING:
    from featclf.store import FeatureStore


def export(store: FeatureStore, path: str | os.PathLike, *,
           config: str | dict | None = None) -> Path:
    """Write one configuration's vectors to ``path`` (see :meth:`FeatureStore.export`)."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix not in (".parquet", ".npz"):
        raise ValueError(f"export path {str(path)!r} must end in .parquet or .npz")
    if config is None:
        keys = store.configs()
        if not keys:
            raise StoreError(f"{store.root} holds no configuration: nothing to export")
        if len(keys) > 1:
            # Which one is the caller's to say: a usage error (`--config` under the CLI).
            from featclf.params import InvalidParameterError

            raise InvalidParameterError(
                f"The 'config' parameter of FeatureStore.export must be a configuration key, "
                f"key prefix or dict when the store holds {len(keys)} configurations "
                f"(`featclf store info {store.root}` lists them). Got None instead.")
        key = keys[0]
    elif isinstance(config, dict):
        key = store.config_key(config)
    else:
        key = store.resolve_config(config)
    if key not in store.configs():
        raise StoreError(f"{store.root} holds no configuration {key}; `featclf store info "
                         f"{store.root}` lists them")
    digests, paths, labels, vectors = store.entries(key)
    if not digests:
        # No rows means no vector width either, so there is no schema to write: say so
        # rather than write a file that looks like a successful export.
        raise StoreError(f"configuration {key} of {store.root} holds no vectors: nothing to "
                         "export (`featclf store info` shows what each configuration holds)")
    config_json = json.dumps(store.config(key), sort_keys=True, default=str)
    path.parent.mkdir(parents=True, exist_ok=True)
    if suffix == ".npz":
        buf = io.BytesIO()
        np.savez(buf, digests=np.asarray(digests, dtype=str),
                 paths=np.asarray([p or "" for p in paths], dtype=str),
                 labels=_labels_array(labels), vectors=vectors,
                 config=np.asarray(config_json), config_key=np.asarray(key))
        atomic_write(path, [buf.getbuffer()], new_writer_id())
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
    tmp = path.with_name(f".tmp-{new_writer_id()}-{path.name}")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
    return path


def entries(store: FeatureStore, config: dict | str) -> tuple[list[str], list, list,
                                                             np.ndarray]:
    """Every vector of a configuration with its digest and last known path and label.

    Raises
    ------
    StoreError
        A shard or shard index is damaged and holds vectors no other shard has: the result
        would lack them. The message names the shard.
    """
    index = store._index(config)
    for attempt in range(3):
        try:
            return _entries(store, config, index)
        except FileNotFoundError:
            # A JSON index read for its paths vanished: a prune rewrote its shard meanwhile.
            if attempt == 2:
                raise
            with index.lock:
                index.refresh()
    raise AssertionError("unreachable")


def _entries(store: FeatureStore, config: dict | str, index) -> tuple[list[str], list, list,
                                                                      np.ndarray]:
    with index.lock:
        stored = index.distinct()
        shards = list(index.shards)
        unreadable = dict(index.unreadable)
        for shard in shards:
            if shard.name not in index.damaged:
                shard.paths  # noqa: B018 - read the JSON indexes now, while they are listed
    digests = list(stored)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a damaged shard is reported below, as an error
        found, vectors = store.get(config, digests)
    with index.lock:
        damaged = dict(index.damaged)
    got = {d for d, ok in zip(digests, found) if ok}
    lost = {}  # damaged shard -> (reason, vectors no sound shard has)
    for shard in shards:
        if shard.name in damaged:
            only_here = {d for d in shard.digests if d not in got}
            if only_here:
                lost[f"{shard.name}.npy"] = (damaged[shard.name], len(only_here))
    for name, reason in unreadable.items():
        lost[name] = (reason, None)
    if lost:
        where = store.root / "configs" / store.config_key(config)
        named = "; ".join(f"{where / name}: {reason}" + ("" if n is None else
                                                         f" ({n} vectors only there)")
                          for name, (reason, n) in sorted(lost.items()))
        raise StoreError(f"damaged shard(s) in {store.root}: {named}. Their vectors cannot be "
                         "read, so they would be missing; `featclf store prune` removes "
                         "damaged shards and the next extract recomputes their vectors")
    digests = [d for d, ok in zip(digests, found) if ok]
    newer = read_samples(store.root)
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


def _all_int(values: list) -> bool:
    return bool(values) and all(isinstance(v, int) and not isinstance(v, bool) for v in values)


def _labels_array(labels: list) -> np.ndarray:
    if _all_int(labels):
        return np.asarray(labels, dtype=np.int64)
    return np.asarray(["" if lab is None else str(lab) for lab in labels], dtype=str)
