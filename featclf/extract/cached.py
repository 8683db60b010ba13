"""The one extraction loop, with or without a feature store, and its one result type.

``DeepFeatureExtractor.extract``, ``featclf extract`` and the Ray actors all call
:func:`cached_features`; the store itself (:mod:`featclf.store`) knows only configurations,
digests, vectors and sample metadata. This module is where images meet the store: it looks
the inputs up (image files by ``os.stat`` in the store's stat record, :mod:`featclf.store._stat`,
so unchanged files are never opened; arrays by the hash of their pixels), reads what the store
holds, runs the network on the rest only, writes what it computed, records moved files,
applies the ``on_error`` policy, and writes the error manifest of unreadable images.

Image files are read once each: the bytes a DataLoader worker reads are hashed there and
decoded there (:meth:`FileSource.reading <featclf.data.sources.FileSource.reading>`), so the
digest a vector is stored under is always that of the bytes its pixels came from, even when
another program rewrites the file during the job. A file whose digest turns out to be in the
store (a moved or copied file) or to be that of another input of the job (a byte-identical
copy) is left out of the batch before the forward.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import io
import os
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from featclf.data.decode import ImageDecodeError
from featclf.data.sources import FileSource, ImageSource, InputError
from featclf.errors import option
from featclf.params import StrOptions, check_params
from featclf.progress import progress_bar
from featclf.store import FeatureStore, StoreError
from featclf.store._format import atomic_write, new_writer_id
from featclf.store._stat import StatRecord

__all__ = ["ComputeFn", "FeatureExtraction", "cached_features", "write_error_manifest"]

#: ``compute(source)`` yields ``(indices into source, {block: (k, d_block) vectors}, errors)``.
ComputeFn = Callable[[ImageSource], Iterator[tuple[np.ndarray, Mapping[str, np.ndarray],
                                                   list[InputError]]]]

_PARAMETERS = {
    "source": [ImageSource],
    "compute": [callable],
    "configs": [Mapping],
    "store": [FeatureStore, None],
    "on_error": [StrOptions({"raise", "skip"})],
    "progress": ["boolean"],
    "desc": [str],
    "widths": [Mapping, None],
    "labels": ["array-like", None],
    "about": [Mapping, None],
}


@dataclass
class FeatureExtraction:
    """The outcome of an extraction (:meth:`DeepFeatureExtractor.extract`, the CLI, Ray).

    Attributes
    ----------
    features : numpy.ndarray
        ``(n_ok, d)`` float32 feature vectors, one row per input that worked, in input order;
        with several blocks (layers), their columns side by side in ``blocks`` order. A Ray
        job leaves its vectors in the store: its ``features`` has no columns.
    indices : numpy.ndarray
        ``(n_ok,)`` positions in ``X`` of the rows of ``features``.
    errors : list of InputError
        The inputs that could not be read (only with ``on_error="skip"``).
    n_computed : int
        Images whose vectors the network computed in this call (a byte-identical copy of a
        computed image counts too, although the network ran once for both).
    n_reused : int
        Images whose vectors (every block's) were read from the feature store instead.
    seconds : float
        Wall-clock time of the call.
    blocks : dict of str to slice
        The columns of ``features`` that each block (a layer's output) fills.
    digests : list of str or None
        The sample digest of every input (None for unreadable files); empty without a store.
    actors : int
        Ray actors that did the work (0: this process).
    """

    features: np.ndarray
    indices: np.ndarray
    errors: list[InputError] = field(default_factory=list)
    n_computed: int = 0
    n_reused: int = 0
    seconds: float = 0.0
    blocks: dict[str, slice] = field(default_factory=dict)
    digests: list[str | None] = field(default_factory=list)
    actors: int = 0

    def block(self, name: str) -> np.ndarray:
        """The columns of one block (a view of ``features``)."""
        if not self.blocks:
            return self.features
        return self.features[:, self.blocks[name]]

    @property
    def n_images(self) -> int:
        """Inputs in the call: computed, reused and unreadable."""
        return self.n_computed + self.n_reused + len(self.errors)

    @property
    def images_per_second(self) -> float:
        """Throughput over the whole call (NaN when it took no measurable time)."""
        return self.n_images / self.seconds if self.seconds else float("nan")


def cached_features(source: ImageSource, compute: ComputeFn, *, configs: Mapping[str, dict],
                    store: FeatureStore | None = None, on_error: str = "raise",
                    progress: bool = False, desc: str = "features",
                    widths: Mapping[str, int | None] | None = None,
                    labels: Sequence | None = None,
                    about: Mapping[str, str] | None = None) -> FeatureExtraction:
    """Feature vectors of every input: read from ``store`` when there, computed when not.

    ``compute`` runs only on the inputs the store lacks (``source.subset(missing)``), and not
    at all when every vector is stored, so a fully cached call never runs the network; inputs
    with the same digest (byte-identical files) are computed once and share the vector. Image
    files (a :class:`~featclf.data.sources.FileSource`) with a store are looked up by their
    stat in the store's stat record: a rerun over unchanged files whose vectors are stored
    opens none of them; the others are read once, hashed and decoded from the same bytes in
    ``compute``'s own pass (its DataLoader workers), and the entries learned are added to the
    record (files changed less than :data:`~featclf.store._stat.RACY_SECONDS` before their
    read are hashed again next time). An
    input is reused only when the store holds every block's vector for it; the others are
    computed once (one forward per batch gives every block) and each block's vectors are
    written under its own configuration as they stream in, so a killed call keeps what it
    finished. Without a store, this is the plain extraction loop.

    Parameters
    ----------
    source : ImageSource
        The inputs.
    compute : callable
        ``compute(subsource)`` yields ``(indices, {block: vectors}, errors)`` per batch:
        ``indices`` and the errors' ``index`` are positions in ``subsource``, ``vectors`` is
        ``(len(indices), d_block)`` for each block of ``configs``.
    configs : mapping of str to dict
        For each block (a layer: ``"penultimate"``, ``"layer3"``...), the JSON-able
        description of everything that decides its vectors (model fingerprint, layer,
        pooling, preprocessing, precision, format version): the store's key.
    store : FeatureStore, optional
        The cache; None computes everything and stores nothing.
    on_error : {"raise", "skip"}, default="raise"
        With ``"raise"``, an input that ``compute`` reports as unreadable raises
        ``ValueError`` (the vectors already written stay in the store).
    progress : bool, default=False
        Show a progress bar (images/s, ETA) over the inputs.
    desc : str, default="features"
        The progress bar's label.
    widths : mapping of str to int or None, optional
        Each block's width, for the shape of an empty result (nothing computed or stored).
    labels : sequence, optional
        One label per input, kept in the store for ``export``.
    about : mapping of str to str, optional
        What the configurations are in words (``{"model": ..., "weights": ...}``), recorded
        with :meth:`FeatureStore.annotate` (plus each block's ``"layer"``) before any vector
        is written; not part of the key.

    Returns
    -------
    FeatureExtraction
        ``features`` in input order (blocks side by side in ``configs`` order), the
        positions of its rows, the unreadable inputs, and the computed and reused counts.

    Examples
    --------
    >>> import tempfile
    >>> from featclf.data.inputs import as_image_source
    >>> store = FeatureStore(tempfile.mkdtemp())
    >>> source = as_image_source(np.arange(4 * 9, dtype=np.uint8).reshape(4, 1, 3, 3))
    >>> def compute(sub):  # the mean and the max pixel, standing in for a network's layers
    ...     for batch in sub.iter_batches(batch_size=2, preprocess=None):
    ...         x = batch.images.float().flatten(1)
    ...         yield batch.indices, {"mean": x.mean(1, keepdim=True).numpy(),
    ...                               "max": x.amax(1, keepdim=True).numpy()}, []
    >>> configs = {"mean": {"m": "mean"}, "max": {"m": "max"}}
    >>> first = cached_features(source, compute, configs=configs, store=store)
    >>> again = cached_features(source, compute, configs=configs, store=store)
    >>> (first.n_computed, first.n_reused), (again.n_computed, again.n_reused)
    ((4, 0), (0, 4))
    >>> again.block("mean").ravel().tolist(), again.features[0].tolist()
    ([4.0, 13.0, 22.0, 31.0], [4.0, 8.0])
    """
    check_params(_PARAMETERS, {"source": source, "compute": compute, "configs": configs,
                               "store": store, "on_error": on_error, "progress": progress,
                               "desc": desc, "widths": widths, "labels": labels,
                               "about": about},
                 "cached_features")
    started = time.perf_counter()
    names = list(configs)
    if not names:
        raise ValueError("configs is empty: give one cache configuration per block (layer)")
    n = len(source)
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels has {len(labels)} entries for {n} inputs")
    files = source.kind == "files"
    # Files with a store: looked up by stat, no hashing pass; the files that must be read are
    # hashed from the bytes their pixels are decoded from (FileSource.reading).
    by_stat = store is not None and isinstance(source, FileSource)
    record = StatRecord(store.root) if by_stat else None
    if store is None:
        digests: list[str | None] = []
        found, stored = np.zeros(n, dtype=bool), {}
    else:
        if record is not None:
            digests = record.lookup(source.paths)
        else:
            # One snapshot for the job: the lookup and the decoding agree on each input.
            source = source.snapshot()
            digests = source.digests()
        found, stored = _stored(store, configs, digests)
    n_found = int(found.sum())
    if n_found and files:
        _record_moves(store, configs, source, digests, found, labels)
    if store is not None and about:
        for b in names:
            store.annotate(configs[b], {**about, "layer": b})
    block_widths = {b: stored[b].shape[1] for b in stored}  # known from the store
    from_store = set(block_widths)
    missing = np.flatnonzero(~found)
    # Byte-identical inputs share a digest: compute the first, give its vector to the others
    # (files read by stat: found out as they are read, in admit below).
    todo, twins = (missing, {}) if by_stat else _first_of_each_digest(missing, digests)
    rows: np.ndarray | None = None  # (n, sum of widths), filled as vectors arrive
    done: list[np.ndarray] = []
    late: list[int] = []  # read and hashed, then found in the store
    have: set[int] = set()  # inputs whose vectors are in rows (stat mode)
    first_of: dict[str, int] = {}  # digest -> the input whose vector serves it (stat mode)
    errors: list[InputError] = []
    failed: list[InputError] = []  # under on_error="raise": raised once this batch is stored
    bar = progress_bar(enabled=progress, total=n, initial=n_found, unit="img", desc=desc,
                       smoothing=0.1)
    flushed = [time.monotonic()]

    def fill(i: int, vectors: Mapping[str, np.ndarray]) -> None:
        """Put a stored vector (every block's) in input ``i``'s row."""
        nonlocal rows
        for b in names:
            width = vectors[b].shape[-1]
            if block_widths.setdefault(b, width) != width:
                raise StoreError(f"the store {store.root} holds {width}-dim vectors for block "
                                 f"{b!r} where {block_widths[b]}-dim ones were computed; the "
                                 "configuration does not capture everything that decides them")
            from_store.add(b)
        if rows is None:
            rows = _assembly(n, names, block_widths, found, stored)
        columns = _slices(names, block_widths)
        for b in names:
            rows[i, columns[b]] = vectors[b]

    def admit(reads) -> list[bool]:
        """Which of a batch's freshly read files go to the network (stat mode)."""
        keep, ask = [], []
        for r in reads:
            i = int(todo[r.index])
            record.add(source.paths[i], r.stat, r.digest, read_ns=r.read_ns)
            known_missing = digests[i] == r.digest  # the lookup found its stat, not its vector
            digests[i] = r.digest
            first = first_of.get(r.digest)
            if first is None:
                first_of[r.digest] = i
                if not known_missing:
                    ask.append((len(keep), i))
                keep.append(True)
            else:
                keep.append(False)
                if first in have:  # its vector is here already
                    rows[i] = rows[first]
                    have.add(i)
                    if first in late_set:
                        late.append(i)
                        late_set.add(i)
                    else:
                        done.append(np.asarray([i], np.int64))
                    bar.update(1)
                else:
                    twins.setdefault(first, []).append(i)
        if ask:
            hit, vectors = _stored(store, configs, [digests[i] for _, i in ask])
            for k, (at, i) in enumerate(p for p, h in zip(ask, hit) if h):
                keep[at] = False
                # A stored vector, for this input and its copies met so far in the batch.
                for j in [i, *twins.pop(i, ())]:
                    fill(j, {b: vectors[b][k] for b in names})
                    have.add(j)
                    late.append(j)
                    late_set.add(j)
                    bar.update(1)
        if record.pending and time.monotonic() - flushed[0] > _RECORD_FLUSH_SECONDS:
            record.flush()
            flushed[0] = time.monotonic()
        return keep

    late_set: set[int] = set()
    try:
        with contextlib.ExitStack() as stack:
            writers = {} if store is None or not len(todo) else {
                b: stack.enter_context(store.writer(configs[b])) for b in names}
            # Everything missing (as without a store): the source itself, not a copy of it.
            sub = source if len(todo) == n else source.subset(todo) if len(todo) else None
            if by_stat and sub is not None:
                sub = sub.reading(admit)
            batches = () if sub is None else compute(sub)
            for rel, vectors, batch_errors in batches:
                absolute = todo[np.asarray(rel, dtype=np.int64)]
                batch_failures = [dataclasses.replace(e, index=int(todo[e.index]))
                                  for e in batch_errors]
                batch_failures += [InputError(t, source.describe(t), e.reason)
                                   for e in batch_failures for t in twins.get(e.index, ())]
                errors.extend(batch_failures)
                if batch_failures and on_error == "raise":
                    failed = batch_failures  # the batch's readable inputs are stored first
                if len(absolute):
                    vectors = _check_blocks(vectors, names, len(absolute), block_widths,
                                            from_store, store)
                    if rows is None:
                        rows = _assembly(n, names, block_widths, found, stored)
                    columns = _slices(names, block_widths)
                    if writers:
                        samples = {"paths": [source.describe(i) for i in absolute] if files
                                   else None,
                                   "labels": None if labels is None else
                                   [labels[i] for i in absolute]}
                        keys = [digests[i] for i in absolute]
                        for b, writer in writers.items():
                            writer.add(keys, vectors[b], **samples)
                    if twins:
                        copies = [(k, t) for k, i in enumerate(absolute)
                                  for t in twins.pop(int(i), ())]
                        if copies:
                            source_rows, extra = map(list, zip(*copies))
                            vectors = {b: np.concatenate([v, v[source_rows]])
                                       for b, v in vectors.items()}
                            absolute = np.concatenate([absolute, np.asarray(extra, np.int64)])
                    for b in names:
                        rows[absolute, columns[b]] = vectors[b]
                    have.update(absolute.tolist())
                    done.append(absolute)
                bar.update(len(absolute) + len(batch_failures))
                if failed:
                    first = min(failed, key=lambda e: e.index)
                    raise _unreadable(source, first, stored=bool(writers))
    finally:
        bar.close()
        if record is not None:
            record.flush()
    if late:
        late_found = np.zeros(n, dtype=bool)
        late_found[late] = True
        _record_moves(store, configs, source, digests, late_found, labels)
    if by_stat:
        for e in errors:
            digests[e.index] = None
    errors.sort(key=lambda e: e.index)
    computed = np.concatenate(done) if done else np.empty(0, np.int64)
    indices = np.sort(np.concatenate([np.flatnonzero(found), computed,
                                      np.asarray(late, np.int64)])).astype(np.int64)
    for b in names:
        block_widths.setdefault(b, int((widths or {}).get(b) or 0))
    columns = _slices(names, block_widths)
    if rows is not None:
        features = rows if len(indices) == n else rows[indices]
    elif len(names) == 1 and n_found:  # all from the store, already in input order: no copy
        features = stored[names[0]]
    elif n_found:
        features = np.concatenate([stored[b] for b in names], axis=1)
    else:
        features = np.empty((0, sum(block_widths.values())), dtype=np.float32)
    return FeatureExtraction(features, indices, errors, n_computed=len(computed),
                             n_reused=n_found + len(late), seconds=time.perf_counter() - started,
                             blocks=columns, digests=digests)


#: How often a long job writes the stat entries it has gathered (a killed job loses at most
#: these: its files are hashed again on the next run, their vectors still reused).
_RECORD_FLUSH_SECONDS = 30.0


def _first_of_each_digest(missing: np.ndarray, digests: list[str | None]
                          ) -> tuple[np.ndarray, dict[int, list[int]]]:
    """The inputs to compute (one per digest), and the later inputs sharing each one's digest.

    Inputs without a digest (no store, or unreadable when hashed) are all computed.

    Examples
    --------
    >>> todo, twins = _first_of_each_digest(np.arange(5), ["a", "b", "a", None, "a"])
    >>> todo.tolist(), twins
    ([0, 1, 3], {0: [2, 4]})
    """
    first: dict[str, int] = {}
    twins: dict[int, list[int]] = {}
    todo = []
    for i in missing.tolist():
        d = digests[i] if digests else None
        if d is None or d not in first:
            if d is not None:
                first[d] = i
            todo.append(i)
        else:
            twins.setdefault(first[d], []).append(i)
    return np.asarray(todo, dtype=np.int64), twins


def _unreadable(source: ImageSource, error: InputError, *, stored: bool) -> ValueError:
    """The error for an unreadable input under ``on_error="raise"`` (naming it, with a hint)."""
    hint = f"pass {option('on_error', 'skip')} to skip unreadable inputs"
    if stored:
        hint += "; the vectors computed so far are in the store"
    if source.kind == "files":
        return ImageDecodeError(error.source, error.reason, hint=hint)
    return ValueError(f"cannot read input {error.source!r}: {error.reason} ({hint})")


def _stored(store: FeatureStore, configs: Mapping[str, dict], digests: list[str | None]
            ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Which inputs have every block's vector in the store, and those vectors per block.

    Each block is asked only for the inputs every earlier block holds: an input that some
    block lacks is computed again for every block, so no more of its vectors are read.
    """
    found = np.ones(len(digests), dtype=bool)
    stored: dict[str, np.ndarray] = {}
    for b, config in configs.items():
        held = np.flatnonzero(found)
        hit, vectors = store.get(config, [digests[i] for i in held])
        found[held[~hit]] = False
        stored = {k: v[hit] for k, v in stored.items()}
        stored[b] = vectors
    if not found.any():
        return found, {}
    return found, stored


def _check_blocks(vectors, names: list[str], k: int, widths: dict[str, int],
                  from_store: set[str], store: FeatureStore | None) -> dict[str, np.ndarray]:
    """One batch's vectors as float32, checked against the blocks and the widths seen so far."""
    if not isinstance(vectors, Mapping) or set(vectors) != set(names):
        got = sorted(vectors) if isinstance(vectors, Mapping) else type(vectors).__name__
        raise ValueError(f"compute must yield {{block: vectors}} for the blocks {names}, got "
                         f"{got}")
    out = {}
    for b in names:
        v = np.asarray(vectors[b], dtype=np.float32)
        if v.ndim != 2 or v.shape[0] != k:
            raise ValueError(f"block {b!r}: compute gave vectors of shape {v.shape} for {k} "
                             "inputs; expected (inputs, width)")
        if widths.setdefault(b, v.shape[1]) != v.shape[1]:
            if b in from_store:
                raise StoreError(f"the store {store.root} holds {widths[b]}-dim vectors for "
                                 f"block {b!r} of this configuration but the network computed "
                                 f"{v.shape[1]}; the configuration does not capture everything "
                                 "that decides the vectors")
            raise ValueError(f"block {b!r}: compute gave {v.shape[1]}-dim vectors after "
                             f"{widths[b]}-dim ones")
        out[b] = v
    return out


def _slices(names: list[str], widths: Mapping[str, int]) -> dict[str, slice]:
    """The columns of each block, side by side in ``names`` order."""
    out, start = {}, 0
    for b in names:
        out[b] = slice(start, start + widths[b])
        start += widths[b]
    return out


def _assembly(n: int, names: list[str], widths: dict[str, int], found: np.ndarray,
              stored: dict[str, np.ndarray]) -> np.ndarray:
    """The ``(n, total width)`` result, with the stored vectors already in their rows."""
    columns = _slices(names, widths)
    rows = np.empty((n, sum(widths[b] for b in names)), dtype=np.float32)
    if stored:
        reused = np.flatnonzero(found)
        for b in names:
            rows[reused, columns[b]] = stored[b]
    return rows


def _record_moves(store: FeatureStore, configs: Mapping[str, dict], source: ImageSource,
                  digests: list[str | None], found: np.ndarray, labels: Sequence | None) -> None:
    """Record new paths (or labels) of reused file inputs, so ``export`` shows where they are."""
    reused = np.flatnonzero(found)
    sub_digests = [digests[i] for i in reused]
    paths = [source.describe(i) for i in reused]
    sub_labels = None if labels is None else [labels[i] for i in reused]
    stale = np.zeros(len(reused), dtype=bool)
    for config in configs.values():
        stale |= store.stale_samples(config, sub_digests, paths, labels=sub_labels)
    if stale.any():
        moved = np.flatnonzero(stale)
        store.record_samples([sub_digests[i] for i in moved], [paths[i] for i in moved],
                             labels=None if sub_labels is None else
                             [sub_labels[i] for i in moved])


def write_error_manifest(path: str | os.PathLike, errors: Sequence[InputError]) -> Path:
    """Write unreadable inputs as a UTF-8 CSV of ``path,reason`` (atomically).

    A file name that is not valid UTF-8 (``os.listdir`` gives it with surrogate escapes) is
    written with its undecodable bytes as ``\\xNN``: ``os.fsencode(name)`` decoded with
    ``backslashreplace``, so the manifest is always written and names every file.

    Examples
    --------
    >>> import tempfile
    >>> p = write_error_manifest(tempfile.mkdtemp() + "/errors.csv",
    ...                          [InputError(3, "a/b.png", "truncated"),
    ...                           InputError(4, os.fsdecode(b"bad\\xff.png"), "empty file")])
    >>> p.read_text().splitlines()
    ['path,reason', 'a/b.png,truncated', 'bad\\\\xff.png,empty file']
    """
    path = Path(path)
    buf = io.StringIO()
    out = csv.writer(buf, lineterminator="\n")
    out.writerow(["path", "reason"])
    for e in errors:
        out.writerow([_printable(e.source), _printable(e.reason)])
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, [buf.getvalue().encode()], new_writer_id())
    return path


def _printable(text: str) -> str:
    """``text`` encodable as UTF-8: bytes that a file name's surrogate escapes stand for
    become ``\\xNN``; any other lone surrogate its ``\\udNNN`` escape.

    Examples
    --------
    >>> _printable("ok.png"), _printable(os.fsdecode(b"\\xff.png"))
    ('ok.png', '\\\\xff.png')
    """
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        pass
    try:
        return os.fsencode(text).decode("utf-8", "backslashreplace")
    except UnicodeError:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
