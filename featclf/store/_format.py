"""The store's bytes on disk: names, atomic writes, shard files and their headers.

Everything that decides what a store directory holds byte for byte lives here (see the design
note in :mod:`featclf.store`): the store and shard format names, the writer ids in file names,
:func:`atomic_write` (temporary name, fsync, :func:`os.replace`), the shard writer
(:func:`write_shard`: the ``.npy`` first, its self-checksummed JSON index second) and the
shard readers and checkers, which compare a shard's size, ``.npy`` header and xxh3-128
checksum against its index.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import io
import itertools
import json
import os
import re
import secrets
import socket
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import xxhash

from featclf.durable import fsync_dir

if TYPE_CHECKING:
    from featclf.store._keys import Shard

STORE_FORMAT = "featclf-store"
STORE_VERSION = 1
SHARD_FORMAT = "featclf-shard"
STORE_META = "featclf-store.json"
# A namespace's description in words (model name, weights): not part of its key, optional.
ABOUT = "about.json"
DTYPES = ("float32", "float16")
# What a store directory may hold besides temporary files.
STORE_ENTRIES = {STORE_META, "configs", "samples", "errors.csv", ".prune.lock"}

SHARD_INDEX = re.compile(r"^shard-.+\.json$")
# A writer id in a file name: host, pid, then a random token (6 hex digits in stores written
# before featclf gave writers 128-bit tokens and a serial number).
_WRITER_IN_NAME = re.compile(r"(?P<host>[A-Za-z0-9]+)-(?P<pid>\d+)-(?P<token>[0-9a-f]{6,})")
# Serial numbers: of the writer ids this process made, and of its temporary files. Both make a
# name unique within the process whatever the random tokens are (next() on a count is atomic).
_WRITER_SERIAL = itertools.count()
_TMP_SERIAL = itertools.count()
# A live writer's temporary file is never removed, however old, unless it is older than this:
# then its pid has been taken by another process (writing one shard takes seconds, not a day).
LIVE_WRITER_SECONDS = 86400.0

# Shards whose checksum this process has computed: (path, inode, size, mtime, ctime) -> the
# checksum. A file written to after the check gets new times (or size, or inode), so it is
# checked again. (The checksum, not "ok": an index read again may expect another one.)
CHECKED: dict[tuple[str, int, int, int, int], str] = {}


class StoreError(ValueError):
    """A store directory cannot be used as asked; the message names it and says what to do."""


class StoreNotWritableWarning(UserWarning):
    """A store that cannot be written served reads; the warning names what went unrecorded."""


class DamagedShard(Exception):
    """A shard that is missing, truncated or fails its checksum (internal)."""


# --------------------------------------------------------------------------------------------
# small file helpers


def host() -> str:
    """This machine's name as file names carry it (letters and digits only)."""
    return re.sub(r"[^A-Za-z0-9]", "", socket.gethostname())[:24] or "host"


def new_writer_id() -> str:
    """``<host>-<pid>-<token>-<serial>``: a name no other writer (process or object) uses.

    The pid separates the processes of a host; within a process, the serial number separates
    writers even if two drew the same 128-bit token. (Shards are also published without ever
    replacing a file, see :func:`atomic_write`, so even a repeated id loses nothing.)

    Examples
    --------
    >>> a, b = new_writer_id(), new_writer_id()
    >>> a != b and a.split("-")[1] == b.split("-")[1] == str(os.getpid())
    True
    """
    return f"{host()}-{os.getpid()}-{secrets.token_hex(16)}-{next(_WRITER_SERIAL)}"



