"""The views arms of ``compare(augment="seed", views=K)``: classifiers on augmented views too.

Next to each layer's rows (classifiers on the clean features of the training images),
:func:`views_arms` adds a group of rows whose classifiers train on the clean features of every
training image *and* on the features of ``K`` augmented views of each
(:func:`featclf.extract.views.extract_views`, kept in the feature store under the image, the
augmentation, the seed and the view index, so a rerun computes none). Each view keeps its
image's label; the cross-validation that chooses C keeps all rows of one image in one fold
(``groups``), so no image is on both sides of a fold, and scores a held-out fold on its clean
rows only (``scored``), as the test is scored. C is still chosen on training data only
and every arm is scored on the same clean test features, paired against the same softmax
head. The group's ``layer`` is :func:`featclf.comparison.views_label`:
``"penultimate + 4 views"``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone

from featclf.comparison import views_label
from featclf.experiment import Experiment
from featclf.extract import DeepFeatureExtractor
from featclf.extract.layers import PENULTIMATE
from featclf.extract.views import extract_views
from featclf.params import InvalidParameterError
from featclf.sweep import Features, Outcome

__all__ = ["AUGMENTATIONS", "ViewsArm", "check_augment", "layer_param", "training_set",
           "views_arms", "views_setup"]  # fmt: skip

#: What ``compare(augment=...)`` takes: the seed tutorial's augmentation (rotation 20 degrees,
#: shifts 0.2, horizontal flip; :func:`featclf.data.transforms.seed_augmentation`).
AUGMENTATIONS: tuple[str, ...] = ("seed",)


def layer_param(blocks: Sequence[str]) -> str | list[str] | None:
    """``DeepFeatureExtractor(layer=...)`` for a list of block names.

    Examples
    --------
    >>> layer_param(["penultimate"]), layer_param(["c5"]), layer_param(["c5", "logits"])
    (None, 'c5', ['c5', 'logits'])
    """
    blocks = list(blocks)
    if blocks == [PENULTIMATE]:
        return None
    return blocks[0] if len(blocks) == 1 else blocks


def check_augment(augment: str | None, views: int,
                  train_options: Mapping[str, Any] | None) -> None:  # fmt: skip
    """Refuse views without an augmentation, or two different augmentations, before training.

    Examples
    --------
    >>> check_augment("seed", 4, None)
    >>> check_augment(None, 4, None)  # doctest: +IGNORE_EXCEPTION_DETAIL
    Traceback (most recent call last):
    ...
    InvalidParameterError: The 'views' parameter of compare is 4, and views are augmented ...
    """
    if views and augment is None:
        raise InvalidParameterError(
            f"The 'views' parameter of compare is {views}, and views are augmented copies of "
            "the training images: pass augment='seed' as well (or views=0)."
        )
    other = dict(train_options or {}).get("augment")
    if augment is not None and other is not None and other != augment:
        raise InvalidParameterError(
            f"The 'augment' parameter of compare is {augment!r} but train_options has "
            f"augment={other!r}; give the augmentation once, as compare(augment=...)."
        )


def views_setup(augment: str | None, views: int, description: str | None = None
                ) -> dict[str, str]:  # fmt: skip
    """The report's setup lines on augmentation (none without one).

    Examples
    --------
    >>> views_setup(None, 0)
    {}
    >>> print(views_setup("seed", 4)["augmentation"])  # doctest: +ELLIPSIS
    seed preset (rotation 20 degrees, shifts 0.2, horizontal flip): every softmax network ...
    """
    if augment is None:
        return {}
    preset = ("seed preset (rotation 20 degrees, shifts 0.2, horizontal flip)"
              if augment == "seed" else repr(augment))  # fmt: skip
    text = f"{preset}: every softmax network was trained with it"
    out = {"augmentation": text}
    if views:
        out["augmentation"] += (
            f"; the '+ {views} views' rows' classifiers trained on the clean features of every "
            f"training image and on {views} augmented views of each (each view labelled as its "
            "image; cross-validation folds grouped by image, so no image is on both sides, and "
            "scored on the held-out images' clean features only, as the test is); every row is "
            "tested on the clean test images"
        )
        if description:
            out["views"] = description
    return out


def training_set(clean: np.ndarray, views: np.ndarray, indices: np.ndarray, y: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The rows a views arm trains on: every clean vector, then every view, with groups.

    Parameters
    ----------
    clean : numpy.ndarray of shape (n, d)
        The clean features of the training images.
    views : numpy.ndarray of shape (n_ok, K, d)
        ``K`` views of the images at ``indices``.
    indices : numpy.ndarray of shape (n_ok,)
        Positions into ``clean`` and ``y`` of the images the views are of.
    y : numpy.ndarray of shape (n,)
        The training labels.

    Returns
    -------
    features : numpy.ndarray of shape (n + n_ok * K, d)
    labels : numpy.ndarray of shape (n + n_ok * K,)
        Each view's label is its image's.
    groups : numpy.ndarray of shape (n + n_ok * K,)
        The image each row comes from (its position in ``clean``).

    Examples
    --------
    >>> import numpy as np
    >>> clean = np.zeros((2, 3), np.float32)
    >>> views = np.ones((2, 2, 3), np.float32)
    >>> F, labels, groups = training_set(clean, views, np.array([0, 1]), np.array(["a", "b"]))
    >>> F.shape, labels.tolist(), groups.tolist()
    ((6, 3), ['a', 'b', 'a', 'a', 'b', 'b'], [0, 1, 0, 0, 1, 1])
    """
    indices = np.asarray(indices, dtype=np.int64)
    n_views = views.shape[1]
    features = np.concatenate([clean, views.reshape(-1, views.shape[2])]).astype(np.float32)
    labels = np.concatenate([np.asarray(y), np.repeat(np.asarray(y)[indices], n_views)])
    groups = np.concatenate([np.arange(len(clean)), np.repeat(indices, n_views)])
    return features, labels, groups


