"""The key indexes: fixed-width binary twins of the shards' JSON indexes.

The key index
-------------
Parsing JSON costs more than reading the vectors it indexes (20k digests: ~4 ms of JSON
against ~2 ms for ``np.load`` of 20k x 84 floats), so reads use a fixed-width binary twin of
each JSON index: ``<stem>.keys``, a ``.npy`` file (``np.load`` reads it) of ``(rows + 10, 2)``
little-endian uint64::

    [0] magic, version        [1] rows, dim             [2] dtype code, shard bytes
    [3] the shard's xxh3-128  [4, 5] the shard file's (inode, size), (mtime_ns, ctime_ns)
    [6, 7] the same for the JSON index                  [8] flags (1: digests are lowercase
    [9] xxh3-128 of the digests as text (digests_hash)      32-hex, the keys' own hex; 2, 4,
    [10], [11] the same of the paths, the labels            8: rows 9, 10, 11 are recorded),
    [12 : 12 + rows] the digests' 128-bit keys, in row      and xxh3-64 of the head: every
                     order                                  byte before row 12, this one 0
    [-1] xxh3-64 of every byte before it

(Version 1, still read, had no rows 9-11; version 2 no head checksum.) The text hashes let a
rerun, whose digests and paths are the stored ones in the stored order, be recognised without
converting a string to a key or parsing a JSON index: see :func:`digests_hash`. The head
checksum lets a reader open a shard from its head alone (rows 0-11): its keys are read, and
the whole file checked, only when a look-up needs them (a rerun does not), so opening a
namespace of a million vectors reads a few hundred bytes per shard, not 16 MB.

It is written after the JSON index (and not fsynced: a torn one fails its own checksum). A
reader trusts it only when its own checksum holds and the JSON index still has the inode,
size and times recorded in it: a JSON index replaced or edited after the key index was written
(a repair, another tool, a damaged file) is read as JSON, and checked as JSON. Anything else
(missing, torn, another version) falls back to the JSON index too; ``verify`` lists those
shards and ``prune`` writes their key index (old stores are upgraded that way).

The shard's (inode, size, mtime_ns, ctime_ns) are what the writer saw right after it
published the shard, whose checksum it computed from the very bytes it wrote. A reader that
finds the shard with the same four values knows the file has not been written to since (any
write moves mtime and ctime, which no process can set back), so it does not hash the shard
again: a hit costs reading the vectors, as ``np.load`` does. A shard whose values differ (a
copied or restored store, a rewritten file) is hashed on its first read in each process, as
before, and :meth:`~featclf.store.FeatureStore.verify` always hashes every shard.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import xxhash

from featclf.store._format import (
    DTYPES,
    SHARD_FORMAT,
    as_label,
    atomic_write,
    expected_header,
    index_checksum_ok,
    json_bytes,
)


def digest_keys(digests: Sequence[str | None]) -> tuple[np.ndarray, np.ndarray | None]:
    """Digests as ``(n, 2)`` uint64 keys, and which are None (None: no digest is None).

    featclf's digests are 32 hex characters (128-bit xxh3) and are converted in one C call;
    any other string is hashed to 128 bits first.

    Examples
    --------
    >>> keys, missing = digest_keys(["628ff615236b886756b64ed400b01c76", None])
    >>> keys.shape, missing.tolist()
    ((2, 2), [False, True])
    >>> digest_keys(keys)[0] is keys  # keys already: as they are
    True
    """
    if isinstance(digests, np.ndarray) and digests.dtype == np.dtype("<u8") and \
            digests.ndim == 2 and digests.shape[1] == 2:
        return np.ascontiguousarray(digests), None
    n = len(digests)
    keys = _hex_keys(digests) if n else None
    if keys is not None:
        return keys, None
    raw = bytearray(16 * n)
    missing = np.zeros(n, dtype=bool)
    for i, d in enumerate(digests):
        if d is None:
            missing[i] = True
            continue
        try:
            key = bytes.fromhex(d) if len(d) == 32 and d.isascii() else b""
        except ValueError:
            key = b""
        raw[16 * i:16 * i + 16] = key or xxhash.xxh3_128_digest(b"featclf-key:" + d.encode())
    return np.frombuffer(bytes(raw), "<u8").reshape(n, 2), missing


def _hex_keys(digests: Sequence[str | None], step: int = 1 << 15) -> np.ndarray | None:
    """The keys of 32-hex digests, in C calls on chunks of them; None when one is not such.

    Joined with spaces, which bytes.fromhex skips: a space every 33rd character (a strided
    slice, in C) proves every digest is 32 characters long, without a Python-level pass over
    them. Chunks of 32k digests keep the joined text in the CPU's cache and reuse its memory
    (a million digests at once: 33 MB of fresh pages, about 25% slower).
    """
    n = len(digests)
    out = np.empty((n, 2), dtype="<u8")
    flat = out.reshape(-1).view(np.uint8)
    try:
        for start in range(0, n, step):
            part = digests[start:start + step]
            k = len(part)
            text = " ".join(part)  # TypeError when some digest is None (or not a str)
            if len(text) != 33 * k - 1 or text[32::33] != " " * (k - 1):
                return None
            raw = bytes.fromhex(text)  # ValueError when not all hex
            if len(raw) != 16 * k:  # a space inside a digest would shorten it
                return None
            flat[16 * start:16 * (start + k)] = np.frombuffer(raw, np.uint8)
    except (TypeError, ValueError):
        return None  # None, not ASCII or not all hex: the caller's general path
    return out


def hex_digests(keys: np.ndarray) -> list[str]:
    """The lowercase 32-hex digests whose keys are ``keys`` (the inverse of :func:`digest_keys`
    for such digests).

    Examples
    --------
    >>> d = ["628ff615236b886756b64ed400b01c76", "00" * 16]
    >>> hex_digests(digest_keys(d)[0]) == d
    True
    """
    text = np.ascontiguousarray(keys, dtype="<u8").tobytes().hex()
    return [text[i:i + 32] for i in range(0, len(text), 32)]


# The key index: magic ("fclfkeys"), format version, rows of header before the keys (per
# version: version 1 had no text hashes; it is still read).
KEYS_SUFFIX = ".keys"
_KEYS_MAGIC = int.from_bytes(b"fclfkeys", "little")
_KEYS_VERSION = 3
_KEYS_HEADS = {1: 9, 2: 12, 3: 12}
_KEYS_HEAD = _KEYS_HEADS[_KEYS_VERSION]
_NPY_HEAD = 128  # np.save's header of a 2-column uint64 array below 10**20 rows
_HEAD_SUM_AT = _NPY_HEAD + 16 * 8 + 8  # the head checksum's 8 bytes (row 8, second column)
# Flags: digests are the keys' lowercase hex; which text hashes (rows 9-11) are recorded.
_HEX_FLAG, _DIGESTS_HASH, _PATHS_HASH, _LABELS_HASH = 1, 2, 4, 8


def digests_hash(digests: Sequence[str]) -> bytes | None:
    """xxh3-128 of the digests joined by spaces (None when one is not a str).

    A shard records it for its digests (which are 32-hex: no spaces), so a query whose rows
    are the shard's digests in order is recognised by hashing its text, one C pass over the
    strings, without converting them to keys. Equal hashes of equally many strings mean equal lists:
    the stored text has exactly ``rows - 1`` spaces, so no queried string holds one, and
    cutting both texts at their spaces gives the same strings. (The store already trusts
    128-bit xxh3 to name content: the digests themselves are such hashes.)

    Examples
    --------
    >>> digests_hash(["ab", "cd"]) == digests_hash(["ab", "cd"]) != digests_hash(["a", "bcd"])
    True
    >>> digests_hash(["ab", None]) is None
    True
    """
    h = xxhash.xxh3_128()
    step = 1024  # (the text of 1024 digests at a time stays in the CPU's cache)
    try:
        for start in range(0, len(digests), step):
            if start:
                h.update(b" ")
            h.update(" ".join(digests[start:start + step]).encode("utf-8", "surrogatepass"))
    except TypeError:
        return None
    return h.digest()


def paths_hash(paths: Sequence[str | None]) -> bytes | None:
    """xxh3-128 of paths joined by NUL (None when one is None or holds a NUL: then two lists
    could join to the same text)."""
    try:
        text = "\0".join(paths)
    except TypeError:
        return None
    if text.count("\0") != max(len(paths) - 1, 0):
        return None
    return xxhash.xxh3_128_digest(text.encode("utf-8", "surrogatepass"))


def labels_hash(labels: Sequence | np.ndarray) -> bytes:
    """xxh3-128 of labels as the JSON index writes them (:func:`~featclf.store._format.as_label`).

    Examples
    --------
    >>> labels_hash(np.array([3, 5])) == labels_hash([3, np.int64(5)]) != labels_hash([3, "5"])
    True
    """
    if isinstance(labels, np.ndarray) and labels.dtype.kind in "biufU":
        values = labels.tolist()  # (Python scalars: what as_label gives, without a loop)
    else:
        values = [as_label(lab) for lab in labels]
    return xxhash.xxh3_128_digest(json_bytes(values))


def file_stat(st: os.stat_result) -> tuple[int, int, int, int]:
    """What says a file is unchanged since it was looked at: (inode, size, mtime_ns, ctime_ns)."""
    return (st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns)


@dataclass
class Shard:
    """What a shard's index says about it (``keys``: the digests as 128-bit numbers).

    ``digests``, ``paths`` and ``labels`` come from the JSON index, which is read only when
    they are asked for (lookups need ``keys`` alone); ``keys`` themselves are read when first
    asked for, from a key index opened by its head (``load_keys``). ``source`` says which
    index the shard was read from (``"keys"`` or ``"json"``). ``verified``: the shard file's
    :func:`file_stat` right after its checksum was computed from its bytes (None: unknown).
    """

    name: str  # file stem, "shard-<writer>-<seq>"
    rows: int
    dim: int
    dtype: str
    nbytes: int
    checksum: str
    loaded_keys: np.ndarray | None  # (rows, 2) uint64; None: not read yet (see ``keys``)
    directory: str | Path | None = None
    source: str = "json"
    verified: tuple[int, int, int, int] | None = None
    index_stat: tuple[int, int, int, int] | None = None
    hex_keys: bool = False  # digests are the lowercase hex of keys
    fallback: str | None = None  # why the JSON index was read (None: the key index was)
    described: bool = False  # read from the namespace key index
    # xxh3-128 of the digests, the paths and the labels as text (see digests_hash): None when
    # not recorded (an older key index, or no paths / labels)
    text_hashes: tuple[bytes | None, bytes | None, bytes | None] = (None, None, None)
    _json: dict | None = field(default=None, repr=False)
    # reads the keys from the key index the record came from (ValueError when it cannot)
    load_keys: Callable[[], np.ndarray] | None = field(default=None, repr=False)

    @property
    def keys(self) -> np.ndarray:
        """The digests' ``(rows, 2)`` uint64 keys, in row order (read when first asked for).

        A key index whose keys turn out unreadable (torn or damaged past its head) gives way
        to the JSON index, as at opening (``fallback`` says why).

        Raises
        ------
        ValueError
            Neither index gives this shard's keys.
        FileNotFoundError
            The shard's indexes are gone (a prune removed or rewrote it meanwhile).
        """
        if self.loaded_keys is None:
            self.loaded_keys = self._read_keys()
        return self.loaded_keys

    def _read_keys(self) -> np.ndarray:
        try:
            if self.load_keys is None:
                raise ValueError("no key index to read them from")
            keys = self.load_keys()
            if keys.shape != (self.rows, 2):
                raise ValueError("its keys do not match its rows")
            return keys
        except (OSError, ValueError) as exc:
            why = f"{self.name}{KEYS_SUFFIX}: {exc}"
        path = Path(self.directory or ".", f"{self.name}.json")
        try:
            raw = path.read_bytes()
            shard = Shard.from_index(json.loads(raw), self.name, raw)
        except FileNotFoundError:
            raise  # (the shard is gone: a prune rewrote it since the record was read)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{why}; {path.name}: unreadable ({exc})") from None
        if shard._meta() != self._meta():
            raise ValueError(f"{why}; {path.name} describes another shard")
        self._json, self.fallback, self.source = shard._json, why, "json"
        return shard.keys

    @classmethod
    def from_index(cls, data: dict, stem: str, raw: bytes | None = None,
                   directory: Path | None = None) -> Shard:
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
        if str(data["dtype"]) not in DTYPES:
            raise ValueError(f"dtype {data['dtype']!r} is not one of {DTYPES}")
        return cls(stem, rows, int(data["dim"]), str(data["dtype"]), int(data["bytes"]),
                   str(data["xxh3"]), keys, directory, "json",
                   _json={"digests": digests, "paths": paths, "labels": labels})

    def _meta(self) -> tuple:
        return (self.rows, self.dim, self.dtype, self.nbytes, self.checksum)

    def _index_data(self) -> dict:
        if self._json is None:
            path = Path(self.directory, f"{self.name}.json")
            raw = path.read_bytes()
            shard = Shard.from_index(json.loads(raw), self.name, raw)
            if not self.same_as(shard):
                raise ValueError(f"{path.name}: the JSON index and its key index "
                                 f"({self.name}{KEYS_SUFFIX}) disagree")
            self._json = shard._json
        return self._json

    @property
    def digests(self) -> list[str]:
        """The sample digests, one per row."""
        if self._json is None and self.hex_keys:
            return hex_digests(self.keys)
        return self._index_data()["digests"]

    @property
    def paths(self) -> list[str | None] | None:
        """The samples' paths when the shard was written (None: none was given)."""
        return self._index_data()["paths"]

    @property
    def labels(self) -> list[Any] | None:
        """The samples' labels when the shard was written (None: none was given)."""
        return self._index_data()["labels"]

    def same_as(self, other: Shard) -> bool:
        """Whether two records describe the same shard: sizes, checksum and every key."""
        return self._meta() == other._meta() and np.array_equal(self.keys, other.keys)