def atomic_write(path: Path, parts: Sequence[bytes | memoryview], tmp_tag: str, *,
                 replace: bool = True, fsync: bool = True) -> None:
    """Write ``parts`` one after the other to ``path`` via a fsynced temporary file.

    The temporary file is ``.tmp-<tmp_tag>-<serial>-<name>``, created exclusively, so two
    writers never share one. With ``replace=False`` the file is published with a hard link,
    which fails instead of replacing a file that has the name already (a shard is never
    replaced: a reader that knows its index must never find other bytes under its name).
    ``fsync=False`` skips the fsync, for files whose readers detect a torn copy themselves.

    Raises
    ------
    FileExistsError
        ``replace=False`` and ``path`` exists; nothing was written under its name.
    OSError
        Writing failed (no space, read-only store...); the message names the file.
    """
    while True:
        tmp = path.with_name(f".tmp-{tmp_tag}-{next(_TMP_SERIAL)}-{path.name}")
        try:
            fh = open(tmp, "xb")
        except FileExistsError:  # a writer elsewhere with the same tag: take the next serial
            continue
        except OSError as exc:
            raise _write_error(path, exc) from exc
        break
    try:
        with fh:
            for part in parts:
                fh.write(part)
            fh.flush()
            if fsync:
                os.fsync(fh.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            _publish_new(tmp, path)
    except BaseException as exc:
        with contextlib.suppress(OSError):
            tmp.unlink()
        if isinstance(exc, OSError) and not isinstance(exc, FileExistsError):
            raise _write_error(path, exc) from exc
        raise


def _write_error(path: Path, exc: OSError) -> OSError:
    # Name the file and say that nothing stored is lost (ENOSPC, EROFS, EACCES...).
    return OSError(exc.errno, f"cannot write {path.name} in {path.parent}: "
                   f"{exc.strerror or exc}. Every vector written before is kept; free "
                   "space or fix permissions and run again to compute the rest")


# Where hard links are not supported (some network and FUSE file systems).
_NO_LINKS = {errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EMLINK,
             errno.ENOSYS}


def _publish_new(tmp: Path, path: Path) -> None:
    """Give the finished file ``tmp`` the name ``path``, never replacing an existing file."""
    try:
        os.link(tmp, path)  # atomic, and fails with EEXIST where os.replace would overwrite
    except FileExistsError:
        raise
    except OSError as exc:
        if exc.errno not in _NO_LINKS:
            raise
        # No hard links: check, then rename. Only a writer with the same id could race here,
        # and ids carry the pid, a serial number and 128 random bits.
        if os.path.lexists(path):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(path)) from None
        os.rename(tmp, path)
        return
    with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def json_bytes(obj: Any) -> bytes:
    """Compact, key-sorted JSON: how indexes and sample files are written (and hashed)."""
    return json.dumps(obj, sort_keys=True, default=str, separators=(",", ":")).encode()


def writer_alive(name: str) -> bool | None:
    """Whether the writer named in a file name runs: True or False for a process of this
    host, None when that cannot be known (another host, or no writer id in the name)."""
    match = _WRITER_IN_NAME.search(name)
    if match is None or match.group("host") != host():
        return None
    pid = int(match.group("pid"))
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: it runs
        return True
    return True


def leftover(name: str, age: float, stale_seconds: float) -> bool:
    """Whether a temporary or unindexed file of this age is a crashed writer's leftover.

    A writer of this host is asked: a dead one's files go at once, a live one's stay (unless
    older than :data:`LIVE_WRITER_SECONDS`, when its pid must belong to another process now).
    The files of writers on other hosts go once ``stale_seconds`` old.
    """
    alive = writer_alive(name)
    if alive is None:
        return age > stale_seconds
    return not alive or age > max(stale_seconds, LIVE_WRITER_SECONDS)


def as_label(value: Any) -> Any:
    """A label as JSON keeps it: numbers, strings and booleans as they are, the rest as text."""
    if value is None:
        return None
    if isinstance(value, np.generic):
        return value.item()
    return value if isinstance(value, int | float | str | bool) else str(value)


def read_samples(root: Path) -> dict[str, tuple[str | None, Any]]:
    """The newest path and label recorded for each digest in ``root/samples`` (oldest first,
    so later files win; a missing value keeps the earlier one)."""
    newer: dict[str, tuple[str | None, Any]] = {}
    directory = root / "samples"
    if not directory.is_dir():
        return newer
    for name in sorted(n for n in os.listdir(directory) if n.endswith(".json")
                       and not n.startswith(".")):
        try:
            data = json.loads((directory / name).read_bytes())
        except (FileNotFoundError, ValueError):
            continue
        labels = data.get("labels") or [None] * len(data["digests"])
        for d, p, lab in zip(data["digests"], data["paths"], labels):
            old = newer.get(d, (None, None))
            newer[d] = (p if p is not None else old[0], lab if lab is not None else old[1])
    return newer


