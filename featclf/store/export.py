"""Reading out one configuration's vectors, with digests, paths and labels, to Parquet or NPZ.

The body of :meth:`FeatureStore.export` and ``featclf store export``. Both formats carry the
configuration (as JSON) and its key, so an exported file says how its vectors were made.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from featclf.store._format import atomic_write, new_writer_id, read_samples

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
        if len(keys) != 1:
            raise ValueError(f"{store.root} holds {len(keys)} configurations; pass config= "
                             "(a key or prefix from `featclf store info`)")
        key = keys[0]
    elif isinstance(config, dict):
        key = store.config_key(config)
    else:
        key = store.resolve_config(config)
    digests, paths, labels, vectors = store.entries(key)
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
    """Every vector of a configuration with its digest and last known path and label."""
    index = store._index(config)
    with index.lock:
        stored = index.distinct()
    digests = list(stored)
    found, vectors = store.get(config, digests)
    # Vectors only in a damaged shard (found by get()) are left out.
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
