"""DeepFeatureExtractor: a trained CNN without its softmax head, as a scikit-learn transformer.

The extractor turns images (arrays, tensors, files, folders) into float32 feature vectors: by
default the input of the network's final classification layer (the "penultimate" features), or
any named layers, pooled into vectors. Its parts each have one home: the network and its
weights come from :func:`featclf.models.load_network`, batches run through
:class:`featclf.inference.BatchRunner`, and :func:`featclf.extract.cached.cached_features` is
the loop that reads from and writes to a :class:`~featclf.store.FeatureStore`, so that a second
run reads instead of recomputing.

Everything else is plain scikit-learn: put it first in a ``Pipeline``, tune the classifier
after it with ``GridSearchCV``, pickle the fitted pipeline.
"""

from __future__ import annotations

import copy
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from numbers import Integral

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils._set_output import _get_output_config
from sklearn.utils.validation import check_is_fitted

from featclf.data.inputs import as_image_source, device_batches
from featclf.data.sources import ImageSource, InputError, SkippedImagesWarning
from featclf.data.transforms import (
    CastToFloat32,
    ImagePreprocess,
    ScaleToUnit,
    describe_preprocess,
)
from featclf.devices import PRECISIONS, resolve_precision
from featclf.extract.cached import FeatureExtraction, cached_features
from featclf.extract.layers import (
    PENULTIMATE,
    block_names,
    feature_names,
    layer_feature_model,
    probe_widths,
)
from featclf.inference import BatchRunner, resolve_batch_size
from featclf.models import Network, load_network
from featclf.models.head import POOLINGS
from featclf.params import Interval, StrOptions, check_params
from featclf.store import FeatureStore

__all__ = [
    "FEATURE_FORMAT_VERSION",
    "CastToFloat32",
    "DeepFeatureExtractor",
    "ScaleToUnit",
    "SkippedImagesWarning",
    "describe_preprocess",
]

#: Version of the way featclf turns images into vectors. Part of every cache key, so that a
#: change in how features are computed (not only in the model) never serves stale vectors.
FEATURE_FORMAT_VERSION = 1


def _fitted_network(model) -> Network | None:
    """The network a fitted estimator given as ``model=`` holds (``network_``), else None.

    Examples
    --------
    >>> _fitted_network("lenet5") is None
    True
    """
    if isinstance(model, torch.nn.Module):
        return None
    network = getattr(model, "network_", None)
    return network if isinstance(network, Network) and network.module is not None else None