def read_about(directory: Path) -> dict[str, str]:
    """A namespace's ``about.json`` (see :meth:`FeatureStore.annotate`); {} when absent."""
    try:
        data = json.loads((directory / ABOUT).read_bytes())
    except (FileNotFoundError, NotADirectoryError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {str(k): str(v) for k, v in data.items()}


def tree_bytes(path: Path) -> int:
    """Bytes of a file, or of every file under a directory (0 for what vanishes meanwhile:
    writers rename their temporary files at any moment)."""
    total = 0
    for dirpath, _, files in os.walk(path) if os.path.isdir(path) else [("", [], [path])]:
        for name in files:
            with contextlib.suppress(FileNotFoundError):
                total += os.stat(os.path.join(dirpath, name), follow_symlinks=False).st_size
    return total


# --------------------------------------------------------------------------------------------
# shard files


def index_checksum_ok(raw: bytes | None, own: str) -> bool:
    """Check an index's own checksum on its file bytes, without encoding the JSON again.

    featclf writes the index as compact, key-sorted JSON whose checksum covers the same JSON
    without the ``"index_xxh3"`` member, so removing that member's bytes gives back exactly
    what was hashed. False means "not shown here": the caller then re-encodes (an index
    written by other tools, or a damaged one).
    """
    if raw is None:
        return False
    member = f'"index_xxh3":"{own}"'.encode()
    for cut in (member + b",", b"," + member):
        if cut in raw:
            return xxhash.xxh3_128_hexdigest(raw.replace(cut, b"", 1)) == own
    return False


@functools.lru_cache(maxsize=256)
def expected_header(rows: int, dim: int, dtype: str) -> bytes:
    """The ``.npy`` header ``np.save`` writes for a C-ordered shard: reads compare its bytes."""
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": np.lib.format.dtype_to_descr(
        np.dtype(dtype)), "fortran_order": False, "shape": (rows, dim)})
    return buf.getvalue()


def write_shard(directory: Path, next_stem: Callable[[], str], digests: list[str],
                vectors: np.ndarray, paths: list, labels: list | None, writer_id: str) -> str:
    """Write one shard (C-ordered ``vectors`` in the store's dtype), its index, then its key
    index (:mod:`featclf.store._keys`).

    ``next_stem()`` names it (``shard-<writer>-<seq>``); a name already taken is never
    replaced: the next name is tried. Returns the stem the shard got.
    """
    from featclf.store._keys import Shard, digest_keys, file_stat, write_keys

    header = expected_header(*vectors.shape, vectors.dtype.name)
    data = memoryview(vectors).cast("B")
    h = xxhash.xxh3_128()
    h.update(header)
    h.update(data)
    index = {
        "format": SHARD_FORMAT, "version": STORE_VERSION, "rows": len(digests),
        "dim": int(vectors.shape[1]), "dtype": vectors.dtype.name,
        "bytes": len(header) + len(data), "xxh3": h.hexdigest(), "digests": list(digests),
        "paths": None if all(p is None for p in paths) else
        [None if p is None else os.fspath(p) for p in paths],
        "labels": None if labels is None else [as_label(lab) for lab in labels],
        "writer": writer_id, "created": time.time(),
    }
    # The index checksums itself: a damaged or edited index (digests out of order, say) would
    # otherwise pair valid vectors with the wrong samples.
    index["index_xxh3"] = xxhash.xxh3_128_hexdigest(json_bytes(index))
    for _ in range(1000):
        stem = next_stem()
        # The shard first, its index second: a shard without an index is invisible. The
        # directory is fsynced by the caller once per batch of shards (see the design note).
        try:
            atomic_write(directory / f"{stem}.npy", [header, data], writer_id, replace=False)
            # What the shard looks like now, its checksum computed from the bytes it holds:
            # readers that find it so need not hash it again (see _keys).
            verified = file_stat(os.stat(directory / f"{stem}.npy"))
        except FileExistsError:
            continue
        try:
            atomic_write(directory / f"{stem}.json", [json_bytes(index)], writer_id,
                         replace=False)
        except FileExistsError:
            # An index whose shard is gone (a damaged store) holds the name: ours must not
            # pair with it. Give the name back as it was and take the next.
            with contextlib.suppress(FileNotFoundError):
                os.unlink(directory / f"{stem}.npy")
            continue
        shard = Shard(stem, index["rows"], index["dim"], index["dtype"], index["bytes"],
                      index["xxh3"], digest_keys(digests)[0],
                      _json={k: index[k] for k in ("digests", "paths", "labels")})
        # The shard is published and complete; its key index only saves readers the JSON.
        # If it cannot be written (a full disk), readers use the JSON index.
        with contextlib.suppress(OSError):
            write_keys(directory, shard, digests, verified, writer_id)
        return stem
    raise StoreError(f"{directory}: 1000 shard names in a row are taken ({stem}); is another "
                     "process writing under this writer's id?")


def remove_shard(directory: Path, stem: str) -> int:
    """Remove a shard, index first (so it turns invisible before its vectors vanish)."""
    freed = 0
    for suffix in (".json", ".keys", ".npy"):
        path = directory / f"{stem}{suffix}"
        with contextlib.suppress(FileNotFoundError):
            freed += path.stat().st_size
            path.unlink()
    return freed


