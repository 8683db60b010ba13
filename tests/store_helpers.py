"""Helpers the store tests import by name (``from store_helpers import digests_of``)."""

from __future__ import annotations

import xxhash

from featclf.store import _format, _index


def digests_of(n: int, offset: int = 0) -> list[str]:
    """``n`` content digests as featclf writes them (32-hex xxh3-128), from ``offset`` on."""
    return [xxhash.xxh3_128_hexdigest(f"sample {i}".encode()) for i in range(offset, offset + n)]


def as_in_a_new_process() -> None:
    """Forget which shards this process hashed and which indexes it read."""
    _format.CHECKED.clear()
    _index.INDEXES.clear()
