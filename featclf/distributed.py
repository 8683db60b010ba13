"""The same extraction job on a Ray cluster (``pip install 'featclf[ray]'``).

:func:`extract_with_ray` runs a :class:`~featclf.extract.DeepFeatureExtractor` as a pool of
Ray Data actors (``map_batches`` over an ``ActorPoolStrategy`` of ``actors`` actors,
``num_gpus`` each on GPU clusters). Each actor fits its own clone of the extractor on its own
device (``set_params`` + ``fit``), so it holds the network once; it looks its batch of image
files up by ``os.stat`` in the store's stat record (:mod:`featclf.store._stat`: unchanged files
whose vectors the :class:`~featclf.store.FeatureStore` holds are never opened), reads each
other file once, hashing and decoding the same bytes, and runs the files still missing through
the local engine's own loop (:func:`~featclf.extract.cached.cached_features` over
:meth:`DeepFeatureExtractor.iter_features`: featclf's decoding and preprocessing, the same
forward). It writes the vectors into the store as shards of its own, under exactly the keys the
local engine uses, so a store filled on a cluster is reused locally and vice versa (the stat
record too: a rerun on either side opens no unchanged file), and records the same description
of each configuration (model name, weights: :meth:`FeatureStore.about`).
Actors write shards directly (each writer names its own files, see :mod:`featclf.store`), so the
store must live where every worker sees it: a shared file system. The pool starts every actor
before the first batch is handed out, so the work is spread over all of them from the start
instead of going to whichever actor loaded its network first.

Failed images follow the local ``on_error`` policy: the actors always carry on and report them;
the driver raises on the first report under ``"raise"`` (vectors already written stay) or lists
them under ``"skip"``.

A killed job (driver or worker) keeps every shard it finished; running it again computes only
what is missing, and no vector is stored twice by one run.

:func:`ray_joblib_backend` runs scikit-learn's joblib-parallel work (the grid searches of
:func:`featclf.compare.compare`) on the same cluster.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Sequence
from numbers import Integral, Real

import numpy as np
import torch
from sklearn.base import clone

from featclf.data.files import ImageFiles
from featclf.data.inputs import as_image_source
from featclf.data.sources import FileSource, InputError
from featclf.errors import option
from featclf.extract import DeepFeatureExtractor
from featclf.extract.cached import FeatureExtraction, cached_features
from featclf.params import Interval, StrOptions, check_params
from featclf.progress import progress_bar
from featclf.store import FeatureStore

__all__ = ["extract_with_ray", "ray_joblib_backend"]

_PARAMETERS = {
    "extractor": [DeepFeatureExtractor],
    "store": [FeatureStore, str, os.PathLike],
    "address": [str, None],
    "actors": [Interval(Integral, 1, None, closed="left")],
    "gpus_per_actor": [Interval(Real, 0, None, closed="left")],
    "cpus_per_actor": [Interval(Real, 0, None, closed="neither")],
    "batch_size": [Interval(Integral, 1, None, closed="left")],
    "on_error": [StrOptions({"raise", "skip"})],
    "progress": ["boolean"],
    "ray_init_kwargs": [dict, None],
}


# How long the pool may take to start all its actors (Ray's error then says the cluster lacks
# the resources for the pool).
_POOL_START_SECONDS = 600


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError("the Ray engine needs Ray: pip install 'featclf[ray]'") from None
    return ray


class _ExtractionActor:
    """One Ray actor: its own fitted copy of the extractor, and a handle on the store."""

    def __init__(self, extractor: DeepFeatureExtractor, store_root: str, store_dtype: str,
                 use_gpu: bool, threads: int, about: dict[str, str]) -> None:
        torch.set_num_threads(max(1, threads))
        self.pid = os.getpid()  # reported with every row: which process did the work
        self.about = about
        # The network is built here, on this worker's device; precision follows the device
        # (bf16 under "auto" on CUDA), so the cache keys are this worker's too. Unreadable
        # images are reported to the driver, which applies the job's on_error.
        self.extractor = extractor.set_params(device="cuda" if use_gpu else "cpu",
                                              on_error="skip", progress=False,
                                              store=None).fit()
        self.store = FeatureStore(store_root, dtype=store_dtype)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Extract one batch into the store; report each row's status and the call's counts.

        ``computed`` and ``reused`` hold the call's counts on its first row (0 on the others),
        so their sums over the job's rows are the job's counts; ``pid`` is this actor's process.
        """
        paths = [str(p) for p in batch["path"]]
        source = FileSource(paths)
        ext = self.extractor
        result = cached_features(source, ext.iter_features, configs=ext.cache_configs_(source),
                                 store=self.store, on_error="skip",
                                 widths=ext.feature_blocks_, about=self.about,
                                 labels=batch["label"].tolist() if "label" in batch else None)
        status = np.full(len(paths), "ok", dtype=object)
        reason = np.full(len(paths), "", dtype=object)
        for err in result.errors:
            status[err.index], reason[err.index] = "error", err.reason
        computed, reused = np.zeros(len(paths), np.int64), np.zeros(len(paths), np.int64)
        computed[0], reused[0] = result.n_computed, result.n_reused
        return {"path": np.asarray(paths, dtype=object), "status": status, "reason": reason,
                "position": batch["position"], "computed": computed, "reused": reused,
                "pid": np.full(len(paths), self.pid, dtype=np.int64)}