@dataclass
class ViewsArm:
    """One layer's views arm: its label, training rows (with labels and groups) and tests."""

    label: str
    features: Features
    y_train: np.ndarray
    groups: np.ndarray
    scored: np.ndarray  # the clean rows: what a held-out fold is scored on


def views_arms(run: Experiment, model: str, labels: Sequence[str],
               extractor: DeepFeatureExtractor, features: Mapping[str, Features], *,
               augment: str, n_views: int, random_state: int | None,
               progress: bool) -> tuple[dict[str, ViewsArm], str]:  # fmt: skip
    """Extract ``n_views`` views of every training image; each layer's training rows.

    The views come from the network (and layers, pooling and preprocessing) of ``extractor``
    and its feature store; ``features`` are the clean features of every part of the split.
    Returns the arms by layer and the views' description (augmentation, seed, K).
    """
    views_extractor = clone(extractor).set_params(layer=layer_param(labels)).fit()
    train = run.sources["train"]
    run.log(f"{model}: extracting {n_views} augmented views ({augment}) of each of "
            f"{len(train)} training images")  # fmt: skip
    out = extract_views(views_extractor, train, augment=augment, n_views=n_views,
                        random_state=0 if random_state is None else int(random_state),
                        progress=progress)  # fmt: skip
    label = views_label(",".join(labels), n_views)
    run._time("views", model, label, None, out.seconds, n_computed=out.n_computed,
              n_reused=out.n_reused)  # fmt: skip
    run.log(f"{model}: {len(out.indices) * n_views} views: {out.n_computed} computed, "
            f"{out.n_reused} reused from the feature store ({out.seconds:.1f} s)")
    arms = {}
    for layer in labels:
        clean = features[layer]
        rows, y, groups = training_set(clean.train, out.block(layer), out.indices,
                                       run.y["train"])  # fmt: skip
        arms[layer] = ViewsArm(
            views_label(layer, n_views),
            Features(rows, clean.validation, clean.test, clean.seconds + out.seconds), y, groups,
            np.arange(len(rows)) < len(clean.train),
        )  # fmt: skip
    return arms, str(out.description)


def add_views_group(run: Experiment, model: str, arm: ViewsArm, baselines: Sequence[Outcome],
                    reference: np.ndarray, classifiers: Sequence[str],
                    grids: Mapping[str, Sequence[float]], **sweep_options: Any) -> None:
    """Sweep every classifier on one views arm and add its rows (paired with the softmax)."""
    outcomes = list(baselines)
    for classifier in classifiers:
        outcomes += run.sweep(model, arm.label, classifier, arm.features, y_train=arm.y_train,
                              groups=arm.groups, scored=arm.scored, grid=list(grids[classifier]),
                              **sweep_options)  # fmt: skip
    run.add_group(model, arm.label, outcomes, reference)