def _text_hashes(shard: Shard, digests: Sequence[str], hex_keys: bool
                 ) -> tuple[bytes | None, bytes | None, bytes | None]:
    """The text hashes a key index records: of the digests (when they are 32-hex), and of the
    paths and labels when the JSON index's are at hand (a shard just written or read as
    JSON; nothing is parsed for them)."""
    data = shard._json or {}
    paths, labels = data.get("paths"), data.get("labels")
    return (digests_hash(digests) if hex_keys else None,
            paths_hash(paths) if paths is not None else None,
            labels_hash(labels) if labels is not None else None)


def _flags(hex_keys: bool, hashes: tuple) -> int:
    return (_HEX_FLAG if hex_keys else 0) | sum(
        bit for bit, h in zip((_DIGESTS_HASH, _PATHS_HASH, _LABELS_HASH), hashes) if h)


def _hash_rows(hashes: tuple) -> np.ndarray:
    return np.frombuffer(b"".join(h or bytes(16) for h in hashes), "<u8").reshape(3, 2)


def _read_hashes(raw: bytes | memoryview, at: int, flags: int
                 ) -> tuple[bytes | None, bytes | None, bytes | None]:
    """The text hashes recorded from byte ``at`` on (as ``flags`` says which are)."""
    return tuple(bytes(raw[at + 16 * i:at + 16 * i + 16]) if flags & bit else None
                 for i, bit in enumerate((_DIGESTS_HASH, _PATHS_HASH, _LABELS_HASH)))