def _items(X, labels: Sequence | None) -> tuple[list[str], list | None]:
    if isinstance(X, ImageFiles):
        labels = labels if labels is not None else (None if X.labels is None else
                                                     X.labels.tolist())
    source = as_image_source(X)
    if not isinstance(source, FileSource):
        raise ValueError("the Ray engine reads image files (a list of paths or image_files(...)); "
                         "in-memory arrays are already on one machine: use the local engine")
    if labels is not None and len(labels) != len(source):
        raise ValueError(f"labels has {len(labels)} entries for {len(source)} images")
    return source.paths, None if labels is None else list(labels)


def extract_with_ray(X, extractor: DeepFeatureExtractor, store: FeatureStore | str | os.PathLike,
                     *, address: str | None = None, actors: int = 2, gpus_per_actor: float = 0,
                     cpus_per_actor: float = 1, batch_size: int = 256, labels=None,
                     on_error: str = "raise", progress: bool = False,
                     ray_init_kwargs: dict | None = None) -> FeatureExtraction:
    """Fill a feature store from image files with a pool of Ray actors.

    Parameters
    ----------
    X : list of paths or ImageFiles
        The images. Every Ray worker must be able to read these paths.
    extractor : DeepFeatureExtractor
        Fitted or not (it is fitted on the driver when not); each actor fits its own clone on
        its own device. Its ``store``, ``on_error`` and ``progress`` are not used.
    store : FeatureStore, str or path-like
        Where the vectors go; on a shared file system for a multi-machine cluster.
    address : str, optional
        Ray cluster to join (``"auto"``, ``"ray://head:10001"``). None: the running Ray
        instance, or a new local one.
    actors : int, default=2
        Actors in the pool, each holding one copy of the network. All of them start before the
        first batch is handed out; a cluster that cannot start them within 10 minutes (too
        few CPUs or GPUs for the pool) fails ("Timed out while starting actors"), unless
        ``ray.data.DataContext.wait_for_min_actors_s`` says otherwise.
    gpus_per_actor : float, default=0
        GPUs each actor takes; > 0 runs the network on CUDA (bf16 under ``precision="auto"``).
    cpus_per_actor : float, default=1
        CPUs each actor takes (also its torch thread count).
    batch_size : int, default=256
        Images per actor call (each call writes at least one shard).
    labels : sequence, optional
        Labels kept in the store for ``featclf store export`` (default: those of ImageFiles).
    on_error : {"raise", "skip"}, default="raise"
        What an unreadable image does (see the module docstring).
    progress : bool, default=False
        Show a progress bar on the driver.
    ray_init_kwargs : dict, optional
        Extra arguments for ``ray.init`` when this call starts Ray.

    Returns
    -------
    FeatureExtraction
        The counts, the unreadable images, the positions of the images whose vectors are now
        in the store (``indices``), the wall time (Ray start-up included) and how many actor
        processes handled images (``actors``: the pool size, unless some actors got no batch,
        or more when Ray restarted a failed actor). The vectors stay in the store:
        ``features`` has no columns; read them with ``DeepFeatureExtractor(store=...).extract(X)``
        (every vector reused).

    Examples
    --------
    Not run here (it starts Ray)::

        ext = DeepFeatureExtractor("resnet50", weights="DEFAULT")
        job = extract_with_ray(image_files("photos/"), ext, "/shared/features", actors=8,
                               gpus_per_actor=1, address="auto")
        print(job.n_computed, job.images_per_second)
    """
    check_params(_PARAMETERS, {"extractor": extractor, "store": store, "address": address,
                               "actors": actors, "gpus_per_actor": gpus_per_actor,
                               "cpus_per_actor": cpus_per_actor, "batch_size": batch_size,
                               "on_error": on_error, "progress": progress,
                               "ray_init_kwargs": ray_init_kwargs}, "extract_with_ray")
    paths, labels = _items(X, labels)
    store = store if isinstance(store, FeatureStore) else FeatureStore(store)
    if not hasattr(extractor, "runner_"):
        extractor = extractor.fit()  # on the driver: a bad model or weights fail here, early
    ray = _import_ray()
    started = time.perf_counter()
    own_ray = not ray.is_initialized()
    if own_ray:
        kwargs = {"include_dashboard": False, "log_to_driver": False, **(ray_init_kwargs or {})}
        ray.init(address=address, **kwargs)
    errors: list[InputError] = []
    done: list[int] = []
    workers: set[int] = set()  # actor processes that handled images
    counts = {"computed": 0, "reused": 0}
    context = ray.data.DataContext.get_current()
    wait_before = getattr(context, "wait_for_min_actors_s", None)  # not in older Ray
    try:
        context.enable_progress_bars = False
        if wait_before is not None and wait_before <= 0:
            # Start the whole pool before the first batch (a user's own setting wins): else the
            # actor that loads its network first takes several batches while the others load.
            context.wait_for_min_actors_s = _POOL_START_SECONDS
        items = [{"path": p, "position": i} | ({} if labels is None else {"label": labels[i]})
                 for i, p in enumerate(paths)]
        dataset = ray.data.from_items(items).map_batches(
            _ExtractionActor, batch_size=int(batch_size), batch_format="numpy",
            compute=ray.data.ActorPoolStrategy(size=int(actors)), num_cpus=cpus_per_actor,
            num_gpus=gpus_per_actor or None,
            # An unfitted clone travels (the network is not pickled): each actor fits its own.
            fn_constructor_kwargs={"extractor": clone(extractor),
                                   "store_root": str(store.root), "store_dtype": store.dtype,
                                   "use_gpu": bool(gpus_per_actor),
                                   "threads": max(1, int(cpus_per_actor)),
                                   # The store's words for the configurations, as the
                                   # local engine records them.
                                   "about": extractor.about_()})
        with progress_bar(total=len(paths), unit="img", desc="extract (ray)",
                          enabled=progress) as bar:
            for out in _batches(dataset):
                counts["computed"] += int(out["computed"].sum())
                counts["reused"] += int(out["reused"].sum())
                workers.update(int(pid) for pid in np.unique(out["pid"]))
                for path, status, reason, pos in zip(out["path"], out["status"], out["reason"],
                                                     out["position"]):
                    if status == "error":
                        err = InputError(int(pos), str(path), str(reason))
                        if on_error == "raise":
                            from featclf.data.decode import ImageDecodeError

                            raise ImageDecodeError(err.source, f"{err.reason} (pass "
                                                   f"{option('on_error', 'skip')} to skip "
                                                   "unreadable images)")
                        errors.append(err)
                    else:
                        done.append(int(pos))
                bar.update(len(out["path"]))
    finally:
        if wait_before is not None:
            context.wait_for_min_actors_s = wait_before
        if own_ray:
            ray.shutdown()
    errors.sort(key=lambda e: e.index)
    indices = np.sort(np.asarray(done, dtype=np.int64))
    return FeatureExtraction(np.empty((len(indices), 0), dtype=np.float32), indices, errors,
                             n_computed=counts["computed"], n_reused=counts["reused"],
                             seconds=time.perf_counter() - started, actors=len(workers))



def _batches(dataset) -> Iterator[dict[str, np.ndarray]]:
    yield from dataset.iter_batches(batch_size=None, batch_format="numpy")


@contextlib.contextmanager
def ray_joblib_backend(address: str | None = None, **init_kwargs):
    """Run joblib-parallel work (scikit-learn's ``n_jobs``) on Ray inside the block.

    Parameters
    ----------
    address : str, optional
        Ray cluster to join; None starts (or reuses) a local instance.
    **init_kwargs
        Extra arguments for ``ray.init`` when Ray is not running yet.

    Examples
    --------
    Not run here (it starts Ray)::

        with ray_joblib_backend("auto"):
            GridSearchCV(make_svm(), {"clf__C": c_grid("linear")}, n_jobs=-1).fit(F, y)
    """
    import joblib

    ray = _import_ray()
    from ray.util.joblib import register_ray

    own_ray = not ray.is_initialized()
    if own_ray:
        ray.init(address=address, **{"include_dashboard": False, "log_to_driver": False,
                                     **init_kwargs})
    register_ray()
    try:
        with joblib.parallel_config(backend="ray"):
            yield
    finally:
        if own_ray:
            ray.shutdown()