class DeepFeatureExtractor(TransformerMixin, BaseEstimator):
    """Turn images into deep features: a trained CNN without its classification head.

    ``transform`` runs the network up to the input of its final classification layer (or up to
    ``layer``) and returns one float32 vector per image. Inputs stream through in batches;
    nothing but the ``(n, d)`` output grows with the number of images.

    Parameters
    ----------
    model : str, path-like, torch.nn.Module, Network or fitted estimator
        The network, as :func:`featclf.models.load_network` takes it: a model name
        (``"lenet5"``, ``"resnet18"``, any torchvision classifier), a featclf checkpoint file,
        an ``nn.Module``, or a fitted estimator exposing its ``network_`` (a fitted
        ``SoftmaxClassifier``), which :func:`sklearn.base.clone` shares rather than copies, so
        the extractor works inside ``GridSearchCV`` without re-training it.
    weights : None, str, path-like or dict, default=None
        A ``.pt``/``.pth``/``.safetensors`` file (read with ``weights_only=True``), a state
        dict, or with a torchvision model name a weights name such as ``"DEFAULT"``. None keeps
        a given network's weights; for a model name it means random weights from a fixed seed
        (0), so every fit builds the same network (``"random"`` says so explicitly).
    layer : str, list of str or None, default=None
        None (or ``"penultimate"``): the input of the final classification layer (84 values
        for ``lenet5``, 512 for ``resnet18``, 2048 for ``resnet50``, fc7's 4096 for ``vgg16``).
        Otherwise a graph node name (``"layer3"``, ``"c5"``, ``"features.28"``; an unknown
        name's error lists the valid ones). A list computes every layer in one forward pass;
        ``transform`` puts their vectors side by side and :meth:`extract` tells their columns
        apart (:meth:`FeatureExtraction.block <featclf.extract.FeatureExtraction.block>`).
    pooling : {"avg", "max", "flatten"}, default="avg"
        How a layer's ``(C, H, W)`` maps become vectors: spatial mean or max (``d = C``), or all
        values (``d = C*H*W``). Vectors (such as the penultimate features) pass unchanged.
    preprocess : "auto", None, ImagePreprocess or callable, default="auto"
        ``"auto"``: uint8 images and image files get the network's own preprocessing
        (``network_.preprocess``: the checkpoint's, the torchvision weights' ``transforms()``
        or the architecture's); for an ``nn.Module`` featclf knows nothing about, only uint8 →
        float ``[0, 1]`` (:class:`ScaleToUnit`). Float ``(n, C, H, W)`` arrays and tensors
        count as model-ready and pass unchanged. None: every input reaches the network as it
        is but for the dtype (float32). An :class:`~featclf.data.ImagePreprocess` or a callable
        on ``(N, C, H, W)`` tensors is applied to every input, model-ready floats included.
    device : str or torch.device, default="auto"
        ``"auto"``: CUDA when available, else the CPU; or ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        ``"auto"``: fp32 on the CPU, bf16 autocast on CUDA. Features are float32 either way.
    batch_size : int or "auto", default="auto"
        Images per forward pass. ``"auto"``: 256 on a GPU; on the CPU the power of two nearest
        to 400,000 input pixels per batch, between 8 and 64 (8 at 224x224, 64 at 28x28), where
        the CPU forward measured fastest (``artifacts/benchmarks``; see ``batch_size_``).
    num_workers : int, default=0
        Worker processes decoding image files; in-memory arrays need none.
    store : None, str, path-like or FeatureStore, default=None
        A :class:`~featclf.store.FeatureStore` (or its directory) keeping computed vectors,
        keyed by the network's weights, layer, pooling, preprocessing, precision and each
        image's content; vectors found there are read instead of computed.
    on_error : {"raise", "skip"}, default="raise"
        What an unreadable image file does: stop with an error naming it, or be left out
        (``transform`` then warns with :class:`SkippedImagesWarning`; :meth:`extract` lists
        them).
    progress : bool, default=False
        Show a progress bar (images/s) on stderr.
    compile : bool, default=False
        Run the network through ``torch.compile``: a one-off compilation, then faster batches
        (``artifacts/benchmarks``); worth it for long jobs. A short last batch is padded so one
        graph serves every batch. Results match the eager network to about 1e-5.
    jpeg_draft : bool, default=False
        Decode JPEG files at a reduced scale (libjpeg's 1/2, 1/4 or 1/8) that keeps both sides
        at least twice the resize target: much faster on camera photos. The pixels differ
        slightly from a full decode, so their stored vectors are kept apart. Needs an
        :class:`~featclf.data.ImagePreprocess`; other inputs ignore it.

    Attributes
    ----------
    network_ : featclf.models.Network
        The :meth:`~featclf.models.Network.description` of the network it was built from:
        architecture, where its weights came from (``network_.weights``), preprocessing, head
        and fingerprint (the weights themselves are in ``feature_model_``).
    feature_model_ : torch.nn.Module
        The headless network (or the network up to ``layer``) with pooling: images → ``(n, d)``
        (for several layers, a dict of them).
    feature_blocks_ : dict of str to int or None
        The width of each block (layer) of the output, in order.
    n_features_out_ : int or None
        ``d`` for images of the preprocessing's output size (None when no preprocessing fixes
        a size and ``fit`` saw no ``X``; ``transform`` works anyway).
    model_name_ : str or None
        Registry name of the architecture, when known.
    model_fingerprint_ : str
        Digest of the network's class and every weight: part of the cache key.
    preprocess_ : callable
        The preprocessing applied to images that are not model-ready.
    device_, precision_, channels_last_ : torch.device, str, bool
        Where and how the network runs; it moves to ``device_`` when features are first
        computed, so a call answered from the store runs no network at all.
    batch_size_ : int
        ``batch_size`` with ``"auto"`` resolved for ``device_`` and the preprocessing's size.
    runner_ : featclf.inference.BatchRunner
        Runs ``feature_model_`` over batches.
    n_features_in_ : int
        Only when ``fit`` was given flattened square images ``(n, s*s)``: ``s*s``, and
        ``transform`` refuses 2-D arrays of another width.

    See Also
    --------
    featclf.models.load_network : The network and its weights.
    featclf.store.FeatureStore : The on-disk cache of extracted features.

    Examples
    --------
    >>> from featclf.data import load_mnist5k
    >>> from featclf.extract import DeepFeatureExtractor
    >>> X, y = load_mnist5k(return_X_y=True)
    >>> ext = DeepFeatureExtractor("lenet5").fit()      # random weights, fixed seed
    >>> ext.transform(X[:8]).shape
    (8, 84)
    >>> ext.get_feature_names_out()[:2]
    array(['lenet5_f0', 'lenet5_f1'], dtype=object)
    >>> DeepFeatureExtractor("lenet5", layer="c3", pooling="max").fit_transform(X[:8]).shape
    (8, 16)

    In a scikit-learn pipeline:

    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn.svm import LinearSVC
    >>> pipe = make_pipeline(DeepFeatureExtractor("lenet5"), StandardScaler(), LinearSVC())
    >>> pipe.fit(X[::10], y[::10]).score(X[5::10], y[5::10]) > 0.5
    True
    """

    _parameter_constraints: dict = {
        "layer": [None, str, list, tuple],
        "pooling": [StrOptions(set(POOLINGS))],
        "preprocess": [StrOptions({"auto"}), None, callable],
        "device": [str, torch.device],
        "precision": [StrOptions(set(PRECISIONS))],
        "batch_size": [Interval(Integral, 1, None, closed="left"), StrOptions({"auto"})],
        "num_workers": [Interval(Integral, 0, None, closed="left")],
        "store": [None, str, os.PathLike, FeatureStore],
        "on_error": [StrOptions({"raise", "skip"})],
        "progress": ["boolean"],
        "compile": ["boolean"],
        "jpeg_draft": ["boolean"],
    }

    def __init__(self, model, weights=None, layer=None, pooling="avg", preprocess="auto",
                 device="auto", precision="auto", batch_size="auto", num_workers=0, store=None,
                 on_error="raise", progress=False, compile=False, jpeg_draft=False):
        self.model = model
        self.weights = weights
        self.layer = layer
        self.pooling = pooling
        self.preprocess = preprocess
        self.device = device
        self.precision = precision
        self.batch_size = batch_size
        self.num_workers = num_workers
        self.store = store
        self.on_error = on_error
        self.progress = progress
        self.compile = compile
        self.jpeg_draft = jpeg_draft

    # ------------------------------------------------------------------ scikit-learn plumbing
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True  # (n, s*s): flattened square grey images
        tags.input_tags.three_d_array = True  # (n, H, W) grey images
        tags.input_tags.allow_nan = False
        tags.requires_fit = True  # fit builds the network
        tags.non_deterministic = False  # inference only; random weights come from a fixed seed
        tags.transformer_tags.preserves_dtype = ["float32"]  # always float32 out
        tags.target_tags.required = False
        return tags

    def __sklearn_clone__(self):
        # sklearn's clone would reset a fitted estimator given as model= (it clones parameters
        # that are estimators), leaving nothing to extract with, and deep-copy a store object.
        # Both are sources to read from, like a weights file, so the clone shares them.
        shared = {}
        if _fitted_network(self.model) is not None:
            shared["model"] = self.model
        if self.store is not None and not isinstance(self.store, str | os.PathLike):
            shared["store"] = self.store
        if not shared:
            return super().__sklearn_clone__()
        params = {name: shared[name] if name in shared else clone(value, safe=False)
                  for name, value in self.get_params(deep=False).items()}
        new = type(self)(**params)
        for attr in ("_metadata_request", "_sklearn_output_config", "_skl_callbacks"):
            if hasattr(self, attr):  # what BaseEstimator.__sklearn_clone__ carries over
                value = getattr(self, attr)
                setattr(new, attr, value if attr == "_skl_callbacks" else copy.deepcopy(value))
        return new

    def __setstate__(self, state):
        super().__setstate__(state)
        runner = self.__dict__.get("runner_")
        if runner is not None:
            # torch.fx graph modules (layer="...") do not keep eval mode through every copy.
            runner.module.eval()
            if (runner.device.type == "cuda" and not torch.cuda.is_available()
                    and self.device == "auto"):
                # Fitted on a GPU machine, loaded on one without: "auto" means the CPU here.
                runner.device = torch.device("cpu")
                runner.precision = resolve_precision(self.precision, runner.device)

    # ------------------------------------------------------------------ fitted state
    @property
    def feature_model_(self) -> torch.nn.Module:
        return self.runner_.module

    @property
    def device_(self) -> torch.device:
        return self.runner_.device

    @property
    def precision_(self) -> str:
        return self.runner_.precision

    @property
    def channels_last_(self) -> bool:
        return self.runner_.channels_last

    @property
    def model_name_(self) -> str | None:
        return self.network_.arch

    @property
    def model_fingerprint_(self) -> str:
        return self.network_.fingerprint

    @property
    def batch_size_(self) -> int:
        # Derived at every read, so set_params(batch_size=...) on a fitted extractor and a
        # device_ changed by unpickling take effect without refitting.
        return resolve_batch_size(self.batch_size, self.device_, self.preprocess_)

    # ------------------------------------------------------------------ fit
    def _resolve_preprocess(self, network: Network) -> Callable:
        if isinstance(self.preprocess, str):  # "auto", checked by check_params
            return network.preprocess if network.preprocess is not None else ScaleToUnit()
        if self.preprocess is None:
            return CastToFloat32()
        return self.preprocess

    def fit(self, X=None, y=None):
        """Build the network (load weights, remove the head, pick the layers) for extraction.

        The network stays on the CPU until features are first computed.

        Parameters
        ----------
        X : images, optional
            Not needed. When given it is validated; it fixes ``n_features_out_`` for networks
            without a known input size, and ``n_features_in_`` when it is a 2-D array.
        y : ignored
            Accepted for pipelines.

        Returns
        -------
        DeepFeatureExtractor
            ``self``.
        """
        check_params(self._parameter_constraints, self.get_params(deep=False),
                     type(self).__name__)
        blocks = block_names(self.layer)
        source = as_image_source(X) if X is not None else None
        network = load_network(self.model, self.weights, seed=0)
        features = layer_feature_model(network.module, blocks, head=network.head,
                                       pooling=self.pooling).to("cpu")
        # The feature model holds (a copy of) the weights; the extractor keeps the description,
        # so it does not carry (and pickle) the whole classifier a second time.
        self.network_ = network.description()
        self.preprocess_ = self._resolve_preprocess(network)
        self.runner_ = BatchRunner(features, device=self.device, precision=self.precision,
                                   compile=self.compile)
        if self.channels_last_:
            features.to(memory_format=torch.channels_last)
        self.feature_blocks_ = self._probe_widths(blocks, source)
        widths = list(self.feature_blocks_.values())
        self.n_features_out_ = None if None in widths else int(sum(widths))
        shape = getattr(X, "shape", None)
        if shape is not None and len(shape) == 2:
            self.n_features_in_ = int(shape[1])
        elif hasattr(self, "n_features_in_"):
            del self.n_features_in_
        return self

    def _probe_widths(self, blocks: list[str], source: ImageSource | None
                      ) -> dict[str, int | None]:
        """Each block's width: read off the head, or one forward pass of one image (CPU)."""
        network = self.network_
        if blocks == [PENULTIMATE] and network.feature_dim is not None:
            return {PENULTIMATE: int(network.feature_dim)}
        preprocess = self._preprocess_for(source) if source is not None else self.preprocess_
        if source is not None and (source.model_ready or not isinstance(preprocess,
                                                                          ImagePreprocess)):
            batch = next(source.subset([0]).iter_batches(batch_size=1, preprocess=preprocess,
                                                          on_error="skip"))
            probe = batch.images if len(batch.indices) else None
        elif isinstance(preprocess, ImagePreprocess):
            probe = torch.zeros(1, preprocess.channels, *preprocess.output_size)
        else:
            probe = None
        if probe is None:
            return dict.fromkeys(blocks)
        return probe_widths(self.feature_model_, blocks, self.runner_.layout(probe.float()))

    # ------------------------------------------------------------------ transform
    def _preprocess_for(self, source: ImageSource | None) -> Callable | None:
        """The preprocessing that images of ``source`` get (None: model-ready, left alone)."""
        if source is not None and source.model_ready and isinstance(self.preprocess, str):
            return None
        return self.preprocess_

    def _jpeg_draft_side(self, preprocess: Callable | None) -> int | None:
        """Smallest side a reduced-scale JPEG decode may give (None: decode at full size)."""
        if not self.jpeg_draft or not isinstance(preprocess, ImagePreprocess):
            return None
        return 2 * (preprocess.resize or max(preprocess.output_size))

    def _check_width(self, X) -> None:
        expected = getattr(self, "n_features_in_", None)
        shape = getattr(X, "shape", None)
        if expected is not None and shape is not None and len(shape) == 2 and \
                shape[1] != expected:
            raise ValueError(f"X has {shape[1]} features, but {type(self).__name__} is expecting "
                             f"{expected} features as input (flattened {_square_text(expected)} "
                             "images, as in fit)")

    def iter_features(self, X) -> Iterator[tuple[np.ndarray, dict[str, np.ndarray],
                                                 list[InputError]]]:
        """Compute features batch by batch, without the store: one forward per batch.

        :func:`~featclf.extract.cached.cached_features` (and so :meth:`extract`, the CLI and
        the Ray engine) consumes it.

        Parameters
        ----------
        X : images or ImageSource
            Anything :func:`~featclf.data.as_image_source` accepts.

        Yields
        ------
        indices : numpy.ndarray
            Positions in ``X`` of this batch's vectors.
        vectors : dict of str to numpy.ndarray
            Each block's ``(len(indices), d_block)`` float32 vectors.
        errors : list of InputError
            Inputs of this stretch that could not be read (``on_error="skip"``).

        Examples
        --------
        >>> ext = DeepFeatureExtractor("lenet5", layer=["c5", "penultimate"], batch_size=4).fit()
        >>> [{k: v.shape for k, v in out.items()} for _, out, _ in ext.iter_features(
        ...     np.zeros((6, 28, 28), np.uint8))]
        [{'c5': (4, 120), 'penultimate': (4, 84)}, {'c5': (2, 120), 'penultimate': (2, 84)}]
        """
        check_is_fitted(self, "runner_")
        source = as_image_source(X)
        preprocess = self._preprocess_for(source)
        batch_size = self.batch_size_
        batches, finish = device_batches(source, preprocess, batch_size=batch_size,
                                         num_workers=int(self.num_workers),
                                         on_error=self.on_error,
                                         on_gpu=self.device_.type == "cuda",
                                         jpeg_draft=self._jpeg_draft_side(preprocess))
        blocks = list(self.feature_blocks_)
        for indices, out, errors in self.runner_.run(batches, finish=finish,
                                                     batch_size=batch_size):
            if out is None:
                out = {b: np.empty((0, self.feature_blocks_[b] or 0), np.float32)
                       for b in blocks}
            elif not isinstance(out, dict):
                out = {blocks[0]: out}
            yield indices, out, errors

    def cache_configs_(self, X=None) -> dict[str, dict]:
        """Everything besides the image itself that decides each block's vectors (cache keys).

        Parameters
        ----------
        X : images or ImageSource, optional
            The preprocessing entry describes what images of this kind get (model-ready float
            arrays get none under ``preprocess="auto"``). Default: uint8 images and files.

        Returns
        -------
        dict of str to dict
            For each block (layer), a JSON-able configuration: feature-format version, model
            fingerprint (architecture and weights), layer (``"penultimate"`` for the head's
            input), pooling, preprocessing and precision.

        Examples
        --------
        >>> cfg = DeepFeatureExtractor("lenet5").fit().cache_configs_()["penultimate"]
        >>> cfg["layer"], cfg["pooling"], cfg["precision"], cfg["preprocess"]["size"]
        ('penultimate', 'avg', 'fp32', [28, 28])
        """
        check_is_fitted(self, "runner_")
        source = as_image_source(X) if X is not None else None
        preprocess = self._preprocess_for(source)
        common = {
            "format": FEATURE_FORMAT_VERSION,
            "model": self.model_fingerprint_,
            "pooling": self.pooling,
            "preprocess": describe_preprocess(preprocess),
            "precision": self.precision_,
        }
        draft = self._jpeg_draft_side(preprocess)
        if draft is not None and (source is None or source.kind == "files"):
            common["jpeg_draft"] = draft  # files decoded at reduced scale: their own vectors
        return {block: {**common, "layer": block} for block in self.feature_blocks_}

    def cache_config_(self, X=None) -> dict:
        """The cache configuration of a one-layer extractor (see :meth:`cache_configs_`).

        Examples
        --------
        >>> DeepFeatureExtractor("lenet5", layer="c5").fit().cache_config_()["layer"]
        'c5'
        """
        configs = self.cache_configs_(X)
        if len(configs) != 1:
            raise ValueError(f"this extractor has {len(configs)} layers {list(configs)}; use "
                             "cache_configs_() for one configuration per layer")
        return next(iter(configs.values()))

    def _store(self) -> FeatureStore | None:
        if self.store is None or isinstance(self.store, FeatureStore):
            return self.store
        return FeatureStore(self.store)

    def extract(self, X) -> FeatureExtraction:
        """Features of ``X`` with the bookkeeping the CLI and reports need.

        Parameters
        ----------
        X : images
            Arrays ``(n, H, W)``, ``(n, H, W, C)``, ``(n, C, H, W)``, ``(n, s*s)``, tensors, a
            list or Series of image paths, or ``image_files(...)``.

        Returns
        -------
        FeatureExtraction
            Vectors of the inputs that worked, their positions, the failures, how many images
            were computed or read from the store, and which columns each layer fills.

        Examples
        --------
        >>> ext = DeepFeatureExtractor("lenet5").fit()
        >>> out = ext.extract(np.zeros((3, 28, 28), np.uint8))
        >>> out.features.shape, out.indices.tolist(), out.n_computed, out.errors
        ((3, 84), [0, 1, 2], 3, [])
        """
        check_is_fitted(self, "runner_")
        started = time.perf_counter()
        self._check_width(X)
        source = as_image_source(X)
        result = cached_features(source, self.iter_features,
                                 configs=self.cache_configs_(source), store=self._store(),
                                 on_error=self.on_error, progress=self.progress,
                                 desc=f"features {self.model_name_ or 'network'}",
                                 widths=self.feature_blocks_)
        result.seconds = time.perf_counter() - started
        return result

    def transform(self, X):
        """Feature vectors of the images ``X``.

        Parameters
        ----------
        X : images
            See :meth:`extract`.

        Returns
        -------
        numpy.ndarray or pandas.DataFrame
            ``(n, d)`` float32 (several layers side by side). With ``on_error="skip"``, only
            the rows of readable images (a :class:`SkippedImagesWarning` says how many were
            left out). With ``set_output(transform="pandas")`` a DataFrame whose index is
            ``X``'s index (for a pandas input) or the positions in ``X`` of the rows, so it
            aligns with ``y``.
        """
        result = self.extract(X)
        if result.errors:
            n = len(result.indices) + len(result.errors)
            first = result.errors[0]
            warnings.warn(f"{len(result.errors)} of {n} images could not be read and were "
                          f"skipped (first: {first.source}: {first.reason}); the output has "
                          f"{len(result.indices)} rows. Use extract(X) to get their positions.",
                          SkippedImagesWarning, stacklevel=2)
        if _get_output_config("transform", self)["dense"] == "pandas":
            return self._as_dataframe(result, X)
        return result.features

    def _as_dataframe(self, result: FeatureExtraction, X):
        import pandas as pd

        if isinstance(X, pd.Series | pd.DataFrame):
            index = X.index[result.indices]
        else:
            index = pd.Index(result.indices)
        columns = self.get_feature_names_out() if result.features.shape[1] else None
        return pd.DataFrame(result.features, index=index, columns=columns)

    def get_feature_names_out(self, input_features=None):
        """Names of the output columns: ``"<model>_f<i>"`` (``"<model>_<layer>_f<i>"``).

        Parameters
        ----------
        input_features : ignored
            Pixels do not name features; accepted for scikit-learn's API.

        Returns
        -------
        numpy.ndarray of str
            ``n_features_out_`` names; ``"deepfeat_f<i>"`` for a network without a registry
            name. With several layers every name carries its layer.
        """
        check_is_fitted(self, "runner_")
        if self.n_features_out_ is None:
            raise ValueError("the feature length is unknown until images are seen: this network "
                             "has no preprocessing that fixes the input size; call fit(X) with "
                             "some images or pass preprocess=ImagePreprocess(size=...)")
        return feature_names(self.model_name_ or "deepfeat", self.feature_blocks_,
                             named=len(self.feature_blocks_) > 1 or self.layer is not None)


def _square_text(width: int) -> str:
    """``"28x28"`` for 784: how a flattened square image's width reads in messages."""
    side = math.isqrt(width)
    return f"{side}x{side}" if side * side == width else f"{width}-pixel"
