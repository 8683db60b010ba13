"""DeepFeatureExtractor: a trained CNN without its softmax head, as a scikit-learn transformer.

The extractor turns images (arrays, tensors, files, folders) into float32 feature vectors: by
default the input of the network's final classification layer (the "penultimate" features), or
any named layer, pooled into vectors. It streams batches through the network on the CPU or a
GPU, so memory holds one batch plus the ``(n, d)`` output, and it can keep its outputs in a
:class:`~featclf.store.FeatureStore` so that a second run reads instead of recomputing.

Everything else is plain scikit-learn: put it first in a ``Pipeline``, tune the classifier
after it with ``GridSearchCV``, pickle the fitted pipeline.
"""

from __future__ import annotations

import copy
import itertools
import math
import os
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from sklearn.base import BaseEstimator, TransformerMixin, clone
from sklearn.utils._set_output import _get_output_config
from sklearn.utils.validation import check_is_fitted
from torch import nn

from featclf.data.inputs import (
    ImageSource,
    InputError,
    SkippedImagesWarning,
    as_image_source,
    check_on_error,
)
from featclf.data.transforms import ImagePreprocess
from featclf.devices import autocast, resolve_device, resolve_precision
from featclf.fingerprint import module_fingerprint
from featclf.models import feature_model, find_head, get_model, get_model_spec, read_checkpoint
from featclf.models.head import POOLINGS
from featclf.models.registry import default_preprocess
from featclf.models.weights import (
    Checkpoint,
    WeightsError,
    load_state_dict_checked,
    looks_like_weight_file,
)
from featclf.progress import progress_bar

__all__ = [
    "FEATURE_FORMAT_VERSION",
    "CastToFloat32",
    "DeepFeatureExtractor",
    "FeatureExtraction",
    "ScaleToUnit",
    "SkippedImagesWarning",
    "describe_preprocess",
]

#: Version of the way featclf turns images into vectors. Part of every cache key, so that a
#: change in how features are computed (not only in the model) never serves stale vectors.
FEATURE_FORMAT_VERSION = 1


@dataclass
class FeatureExtraction:
    """The outcome of :meth:`DeepFeatureExtractor.extract`.

    Attributes
    ----------
    features : numpy.ndarray
        ``(n_ok, d)`` float32 feature vectors, one row per input that worked, in input order.
    indices : numpy.ndarray
        ``(n_ok,)`` positions in ``X`` of the rows of ``features``.
    errors : list of InputError
        The inputs that could not be read (only with ``on_error="skip"``).
    n_computed : int
        Vectors computed by the network in this call.
    n_reused : int
        Vectors read from the feature store instead.
    seconds : float
        Wall-clock time of the call.
    """

    features: np.ndarray
    indices: np.ndarray
    errors: list[InputError] = field(default_factory=list)
    n_computed: int = 0
    n_reused: int = 0
    seconds: float = 0.0


class ScaleToUnit:
    """Preprocessing for a network featclf knows nothing about: uint8 ``0-255`` → float ``[0, 1]``.

    Float images pass unchanged (as float32). This is what ``preprocess="auto"`` means for an
    ``nn.Module`` given without preprocessing information: no resizing, no normalisation.

    Examples
    --------
    >>> ScaleToUnit()(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)).max().item()
    1.0
    """

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        if images.dtype == torch.uint8:
            return images.float().div_(255.0)
        return images.float()

    def to_dict(self) -> dict:
        """JSON-able description (used in cache keys)."""
        return {"scale_uint8_to_unit": True}

    def __repr__(self) -> str:
        return "ScaleToUnit()"


class CastToFloat32:
    """``preprocess=None``: images reach the network unchanged except for the dtype (float32).

    Examples
    --------
    >>> CastToFloat32()(torch.full((1, 1, 2, 2), 255, dtype=torch.uint8)).max().item()
    255.0
    """

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        return images.float()

    def to_dict(self) -> dict:
        """JSON-able description (used in cache keys)."""
        return {"cast": "float32"}

    def __repr__(self) -> str:
        return "CastToFloat32()"


def describe_preprocess(preprocess: Callable | None) -> dict | str | None:
    """A JSON-able description of a preprocessing callable, for cache keys and reports.

    ``ImagePreprocess`` (and featclf's own callables) describe themselves with ``to_dict()``;
    any other callable is described by its ``repr``: give it a stable, informative repr (a
    dataclass, say) if its cached features should be found again in a later process.

    Examples
    --------
    >>> describe_preprocess(None) is None
    True
    >>> describe_preprocess(ImagePreprocess(28, 1, (0.5,), (0.5,)))["size"]
    [28, 28]
    """
    if preprocess is None:
        return None
    to_dict = getattr(preprocess, "to_dict", None)
    if callable(to_dict):
        return to_dict()
    return repr(preprocess)