def keys_bytes(shard: Shard, digests: Sequence[str], index_stat: tuple[int, int, int, int],
               verified: tuple[int, int, int, int] | None) -> bytes:
    """The bytes of a shard's key index (see the module docstring for the layout)."""
    table = np.zeros((shard.rows + _KEYS_HEAD + 1, 2), dtype="<u8")
    hex_keys = bool(shard.rows) and "".join(hex_digests(shard.keys)) == "".join(digests)
    table[0] = (_KEYS_MAGIC, _KEYS_VERSION)
    table[1] = (shard.rows, shard.dim)
    table[2] = (DTYPES.index(shard.dtype), shard.nbytes)
    table[3] = np.frombuffer(bytes.fromhex(shard.checksum), "<u8")
    table[4:6] = np.reshape(verified or (0, 0, 0, 0), (2, 2))
    table[6:8] = np.reshape(index_stat, (2, 2))
    hashes = _text_hashes(shard, digests, hex_keys)
    table[8] = (_flags(hex_keys, hashes), 0)
    table[9:12] = _hash_rows(hashes)
    table[_KEYS_HEAD:-1] = shard.keys
    header = expected_header(len(table), 2, "uint64")
    table[8, 1] = _head_sum(header + table[:_KEYS_HEAD].tobytes())
    body = header + table[:-1].tobytes()
    return body + np.array([xxhash.xxh3_64_intdigest(body), 0], "<u8").tobytes()