def check_shard(path: Path, shard: Shard, seen: list | None = None) -> str | None:
    """Why a shard is damaged (missing, size, header, checksum), or None when it is sound.

    ``seen``: the file's ``os.stat_result`` from before its bytes were read is appended (so a
    sound shard's stat is one its checksum holds for).
    """
    expected = expected_header(shard.rows, shard.dim, shard.dtype)
    try:
        with open(path, "rb") as fh:
            st = os.fstat(fh.fileno())
            if seen is not None:
                seen.append(st)
            size = st.st_size
            if size != shard.nbytes:
                return f"{size} bytes, its index says {shard.nbytes}"
            header = fh.read(len(expected))
            h = xxhash.xxh3_128(header)
            while chunk := fh.read(1 << 22):
                h.update(chunk)
    except FileNotFoundError:
        return "file missing"
    if h.hexdigest() != shard.checksum:
        return "checksum mismatch (the file's bytes changed after it was written)"
    if header != expected:
        return "its .npy header does not match its index"
    return None


def load_shard(path: Path, shard: Shard) -> np.ndarray:
    """Every row of a shard in its own dtype, read once and checked against its index.

    Compaction rewrites what it reads; checking those very bytes (not an earlier read of the
    file) means it can never pair the digests of one index with other vectors.

    Raises
    ------
    DamagedShard
        The file is missing, has the wrong size or header, or fails its checksum.
    """
    expected = expected_header(shard.rows, shard.dim, shard.dtype)
    try:
        fh = open(path, "rb")
    except FileNotFoundError:
        raise DamagedShard(f"{path.name}: file missing") from None
    with fh:
        size = os.fstat(fh.fileno()).st_size
        if size != shard.nbytes:
            raise DamagedShard(f"{path.name}: {size} bytes, its index says {shard.nbytes}")
        header = fh.read(len(expected))
        data = np.empty((shard.rows, shard.dim), dtype=shard.dtype)
        raw = memoryview(data).cast("B")
        if header != expected or _readinto(fh, raw) != len(raw):
            raise DamagedShard(f"{path.name}: its .npy header does not match its index")
    h = xxhash.xxh3_128(header)
    h.update(raw)
    if h.hexdigest() != shard.checksum:
        raise DamagedShard(f"{path.name}: checksum mismatch")
    return data


def _readinto(fh, target: memoryview) -> int:
    got = 0
    while got < len(target):
        n = fh.readinto(target[got:])
        if not n:
            break
        got += n
    return got


# --------------------------------------------------------------------------------------------
# the store's own file


def open_store_meta(root: Path, dtype: str | None, *, create: bool) -> str:
    """Read (or create) ``root/featclf-store.json``, check it, and return the store's dtype.

    Raises
    ------
    StoreError
        ``root`` is a file, a foreign non-empty directory, a damaged or newer store, or a
        store of another dtype than ``dtype``.
    FileNotFoundError
        There is no store and ``create`` is False.
    """
    meta_path = root / STORE_META
    if root.exists() and not root.is_dir():
        raise StoreError(f"store={str(root)!r} is a file; pass a directory")
    try:
        meta = json.loads(meta_path.read_bytes())
    except FileNotFoundError:
        meta = None
    except ValueError as exc:
        raise StoreError(f"{meta_path} is damaged ({exc}); it should hold the store's "
                         "format and dtype") from None
    if meta is None:
        if not create:
            raise FileNotFoundError(f"{root} is not a feature store (no {STORE_META})")
        _create_store(root, dtype or "float32")
        meta = json.loads(meta_path.read_bytes())  # another process may have won the race
    if meta.get("format") != STORE_FORMAT:
        raise StoreError(f"{meta_path} is not a featclf store file")
    if int(meta.get("version", 0)) > STORE_VERSION:
        raise StoreError(f"{root} was written by a newer featclf (store version "
                         f"{meta['version']}); upgrade featclf to read it")
    stored = meta.get("dtype", "float32")
    if dtype is not None and dtype != stored:
        raise StoreError(f"{root} stores {stored} vectors, but dtype={dtype!r} was asked for; "
                         f"pass dtype={stored!r} (or None) or use another directory")
    return stored


def _create_store(root: Path, dtype: str) -> None:
    # (open_store_meta refused a root that is not a directory.) A store another process is
    # creating right now holds only its temporary file.
    if root.exists() and any(p.name not in STORE_ENTRIES and not p.name.startswith(".tmp-")
                             for p in root.iterdir()):
        raise StoreError(f"store={str(root)!r} is a non-empty directory that is not a feature "
                         "store; pass a new or empty directory")
    root.mkdir(parents=True, exist_ok=True)
    meta = {"format": STORE_FORMAT, "version": STORE_VERSION, "dtype": dtype}
    # Two processes creating the same store write the same bytes: the rename is harmless.
    atomic_write(root / STORE_META, [json.dumps(meta, indent=1).encode()], new_writer_id())
    fsync_dir(root)
