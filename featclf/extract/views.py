"""Augmented views in the feature store: K seeded views of every image, each cached.

Caching deep features is usually said to rule out data augmentation (Keras' transfer-learning
guide). It does not, when the augmentation is seeded: view ``i`` of an image is the
augmentation drawn from a seed that depends only on the image's content digest, the view index
and ``random_state``, so it is the same view in every run, whatever the batch size or the
order of the images. Each view's vectors are then stored under their own key: the extractor's
configuration plus ``{"augment": description, "seed": random_state, "view": i}``
(:func:`~featclf.extract.cached.cached_features` does the reading and writing), so a rerun
reads every view and changing the augmentation or the seed computes new ones.

:func:`extract_views` gives ``(n, K, d)`` features; :meth:`ViewExtraction.training_rows` lays
them out for a classifier (each view keeps its image's label, ``groups`` keep one image's
views in one cross-validation fold) and :func:`tta_features` averages views at test
time.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from numbers import Integral

import numpy as np
import torch
from sklearn.utils.validation import check_is_fitted
from torchvision import transforms as v1
from torchvision.transforms import v2

from featclf.data.inputs import device_batches
from featclf.data.sources import ImageSource, InputError
from featclf.data.transforms import ImagePreprocess, seed_augmentation
from featclf.errors import option
from featclf.extract.cached import cached_features
from featclf.params import Interval, StrOptions, check_params

__all__ = ["ViewExtraction", "describe_augmentation", "extract_views", "resolve_augmentation",
           "tta_features"]

_PARAMETERS = {
    "augment": [StrOptions({"seed"}), callable],
    "n_views": [Interval(Integral, 1, None, closed="left")],
    "random_state": [Interval(Integral, 0, None, closed="left")],
    "progress": ["boolean"],
}

# A repr that shows an object's address (functions, lambdas, objects without their own repr)
# changes from one process to the next: such a description would never find its views again.
_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")


@dataclass
class ViewExtraction:
    """The outcome of :func:`extract_views`: K augmented views' features per image.

    Attributes
    ----------
    features : numpy.ndarray
        ``(n_ok, n_views, d)`` float32: view ``i`` of image ``indices[k]`` is
        ``features[k, i]``; with several blocks (layers), their columns side by side.
    indices : numpy.ndarray
        ``(n_ok,)`` positions in ``X`` of the images that worked.
    errors : list of InputError
        Inputs that could not be read (only with ``on_error="skip"``).
    n_computed : int
        Views (image and view index pairs) that the network computed in this call.
    n_reused : int
        Views read from the feature store instead.
    seconds : float
        Wall-clock time of the call.
    description : str
        The augmentation as its cache keys record it.
    blocks : dict of str to slice
        The columns of the last axis that each block fills.
    """

    features: np.ndarray
    indices: np.ndarray
    errors: list[InputError] = field(default_factory=list)
    n_computed: int = 0
    n_reused: int = 0
    seconds: float = 0.0
    description: str = ""
    blocks: dict[str, slice] = field(default_factory=dict)

    @property
    def n_views(self) -> int:
        """Views per image."""
        return int(self.features.shape[1])

    def block(self, name: str) -> np.ndarray:
        """``(n_ok, n_views, d_block)``: one block's columns (a view of ``features``)."""
        if not self.blocks:
            return self.features
        return self.features[:, :, self.blocks[name]]

    def training_rows(self, y=None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
        """One row per view, for a classifier: features, labels and groups.

        Parameters
        ----------
        y : array-like of shape (n,), optional
            Labels of *all* the inputs ``X`` (as given to :func:`extract_views`): each view
            gets its image's label.

        Returns
        -------
        X_rows : numpy.ndarray
            ``(n_ok * n_views, d)``: the views of image ``indices[0]``, then of the next.
        y_rows : numpy.ndarray or None
            The label of every row (None without ``y``).
        groups : numpy.ndarray
            The position in ``X`` of every row's image: with
            :class:`~sklearn.model_selection.StratifiedGroupKFold` (``sweep(groups=...)``),
            no image's views fall in two folds.

        Examples
        --------
        >>> out = ViewExtraction(np.arange(12, dtype=np.float32).reshape(2, 3, 2),
        ...                      np.array([0, 2]))
        >>> X_rows, y_rows, groups = out.training_rows(np.array([7, 8, 9]))
        >>> X_rows.shape, y_rows.tolist(), groups.tolist()
        ((6, 2), [7, 7, 7, 9, 9, 9], [0, 0, 0, 2, 2, 2])
        """
        n, k, d = self.features.shape
        groups = np.repeat(self.indices, k)
        y_rows = None if y is None else np.asarray(y)[groups]
        return self.features.reshape(n * k, d), y_rows, groups

    def mean(self) -> np.ndarray:
        """``(n_ok, d)``: each image's features averaged over its views (float32)."""
        return self.features.mean(axis=1, dtype=np.float64).astype(np.float32)


def resolve_augmentation(augment) -> Callable:
    """The transform that ``augment`` names: ``"seed"`` is the seed preset.

    Examples
    --------
    >>> type(resolve_augmentation("seed")).__name__
    'Compose'
    """
    if isinstance(augment, str):
        if augment != "seed":
            raise ValueError(f"augment={augment!r} is not a preset; use 'seed' or a "
                             "torchvision v2 transform")
        return seed_augmentation()
    return augment


def describe_augmentation(augment) -> str:
    """The stable text that keys an augmentation's views in the store (its ``repr``).

    A torchvision transform, or any callable whose class writes its own ``repr`` naming its
    parameters, describes itself. Lambdas, plain functions and objects whose ``repr`` is an
    address do not describe the same augmentation in the next process, so they are refused.

    Examples
    --------
    >>> describe_augmentation("seed")[:42]
    'Compose(RandomAffine(degrees=[-20.0, 20.0]'
    >>> describe_augmentation(lambda x: x)
    Traceback (most recent call last):
    ...
    ValueError: augment=<lambda> has no stable description ...
    """
    transform = resolve_augmentation(augment)
    text = " ".join(repr(transform).split())
    if _opaque(transform) or _ADDRESS.search(text):
        name = getattr(transform, "__name__", type(transform).__name__)
        raise ValueError(
            f"augment={name} has no stable description (its repr is {text[:80]!r}), so its "
            "views could not be found in the feature store again. Pass "
            f"{option('augment', 'seed')}, a torchvision v2 transform "
            "(v2.Compose([v2.RandomAffine(...), ...])), or an object whose class defines a "
            "__repr__ naming its parameters (a dataclass, say); not a lambda or v2.Lambda")
    return text.replace("( ", "(").replace(" )", ")")


def _opaque(transform) -> bool:
    """Whether ``transform`` (or a step inside it) is code that its ``repr`` does not
    describe: a function, a lambda, a ``Lambda`` transform, an object without its own repr."""
    if isinstance(transform, v2.Lambda | v1.Lambda) or not hasattr(type(transform), "__repr__"):
        return True
    if type(transform).__repr__ is object.__repr__ or inspect.isroutine(transform) or \
            isinstance(transform, functools.partial):
        return True
    steps = getattr(transform, "transforms", None)
    return isinstance(steps, list | tuple) and any(_opaque(t) for t in steps)


def view_seed(random_state: int, digest: str, view: int) -> int:
    """The seed of one view: from the image's content, the view index and ``random_state``.

    Examples
    --------
    >>> view_seed(0, "abc", 1) == view_seed(0, "abc", 1) != view_seed(0, "abc", 2)
    True
    """
    text = f"featclf-view/{random_state}/{digest}/{view}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:8], "little") >> 1


def _augmented(images: torch.Tensor, transform: Callable, seeds: list[list[int]]
               ) -> torch.Tensor:
    """``(n * K, C, H, W)``: view ``i`` of image ``j`` at row ``j * K + i``, each drawn from
    its own seed (one image at a time: a v2 transform draws one set of parameters per call)."""
    out = []
    # torchvision draws a transform's parameters from the CPU generator, even for images on a
    # GPU; seeding that generator alone is ~50x cheaper than torch.manual_seed, which also
    # seeds every CUDA device. fork_rng leaves the caller's random state as it was.
    generator = torch.default_generator
    with torch.random.fork_rng(devices=[]):
        for image, image_seeds in zip(images, seeds, strict=True):
            for s in image_seeds:
                generator.manual_seed(s)
                out.append(transform(image))
    return torch.stack(out)


def _view_compute(extractor, transform: Callable, n_views: int, random_state: int,
                  block_keys: list[list[str]]):
    """The ``compute`` of :func:`cached_features` for views: every view of a batch's images
    in one forward pass of the extractor's batch size."""
    preprocess = extractor.preprocess_
    runner = extractor.runner_
    batch_size = max(1, extractor.batch_size_ // n_views)
    blocks = list(extractor.feature_blocks_)

    def compute(sub: ImageSource) -> Iterator[tuple[np.ndarray, dict, list[InputError]]]:
        digests = sub.digests()
        batches, finish = device_batches(sub, preprocess, batch_size=batch_size,
                                         num_workers=int(extractor.num_workers),
                                         on_error=extractor.on_error,
                                         on_gpu=runner.device.type == "cuda",
                                         jpeg_draft=extractor._jpeg_draft_side(preprocess))
        model = None
        for batch in batches:
            if not len(batch.indices):  # every file of the batch unreadable (skipped)
                empty = {k: np.empty((0, extractor.feature_blocks_[b] or 0), np.float32)
                         for keys in block_keys for k, b in zip(keys, blocks, strict=True)}
                yield batch.indices, empty, batch.errors
                continue
            model = runner.network() if model is None else model
            x = batch.images.to(runner.device)
            seeds = [[view_seed(random_state, digests[i] or sub.describe(int(i)), v)
                      for v in range(n_views)] for i in batch.indices.tolist()]
            if isinstance(preprocess, ImagePreprocess):
                # Augmented as pixels of the network's size in [0, 1], then normalised: as
                # SoftmaxClassifier(augment=...) augments its training batches.
                if finish is preprocess:  # arrays: the whole preprocessing is still to do
                    x = preprocess.geometry(x)
                x = x.float().div_(255.0) if x.dtype == torch.uint8 else x.float()
                x = preprocess.normalize(_augmented(x, transform, seeds))
            else:
                x = finish(x) if finish is not None else x.float()
                x = _augmented(x.float(), transform, seeds)
            out = runner.forward(x, model=model,
                                 batch_size=batch_size * n_views if runner.compile else None)
            outs = out if isinstance(out, dict) else {blocks[0]: out}
            vectors = {}
            for b in blocks:
                per_view = outs[b].cpu().numpy().reshape(len(batch.indices), n_views, -1)
                for v, keys in enumerate(block_keys):
                    vectors[keys[blocks.index(b)]] = per_view[:, v]
            yield batch.indices, vectors, batch.errors

    return compute


def extract_views(extractor, X, *, augment="seed", n_views: int, random_state: int = 0,
                  progress: bool = False) -> ViewExtraction:
    """Features of ``n_views`` seeded augmented views of every image, read from the store
    when there.

    Parameters
    ----------
    extractor : DeepFeatureExtractor
        A fitted extractor: its network, layers, preprocessing, device and store.
    X : images
        Anything :func:`~featclf.data.as_image_source` accepts.
    augment : "seed" or callable, default="seed"
        ``"seed"``: the seed preset (rotation up to 20 degrees, shifts up to 0.2, horizontal
        flip; :func:`~featclf.data.transforms.seed_augmentation`). Or a torchvision v2
        transform (any callable with a stable ``repr``; see :func:`describe_augmentation`)
        taking one ``(C, H, W)`` float image. With an
        :class:`~featclf.data.ImagePreprocess` it sees pixels of the network's input size in
        ``[0, 1]``, before normalisation; with other preprocessing, its output.
    n_views : int
        Views per image (K).
    random_state : int, default=0
        With the image's content digest and the view index, seeds each view: views do not
        depend on the batch size, the order of the images or the other images.
    progress : bool, default=False
        Show a progress bar.

    Returns
    -------
    ViewExtraction
        ``features`` ``(n_ok, n_views, d)``, the positions, the failures, the computed and
        reused view counts and the augmentation's description.

    Examples
    --------
    >>> import tempfile
    >>> from featclf.extract import DeepFeatureExtractor
    >>> ext = DeepFeatureExtractor("lenet5", "random", store=tempfile.mkdtemp()).fit()
    >>> images = np.random.default_rng(0).integers(0, 255, (5, 28, 28), dtype=np.uint8)
    >>> first = extract_views(ext, images, n_views=3)
    >>> again = extract_views(ext, images, n_views=3)
    >>> first.features.shape, (first.n_computed, again.n_computed, again.n_reused)
    ((5, 3, 84), (15, 0, 15))
    >>> bool(np.array_equal(first.features, again.features))
    True
    """
    check_params(_PARAMETERS, {"augment": augment, "n_views": n_views,
                               "random_state": random_state, "progress": progress},
                 "extract_views")
    check_is_fitted(extractor, "runner_")
    started = time.perf_counter()
    description = describe_augmentation(augment)
    transform = resolve_augmentation(augment)
    extractor._check_width(X)
    source = extractor._source(X)
    base = extractor.cache_configs_(source)
    blocks = list(base)
    # One "block" of cached_features per (view, layer), view-major: the columns of its
    # result are then (n, n_views, d) in C order.
    block_keys = [[f"{b}@view{v}" for b in blocks] for v in range(n_views)]
    configs = {block_keys[v][j]: {**base[b], "augment": description,
                                  "seed": int(random_state), "view": v}
               for v in range(n_views) for j, b in enumerate(blocks)}
    widths = {block_keys[v][j]: extractor.feature_blocks_[b]
              for v in range(n_views) for j, b in enumerate(blocks)}
    result = cached_features(source, _view_compute(extractor, transform, n_views,
                                                   int(random_state), block_keys),
                             configs=configs, store=extractor._store(),
                             on_error=extractor.on_error, progress=progress,
                             desc=f"{n_views} views {extractor.model_name_ or 'network'}",
                             widths=widths, about={**extractor.about_(),
                                                   "augment": description})
    n = len(result.indices)
    per_view = result.features.shape[1] // n_views
    features = result.features.reshape(n, n_views, per_view)
    first = block_keys[0]
    columns = {b: result.blocks[k] for b, k in zip(blocks, first, strict=True)} \
        if result.blocks else {}
    return ViewExtraction(features, result.indices, result.errors,
                          n_computed=result.n_computed * n_views,
                          n_reused=result.n_reused * n_views,
                          seconds=time.perf_counter() - started, description=description,
                          blocks=columns)


def tta_features(extractor, X, *, augment="seed", n_views: int, random_state: int = 0,
                       include_clean: bool = True, progress: bool = False) -> np.ndarray:
    """Test-time augmentation: each image's features averaged over ``n_views`` views.

    The views come from (and go to) the store like :func:`extract_views`' (a test set's
    views are keyed by its images, so they never mix with training views of other images).

    Parameters
    ----------
    extractor : DeepFeatureExtractor
        A fitted extractor.
    X : images
        The images.
    augment, n_views, random_state, progress
        As in :func:`extract_views`.
    include_clean : bool, default=True
        Average the clean image's features with its views (``n_views + 1`` terms).

    Returns
    -------
    numpy.ndarray
        ``(n_ok, d)`` float32, in the order of the images that could be read.

    Examples
    --------
    >>> from featclf.extract import DeepFeatureExtractor
    >>> ext = DeepFeatureExtractor("lenet5", "random").fit()
    >>> images = np.random.default_rng(0).integers(0, 255, (4, 28, 28), dtype=np.uint8)
    >>> tta_features(ext, images, n_views=2).shape
    (4, 84)
    """
    views = extract_views(extractor, X, augment=augment, n_views=n_views,
                          random_state=random_state, progress=progress)
    if not include_clean:
        return views.mean()
    clean = extractor.extract(X)
    keep = np.isin(clean.indices, views.indices)
    stacked = np.concatenate([clean.features[keep][:, None].astype(np.float64),
                              views.features.astype(np.float64)], axis=1)
    return stacked.mean(axis=1).astype(np.float32)