@dataclass
class _Network:
    """A classifier network and what featclf knows about it."""

    module: nn.Module
    arch: str | None  # registry name, when known (names features, enters fingerprints)
    preprocess: Callable | None  # the network's own preprocessing, when known
    head: str | None  # its final classification layer, when known


def _deterministic_build(name: str, weights) -> nn.Module:
    """``get_model``; random weights come from a fixed seed so that every fit agrees."""
    if weights is not None:
        return get_model(name, weights=weights)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return get_model(name)


def _read_weights(weights) -> tuple[dict, str, dict | None]:
    """State dict, its description and featclf metadata of a ``weights`` file or state dict."""
    if isinstance(weights, Checkpoint):
        return weights.state_dict, weights.path, weights.metadata
    if looks_like_weight_file(weights):
        ck = read_checkpoint(weights)
        return ck.state_dict, ck.path, ck.metadata
    if isinstance(weights, dict):
        return weights, "the given state dict", None
    raise WeightsError(f"weights={weights!r}: for a network given as an object, pass None, a "
                       ".pt/.safetensors file or a state dict (torchvision weights names work "
                       "only with a model name such as model='resnet18')")


def _with_weights(module: nn.Module, weights) -> nn.Module:
    """``module`` itself when ``weights`` is None, else a copy with those weights loaded."""
    if weights is None:
        return module
    state, where, _ = _read_weights(weights)
    loaded = copy.deepcopy(module)
    load_state_dict_checked(loaded, state, source=where)
    return loaded


def _head_or_none(module: nn.Module) -> str | None:
    try:
        return find_head(module)
    except ValueError:  # no Linear layer: only layer="<node>" can work, and says so
        return None


def _is_model_name(name: str) -> bool:
    try:
        get_model_spec(name)
    except ValueError:
        return False
    return True


def _preprocess_from_metadata(meta: dict | None, fallback: Callable | None) -> Callable | None:
    if meta and meta.get("preprocess"):
        return ImagePreprocess.from_dict(meta["preprocess"])
    return fallback


def _network_from_name(name: str, weights) -> _Network:
    spec = get_model_spec(name)
    meta = None
    if weights is not None and (looks_like_weight_file(weights)
                                and not isinstance(weights, Checkpoint)):
        weights = read_checkpoint(weights)
    if isinstance(weights, Checkpoint):
        meta = weights.metadata
        if meta and meta.get("model") not in (None, name):
            raise WeightsError(f"weights={weights.path!r} is a checkpoint of model "
                               f"{meta['model']!r}, not {name!r}; pass model={weights.path!r} "
                               "alone to use it")
    module = _deterministic_build(name, weights)
    head = (meta or {}).get("head") or spec.head
    # A featclf checkpoint's metadata names its preprocessing; otherwise torchvision weights
    # bring their own recipe (resnet50's default weights resize to 232, not 256).
    fallback = spec.preprocess if meta is not None else default_preprocess(name, weights)
    return _Network(module, name, _preprocess_from_metadata(meta, fallback), head)


def _network_from_checkpoint(path, weights) -> _Network:
    if weights is not None:
        raise ValueError(f"model={os.fspath(path)!r} is a checkpoint file and carries its own "
                         f"weights; leave weights=None (got weights={weights!r})")
    ck = read_checkpoint(path)
    meta = ck.metadata or {}
    name = meta.get("model")
    if not name:
        raise WeightsError(f"{ck.path}: this file has no featclf metadata naming its "
                           "architecture (a bare state dict); pass the architecture and the "
                           f"file separately: model='<name>', weights={ck.path!r}")
    spec = get_model_spec(name)
    module = get_model(name, weights=ck)
    head = meta.get("head") or spec.head
    return _Network(module, name, _preprocess_from_metadata(meta, spec.preprocess), head)


