"""The namespace key index: every shard's key index in one file, ``shards.keys``.

Opening a namespace of 1,000 shards reads one file instead of 1,000: ``prune`` writes it, and
so does a writer of many shards (see :func:`~featclf.store._index.describe_namespace`). It is
a ``.npy`` file of little-endian uint64 pairs::

    [0] magic ("fclfnskv"), version      [1] shards, rows of keys in all
    [2] xxh3-64 of every byte before the first key, this one 0 (version 3)
    then per shard, 19 rows: its stem (8 rows, NUL-padded), then rows 1-11 of its own key
    index's layout (:mod:`featclf.store._keys`)
    then the keys of every shard, one after the other
    [-1] xxh3-64 of every byte before it

Version 3 is opened by its records alone, checked by row 2; the keys (16 bytes per vector)
are read, and the whole file checked, when a look-up first needs one of them. Versions 1 and
2 (no row 2; version 1 had 16 rows per shard, without the text hashes) are read whole.
Each record is used only for a shard whose JSON index still has the recorded stat (the
caller checks, as for a shard's own key index); records of shards removed since are simply
never asked for.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import xxhash

from featclf.store._format import DTYPES, atomic_write, expected_header
from featclf.store._keys import (
    _HEX_FLAG,
    _KEYS_VERSION,
    _NPY_HEAD,
    Shard,
    _flags,
    _hash_rows,
    _head_sum,
    _pread_all,
    _read_hashes,
    _whole_sum_ok,
    read_as_opened,
)

NAMESPACE_KEYS = "shards.keys"
_NS_MAGIC = int.from_bytes(b"fclfnskv", "little")
_NS_RECORDS = {1: 16, 2: 19, 3: 19}  # rows per shard
_NS_TOP = {1: 2, 2: 2, 3: 3}  # rows before the first record
_NS_RECORD = _NS_RECORDS[_KEYS_VERSION]
_STEM_BYTES = 128


def namespace_keys_bytes(shards: Sequence[Shard]) -> bytes:
    """The bytes of a namespace key index over ``shards`` (each read from its key index)."""
    n, total, top = len(shards), sum(s.rows for s in shards), _NS_TOP[_KEYS_VERSION]
    table = np.zeros((top + _NS_RECORD * n + total + 1, 2), dtype="<u8")
    table[0] = (_NS_MAGIC, _KEYS_VERSION)
    table[1] = (n, total)
    at = top + _NS_RECORD * n
    for i, shard in enumerate(shards):
        stem = shard.name.encode()
        if len(stem) > _STEM_BYTES:
            raise ValueError(f"shard name {shard.name!r} is longer than {_STEM_BYTES} bytes")
        record = table[top + _NS_RECORD * i:top + _NS_RECORD * (i + 1)]
        record[:8] = np.frombuffer(stem.ljust(_STEM_BYTES, b"\0"), "<u8").reshape(8, 2)
        record[8] = (shard.rows, shard.dim)
        record[9] = (DTYPES.index(shard.dtype), shard.nbytes)
        record[10] = np.frombuffer(bytes.fromhex(shard.checksum), "<u8")
        record[11:13] = np.reshape(shard.verified or (0, 0, 0, 0), (2, 2))
        record[13:15] = np.reshape(shard.index_stat, (2, 2))
        record[15] = (_flags(shard.hex_keys, shard.text_hashes), 0)
        record[16:19] = _hash_rows(shard.text_hashes)
        table[at:at + shard.rows] = shard.keys
        at += shard.rows
    header = expected_header(len(table), 2, "uint64")
    records_end = top + _NS_RECORD * n
    table[2, 0] = _head_sum(header + table[:records_end].tobytes(), len(header) + 32)
    body = header + table[:-1].tobytes()
    return body + np.array([xxhash.xxh3_64_intdigest(body), 0], "<u8").tobytes()


def write_namespace_keys(directory: Path, shards: Sequence[Shard], tmp_tag: str) -> None:
    """Replace the namespace key index by one over ``shards`` (not fsynced: see
    :func:`~featclf.store._keys.write_keys`)."""
    atomic_write(directory / NAMESPACE_KEYS, [namespace_keys_bytes(shards)], tmp_tag,
                 fsync=False)


class _TableLater:
    """The keys of a namespace key index opened by its records: the whole file, read once
    when a shard first needs its keys; it must hold its own checksum and still begin with
    the records that were opened (else each shard reads its own key index, or JSON)."""

    def __init__(self, path: str, head: bytes, size: int, keys_at: int) -> None:
        self.path, self.head, self.size, self.keys_at = path, head, size, keys_at
        self.lock = threading.Lock()
        self.table: np.ndarray | None = None

    def rows(self, at: int, rows: int) -> np.ndarray:
        with self.lock:
            if self.table is None:
                raw = read_as_opened(self.path, self.size, self.head, NAMESPACE_KEYS)
                self.table = np.frombuffer(raw, "<u8", offset=self.keys_at).reshape(-1, 2)
        return self.table[at:at + rows]


def read_namespace_keys(directory: Path) -> dict[str, Shard]:
    """The shards a namespace key index describes, by stem ({} when it is missing or unsound)."""
    path = os.path.join(directory, NAMESPACE_KEYS)
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except (FileNotFoundError, NotADirectoryError):
        return {}
    head = _NPY_HEAD
    try:
        size = os.fstat(fd).st_size
        pre = os.pread(fd, head + 48, 0)
        if len(pre) < head + 48 or (size - head) % 16:
            return {}
        magic, version, n, total = np.frombuffer(pre, "<u8", count=4, offset=head).tolist()
        size_of, top = _NS_RECORDS.get(version, 0), _NS_TOP.get(version, 0)
        records_end = head + 16 * (top + size_of * n)
        if magic != _NS_MAGIC or not size_of or \
                head + 16 * (top + size_of * n + total + 1) != size:
            return {}
        raw = os.pread(fd, records_end, 0) if version >= 3 else _pread_all(fd, size)
    finally:
        os.close(fd)
    n_table = (size - head) // 16
    if n_table != top + size_of * n + total + 1 or len(raw) < records_end or \
            raw[:head] != expected_header(n_table, 2, "uint64"):
        return {}
    if version >= 3:
        if _head_sum(raw, head + 32) != int.from_bytes(raw[head + 32:head + 40], "little"):
            return {}
        later = _TableLater(path, bytes(raw), size, records_end)
    elif not _whole_sum_ok(raw):
        return {}
    records = np.frombuffer(raw, "<u8", count=2 * size_of * n,
                            offset=head + 16 * top).reshape(n, size_of * 2).tolist()
    table = np.frombuffer(raw, "<u8", offset=records_end).reshape(-1, 2) \
        if version < 3 else None
    out: dict[str, Shard] = {}
    at = 0
    for i, record in enumerate(records):
        rows, dim, code, nbytes = record[16:20]
        if code >= len(DTYPES):
            return {}
        flags = record[30] if version > 1 else record[30] & _HEX_FLAG
        start = head + 16 * (top + size_of * i)  # the record's first byte in the file
        name = raw[start:start + _STEM_BYTES].rstrip(b"\0").decode()
        checksum = raw[start + 160:start + 176].hex()
        verified = tuple(record[22:26])
        keys = table[at:at + rows] if table is not None else None
        load = None if table is not None else \
            (lambda later=later, at=at, rows=rows: later.rows(at, rows))
        out[name] = Shard(name, rows, dim, DTYPES[code], nbytes, checksum, keys, directory,
                          "keys", verified if any(verified) else None, tuple(record[26:30]),
                          bool(flags & _HEX_FLAG),
                          text_hashes=_read_hashes(raw, start + 16 * 16, flags),
                          load_keys=load)
        at += rows
    return out
