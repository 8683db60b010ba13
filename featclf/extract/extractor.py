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

import time
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.utils._set_output import _get_output_config
from sklearn.utils.validation import check_is_fitted

from featclf.data.inputs import as_image_source, check_image_shape, device_batches
from featclf.data.sources import ImageSource, InputError, SkippedImagesWarning
from featclf.data.transforms import (
    CastToFloat32,
    ImagePreprocess,
    ScaleToUnit,
    describe_preprocess,
)
from featclf.extract._params import (
    PARAMETER_CONSTRAINTS,
    clone_sharing,
    restore_runner,
    square_text,
    untrained_warning,
    values_as_given,
)
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
from featclf.params import check_params
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
        a given network's weights; for a torchvision model name it means its pretrained
        ``DEFAULT`` weights. ``"random"``: random weights from a fixed seed (0), so every fit
        builds the same network. The seed networks (``lenet5``, ``seed_cnn``) have no
        pretrained weights: by name without trained weights they are random, and ``fit`` warns
        (:class:`~featclf.models.network.UntrainedWeightsWarning`) unless ``"random"`` was
        asked for.
    layer : str, list of str or None, default=None
        None (or ``"penultimate"``): the input of the final classification layer (84 values
        for ``lenet5``, 512 for ``resnet18``, 2048 for ``resnet50``, fc7's 4096 for ``vgg16``).
        Otherwise a graph node name (``"layer3"``, ``"c5"``, ``"features.28"``; an unknown
        name's error lists the valid ones). ``"logits"``: the output of the final
        classification layer (the network's own class scores, before any softmax; their
        ``argmax`` is the network's prediction). A list computes every layer in one forward
        pass (``["layer3", "penultimate", "logits"]``), each kept in the store under its own
        key; ``transform`` puts their vectors side by side (``get_feature_names_out`` names
        each one's columns ``"<model>_<layer>_f<i>"``) and :meth:`extract` tells their columns
        apart (:meth:`FeatureExtraction.block <featclf.extract.FeatureExtraction.block>`).
    pooling : {"avg", "max", "flatten"}, default="avg"
        How a layer's ``(C, H, W)`` maps become vectors: spatial mean or max (``d = C``), or all
        values (``d = C*H*W``). Vectors (such as the penultimate features) pass unchanged.
    preprocess : "auto", None, ImagePreprocess or callable, default="auto"
        ``"auto"``: every image gets the network's own preprocessing (``network_.preprocess``:
        the checkpoint's, the torchvision weights' ``transforms()`` or the architecture's); for
        an ``nn.Module`` featclf knows nothing about, only pixels → float ``[0, 1]``
        (:class:`ScaleToUnit`). Float arrays count as intensities in ``[0, 1]`` (``ToTensor()``
        output) and give the same features as their ``uint8`` twins; other float values are
        refused (:mod:`featclf.data.inputs` says what each input means). None: the input is
        model-ready and reaches the network as it is but for the dtype (float32). An
        :class:`~featclf.data.ImagePreprocess` applies to every image like ``"auto"``; any
        other callable on ``(N, C, H, W)`` tensors gets the values as given.
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
    image_shape : (int, int), (int, int, int) or None, default=None
        ``(H, W)`` or ``(H, W, C)`` of the rows of a 2-D ``X`` (scikit-learn's
        ``(n_samples, n_features)``: each row one image flattened with its channels last); one
        side may be -1, inferred from the width. None: 2-D rows are square grey images
        ``(n, s*s)``. Other inputs carry their own shape.

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
        The preprocessing applied to every image.
    device_, precision_, channels_last_ : torch.device, str, bool
        Where and how the network runs; it moves to ``device_`` when features are first
        computed, so a call answered from the store runs no network at all.
    batch_size_ : int
        ``batch_size`` with ``"auto"`` resolved for ``device_`` and the preprocessing's size.
    runner_ : featclf.inference.BatchRunner
        Runs ``feature_model_`` over batches.
    n_features_in_ : int
        Only when ``fit`` was given rows of flattened images ``(n, k)``: ``k``, and
        ``transform`` refuses 2-D arrays of another width.

    See Also
    --------
    featclf.models.load_network : The network and its weights.
    featclf.store.FeatureStore : The on-disk cache of extracted features.
    featclf.extract.extract_views : Features of K seeded augmented views per image, cached.

    Examples
    --------
    >>> from featclf.data import load_mnist5k
    >>> from featclf.extract import DeepFeatureExtractor
    >>> X, y = load_mnist5k(return_X_y=True)
    >>> ext = DeepFeatureExtractor("lenet5", weights="random").fit()  # untrained, seed 0
    >>> ext.transform(X[:8]).shape
    (8, 84)
    >>> ext.get_feature_names_out()[:2]
    array(['lenet5_f0', 'lenet5_f1'], dtype=object)
    >>> DeepFeatureExtractor("lenet5", "random", layer="c3", pooling="max").fit_transform(
    ...     X[:8]).shape
    (8, 16)

    In a scikit-learn pipeline:

    >>> from sklearn.pipeline import make_pipeline
    >>> from sklearn.preprocessing import StandardScaler
    >>> from sklearn.svm import LinearSVC
    >>> pipe = make_pipeline(DeepFeatureExtractor("lenet5", weights="random"), StandardScaler(),
    ...                      LinearSVC())
    >>> pipe.fit(X[::10], y[::10]).score(X[5::10], y[5::10]) > 0.5
    True
    """

    _parameter_constraints: dict = PARAMETER_CONSTRAINTS

    def __init__(self, model, weights=None, layer=None, pooling="avg", preprocess="auto",
                 device="auto", precision="auto", batch_size="auto", num_workers=0, store=None,
                 on_error="raise", progress=False, compile=False, jpeg_draft=False,
                 image_shape=None):
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
        self.image_shape = image_shape

    # ------------------------------------------------------------------ scikit-learn plumbing
    def __sklearn_tags__(self):
        tags = super().__sklearn_tags__()
        tags.input_tags.two_d_array = True  # rows of flattened images (see image_shape)
        tags.input_tags.three_d_array = True  # (n, H, W) grey images
        tags.input_tags.allow_nan = False
        tags.requires_fit = True  # fit builds the network
        tags.non_deterministic = False  # inference only; random weights come from a fixed seed
        tags.transformer_tags.preserves_dtype = ["float32"]  # always float32 out
        tags.target_tags.required = False
        return tags

    def __sklearn_clone__(self):
        new = clone_sharing(self)  # a fitted model= and a store object are shared
        return super().__sklearn_clone__() if new is None else new

    def __setstate__(self, state):
        super().__setstate__(state)
        restore_runner(self.__dict__.get("runner_"), self.device, self.precision)

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
            without a known input size, and ``n_features_in_`` when it is rows of flattened
            images.
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
        check_image_shape(self.image_shape)
        source = self._source(X) if X is not None else None
        network = load_network(self.model, self.weights, seed=0)
        untrained_warning(network, network.arch, stacklevel=2)
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
        width = getattr(source, "row_width", None)
        if width is not None:
            self.n_features_in_ = int(width)
        elif hasattr(self, "n_features_in_"):
            del self.n_features_in_
        return self

    def _source(self, X) -> ImageSource:
        """``X`` as an image source; floats are pixel intensities unless ``preprocess`` takes
        values as given (None, or a callable of the user's own)."""
        return as_image_source(X, image_shape=self.image_shape,
                               model_ready=values_as_given(self.preprocess))

    def _probe_widths(self, blocks: list[str], source: ImageSource | None
                      ) -> dict[str, int | None]:
        """Each block's width: read off the head, or one forward pass of one image (CPU)."""
        network = self.network_
        if blocks == [PENULTIMATE] and network.feature_dim is not None:
            return {PENULTIMATE: int(network.feature_dim)}
        preprocess = self.preprocess_
        if source is not None and not isinstance(preprocess, ImagePreprocess):
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
                             f"{expected} features as input (flattened {square_text(expected)} "
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
        >>> ext = DeepFeatureExtractor("lenet5", "random", layer=["c5", "penultimate"],
        ...                            batch_size=4).fit()
        >>> [{k: v.shape for k, v in out.items()} for _, out, _ in ext.iter_features(
        ...     np.zeros((6, 28, 28), np.uint8))]
        [{'c5': (4, 120), 'penultimate': (4, 84)}, {'c5': (2, 120), 'penultimate': (2, 84)}]
        """
        check_is_fitted(self, "runner_")
        source = self._source(X)
        preprocess = self.preprocess_
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
            The images: files decoded at reduced scale (``jpeg_draft``) have their own
            configuration. Default: in-memory images.

        Returns
        -------
        dict of str to dict
            For each block (layer), a JSON-able configuration: feature-format version, model
            fingerprint (architecture and weights), layer (``"penultimate"`` for the head's
            input), pooling, preprocessing and precision.

        Examples
        --------
        >>> cfg = DeepFeatureExtractor("lenet5", "random").fit().cache_configs_()["penultimate"]
        >>> cfg["layer"], cfg["pooling"], cfg["precision"], cfg["preprocess"]["size"]
        ('penultimate', 'avg', 'fp32', [28, 28])
        """
        check_is_fitted(self, "runner_")
        source = self._source(X) if X is not None else None
        preprocess = self.preprocess_
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
        >>> DeepFeatureExtractor("lenet5", "random", layer="c5").fit().cache_config_()["layer"]
        'c5'
        """
        configs = self.cache_configs_(X)
        if len(configs) != 1:
            raise ValueError(f"this extractor has {len(configs)} layers {list(configs)}; use "
                             "cache_configs_() for one configuration per layer")
        return next(iter(configs.values()))

    def about_(self) -> dict[str, str]:
        """What the store shows about this extractor's configurations: model and weights.

        Examples
        --------
        >>> DeepFeatureExtractor("lenet5", weights="random").fit().about_()
        {'model': 'lenet5', 'weights': 'random weights (seed 0)'}
        """
        check_is_fitted(self, "runner_")
        model = self.model_name_ or type(self.feature_model_).__name__
        return {"model": model, "weights": self.network_.weights.description}

    def _store(self) -> FeatureStore | None:
        if self.store is None or isinstance(self.store, FeatureStore):
            return self.store
        return FeatureStore(self.store)

    def extract(self, X) -> FeatureExtraction:
        """Features of ``X`` with the bookkeeping the CLI and reports need.

        Parameters
        ----------
        X : images
            Anything :func:`~featclf.data.as_image_source` takes: arrays and tensors (one
            image ``(H, W[, C])`` or many), PIL images, paths, a folder, a list, Series or
            one-column DataFrame of paths, a ``torch.utils.data.Dataset``, ``image_files(...)``.

        Returns
        -------
        FeatureExtraction
            Vectors of the inputs that worked, their positions, the failures, how many images
            were computed or read from the store, and which columns each layer fills.

        Examples
        --------
        >>> ext = DeepFeatureExtractor("lenet5", weights="random").fit()
        >>> out = ext.extract(np.zeros((3, 28, 28), np.uint8))
        >>> out.features.shape, out.indices.tolist(), out.n_computed, out.errors
        ((3, 84), [0, 1, 2], 3, [])
        """
        check_is_fitted(self, "runner_")
        started = time.perf_counter()
        self._check_width(X)
        source = self._source(X)
        result = cached_features(source, self.iter_features,
                                 configs=self.cache_configs_(source), store=self._store(),
                                 on_error=self.on_error, progress=self.progress,
                                 desc=f"features {self.model_name_ or 'network'}",
                                 widths=self.feature_blocks_, about=self.about_())
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
