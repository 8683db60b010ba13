"""A fitted extractor and a linear classifier on its features, as one torch module.

:func:`to_torch` folds a fitted classifier of deep features (:func:`featclf.pipelines.
make_logistic`, :func:`~featclf.pipelines.make_svm` ``"linear"``/``"crammer_singer"``) into an
``nn.Linear`` on the extractor's headless network: the whole classifier runs in torch (GPU,
TorchScript, ONNX) without scikit-learn. A ``StandardScaler`` ``(x - m) / s`` or ``PCA``
``P (x - mu)`` is a map ``A (x - c)``, so ``W z + b`` on it is ``W' x + b'`` with ``W' = W A``,
``b' = b - W' c`` (folded in float64, stored float32). A leading l2 ``Normalizer`` is not affine
and stays a step of its own. Kernel machines (the RBF SVM) score by support vectors, not one
hyperplane per class: refused. A binary classifier's one score ``s`` (class 1 when ``s > 0``)
becomes ``[-s, s]``, whose argmax is scikit-learn's prediction.
"""

from __future__ import annotations

import copy
import json
import os
import warnings
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
from sklearn.base import BaseEstimator
from sklearn.decomposition import PCA
from sklearn.linear_model import LogisticRegression, RidgeClassifier, SGDClassifier
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import Normalizer, StandardScaler
from sklearn.svm import LinearSVC
from sklearn.utils.validation import check_is_fitted
from torch import nn

from featclf.data.transforms import CastToFloat32, ImagePreprocess, ScaleToUnit
from featclf.linear import LinearProbe, TorchLinearSVC, TorchLogisticRegression

__all__ = ["LINEAR_CLASSIFIERS", "LinearHeadModel", "load_torchscript", "save_onnx",
           "save_torchscript", "to_torch"]

#: The classifiers whose ``predict`` is the argmax (binary: the sign) of ``X @ coef_.T +
#: intercept_``, which :func:`to_torch` folds into ``nn.Linear``.
LINEAR_CLASSIFIERS: tuple[type, ...] = (LogisticRegression, LinearSVC, SGDClassifier,
                                        RidgeClassifier, TorchLogisticRegression,
                                        TorchLinearSVC, LinearProbe)

_CLASSES_FILE = "featclf_classes.json"


@contextmanager
def _torchscript_quietly():
    # torch 2.14 warns that TorchScript is deprecated (for torch.export, which save_onnx
    # uses), but its files still load in C++ (libtorch) without Python: worth offering.
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r"`torch\.jit", category=FutureWarning)
        yield


