"""The same extraction job on a Ray cluster (``pip install 'featclf[ray]'``).

:func:`extract_with_ray` runs a fitted :class:`~featclf.extract.DeepFeatureExtractor` as a pool
of Ray Data actors (``map_batches`` with ``concurrency`` actors, ``num_gpus`` each on GPU
clusters). Each actor holds the network once, reads its batch of image files, hashes them,
skips those the :class:`~featclf.store.FeatureStore` already holds, and runs the rest through
the extractor's own code path (:meth:`DeepFeatureExtractor.iter_features`: featclf's decoding
and preprocessing, the same forward). It writes the vectors into the store as shards of its
own, under exactly the key the local engine uses, so a store filled on a cluster is reused
locally and vice versa. Actors write shards directly (each writer names its own files, see
:mod:`featclf.store`), so the store must live where every worker sees it: a shared file system.

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
from dataclasses import dataclass, field

import numpy as np
import torch

from featclf.data.files import ImageFiles
from featclf.data.inputs import FileSource, InputError, as_image_source, check_on_error
from featclf.devices import resolve_device, resolve_precision
from featclf.extract import DeepFeatureExtractor
from featclf.progress import progress_bar
from featclf.store import FeatureStore

__all__ = ["RayExtraction", "extract_with_ray", "ray_joblib_backend"]


def _import_ray():
    try:
        import ray
    except ImportError:
        raise ImportError("the Ray engine needs Ray: pip install 'featclf[ray]'") from None
    return ray


@dataclass
class RayExtraction:
    """What a Ray extraction job did.

    Attributes
    ----------
    n_images : int
        Inputs in the job.
    n_computed, n_reused : int
        Vectors computed by the actors, and found in the store.
    errors : list of InputError
        Unreadable images (with ``on_error="skip"``).
    seconds : float
        Wall time of the job, Ray start-up included.
    actors : int
        Size of the actor pool.
    """

    n_images: int
    n_computed: int
    n_reused: int
    errors: list[InputError] = field(default_factory=list)
    seconds: float = 0.0
    actors: int = 1

    @property
    def images_per_second(self) -> float:
        """Throughput over the whole job."""
        return self.n_images / self.seconds if self.seconds else float("nan")


class _ExtractionActor:
    """One Ray actor: a fitted extractor and a handle on the store."""

    def __init__(self, extractor: DeepFeatureExtractor, store_root: str, store_dtype: str,
                 use_gpu: bool, threads: int) -> None:
        torch.set_num_threads(max(1, threads))
        ext = extractor
        # The driver fitted on its own machine; the device is this worker's. Precision follows
        # the device (bf16 under "auto" on CUDA), so the cache key is computed here, after it.
        ext.device_ = resolve_device("cuda" if use_gpu else "cpu")
        ext.precision_ = resolve_precision(ext.precision, ext.device_)
        ext.on_error, ext.progress, ext.store = "skip", False, None
        self.extractor = ext
        self.store = FeatureStore(store_root, dtype=store_dtype)
        self.config = ext.cache_config_()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [str(p) for p in batch["path"]]
        labels = batch["label"].tolist() if "label" in batch else None
        source = FileSource(paths)
        digests = source.digests()
        found, _ = self.store.get(self.config, digests)
        status = np.where(found, "reused", "").astype(object)
        reason = np.full(len(paths), "", dtype=object)
        missing = np.flatnonzero(~found)
        if len(missing):
            with self.store.writer(self.config) as writer:
                for rel, vectors, errors in self.extractor.iter_features(source.subset(missing)):
                    done = missing[np.asarray(rel, dtype=np.int64)]
                    if len(done):
                        writer.add([digests[i] for i in done], vectors,
                                   paths=[paths[i] for i in done],
                                   labels=None if labels is None else [labels[i] for i in done])
                        status[done] = "computed"
                    for err in errors:
                        status[missing[err.index]] = "error"
                        reason[missing[err.index]] = err.reason
        return {"path": np.asarray(paths, dtype=object), "status": status, "reason": reason,
                "position": batch["position"]}


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
                     ray_init_kwargs: dict | None = None) -> RayExtraction:
    """Fill a feature store from image files with a pool of Ray actors.

    Parameters
    ----------
    X : list of paths or ImageFiles
        The images. Every Ray worker must be able to read these paths.
    extractor : DeepFeatureExtractor
        Fitted or not (it is fitted on the driver when not); its ``store`` is ignored.
    store : FeatureStore, str or path-like
        Where the vectors go; on a shared file system for a multi-machine cluster.
    address : str, optional
        Ray cluster to join (``"auto"``, ``"ray://head:10001"``). None: the running Ray
        instance, or a new local one.
    actors : int, default=2
        Actors in the pool, each holding one copy of the network.
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
    RayExtraction

    Examples
    --------
    Not run here (it starts Ray)::

        ext = DeepFeatureExtractor("resnet50", weights="DEFAULT")
        job = extract_with_ray(image_files("photos/"), ext, "/shared/features", actors=8,
                               gpus_per_actor=1, address="auto")
        print(job.n_computed, job.images_per_second)
    """
    check_on_error(on_error)
    if int(actors) < 1:
        raise ValueError(f"actors must be >= 1, got {actors!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
    paths, labels = _items(X, labels)
    store = store if isinstance(store, FeatureStore) else FeatureStore(store)
    if not hasattr(extractor, "feature_model_"):
        extractor = extractor.fit()
    ray = _import_ray()
    started = time.perf_counter()
    own_ray = not ray.is_initialized()
    if own_ray:
        kwargs = {"include_dashboard": False, "log_to_driver": False, **(ray_init_kwargs or {})}
        ray.init(address=address, **kwargs)
    errors: list[InputError] = []
    counts = {"computed": 0, "reused": 0}
    try:
        context = ray.data.DataContext.get_current()
        context.enable_progress_bars = False
        items = [{"path": p, "position": i} | ({} if labels is None else {"label": labels[i]})
                 for i, p in enumerate(paths)]
        dataset = ray.data.from_items(items).map_batches(
            _ExtractionActor, batch_size=int(batch_size), batch_format="numpy",
            concurrency=int(actors), num_cpus=cpus_per_actor, num_gpus=gpus_per_actor or None,
            fn_constructor_kwargs={"extractor": extractor, "store_root": str(store.root),
                                   "store_dtype": store.dtype,
                                   "use_gpu": bool(gpus_per_actor),
                                   "threads": max(1, int(cpus_per_actor))})
        with progress_bar(total=len(paths), unit="img", desc="extract (ray)",
                          enabled=progress) as bar:
            for out in _batches(dataset):
                for path, status, reason, pos in zip(out["path"], out["status"], out["reason"],
                                                     out["position"]):
                    if status == "error":
                        err = InputError(int(pos), str(path), str(reason))
                        if on_error == "raise":
                            from featclf.data.decode import ImageDecodeError

                            raise ImageDecodeError(err.source, err.reason + " (pass "
                                                   "on_error='skip' to skip unreadable images)")
                        errors.append(err)
                    else:
                        counts[str(status)] += 1
                bar.update(len(out["path"]))
    finally:
        if own_ray:
            ray.shutdown()
    errors.sort(key=lambda e: e.index)
    return RayExtraction(len(paths), counts["computed"], counts["reused"], errors,
                         time.perf_counter() - started, int(actors))


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