def _network_from_fitted(holder, weights) -> _Network:
    """A fitted estimator holding its network in ``module_`` (e.g. ``SoftmaxClassifier``)."""
    module = getattr(holder, "module_", None)
    if not isinstance(module, nn.Module):
        raise ValueError(
            f"model is a {type(holder).__name__} without a fitted network (no module_): fit it "
            "before passing it as model=, or pass its saved checkpoint path (clf.save(path)).")
    spec = getattr(holder, "model_spec_", None)
    name = getattr(holder, "model_name_", None) or getattr(spec, "name", None)
    if spec is None and isinstance(name, str) and _is_model_name(name):
        spec = get_model_spec(name)
    preprocess = getattr(holder, "preprocess_", None)
    if preprocess is None:
        preprocess = getattr(spec, "preprocess", None)
    head = getattr(holder, "head_", None) or getattr(spec, "head", None) or _head_or_none(module)
    return _Network(_with_weights(module, weights), name if isinstance(name, str) else None,
                    preprocess, head)


def _holds_fitted_network(model) -> bool:
    """Whether ``model`` is an object carrying a fitted network in ``module_``.

    Examples
    --------
    >>> _holds_fitted_network("lenet5"), _holds_fitted_network(nn.Linear(2, 2))
    (False, False)
    """
    return not isinstance(model, nn.Module) and isinstance(getattr(model, "module_", None),
                                                           nn.Module)


def _load_network(model, weights=None) -> _Network:
    """Resolve the ``model``/``weights`` arguments of :class:`DeepFeatureExtractor`.

    Returns
    -------
    _Network
        The classifier network (on the CPU or wherever a fitted estimator left it), its
        registry name if known, its preprocessing if known, and its head layer's name.
    """
    if isinstance(model, nn.Module):
        return _Network(_with_weights(model, weights), None, None, _head_or_none(model))
    if _holds_fitted_network(model) or hasattr(model, "get_params"):
        return _network_from_fitted(model, weights)
    if isinstance(model, str) and _is_model_name(model):
        return _network_from_name(model, weights)
    if isinstance(model, str | os.PathLike) and looks_like_weight_file(model):
        return _network_from_checkpoint(model, weights)
    if isinstance(model, str):
        get_model_spec(model)  # raises "unknown model ... Did you mean ...?"
    raise ValueError(f"model={model!r} is not a network: pass a model name (see "
                     "featclf.models.list_models()), an nn.Module, a checkpoint file saved by "
                     "featclf, or a fitted SoftmaxClassifier")


#: batch_size="auto" on the CPU: input pixels per batch (see DeepFeatureExtractor).
AUTO_BATCH_PIXELS_CPU = 400_000
AUTO_BATCH_GPU = 256


def resolve_batch_size(batch_size, device: torch.device, preprocess: Callable | None) -> int:
    """The batch size ``"auto"`` stands for on ``device`` with ``preprocess``'s image size.

    Parameters
    ----------
    batch_size : int or "auto"
        The parameter; an int is returned as it is.
    device : torch.device
        Where the network runs.
    preprocess : callable or None
        Its ``output_size`` (an :class:`~featclf.data.ImagePreprocess`) gives the input size;
        without one the CPU gets 64.

    Returns
    -------
    int

    Examples
    --------
    >>> from featclf.data import ImagePreprocess
    >>> cpu = torch.device("cpu")
    >>> [resolve_batch_size("auto", cpu, ImagePreprocess(s)) for s in (224, 112, 64, 28)]
    [8, 32, 64, 64]
    >>> resolve_batch_size("auto", torch.device("cuda"), None), resolve_batch_size(5, cpu, None)
    (256, 5)
    """
    if not isinstance(batch_size, str):
        return int(batch_size)
    if device.type != "cpu":
        return AUTO_BATCH_GPU
    size = getattr(preprocess, "output_size", None)
    if size is None:
        return 64
    ideal = AUTO_BATCH_PIXELS_CPU / (size[0] * size[1])
    return int(min(64, max(8, 2 ** round(math.log2(ideal)))))


def _module_device(module: nn.Module) -> torch.device:
    tensor = next(itertools.chain(module.parameters(), module.buffers()), None)
    return tensor.device if tensor is not None else torch.device("cpu")