class _Finish(nn.Module):
    """uint8 pixels (0-255) or floats in ``[0, 1]`` → the network's normalised input.

    Scripted (not traced) inside an export, so the dtype test stays in the saved graph.
    """

    def __init__(self, mean: tuple[float, ...] | None, std: tuple[float, ...] | None) -> None:
        super().__init__()
        self.normalize = normalize = mean is not None and std is not None
        self.register_buffer("mean", torch.tensor(mean if normalize else (0.0,)).view(-1, 1, 1))
        self.register_buffer("std", torch.tensor(std if normalize else (1.0,)).view(-1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float() / 255.0 if x.dtype == torch.uint8 else x.float()
        if self.normalize:
            x = (x - self.mean) / self.std
        return x


class _Concat(nn.Module):
    """Several layers' ``{block: (n, d)}`` side by side, in the extractor's column order."""

    def __init__(self, body: nn.Module, blocks: list[str]) -> None:
        super().__init__()
        self.body = body
        self.blocks = blocks

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([self.body(x)[b] for b in self.blocks], dim=1)


class _L2Normalize(nn.Module):
    """scikit-learn's ``Normalizer()``: each row over its L2 norm; zero rows stay zero."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        norm = torch.linalg.vector_norm(x, dim=1, keepdim=True)
        return x / torch.where(norm == 0, torch.ones_like(norm), norm)


class LinearHeadModel(nn.Module):
    """Images → class scores: preprocessing, headless network, folded linear classifier.

    Built by :func:`to_torch`. ``forward`` returns float32 ``(N, n_classes)`` scores whose
    argmax indexes ``classes_`` (the classifier's labels).

    Parameters
    ----------
    features : torch.nn.Module
        The extractor's headless network: model-ready ``(N, C, H, W)`` → ``(N, d)``.
    linear : torch.nn.Linear
        The classifier with its scaler (and PCA) folded in: ``d`` → ``n_classes`` scores.
    classes : array-like
        The label of each score column (``classes_``, a numpy array).
    preprocess : torch.nn.Module or None, default=None
        Applied to the images first (:func:`to_torch` passes the pixel → model-ready step).
    l2_normalize : bool, default=False
        Divide each feature vector by its L2 norm before ``linear``.
    """

    def __init__(self, features: nn.Module, linear: nn.Linear, classes, *,
                 preprocess: nn.Module | None = None, l2_normalize: bool = False) -> None:
        super().__init__()
        self.preprocess = preprocess if preprocess is not None else nn.Identity()
        self.features = features
        self.normalize = _L2Normalize() if l2_normalize else nn.Identity()
        self.linear = linear
        self.classes_ = np.asarray(classes)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = self.features(self.preprocess(images))
        return self.linear(self.normalize(x.float()))

    @torch.jit.ignore
    def predict(self, images: torch.Tensor) -> np.ndarray:
        """The labels (from ``classes_``) of a batch as ``forward`` takes it (eager mode)."""
        with torch.inference_mode():
            scores = self(images)
        return self.classes_[scores.argmax(dim=1).cpu().numpy()]


def _unwrap(classifier) -> tuple[list[tuple[str, BaseEstimator]], BaseEstimator]:
    """``(steps before the classifier, classifier)`` of a Pipeline, a search or an estimator."""
    best = getattr(classifier, "best_estimator_", None)  # a fitted GridSearchCV
    if best is not None:
        classifier = best
    if isinstance(classifier, Pipeline):
        steps = [(name, step) for name, step in classifier.steps
                 if step is not None and step != "passthrough"]
        if not steps:
            raise ValueError("classifier is an empty Pipeline")
        return steps[:-1], steps[-1][1]
    return [], classifier


def _linear_part(clf: BaseEstimator) -> tuple[np.ndarray, np.ndarray]:
    """``(W, b)`` of the classifier as ``(n_classes, d)`` and ``(n_classes,)`` float64."""
    if not isinstance(clf, LINEAR_CLASSIFIERS):
        name, kernel = type(clf).__name__, getattr(clf, "kernel", None)
        detail = (f" (kernel={kernel!r}: it scores by support vectors and votes one-vs-one)"
                  if kernel is not None else " (a wrapper)" if hasattr(clf, "estimator") else "")
        raise TypeError(f"{name}{detail} is not a linear classifier, so it cannot be folded into "
                        "nn.Linear; to_torch takes LogisticRegression or LinearSVC (ovr or "
                        "crammer_singer), e.g. make_classifier('logistic'), 'linear_svm' or "
                        "'crammer_singer_svm', optionally after a StandardScaler")
    check_is_fitted(clf, "coef_")
    W = np.asarray(clf.coef_, dtype=np.float64)
    b = np.broadcast_to(np.asarray(clf.intercept_, dtype=np.float64), (W.shape[0],)).copy()
    n_classes = len(clf.classes_)
    if W.shape[0] == 1 and n_classes == 2:
        # One score s for class 1 (s > 0); [-s, s] has the same argmax, ties going to class 0.
        return np.vstack([-W, W]), np.concatenate([-b, b])
    if W.shape[0] != n_classes:
        raise ValueError(f"{type(clf).__name__} has {W.shape[0]} score rows for {n_classes} "
                         "classes; cannot map its scores to classes")
    return W, b


def _fold(steps: list[tuple[str, BaseEstimator]], W: np.ndarray, b: np.ndarray
          ) -> tuple[np.ndarray, np.ndarray, bool]:
    """Push the affine steps into ``(W, b)``, last step first; report a leading Normalizer."""
    l2 = False
    for position, (name, step) in reversed(list(enumerate(steps))):
        if isinstance(step, StandardScaler):
            check_is_fitted(step)
            scale = np.ones(W.shape[1]) if step.scale_ is None else step.scale_
            mean = np.zeros(W.shape[1]) if step.mean_ is None else step.mean_
            W = W / scale
            b = b - W @ mean
        elif isinstance(step, PCA):
            check_is_fitted(step, "components_")
            P = step.components_
            if step.whiten:
                P = P / np.sqrt(step.explained_variance_)[:, None]
            W = W @ P
            b = b - W @ step.mean_
        elif isinstance(step, Normalizer) and position == 0 and step.norm == "l2":
            l2 = True
        else:
            raise TypeError(f"pipeline step {name!r} ({type(step).__name__}) cannot be folded "
                            "into nn.Linear: to_torch takes StandardScaler and PCA steps (and "
                            "an l2 Normalizer first) before a linear classifier")
    return W, b, l2


def _preprocess_module(preprocess) -> nn.Module:
    if isinstance(preprocess, ImagePreprocess):
        return _Finish(preprocess.mean, preprocess.std)
    if isinstance(preprocess, ScaleToUnit):
        return _Finish(None, None)
    if isinstance(preprocess, CastToFloat32):
        return nn.Identity()
    raise ValueError(f"the extractor's preprocess_ ({preprocess!r}) is a callable featclf cannot "
                     "put into a torch module; pass preprocess=False and give the module "
                     "model-ready images")


def to_torch(extractor, classifier=None, *, preprocess: bool = True) -> LinearHeadModel:
    """Fold a fitted extractor and linear classifier into one ``nn.Module``.

    Parameters
    ----------
    extractor : DeepFeatureExtractor or Pipeline
        A fitted :class:`~featclf.extract.DeepFeatureExtractor`, or a fitted Pipeline whose
        first step is one (then ``classifier`` is the rest of it and may be omitted).
    classifier : Pipeline, estimator or fitted GridSearchCV, optional
        Fitted on the extractor's features: optional ``StandardScaler`` / ``PCA`` steps (an l2
        ``Normalizer`` first) and a :data:`LINEAR_CLASSIFIERS` estimator (LogisticRegression,
        LinearSVC with ``multi_class="ovr"`` or ``"crammer_singer"``).
    preprocess : bool, default=True
        True: the module takes pixels, uint8 ``0-255`` or float ``[0, 1]``, ``(N, C, H, W)``
        already of the network's size and channels (``extractor.preprocess_.output_size`` and
        ``.channels``; resize them first), and normalises them as the extractor does. False:
        it takes model-ready float tensors (the output of ``extractor.preprocess_``).

    Returns
    -------
    LinearHeadModel
        On the CPU, in eval mode, float32; move it with ``.to(device)``. ``classes_`` maps the
        argmax of its scores to labels.

    Raises
    ------
    TypeError
        When the classifier, or a step before it, is not linear (an RBF ``SVC``, a calibrated
        wrapper, a ``FunctionTransformer``...).
    ValueError
        When the classifier was fitted on features of another width.

    Examples
    --------
    >>> import torch
    >>> from featclf.data import load_mnist5k
    >>> from featclf.extract import DeepFeatureExtractor
    >>> from featclf.pipelines import make_logistic
    >>> X, y = load_mnist5k(return_X_y=True)
    >>> ext = DeepFeatureExtractor("lenet5", weights="random", device="cpu").fit()
    >>> pipe = make_logistic().fit(ext.transform(X[::25]), y[::25])
    >>> model = to_torch(ext, pipe)
    >>> images = torch.from_numpy(X[1::250]).unsqueeze(1)  # (20, 1, 28, 28) uint8
    >>> scores = model(images)
    >>> scores.shape
    torch.Size([20, 10])
    >>> bool((model.predict(images) == pipe.predict(ext.transform(X[1::250]))).all())
    True
    """
    if classifier is None:
        if not isinstance(extractor, Pipeline) or len(extractor.steps) < 2:
            raise ValueError("to_torch(extractor, classifier): pass the fitted classifier, or "
                             "one fitted Pipeline whose first step is the extractor")
        classifier = Pipeline(extractor.steps[1:])
        extractor = extractor.steps[0][1]
    check_is_fitted(extractor, "runner_")
    steps, clf = _unwrap(classifier)
    W, b = _linear_part(clf)
    W, b, l2 = _fold(steps, W, b)
    width = getattr(extractor, "n_features_out_", None)
    if width is not None and W.shape[1] != width:
        raise ValueError(f"classifier was fitted on {W.shape[1]} features, but the extractor "
                         f"gives {width} ({extractor.model_name_}, layer={extractor.layer!r})")
    features = copy.deepcopy(extractor.feature_model_).to("cpu").float().eval()
    blocks = list(extractor.feature_blocks_)
    if len(blocks) > 1:
        features = _Concat(features, blocks)
    linear = nn.Linear(W.shape[1], W.shape[0])
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(W))
        linear.bias.copy_(torch.from_numpy(b))
    head = _preprocess_module(extractor.preprocess_) if preprocess else None
    return LinearHeadModel(features, linear, clf.classes_, preprocess=head,
                           l2_normalize=l2).eval()


def _example(model: LinearHeadModel, example: torch.Tensor) -> torch.Tensor:
    if len(example) == 1:  # torch.export takes a batch of 1 for a fixed size
        example = torch.cat([example, example])
    return example.to(next(model.parameters()).device)


def _classes_json(classes: np.ndarray) -> str:
    return json.dumps({"classes": classes.tolist(), "dtype": classes.dtype.str})


def _classes_from_json(text: str | bytes) -> np.ndarray:
    data = json.loads(text)
    return np.asarray(data["classes"], dtype=np.dtype(data["dtype"]))


def save_torchscript(model: LinearHeadModel, path: str | os.PathLike, *,
                     example: torch.Tensor) -> Path:
    """Write ``model`` as a TorchScript file (traced), with its labels inside.

    The network is traced on ``example``; the preprocessing step is scripted, so the file
    takes uint8 and float ``[0, 1]`` images alike. Load it with :func:`load_torchscript` (or
    ``torch.jit.load`` for the scores alone).

    Parameters
    ----------
    model : LinearHeadModel
        From :func:`to_torch`.
    path : str or path-like
        The file to write.
    example : torch.Tensor
        A batch as the module takes it (its batch size does not bind the file).

    Returns
    -------
    pathlib.Path

    Examples
    --------
    >>> import tempfile, torch
    >>> from featclf.extract import DeepFeatureExtractor
    >>> from sklearn.linear_model import LogisticRegression
    >>> ext = DeepFeatureExtractor("lenet5", weights="random", device="cpu").fit()
    >>> clf = LogisticRegression().fit(np.random.default_rng(0).normal(size=(6, 84)),
    ...                                [0, 1, 2] * 2)
    >>> images = torch.zeros(4, 1, 28, 28, dtype=torch.uint8)
    >>> path = save_torchscript(to_torch(ext, clf), tempfile.mkdtemp() + "/m.pt",
    ...                         example=images)
    >>> module, classes = load_torchscript(path)
    >>> module(images).shape, classes.tolist()
    (torch.Size([4, 3]), [0, 1, 2])
    """
    model = copy.deepcopy(model).eval()
    path = Path(path)
    with _torchscript_quietly(), torch.no_grad():
        if isinstance(model.preprocess, _Finish):
            model.preprocess = torch.jit.script(model.preprocess)
        traced = torch.jit.trace(model, _example(model, example), check_trace=False)
        torch.jit.save(traced, str(path),
                       _extra_files={_CLASSES_FILE: _classes_json(model.classes_)})
    return path


def load_torchscript(path: str | os.PathLike, *, map_location: str | torch.device = "cpu"
                     ) -> tuple[torch.jit.ScriptModule, np.ndarray]:
    """Read a :func:`save_torchscript` file: the scoring module and its labels.

    Parameters
    ----------
    path : str or path-like
    map_location : str or torch.device, default="cpu"

    Returns
    -------
    module : torch.jit.ScriptModule
        Images → ``(N, n_classes)`` scores.
    classes : numpy.ndarray
        The label of each score column.

    Examples
    --------
    See :func:`save_torchscript`.
    """
    extra = {_CLASSES_FILE: ""}
    with _torchscript_quietly():
        module = torch.jit.load(str(path), map_location=map_location, _extra_files=extra)
    if not extra[_CLASSES_FILE]:
        raise ValueError(f"{path} has no featclf labels ({_CLASSES_FILE}); it was not written "
                         "by featclf.serving.save_torchscript")
    return module.eval(), _classes_from_json(extra[_CLASSES_FILE])


def save_onnx(model: LinearHeadModel, path: str | os.PathLike, *,
              example: torch.Tensor) -> Path:
    """Write ``model`` as an ONNX file with a dynamic batch size and its labels as metadata.

    Needs the ``onnx`` and ``onnxscript`` packages (``torch.onnx.export``). The file takes
    images of ``example``'s dtype, channels and size, as input ``images``, and returns
    ``scores``; the labels are the JSON metadata entry ``featclf_classes``
    (``onnxruntime.InferenceSession(path).get_modelmeta().custom_metadata_map``).

    Parameters
    ----------
    model : LinearHeadModel
        From :func:`to_torch`.
    path : str or path-like
        The file to write.
    example : torch.Tensor
        A batch as the module takes it (its batch size does not bind the file).

    Returns
    -------
    pathlib.Path

    Examples
    --------
    With ``model`` and ``images`` as in :func:`save_torchscript` (needs onnxruntime):

    >>> session = onnxruntime.InferenceSession(save_onnx(model, "m.onnx", example=images))
    ... # doctest: +SKIP
    """
    model = copy.deepcopy(model).eval()
    example = _example(model, example)
    batch = torch.export.Dim("batch", min=1)
    program = torch.onnx.export(model, (example,), input_names=["images"],
                                output_names=["scores"], dynamo=True, verbose=False,
                                dynamic_shapes=({0: batch},))
    program.model.metadata_props["featclf_classes"] = _classes_json(model.classes_)
    path = Path(path)
    program.save(str(path))
    return path