def _head_sum(head: bytes | bytearray, at: int = _HEAD_SUM_AT) -> int:
    """xxh3-64 of a key index's head with its own 8 bytes (from ``at``) taken as zeros (also
    the records' checksum of a namespace key index)."""
    h = xxhash.xxh3_64()
    h.update(memoryview(head)[:at])
    h.update(bytes(8))
    h.update(memoryview(head)[at + 8:])
    return h.intdigest()


def write_keys(directory: Path, shard: Shard, digests: Sequence[str],
               verified: tuple[int, int, int, int] | None, tmp_tag: str) -> None:
    """Write (or replace) the key index of a shard whose JSON index is on disk.

    Not fsynced: after a power loss a torn key index fails its own checksum and readers use
    the JSON index, so durability would buy nothing for the cost of one more fsync per shard.
    """
    index_stat = file_stat(os.stat(directory / f"{shard.name}.json"))
    atomic_write(directory / f"{shard.name}{KEYS_SUFFIX}",
                 [keys_bytes(shard, digests, index_stat, verified)], tmp_tag, fsync=False)


def read_keys(directory: str | Path, stem: str, index_stat: tuple[int, int, int, int], *,
              whole: bool = False) -> Shard:
    """A shard's record from its key index: from its head alone (the keys are read when
    first asked for), or the whole file at once for ``whole`` or an index before version 3.

    Raises
    ------
    ValueError
        The key index is missing, torn, of another version, or older than its JSON index
        (the message says which): the caller reads the JSON index instead.
    """
    # (str paths and file descriptors: opening a store of 1,000 shards opens 1,000 of them.)
    path = f"{os.fspath(directory)}/{stem}{KEYS_SUFFIX}"
    head_len = _NPY_HEAD + 16 * _KEYS_HEAD
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
    except FileNotFoundError:
        raise ValueError("no key index") from None
    try:
        size = os.fstat(fd).st_size
        raw = os.pread(fd, head_len, 0)
        version = int.from_bytes(raw[_NPY_HEAD + 8:_NPY_HEAD + 16], "little") \
            if len(raw) >= _NPY_HEAD + 16 else 0
        if whole or version < 3:
            raw = _pread_all(fd, size)
    finally:
        os.close(fd)
    if size < _NPY_HEAD + 16 * (_KEYS_HEADS[1] + 1) or (size - _NPY_HEAD) % 16 or \
            len(raw) < min(size, head_len):
        raise ValueError(f"key index of {size} bytes (torn)")
    top = np.frombuffer(raw, "<u8", count=2 * _KEYS_HEADS[1], offset=_NPY_HEAD).tolist()
    if top[0] != _KEYS_MAGIC or top[1] not in _KEYS_HEADS:
        raise ValueError("not a key index of this featclf version")
    rows, dim, n_head = top[2], top[3], _KEYS_HEADS[top[1]]
    n_table = (size - _NPY_HEAD) // 16
    if n_table != rows + n_head + 1:
        raise ValueError(f"key index of {size} bytes (torn)")
    if raw[:_NPY_HEAD] != expected_header(n_table, 2, "uint64") or \
            (len(raw) == size and not _whole_sum_ok(raw)) or \
            (top[1] >= 3 and _head_sum(raw[:head_len]) != top[17]):
        raise ValueError("key index fails its own checksum (torn or damaged)")
    if tuple(top[12:16]) != index_stat:
        raise ValueError("the JSON index changed after its key index was written")
    if top[4] >= len(DTYPES):
        raise ValueError(f"unknown dtype code {top[4]}")
    verified = tuple(top[8:12])
    keys, load = None, None
    if len(raw) == size:
        keys = np.frombuffer(raw, "<u8", count=2 * rows,
                             offset=_NPY_HEAD + 16 * n_head).reshape(rows, 2)
    else:
        load = _KeysLater(path, bytes(raw[:head_len]), size, rows).read
    flags = top[16] if top[1] > 1 else top[16] & _HEX_FLAG
    return Shard(stem, rows, dim, DTYPES[top[4]], top[5],
                 raw[_NPY_HEAD + 48:_NPY_HEAD + 64].hex(), keys, directory, "keys",
                 verified if any(verified) else None, index_stat, bool(flags & _HEX_FLAG),
                 text_hashes=_read_hashes(raw, _NPY_HEAD + 16 * 9, flags), load_keys=load)


