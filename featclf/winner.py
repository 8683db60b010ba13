"""The fitted winner of a comparison, saved to a folder and loaded back as one predictor.

:func:`save_winner` writes what :func:`featclf.compare.compare` fitted for one (model, layer,
classifier): the network the features came from (a featclf checkpoint: a torch state dict
with JSON metadata, loadable with ``torch.load(path, weights_only=True)``), the classifier
pipeline refit at its chosen C (joblib) and a JSON manifest saying what it is and how it was
chosen. :func:`load_winner` gives a :class:`Winner` whose ``predict``/``predict_proba`` take
images (paths, a folder, arrays: whatever :class:`~featclf.extract.DeepFeatureExtractor`
accepts). ``featclf compare`` saves one next to its report and ``featclf predict`` applies it.

The default choice is the classifier the report's verdict compares with the softmax head: the
selected SVM (else the selected other classifier) with the highest cross-validation accuracy,
never the test accuracy. (``featclf/report/_tables.py`` applies the same rule per group.)
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import joblib
import numpy as np

import featclf
from featclf.comparison import Comparison, ResultKey, chosen_by_cv, layer_of
from featclf.extract import DeepFeatureExtractor
from featclf.extract.layers import PENULTIMATE
from featclf.models import Network, save_checkpoint
from featclf.pipelines import BASELINES
from featclf.train import SoftmaxClassifier

__all__ = ["MANIFEST", "Winner", "choose_winner", "load_winner", "save_winner"]

#: The manifest's file name inside a winner's folder.
MANIFEST = "winner.json"
_NETWORK = "network.pt"
_CLASSIFIER = "classifier.joblib"
_FORMAT = "featclf-winner"
_FORMAT_VERSION = 1


def choose_winner(comparison: Comparison, *, model: str | None = None,
                  layer: str | None = None, classifier: str | None = None) -> ResultKey:
    """The (model, layer, classifier) :func:`save_winner` saves by default.

    Among the selected rows (restricted to ``model``, ``layer`` and ``classifier`` when
    given): the SVMs, else the other classifiers (a softmax baseline only when asked for by
    ``classifier``), the one with the highest ``cv_accuracy``; ties go to the first in
    featclf's classifier order, then the first in the table. Test accuracy plays no part.

    Raises
    ------
    ValueError
        No selected row matches, naming what is there.

    Examples
    --------
    >>> import pandas as pd
    >>> from featclf.comparison import Comparison
    >>> results = pd.DataFrame({
    ...     "model": ["m"] * 3, "layer": ["penultimate"] * 3, "selected": [True] * 3,
    ...     "classifier": ["softmax", "linear_svm", "rbf_svm"], "accuracy": [0.9, 0.99, 0.8],
    ...     "cv_accuracy": [0.9, 0.91, 0.95]})
    >>> choose_winner(Comparison(results)).classifier
    'rbf_svm'
    """
    df = comparison.results
    rows = df[df["selected"].eq(True)] if "selected" in df else df
    for column, value in (("model", model), ("layer", layer), ("classifier", classifier)):
        if value is not None:
            rows = rows[rows[column].astype(str) == str(value)]
    row = chosen_by_cv(rows, among_svms=classifier is None)
    if row is None:
        have = sorted({(str(m), str(la), str(c)) for m, la, c in
                       zip(df["model"], df["layer"], df["classifier"])})  # fmt: skip
        raise ValueError(f"no selected classifier matches model={model!r}, layer={layer!r}, "
                         f"classifier={classifier!r}; the comparison has {have}")
    return ResultKey(str(row["model"]), str(row["layer"]), str(row["classifier"]))


def _row(comparison: Comparison, key: ResultKey) -> dict[str, Any]:
    df = comparison.results
    mask = ((df["model"].astype(str) == key.model) & (df["layer"].astype(str) == key.layer)
            & (df["classifier"].astype(str) == key.classifier))  # fmt: skip
    if "selected" in df:
        mask &= df["selected"].eq(True)
    return df[mask].iloc[0].to_dict()


def _plain(value: Any) -> Any:
    """A JSON-ready value (NaN as None)."""
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    return value


def _save_network(network: Any, path: Path) -> str:
    """Save the feature network; returns its kind: ``"softmax"`` or ``"network"``."""
    if isinstance(network, SoftmaxClassifier):
        network.save(path)
        return "softmax"
    if isinstance(network, Network):  # a transfer run's frozen pre-trained network
        preprocess = network.preprocess.to_dict() if network.preprocess is not None else None
        save_checkpoint(path, network.module.state_dict(), {
            "model": network.arch, "head": network.head, "preprocess": preprocess,
            "featclf_version": featclf.__version__})  # fmt: skip
        return "network"
    raise TypeError(f"cannot save a feature network of type {type(network).__name__}")


def save_winner(comparison: Comparison, directory: str | os.PathLike, *,
                model: str | None = None, layer: str | None = None,
                classifier: str | None = None) -> Path:
    """Save the fitted network and classifier of one (model, layer, classifier) of a comparison.

    Parameters
    ----------
    comparison : Comparison
        What :func:`featclf.compare.compare` returned (it keeps the fitted ``networks`` and
        ``estimators``).
    directory : str or path-like
        Created if needed; gets ``winner.json``, ``network.pt`` and (for a classifier on the
        features) ``classifier.joblib``.
    model, layer, classifier : str, optional
        Which one; default :func:`choose_winner` (the CV-best SVM, as the verdict).
        ``classifier="softmax"`` saves the softmax network alone.

    Returns
    -------
    pathlib.Path
        The manifest file.

    Raises
    ------
    ValueError
        The comparison did not keep the fitted objects (a ``Comparison`` built from tables),
        or nothing matches the choice.

    Examples
    --------
    >>> from featclf.compare import compare
    >>> from featclf.data import load_digits_images
    >>> X, y = load_digits_images(return_X_y=True)
    >>> comparison = compare((X[:200], y[:200]), models=["lenet5"], classifiers=["logistic"],
    ...                      epochs=1, cv=2, c_grids=[1.0], n_resamples=50, device="cpu")
    >>> import tempfile
    >>> folder = tempfile.mkdtemp()
    >>> save_winner(comparison, folder).name
    'winner.json'
    >>> winner = load_winner(folder, device="cpu")
    >>> winner.manifest["classifier"], len(winner.predict(X[200:205]))
    ('logistic', 5)
    """
    if not isinstance(comparison, Comparison):
        raise TypeError(f"expected a featclf Comparison, got {type(comparison).__name__}")
    key = choose_winner(comparison, model=model, layer=layer, classifier=classifier)
    estimator = comparison.estimators.get(key)
    baseline = key.classifier in BASELINES
    network = estimator if baseline else comparison.networks.get(key.model)
    if estimator is None or network is None:
        raise ValueError(f"the comparison kept no fitted {key.classifier} for {key.model}/"
                         f"{key.layer}: only one returned by featclf.compare.compare has them")
    row = _row(comparison, key)
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    network_kind = _save_network(network, folder / _NETWORK)
    if not baseline:
        joblib.dump(estimator, folder / _CLASSIFIER)
    elif (folder / _CLASSIFIER).exists():
        (folder / _CLASSIFIER).unlink()  # a previous winner's, which this one does not use
    chosen = ("asked for" if classifier is not None else
              "the selected SVM (else other classifier) with the highest cross-validation "
              "accuracy, as the report's verdict; test accuracy played no part")
    classes = comparison.classes if comparison.classes is not None else estimator.classes_
    setup = comparison.setup
    # A "+ K views" group's classifier trained on augmented views too, but it classifies the
    # clean features of its layer: the layer is what the extractor reads.
    layer, n_views = layer_of(key.layer)
    manifest = {
        "format": _FORMAT, "format_version": _FORMAT_VERSION,
        "model": key.model, "layer": layer, "views": n_views, "classifier": key.classifier,
        "C": _plain(row.get("C", math.nan)), "pooling": setup.get("pooling", "avg"),
        "classes": [_plain(c) for c in np.asarray(classes).tolist()],
        "weights": dict(setup.get("weights", {})).get(key.model),
        "network": _NETWORK, "network_kind": network_kind,
        "classifier_file": None if baseline else _CLASSIFIER,
        "cv_accuracy": _plain(row.get("cv_accuracy", math.nan)),
        "test_accuracy": _plain(row.get("accuracy", math.nan)),
        "dataset": _plain(row.get("dataset")), "chosen_by": chosen,
        "featclf_version": featclf.__version__,
    }  # fmt: skip
    path = folder / MANIFEST
    tmp = folder / f".{MANIFEST}.tmp"
    tmp.write_text(json.dumps(manifest, indent=2) + "\n")
    tmp.replace(path)  # the manifest last, whole: a folder with one is complete
    return path


class Winner:
    """A saved winner loaded back: images in, predictions out (see :func:`load_winner`).

    Attributes
    ----------
    manifest : dict
        ``winner.json``: model, layer (whose clean features the classifier takes), views
        (K for a classifier of a "+ K views" group, which also trained on augmented views;
        else 0), pooling, classifier, C, classes, weights, how chosen.
    classifier : estimator
        The scikit-learn pipeline (on feature vectors), or the ``SoftmaxClassifier`` (on
        images) when the winner is a softmax network.
    extractor : DeepFeatureExtractor or None
        Fitted; turns images into the feature vectors the pipeline was trained on (None for
        a softmax winner).
    """

    def __init__(self, manifest: dict[str, Any], classifier: Any,
                 extractor: DeepFeatureExtractor | None) -> None:
        self.manifest = manifest
        self.classifier = classifier
        self.extractor = extractor

    @property
    def classes_(self) -> np.ndarray:
        """The classes, in the column order of :meth:`predict_proba`."""
        return np.asarray(self.classifier.classes_)

    def features(self, X: Any) -> np.ndarray:
        """The feature vectors of images ``X`` (the extractor's ``extract``, one layer)."""
        if self.extractor is None:
            raise AttributeError("a softmax winner classifies images directly: no features")
        return self.extractor.extract(X).block(self.manifest["layer"])

    def _inputs(self, X: Any) -> Any:
        return X if self.extractor is None else self.features(X)

    def predict(self, X: Any) -> np.ndarray:
        """The predicted class of each image of ``X``."""
        return np.asarray(self.classifier.predict(self._inputs(X)))

    @property
    def has_proba(self) -> bool:
        """Whether the classifier gives probabilities (logistic, softmax; not the SVMs)."""
        return hasattr(self.classifier, "predict_proba")

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, columns :attr:`classes_`; only for classifiers that have them.

        Raises
        ------
        AttributeError
            The classifier has no probabilities (an SVM): use :meth:`decision_function`.
        """
        if not self.has_proba:
            raise AttributeError(f"{self.manifest['classifier']} gives no probabilities; "
                                 "use decision_function")
        return np.asarray(self.classifier.predict_proba(self._inputs(X)))

    def decision_function(self, X: Any) -> np.ndarray:
        """The classifier's decision scores (SVMs, logistic regression)."""
        return np.asarray(self.classifier.decision_function(self._inputs(X)))

    def predict_with_scores(self, X: Any) -> tuple[np.ndarray, np.ndarray, str]:
        """Predictions, each image's score of its predicted class and the score's kind.

        One extraction: the kind is ``"probability"`` when the classifier has
        ``predict_proba``, else ``"decision"``. Used by ``featclf predict``.
        """
        from featclf.sweep import predicted_class_score

        inputs = self._inputs(X)
        pred = np.asarray(self.classifier.predict(inputs))
        if self.has_proba:
            values, kind = self.classifier.predict_proba(inputs), "probability"
        else:
            values, kind = self.classifier.decision_function(inputs), "decision"
        return pred, predicted_class_score(pred, self.classes_, values), kind


def load_winner(directory: str | os.PathLike, *, device: str = "auto", batch_size: int = 256,
                progress: bool = False, num_workers: int = 0) -> Winner:
    """Load a winner written by :func:`save_winner` (or ``featclf compare``).

    Safety: the network is read as a plain tensor file (``weights_only=True``), but the
    classifier is a joblib (pickle) file, and loading a pickle can run any code. Load only
    folders written by your own runs, never ones from elsewhere.

    Parameters
    ----------
    directory : str or path-like
        The folder with ``winner.json``.
    device : str, default="auto"
        Where the network runs.
    batch_size : int, default=256
        Images per forward pass (``compare`` extracts 256 at a time; the same size gives the
        same vectors to the last bit).
    progress : bool, default=False
        Show a progress bar while extracting.
    num_workers : int, default=0
        Image-decoding worker processes.

    Returns
    -------
    Winner

    Raises
    ------
    FileNotFoundError
        No ``winner.json`` in ``directory``.
    ValueError
        The manifest is not a featclf winner's.
    """
    folder = Path(directory)
    path = folder / MANIFEST
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: pass a folder written by featclf "
                                "compare --save-model or featclf.winner.save_winner")
    try:
        manifest = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable winner manifest ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != _FORMAT:
        raise ValueError(f"{path}: not a featclf winner manifest")
    network_path = folder / manifest["network"]
    if manifest["network_kind"] == "softmax":
        network: Any = SoftmaxClassifier.load(network_path)
        network.set_params(device=device, progress=progress)  # its own predict batch size
    else:
        network = os.fspath(network_path)
    if manifest.get("classifier_file") is None:
        return Winner(manifest, network, None)
    classifier = joblib.load(folder / manifest["classifier_file"])
    layer = manifest["layer"]
    extractor = DeepFeatureExtractor(
        network, layer=None if layer == PENULTIMATE else layer, pooling=manifest["pooling"],
        device=device, batch_size=batch_size, progress=progress, num_workers=num_workers,
    ).fit()  # fmt: skip
    return Winner(manifest, classifier, extractor)


def image_paths(images: str | os.PathLike) -> Sequence[str]:
    """The image files of a folder (recursively, sorted) or of a CSV's path column.

    A CSV's paths are relative to its folder; a header naming the column (``path``) is
    optional (:func:`featclf.data.layouts.read_csv`).
    """
    from featclf.data import image_files
    from featclf.data.layouts import read_csv

    if Path(images).is_file():
        return [os.fspath(p) for p in read_csv(images, labels=False).paths]
    return [os.fspath(p) for p in image_files(images, labels="none").paths]