class DeepFeatureExtractor(TransformerMixin, BaseEstimator):
    """Turn images into deep features: a trained CNN without its classification head.

    ``transform`` runs the network up to the input of its final classification layer (or up to
    ``layer``) and returns one float32 vector per image. Inputs stream through in batches;
    nothing but the ``(n, d)`` output grows with the number of images.

    Parameters
    ----------
    model : str, path-like, torch.nn.Module or fitted estimator
        The network. A model name (``"lenet5"``, ``"seed_cnn"``, ``"resnet18"``, any name from
        :func:`featclf.models.list_models` or torchvision); a checkpoint file saved by featclf
        (``SoftmaxClassifier.save``, ``featclf.models.save_checkpoint``) whose metadata names the
        architecture, its preprocessing and its head; an ``nn.Module``; or a fitted estimator
        holding its network in ``module_`` (a fitted ``SoftmaxClassifier``), whose
        ``preprocess_``, ``model_name_``/``model_spec_`` and ``head_`` are used when present.
        A fitted estimator is shared, not copied, by :func:`sklearn.base.clone`, so the
        extractor works inside ``GridSearchCV`` without re-training it.
    weights : None, str, path-like or dict, default=None
        Weights for ``model``: a ``.pt``/``.pth``/``.safetensors`` file (read with
        ``weights_only=True``), a state dict, or with a torchvision model name a torchvision
        weights name such as ``"DEFAULT"``. None keeps a given network's weights; for a model
        name it means random weights, drawn from a fixed seed (0) so that every fit builds the
        same network.
    layer : str or None, default=None
        None: the input of the final classification layer (84 values for ``lenet5``, 128 for
        ``seed_cnn``, 512 for ``resnet18``, 2048 for ``resnet50``, fc7's 4096 for ``vgg16`` and
        ``alexnet``). Otherwise a graph node name (``"layer3"``, ``"c5"``,
        ``"features.28"``); an unknown name raises an error listing the valid ones
        (:func:`featclf.models.layer_names`).
    pooling : {"avg", "max", "flatten"}, default="avg"
        How a layer's ``(C, H, W)`` maps become vectors: spatial mean or max (``d = C``), or all
        values (``d = C*H*W``). Vectors (such as the penultimate features) pass unchanged.
    preprocess : "auto", None, ImagePreprocess or callable, default="auto"
        ``"auto"``: uint8 images and image files get the network's own preprocessing (resize,
        channels, normalisation: the model's :class:`~featclf.data.ImagePreprocess`, from the
        checkpoint, the fitted estimator, the torchvision weights' own ``transforms()`` (resnet50's
        default weights resize to 232) or the registry); for an ``nn.Module`` featclf knows
        nothing about, only uint8 → float ``[0, 1]`` (:class:`ScaleToUnit`). Float
        ``(n, C, H, W)`` arrays and tensors count as model-ready and are passed unchanged.
        None: every input reaches the network unchanged except for the dtype (float32); files
        must then decode to one size. An :class:`~featclf.data.ImagePreprocess` or any callable
        taking and returning ``(N, C, H, W)`` tensors is applied to every input, model-ready
        floats included.
    device : str or torch.device, default="auto"
        ``"auto"``: CUDA when available, else the CPU; or ``"cpu"``, ``"cuda"``, ``"cuda:1"``.
    precision : {"auto", "fp32", "bf16", "fp16"}, default="auto"
        ``"auto"``: fp32 on the CPU, bf16 autocast on CUDA. Features are float32 either way.
    batch_size : int or "auto", default="auto"
        Images per forward pass. ``"auto"``: 256 on a GPU; on the CPU the power of two nearest
        to 400,000 input pixels per batch, between 8 and 64 (8 at 224x224, 64 at 28x28), where
        the forward measured fastest on these CPUs: resnet50 at 224 px runs at 20 img/s at
        batch 8 but 15 at 64 and 8 at 128, as the batch's activations outgrow the caches (see
        ``batch_size_``).
    num_workers : int, default=0
        Worker processes decoding image files (``torch.utils.data.DataLoader``); in-memory
        arrays need none.
    store : None, str, path-like or FeatureStore, default=None
        A :class:`~featclf.store.FeatureStore` (or its directory) that keeps computed vectors
        keyed by the network's weights, layer, pooling, preprocessing, precision and each
        image's content; vectors found there are read instead of computed.
    on_error : {"raise", "skip"}, default="raise"
        What an unreadable image file does: stop with an error naming it, or be left out of the
        output (``transform`` then warns with :class:`SkippedImagesWarning`; :meth:`extract`
        lists them).
    progress : bool, default=False
        Show a progress bar (images/s) on stderr.
    compile : bool, default=False
        Run the network through ``torch.compile`` (TorchInductor). The first batch pays the
        compilation (resnet18 on 2 CPU cores: 21 s the first time, 4 s once TorchInductor's
        on-disk cache holds it); later batches run faster (1.16x for resnet18 at batch 32 on
        2 CPU cores, see ``artifacts/benchmarks``). A short last batch is padded to
        ``batch_size`` so that one compiled graph serves every batch. Worth it for long jobs,
        not for a few hundred images. Results match the eager network to about 1e-5.
    jpeg_draft : bool, default=False
        Decode JPEG files at a reduced scale (libjpeg's DCT scaling: 1/2, 1/4 or 1/8) that keeps
        both sides at least twice the preprocessing's resize target, before the usual resize.
        Decoding and preprocessing a 12-megapixel photo then takes 30 instead of 125 ms here
        (4.1x), which decides the speed of CPU jobs over camera photos. The pixels differ
        slightly from a full-size decode (vectors stay within a few percent), so stored
        vectors are kept apart from full-decode ones. Needs an
        :class:`~featclf.data.ImagePreprocess` (to know the size); other inputs ignore it.

    Attributes
    ----------
    feature_model_ : torch.nn.Module
        The headless network (or the network up to ``layer``) with pooling: images → ``(n, d)``.
    n_features_out_ : int or None
        ``d``, the length of the vectors for images of the preprocessing's output size (None
        when no preprocessing fixes a size and ``fit`` saw no ``X``; ``transform`` works anyway).
    model_name_ : str or None
        Registry name of the architecture, when known.
    model_fingerprint_ : str
        Digest of the architecture and every weight of the network: part of the cache key.
    preprocess_ : callable
        The preprocessing applied to images that are not model-ready.
    device_ : torch.device
        Where the network runs. It is moved there when features are first computed, so a call
        answered entirely from the store runs no network at all.
    precision_ : str
        ``"fp32"``, ``"bf16"`` or ``"fp16"``.
    batch_size_ : int
        ``batch_size`` with ``"auto"`` resolved for ``device_`` and the preprocessing's size.
    channels_last_ : bool
        Whether network and inputs use the channels-last memory layout (convolutional networks:
        1.2-2x faster on these CPUs).
    n_features_in_ : int
        Only when ``fit`` was given a 2-D array of flattened square images ``(n, s*s)``: ``s*s``.
        ``transform`` then refuses 2-D arrays of another width. Image inputs of any other kind
        have no fixed "number of features", so the attribute is absent.

    See Also
    --------
    featclf.models.feature_model : The headless network on its own.
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
        if _holds_fitted_network(self.model):
            shared["model"] = self.model
        if self.store is not None and not isinstance(self.store, str | os.PathLike):
            shared["store"] = self.store
        if not shared:
            return super().__sklearn_clone__()
        params = {name: shared[name] if name in shared else clone(value, safe=False)
                  for name, value in self.get_params(deep=False).items()}
        new = type(self)(**params)
        if hasattr(self, "_metadata_request"):
            new._metadata_request = copy.deepcopy(self._metadata_request)
        if hasattr(self, "_sklearn_output_config"):
            new._sklearn_output_config = copy.deepcopy(self._sklearn_output_config)
        if hasattr(self, "_skl_callbacks"):
            new._skl_callbacks = self._skl_callbacks
        return new

    def __getstate__(self):
        # A compiled graph does not pickle; the copy compiles again when it first runs.
        state = {k: v for k, v in super().__getstate__().items() if k != "_compiled"}
        model = state.get("feature_model_")
        if model is not None and _module_device(model).type != "cpu":
            # Pickles must load on machines without the GPU: bring the weights home first.
            # The next transform moves them back to device_.
            model.to("cpu")
        return state

    def __setstate__(self, state):
        super().__setstate__(state)
        model = self.__dict__.get("feature_model_")
        if model is not None:
            # torch.fx graph modules (layer="...") do not keep eval mode through every copy.
            model.eval()
            if (self.device_.type == "cuda" and not torch.cuda.is_available()
                    and self.device == "auto"):
                # Fitted on a GPU machine, loaded on one without: "auto" means the CPU here.
                self.device_ = torch.device("cpu")
                self.precision_ = resolve_precision(self.precision, self.device_)

    # ------------------------------------------------------------------ fit
    def _check_params(self) -> None:
        if self.pooling not in POOLINGS:
            raise ValueError(f"pooling={self.pooling!r} is not one of {POOLINGS}")
        if self.layer is not None and not isinstance(self.layer, str):
            raise ValueError(f"layer={self.layer!r} must be None or a graph node name (str)")
        for name in ("batch_size", "num_workers"):
            value = getattr(self, name)
            if name == "batch_size" and isinstance(value, str) and value == "auto":
                continue
            low = 1 if name == "batch_size" else 0
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
                also = "'auto' or " if name == "batch_size" else ""
                raise ValueError(f"{name}={value!r} must be {also}an integer >= {low}")
        check_on_error(self.on_error)
        for name in ("compile", "jpeg_draft"):
            if not isinstance(getattr(self, name), bool | np.bool_):
                raise ValueError(f"{name}={getattr(self, name)!r} must be True or False")
        if not (self.preprocess is None or callable(self.preprocess)
                or (isinstance(self.preprocess, str) and self.preprocess == "auto")):
            raise ValueError(f"preprocess={self.preprocess!r} must be 'auto', None, an "
                             "ImagePreprocess or a callable on (N, C, H, W) tensors")

    def _resolve_preprocess(self, network: _Network) -> Callable:
        if isinstance(self.preprocess, str):  # "auto", checked by _check_params
            return network.preprocess if network.preprocess is not None else ScaleToUnit()
        if self.preprocess is None:
            return CastToFloat32()
        return self.preprocess

    def fit(self, X=None, y=None):
        """Build the network (load weights, remove the head, pick the layer) for extraction.

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
        self._check_params()
        source = as_image_source(X) if X is not None else None
        device = resolve_device(self.device)
        if device.type == "cuda" and device.index is None:  # name the GPU its weights go to
            device = torch.device("cuda", torch.cuda.current_device())
        precision = resolve_precision(self.precision, device)
        network = _load_network(self.model, self.weights)
        preprocess = self._resolve_preprocess(network)
        fingerprint = module_fingerprint(network.module, network.arch)
        features = feature_model(network.module, layer=self.layer, head=network.head,
                                 pooling=self.pooling).to("cpu")
        channels_last = any(isinstance(m, nn.Conv2d) for m in features.modules())
        if channels_last:
            features.to(memory_format=torch.channels_last)
        self.feature_model_ = features
        self.model_name_ = network.arch
        self.model_fingerprint_ = fingerprint
        self.preprocess_ = preprocess
        self.device_ = device
        self.precision_ = precision
        self.channels_last_ = channels_last
        self.n_features_out_ = self._probe_feature_dim(network, source)
        shape = getattr(X, "shape", None)
        if shape is not None and len(shape) == 2:
            self.n_features_in_ = int(shape[1])
        elif hasattr(self, "n_features_in_"):
            del self.n_features_in_
        return self

    def _probe_feature_dim(self, network: _Network, source: ImageSource | None) -> int | None:
        """The feature length: read off the head, or one forward pass of one image on the CPU."""
        if self.layer is None and network.head is not None:
            head = network.module.get_submodule(network.head)
            if isinstance(head, nn.Linear):
                return int(head.in_features)
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
            return None
        with torch.inference_mode():
            return int(self.feature_model_(self._layout(probe.float())).shape[1])

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

    @property
    def batch_size_(self) -> int:
        # Derived at every read, so set_params(batch_size=...) on a fitted extractor and a
        # device_ changed by unpickling take effect without refitting.
        return resolve_batch_size(self.batch_size, self.device_, self.preprocess_)

    def _layout(self, images: torch.Tensor) -> torch.Tensor:
        if self.channels_last_ and images.ndim == 4:
            return images.contiguous(memory_format=torch.channels_last)
        return images

    def _network_on_device(self) -> nn.Module:
        if self.device_.type == "cuda" and not torch.cuda.is_available():
            raise ValueError(f"this extractor runs on {self.device_}, but torch sees no GPU "
                             "here; set_params(device='cpu') (or 'auto') and fit again")
        model = self.feature_model_
        where = _module_device(model)
        if where.type != self.device_.type or self.device_.index not in (None, where.index):
            model.to(self.device_)
        # Cheap, and repairs graph modules (layer="...") that a copy left in training mode.
        model.eval()
        if not self.compile:
            return model
        compiled = self.__dict__.get("_compiled")
        if compiled is None or compiled[0] is not model:
            # Static shapes: one graph for batch_size (short batches are padded in _forward).
            compiled = (model, torch.compile(model, dynamic=False))
            self._compiled = compiled
        return compiled[1]

    def _check_width(self, X) -> None:
        expected = getattr(self, "n_features_in_", None)
        shape = getattr(X, "shape", None)
        if expected is not None and shape is not None and len(shape) == 2 and \
                shape[1] != expected:
            raise ValueError(f"X has {shape[1]} features, but {type(self).__name__} is expecting "
                             f"{expected} features as input (flattened {_square_text(expected)} "
                             "images, as in fit)")

    def iter_features(self, X) -> Iterator[tuple[np.ndarray, np.ndarray, list[InputError]]]:
        """Compute features batch by batch, without the store.

        This is the one place where the network runs; :meth:`extract` and the feature store
        both consume it.

        Parameters
        ----------
        X : images or ImageSource
            Anything :func:`~featclf.data.as_image_source` accepts.

        Yields
        ------
        indices : numpy.ndarray
            Positions in ``X`` of this batch's vectors.
        vectors : numpy.ndarray
            ``(len(indices), d)`` float32.
        errors : list of InputError
            Inputs of this stretch that could not be read (``on_error="skip"``).

        Examples
        --------
        >>> ext = DeepFeatureExtractor("lenet5", batch_size=4).fit()
        >>> [v.shape for _, v, _ in ext.iter_features(np.zeros((6, 28, 28), np.uint8))]
        [(4, 84), (2, 84)]
        """
        check_is_fitted(self, "feature_model_")
        source = as_image_source(X)
        preprocess = self._preprocess_for(source)
        device = self.device_
        on_gpu = device.type == "cuda"
        batch_size = self.batch_size_
        if source.kind == "array":
            # Arrays are batched as they are and preprocessed where the network runs: on a GPU
            # the uint8 batch crosses the bus (4x fewer bytes than float) and is resized there.
            on_host = source.images.device.type == "cpu"  # a CUDA tensor input stays put
            batches = source.iter_batches(batch_size=batch_size, preprocess=None,
                                          pin_memory=on_gpu and on_host)
            on_device = preprocess
        else:
            load, on_device = preprocess, None
            if isinstance(preprocess, ImagePreprocess):
                # Workers decode, resize and crop in uint8; scaling and normalising happen where
                # the network runs, so batches cross processes and the bus at a quarter the size.
                load, on_device = preprocess.geometry, preprocess.finish
            batches = source.iter_batches(batch_size=batch_size, preprocess=load,
                                          num_workers=int(self.num_workers),
                                          on_error=self.on_error, pin_memory=on_gpu,
                                          jpeg_draft=self._jpeg_draft_side(preprocess))
        model = self._network_on_device()
        width = self.n_features_out_ or 0
        pending = None  # on a GPU, batch k's copy back overlaps batch k+1's forward
        for batch in batches:
            if len(batch.indices) == 0:
                vectors: torch.Tensor | np.ndarray = np.empty((0, width), np.float32)
                ready = None
            else:
                vectors = self._forward(model, batch.images, on_device, batch_size)
                width = vectors.shape[1]
                ready = None
                if on_gpu:
                    host = torch.empty(vectors.shape, dtype=torch.float32, pin_memory=True)
                    host.copy_(vectors, non_blocking=True)
                    ready = torch.cuda.Event()
                    ready.record()
                    vectors = host
            if pending is not None:
                yield _finish(*pending)
            pending = (batch.indices, vectors, batch.errors, ready)
        if pending is not None:
            yield _finish(*pending)

    def _forward(self, model: nn.Module, images: torch.Tensor,
                 preprocess: Callable | None, batch_size: int) -> torch.Tensor:
        # Inference mode and autocast are entered per batch, never across a yield, so the
        # code consuming the generator does not run inside them.
        with torch.inference_mode():
            x = images.to(self.device_, non_blocking=True)
            if preprocess is not None:
                x = preprocess(x)
            if x.dtype != torch.float32:
                x = x.float()
            n = x.shape[0]
            if self.compile and n < batch_size:
                # Eval-mode networks treat images independently: zero padding changes no
                # vector, and spares a recompilation for the short last batch.
                x = torch.cat([x, x.new_zeros((batch_size - n, *x.shape[1:]))])
            with autocast(self.device_, self.precision_):
                out = model(self._layout(x))
            return out[:n].float()

    def cache_config_(self, X=None) -> dict:
        """Everything besides the image itself that decides a feature vector (the cache key).

        Parameters
        ----------
        X : images or ImageSource, optional
            The preprocessing entry describes what images of this kind get (model-ready float
            arrays get none under ``preprocess="auto"``). Default: uint8 images and files.

        Returns
        -------
        dict
            JSON-able: feature-format version, model fingerprint (architecture and weights),
            layer (``"penultimate"`` for None), pooling, preprocessing and precision.

        Examples
        --------
        >>> cfg = DeepFeatureExtractor("lenet5").fit().cache_config_()
        >>> cfg["layer"], cfg["pooling"], cfg["precision"], cfg["preprocess"]["size"]
        ('penultimate', 'avg', 'fp32', [28, 28])
        """
        check_is_fitted(self, "feature_model_")
        source = as_image_source(X) if X is not None else None
        preprocess = self._preprocess_for(source)
        config = {
            "format": FEATURE_FORMAT_VERSION,
            "model": self.model_fingerprint_,
            "layer": self.layer if self.layer is not None else "penultimate",
            "pooling": self.pooling,
            "preprocess": describe_preprocess(preprocess),
            "precision": self.precision_,
        }
        draft = self._jpeg_draft_side(preprocess)
        if draft is not None and (source is None or source.kind == "files"):
            config["jpeg_draft"] = draft  # files decoded at reduced scale: their own vectors
        return config

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
            Vectors of the inputs that worked, their positions, the failures, and how many
            vectors were computed or read from the store.

        Examples
        --------
        >>> ext = DeepFeatureExtractor("lenet5").fit()
        >>> out = ext.extract(np.zeros((3, 28, 28), np.uint8))
        >>> out.features.shape, out.indices.tolist(), out.n_computed, out.errors
        ((3, 84), [0, 1, 2], 3, [])
        """
        check_is_fitted(self, "feature_model_")
        started = time.perf_counter()
        self._check_width(X)
        source = as_image_source(X)
        if self.store is not None:
            return self._extract_cached(source, started)
        n = len(source)
        rows: np.ndarray | None = None
        done: list[np.ndarray] = []
        errors: list[InputError] = []
        with progress_bar(total=n, unit="img", desc=f"features {self.model_name_ or 'network'}",
                          enabled=self.progress) as bar:
            for indices, vectors, failed in self.iter_features(source):
                if rows is None and len(indices):
                    rows = np.empty((n, vectors.shape[1]), dtype=np.float32)
                if len(indices):
                    rows[indices] = vectors
                done.append(indices)
                errors.extend(failed)
                bar.update(len(indices) + len(failed))
        ok = np.concatenate(done) if done else np.empty(0, np.int64)
        if rows is None:
            features = np.empty((0, self.n_features_out_ or 0), dtype=np.float32)
        elif len(ok) == n:
            features = rows
        else:
            features = rows[ok]
        return FeatureExtraction(features, ok.astype(np.int64), errors, n_computed=len(ok),
                                 n_reused=0, seconds=time.perf_counter() - started)

    def _extract_cached(self, source: ImageSource, started: float) -> FeatureExtraction:
        from featclf.store import FeatureStore, extract_cached

        store = self.store if isinstance(self.store, FeatureStore) else FeatureStore(self.store)
        result = extract_cached(store, source, config=self.cache_config_(source),
                                compute=self.iter_features, on_error=self.on_error,
                                progress=self.progress)
        return FeatureExtraction(np.asarray(result.features, dtype=np.float32),
                                 np.asarray(result.indices, dtype=np.int64), list(result.errors),
                                 n_computed=int(result.n_computed), n_reused=int(result.n_reused),
                                 seconds=time.perf_counter() - started)

    def transform(self, X):
        """Feature vectors of the images ``X``.

        Parameters
        ----------
        X : images
            See :meth:`extract`.

        Returns
        -------
        numpy.ndarray or pandas.DataFrame
            ``(n, d)`` float32. With ``on_error="skip"``, only the rows of readable images (a
            :class:`SkippedImagesWarning` says how many were left out). With
            ``set_output(transform="pandas")`` a DataFrame whose index is ``X``'s index (for a
            pandas input) or the positions in ``X`` of the rows, so it aligns with ``y``.
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
            name.
        """
        check_is_fitted(self, "feature_model_")
        if self.n_features_out_ is None:
            raise ValueError("the feature length is unknown until images are seen: this network "
                             "has no preprocessing that fixes the input size; call fit(X) with "
                             "some images or pass preprocess=ImagePreprocess(size=...)")
        prefix = self.model_name_ or "deepfeat"
        if self.layer is not None:
            prefix = f"{prefix}_{self.layer.replace('.', '_')}"
        return np.asarray([f"{prefix}_f{i}" for i in range(self.n_features_out_)], dtype=object)


def _finish(indices, vectors, errors, ready):
    """Turn one computed batch into ``(indices, float32 numpy vectors, errors)``."""
    if ready is not None:
        ready.synchronize()  # its copy from the GPU has landed in pinned host memory
    if isinstance(vectors, torch.Tensor):
        vectors = vectors.numpy()
    return np.asarray(indices, dtype=np.int64), np.ascontiguousarray(vectors, np.float32), errors


def _square_text(width: int) -> str:
    """``"28x28"`` for 784: how a flattened square image's width reads in messages."""
    side = math.isqrt(width)
    return f"{side}x{side}" if side * side == width else f"{width}-pixel"