def _pread_all(fd: int, size: int) -> bytes:
    """The first ``size`` bytes of ``fd`` (fewer when the file is shorter now)."""
    parts, at = [], 0
    while at < size:
        part = os.pread(fd, size - at, at)
        if not part:
            break
        parts.append(part)
        at += len(part)
    return parts[0] if len(parts) == 1 else b"".join(parts)


def _whole_sum_ok(raw: bytes) -> bool:
    """Whether a key index (or a namespace key index) holds its own checksum: xxh3-64 of
    every byte before its last row, in that row."""
    return xxhash.xxh3_64_intdigest(memoryview(raw)[:-16]) == \
        int.from_bytes(raw[-16:-8], "little")


def read_as_opened(path: str, size: int, head: bytes, what: str) -> bytes:
    """The whole of a key index opened by its ``head`` earlier: it must hold its own checksum
    and still begin with that head (ValueError naming ``what`` otherwise)."""
    with open(path, "rb", buffering=0) as fh:
        raw = fh.read()
    if len(raw) != size or not _whole_sum_ok(raw):
        raise ValueError(f"{what} fails its own checksum (torn or damaged)")
    if raw[:len(head)] != head:
        raise ValueError(f"{what} was replaced after it was opened")
    return raw


@dataclass
class _KeysLater:
    """Reads the keys of a key index opened by its head (:func:`read_as_opened`)."""

    path: str
    head: bytes
    size: int
    rows: int

    def read(self) -> np.ndarray:
        raw = read_as_opened(self.path, self.size, self.head, "key index")
        return np.frombuffer(raw, "<u8", count=2 * self.rows,
                             offset=len(self.head)).reshape(self.rows, 2)


def read_shard(directory: str | Path, name: str, st: os.stat_result | None = None, *,
               use_keys: bool = True) -> Shard:
    """The record of the shard whose JSON index is ``name``: from its key index when that is
    sound and current, else from the JSON index (``fallback`` on the record says why).

    Raises
    ------
    FileNotFoundError
        The JSON index vanished (a prune rewrote the shard).
    ValueError, KeyError, TypeError
        The JSON index is unreadable.
    """
    stem = name[:-5]
    try:
        index_stat = file_stat(st if st is not None else os.stat(os.path.join(directory, name)))
        if use_keys:
            return read_keys(directory, stem, index_stat)
        why = "the key index disagrees with the JSON index"
    except ValueError as exc:
        why = str(exc)
    raw = Path(directory, name).read_bytes()
    shard = Shard.from_index(json.loads(raw), stem, raw, Path(directory))
    shard.fallback = why
    return shard
